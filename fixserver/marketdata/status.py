"""Instrument trading status over FIX: SecurityStatusRequest (e) in, SecurityStatus (f) out.

Theory of operation
-------------------
The status a client is told is the *released* one: the application keeps each instrument's
status from the pipeline's released ticks (``MarketDataApplication.on_released``, only ticks
whose journal write is durable), the same state the SecurityList (y) reports. A request for a
snapshot (263=0) is answered with one f at once; a subscription (263=1) is answered the same
way and registered, and every released tick that changes the symbol's status pushes an f to
each subscriber then, one per change (a command that sets the status it already has changes
nothing and pushes nothing). So the f that answered the request and the ones after it are
exactly the changes after it, in engine order.

SecurityTradingStatus (326) values, one table for f and the SecurityList (y):
:data:`fixserver.marketdata.messages.TRADING_STATUS`. The answer to the request carries
UnsolicitedIndicator (325) ``N``; a pushed change carries ``Y`` and TransactTime (60), the
engine time of the command that changed the status.

FIX 4.4 has no reject message of its own for a SecurityStatusRequest, so a refused one is
answered with a BusinessMessageReject (j) naming it: RefMsgType ``e``, BusinessRejectRefID
(379) the SecurityStatusReqID, a BusinessRejectReason (380) and a Text saying what to change,
the counterpart of the MarketDataRequestReject (Y) a refused MarketDataRequest gets.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any, Union

import attr

from engine.enums import InstrumentStatus
from fixserver.codec import FixMessage
from fixserver.marketdata.messages import TRADING_STATUS, Fields
from fixserver.marketdata.requests import SNAPSHOT, SNAPSHOT_AND_UPDATES, UNSUBSCRIBE
from fixserver.timeutil import format_utc_timestamp

# BusinessRejectReason (380) values a SecurityStatusRequest may get
OTHER = 0
UNKNOWN_ID = 1
UNKNOWN_SECURITY = 2
CONDITIONALLY_REQUIRED_FIELD_MISSING = 5
NOT_AUTHORIZED = 6


@attr.s(frozen=True, slots=True, auto_attribs=True)
class StatusRequest:
    """A SecurityStatusRequest the exchange serves: the status now, and maybe every change."""

    req_id: str
    symbol: str
    subscribe: bool  # 263=1: snapshot plus updates; 263=0: snapshot only


@attr.s(frozen=True, slots=True, auto_attribs=True)
class StatusUnsubscribe:
    """263=2: end the subscription opened with ``req_id``."""

    req_id: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class StatusRefused:
    """A SecurityStatusRequest answered with a BusinessMessageReject (j)."""

    req_id: str
    reason: int  # BusinessRejectReason (380)
    text: str


ParsedStatusRequest = Union[StatusRequest, StatusUnsubscribe, StatusRefused]


def parse_security_status_request(msg: FixMessage, symbols: Container[str]
                                  ) -> ParsedStatusRequest:
    """The request in ``msg`` (a validated e), or why the exchange does not serve it."""
    req_id = msg.get_str(324) or ""
    kind = msg.get_str(263)
    if kind == UNSUBSCRIBE:
        return StatusUnsubscribe(req_id)
    if kind not in (SNAPSHOT, SNAPSHOT_AND_UPDATES):
        return StatusRefused(req_id, OTHER, f"SubscriptionRequestType {kind} is not "
                             "supported; use 0, 1 or 2")
    symbol = msg.get_str(55)
    if symbol is None:
        return StatusRefused(req_id, CONDITIONALLY_REQUIRED_FIELD_MISSING,
                             "Symbol (55) is required")
    if symbol not in symbols:
        return StatusRefused(req_id, UNKNOWN_SECURITY, f"unknown symbol {symbol[:40]}")
    return StatusRequest(req_id, symbol, kind == SNAPSHOT_AND_UPDATES)


def security_status_fields(req_id: bytes, symbol: bytes, status: InstrumentStatus,
                           changed_at: int | None = None) -> Fields:
    """SecurityStatus (f): the answer to a request, or (``changed_at``, the change's engine
    time in ns) a change pushed to a subscriber (UnsolicitedIndicator Y, TransactTime)."""
    code, text = TRADING_STATUS[status]
    fields: Fields = [(324, req_id), (55, symbol), (325, b"N" if changed_at is None else b"Y"),
                      (326, code)]
    if changed_at is not None:
        fields.append((60, format_utc_timestamp(changed_at)))
    fields.append((58, text))
    return fields


def status_reject_fields(msg: FixMessage, refused: StatusRefused) -> Fields:
    """BusinessMessageReject (j) answering the SecurityStatusRequest ``msg``."""
    fields: Fields = []
    seq = msg.get(34)
    if seq:
        fields.append((45, seq))
    fields += [(372, b"e"), (379, refused.req_id.encode("latin-1")), (380, b"%d" % refused.reason),
               (58, refused.text.encode("latin-1"))]
    return fields


class StatusSubscriptions:
    """Who is told of a symbol's status changes: (session, SecurityStatusReqID) per symbol."""

    def __init__(self) -> None:
        #: symbol -> (session, req_id as bytes) -> None (a dict as an insertion-ordered set)
        self._by_symbol: dict[str, dict[tuple[Any, bytes], None]] = {}
        #: session -> req_id -> symbol
        self._by_session: dict[Any, dict[str, str]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_symbol)

    def holds(self, session: Any, req_id: str) -> bool:
        """True if ``session`` has an active subscription ``req_id``."""
        return req_id in self._by_session.get(session, ())

    def add(self, session: Any, req_id: str, symbol: str) -> None:
        """Subscribe ``session`` to ``symbol``'s changes under ``req_id`` (not held yet)."""
        self._by_session.setdefault(session, {})[req_id] = symbol
        key = (session, req_id.encode("latin-1"))
        self._by_symbol.setdefault(symbol, {})[key] = None

    def remove(self, session: Any, req_id: str) -> bool:
        """End one subscription; False if the session holds none under ``req_id``."""
        held = self._by_session.get(session)
        if held is None or req_id not in held:
            return False
        symbol = held.pop(req_id)
        if not held:
            del self._by_session[session]
        subscribers = self._by_symbol[symbol]
        del subscribers[(session, req_id.encode("latin-1"))]
        if not subscribers:
            del self._by_symbol[symbol]
        return True

    def remove_session(self, session: Any) -> None:
        """End every subscription of ``session``."""
        for req_id in list(self._by_session.get(session, ())):
            self.remove(session, req_id)

    def subscribers(self, symbol: str) -> list[tuple[Any, bytes]]:
        """(session, req_id) of every subscription to ``symbol``, oldest first."""
        return list(self._by_symbol.get(symbol, ()))

    def count(self, session: Any | None = None) -> int:
        """Active subscriptions (of one session, or of all)."""
        if session is not None:
            return len(self._by_session.get(session, ()))
        return sum(len(s) for s in self._by_symbol.values())
