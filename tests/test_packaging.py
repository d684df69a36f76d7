"""The wheel ``pip wheel .`` builds: what an installed fs_dynroute has, and what it must not carry."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fs_dynroute.fakeswitch import captures

ROOT = Path(__file__).resolve().parents[1]
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "var", "*.egg-info", "__pycache__", ".hypothesis")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """Built from a copy of the tree (tests included, as in a clone), offline: no index, no build isolation."""
    tree = tmp_path_factory.mktemp("tree") / "fs_dynroute"
    shutil.copytree(ROOT, tree, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-q", "-w", str(out), str(tree)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (built,) = out.glob("fs_dynroute-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def test_wheel_carries_every_recording_the_fake_replays(wheel: zipfile.ZipFile) -> None:
    shipped = {name for name in wheel.namelist() if "/recordings/" in name}
    in_tree = {f"fs_dynroute/fakeswitch/recordings/{p.relative_to(captures.CAPTURE_DIR).as_posix()}"
               for p in captures.CAPTURE_DIR.rglob("*") if p.is_file()}
    assert shipped == in_tree
    assert "fs_dynroute/fakeswitch/recordings/SHA256SUMS" in shipped
    assert "fs_dynroute/fakeswitch/recordings/sync/S18.repr" in shipped  # every fake call's connect reply template
    for name in in_tree:  # byte for byte, so the SHA256SUMS check holds in an installed copy too
        assert wheel.read(name) == (ROOT / name).read_bytes(), name


def test_wheel_holds_the_package_and_no_tests(wheel: zipfile.ZipFile) -> None:
    names = wheel.namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"fs_dynroute", next(t for t in tops if t.endswith(".dist-info"))}
    assert not [n for n in names if "/tests/" in n or Path(n).name.startswith(("test_", "conftest"))]
    assert "fs_dynroute/fakeswitch/switch.py" in names and "fs_dynroute/cli.py" in names


def test_wheel_metadata_names_the_license_the_entry_point_and_the_pinned_extras(wheel: zipfile.ZipFile) -> None:
    info = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")).rsplit("/", 1)[0]
    metadata = wheel.read(f"{info}/METADATA").decode()
    assert "License-Expression: MIT" in metadata
    assert wheel.read(f"{info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
    assert "Requires-Dist: greenswitch==0.0.19; extra == \"bench\"" in metadata
    assert "fs-dynroute = fs_dynroute.cli:main" in wheel.read(f"{info}/entry_points.txt").decode()
