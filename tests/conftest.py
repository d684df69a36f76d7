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
