"""The schema: initdb is idempotent, and db/*.sql creates exactly what the models create, on each backend."""

from __future__ import annotations

from pathlib import Path

import peewee as pw
import pytest

from fs_dynroute import demo
from fs_dynroute.database import backend_of, open_database
from fs_dynroute.models import MODELS, Change, Destination, Route, Rule, Source, database, destination_map
from fs_dynroute.schema import CURRENT_VERSION, SchemaError, initdb, schema_sql, stored_version
from fs_dynroute.store import SQLStore
from tests.backends import fresh_database

DB_DIR = Path(__file__).resolve().parents[1] / "db"


@pytest.mark.parametrize("dialect", ["sqlite", "mysql", "postgresql"])
def test_db_sql_files_are_what_the_models_create(dialect: str) -> None:
    assert (DB_DIR / f"schema.{dialect}.sql").read_text() == schema_sql(dialect)


def run_script(db: pw.Database, path: Path) -> None:
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("--")]
    for statement in "\n".join(lines).split(";\n"):
        if statement.strip():
            db.execute_sql(statement)


def columns(db: pw.Database) -> dict[str, list[tuple[str, str, bool]]]:
    return {m._meta.table_name: sorted((c.name, c.data_type.lower(), c.null)
                                       for c in db.get_columns(m._meta.table_name)) for m in MODELS}


def indexes(db: pw.Database) -> dict[str, list[tuple[str, tuple[str, ...], bool]]]:
    return {m._meta.table_name: sorted((i.name, tuple(i.columns), i.unique)
                                       for i in db.get_indexes(m._meta.table_name)) for m in MODELS}


def snapshot() -> tuple[list, list, list]:
    return ([(d.name, d.transfer) for d in Destination.select().order_by(Destination.name)],
            [(r.name, r.source, r.digits_match, r.match_destination, r.no_match_destination,
              bool(r.delete_after_use), bool(r.enabled), r.match_mode) for r in Rule.select()],
            [(r.caller_key, r.destination, r.notes, r.use_count) for r in Route.select().order_by(Route.caller_key)])


def test_sql_file_and_initdb_build_the_same_database(db_url: str, tmp_path: Path) -> None:
    backend = backend_of(db_url)
    by_models = open_database(db_url)
    database.initialize(by_models)
    assert initdb(by_models) == (None, CURRENT_VERSION)
    assert initdb(by_models) == (CURRENT_VERSION, CURRENT_VERSION)  # idempotent
    demo.load()
    assert demo.load() is False  # never twice
    expected = (columns(by_models), indexes(by_models), snapshot())
    by_models.close()

    with fresh_database(backend, tmp_path / "by_sql") as other_url:
        by_sql = open_database(other_url)
        database.initialize(by_sql)
        run_script(by_sql, DB_DIR / f"schema.{backend}.sql")
        run_script(by_sql, DB_DIR / "demo.sql")
        assert stored_version(by_sql) == CURRENT_VERSION
        assert initdb(by_sql) == (CURRENT_VERSION, CURRENT_VERSION)
        assert (columns(by_sql), indexes(by_sql), snapshot()) == expected
        by_sql.close()


def load_old(db_url: str, version: int) -> pw.Database:
    """A database as an older fs_dynroute created it (tests/data/schema-v<version>.*.sql), with the demo data."""
    old = open_database(db_url)
    database.initialize(old)
    run_script(old, Path(__file__).parent / "data" / f"schema-v{version}.{backend_of(db_url)}.sql")
    run_script(old, DB_DIR / "demo.sql")
    assert stored_version(old) == version
    return old


@pytest.mark.parametrize("version", [1, 2, 4])
def test_initdb_upgrades_an_older_database_in_place(db_url: str, version: int) -> None:
    old = load_old(db_url, version)
    assert initdb(old) == (version, CURRENT_VERSION)
    assert initdb(old) == (CURRENT_VERSION, CURRENT_VERSION)
    assert [r[0] for r in snapshot()[2]] == ["5551111111", "5552222222"]  # data kept
    last = Change.select(pw.fn.MAX(Change.id)).scalar() or 0
    Change.delete().execute()  # as pruning does
    Route.update(destination="1009").where(Route.caller_key == "5551111111").execute()  # the new triggers work
    changes = list(Change.select())
    assert [(c.rule_id, c.caller_key) for c in changes] == [(1, "5551111111")] * 2
    assert min(c.id for c in changes) > last  # version 3: an id is never handed out twice, even after pruning
    # Version 3: a name spelled differently is the same name, in the schema itself.
    with pytest.raises(pw.IntegrityError), old.atomic():
        old.execute_sql("INSERT INTO dynroute_destination (name, transfer) VALUES ('MAIN-IVR', '7777 XML default')")
    assert Destination.get().transfer == "5000 XML default"
    Change.delete().execute()
    Source.create(name="Main Number")  # version 5: a change to named sources reaches every server
    assert [(c.rule_id, c.caller_key) for c in Change.select()] == [(None, None)]
    with pytest.raises(pw.IntegrityError), old.atomic():
        Source.create(name="main number ")
    assert SQLStore(old).rule_for(source="5550100").name == "Customer Routing"  # single-number sources unchanged
    old.close()


def test_upgrade_names_the_names_that_differ_only_in_case_and_changes_nothing(db_url: str) -> None:
    if backend_of(db_url) == "mysql":
        pytest.skip("MariaDB's collation never let two such names in")
    old = load_old(db_url, 2)
    old.execute_sql("INSERT INTO dynroute_destination (name, transfer) VALUES ('Main-IVR', '7777 XML default')")
    with pytest.raises(SchemaError, match="rename or delete all but one spelling of each of: 'main-ivr'"):
        initdb(old)
    assert stored_version(old) == 2
    assert sorted(destination_map()) == ["Main-IVR", "main-ivr"]
    old.close()


def test_change_log_sees_every_writer_but_not_use_counts(db: pw.Database) -> None:
    demo.load()
    Change.delete().execute()
    rule_id = Rule.get().id
    db.execute_sql("INSERT INTO dynroute_route (rule_id, caller_key, destination) VALUES (%s, '5553333333', '1003')"
                   .replace("%s", str(rule_id)))  # a CRM writing straight into the table
    Route.update(use_count=Route.use_count + 1).execute()  # statistics: not a change
    Route.delete().where(Route.caller_key == "5552222222").execute()
    Rule.update(enabled=False).execute()
    Destination.update(transfer="5001 XML default").execute()
    changes = [(c.rule_id, c.caller_key) for c in Change.select().order_by(Change.id)]
    assert changes == [(rule_id, "5553333333"), (rule_id, "5552222222"), (rule_id, None), (None, None)]
