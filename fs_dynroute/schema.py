"""Creating, upgrading and printing the database schema, the same on SQLite, MariaDB/MySQL and PostgreSQL.

``initdb`` calls :func:`initdb`: it creates what is missing and runs each migration whose
version is above the stored one, so it is safe to run again and again. ``db/*.sql`` is
:func:`schema_sql` for each dialect, kept equal by a test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import peewee as pw
from playhouse.migrate import SchemaMigrator

from fs_dynroute.admin import UserError
from fs_dynroute.models import MODELS, Change, Destination, Rule, SchemaVersion, Token, Track, name_key
from fs_dynroute.triggers import TRIGGERS

Migration = Callable[[pw.Database, SchemaMigrator], None]
_DIALECTS: dict[str, type[pw.Database]] = {
    "sqlite": pw.SqliteDatabase, "mysql": pw.MySQLDatabase, "postgresql": pw.PostgresqlDatabase}


def dialect_of(db: pw.Database) -> str:
    """``sqlite``, ``mysql`` or ``postgresql`` for a peewee Database (pooled or not)."""
    for name, cls in _DIALECTS.items():
        if isinstance(db, cls):
            return name
    raise ValueError(f"unsupported database {type(db).__name__}")


def install_triggers(db: pw.Database, migrator: SchemaMigrator | None = None) -> None:
    """Version 2: the change log's triggers (the table itself comes from create_tables)."""
    for statement in TRIGGERS[dialect_of(db)]:
        db.execute_sql(statement)


class SchemaError(UserError):
    """The database holds data the new schema cannot take; says what to fix before running initdb again."""


# Names compare ignoring letter case and trailing spaces on every backend (models.name_key). MariaDB's
# default collation already compares so, and its plain unique index enforces it; SQLite and PostgreSQL
# get a unique index on the same expression.
_NAME_INDEXES = [f"CREATE UNIQUE INDEX IF NOT EXISTS {table}_name_ci ON {table} (lower(rtrim(name)))"
                 for table in ("dynroute_destination", "dynroute_rule", "dynroute_source")]
NAME_INDEXES: dict[str, list[str]] = {"sqlite": _NAME_INDEXES, "mysql": [], "postgresql": _NAME_INDEXES}


def names_and_change_ids(db: pw.Database, migrator: SchemaMigrator | None = None) -> None:
    """Version 3: one rule for names on every backend; SQLite's change ids never handed out twice."""
    for model in (Destination, Rule):
        key = name_key(model.name)
        clashes = [repr(name) for (name,) in model.select(key).group_by(key).having(pw.fn.COUNT(model.id) > 1)
                   .tuples()]
        if clashes:
            raise SchemaError(f"{model._meta.table_name}: names that differ only in letter case or trailing "
                              "spaces are one name now; rename or delete all but one spelling of each of: "
                              + ", ".join(clashes))
    if dialect_of(db) == "sqlite" and "AUTOINCREMENT" not in _sqlite_table_sql(db, Change._meta.table_name):
        _rebuild_change_table(db)
    for statement in NAME_INDEXES[dialect_of(db)]:
        db.execute_sql(statement)


def _sqlite_table_sql(db: pw.Database, table: str) -> str:
    return db.execute_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)).fetchone()[0]


_TRIGGER_NAME = re.compile(r"CREATE TRIGGER IF NOT EXISTS (\w+)")


def _rebuild_change_table(db: pw.Database) -> None:
    """SQLite cannot add AUTOINCREMENT to a table: build it again, rows and triggers included."""
    table = Change._meta.table_name
    for name in _TRIGGER_NAME.findall(" ".join(TRIGGERS["sqlite"])):
        db.execute_sql(f"DROP TRIGGER IF EXISTS {name}")
    db.execute_sql(f"ALTER TABLE {table} RENAME TO {table}_v2")
    Change.create_table(safe=False)
    db.execute_sql(f"INSERT INTO {table} (id, rule_id, caller_key) SELECT id, rule_id, caller_key FROM {table}_v2")
    db.execute_sql(f"DROP TABLE {table}_v2")
    install_triggers(db)


