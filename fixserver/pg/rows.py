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

Risk (margined instruments, ``Instrument.max_leverage > 0``; migration 008): each
``BalanceChanged`` adds a ``balance_ledger`` row (keyed by its seq and its place among the
command's BalanceChanged events), each ``AccountChanged`` upserts ``balances``, and the
positions a command touched (``PositionChanged``, ``RiskSettingsChanged``, and the open cross
positions of an account whose ``AccountChanged`` came: their liquidation price depends on the
balance) get one ``positions`` row each after the command's last event, from a
:class:`~engine.risk.readmodel.RiskReadModel` fed with the same events, which also gives the
liquidation price. Those rows replace the PositionBook's rows for margined instruments (the
book still follows their fills). Money there is NUMERIC in asset units (minor units /
10**settlement_decimals, exact). ``MarkPriceUpdated`` is sampled into ``mark_prices``: the
first mark of each symbol in each bucket of ``mark_history_every_s`` seconds of event time.
A builder that starts after the journal's start (at a snapshot) is given the engine's risk
state there (``risk_state``: ``engine.risk.to_state()``), so its liquidation prices are the
same as those of a builder that saw every event.

Liquidation and funding (migration 009): ``FundingPayment``, ``FundingApplied``,
``Liquidated`` and ``PositionTransferred`` each add one row, written once
(:mod:`fixserver.pg.liquidation_rows`). The insurance fund is the account ``~INSURANCE``: its
balance and ledger rows are the ones above, and the positions it takes over are its rows.

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

from engine.enums import MarginMode, Side
from engine.events import (
    AccountChanged,
    BalanceChanged,
    InstrumentConfigured,
    MarkPriceUpdated,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
    OrderReplaced,
    OrderRestated,
    OrderTriggered,
    PositionChanged,
    RiskSettingsChanged,
    Trade,
)
from engine.instruments import Instrument
from engine.positions import Position, PositionBook
from engine.risk.readmodel import RiskReadModel
from fixserver.pg.liquidation_rows import ROW_MAKERS, LiquidationFundingRow
from fixserver.pg.units import Scale, asset_amount, ns_to_datetime  # also for older callers


def exec_id_str(exec_id: int) -> str:
    """ExecID of a non-trade ExecutionReport."""
    return str(exec_id)


def maker_exec_id(exec_id: int) -> str:
    """ExecID of the maker's ExecutionReport of a Trade."""
    return f"{exec_id}-M"


def taker_exec_id(exec_id: int) -> str:
    """ExecID of the taker's ExecutionReport of a Trade."""
    return f"{exec_id}-T"


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
    """One ``positions`` upsert (applied only if ``(last_exec_id, last_seq)`` is newer). The
    fields from ``last_seq`` on are migration 008's: an unmargined instrument's row has leverage
    1 and None there, a margined one's money in units of ``asset``."""

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
    last_seq: int = 0
    leverage: Decimal = Decimal(1)
    asset: str | None = None
    margin_mode: str | None = None
    isolated_margin: Decimal | None = None
    liquidation_price: Decimal | None = None


class BalanceRow(NamedTuple):
    """One ``balances`` upsert from an AccountChanged (applied only if ``last_seq`` is newer)."""

    account: str
    asset: str
    balance: Decimal
    isolated_margin: Decimal
    order_margin: Decimal
    last_seq: int
    updated_at: datetime.datetime


class LedgerRow(NamedTuple):
    """One ``balance_ledger`` insert from a BalanceChanged (ON CONFLICT DO NOTHING);
    ``entry``: its place among its command's BalanceChanged events."""

    seq: int
    entry: int
    ts: datetime.datetime
    account: str
    asset: str
    amount: Decimal
    balance: Decimal
    cause: str
    symbol: str
    ref: str


class MarkRow(NamedTuple):
    """One ``mark_prices`` sample; the bucket's row with the lowest ``seq`` wins."""

    symbol: str
    bucket: datetime.datetime
    ts: datetime.datetime
    index_price: Decimal
    mark_price: Decimal
    seq: int


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


Row = Union[OrderRow, ExecutionRow, PositionRow, SessionRow, BalanceRow, LedgerRow, MarkRow,
            LiquidationFundingRow]

