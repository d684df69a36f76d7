"""The peewee models: rules, their routes, named destinations, the audit trail and the schema version.

Table names are fixed (``dynroute_*``) so the plain SQL in ``db/`` and a CRM writing
straight into the tables see the same schema as the code.
"""

from __future__ import annotations

import datetime as dt

import peewee as pw

database = pw.DatabaseProxy()

MATCH_MODES = EXACT, PREFIX = ("exact", "prefix")


def utcnow() -> dt.datetime:
    """Naive UTC, the one time zone every backend stores the same way."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None, microsecond=0)


class BaseModel(pw.Model):
    class Meta:
        database = database


class Destination(BaseModel):
    name = pw.CharField(max_length=64, unique=True)
    transfer = pw.CharField(max_length=255)

    class Meta:
        table_name = "dynroute_destination"


class Rule(BaseModel):
    name = pw.CharField(max_length=100, unique=True)
    source = pw.CharField(max_length=100, index=True)
    digits_match = pw.SmallIntegerField()
    match_destination = pw.CharField(max_length=255, default="dynamic")
    no_match_destination = pw.CharField(max_length=255)
    delete_after_use = pw.BooleanField(default=False)
    enabled = pw.BooleanField(default=True)
    match_mode = pw.CharField(max_length=10, default=EXACT)
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)

    @property
    def prefix(self) -> bool:
        """Stored keys are leading parts of a call's key (the longest wins) rather than whole keys."""
        return self.match_mode == PREFIX

    class Meta:
        table_name = "dynroute_rule"


class Source(BaseModel):
    """A named source ("Inbound route/queue", e.g. ``Main Number``): a rule whose ``source`` is this name serves
    every number behind it. A rule's ``source`` that names no Source is itself the one number it serves."""

    name = pw.CharField(max_length=100, unique=True)

    class Meta:
        table_name = "dynroute_source"


class SourceNumber(BaseModel):
    """One number (a dialled destination_number) of a named source; a number belongs to one source at most."""

    source = pw.ForeignKeyField(Source, backref="numbers", on_delete="CASCADE")
    number = pw.CharField(max_length=100, unique=True)

    class Meta:
        table_name = "dynroute_source_number"


def source_map() -> dict[str, tuple[str, ...]]:
    """Named sources, name -> its numbers (sorted), as validation, the index and the dialplan need them."""
    found: dict[str, list[str]] = {s.name: [] for s in Source.select(Source.name)}
    for name, number in (SourceNumber.select(Source.name, SourceNumber.number).join(Source)
                         .order_by(SourceNumber.number).tuples()):
        found[name].append(number)
    return {name: tuple(numbers) for name, numbers in sorted(found.items())}


class Route(BaseModel):
    # index=False: the unique (rule, caller_key) index below serves the foreign key too.
    rule = pw.ForeignKeyField(Rule, backref="routes", on_delete="CASCADE", index=False)
    caller_key = pw.CharField(max_length=20)
    # Database-side defaults too, so a CRM inserting rows directly need not name these columns.
    destination = pw.CharField(max_length=255, default="", constraints=[pw.SQL("DEFAULT ''")])
    notes = pw.CharField(max_length=255, default="", constraints=[pw.SQL("DEFAULT ''")])
    expires_at = pw.DateTimeField(null=True)
    use_count = pw.IntegerField(default=0, constraints=[pw.SQL("DEFAULT 0")])
    last_used = pw.DateTimeField(null=True)

    class Meta:
        table_name = "dynroute_route"
        indexes = ((("rule", "caller_key"), True),)


class Audit(BaseModel):
    at = pw.DateTimeField(default=utcnow, index=True)
    rule_name = pw.CharField(max_length=100)
    caller_key = pw.CharField(max_length=20, default="")
    destination = pw.CharField(max_length=255, default="")
    result = pw.CharField(max_length=10)
    call_uuid = pw.CharField(max_length=64, null=True)

    class Meta:
        table_name = "dynroute_audit"


class ChangeIdField(pw.AutoField):
    """The change log's id: on SQLite AUTOINCREMENT, so an id is never handed out twice, even after pruning
    empties the table (every server's cursor is above the old ids). MariaDB's and PostgreSQL's never go back."""

    def ddl(self, ctx: pw.Context) -> pw.NodeList:
        node = super().ddl(ctx)
        db = self.model._meta.database
        db = db.obj if isinstance(db, pw.DatabaseProxy) else db
        return pw.NodeList((node, pw.SQL("AUTOINCREMENT"))) if isinstance(db, pw.SqliteDatabase) else node


class Change(BaseModel):
    """The change log, written by database triggers on every change to routes, rules and destinations.

    Servers poll it to keep their in-memory index coherent, whoever wrote the change (the CLI,
    another node consuming a Delete After Use record, a CRM writing straight into the tables).
    ``caller_key`` NULL means the whole rule; ``rule_id`` NULL means the named destinations or sources (all rules
    are read again).
    """

    id = ChangeIdField()
    rule_id = pw.IntegerField(null=True)
    caller_key = pw.CharField(max_length=20, null=True)

    class Meta:
        table_name = "dynroute_change"


class SchemaVersion(BaseModel):
    version = pw.IntegerField()

    class Meta:
        table_name = "dynroute_schema"


def name_key(field: pw.Field) -> pw.Node:
    """What makes two destination or rule names the same on every backend: letter case and trailing spaces
    do not count (MariaDB's default collation compares so; SQLite and PostgreSQL index this expression)."""
    return pw.fn.LOWER(pw.fn.RTRIM(field))


class Token(BaseModel):
    """An API and admin-page credential. Only an HMAC-SHA256 of its secret is kept, keyed by a per-token salt;
    ``key_id`` (not secret, part of the token) finds the row, so checking a token is one indexed read."""

    name = pw.CharField(max_length=64, unique=True)
    key_id = pw.CharField(max_length=16, unique=True)
    salt = pw.CharField(max_length=32)
    digest = pw.CharField(max_length=64)
    read_only = pw.BooleanField(default=False)
    created_at = pw.DateTimeField(default=utcnow)
    last_used = pw.DateTimeField(null=True)

    class Meta:
        table_name = "dynroute_token"


def destination_map() -> dict[str, str]:
    """Named destinations, name -> transfer argument, as every resolver needs them."""
    return {d.name: d.transfer for d in Destination.select().order_by(Destination.name)}


class Track(BaseModel):
    """How a rule is fed from call outcomes (``rule add/edit --track``): one row per tracked rule.

    ``mode`` is ``missed`` or ``last-agent``; ``agents`` a regular expression for the agents' numbers;
    ``ttl`` a duration such as ``72h`` ('' = the routes never expire); ``causes`` comma-separated hangup causes.
    """

    rule = pw.ForeignKeyField(Rule, backref="track", on_delete="CASCADE", unique=True)
    mode = pw.CharField(max_length=16)
    agents = pw.CharField(max_length=255)
    ttl = pw.CharField(max_length=16, default="")
    causes = pw.CharField(max_length=255, default="")

    class Meta:
        table_name = "dynroute_track"


MODELS: tuple[type[BaseModel], ...] = (Destination, Rule, Route, Audit, Change, SchemaVersion, Track, Token, Source,
                                       SourceNumber)
