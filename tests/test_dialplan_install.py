"""``fs-dynroute dialplan --install FILE [--reload]``: an atomic file, then reloadxml over the inbound event socket."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fs_dynroute.esl import api_response
from fs_dynroute.fakeswitch.switch import Dialplan
from tests.fake_inbound import API, CAPTURED_API_ANSWER, FakeInbound
from tests.serving import CLI


@pytest.fixture
def cli(db_url: str) -> CLI:
    run = CLI(db_url)
    run("initdb", "--demo")
    return run


def test_the_fake_answers_api_commands_framed_as_freeswitch_does() -> None:
    assert api_response(b"+OK\n") == CAPTURED_API_ANSWER
    assert API["reloadxml"].endswith(b"\n")


def test_install_writes_the_generated_file_once_and_reloads_freeswitch(cli: CLI, tmp_path: Path) -> None:
    target = tmp_path / "50_dynroute.xml"
    password = tmp_path / "esl.password"
    password.write_text("s3cret\n")
    with FakeInbound("s3cret") as switch:
        done = cli("dialplan", "--install", str(target), "--reload", "--esl", switch.address,
                   "--password-file", str(password))
        assert done.stdout.splitlines() == [f"dialplan written to {target}", "FreeSWITCH reloadxml: +OK [Success]"]
        assert switch.commands == ["auth s3cret", "api reloadxml", "exit"]
    assert target.read_text() == cli("dialplan").stdout
    assert Dialplan.from_xml(target.read_text(), "5550100").actions[1] == ("set", "dynroute_rule=Customer Routing")
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    inode = target.stat().st_ino
    assert cli("dialplan", "--install", str(target)).stdout.strip() == f"dialplan unchanged in {target}"
    assert target.stat().st_ino == inode
    cli("rule", "disable", "Customer Routing")
    cli("dialplan", "--install", str(target))
    assert "dynroute Customer Routing" not in target.read_text() and target.stat().st_ino != inode
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


@pytest.mark.parametrize("problem", ["password", "down", "reload-alone"])
def test_reload_failures_are_one_clear_line(cli: CLI, tmp_path: Path, problem: str) -> None:
    target = tmp_path / "50_dynroute.xml"
    with FakeInbound("s3cret") as switch:
        address = switch.address
        args = {"password": ["--install", str(target), "--reload", "--esl", address],  # the default ClueCon
                "down": ["--install", str(target), "--reload", "--esl", "127.0.0.1:1"],
                "reload-alone": ["--reload", "--esl", address]}[problem]
        failed = cli("dialplan", *args, ok=False)
    assert failed.returncode == 2 and len(failed.stderr.strip().splitlines()) == 1
    assert {"password": "refused the password (-ERR invalid)", "down": "esl 127.0.0.1:1:",
            "reload-alone": "only with --install"}[problem] in failed.stderr
    assert "Traceback" not in failed.stderr
    assert os.path.exists(target) == (problem != "reload-alone")