#: default ``MarkHistoryEverySeconds``: at most one mark_prices row per symbol this often
MARK_HISTORY_EVERY_S = 10.0


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
    """Turns engine events, in order, into rows; owns or shares the PositionBook.

    ``risk_state``: the engine's risk state (``engine.risk.to_state()``) where the events
    start, when that is after the journal's start (a snapshot); ``mark_history_every_s``: the
    mark_prices sampling period (see the module docstring)."""

    __slots__ = ("_decimals", "_margined", "_mark_bucket", "_mark_every_ns", "_scales",
                 "positions", "risk")

    def __init__(self, instruments: Iterable[Instrument],
                 positions: PositionBook | None = None, *,
                 risk_state: dict[str, Any] | None = None,
                 mark_history_every_s: float = MARK_HISTORY_EVERY_S) -> None:
        if not mark_history_every_s > 0:
            raise ValueError(f"mark_history_every_s must be positive, not "
                             f"{mark_history_every_s!r}")
        instruments = list(instruments)
        self._scales = {i.symbol: Scale(i) for i in instruments}
        self.positions = positions if positions is not None else PositionBook.for_instruments(
            instruments)
        self._margined: dict[str, Instrument] = {}
        self._decimals: dict[str, int] = {}  # settlement asset -> decimals
        #: collateral, positions and marks as of the last event (gives liquidation prices)
        self.risk = RiskReadModel()
        for inst in instruments:
            self._configure(inst)
        if risk_state:
            seed_risk_model(self.risk, risk_state)
        self._mark_every_ns = max(1, round(mark_history_every_s * 1e9))
        self._mark_bucket: dict[str, int] = {}  # symbol -> bucket of its last sampled mark

    def _configure(self, inst: Instrument) -> None:
        self._scales[inst.symbol] = Scale(inst)
        self.risk.instrument(inst)
        if inst.margined:
            self._margined[inst.symbol] = inst
            self._decimals[inst.settlement_asset] = inst.settlement_decimals
        else:
            self._margined.pop(inst.symbol, None)

    def rows(self, events: Iterable[Any], session_id: str | None = None) -> list[Row]:
        """Rows for a run of events (other event kinds are skipped); ``session_id``: the FIX
        session that entered the NewOrder these events came from, written with the order's
        accepted row."""
        out: list[Row] = []
        # margined positions to write once their command's events are all applied:
        # (account, symbol) -> (seq, ts) of that command
        touched: dict[tuple[str, str], tuple[int, int]] = {}
        ledger_seq = ledger_entry = -1
        risk = self.risk
        for event in events:
            kind = type(event)
            if kind is Trade:
                self._trade(event, out)
            elif kind in _ORDER_EVENTS:
                self._order_event(event, out, session_id if kind is OrderAccepted else None)
            elif kind is OrderRejected:
                self._rejected(event, out)
            elif kind in _RISK_EVENTS:
                if touched and next(iter(touched.values()))[0] != event.seq:
                    self._flush_positions(touched, out)  # an earlier command's
                if kind is BalanceChanged:
                    ledger_entry = ledger_entry + 1 if event.seq == ledger_seq else 0
                    ledger_seq = event.seq
                    out.append(self._ledger_row(event, ledger_entry))
                    continue
                risk.apply(event)
                if kind is AccountChanged:
                    out.append(self._balance_row(event))
                    self._touch_cross(event, touched)
                elif kind is MarkPriceUpdated:
                    self._sample_mark(event, out)
                else:  # PositionChanged, RiskSettingsChanged
                    touched[(event.account, event.symbol)] = (event.seq, event.ts)
            elif kind in ROW_MAKERS:  # liquidation and funding (fixserver.pg.liquidation_rows)
                out.append(ROW_MAKERS[kind](event, self._scales[event.symbol], self._decimals))
            elif kind is InstrumentConfigured:  # listed (or changed) while running
                self._configure(event.instrument)
                self.positions.list_instrument(event.symbol, event.instrument.multiplier)
        if touched:
            self._flush_positions(touched, out)
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
        margined = t.symbol in self._margined  # its rows come from PositionChanged
        for pos in self.positions.apply_trade(t):
            if not margined:
                out.append(self.position_row(pos, t.seq))

    def position_row(self, pos: Position, seq: int = 0) -> PositionRow:
        """The ``positions`` row of a PositionBook position (an unmargined instrument's);
        ``seq``: the command of its last fill (the row version's second part)."""
        sc = self._scales[pos.symbol]
        size = pos.size
        side = "LONG" if size > 0 else "SHORT" if size < 0 else "FLAT"
        entry = (Decimal(pos.entry_notional) / Decimal(abs(size)) * sc.tick) if size else \
            Decimal(0)
        return PositionRow(
            pos.account, pos.symbol, side, sc.qty(abs(size)), entry, size,
            Decimal(pos.entry_notional), Decimal(pos.realised_pnl) * sc.quote_unit,
            Decimal(pos.fees) * sc.fee_unit, pos.last_exec_id, ns_to_datetime(pos.updated_ts),
            seq,
        )

    # -- risk -----------------------------------------------------------------------------

    def _money(self, asset: str, minor: int) -> Decimal:
        return asset_amount(minor, self._decimals[asset])

    def _ledger_row(self, e: BalanceChanged, entry: int) -> LedgerRow:
        return LedgerRow(
            e.seq, entry, ns_to_datetime(e.ts), e.account, e.asset,
            self._money(e.asset, e.amount), self._money(e.asset, e.balance),
            _name(e.cause) or str(int(e.cause)), e.symbol, e.ref,
        )

    def _balance_row(self, e: AccountChanged) -> BalanceRow:
        money = self._money
        return BalanceRow(
            e.account, e.asset, money(e.asset, e.balance), money(e.asset, e.isolated_margin),
            money(e.asset, e.order_margin), e.seq, ns_to_datetime(e.ts),
        )

    def _touch_cross(self, e: AccountChanged,
                     touched: dict[tuple[str, str], tuple[int, int]]) -> None:
        """A balance change moves the liquidation price of the account's open cross
        positions settling in that asset: write them again."""
        for symbol, p in self.risk.by_account.get(e.account, {}).items():
            inst = self._margined.get(symbol)
            if (p.size and p.mode is MarginMode.CROSS and inst is not None
                    and inst.settlement_asset == e.asset):
                touched[(e.account, symbol)] = (e.seq, e.ts)

    def _flush_positions(self, touched: dict[tuple[str, str], tuple[int, int]],
                         out: list[Row]) -> None:
        for (account, symbol), (seq, ts) in touched.items():
            if symbol in self._margined:
                out.append(self.margined_position_row(account, symbol, seq, ts))
        touched.clear()

    def margined_position_row(self, account: str, symbol: str, seq: int,
                              ts: int) -> PositionRow:
        """The ``positions`` row of a margined position as the read model has it now, as of
        command ``seq`` at ``ts``."""
        inst = self._margined[symbol]
        sc = self._scales[symbol]
        view = self.risk.position_view(account, symbol)
        p = self.risk.positions[(account, symbol)]
        size = p.size
        side = "LONG" if size > 0 else "SHORT" if size < 0 else "FLAT"
        entry = (Decimal(p.entry_cost) / Decimal(abs(size)) * sc.tick) if size else Decimal(0)
        liq = view.liquidation_price if view is not None else 0
        asset = inst.settlement_asset
        return PositionRow(
            account, symbol, side, sc.qty(abs(size)), entry, size, Decimal(p.entry_cost),
            self._money(asset, p.realised), self._money(asset, p.fees), p.last_exec_id,
            ns_to_datetime(ts), seq, Decimal(p.leverage), asset, MarginMode(p.mode).name,
            self._money(asset, p.iso), Decimal(inst.ticks_to_price(liq)) if liq else None,
        )

    def _sample_mark(self, e: MarkPriceUpdated, out: list[Row]) -> None:
        bucket = e.ts - e.ts % self._mark_every_ns
        if self._mark_bucket.get(e.symbol) == bucket:
            return  # this bucket's first mark is written (or was, before a restart)
        self._mark_bucket[e.symbol] = bucket
        sc = self._scales.get(e.symbol)
        if sc is None:
            return
        out.append(MarkRow(e.symbol, ns_to_datetime(bucket), ns_to_datetime(e.ts),
                           Decimal(e.index) * sc.tick, Decimal(e.mark) * sc.tick, e.seq))