def tracking_and_tokens(db: pw.Database, migrator: SchemaMigrator | None = None) -> None:
    """Version 4: the tracker's per-rule settings (``dynroute_track``) and the API and admin-page tokens
    (``dynroute_token``). create_tables has made them already; this step names the version that brought them."""
    db.create_tables([Track, Token], safe=True)


def named_sources(db: pw.Database, migrator: SchemaMigrator | None = None) -> None:
    """Version 5: named sources (``dynroute_source``, ``dynroute_source_number``; create_tables has made them),
    their names compared as other names are, and the triggers that tell every server of a change to them.
    Rules keep their source as it is: a source that names no named source is still its one number."""
    for statement in NAME_INDEXES[dialect_of(db)]:
        db.execute_sql(statement)
    install_triggers(db)


# version -> the step that brings a database from version-1 up to it. Missing tables are created first.
MIGRATIONS: dict[int, Migration] = {2: install_triggers, 3: names_and_change_ids, 4: tracking_and_tokens,
                                 5: named_sources}
CURRENT_VERSION = max(MIGRATIONS, default=1)


def stored_version(db: pw.Database) -> int | None:
    """The schema version in the database, or None for an empty database."""
    if not db.table_exists(SchemaVersion._meta.table_name):
        return None
    row = SchemaVersion.select(pw.fn.MAX(SchemaVersion.version)).scalar()
    return int(row) if row is not None else None


def initdb(db: pw.Database) -> tuple[int | None, int]:
    """Create or upgrade in place; returns (version before, version after)."""
    with db.bind_ctx(MODELS), _ddl_transaction(db):
        before = stored_version(db)
        db.create_tables(MODELS, safe=True)
        migrator = SchemaMigrator.from_database(db)
        for version in sorted(v for v in MIGRATIONS if v > (before or 1)):
            MIGRATIONS[version](db, migrator)
        if before is None:
            SchemaVersion.create(version=CURRENT_VERSION)
        elif before < CURRENT_VERSION:
            SchemaVersion.update(version=CURRENT_VERSION).execute()
        return before, CURRENT_VERSION


def _ddl_transaction(db: pw.Database) -> AbstractContextManager[object]:
    """One transaction where DDL is transactional; MySQL commits each DDL statement by itself."""
    return nullcontext() if isinstance(db, pw.MySQLDatabase) else db.atomic()


def schema_sql(dialect: str) -> str:
    """The DDL the models create on ``dialect``, as a script (what ``db/schema.<dialect>.sql`` holds)."""
    db = _DIALECTS[dialect](None)
    statements: list[str] = []
    with db.bind_ctx(MODELS):
        for model in pw.sort_models(MODELS):
            statements.append(_sql(db, model._schema._create_table(safe=True)))
            statements.extend(_sql(db, q) for q in model._schema._create_indexes(safe=True))
    statements.extend(NAME_INDEXES[dialect])
    statements.extend(TRIGGERS[dialect])
    statements.append(f"INSERT INTO {_quote(db, SchemaVersion._meta.table_name)} "
                      f"({_quote(db, 'version')}) VALUES ({CURRENT_VERSION})")
    header = (f"-- fs_dynroute schema version {CURRENT_VERSION} for {dialect}; "
              f"generated by `fs-dynroute schema {dialect}`.\n")
    return header + "".join(f"{s};\n" for s in statements)


def _sql(db: pw.Database, query: pw.Node) -> str:
    sql, params = db.get_sql_context().sql(query).query()
    assert not params, f"DDL with parameters: {sql}"
    return sql


def _quote(db: pw.Database, name: str) -> str:
    return f"{db.quote[0]}{name}{db.quote[1]}"
