"""The peewee models: rules, their routes, named destinations, the audit trail and the schema version.

Table names are fixed (``dynroute_*``) so the plain SQL in ``db/`` and a CRM writing
straight into the tables see the same schema as the code.
"""

from __future__ import annotations

import datetime as dt

import peewee as pw

database = pw.DatabaseProxy()

MATCH_MODES = ("exact", "prefix")


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
    match_mode = pw.CharField(max_length=10, default="exact")
    created_at = pw.DateTimeField(default=utcnow)
    updated_at = pw.DateTimeField(default=utcnow)

    class Meta:
        table_name = "dynroute_rule"


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


class Change(BaseModel):
    """The change log, written by database triggers on every change to routes, rules and destinations.

    Servers poll it to keep their in-memory index coherent, whoever wrote the change (the CLI,
    another node consuming a Delete After Use record, a CRM writing straight into the tables).
    ``caller_key`` NULL means the whole rule; ``rule_id`` NULL means the named destinations.
    """

    rule_id = pw.IntegerField(null=True)
    caller_key = pw.CharField(max_length=20, null=True)

    class Meta:
        table_name = "dynroute_change"


class SchemaVersion(BaseModel):
    version = pw.IntegerField()

    class Meta:
        table_name = "dynroute_schema"


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


MODELS: tuple[type[BaseModel], ...] = (Destination, Rule, Route, Audit, Change, SchemaVersion, Token)