_RISK_EVENTS = frozenset({BalanceChanged, AccountChanged, PositionChanged, RiskSettingsChanged,
                          MarkPriceUpdated})


def seed_risk_model(model: RiskReadModel, state: dict[str, Any]) -> None:
    """Bring ``model`` to the engine's risk state ``state`` (``RiskBook.to_state()``, as a
    snapshot holds it), by applying the events that state sums up. Order margin is not in the
    state (the engine rebuilds it from the orders); no view a row shows depends on it."""
    iso: dict[tuple[str, str], int] = {}
    positions = []
    for (account, symbol, asset, size, entry, realised, fees, lev, mode, p_iso,
         last) in state.get("positions", ()):
        iso[(account, asset)] = iso.get((account, asset), 0) + p_iso
        positions.append(PositionChanged(0, 0, account, symbol, size, entry, realised, fees,
                                         lev, MarginMode(mode), p_iso, last))
    for account, asset, balance in state.get("accounts", ()):
        model.apply(AccountChanged(0, 0, account, asset, balance, iso.get((account, asset), 0),
                                   0))
    for p in positions:
        model.apply(p)
    for symbol, index, _index_ts, _ema, mark, _last_ts, *_funding in state.get("marks", ()):
        if mark:  # no mark yet: the model keeps the instrument's reference price
            model.apply(MarkPriceUpdated(0, 0, symbol, index, mark))


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
