"""Engine events -> Postgres row tuples (pure: no I/O, no clock).

ExecID scheme (the FIX order-entry layer MUST use the same strings, so the ExecID a client
saw is the key of its row in ``executions``):

- every ExecutionReport-worthy event except a Trade: ``str(event.exec_id)``, e.g. ``"42"``;
- a Trade (one engine exec id, two ExecutionReports): the maker's is ``f"{exec_id}-M"`` and
  the taker's ``f"{exec_id}-T"``, e.g. ``"43-M"`` and ``"43-T"``.

Engine exec ids are journaled and strictly increasing, so these strings are unique forever and
the same after a restart (replayed events produce the same ids: idempotent writes).
:func:`exec_id_str`, :func:`maker_exec_id` and :func:`taker_exec_id` spell it out.

What is written: ``OrderAccepted/Replaced/Canceled/Expired/Triggered/Restated`` and both sides
of a ``Trade`` upsert ``orders`` and add an ``executions`` row; ``OrderRejected`` adds only an
execution (ExecType REJECTED; no order ever lived, and its would-be id may even be a live
order's, see RejectReason.DUPLICATE_ORDER_ID). A Trade also updates both accounts' positions
from the :class:`~engine.positions.PositionBook`. Request rejects (OrderCancelReject), mass
cancel reports and market data are not ExecutionReports and produce no rows. An order's
``OrderAccepted`` row also carries the FIX session that entered it
(:meth:`RowBuilder.processed_rows`), so a status request can find it by the session's ClOrdID.

Rows from a Trade know only the fill state of the maker's order (the event does not carry its
type or time in force): they carry ``None`` there and the writer's upsert keeps the stored
values (COALESCE). Integers become NUMERIC decimals here, at the edge, with the instrument's
tick and lot size; ns timestamps become UTC datetimes (Postgres keeps microseconds).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Callable, NamedTuple, Union

from engine.enums import Side
from engine.events import (
    InstrumentConfigured,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
    OrderReplaced,
    OrderRestated,
    OrderTriggered,
    Trade,
)
from engine.instruments import PPM, Instrument
from engine.positions import Position, PositionBook

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
_US = datetime.timedelta(microseconds=1)


def exec_id_str(exec_id: int) -> str:
    """ExecID of a non-trade ExecutionReport."""
    return str(exec_id)


def maker_exec_id(exec_id: int) -> str:
    """ExecID of the maker's ExecutionReport of a Trade."""
    return f"{exec_id}-M"


def taker_exec_id(exec_id: int) -> str:
    """ExecID of the taker's ExecutionReport of a Trade."""
    return f"{exec_id}-T"


