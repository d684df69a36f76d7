"""FreeSWITCH's mod_xml_curl asks here for a call's dialplan, so the switch always routes by the live rules.

mod_xml_curl POSTs the channel's fields form-encoded (``section=dialplan``, ``Hunt-Context``,
``Hunt-Destination-Number``...) with HTTP Basic credentials (``gateway-credentials``: any user name,
a token as the password). The answer is the extension ``fs-dynroute dialplan`` would write for the
enabled rule serving that number, or "not found", which sends FreeSWITCH to its static dialplan files.
"""

from __future__ import annotations

from apiflask import APIBlueprint, HTTPBasicAuth
from flask import Response, current_app, request

from fs_dynroute import tokens
from fs_dynroute.decision import RuleView
from fs_dynroute.destinations import DestinationError
from fs_dynroute.dialplan import NOT_FOUND, fetch_answer
from fs_dynroute.models import database
from fs_dynroute.store import SQLStore

xmlcurl = APIBlueprint("xmlcurl", __name__, enable_openapi=False)
basic = HTTPBasicAuth()


@basic.verify_password
def _verify(_user: str, password: str) -> object:
    return tokens.verify(password)


def _field(*names: str) -> str:
    """The first of FreeSWITCH's field names present: Hunt-* is where the call is now, Caller-* where it began."""
    return next((request.form[n] for n in names if request.form.get(n)), "")


def _rule_for(number: str) -> RuleView | None:
    try:
        return SQLStore(database.obj, current_app.config["DEFAULT_CONTEXT"]).rule_for(source=number)
    except DestinationError:  # a rule FreeSWITCH must not be given; `fs-dynroute check` names it
        return None


@xmlcurl.post("/freeswitch/dialplan")
@xmlcurl.auth_required(basic)
def dialplan() -> Response:
    context, target = _field("Hunt-Context", "Caller-Context"), current_app.config["DIALPLAN"]
    answer = NOT_FOUND
    if request.form.get("section") == "dialplan" and context == target.context:
        answer = fetch_answer(_rule_for(_field("Hunt-Destination-Number", "Caller-Destination-Number")),
                              target.servers, context)
    return Response(answer, mimetype="text/xml")
