"""Shared fixtures: a real database per backend, bound to the models and initialised; the demo data; the
service in-process; the CLI."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import peewee as pw
import pytest

from fs_dynroute import demo
from fs_dynroute.database import open_database
from fs_dynroute.models import database
from fs_dynroute.schema import initdb
from fs_dynroute.service import Service
from tests.backends import BACKENDS, fresh_database
from tests.serving import CLI, live_greenlets, open_fds, running_server


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


@pytest.fixture
def demo_db(db: pw.Database, db_url: str) -> str:
    """``db`` with the demo rule (Customer Routing on 5550100) and its two routes; its URL."""
    demo.load()
    return db_url


@pytest.fixture
def server(demo_db: str) -> Iterator[Service]:
    """The service over the demo data on 127.0.0.1:<free port>; it must leave no socket or greenlet behind."""
    sockets, greenlets = open_fds(), live_greenlets()
    with running_server(demo_db, decision_timeout=1.0) as service:
        yield service
    assert open_fds() <= sockets, "a session left a socket open"
    assert set(live_greenlets()) <= set(greenlets), "a session left a greenlet running"


@pytest.fixture
def cli(db_url: str) -> CLI:
    """The console script on ``db_url``, initialised with the demo data."""
    run = CLI(db_url)
    assert "demo data loaded" in run("initdb", "--demo").stdout
    return run
