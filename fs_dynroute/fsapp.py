"""FreeSWITCH's mod_python3 entry point: ``<action application="python" data="fs_dynroute.fsapp [RULE]"/>``.

mod_python3 executes this module afresh on every call, so it holds nothing: all state lives in
``fs_dynroute.inprocess``, imported once and shared by every call thread.
"""

import freeswitch  # provided by mod_python3 inside FreeSWITCH

from fs_dynroute import inprocess


def handler(session, args):  # noqa: ANN001, ANN201 (mod_python3's signature)
    """Set ``dynroute_target`` and the other dynroute_* variables, or leave the dialplan's default standing."""
    inprocess.handle(session, args, freeswitch.consoleLog)


def runtime(args):  # noqa: ANN001, ANN201
    """For ``<param name="startup-script" value="fs_dynroute.fsapp"/>``: load the routes when FreeSWITCH starts."""
    inprocess.start(freeswitch.consoleLog)
