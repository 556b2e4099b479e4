"""FIX order messages -> engine requests, or the reason they are refused (pure, no I/O).

Each ``translate_*`` returns an engine request (seq 0, ts 0: the sequencer stamps it) or a
refusal saying how the exchange answers:

- :class:`OrderRefused` (NewOrderSingle): an ExecutionReport with ExecType 8, OrdRejReason and
  a Text naming the rule;
- :class:`CancelRefused` (cancel/replace): an OrderCancelReject with CxlRejReason;
- :class:`BusinessRefused`: a BusinessMessageReject (380=3 unsupported, 380=5 conditionally
  required field missing) for anything that is neither.

Encodings (spec/rules-of-engagement.md is the reference): OrdType 1 market, 2 limit, 3 stop,
4 stop-limit (StopPx 99); TimeInForce 0 Day (the default), 1 GTC, 3 IOC, 4 FOK, 6 GTD with
ExpireTime 126; ExecInst 18: ``6`` post-only, ``E`` reduce-only; iceberg: MaxFloor 111 (the FIX
4.4 field; DisplayQty 1138 is FIX 5.0 and not in the dictionary); MinQty 110;
SelfTradePreventionMode 7928 ``T``/``M``/``B``/``D`` (default: the session's DefaultSTP);
TriggerPriceSource 7943 ``1`` last / ``2`` mark on stop orders (absent: last); on a replace
of a stop that has not triggered it changes the source (absent: kept).
"""

from __future__ import annotations

import sys
from decimal import InvalidOperation
from typing import Any, Union

import attr

from engine.commands import CancelOrder, MassCancel, NewOrder, ReplaceOrder
from engine.enums import OrdType, Side, StpMode, TimeInForce, TriggerBy
from engine.instruments import Instrument, OffGridError
from fixserver.codec import FixMessage
from fixserver.orderentry.ownership import OrderView
from fixserver.timeutil import parse_utc_timestamp

# OrdRejReason (103)
REJ_UNKNOWN_SYMBOL = 1
REJ_EXCHANGE_CLOSED = 2
REJ_EXCEEDS_LIMIT = 3
REJ_UNKNOWN_ORDER = 5
REJ_DUPLICATE = 6
REJ_UNSUPPORTED = 11
REJ_INCORRECT_QTY = 13
REJ_UNKNOWN_ACCOUNT = 15
REJ_OTHER = 99
# CxlRejReason (102)
CXL_TOO_LATE = 0
CXL_UNKNOWN_ORDER = 1
CXL_DUPLICATE_CLORDID = 6
CXL_OTHER = 99
# BusinessRejectReason (380)
BIZ_UNSUPPORTED = 3
BIZ_CONDITIONAL_MISSING = 5
BIZ_THROTTLED = 8

STP_CODES = {
    "T": StpMode.CANCEL_NEWEST,
    "M": StpMode.CANCEL_OLDEST,
    "B": StpMode.CANCEL_BOTH,
    "D": StpMode.DECREMENT_AND_CANCEL,
}
_ORD_TYPES = {b"1": OrdType.MARKET, b"2": OrdType.LIMIT, b"3": OrdType.STOP,
              b"4": OrdType.STOP_LIMIT}
_TIFS = {b"0": TimeInForce.DAY, b"1": TimeInForce.GTC, b"3": TimeInForce.IOC,
         b"4": TimeInForce.FOK, b"6": TimeInForce.GTD}
_SIDES = {b"1": Side.BUY, b"2": Side.SELL}
_TRIGGER_SOURCES = {b"1": TriggerBy.LAST, b"2": TriggerBy.MARK}
_TRIGGER_TEXT = "TriggerPriceSource (7943) must be 1 (last price) or 2 (mark price)"
_LIMIT_TYPES = (OrdType.LIMIT, OrdType.STOP_LIMIT)
_STOP_TYPES = (OrdType.STOP, OrdType.STOP_LIMIT)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class OrderRefused:
    """A NewOrderSingle refused before the engine: ExecutionReport 150=8."""

    reason: int  # OrdRejReason
    text: str


@attr.s(frozen=True, slots=True, auto_attribs=True)
class CancelRefused:
    """A cancel or replace refused before the engine: OrderCancelReject."""

    reason: int  # CxlRejReason
    text: str
    order: OrderView | None = None


