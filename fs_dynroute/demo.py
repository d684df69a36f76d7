"""The demo rule and routes of the module's documentation, loaded by ``initdb --demo`` into an empty database."""

from __future__ import annotations

from fs_dynroute import admin
from fs_dynroute.models import Rule

DESTINATIONS = {"main-ivr": "5000 XML default"}
RULE = "Customer Routing"
RULE_SPEC = admin.RuleSpec(source="5550100", digits_match=10, no_match_destination="main-ivr",
                           match_destination="dynamic")
ROUTES = (("+15551111111", "1001", "Acme account"), ("+15552222222", "1002", "Widget Inc"))


def load() -> bool:
    """Add the demo data unless the database already has rules; True if it was added."""
    if Rule.select().exists():
        return False
    for name, transfer in DESTINATIONS.items():
        admin.add_destination(name, transfer)
    admin.add_rule(RULE, RULE_SPEC)
    for caller_id, destination, notes in ROUTES:
        admin.add_route(RULE, caller_id, destination, notes)
    return True
