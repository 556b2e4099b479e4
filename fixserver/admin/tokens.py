"""Admin API bearer tokens: parsing the configuration, and the constant-time check.

A token has a *name* (who: it is logged and journaled with every action done with it) and a
*secret* (what the client sends in ``Authorization: Bearer <secret>``). They come from
``AdminToken=name:secret[,name:secret...]`` and/or ``AdminTokenFile=path``, a file of
``name secret`` lines (``#`` comments and blank lines ignored). Names are unique and so are
secrets (a secret names exactly one operator). Secrets are at least
:data:`MIN_SECRET_LENGTH` characters and never appear in a repr, a log line or an error
message.

:class:`TokenVerifier` compares the presented secret with every configured one using
``hmac.compare_digest`` over SHA-256 digests (equal lengths, no early exit), so the time
taken says nothing about how much of a secret was right, nor which one.

Pure: no I/O (the config reader passes the file's text in).
"""

from __future__ import annotations

import hashlib
import hmac
import re

import attr

#: the shortest secret accepted (a guessable token is no protection)
MIN_SECRET_LENGTH = 16
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class TokenError(ValueError):
    """A token definition is unusable; the message never contains a secret."""


@attr.s(frozen=True, slots=True, auto_attribs=True)
class AdminToken:
    """One operator's token: ``name`` is who, ``secret`` is kept out of reprs and logs."""

    name: str
    secret: str = attr.ib(repr=False)


def _token(name: str, secret: str, where: str) -> AdminToken:
    if not _NAME.match(name):
        raise TokenError(f"{where}: token name {name!r} must be 1-64 letters, digits or _.@-")
    if len(secret) < MIN_SECRET_LENGTH:
        raise TokenError(f"{where}: the secret of token {name!r} is shorter than "
                         f"{MIN_SECRET_LENGTH} characters")
    if any(c.isspace() or not c.isprintable() for c in secret):
        raise TokenError(f"{where}: the secret of token {name!r} has blanks or control "
                         "characters")
    return AdminToken(name, secret)


def parse_token_list(value: str) -> list[AdminToken]:
    """``name:secret[,name:secret...]`` (the ``AdminToken`` key)."""
    tokens = []
    for n, item in enumerate(value.split(","), start=1):
        name, sep, secret = item.strip().partition(":")
        if not sep:
            raise TokenError(f"entry {n}: expected name:secret")
        tokens.append(_token(name.strip(), secret.strip(), f"entry {n}"))
    return tokens


def parse_token_file(text: str) -> list[AdminToken]:
    """A token file's lines: ``name secret`` (``#`` comments and blank lines ignored)."""
    tokens = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise TokenError(f"line {number}: expected 'name secret'")
        tokens.append(_token(parts[0], parts[1], f"line {number}"))
    return tokens


def check_unique(tokens: list[AdminToken]) -> tuple[AdminToken, ...]:
    """The tokens, refused if a name or a secret is used twice."""
    names: set[str] = set()
    secrets: set[str] = set()
    for token in tokens:
        if token.name in names:
            raise TokenError(f"token name {token.name!r} is configured twice")
        if token.secret in secrets:
            raise TokenError(f"token {token.name!r} has the same secret as another token")
        names.add(token.name)
        secrets.add(token.secret)
    return tuple(tokens)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


class TokenVerifier:
    """Who a presented secret belongs to, compared in constant time (module docstring)."""

    def __init__(self, tokens: tuple[AdminToken, ...]) -> None:
        self._digests = [(t.name, _digest(t.secret)) for t in tokens]

    @property
    def enabled(self) -> bool:
        """False with no token configured: the admin API then refuses every request."""
        return bool(self._digests)

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._digests]

    def who(self, presented: str) -> str | None:
        """The name of the token whose secret is ``presented``, or None."""
        digest = _digest(presented)
        found = None
        for name, expected in self._digests:  # every one, whatever matched: no early exit
            if hmac.compare_digest(digest, expected):
                found = name
        return found
