"""API and admin-page tokens: created once, stored as a salted HMAC-SHA256, checked in constant time.

A token reads ``fsdr_<key id>_<secret>``. The key id is not secret: it finds the row with one indexed
read. The secret (32 random bytes) is never stored; the row keeps HMAC-SHA256(salt, secret), and a
presented token is compared with ``hmac.compare_digest``. A secret of that strength needs no slow KDF.
Tokens live in the routes database, so every node accepts the same ones and a revoke takes effect at
once everywhere: each request reads the row again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets

from fs_dynroute.admin import UserError
from fs_dynroute.models import Token, utcnow

PREFIX = "fsdr"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@\-]{0,63}")
# last_used is written at most this often per token, so reading pages is not a stream of writes.
LAST_USED_RESOLUTION = dt.timedelta(seconds=60)
_DUMMY_SALT = secrets.token_hex(16)


def _digest(salt: str, secret: str) -> str:
    return hmac.new(salt.encode(), secret.encode(), hashlib.sha256).hexdigest()


def add(name: str, read_only: bool = False) -> str:
    """Create a token and return it: the only time its secret exists outside the caller's hands."""
    if not NAME.fullmatch(name):
        raise UserError(f"name: token name {name!r} must be 1-64 of letters, digits and _.@- "
                        "starting with a letter or digit")
    if Token.select().where(Token.name == name).exists():
        raise UserError(f"name: token {name!r} already exists")
    key_id, secret, salt = secrets.token_hex(6), secrets.token_urlsafe(32), secrets.token_hex(16)
    Token.create(name=name, key_id=key_id, salt=salt, digest=_digest(salt, secret), read_only=read_only)
    return f"{PREFIX}_{key_id}_{secret}"


def verify(token: str) -> Token | None:
    """The token's row if ``token`` is valid now, else None; notes when it was last used."""
    prefix, _, rest = token.strip().partition("_")
    key_id, _, secret = rest.partition("_")
    row = Token.get_or_none(Token.key_id == key_id) if prefix == PREFIX and key_id and secret else None
    # The same work whether or not the key id exists, so timing does not tell which key ids do.
    expected = row.digest if row else _digest(_DUMMY_SALT, "")
    if not hmac.compare_digest(_digest(row.salt if row else _DUMMY_SALT, secret), expected) or row is None:
        return None
    now = utcnow()
    if row.last_used is None or now - row.last_used >= LAST_USED_RESOLUTION:
        Token.update(last_used=now).where(Token.id == row.id).execute()
        row.last_used = now
    return row


def session_token(key_id: str) -> Token | None:
    """The token a signed-in page session was opened with, if it has not been revoked since."""
    return Token.get_or_none(Token.key_id == key_id)


def revoke(name: str) -> None:
    if not Token.delete().where(Token.name == name).execute():
        raise UserError(f"name: token {name!r} does not exist")


def listing() -> list[dict[str, object]]:
    """Every token's name, scope and times; never a secret or a digest."""
    return [{"name": t.name, "read_only": bool(t.read_only), "created_at": t.created_at, "last_used": t.last_used}
            for t in Token.select().order_by(Token.name)]
