"""MarketDataRequest (V) and SecurityListRequest (x): what a client asked for, or why not.

The session has already validated the message against its dictionary (required fields,
enumerations, group counts), so what is left here are the exchange's rules of engagement
(spec/market-data.md): the depths, entry types and update types it serves. Each parse returns
either the request as a small frozen value or a refusal carrying the reject reason.

The symbols (55) and entry types (269) are collected by tag from the whole message: in a
MarketDataRequest, 269 occurs only in the NoMDEntryTypes group and 55 only as the delimiter of
the NoRelatedSym entries (underlyings and legs use their own tags), so no group walk is needed.
"""

from __future__ import annotations

from collections.abc import Container

import attr

from fixserver.codec import FixMessage

# SubscriptionRequestType (263)
SNAPSHOT = "0"
SNAPSHOT_AND_UPDATES = "1"
UNSUBSCRIBE = "2"

# MDEntryType (269) values served
BID = "0"
OFFER = "1"
TRADE = "2"
ENTRY_TYPES = frozenset((BID, OFFER, TRADE))

FULL_DEPTH = 0
MARKET_DEPTHS = (FULL_DEPTH, 5, 20)
"""MarketDepth (264) values served: the depths the feed publishes (0 = full book)."""

INCREMENTAL = "1"  # MDUpdateType (265)

# MDReqRejReason (281)
UNKNOWN_SYMBOL = "0"
DUPLICATE_MD_REQ_ID = "1"
INSUFFICIENT_BANDWIDTH = "2"
INSUFFICIENT_PERMISSIONS = "3"
UNSUPPORTED_SUBSCRIPTION_REQUEST_TYPE = "4"
UNSUPPORTED_MARKET_DEPTH = "5"
UNSUPPORTED_MD_UPDATE_TYPE = "6"
UNSUPPORTED_AGGREGATED_BOOK = "7"
UNSUPPORTED_MD_ENTRY_TYPE = "8"

# SecurityListRequestType (559) and SecurityRequestResult (560)
LIST_SYMBOL = "0"
LIST_ALL = "4"
VALID_REQUEST = "0"
INVALID_OR_UNSUPPORTED = "1"
NO_INSTRUMENTS_FOUND = "2"


@attr.s(frozen=True, slots=True, auto_attribs=True)
class MarketDataRequest:
    """A MarketDataRequest the exchange serves (snapshot, or snapshot plus updates)."""

    md_req_id: str
    subscription_type: str  # SNAPSHOT or SNAPSHOT_AND_UPDATES
    depth: int  # 0 = full book
    entry_types: frozenset[str]  # subset of ENTRY_TYPES
    symbols: tuple[str, ...]  # distinct, in request order


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Unsubscribe:
    """SubscriptionRequestType 2: end the subscription opened with ``md_req_id``."""

    md_req_id: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Refused:
    """A MarketDataRequest answered with MarketDataRequestReject (Y)."""

    md_req_id: str
    reason: str | None  # MDReqRejReason (281); None when FIX has no fitting reason
    text: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class SecurityListQuery:
    """A SecurityListRequest: all instruments (``symbol`` None) or one."""

    security_req_id: str
    symbol: str | None
    result: str  # SecurityRequestResult (560) when it cannot be served, else VALID_REQUEST


def _text(msg: FixMessage, tag: int) -> str | None:
    value = msg.get(tag)
    return None if value is None else value.decode("latin-1")


def _all(msg: FixMessage, tag: int) -> list[str]:
    return [v.decode("latin-1") for t, v in msg.fields if t == tag]


def parse_market_data_request(
    msg: FixMessage, symbols: Container[str]
) -> MarketDataRequest | Unsubscribe | Refused:
    """The request in ``msg`` (a validated V), or why the exchange does not serve it."""
    req_id = _text(msg, 262) or ""
    kind = _text(msg, 263)
    if kind == UNSUBSCRIBE:
        return Unsubscribe(req_id)
    if kind not in (SNAPSHOT, SNAPSHOT_AND_UPDATES):
        return Refused(req_id, UNSUPPORTED_SUBSCRIPTION_REQUEST_TYPE,
                       f"SubscriptionRequestType {kind} is not supported; use 0, 1 or 2")
    depth_text = _text(msg, 264) or ""
    depth = int(depth_text) if depth_text.isdigit() else -1
    if depth not in MARKET_DEPTHS:
        return Refused(req_id, UNSUPPORTED_MARKET_DEPTH,
                       f"MarketDepth {depth_text} is not supported; use 0 (full book), 5 or 20")
    update_type = _text(msg, 265)
    if kind == SNAPSHOT_AND_UPDATES and update_type not in (None, INCREMENTAL):
        return Refused(req_id, UNSUPPORTED_MD_UPDATE_TYPE,
                       f"MDUpdateType {update_type} is not supported; use 1 (incremental)")
    if _text(msg, 266) == "N":
        return Refused(req_id, UNSUPPORTED_AGGREGATED_BOOK,
                       "only the aggregated book is published (AggregatedBook 266=Y)")
    entry_types = _all(msg, 269)
    for entry_type in entry_types:
        if entry_type not in ENTRY_TYPES:
            return Refused(req_id, UNSUPPORTED_MD_ENTRY_TYPE,
                           f"MDEntryType {entry_type} is not supported; use 0, 1 or 2")
    if not entry_types:
        return Refused(req_id, UNSUPPORTED_MD_ENTRY_TYPE, "no MDEntryType requested")
    wanted: dict[str, None] = {}
    for symbol in _all(msg, 55):
        if symbol not in symbols:
            return Refused(req_id, UNKNOWN_SYMBOL, f"unknown symbol {symbol[:40]}")
        wanted[symbol] = None
    if not wanted:
        return Refused(req_id, UNKNOWN_SYMBOL, "no Symbol requested")
    return MarketDataRequest(req_id, kind, depth, frozenset(entry_types), tuple(wanted))


def parse_security_list_request(msg: FixMessage, symbols: Container[str]) -> SecurityListQuery:
    """The list asked for in ``msg`` (a validated x); ``result`` says if it can be served."""
    req_id = _text(msg, 320) or ""
    list_type = _text(msg, 559)
    subscription = _text(msg, 263)
    if subscription not in (None, SNAPSHOT):
        return SecurityListQuery(req_id, None, INVALID_OR_UNSUPPORTED)
    if list_type == LIST_ALL:
        return SecurityListQuery(req_id, None, VALID_REQUEST)
    if list_type == LIST_SYMBOL:
        symbol = _text(msg, 55)
        if symbol is None or symbol not in symbols:
            return SecurityListQuery(req_id, symbol, NO_INSTRUMENTS_FOUND)
        return SecurityListQuery(req_id, symbol, VALID_REQUEST)
    return SecurityListQuery(req_id, None, INVALID_OR_UNSUPPORTED)
