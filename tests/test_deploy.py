"""``deploy/``: the systemd unit is one systemd accepts, and the example environment file holds only (and all)
the variables ``serve`` reads, with values it starts with."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fs_dynroute.config import SETTINGS
from tests.serving import CLI, SCRIPT, ServeProcess, free_port

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
UNIT = DEPLOY / "fs-dynroute.service"
ENV_FILE = DEPLOY / "fs-dynroute.env"
INSTALLED_SCRIPT = "/opt/fs-dynroute/bin/fs-dynroute"


def unit_settings() -> dict[str, str]:
    return dict(line.split("=", 1) for line in UNIT.read_text().splitlines() if re.match(r"[A-Z]\w*=", line))


def env_file_variables() -> dict[str, str]:
    """Every ``NAME=value`` in the example, commented out or not (a commented line shows a default)."""
    found = re.findall(r"^#?(DYNROUTE_\w+)=(.*)$", ENV_FILE.read_text(), re.MULTILINE)
    return {name: value for name, value in reversed(found)}  # the first spelling of each


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (apt: systemd)")
def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """``verify`` exits 0 even for unknown keys and bad values, so any word on stderr is a failure too. The
    unit's ExecStart names the production venv; here it names this checkout's script, which exists."""
    assert INSTALLED_SCRIPT in UNIT.read_text()
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED_SCRIPT, SCRIPT))
    proc = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_the_unit_runs_serve_as_a_hardened_service_reading_the_environment_file() -> None:
    settings = unit_settings()
    assert settings["ExecStart"] == f"{INSTALLED_SCRIPT} serve"  # every option comes from the environment file
    assert settings["EnvironmentFile"] == "/etc/default/fs-dynroute"
    assert settings["Restart"] == "always" and settings["User"] == "fs-dynroute" != "root"
    assert settings["NoNewPrivileges"] == "yes" and settings["ProtectSystem"] == "strict"
    assert settings["ProtectHome"] == "yes" and settings["CapabilityBoundingSet"] == ""
    assert int(settings["LimitNOFILE"]) > 1000 + 100  # the default --max-sessions and the database's files


def test_every_variable_in_the_example_environment_file_is_one_serve_reads() -> None:
    assert set(env_file_variables()) == {s.env for s in SETTINGS}


def test_serve_starts_with_the_example_environment_file(tmp_path: Path) -> None:
    """The example as an administrator installs it, with only the database and port changed for the test."""
    db_url = f"sqlite:///{tmp_path / 'routes.db'}"
    CLI(db_url)("initdb", "--demo")
    values = {name: value for name, value in re.findall(r"^(DYNROUTE_\w+)=(.*)$", ENV_FILE.read_text(), re.MULTILINE)}
    env = {**os.environ, **values, "DYNROUTE_DB": db_url, "DYNROUTE_LISTEN": f"127.0.0.1:{free_port()}"}
    server = ServeProcess(db_url, env=env, listen=False)
    try:
        assert f"listening on {env['DYNROUTE_LISTEN']} (max 1000 sessions, deadline 1.000 s" in server.text()
    finally:
        assert server.stop()[0] == 0


def test_the_commented_defaults_are_the_defaults() -> None:
    shown = env_file_variables()
    for setting in SETTINGS:
        if setting.default is not None:
            assert shown[setting.env] == setting.default_text(), setting.env


def test_the_readme_documents_every_serve_variable() -> None:
    readme = (DEPLOY.parent / "README.md").read_text()
    for setting in SETTINGS:
        assert f"| `{setting.option} {setting.metavar.replace('SECONDS', 'S')}` | `{setting.env}` |" in readme, \
            setting.env
