"""Engine events -> FIX field lists: ExecutionReport (8), OrderCancelReject (9),
OrderMassCancelReport (r). Pure: no I/O; times come from the events (TransactTime = the
sequencer's ts).

ExecIDs are fixserver.pg.rows' scheme (``N`` for an order event, ``N-M``/``N-T`` for the
maker's and taker's reports of a Trade), so the ExecID a client saw is its Postgres row's key.
Reports that no engine event caused (refusals before the engine, status answers) use
``R-<ns>-<n>`` / ``S-<ns>-<n>`` ids from :class:`LocalExecIds`.

Decimals are rendered in plain notation (never exponents: FIX forbids them).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Callable, NamedTuple, Protocol

from engine.enums import CancelReason, OrdType, RejectReason, RequestKind, Side, TimeInForce
from engine.events import (
    ORDER_EVENTS,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
    OrderReplaced,
    OrderRestated,
    OrderTriggered,
    PositionTransferred,
    RequestRejected,
    Trade,
)
from engine.instruments import Instrument
from engine.risk.liquidation import LIQ_ID_BASE
from fixserver.orderentry.ownership import CANCELED, FILLED, OrderLedger, OrderView
from fixserver.orderentry.translate import (
    CXL_OTHER,
    CXL_TOO_LATE,
    CXL_UNKNOWN_ORDER,
    REJ_DUPLICATE,
    REJ_EXCEEDS_LIMIT,
    REJ_EXCHANGE_CLOSED,
    REJ_INCORRECT_QTY,
    REJ_OTHER,
    REJ_UNKNOWN_ORDER,
    REJ_UNKNOWN_SYMBOL,
    REJ_UNSUPPORTED,
)
from fixserver.pg.rows import exec_id_str, maker_exec_id, taker_exec_id
from fixserver.timeutil import format_utc_timestamp

Fields = list  # list[tuple[int, bytes | str | int]]
R = RejectReason

#: engine RejectReason -> OrdRejReason (103)
ORD_REJ_REASON: dict[RejectReason, int] = {
    R.UNKNOWN_SYMBOL: REJ_UNKNOWN_SYMBOL,
    R.INSTRUMENT_HALTED: REJ_EXCHANGE_CLOSED,
    R.INSTRUMENT_CANCEL_ONLY: REJ_EXCHANGE_CLOSED,
    R.INVALID_SIDE: REJ_UNSUPPORTED,
    R.INVALID_ORDER_TYPE: REJ_UNSUPPORTED,
    R.INVALID_TIF: REJ_UNSUPPORTED,
    R.INVALID_STP_MODE: REJ_UNSUPPORTED,
    R.INVALID_QTY: REJ_INCORRECT_QTY,
    R.QTY_BELOW_MIN: REJ_INCORRECT_QTY,
    R.QTY_ABOVE_MAX: REJ_EXCEEDS_LIMIT,
    R.QTY_NOT_ON_LOT: REJ_INCORRECT_QTY,
    R.INVALID_DISPLAY_QTY: REJ_INCORRECT_QTY,
    R.INVALID_MIN_QTY: REJ_INCORRECT_QTY,
    R.DUPLICATE_ORDER_ID: REJ_DUPLICATE,
    R.UNKNOWN_ORDER: REJ_UNKNOWN_ORDER,
    R.INSUFFICIENT_MARGIN: REJ_EXCEEDS_LIMIT,
    R.RISK_LIMIT_EXCEEDED: REJ_EXCEEDS_LIMIT,
    R.INVALID_TRIGGER: REJ_UNSUPPORTED,
}

#: Text (58) of each engine reject reason: the rule the order broke
REJECT_TEXT: dict[RejectReason, str] = {
    R.UNKNOWN_SYMBOL: "unknown symbol",
    R.INSTRUMENT_HALTED: "instrument is halted",
    R.INSTRUMENT_CANCEL_ONLY: "instrument is cancel-only",
    R.INSTRUMENT_POST_ONLY: "instrument is post-only: the order would take liquidity",
    R.INVALID_SIDE: "invalid side",
    R.INVALID_ORDER_TYPE: "invalid order type",
    R.INVALID_QTY: "quantity must be positive",
    R.QTY_BELOW_MIN: "quantity below the instrument's minimum",
    R.QTY_ABOVE_MAX: "quantity above the instrument's maximum",
    R.INVALID_PRICE: "price must be positive",
    R.PRICE_OUTSIDE_BAND: "price outside the instrument's price band",
    R.INVALID_STOP_PRICE: "stop price must be positive",
    R.INVALID_TIF: "invalid time in force",
    R.INVALID_EXPIRE_TIME: "ExpireTime is missing or already past",
    R.POST_ONLY_WOULD_TAKE: "post-only order would take liquidity",
    R.POST_ONLY_INVALID: "post-only is for resting limit orders only (not market, stop, IOC, FOK)",
    R.REDUCE_ONLY_WOULD_INCREASE: "reduce-only order would increase the position",
    R.INVALID_DISPLAY_QTY: "MaxFloor must be positive, at most OrderQty, on a resting limit order",
    R.INVALID_MIN_QTY: "MinQty must be positive and at most OrderQty",
    R.UNKNOWN_ORDER: "unknown order",
    R.NO_REFERENCE_PRICE: "no reference price for a market order",
    R.PRICE_NOT_ON_TICK: "price is not a multiple of the tick size",
    R.QTY_NOT_ON_LOT: "quantity is not a multiple of the lot size",
    R.INVALID_STP_MODE: "invalid self-trade prevention mode",
    R.DUPLICATE_ORDER_ID: "duplicate order id",
    R.INVALID_STATUS: "invalid instrument status",
    R.KILL_SWITCH_ACTIVE: "kill switch active for the account's firm",
    R.INVALID_DAY_OFFSET: "invalid trading-day boundary",
    R.INVALID_INSTRUMENT: "invalid instrument rules",
    R.INSTRUMENT_IN_USE: "the instrument has live orders or open positions",
    R.INSUFFICIENT_MARGIN: "insufficient margin",
    R.RISK_LIMIT_EXCEEDED: ("risk limit exceeded: the position could exceed the notional cap of "
                            "the leverage's risk tier (lower the leverage or the size)"),
    R.INVALID_LEVERAGE: "invalid leverage: must be 1 to the instrument's maximum leverage",
    R.MARGIN_MODE_CHANGE_UNSAFE: ("the margin mode cannot change while a position or orders are "
                                  "open in the instrument"),
    R.INVALID_AMOUNT: "the amount must be a positive number of the asset's minor units",
    R.NOT_MARGINED: "the instrument is not margined",
    R.NO_ISOLATED_POSITION: "no open isolated position in the instrument",
    R.INVALID_INDEX_PRICE: "the index price must be positive",
    R.UNKNOWN_ASSET: "unknown asset: no instrument settles in it",
    R.INVALID_MARGIN_MODE: "invalid margin mode",
    R.MARGINED_INSTRUMENT: "positions in a margined instrument come from trades",
    R.INVALID_TRIGGER: ("invalid trigger price source: the mark price needs a margined "
                        "instrument"),
}

CANCEL_TEXT: dict[CancelReason, str] = {
    CancelReason.USER: "canceled on request",
    CancelReason.IOC_REMAINDER: "unfilled remainder of an immediate order canceled",
    CancelReason.STP: "canceled by self-trade prevention",
    CancelReason.REDUCE_ONLY: "reduce-only order canceled: it would increase the position",
    CancelReason.EXPIRY: "expired",
    CancelReason.MASS_CANCEL: "canceled by mass cancel",
    CancelReason.MARKET_PROTECTION: "market order stopped at the price band",
    CancelReason.FOK_UNFILLED: "fill-or-kill order could not be filled completely",
    CancelReason.MIN_QTY_UNFILLED: "MinQty not available on entry",
    CancelReason.PRICE_BAND: "triggered stop-limit price outside the price band",
    CancelReason.POST_ONLY: "triggered order would take liquidity in a post-only instrument",
    CancelReason.KILL_SWITCH: "canceled by the firm's kill switch",
    CancelReason.CANCEL_ON_DISCONNECT: "canceled on disconnect (CancelOnDisconnect)",
    CancelReason.OPERATOR: "canceled by the exchange operator",
    CancelReason.INSUFFICIENT_MARGIN: ("triggered order canceled: insufficient margin to cover "
                                       "it"),
    CancelReason.LIQUIDATION: ("canceled: the account is being liquidated (its equity fell "
                               "below the maintenance margin)"),
    CancelReason.INSTRUMENT_HALTED: ("liquidation order canceled: the instrument is halted; "
                                     "the position went to the insurance fund or ADL"),
}

#: Text (58) of an OrderCancelReject for an engine-refused replace, where the replace's own
#: rule is clearer than the order reject's
REPLACE_REJECT_TEXT: dict[RejectReason, str] = {
    R.INVALID_TRIGGER: ("TriggerPriceSource (7943) can only be changed on a stop order that "
                        "has not triggered yet (the mark price needs a margined instrument)"),
}

#: LiquidationIndicator (7945, custom): on every ExecutionReport a liquidation caused
LIQUIDATION_INDICATOR = 7945
LIQ_ORDER, LIQ_TAKEOVER, LIQ_ADL = 1, 2, 3  # its values (spec/rules-of-engagement.md)

#: cancels no client request asked for: the report carries the order's own ClOrdID
_UNREQUESTED = (CancelReason.MASS_CANCEL, CancelReason.KILL_SWITCH,
                CancelReason.CANCEL_ON_DISCONNECT, CancelReason.OPERATOR,
                CancelReason.LIQUIDATION)

_SIDE_CODE = {Side.BUY: "1", Side.SELL: "2"}
_TYPE_CODE = {OrdType.MARKET: "1", OrdType.LIMIT: "2", OrdType.STOP: "3",
              OrdType.STOP_LIMIT: "4"}
_TIF_CODE = {TimeInForce.DAY: "0", TimeInForce.GTC: "1", TimeInForce.IOC: "3",
             TimeInForce.FOK: "4", TimeInForce.GTD: "6"}


def money(minor: int, decimals: int) -> str:
    """Minor units as asset units with exactly ``decimals`` decimals (``2024.000000``)."""
    return format(Decimal(minor).scaleb(-decimals), "f")


def shortfall_text(text: str, shortfall: int, inst: Instrument | None) -> str:
    """``text`` with the missing collateral in asset units (``: short by 2024.000000 USDT``)."""
    if not shortfall or inst is None or not inst.margined:
        return text
    return (f"{text}: short by {money(shortfall, inst.settlement_decimals)} "
            f"{inst.settlement_asset}")


def plain(d: Decimal) -> str:
    """A decimal in plain notation (FIX has no exponents); zero is ``0``."""
    return format(d, "f") if d else "0"


#: rendered prices and quantities, keyed by (tick or lot size, integer units): an order's
#: reports repeat the same few values (its price, quantity, leaves, fills), and Decimal
#: arithmetic plus formatting is the costliest part of building a report. Bounded: cleared
#: when full (the values in play are re-rendered once after that).
_UNITS_CACHE_MAX = 8192
_units_cache: dict[tuple[str, int], str] = {}


def _units_str(size: str, units: int) -> str:
    key = (size, units)
    text = _units_cache.get(key)
    if text is None:
        if len(_units_cache) >= _UNITS_CACHE_MAX:
            _units_cache.clear()
        text = _units_cache[key] = plain(Decimal(units) * Decimal(size))
    return text


def price_str(inst: Instrument, ticks: int) -> str:
    return _units_str(inst.tick_size, ticks)


def qty_str(inst: Instrument, lots: int) -> str:
    return _units_str(inst.lot_size, lots)


_avg_cache: dict[tuple[str, int, int], str] = {}
_fee_cache: dict[tuple[str, str, int], str] = {}


def avg_px(inst: Instrument, notional: int, filled: int) -> str:
    if not filled:
        return "0"
    key = (inst.tick_size, notional, filled)
    text = _avg_cache.get(key)
    if text is None:
        if len(_avg_cache) >= _UNITS_CACHE_MAX:
            _avg_cache.clear()
        text = _avg_cache[key] = plain(
            Decimal(notional) / Decimal(filled) * Decimal(inst.tick_size))
    return text


def fee_str(inst: Instrument, fee: int) -> str:
    """A fee in integer fee units as quote currency (Commission, 12)."""
    key = (inst.tick_size, inst.lot_size, fee)
    text = _fee_cache.get(key)
    if text is None:
        if len(_fee_cache) >= _UNITS_CACHE_MAX:
            _fee_cache.clear()
        text = _fee_cache[key] = plain(inst.fee_to_quote(fee).normalize())
    return text


class Report(NamedTuple):
    """One outbound message: to ``session_id`` (None: the request's session), about
    ``account`` (drop copies go to its firm's drop-copy sessions when ``copy``)."""

    session_id: str | None
    account: str
    msg_type: str
    fields: Fields
    copy: bool = True


class LocalExecIds:
    """ExecIDs for reports no engine event caused: unique (ns time + counter)."""

    def __init__(self) -> None:
        self._n = 0

    def next(self, prefix: str, now_ns: int) -> str:
        self._n += 1
        return f"{prefix}-{now_ns}-{self._n}"


def order_fields(
    view: OrderView, inst: Instrument, *, exec_id: str, exec_type: str, ord_status: str,
    ts: int, cl_ord_id: str | None = None, orig_cl_ord_id: str | None = None,
) -> Fields:
    """An ExecutionReport body for an order the ledger knows."""
    fields: Fields = [(37, str(view.order_id))]
    fields.append((11, cl_ord_id if cl_ord_id is not None else view.cl_ord_id or "NONE"))
    orig = orig_cl_ord_id if orig_cl_ord_id is not None else view.orig_cl_ord_id
    if orig:
        fields.append((41, orig))
    fields += [(17, exec_id), (150, exec_type), (39, ord_status), (1, view.account),
               (55, view.symbol), (54, _SIDE_CODE[view.side]), (38, qty_str(inst, view.qty)),
               (40, _TYPE_CODE.get(view.ord_type, "2"))]
    if view.price:
        fields.append((44, price_str(inst, view.price)))
    if view.stop_price:
        fields.append((99, price_str(inst, view.stop_price)))
    fields += [(59, _TIF_CODE.get(view.tif, "1")),
               (151, qty_str(inst, view.leaves)), (14, qty_str(inst, view.filled)),
               (6, avg_px(inst, view.notional, view.filled)), (60, format_utc_timestamp(ts))]
    if view.stp:
        fields.append((7928, view.stp))
    return fields


class EngineOrderReports(Protocol):
    """Reports of what the engine trades by itself for an account, which no session entered:
    liquidation orders (order id >= LIQ_ID_BASE) and position transfers
    (fixserver.orderentry.liquidation_reports)."""

    def order_event(self, e: Any, out: list[Report]) -> None:
        """An order event (accepted, canceled) of a liquidation order."""

    def taker_fill(self, t: Trade, out: list[Report]) -> None:
        """A Trade whose taker is a liquidation order: the taker's report."""

    def transferred(self, e: PositionTransferred, out: list[Report]) -> None:
        """A takeover by the insurance fund or an auto-deleveraging transfer."""


class ReportBuilder:
    """Builds the reports of one released command from its events and the ledger."""

    def __init__(self, instruments: dict[str, Instrument], ledger: OrderLedger) -> None:
        self.instruments = instruments
        self.ledger = ledger
        #: start-up redelivery only: ``delivered(session_id, account, exec_id)`` True skips
        #: building an order event's or fill's ExecutionReport that every recipient already
        #: stored (the ledger still follows the event); None (live): build every report
        self.delivered: Callable[[str, str, str], bool] | None = None
        #: liquidation orders and transfers (None: not reported)
        self.engine_orders: EngineOrderReports | None = None

    def reports(self, sid: str | None, o: Any, events: list) -> list[Report]:
        """Apply each event to the ledger and report it as of that event, so that CumQty,
        LeavesQty, AvgPx and OrdStatus step through the fills (a New ack of an order that
        trades at once says CumQty 0; each fill shows the quantities after that fill).
        Call after ``ledger.begin`` for the same command."""
        out: list[Report] = []
        apply_event = self.ledger.apply_event
        engine_orders = self.engine_orders
        for e in events:
            apply_event(sid, o, e)
            kind = type(e)
            if kind is Trade:
                self._trade(e, out)  # the maker's; a liquidation order is always the taker
                if e.taker_order_id >= LIQ_ID_BASE and engine_orders is not None:
                    engine_orders.taker_fill(e, out)
            elif kind is OrderRejected:
                if sid is not None:
                    out.append(self._rejected(sid, e))
            elif kind is RequestRejected:
                if sid is not None:
                    self._request_rejected(sid, o, e, out)
            elif kind in ORDER_EVENTS:
                if e.order_id < LIQ_ID_BASE:
                    self._order_event(e, out)
                elif engine_orders is not None:
                    engine_orders.order_event(e, out)
            elif kind is PositionTransferred:
                if engine_orders is not None:
                    engine_orders.transferred(e, out)
            # MassCancelDone: the application aggregates these (one report per q request)
        return out

    def _view(self, order_id: int) -> OrderView | None:
        return self.ledger.orders.get(order_id)

    def _order_event(self, e: Any, out: list[Report]) -> None:
        view = self._view(e.order_id)
        if view is None:
            return
        exec_id = exec_id_str(e.exec_id)
        if self.delivered is not None and self.delivered(view.session_id, view.account, exec_id):
            return
        inst = self.instruments[view.symbol]
        kind = type(e)
        cl = orig = None
        text = None
        if kind is OrderAccepted:
            exec_type, status = "0", "0"
        elif kind is OrderCanceled:
            exec_type, status = "4", CANCELED
            if e.request_id:  # a cancel request's answer: its ClOrdID, the order's as Orig
                cl, orig = e.request_id, e.cl_ord_id
            if e.reason is not CancelReason.USER:
                text = CANCEL_TEXT.get(e.reason, e.reason.name)
                if e.reason in _UNREQUESTED:
                    cl, orig = e.cl_ord_id, ""  # the order's own ids, whoever asked
        elif kind is OrderExpired:
            exec_type, status = "C", "C"
            text = ("expired at the end of the trading day" if view.tif is TimeInForce.DAY
                    else "expired at its ExpireTime")
        elif kind is OrderReplaced:
            exec_type, status = "5", view.status
            orig = e.orig_cl_ord_id
        elif kind is OrderTriggered:
            exec_type, status = "L", view.working_status()
            text = f"triggered at {price_str(inst, e.trigger_price)}"
        elif kind is OrderRestated:
            exec_type, status = "D", view.working_status()
            text = "quantity reduced: " + CANCEL_TEXT.get(e.reason, e.reason.name)
        else:
            return
        fields = order_fields(view, inst, exec_id=exec_id, exec_type=exec_type,
                              ord_status=status, ts=e.ts, cl_ord_id=cl, orig_cl_ord_id=orig)
        if kind is OrderRestated:
            fields.append((378, 99))
        elif kind is OrderCanceled and e.reason is CancelReason.LIQUIDATION:
            fields.append((LIQUIDATION_INDICATOR, LIQ_ORDER))
        if text:
            fields.append((58, text))
        out.append(Report(view.session_id, view.account, "8", fields))

    def _trade(self, t: Trade, out: list[Report]) -> None:
        inst = self.instruments[t.symbol]
        for order_id, exec_id, fee, liquidity in (
            (t.maker_order_id, maker_exec_id(t.exec_id), t.maker_fee, "1"),
            (t.taker_order_id, taker_exec_id(t.exec_id), t.taker_fee, "2"),
        ):
            view = self._view(order_id)
            if view is None:
                continue
            if self.delivered is not None and self.delivered(view.session_id, view.account,
                                                             exec_id):
                continue
            fields = order_fields(view, inst, exec_id=exec_id, exec_type="F",
                                  ord_status=FILLED if view.leaves == 0 else "1", ts=t.ts)
            fields += [(32, qty_str(inst, t.qty)), (31, price_str(inst, t.price)),
                       (12, fee_str(inst, fee)), (13, "3"), (851, liquidity)]
            out.append(Report(view.session_id, view.account, "8", fields))

    def _rejected(self, sid: str, e: OrderRejected) -> Report:
        inst = self.instruments.get(e.symbol)
        reason = e.reason
        fields: Fields = [(37, "NONE"), (11, e.cl_ord_id or "NONE"), (17, exec_id_str(e.exec_id)),
                          (150, "8"), (39, "8"), (103, ORD_REJ_REASON.get(reason, REJ_OTHER)),
                          (1, e.account), (55, e.symbol), (54, _SIDE_CODE.get(e.side, "1"))]
        if inst is not None:
            fields.append((38, qty_str(inst, e.qty)))
        fields.append((40, _TYPE_CODE.get(e.ord_type, "2")))
        if inst is not None and e.price:
            fields.append((44, price_str(inst, e.price)))
        fields += [(59, _TIF_CODE.get(e.tif, "1")), (151, "0"), (14, "0"), (6, "0"),
                   (60, format_utc_timestamp(e.ts)),
                   (58, shortfall_text(REJECT_TEXT.get(reason, reason.name), e.shortfall, inst))]
        return Report(sid, e.account, "8", fields)

    def _request_rejected(self, sid: str, o: Any, e: RequestRejected, out: list[Report]) -> None:
        if e.request not in (RequestKind.CANCEL, RequestKind.REPLACE):
            return  # mass cancels and margin settings: reported by the application
        view = self._view(e.order_id)
        orig = str(o[2]) if len(o) > 2 else ""
        response_to = "1" if e.request is RequestKind.CANCEL else "2"
        reason = CXL_UNKNOWN_ORDER if e.reason is R.UNKNOWN_ORDER else CXL_OTHER
        if view is not None and not view.live:
            reason = CXL_TOO_LATE
        text = REJECT_TEXT.get(e.reason, e.reason.name)
        if e.request is RequestKind.REPLACE:
            text = REPLACE_REJECT_TEXT.get(e.reason, text)
        if view is not None:  # a replace refused for margin says by how much
            text = shortfall_text(text, e.shortfall, self.instruments.get(view.symbol))
        out.append(Report(sid, e.account, "9", cancel_reject_fields(
            view, e.cl_ord_id, orig, response_to, reason, text, e.ts), copy=False))


def cancel_reject_fields(view: OrderView | None, cl_ord_id: str, orig_cl_ord_id: str,
                         response_to: str, reason: int, text: str, ts: int) -> Fields:
    """OrderCancelReject (9) body."""
    status = view.status if view is not None else "8"
    fields: Fields = [(37, str(view.order_id) if view is not None else "NONE"),
                      (11, cl_ord_id or "NONE"), (41, orig_cl_ord_id or "NONE"), (39, status)]
    if view is not None:
        fields.append((1, view.account))
    fields += [(60, format_utc_timestamp(ts)), (434, response_to), (102, reason), (58, text)]
    return fields


def refused_order_fields(msg_fields: dict[int, str], exec_id: str, reason: int, text: str,
                         now_ns: int) -> Fields:
    """ExecutionReport 150=8 for a NewOrderSingle refused before the engine (its own values
    echoed as sent)."""
    fields: Fields = [(37, "NONE"), (11, msg_fields.get(11) or "NONE"), (17, exec_id),
                      (150, "8"), (39, "8"), (103, reason)]
    for tag in (1, 55, 54, 38, 40, 44, 99, 59):
        value = msg_fields.get(tag)
        if value:
            fields.append((tag, value))
    if 55 not in msg_fields:
        fields.append((55, "[N/A]"))
    if 54 not in msg_fields:
        fields.append((54, "1"))
    fields += [(151, "0"), (14, "0"), (6, "0"), (60, format_utc_timestamp(now_ns)), (58, text)]
    return fields


def mass_cancel_report_fields(
    cl_ord_id: str, report_id: str, request_type: str, response: str, total: int, ts: int, *,
    reject_reason: int | None = None, symbol: str | None = None, side: Side | None = None,
    text: str | None = None,
) -> Fields:
    """OrderMassCancelReport (r) body."""
    fields: Fields = [(11, cl_ord_id or "NONE"), (37, report_id), (530, request_type),
                      (531, response)]
    if reject_reason is not None:
        fields.append((532, reject_reason))
    fields.append((533, total))
    if symbol:
        fields.append((55, symbol))
    if side is not None:
        fields.append((54, _SIDE_CODE[side]))
    fields.append((60, format_utc_timestamp(ts)))
    if text:
        fields.append((58, text))
    return fields
