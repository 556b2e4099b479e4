"""Whether one HTTP request may reach an admin action: authentication and cross-site refusal.

Pure: the request's method and headers go in, the operator's name or a :class:`Refusal`
comes out. Checked in this order:

1. No token configured: the admin API is disabled, 403 (safe by default).
2. No ``Authorization: Bearer <secret>`` header: 401 with ``WWW-Authenticate``.
3. A secret no token has: 403.
4. A state-changing request (any method but GET and HEAD) with an ``Origin`` header (a
   browser sent it on behalf of some page): 403; with a form content type
   (``application/x-www-form-urlencoded``, ``multipart/form-data``, ``text/plain``, the ones
   a cross-site HTML form can send without a preflight): 415. A cross-site form carries no
   Authorization header, so it is refused at step 2 already; step 4 is a second wall.
"""

from __future__ import annotations

from typing import Union

import attr

from fixserver.admin.tokens import TokenVerifier

REALM = 'Bearer realm="fixserver-admin"'
#: methods that change nothing (everything else must pass the cross-site checks)
SAFE_METHODS = frozenset(("GET", "HEAD"))
FORM_CONTENT_TYPES = frozenset(
    ("application/x-www-form-urlencoded", "multipart/form-data", "text/plain"))


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Refusal:
    """Why a request is refused: HTTP status, the error message, extra response headers."""

    status: int
    error: str
    headers: tuple[tuple[str, str], ...] = ()


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Admitted:
    """The request may go on; ``who`` is the name of the token it presented."""

    who: str


Decision = Union[Admitted, Refusal]

DISABLED = Refusal(403, "the admin API is disabled: no AdminToken or AdminTokenFile is "
                        "configured (see ops/README.md)")
NO_TOKEN = Refusal(401, "authentication required: send Authorization: Bearer <token>",
                   (("WWW-Authenticate", REALM),))
WRONG_TOKEN = Refusal(403, "the token is not valid",
                      (("WWW-Authenticate", REALM + ', error="invalid_token"'),))
CROSS_ORIGIN = Refusal(403, "requests sent by a browser page (an Origin header) may not "
                            "change anything")
FORM_BODY = Refusal(415, "form content types are refused: send application/json")


def media_type(content_type: str | None) -> str:
    """The media type of a Content-Type value, lower case, without parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def admit(
    verifier: TokenVerifier,
    method: str,
    authorization: list[str],
    content_type: str | None = None,
    origin: str | None = None,
) -> Decision:
    """Decide one request (module docstring); ``authorization`` holds every Authorization
    header value the request carried."""
    if not verifier.enabled:
        return DISABLED
    if len(authorization) != 1:
        return NO_TOKEN
    scheme, _, secret = authorization[0].strip().partition(" ")
    secret = secret.strip()
    if scheme.lower() != "bearer" or not secret:
        return NO_TOKEN
    who = verifier.who(secret)
    if who is None:
        return WRONG_TOKEN
    if method.upper() not in SAFE_METHODS:
        if origin is not None:
            return CROSS_ORIGIN
        if media_type(content_type) in FORM_CONTENT_TYPES:
            return FORM_BODY
    return Admitted(who)
