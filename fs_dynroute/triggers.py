"""The triggers that write the change log (``dynroute_change``), one set per backend.

Written as triggers rather than in our own code so that every writer is seen: the CLI, another
fs_dynroute node consuming a Delete After Use record, and a CRM inserting rows directly. Each
statement is one line, so the SQL files split cleanly on ``;`` at line ends.
"""

from __future__ import annotations

_ROUTE_COLUMNS = ("rule_id", "caller_key", "destination", "expires_at")
# Tables whose every change makes the index read all rules again (a change with rule_id NULL).
_NAMED = ("dynroute_destination", "dynroute_source", "dynroute_source_number")

_SQLITE = [
    "CREATE TRIGGER IF NOT EXISTS dynroute_route_ins AFTER INSERT ON dynroute_route BEGIN "
    "INSERT INTO dynroute_change (rule_id, caller_key) VALUES (NEW.rule_id, NEW.caller_key); END",
    "CREATE TRIGGER IF NOT EXISTS dynroute_route_del AFTER DELETE ON dynroute_route BEGIN "
    "INSERT INTO dynroute_change (rule_id, caller_key) VALUES (OLD.rule_id, OLD.caller_key); END",
    f"CREATE TRIGGER IF NOT EXISTS dynroute_route_upd AFTER UPDATE OF {', '.join(_ROUTE_COLUMNS)} "
    "ON dynroute_route BEGIN INSERT INTO dynroute_change (rule_id, caller_key) "
    "VALUES (OLD.rule_id, OLD.caller_key), (NEW.rule_id, NEW.caller_key); END",
    *[f"CREATE TRIGGER IF NOT EXISTS dynroute_rule_{op[:3].lower()} AFTER {op} ON dynroute_rule BEGIN "
      f"INSERT INTO dynroute_change (rule_id) VALUES ({row}.id); END"
      for op, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD"))],
    *[f"CREATE TRIGGER IF NOT EXISTS {table}_{op[:3].lower()} AFTER {op} ON {table} "
      "BEGIN INSERT INTO dynroute_change (rule_id) VALUES (NULL); END"
      for table in _NAMED for op in ("INSERT", "UPDATE", "DELETE")],
]

_MYSQL_CHANGED = " OR ".join(f"NOT (OLD.{c} <=> NEW.{c})" for c in _ROUTE_COLUMNS)
_MYSQL = [
    "CREATE TRIGGER IF NOT EXISTS dynroute_route_ins AFTER INSERT ON dynroute_route FOR EACH ROW "
    "INSERT INTO dynroute_change (rule_id, caller_key) VALUES (NEW.rule_id, NEW.caller_key)",
    "CREATE TRIGGER IF NOT EXISTS dynroute_route_del AFTER DELETE ON dynroute_route FOR EACH ROW "
    "INSERT INTO dynroute_change (rule_id, caller_key) VALUES (OLD.rule_id, OLD.caller_key)",
    # MySQL cannot limit an UPDATE trigger to columns: use_count/last_used updates must not count.
    "CREATE TRIGGER IF NOT EXISTS dynroute_route_upd AFTER UPDATE ON dynroute_route FOR EACH ROW "
    f"INSERT INTO dynroute_change (rule_id, caller_key) SELECT OLD.rule_id, OLD.caller_key FROM DUAL "
    f"WHERE {_MYSQL_CHANGED} UNION ALL SELECT NEW.rule_id, NEW.caller_key FROM DUAL WHERE {_MYSQL_CHANGED}",
    *[f"CREATE TRIGGER IF NOT EXISTS dynroute_rule_{op[:3].lower()} AFTER {op} ON dynroute_rule FOR EACH ROW "
      f"INSERT INTO dynroute_change (rule_id) VALUES ({row}.id)"
      for op, row in (("INSERT", "NEW"), ("UPDATE", "NEW"), ("DELETE", "OLD"))],
    *[f"CREATE TRIGGER IF NOT EXISTS {table}_{op[:3].lower()} AFTER {op} ON {table} "
      "FOR EACH ROW INSERT INTO dynroute_change (rule_id) VALUES (NULL)"
      for table in _NAMED for op in ("INSERT", "UPDATE", "DELETE")],
]

_POSTGRESQL = [
    "CREATE OR REPLACE FUNCTION dynroute_route_changed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF TG_OP <> 'INSERT' THEN "
    "INSERT INTO dynroute_change (rule_id, caller_key) VALUES (OLD.rule_id, OLD.caller_key); END IF; "
    "IF TG_OP <> 'DELETE' THEN "
    "INSERT INTO dynroute_change (rule_id, caller_key) VALUES (NEW.rule_id, NEW.caller_key); END IF; "
    "RETURN NULL; END $$",
    "CREATE OR REPLACE FUNCTION dynroute_rule_changed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF TG_OP = 'DELETE' THEN INSERT INTO dynroute_change (rule_id) VALUES (OLD.id); "
    "ELSE INSERT INTO dynroute_change (rule_id) VALUES (NEW.id); END IF; RETURN NULL; END $$",
    "CREATE OR REPLACE FUNCTION dynroute_destination_changed() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO dynroute_change (rule_id) VALUES (NULL); RETURN NULL; END $$",
    "DROP TRIGGER IF EXISTS dynroute_route_change ON dynroute_route",
    f"CREATE TRIGGER dynroute_route_change AFTER INSERT OR DELETE OR UPDATE OF {', '.join(_ROUTE_COLUMNS)} "
    "ON dynroute_route FOR EACH ROW EXECUTE FUNCTION dynroute_route_changed()",
    "DROP TRIGGER IF EXISTS dynroute_rule_change ON dynroute_rule",
    "CREATE TRIGGER dynroute_rule_change AFTER INSERT OR UPDATE OR DELETE ON dynroute_rule "
    "FOR EACH ROW EXECUTE FUNCTION dynroute_rule_changed()",
    # The named tables share dynroute_destination_changed(): each inserts the one (NULL) change.
    *[statement for table in _NAMED for statement in (
        f"DROP TRIGGER IF EXISTS {table}_change ON {table}",
        f"CREATE TRIGGER {table}_change AFTER INSERT OR UPDATE OR DELETE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION dynroute_destination_changed()")],
]

TRIGGERS: dict[str, list[str]] = {"sqlite": _SQLITE, "mysql": _MYSQL, "postgresql": _POSTGRESQL}