@attr.s(frozen=True, slots=True, auto_attribs=True)
class BusinessRefused:
    """BusinessMessageReject (35=j)."""

    reason: int  # BusinessRejectReason
    text: str
    ref_tag: int | None = None


class _Refuse(Exception):
    def __init__(self, refusal: Any) -> None:
        super().__init__(refusal)
        self.refusal = refusal


@attr.s(frozen=True, slots=True, auto_attribs=True)
class SessionContext:
    """What translation needs to know about the sending session."""

    session_id: str
    firm: str | None
    accounts: tuple[str, ...]  # the firm's accounts
    default_stp: str | None = None  # a 7928 code


def _text(msg: FixMessage, tag: int) -> str | None:
    value = msg.get(tag)
    return value.decode("latin-1") if value else None


def resolve_account(msg: FixMessage, ctx: SessionContext) -> str:
    """Account (1), checked against the session's firm; defaulted when the firm has one."""
    account = _text(msg, 1)
    if account is None:
        if len(ctx.accounts) == 1:
            return ctx.accounts[0]
        raise _Refuse(OrderRefused(REJ_UNKNOWN_ACCOUNT, "Account (1) is required"))
    if account not in ctx.accounts:
        raise _Refuse(OrderRefused(
            REJ_UNKNOWN_ACCOUNT, f"account {account} is not an account of firm {ctx.firm}"))
    # one string object per account, not one per order: every live and ended order keeps it
    return sys.intern(account)


#: (lot or tick size, wire value) -> integer units, for values that converted: clients send
#: the same few prices and quantities over and over, and Decimal parsing is a good part of
#: translating an order. Bounded: cleared when full. Failures are not cached (they raise).
_UNITS_CACHE_MAX = 8192
_lots_cache: dict[tuple[str, bytes], int] = {}
_ticks_cache: dict[tuple[str, bytes], int] = {}


def _lots(inst: Instrument, value: bytes, name: str, refuse: Any) -> int:
    key = (inst.lot_size, value)
    lots = _lots_cache.get(key)
    if lots is not None:
        return lots
    try:
        lots = inst.qty_to_lots(value.decode("latin-1"))
    except OffGridError:
        text = f"{name} {value.decode('latin-1')} is not a multiple of the lot size {inst.lot_size}"
        raise _Refuse(refuse(REJ_INCORRECT_QTY, text)) from None
    except (InvalidOperation, ValueError):
        raise _Refuse(refuse(REJ_INCORRECT_QTY, f"{name} is not a number")) from None
    if len(_lots_cache) >= _UNITS_CACHE_MAX:
        _lots_cache.clear()
    _lots_cache[key] = lots
    return lots


def _ticks(inst: Instrument, value: bytes, name: str, refuse: Any) -> int:
    key = (inst.tick_size, value)
    ticks = _ticks_cache.get(key)
    if ticks is not None:
        return ticks
    try:
        ticks = inst.price_to_ticks(value.decode("latin-1"))
    except OffGridError:
        raise _Refuse(refuse(REJ_OTHER, f"{name} {value.decode('latin-1')} is not a multiple "
                                        f"of the tick size {inst.tick_size}")) from None
    except (InvalidOperation, ValueError):
        raise _Refuse(refuse(REJ_OTHER, f"{name} is not a number")) from None
    if ticks <= 0:
        raise _Refuse(refuse(REJ_OTHER, f"{name} must be positive"))
    if len(_ticks_cache) >= _UNITS_CACHE_MAX:
        _ticks_cache.clear()
    _ticks_cache[key] = ticks
    return ticks


def stp_mode(code: str | None) -> StpMode | None:
    """A 7928 code as a StpMode (None for None); ValueError for an unknown code."""
    if code is None:
        return None
    if code not in STP_CODES:
        raise ValueError(f"unknown self-trade prevention mode {code!r}; expected T, M, B or D")
    return STP_CODES[code]


def translate_new(msg: FixMessage, ctx: SessionContext,
                  instruments: dict[str, Instrument]) -> Union[NewOrder, OrderRefused]:
    """NewOrderSingle (D) -> NewOrder, or why it is refused."""
    try:
        return _new(msg, ctx, instruments)
    except _Refuse as refused:
        return refused.refusal


