"""Events the session core hands to its glue, and the connection state machine as data."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Union

import attr

from fixserver.codec import FixMessage

if TYPE_CHECKING:
    from fixserver.session import Session


class SessionStateError(Exception):
    """The caller asked for something the connection's state does not allow."""


class ConnectionState(enum.Enum):
    AWAITING_LOGON = "awaiting-logon"
    ACTIVE = "active"
    LOGOUT_SENT = "logout-sent"
    CLOSED = "closed"


#: allowed state changes; anything else is a bug in the session core and raises.
TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    ConnectionState.AWAITING_LOGON: frozenset({ConnectionState.ACTIVE, ConnectionState.CLOSED}),
    ConnectionState.ACTIVE: frozenset({ConnectionState.LOGOUT_SENT, ConnectionState.CLOSED}),
    ConnectionState.LOGOUT_SENT: frozenset({ConnectionState.CLOSED}),
    ConnectionState.CLOSED: frozenset(),
}


def check_transition(current: ConnectionState, new: ConnectionState) -> None:
    if new not in TRANSITIONS[current]:
        raise SessionStateError(f"illegal connection state change {current.name} -> {new.name}")


@attr.s(frozen=True, slots=True, auto_attribs=True)
class LoggedOn:
    """The peer's Logon was accepted and answered; the session is bound to this connection."""

    session: Session


@attr.s(frozen=True, slots=True, auto_attribs=True)
class ApplicationMessageReceived:
    """An application message, validated and in sequence order."""

    session: Session
    message: FixMessage


@attr.s(frozen=True, slots=True, auto_attribs=True)
class LoggedOut:
    """The session is no longer logged on over this connection."""

    session: Session
    reason: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class ConnectionClosed:
    """The connection is finished: the glue flushes ``data_to_send()`` and closes it."""

    reason: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class GarbledMessageIgnored:
    """A frame that failed framing or structure checks was dropped (no sequence number used)."""

    reason: str
    raw: bytes


@attr.s(frozen=True, slots=True, auto_attribs=True)
class GarbledLimitExceeded:
    """A logged-on session sent more than MaxGarbledMessages garbled frames within
    GarbledMessageWindow seconds: it is logged out (Text ``reason``) and the connection closed
    (LoggedOut and ConnectionClosed follow)."""

    session: Session
    count: int
    window_s: int
    reason: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class LogonFailed:
    """A Logon failed authentication (``session`` is the one it named) or named no configured
    session (``session`` is None). The connection closes without an answer (ConnectionClosed
    follows); ``reason`` is for the server's log only."""

    session: Session | None
    reason: str


SessionEvent = Union[
    LoggedOn,
    ApplicationMessageReceived,
    LoggedOut,
    ConnectionClosed,
    GarbledMessageIgnored,
    GarbledLimitExceeded,
    LogonFailed,
]
