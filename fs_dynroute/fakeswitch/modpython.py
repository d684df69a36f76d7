"""A fake of FreeSWITCH's mod_python3: the ``freeswitch`` module, a call's session, and a dialplan run through them.

Modelled on mod_python3.c (``eval_some_python``) and on what a real FreeSWITCH 1.10.12 showed (issue 14):

* ``<action application="python" data="MODULE ARGS"/>`` imports MODULE, then *reloads* it, so its top level
  runs afresh on every call while the modules it imports stay loaded; ``handler(session, ARGS)`` is called
  in the call's own thread, ARGS being everything after the first space ("" when there is none).
* An exception escaping ``handler`` is logged by FreeSWITCH ("Python Error by calling script ...") and the
  dialplan goes on with the next action.
* ``session.getVariable`` gives the raw value (``caller_id_number`` ``+1 (555) 111-1111``, not URL-encoded), or
  None for a variable that is not set; ``session.setVariable`` with an empty value unsets the variable.
* ``freeswitch.consoleLog(level, text)`` writes to FreeSWITCH's log.
"""

from __future__ import annotations

import importlib
import re
import sys
import threading
import time
import types
import uuid as uuidlib
from dataclasses import dataclass

from fs_dynroute.fakeswitch.switch import DEFAULT_CALLER_NUMBER, Dialplan

_VARIABLE_REF = re.compile(r"\$\{([^}]*)\}")


class Session:
    """One channel as ``handler`` sees it; ``variables`` holds what the dialplan and the handler set."""

    def __init__(self, caller_id: str | None, destination_number: str, uuid: str | None = None,
                 variables: dict[str, str] | None = None) -> None:
        # An empty or missing caller ID reads as FreeSWITCH's 0000000000 (captures e2/e5/g3).
        self.variables = {"uuid": uuid or str(uuidlib.uuid4()), "caller_id_number": caller_id or DEFAULT_CALLER_NUMBER,
                          "destination_number": destination_number, **(variables or {})}
        self.set_calls: list[tuple[str, str]] = []

    def getVariable(self, name: str) -> str | None:  # noqa: N802 (FreeSWITCH's name)
        return self.variables.get(name)

    def setVariable(self, name: str, value: str) -> None:  # noqa: N802
        self.set_calls.append((name, value))
        if value:
            self.variables[name] = str(value)
        else:
            self.variables.pop(name, None)


class FreeswitchModule(types.ModuleType):
    """The ``freeswitch`` module mod_python3 provides, reduced to ``consoleLog``; ``lines`` is the log."""

    def __init__(self) -> None:
        super().__init__("freeswitch")
        self.lines: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def consoleLog(self, level: str, text: str) -> None:  # noqa: N802
        with self._lock:
            self.lines.append((level, text))


def install() -> FreeswitchModule:
    """A fresh ``freeswitch`` module in ``sys.modules``, where ``import freeswitch`` finds it."""
    module = FreeswitchModule()
    sys.modules["freeswitch"] = module
    return module


def run_python_app(data: str, session: Session) -> None:
    """``<action application="python" data=DATA/>``: import, reload, call ``handler(session, args)``."""
    module_name, _, args = data.strip().partition(" ")
    try:
        module = importlib.reload(importlib.import_module(module_name))
        module.handler(session, args.strip())
    except Exception as exc:  # what print_python_error does; the dialplan continues
        sys.modules["freeswitch"].consoleLog("ERR", f'Python Error by calling script "{module_name}": '
                                                    f"{type(exc).__name__}\nMessage: {exc}\n")


@dataclass
class PythonCallOutcome:
    """How a call through a ``python`` dialplan ended."""

    target: str | None  # the transfer argument, None when the dialplan ran out
    variables: dict[str, str]  # final channel variables
    seconds: float  # time spent in the python application


def place_python_call(dialplan: Dialplan, caller_id: str | None, destination_number: str, *,
                      variables: dict[str, str] | None = None, uuid: str | None = None) -> PythonCallOutcome:
    """Run one call through ``dialplan``'s ``set``/``unset``/``python``/``transfer`` actions."""
    session = Session(caller_id, destination_number, uuid, variables)
    spent = 0.0
    for app, data in dialplan.actions:
        data = _VARIABLE_REF.sub(lambda m: session.variables.get(m[1], ""), data)
        if app == "set":
            name, _, value = data.partition("=")
            session.setVariable(name, value)
        elif app == "unset":
            session.setVariable(data, "")
        elif app == "python":
            started = time.monotonic()
            run_python_app(data, session)
            spent += time.monotonic() - started
        elif app == "transfer":
            return PythonCallOutcome(data.strip(), dict(session.variables), spent)
        else:
            raise ValueError(f"the mod_python3 fake does not run {app!r}")
    return PythonCallOutcome(None, dict(session.variables), spent)