def _new(msg: FixMessage, ctx: SessionContext, instruments: dict[str, Instrument]) -> NewOrder:
    refuse = OrderRefused
    account = resolve_account(msg, ctx)
    symbol = _text(msg, 55) or ""
    inst = instruments.get(symbol)
    if inst is None:
        raise _Refuse(refuse(REJ_UNKNOWN_SYMBOL, f"unknown symbol {symbol}"))
    symbol = inst.symbol  # the instrument's own string, not a copy per order
    side = _SIDES.get(msg.get(54) or b"")
    if side is None:
        raise _Refuse(refuse(REJ_UNSUPPORTED, "Side (54) must be 1 (buy) or 2 (sell)"))
    ord_type = _ORD_TYPES.get(msg.get(40) or b"")
    if ord_type is None:
        raise _Refuse(refuse(REJ_UNSUPPORTED, "OrdType (40) must be 1, 2, 3 or 4"))
    tif = _TIFS.get(msg.get(59) or b"0")
    if tif is None:
        raise _Refuse(refuse(REJ_UNSUPPORTED, "TimeInForce (59) must be 0, 1, 3, 4 or 6"))
    raw_qty = msg.get(38)
    if not raw_qty:
        raise _Refuse(refuse(REJ_INCORRECT_QTY, "OrderQty (38) is required"))
    qty = _lots(inst, raw_qty, "OrderQty (38)", refuse)
    if qty <= 0:
        raise _Refuse(refuse(REJ_INCORRECT_QTY, "OrderQty (38) must be positive"))
    price = 0
    if ord_type in _LIMIT_TYPES:
        raw = msg.get(44)
        if not raw:
            raise _Refuse(refuse(REJ_OTHER, f"Price (44) is required for OrdType {ord_type:d}"))
        price = _ticks(inst, raw, "Price (44)", refuse)
    stop_price = 0
    if ord_type in _STOP_TYPES:
        raw = msg.get(99)
        if not raw:
            raise _Refuse(refuse(REJ_OTHER, f"StopPx (99) is required for OrdType {ord_type:d}"))
        stop_price = _ticks(inst, raw, "StopPx (99)", refuse)
    expire_ts = 0
    if tif is TimeInForce.GTD:
        raw = msg.get(126)
        if not raw:
            raise _Refuse(refuse(REJ_OTHER, "ExpireTime (126) is required for TimeInForce 6"))
        try:
            expire_ts = parse_utc_timestamp(raw)
        except ValueError:
            raise _Refuse(refuse(REJ_OTHER, "ExpireTime (126) is not a UTC timestamp")) from None
    post_only = reduce_only = False
    for inst_code in (_text(msg, 18) or "").split():
        if inst_code == "6":
            post_only = True
        elif inst_code == "E":
            reduce_only = True
        else:
            raise _Refuse(refuse(REJ_UNSUPPORTED, f"ExecInst (18) {inst_code} is not supported;"
                                                  " use 6 (post-only) or E (reduce-only)"))
    display = 0
    if msg.get(111):
        display = _lots(inst, msg.get(111) or b"", "MaxFloor (111)", refuse)
        if display <= 0:
            raise _Refuse(refuse(REJ_INCORRECT_QTY, "MaxFloor (111) must be positive"))
    min_qty = 0
    if msg.get(110):
        min_qty = _lots(inst, msg.get(110) or b"", "MinQty (110)", refuse)
    try:
        stp = stp_mode(_text(msg, 7928) or ctx.default_stp)
    except ValueError:
        raise _Refuse(refuse(REJ_UNSUPPORTED,
                             "SelfTradePreventionMode (7928) must be T, M, B or D")) from None
    trigger_by = None
    raw_trigger = msg.get(7943)
    if raw_trigger:
        trigger_by = _TRIGGER_SOURCES.get(raw_trigger)
        if trigger_by is None:
            raise _Refuse(refuse(REJ_UNSUPPORTED, _TRIGGER_TEXT))
        if ord_type not in _STOP_TYPES:
            raise _Refuse(refuse(REJ_UNSUPPORTED, "TriggerPriceSource (7943) is for stop "
                                                  "orders (OrdType 3 or 4) only"))
    cl_ord_id = _text(msg, 11) or ""
    return NewOrder(0, 0, account, symbol, side, qty, price, ord_type, tif, cl_ord_id,
                    stop_price, expire_ts, post_only, reduce_only, display, min_qty, stp,
                    trigger_by)