def ns_to_datetime(ts: int) -> datetime.datetime:
    """Integer ns since the epoch -> aware UTC datetime (floored to the microsecond)."""
    return _EPOCH + (ts // 1000) * _US


class OrderRow(NamedTuple):
    """One ``orders`` upsert; ``None`` means "keep the stored value"."""

    order_id: int
    cl_ord_id: str | None
    orig_cl_ord_id: str | None
    account: str
    symbol: str
    side: str | None
    ord_type: str | None
    time_in_force: str | None
    price: Decimal | None
    stop_price: Decimal | None
    quantity: Decimal | None
    filled_qty: Decimal
    leaves_qty: Decimal
    avg_price: Decimal | None
    status: str
    reason: str | None
    created_at: datetime.datetime
    updated_at: datetime.datetime
    last_exec_id: int
    #: the FIX session that entered the order (its NewOrder's row only; migration 007)
    session_id: str | None = None


class ExecutionRow(NamedTuple):
    """One ``executions`` insert (ON CONFLICT (exec_id) DO NOTHING)."""

    exec_id: str
    engine_exec_id: int
    seq: int
    order_id: int
    cl_ord_id: str | None
    orig_cl_ord_id: str | None
    account: str
    symbol: str
    side: str | None
    exec_type: str
    ord_status: str
    ord_type: str | None
    price: Decimal | None
    quantity: Decimal | None
    last_px: Decimal | None
    last_qty: Decimal | None
    cum_qty: Decimal
    leaves_qty: Decimal
    avg_price: Decimal | None
    fee: Decimal | None
    liquidity: str | None
    reason: str | None
    exec_time: datetime.datetime


class PositionRow(NamedTuple):
    """One ``positions`` upsert (applied only if ``last_exec_id`` is newer)."""

    account: str
    symbol: str
    side: str
    size: Decimal
    entry_price: Decimal
    size_lots: int
    entry_notional: Decimal
    realised_pnl: Decimal
    fees: Decimal
    last_exec_id: int
    updated_at: datetime.datetime


class SessionRow(NamedTuple):
    """One ``fix_sessions`` upsert (applied only if ``updated_at`` is not older; a ``None``
    last logon or logout keeps the stored time)."""

    session_id: str
    begin_string: str
    sender_comp_id: str
    target_comp_id: str
    role: str
    firm_id: str | None
    next_sender_seq: int
    next_target_seq: int
    creation_time: datetime.datetime
    state: str
    last_logon: datetime.datetime | None
    last_logout: datetime.datetime | None
    updated_at: datetime.datetime


Row = Union[OrderRow, ExecutionRow, PositionRow, SessionRow]


class Scale:
    """Integer ticks/lots/fee units of one instrument -> exact Decimals."""

    __slots__ = ("fee_unit", "lot", "quote_unit", "tick")

    def __init__(self, instrument: Instrument) -> None:
        self.tick = Decimal(instrument.tick_size)
        self.lot = Decimal(instrument.lot_size)
        self.quote_unit = self.tick * self.lot  # one tick*lot, in quote currency
        self.fee_unit = self.quote_unit / PPM

    def price(self, ticks: int) -> Decimal | None:
        """A price; 0 ticks (market orders, no stop) is None."""
        return Decimal(ticks) * self.tick if ticks else None

    def qty(self, lots: int) -> Decimal:
        return Decimal(lots) * self.lot

    def avg(self, notional: int, filled: int) -> Decimal | None:
        """Average price from ticks*lots and lots (the engine's AvgPx formula); None if unfilled."""
        if not filled:
            return None
        return Decimal(notional) / Decimal(filled) * self.tick


def _name(value: Any) -> str | None:
    """An enum member's name; None for a raw value outside the enum."""
    return getattr(value, "name", None)


def _status(filled: int, leaves: int, qty: int) -> str:
    if leaves > 0:
        return "PARTIALLY_FILLED" if filled else "NEW"
    return "FILLED" if filled and filled >= qty else "CANCELED"


# Order events that upsert the order: class -> (ExecType, fixed OrdStatus or None to derive).
_ORDER_EVENTS: dict[type, tuple[str, str | None]] = {
    OrderAccepted: ("NEW", None),
    OrderReplaced: ("REPLACED", None),
    OrderCanceled: ("CANCELED", "CANCELED"),
    OrderExpired: ("EXPIRED", "EXPIRED"),
    OrderTriggered: ("TRIGGERED", None),
    OrderRestated: ("RESTATED", None),
}


class RowBuilder:
    """Turns engine events, in order, into rows; owns or shares the PositionBook."""

    __slots__ = ("_scales", "positions")

    def __init__(self, instruments: Iterable[Instrument],
                 positions: PositionBook | None = None) -> None:
        instruments = list(instruments)
        self._scales = {i.symbol: Scale(i) for i in instruments}
        self.positions = positions if positions is not None else PositionBook.for_instruments(
            instruments)

    def rows(self, events: Iterable[Any], session_id: str | None = None) -> list[Row]:
        """Rows for a run of events (other event kinds are skipped); ``session_id``: the FIX
        session that entered the NewOrder these events came from, written with the order's
        accepted row."""
        out: list[Row] = []
        for event in events:
            kind = type(event)
            if kind is Trade:
                self._trade(event, out)
            elif kind in _ORDER_EVENTS:
                self._order_event(event, out, session_id if kind is OrderAccepted else None)
            elif kind is OrderRejected:
                self._rejected(event, out)
            elif kind is InstrumentConfigured:  # listed (or changed) while running
                self._scales[event.symbol] = Scale(event.instrument)
                self.positions.list_instrument(event.symbol, event.instrument.multiplier)
        return out

    def processed_rows(self, processed: Iterable[Any],
                       session_of: Callable[[Any], str | None]) -> list[Row]:
        """Rows for released (or replayed) commands, each ``(origin, command, events)``:
        ``session_of(origin)`` names the session that entered a NewOrder."""
        out: list[Row] = []
        for p in processed:
            out += self.rows(p.events, session_of(p.origin))
        return out

    def _order_event(self, e: Any, out: list[Row], session_id: str | None = None) -> None:
        exec_type, fixed_status = _ORDER_EVENTS[type(e)]
        sc = self._scales[e.symbol]
        status = fixed_status or _status(e.filled, e.leaves, e.qty)
        orig = getattr(e, "orig_cl_ord_id", None) or None
        reason = e.reason.name if hasattr(e, "reason") else None
        side = Side(e.side).name
        ord_type = e.ord_type.name
        price = sc.price(e.price)
        stop = sc.price(e.stop_price)
        qty = sc.qty(e.qty)
        filled = sc.qty(e.filled)
        leaves = sc.qty(e.leaves)
        avg = sc.avg(e.notional, e.filled)
        at = ns_to_datetime(e.ts)
        out.append(OrderRow(
            e.order_id, e.cl_ord_id, orig, e.account, e.symbol, side, ord_type, e.tif.name,
            price, stop, qty, filled, leaves, avg, status, reason, at, at, e.exec_id,
            session_id,
        ))
        # A canceled order's ExecutionReport answers the cancel request: its ClOrdID is the
        # request's and OrigClOrdID the order's (FIX); the order row keeps the order's own.
        request_id = getattr(e, "request_id", "")
        exec_cl, exec_orig = (request_id, e.cl_ord_id) if request_id else (e.cl_ord_id, orig)
        out.append(ExecutionRow(
            exec_id_str(e.exec_id), e.exec_id, e.seq, e.order_id, exec_cl, exec_orig, e.account,
            e.symbol, side, exec_type, status, ord_type, price, qty, None, None, filled, leaves,
            avg, None, None, reason, at,
        ))

    def _rejected(self, e: OrderRejected, out: list[Row]) -> None:
        # A rejected command may name an unknown symbol or carry an invalid side or type.
        sc = self._scales.get(e.symbol)
        zero = Decimal(0)
        out.append(ExecutionRow(
            exec_id_str(e.exec_id), e.exec_id, e.seq, e.order_id, e.cl_ord_id, None, e.account,
            e.symbol, _name(e.side), "REJECTED", "REJECTED", _name(e.ord_type),
            sc.price(e.price) if sc else None, sc.qty(e.qty) if sc else None, None, None,
            zero, zero, None, None, None, e.reason.name, ns_to_datetime(e.ts),
        ))

    def _trade(self, t: Trade, out: list[Row]) -> None:
        sc = self._scales[t.symbol]
        at = ns_to_datetime(t.ts)
        px = Decimal(t.price) * sc.tick
        last_qty = sc.qty(t.qty)
        taker_side = Side(t.aggressor_side)
        maker_side = Side.SELL if taker_side == Side.BUY else Side.BUY
        sides = (
            (maker_exec_id(t.exec_id), t.maker_order_id, t.maker_cl_ord_id, t.maker_account,
             maker_side.name, None, None, t.maker_filled, t.maker_leaves, t.maker_notional,
             t.maker_fee, "MAKER"),
            (taker_exec_id(t.exec_id), t.taker_order_id, t.taker_cl_ord_id, t.taker_account,
             taker_side.name, t.taker_ord_type.name, sc.price(t.taker_price), t.taker_filled,
             t.taker_leaves, t.taker_notional, t.taker_fee, "TAKER"),
        )
        for (exec_id, order_id, cl_ord_id, account, side, ord_type, price, filled, leaves,
             notional, fee, liquidity) in sides:
            status = "FILLED" if leaves == 0 else "PARTIALLY_FILLED"
            cum = sc.qty(filled)
            left = sc.qty(leaves)
            avg = sc.avg(notional, filled)
            out.append(OrderRow(
                order_id, cl_ord_id, None, account, t.symbol, side, ord_type, None, price, None,
                None, cum, left, avg, status, None, at, at, t.exec_id,
            ))
            out.append(ExecutionRow(
                exec_id, t.exec_id, t.seq, order_id, cl_ord_id, None, account, t.symbol, side,
                "TRADE", status, ord_type, price, None, px, last_qty, cum, left, avg,
                Decimal(fee) * sc.fee_unit, liquidity, None, at,
            ))
        for pos in self.positions.apply_trade(t):
            out.append(self.position_row(pos))

    def position_row(self, pos: Position) -> PositionRow:
        """The ``positions`` row of a PositionBook position."""
        sc = self._scales[pos.symbol]
        size = pos.size
        side = "LONG" if size > 0 else "SHORT" if size < 0 else "FLAT"
        entry = (Decimal(pos.entry_notional) / Decimal(abs(size)) * sc.tick) if size else \
            Decimal(0)
        return PositionRow(
            pos.account, pos.symbol, side, sc.qty(abs(size)), entry, size,
            Decimal(pos.entry_notional), Decimal(pos.realised_pnl) * sc.quote_unit,
            Decimal(pos.fees) * sc.fee_unit, pos.last_exec_id, ns_to_datetime(pos.updated_ts),
        )


def session_row(
    settings: Any, next_sender_seq: int, next_target_seq: int, creation_time_ns: int,
    state: str, last_logon_ns: int | None, now_ns: int, last_logout_ns: int | None = None,
) -> SessionRow:
    """A ``fix_sessions`` row from a SessionSettings and the session's current state."""
    return SessionRow(
        settings.session_id, settings.begin_string, settings.sender_comp_id,
        settings.target_comp_id, settings.role.value, settings.firm, next_sender_seq,
        next_target_seq, ns_to_datetime(creation_time_ns), state,
        ns_to_datetime(last_logon_ns) if last_logon_ns is not None else None,
        ns_to_datetime(last_logout_ns) if last_logout_ns is not None else None,
        ns_to_datetime(now_ns),
    )
