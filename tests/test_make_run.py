"""``make run``: a newcomer's first server, with the admin page and a first token made once and shown every run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from tests.serving import CLI, free_port

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parents[1]  # this interpreter's virtualenv: make must not build another


def make_run(db_url: str, token_file: Path) -> tuple[str, str, int]:
    """Run ``make run`` until it shows the admin page, sign in with the token it shows, then Ctrl-C it.

    Returns (its output, the token shown, the status of the API's rules list for that token)."""
    web = free_port()
    proc = subprocess.Popen(["make", "-s", "-C", str(ROOT), "-o", f"{VENV}/bin/fs-dynroute", "run", f"VENV={VENV}",
                             f"DB={db_url}", f"LISTEN=127.0.0.1:{free_port()}", f"WEB=127.0.0.1:{web}",
                             f"TOKEN_FILE={token_file}"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    assert proc.stdout is not None
    watchdog = threading.Timer(60, os.killpg, (proc.pid, signal.SIGKILL))  # a run that never says where is killed
    watchdog.start()
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Admin page: "):
                break
        found = re.fullmatch(rf"Admin page: http://127\.0\.0\.1:{web}/ \(token in {re.escape(str(token_file))}: "
                             r"(\S+)\)\n", lines[-1])
        assert found, "".join(lines)
        token = found.group(1)
        request = urllib.request.Request(f"http://127.0.0.1:{web}/api/rules",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            status = answer.status
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        rest, _ = proc.communicate(timeout=20)
        watchdog.cancel()
    return "".join(lines) + rest, token, status


@pytest.mark.skipif(shutil.which("make") is None, reason="make not installed")
def test_make_run_shows_the_admin_page_and_one_token_made_on_the_first_run(tmp_path: Path) -> None:
    db_url, token_file = f"sqlite:///{tmp_path / 'var' / 'dynroute.db'}", tmp_path / "var" / "web-token"
    (tmp_path / "var").mkdir()
    output, token, status = make_run(db_url, token_file)
    assert status == 200 and "fs_dynroute is serving the demo rule" in output
    assert token_file.read_text().strip() == token and token_file.stat().st_mode & 0o077 == 0

    output, again, status = make_run(db_url, token_file)  # the next run shows the same token and adds none
    assert (again, status) == (token, 200) and "added" not in output
    assert [t["name"] for t in json.loads(CLI(db_url)("token", "list", "--json").stdout)] == ["make-run"]