def translate_cancel(msg: FixMessage, order: OrderView) -> CancelOrder:
    """OrderCancelRequest (F) for a known order -> CancelOrder."""
    return CancelOrder(0, 0, order.account, order.order_id, _text(msg, 11) or "")


def translate_replace(msg: FixMessage, order: OrderView,
                      instruments: dict[str, Instrument]) -> Union[ReplaceOrder, CancelRefused,
                                                                   BusinessRefused]:
    """OrderCancelReplaceRequest (G) for a known order -> ReplaceOrder, or why not."""
    inst = instruments[order.symbol]

    def refuse(reason: int, text: str) -> CancelRefused:
        return CancelRefused(CXL_OTHER, text, order)

    try:
        if (_text(msg, 55) or "") != order.symbol:
            raise _Refuse(refuse(CXL_OTHER, "Symbol (55) must be the order's"))
        if _SIDES.get(msg.get(54) or b"") is not order.side:
            raise _Refuse(refuse(CXL_OTHER, "Side (54) cannot be changed"))
        if _ORD_TYPES.get(msg.get(40) or b"") is not order.ord_type:
            raise _Refuse(refuse(CXL_OTHER, "OrdType (40) cannot be changed"))
        account = _text(msg, 1)
        if account is not None and account != order.account:
            raise _Refuse(refuse(CXL_OTHER, "Account (1) cannot be changed"))
        trigger_by = None
        raw_trigger = msg.get(7943)
        if raw_trigger:
            # A stop's trigger source may change while it waits; whether it still waits
            # (not triggered) is the engine's to say (RequestRejected INVALID_TRIGGER).
            trigger_by = _TRIGGER_SOURCES.get(raw_trigger)
            if trigger_by is None:
                raise _Refuse(refuse(CXL_OTHER, _TRIGGER_TEXT))
            if order.ord_type in (OrdType.MARKET, OrdType.LIMIT):
                raise _Refuse(refuse(CXL_OTHER, "TriggerPriceSource (7943) is for stop orders "
                                                "(OrdType 3 or 4) only"))
        raw_qty = msg.get(38)
        if not raw_qty:
            raise _Refuse(BusinessRefused(BIZ_CONDITIONAL_MISSING, "OrderQty (38) is required",
                                          38))
        qty = _lots(inst, raw_qty, "OrderQty (38)", refuse)
        if qty <= 0:
            raise _Refuse(refuse(CXL_OTHER, "OrderQty (38) must be positive"))
        price = 0
        if order.ord_type in _LIMIT_TYPES:
            raw = msg.get(44)
            if not raw:
                raise _Refuse(BusinessRefused(
                    BIZ_CONDITIONAL_MISSING, f"Price (44) is required for OrdType "
                                             f"{order.ord_type:d}", 44))
            price = _ticks(inst, raw, "Price (44)", refuse)
        stop_price = 0
        if order.ord_type in _STOP_TYPES and msg.get(99):
            stop_price = _ticks(inst, msg.get(99) or b"", "StopPx (99)", refuse)
    except _Refuse as refused:
        return refused.refusal
    return ReplaceOrder(0, 0, order.account, order.order_id, qty, price, _text(msg, 11) or "",
                        stop_price, trigger_by)


def mass_cancel_requests(msg: FixMessage, ctx: SessionContext,
                         instruments: dict[str, Instrument]) -> Union[list[MassCancel], int,
                                                                      BusinessRefused]:
    """OrderMassCancelRequest (q) -> one MassCancel per account of the firm; or the
    MassCancelRejectReason (532) as an int; or a BusinessRefused."""
    request_type = msg.get(530) or b""
    symbol = _text(msg, 55)
    if request_type == b"1":
        if symbol is None:
            return BusinessRefused(BIZ_CONDITIONAL_MISSING,
                                   "Symbol (55) is required for MassCancelRequestType 1", 55)
        if symbol not in instruments:
            return 1  # invalid or unknown security
    elif request_type == b"7":
        symbol = None
    else:
        return 0  # mass cancel (of this kind) not supported
    side = _SIDES.get(msg.get(54) or b"") if msg.get(54) else None
    cl_ord_id = _text(msg, 11) or ""
    return [MassCancel(0, 0, account, symbol, side, cl_ord_id) for account in ctx.accounts]


