"""Shared fixtures: a real database per backend, bound to the models and initialised."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest

from fs_dynroute.database import open_database
from fs_dynroute.models import database
from fs_dynroute.schema import initdb
from tests.backends import BACKENDS, fresh_database
from tests.captures import CAPTURE_DIR


def pytest_sessionstart(session: pytest.Session) -> None:
    """The fake FreeSWITCH is built from the captures: without them, say where they were looked for."""
    if not (CAPTURE_DIR / "sync" / "S18.repr").is_file():
        pytest.exit(f"FreeSWITCH captures not found in {CAPTURE_DIR}: the repository expects ../shared/esl "
                    "beside it, or set DYNROUTE_ESL_CAPTURES to their directory", returncode=3)


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database URL, once per backend under test."""
    with fresh_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def db(db_url: str) -> Iterator[pw.Database]:
    """The models bound to a freshly initialised database, connected in this thread."""
    handle = open_database(db_url)
    database.initialize(handle)
    with handle.connection_context():
        initdb(handle)
    yield handle
    handle.close()
