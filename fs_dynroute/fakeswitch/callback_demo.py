"""``make demo-callback``: the whole missed-call loop with the fakes, step by step, for a newcomer to watch.

Real ``fs-dynroute serve`` and ``fs-dynroute track`` processes on 127.0.0.1, a fresh SQLite file; this process
plays FreeSWITCH on both sockets: the event socket (:mod:`fs_dynroute.fakeswitch.inbound`, replaying captured
hangups) and the calls (:func:`fs_dynroute.fakeswitch.switch.place_call`).
"""

from __future__ import annotations

import argparse
import os
import socket as stdsocket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gevent
from gevent import subprocess

from fs_dynroute.fakeswitch.inbound import InboundSwitch, captured_hangups
from fs_dynroute.fakeswitch.switch import Dialplan, place_call

NO_MATCH = "5000 XML default"
CUSTOMER = "+15551000005"


def _free_port() -> int:
    with stdsocket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"demo: gave up waiting for {what}")
        gevent.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fs_dynroute.fakeswitch.callback_demo", description=__doc__)
    parser.add_argument("--dir", type=Path, help="where the database and logs go (default: a temporary directory)")
    args = parser.parse_args(argv)
    work = args.dir or Path(tempfile.mkdtemp(prefix="fs-dynroute-callback-"))
    work.mkdir(parents=True, exist_ok=True)
    script = str(Path(sys.executable).parent / "fs-dynroute")
    env = {**os.environ, "DYNROUTE_DB": f"sqlite:///{work / 'routes.db'}", "DYNROUTE_ESL_PASSWORD": "ClueCon"}

    def cli(*words: str) -> str:
        print("$ fs-dynroute " + " ".join(f"'{w}'" if " " in w or "\\" in w else w for w in words), flush=True)
        out = subprocess.run([script, *words], env=env, capture_output=True, text=True, check=True).stdout
        print(out.rstrip(), flush=True)
        return out

    _say("a database, the IVR, and a rule fed by missed calls (agents are 1xxx extensions)")
    cli("initdb")
    cli("dest", "add", "main-ivr", NO_MATCH)
    cli("rule", "add", "Callbacks", "--source", "5550310", "--digits", "10", "--nomatch-dest", "main-ivr",
        "--delete-after-use", "--track", "missed", "--agents", r"^1\d{3}$")

    switch = InboundSwitch().start()
    port = _free_port()
    logs = [open(work / name, "w") for name in ("serve.log", "track.log")]  # noqa: SIM115 - closed below
    serve = subprocess.Popen([script, "serve", "--listen", f"127.0.0.1:{port}"], env=env, stderr=logs[0])
    track = subprocess.Popen([script, "track", "--esl", "%s:%d" % switch.address,
                              "--status-file", str(work / "track-status.json")], env=env, stderr=logs[1])
    try:
        _say(f"fs-dynroute serve on 127.0.0.1:{port}; fs-dynroute track on the fake event socket "
             f"127.0.0.1:{switch.port} (password from $DYNROUTE_ESL_PASSWORD)")
        _until(lambda: bool(switch.subscribed()), "the tracker to subscribe")
        print("the tracker sent: " + "; ".join(switch.subscribed()[0].commands[1:]))

        _say(f"customer {CUSTOMER} calls 5550300; agent 1101 rings for 3 s and never answers "
             "(the four CHANNEL_HANGUP_COMPLETE events captured from FreeSWITCH 1.10.12)")
        switch.deliver(captured_hangups()["s5"])
        _until(lambda: "5551000005" in cli("route", "list", "Callbacks"), "the pending return")
        cli("track", "status", "--status-file", str(work / "track-status.json"))

        dialplan = Dialplan.recommended(f"127.0.0.1:{port}", NO_MATCH)
        _say(f"the customer calls back on 5550310: the dialplan asks fs-dynroute (No Match would be {NO_MATCH})")
        _until(lambda: place_call(dialplan, "+15559999999", "5550310").target == NO_MATCH, "the server")
        gevent.sleep(1.0)  # the server's index reads the change log every 0.5 s
        first = place_call(dialplan, CUSTOMER, "5550310")
        print(f"call 1 from {CUSTOMER} -> {first.target}   (the agent who missed them)")
        second = place_call(dialplan, CUSTOMER, "5550310")
        print(f"call 2 from {CUSTOMER} -> {second.target}   (Delete After Use: the return happened once)")
        ok = first.target == "1101 XML default" and second.target == NO_MATCH
        _say("done: " + ("the loop closed" if ok else "UNEXPECTED outcome") + f"; logs in {work}")
        return 0 if ok else 1
    finally:
        for proc in (track, serve):
            proc.terminate()
            proc.wait(timeout=10)
        for log in logs:
            log.close()
        switch.stop()


if __name__ == "__main__":
    sys.exit(main())
