"""MatchingEngine: the deterministic command processor.

Theory of operation
-------------------
``process(command)`` runs one command to completion and returns its events; nothing else
changes state. There is no clock (time is the command's ``ts``), no randomness, no I/O, and
every iteration is over ordered containers, so one command stream always yields the same
events and the same :meth:`state_hash`.

A new order is validated (first failing rule wins, in the order of :meth:`_check_new`),
accepted (order id = command seq), then either parked in the trigger index (stops and
take-profits) or executed: it matches against the opposite side while it crosses its limit
(a market order's limit is the price-band edge, fixed on entry), then rests (GTC/GTD/DAY) or
has its remainder canceled (IOC, FOK, market). FOK and minimum quantity are decided before
any trade by :func:`engine.dry_run.executable_qty`, which replays exactly what matching
would do without changing anything, so FOK is all or nothing.

Each trade is at the maker's price, updates both accounts' positions and the last price, and
then re-checks the affected accounts' resting reduce-only orders (shrink or cancel). Self-
trade prevention uses the taker's mode (order, else account default, else engine default).
After a command trades, triggered stops run one at a time in order-id order until none is
triggered. Finally every level the command touched is reported as a LevelChanged.

The book is pluggable (``book_factory``): :class:`engine.book.FastBook` or
:class:`engine.reference_book.ReferenceBook`; the matcher uses only their shared interface.
"""

from __future__ import annotations

from collections.abc import Iterable
from heapq import heapify, heappop, heappush
from typing import Any, Callable, Final

from engine import controls as _controls
from engine import snapshot as _snapshot
from engine.book import NO_ASK, Book, FastBook
from engine.commands import (
    AdjustIsolatedMargin,
    AdminAction,
    CancelOrder,
    ConfigureInstrument,
    Deposit,
    KillSwitch,
    MassCancel,
    NewOrder,
    ReplaceOrder,
    SessionStatus,
    SetAccountStp,
    SetIndexPrice,
    SetInstrumentStatus,
    SetLeverage,
    SetMarginMode,
    SetPosition,
    SetTradingDay,
    Tick,
    Withdraw,
)
from engine.dry_run import executable_qty
from engine.enums import (
    CancelReason,
    InstrumentStatus,
    OrdType,
    RejectReason,
    RequestKind,
    Side,
    StpMode,
    TimeInForce,
    TriggerBy,
)
from engine.events import (
    InstrumentStatusChanged,
    MassCancelDone,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
    OrderRestated,
    OrderTriggered,
    RequestRejected,
    Trade,
)
from engine.instruments import Instrument
from engine.market import Market
from engine.order import Order, OrderSpec
from engine.replace import replace_order
from engine.risk import commands as _risk_commands
from engine.risk.book import RiskBook

_tn: Final = tuple.__new__
BUY: Final = Side.BUY
SELL: Final = Side.SELL
MARKET: Final = OrdType.MARKET
LIMIT: Final = OrdType.LIMIT
STOP: Final = OrdType.STOP
STOP_LIMIT: Final = OrdType.STOP_LIMIT
TAKE_PROFIT: Final = OrdType.TAKE_PROFIT
TAKE_PROFIT_LIMIT: Final = OrdType.TAKE_PROFIT_LIMIT
GTC: Final = TimeInForce.GTC
IOC: Final = TimeInForce.IOC
FOK: Final = TimeInForce.FOK
GTD: Final = TimeInForce.GTD
DAY: Final = TimeInForce.DAY
TRADING: Final = InstrumentStatus.TRADING
HALTED: Final = InstrumentStatus.HALTED
CANCEL_ONLY: Final = InstrumentStatus.CANCEL_ONLY
POST_ONLY: Final = InstrumentStatus.POST_ONLY
R: Final = RejectReason
C: Final = CancelReason
CANCEL_NEWEST: Final = StpMode.CANCEL_NEWEST
CANCEL_OLDEST: Final = StpMode.CANCEL_OLDEST
CANCEL_BOTH: Final = StpMode.CANCEL_BOTH
DECREMENT_AND_CANCEL: Final = StpMode.DECREMENT_AND_CANCEL

_MARKET_TYPES: Final = (MARKET, STOP, TAKE_PROFIT)  # enter (or trigger into) a market order
_STOP_TYPES: Final = (STOP, STOP_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT)
_TP_TYPES: Final = (TAKE_PROFIT, TAKE_PROFIT_LIMIT)
DAY_NS: Final = 86_400 * 1_000_000_000
_SPEC_CACHE_MAX: Final = 4096
_EXPIRY_SLACK: Final = 4096  # heap entries allowed beyond twice the live orders


def _as_enum(enum: Any, value: Any) -> Any:
    """The enum member for ``value``, or None if it is not one."""
    try:
        return enum(value)
    except (ValueError, TypeError):
        return None


class MatchingEngine:
    """Deterministic matching engine over a set of instruments (see module docstring)."""

    instruments: list[Instrument]
    book_factory: Callable[[str], Book]
    default_stp: StpMode
    day_offset_ns: int
    account_stp: dict[str, StpMode]
    markets: dict[str, Market]
    orders: dict[int, Order]  # every live order (resting, working, untriggered)
    exec_id: int
    killed: dict[str, tuple[str, ...]]  # firm -> its accounts, while its kill switch is on
    blocked: set[str]  # accounts of killed firms: new orders and replaces are rejected
    sessions: dict[str, tuple[bool, bool]]  # FIX session -> (connected, cancel-on-disconnect)
    risk: RiskBook  # collateral, margin and marks (engine.risk)
    _expiry: list[tuple[int, int]]  # heap of (expire_ts, order id), lazy
    _specs: dict[OrderSpec, OrderSpec]
    _plain: OrderSpec

    def __init__(
        self,
        instruments: Iterable[Instrument],
        *,
        book_factory: Callable[[str], Book] = FastBook,
        default_stp: StpMode = CANCEL_NEWEST,
        account_stp: dict[str, StpMode] | None = None,
        day_offset_ns: int = 0,
    ) -> None:
        self.instruments = list(instruments)
        self.book_factory = book_factory
        self.default_stp = StpMode(default_stp)
        self.day_offset_ns = day_offset_ns
        self.account_stp = {
            a: StpMode(m) for a, m in (account_stp or {}).items()
        }
        self.markets = {
            i.symbol: Market(i, book_factory(i.symbol)) for i in self.instruments
        }
        self.orders = {}
        self.exec_id = 0
        self.killed = {}
        self.blocked = set()
        self.sessions = {}
        self._expiry = []
        self._specs = {}
        self._plain = self._intern(OrderSpec(LIMIT, GTC, 0, 0, 0, None, False, False, 0, False))
        # the liquidation engine's orders: IOC limit, reduce-only
        self.liquidation_spec = OrderSpec(LIMIT, IOC, 0, 0, 0, None, True, False, 0, False)
        self.risk = RiskBook(self)

    # -- public API -----------------------------------------------------------------------

    def process(self, command: Any) -> list:
        """Apply one command; return its events in order."""
        events: list = []
        _DISPATCH[type(command)](self, command, events)
        if self.risk.active:
            self.risk.finish(command, events)
        return events

    def state_hash(self) -> str:
        """SHA-256 hex digest of the canonical state (equal state <=> equal hash)."""
        return _snapshot.state_hash(self)

    def snapshot(self) -> bytes:
        """The whole state as compact msgpack bytes."""
        return _snapshot.dump(self)

    @classmethod
    def restore(
        cls, data: bytes, *, book_factory: Callable[[str], Book] = FastBook
    ) -> MatchingEngine:
        """A new engine in exactly the state a snapshot was taken in."""
        return _snapshot.load(cls, data, book_factory)

    def position(self, account: str, symbol: str) -> int:
        """An account's signed position in lots."""
        return self.markets[symbol].positions.get(account, 0)

    def book(self, symbol: str) -> Book:
        """The order book of one instrument (read it; do not change it)."""
        return self.markets[symbol].book

    def status(self, symbol: str) -> InstrumentStatus:
        """An instrument's current trading status."""
        return self.markets[symbol].status

    def marks(self) -> dict[str, tuple[int, int]]:
        """symbol -> (index, mark) in ticks for every instrument with a mark or an index
        (0 where not known yet)."""
        return {s: (ms.index, ms.mark) for s, ms in self.risk.marks.items()}

    def last_price(self, symbol: str) -> int:
        """Last trade price in ticks (0 before the first trade)."""
        return self.markets[symbol].last_price

    # -- helpers --------------------------------------------------------------------------

    def _intern(self, spec: OrderSpec) -> OrderSpec:
        if spec.expire_ts or spec.stop_price:
            return spec  # unique-ish: do not grow the cache
        got = self._specs.get(spec)
        if got is None:
            if len(self._specs) >= _SPEC_CACHE_MAX:
                return spec
            self._specs[spec] = got = spec
        return got

    def _oev(self, cls: Any, seq: int, ts: int, o: Order, *extra: Any) -> Any:
        self.exec_id += 1
        s = o.spec
        return _tn(
            cls,
            (seq, ts, self.exec_id, o.id, o.cl_ord_id, o.account, o.symbol, o.side, s.ord_type,
             s.tif, o.price, s.stop_price, o.qty, o.filled, o.leaves, o.notional, *extra),
        )

    def _request_reject(
        self, c: Any, kind: RequestKind, order_id: int, account: Any, reason: RejectReason,
        ev: list,
    ) -> None:
        self.exec_id += 1
        ev.append(
            RequestRejected(c.seq, c.ts, self.exec_id, kind, order_id,
                            getattr(c, "cl_ord_id", ""), account or "", reason)
        )

    def _stp_mode(self, o: Order) -> StpMode:
        mode = o.spec.stp
        if mode is None:
            mode = self.account_stp.get(o.account, self.default_stp)
        return mode

    def _margin_reject(self, c: NewOrder, side: Side, price: int, qty: int, ev: list,
                       can_fill: bool = True) -> bool:
        """Run the pre-trade margin check; on failure append the rejection, return True.
        ``can_fill`` False: the order cannot trade on entry (it rests)."""
        reason, shortfall = self.risk.check_order(ev, c.account, c.symbol, side, price, qty,
                                                  can_fill=can_fill)
        if not reason:
            return False
        self.exec_id += 1
        ev.append(
            OrderRejected(c.seq, c.ts, self.exec_id, c.seq, c.cl_ord_id, c.account, c.symbol,
                          side, c.ord_type, c.tif, c.price, c.stop_price, c.qty,
                          RejectReason(reason), shortfall)
        )
        return True

    def _compact_expiry(self) -> None:
        """Drop the heap entries of orders that ended before their expiry (filled or
        canceled DAY/GTD orders): the heap is lazy, and without this it would hold one entry
        per such order until its expiry time. Run when the heap is over twice the live
        orders, so the cost is amortised O(1) per push."""
        orders = self.orders
        self._expiry = [(exp, oid) for exp, oid in self._expiry
                        if (o := orders.get(oid)) is not None and o.spec.expire_ts == exp]
        heapify(self._expiry)

    def _remove_live(self, m: Market, o: Order) -> None:
        """Drop a live order from the book or trigger index and from the indexes."""
        if o.visible:
            m.book.remove(o)
        elif o.spec.pending:
            m.remove_stop(o)
        if o.spec.reduce_only:
            m.unindex_reduce_only(o)
        del self.orders[o.id]

    def _cancel(
        self, m: Market, o: Order, reason: CancelReason, seq: int, ts: int, ev: list,
        request_id: str = "",
    ) -> None:
        self._remove_live(m, o)
        o.leaves = 0
        ev.append(self._oev(OrderCanceled, seq, ts, o, reason, request_id))

    def _finish(self, m: Market, seq: int, ts: int, ev: list) -> None:
        """End of a command on one market: run triggers, then report touched levels."""
        if m.has_stops():
            self._run_triggers(m, seq, ts, ev)
        m.book.drain_levels(seq, ev)

    def _finish_all(self, seq: int, ts: int, ev: list) -> None:
        for m in self.markets.values():
            self._finish(m, seq, ts, ev)

    # -- new orders -----------------------------------------------------------------------

    def _check_new(self, m: Market, c: NewOrder) -> tuple[int, Any, Any, Any, Any]:
        """Validate a NewOrder: (reason or 0, side, ord_type, tif, stp) with enums coerced."""
        side: Any = c.side
        if side is not BUY and side is not SELL:
            side = _as_enum(Side, side)
            if side is None:
                return R.INVALID_SIDE, side, None, None, None
        ot: Any = c.ord_type
        if ot is not LIMIT:
            ot = _as_enum(OrdType, ot)
            if ot is None:
                return R.INVALID_ORDER_TYPE, side, ot, None, None
        tif: Any = c.tif
        if tif is not GTC:
            tif = _as_enum(TimeInForce, tif)
            if tif is None:
                return R.INVALID_TIF, side, ot, tif, None
        stp: Any = c.stp
        if stp is not None:
            stp = _as_enum(StpMode, stp)
            if stp is None:
                return R.INVALID_STP_MODE, side, ot, tif, stp
        if c.seq in self.orders:
            return R.DUPLICATE_ORDER_ID, side, ot, tif, stp
        status = m.status
        if status is not TRADING:
            if status is HALTED:
                return R.INSTRUMENT_HALTED, side, ot, tif, stp
            if status is CANCEL_ONLY:
                return R.INSTRUMENT_CANCEL_ONLY, side, ot, tif, stp
            if ot in _MARKET_TYPES:
                return R.INSTRUMENT_POST_ONLY, side, ot, tif, stp
        inst = m.instrument
        qty = c.qty
        if qty <= 0:
            return R.INVALID_QTY, side, ot, tif, stp
        if qty < inst.min_qty:
            return R.QTY_BELOW_MIN, side, ot, tif, stp
        if qty > inst.max_qty:
            return R.QTY_ABOVE_MAX, side, ot, tif, stp
        is_stop = ot in _STOP_TYPES
        has_limit = ot not in _MARKET_TYPES
        if has_limit and c.price <= 0:
            return R.INVALID_PRICE, side, ot, tif, stp
        if is_stop and c.stop_price <= 0:
            return R.INVALID_STOP_PRICE, side, ot, tif, stp
        if c.trigger_by is not None and (
            _as_enum(TriggerBy, c.trigger_by) is None or not is_stop
            or (c.trigger_by == TriggerBy.MARK and c.symbol not in self.risk.marks)
        ):
            return R.INVALID_TRIGGER, side, ot, tif, stp
        if tif is GTD and c.expire_ts <= c.ts:
            return R.INVALID_EXPIRE_TIME, side, ot, tif, stp
        if c.post_only and (not has_limit or is_stop or tif is IOC or tif is FOK):
            return R.POST_ONLY_INVALID, side, ot, tif, stp
        if c.display_qty and (
            c.display_qty < 0 or c.display_qty > qty or not has_limit or tif is IOC
            or tif is FOK
        ):
            return R.INVALID_DISPLAY_QTY, side, ot, tif, stp
        if c.min_qty and (c.min_qty < 0 or c.min_qty > qty):
            return R.INVALID_MIN_QTY, side, ot, tif, stp
        if not is_stop:
            lo, hi = m.band()
            if has_limit:
                if not lo <= c.price <= hi:
                    return R.PRICE_OUTSIDE_BAND, side, ot, tif, stp
                crosses = (
                    c.price >= m.book.best_ask if side is BUY else c.price <= m.book.best_bid
                )
                if crosses and c.post_only:
                    return R.POST_ONLY_WOULD_TAKE, side, ot, tif, stp
                if crosses and status is POST_ONLY:
                    return R.INSTRUMENT_POST_ONLY, side, ot, tif, stp
            elif not m.reference_price():
                return R.NO_REFERENCE_PRICE, side, ot, tif, stp
        if c.reduce_only:
            pos = m.positions.get(c.account, 0)
            if (pos >= 0) if side is BUY else (pos <= 0):
                return R.REDUCE_ONLY_WOULD_INCREASE, side, ot, tif, stp
        return 0, side, ot, tif, stp

    def _on_new(self, c: NewOrder, ev: list) -> None:
        if self.blocked and c.account in self.blocked:
            self.exec_id += 1
            ev.append(
                OrderRejected(c.seq, c.ts, self.exec_id, c.seq, c.cl_ord_id, c.account,
                              c.symbol, c.side, c.ord_type, c.tif, c.price, c.stop_price,
                              c.qty, R.KILL_SWITCH_ACTIVE)
            )
            return
        m = self.markets.get(c.symbol)
        if m is not None and c.ord_type is LIMIT and c.tif is GTC and m.status is TRADING:
            # fast path: a valid plain GTC limit order that does not cross rests at once;
            # anything else (or any doubt) takes the general path below
            side = c.side
            price = c.price
            qty = c.qty
            inst = m.instrument
            book = m.book
            lo, hi = m.band()
            if (
                (price < book.best_ask if side is BUY else side is SELL and price > book.best_bid)
                and lo <= price <= hi
                and price > 0
                and inst.min_qty <= qty <= inst.max_qty
                and qty > 0
                and c.stp is None
                and c.trigger_by is None
                and not (c.display_qty or c.min_qty or c.post_only or c.reduce_only)
                and c.seq not in self.orders
            ):
                if inst.max_leverage and self._margin_reject(c, side, price, qty, ev, False):
                    return
                oid = c.seq
                cl = c.cl_ord_id
                acct = c.account
                sym = m.symbol
                o = Order(oid, cl, acct, sym, side, price, qty, qty, 0, 0, qty, self._plain)
                self.orders[oid] = o
                self.exec_id += 1
                ev.append(
                    _tn(OrderAccepted, (oid, c.ts, self.exec_id, oid, cl, acct, sym, side,
                                        LIMIT, GTC, price, 0, qty, 0, qty, 0))
                )
                book.add(o)
                book.drain_levels(oid, ev)
                return
        reason: int
        if m is None:
            reason, side, ot, tif = R.UNKNOWN_SYMBOL, c.side, c.ord_type, c.tif
        else:
            reason, side, ot, tif, stp = self._check_new(m, c)
        if reason:
            self.exec_id += 1
            ev.append(
                OrderRejected(c.seq, c.ts, self.exec_id, c.seq, c.cl_ord_id, c.account,
                              c.symbol, side if side is not None else c.side,
                              ot if ot is not None else c.ord_type,
                              tif if tif is not None else c.tif, c.price, c.stop_price, c.qty,
                              RejectReason(reason))
            )
            return
        assert m is not None
        qty = c.qty
        if (m.instrument.max_leverage and ot not in _STOP_TYPES and not c.reduce_only
                and self._margin_reject(c, side, self.risk.margin_price(m.symbol, side, c.price
                                        if ot not in _MARKET_TYPES else 0), qty, ev)):
            return
        if c.reduce_only:  # clamp to the position it may close
            pos = m.positions.get(c.account, 0)
            room = -pos if side is BUY else pos
            if qty > room:
                qty = room
        is_stop = ot in _STOP_TYPES
        expire = 0
        if tif is GTD:
            expire = c.expire_ts
        elif tif is DAY:
            off = self.day_offset_ns
            expire = ((c.ts - off) // DAY_NS + 1) * DAY_NS + off
        if (
            ot is LIMIT and tif is GTC and stp is None and not c.display_qty
            and not c.min_qty and not c.post_only and not c.reduce_only
        ):
            spec = self._plain
        else:
            by_mark = False
            if is_stop:
                by_mark = (c.trigger_by == TriggerBy.MARK if c.trigger_by is not None
                           else ot in _TP_TYPES and bool(m.instrument.max_leverage))
            spec = self._intern(
                OrderSpec(ot, tif, c.stop_price if is_stop else 0, c.display_qty, c.min_qty,
                          stp, bool(c.reduce_only), bool(c.post_only), expire, is_stop,
                          by_mark)
            )
        price = c.price if ot not in _MARKET_TYPES else 0
        oid = c.seq
        o = Order(oid, c.cl_ord_id, c.account, m.symbol, side, price, qty, qty, 0, 0, 0, spec)
        self.orders[oid] = o
        self.exec_id += 1
        ev.append(
            _tn(OrderAccepted, (c.seq, c.ts, self.exec_id, oid, c.cl_ord_id, c.account, m.symbol,
                                side, ot, tif, price, spec.stop_price, qty, 0, qty, 0))
        )
        if expire:
            heap = self._expiry
            heappush(heap, (expire, oid))
            if len(heap) > 2 * len(self.orders) + _EXPIRY_SLACK:
                self._compact_expiry()
        if is_stop:
            m.add_stop(o)
        else:
            self._execute(m, o, c.seq, c.ts, ev, True)
        self._finish(m, c.seq, c.ts, ev)

    def _execute(self, m: Market, o: Order, seq: int, ts: int, ev: list, entry: bool) -> None:
        """Match a working order, then rest it or cancel its remainder."""
        spec = o.spec
        book = m.book
        is_market = spec.ord_type in _MARKET_TYPES
        if is_market:
            lo, hi = m.band()
            limit = hi if o.side is BUY else lo
            crosses = limit >= book.best_ask if o.side is BUY else limit <= book.best_bid
        else:
            limit = o.price
            crosses = limit >= book.best_ask if o.side is BUY else limit <= book.best_bid
        tif = spec.tif
        if entry and (tif is FOK or spec.min_qty):
            need = o.leaves if tif is FOK else spec.min_qty
            if not crosses or executable_qty(self, m, o, limit, need) < need:
                reason = C.FOK_UNFILLED if tif is FOK else C.MIN_QTY_UNFILLED
                self._cancel(m, o, reason, seq, ts, ev)
                return
        if crosses:
            self._match(m, o, limit, seq, ts, ev)
            if not o.leaves:
                self.orders.pop(o.id, None)  # filled (an STP-canceled taker is gone already)
                return
        if is_market:
            opp_left = book.best_bid != 0 if o.side is SELL else book.best_ask != NO_ASK
            reason = C.MARKET_PROTECTION if opp_left else C.IOC_REMAINDER
            self._cancel(m, o, reason, seq, ts, ev)
        elif tif is IOC or tif is FOK:
            self._cancel(m, o, C.IOC_REMAINDER, seq, ts, ev)
        else:
            d = spec.display
            o.visible = d if d and d < o.leaves else o.leaves
            book.add(o)
            if spec.reduce_only:
                m.index_reduce_only(o)

    def _match(self, m: Market, t: Order, limit: int, seq: int, ts: int, ev: list) -> None:
        """Trade taker ``t`` against the opposite side while it crosses ``limit``."""
        book = m.book
        inst = m.instrument
        mult = inst.multiplier
        mrate = inst.maker_fee_ppm * mult
        trate = inst.taker_fee_ppm * mult
        symbol = m.symbol
        acct = t.account
        positions = m.positions
        ro_index = m.reduce_only
        orders = self.orders
        t_side = t.side
        t_type = t.spec.ord_type
        t_price = t.price
        buy = t_side is BUY
        opp = SELL if buy else BUY
        sq = 0
        while t.leaves:
            if buy:
                if book.best_ask > limit:
                    break
            elif book.best_bid < limit:
                break
            mk = book.best_order(opp)
            if mk is None:  # cannot happen: the side crossed, so it is not empty
                break
            mka = mk.account
            if mka == acct:
                if not self._self_trade(m, t, mk, seq, ts, ev):
                    return
                continue
            q = t.leaves
            if q > mk.visible:
                q = mk.visible
            px = mk.price
            book.fill(mk, q)
            t.leaves -= q
            t.filled += q
            n = px * q
            t.notional += n
            self.exec_id += 1
            ev.append(
                _tn(Trade, (seq, ts, self.exec_id, symbol, px, q, t_side, mk.id, mk.cl_ord_id,
                            mka, mk.filled, mk.leaves, mk.notional, n * mrate, t.id, t.cl_ord_id,
                            acct, t.filled, t.leaves, t.notional, n * trate, t_type, t_price))
            )
            sq = q if buy else -q
            positions[acct] = positions.get(acct, 0) + sq
            positions[mka] = positions.get(mka, 0) - sq
            m.last_price = px
            if not mk.leaves:
                del orders[mk.id]
                if mk.spec.reduce_only:
                    m.unindex_reduce_only(mk)
            if ro_index:
                if mka in ro_index:
                    self._enforce_reduce_only(m, mka, seq, ts, ev)
                if acct in ro_index:
                    self._enforce_reduce_only(m, acct, seq, ts, ev)

    def _self_trade(self, m: Market, t: Order, mk: Order, seq: int, ts: int, ev: list) -> bool:
        """Apply the taker's STP mode against its own resting ``mk``; False if t ended."""
        mode = self._stp_mode(t)
        if mode is CANCEL_OLDEST:
            self._cancel(m, mk, C.STP, seq, ts, ev)
            return True
        if mode is CANCEL_NEWEST:
            self._cancel(m, t, C.STP, seq, ts, ev)
            return False
        if mode is CANCEL_BOTH:
            self._cancel(m, mk, C.STP, seq, ts, ev)
            self._cancel(m, t, C.STP, seq, ts, ev)
            return False
        d = t.leaves if t.leaves < mk.leaves else mk.leaves  # DECREMENT_AND_CANCEL
        if mk.leaves == d:
            self._cancel(m, mk, C.STP, seq, ts, ev)
        else:
            m.book.restate(mk, mk.leaves - d)
            ev.append(self._oev(OrderRestated, seq, ts, mk, C.STP))
        if t.leaves == d:
            self._cancel(m, t, C.STP, seq, ts, ev)
            return False
        t.leaves -= d
        t.qty -= d
        ev.append(self._oev(OrderRestated, seq, ts, t, C.STP))
        return True

    def _enforce_reduce_only(self, m: Market, account: str, seq: int, ts: int, ev: list) -> None:
        """Shrink or cancel an account's resting reduce-only orders to fit its position."""
        index = m.reduce_only.get(account)
        if not index:
            return
        pos = m.positions.get(account, 0)
        for oid in sorted(index):
            o = index[oid]
            room = -pos if o.side is BUY else pos
            if room <= 0:
                self._cancel(m, o, C.REDUCE_ONLY, seq, ts, ev)
            elif o.leaves > room:
                m.book.restate(o, room)
                ev.append(self._oev(OrderRestated, seq, ts, o, C.REDUCE_ONLY))

    def _run_triggers(self, m: Market, seq: int, ts: int, ev: list) -> None:
        """Trigger stops/take-profits one at a time (lowest order id first) until none holds."""
        while True:
            oid = m.next_triggered()
            if not oid:
                return
            o = self.orders[oid]
            m.remove_stop(o)
            s = o.spec
            o.spec = s = s._replace(pending=False)
            if s.reduce_only:
                pos = m.positions.get(o.account, 0)
                room = -pos if o.side is BUY else pos
                if room > 0 and o.leaves > room:
                    o.qty -= o.leaves - room
                    o.leaves = room
            ev.append(self._oev(OrderTriggered, seq, ts, o,
                                m.mark_price if s.trigger_mark else m.last_price))
            if s.reduce_only and o.leaves > 0:
                pos = m.positions.get(o.account, 0)
                if (pos >= 0) if o.side is BUY else (pos <= 0):
                    self._cancel(m, o, C.REDUCE_ONLY, seq, ts, ev)
                    continue
            is_market = s.ord_type in _MARKET_TYPES
            if not is_market:
                lo, hi = m.band()
                if not lo <= o.price <= hi:
                    self._cancel(m, o, C.PRICE_BAND, seq, ts, ev)
                    continue
            if m.instrument.max_leverage and not s.reduce_only:
                risk = self.risk
                reason, _short = risk.check_order(
                    ev, o.account, o.symbol, o.side,
                    risk.margin_price(o.symbol, o.side, o.price), o.leaves)
                if reason:
                    self._cancel(m, o, C.INSUFFICIENT_MARGIN, seq, ts, ev)
                    continue
            if m.status is POST_ONLY:
                book = m.book
                if is_market or (
                    o.price >= book.best_ask if o.side is BUY else o.price <= book.best_bid
                ):
                    self._cancel(m, o, C.POST_ONLY, seq, ts, ev)
                    continue
            self._execute(m, o, seq, ts, ev, True)

    # -- cancel, replace, mass cancel -----------------------------------------------------

    def _on_cancel(self, c: CancelOrder, ev: list) -> None:
        o = self.orders.get(c.order_id)
        if o is None or o.account != c.account:
            self._request_reject(c, RequestKind.CANCEL, c.order_id, c.account,
                                 R.UNKNOWN_ORDER, ev)
            return
        m = self.markets[o.symbol]
        if m.status is HALTED:
            self._request_reject(c, RequestKind.CANCEL, c.order_id, c.account,
                                 R.INSTRUMENT_HALTED, ev)
            return
        s = o.spec
        if o.visible and not s.reduce_only and c.reason is C.USER:  # the common case, inlined
            m.book.remove(o)
            del self.orders[o.id]
            o.leaves = 0
            self.exec_id += 1
            ev.append(
                _tn(OrderCanceled, (c.seq, c.ts, self.exec_id, o.id, o.cl_ord_id, o.account,
                                    o.symbol, o.side, s.ord_type, s.tif, o.price, s.stop_price,
                                    o.qty, o.filled, 0, o.notional, C.USER, c.cl_ord_id))
            )
        else:
            self._cancel(m, o, C(c.reason), c.seq, c.ts, ev, c.cl_ord_id)
        m.book.drain_levels(c.seq, ev)

    def _on_replace(self, c: ReplaceOrder, ev: list) -> None:
        replace_order(self, c, ev)

    def _on_mass_cancel(self, c: MassCancel, ev: list) -> None:
        side = c.side
        reason: int
        if c.symbol is not None and c.symbol not in self.markets:
            reason = R.UNKNOWN_SYMBOL
        elif side is not None and _as_enum(Side, side) is None:
            reason = R.INVALID_SIDE
        else:
            reason = 0
        if reason:
            self._request_reject(c, RequestKind.MASS_CANCEL, 0, c.account, R(reason), ev)
            return
        if side is not None:
            side = Side(side)
        victims = [
            o
            for o in self.orders.values()
            if (c.account is None or o.account == c.account)
            and (c.symbol is None or o.symbol == c.symbol)
            and (side is None or o.side is side)
        ]
        victims.sort(key=lambda o: o.id)
        why = _as_enum(C, c.reason) or C.MASS_CANCEL
        for o in victims:
            self._cancel(self.markets[o.symbol], o, why, c.seq, c.ts, ev, c.cl_ord_id)
        self.exec_id += 1
        ev.append(MassCancelDone(c.seq, c.ts, self.exec_id, c.cl_ord_id, c.account, c.symbol,
                                 side, len(victims)))
        self._finish_all(c.seq, c.ts, ev)

    # -- admin and time -------------------------------------------------------------------

    def _on_status(self, c: SetInstrumentStatus, ev: list) -> None:
        m = self.markets.get(c.symbol)
        status = _as_enum(InstrumentStatus, c.status)
        if m is None or status is None:
            reason = R.UNKNOWN_SYMBOL if m is None else R.INVALID_STATUS
            self._request_reject(c, RequestKind.ADMIN, 0, None, reason, ev)
            return
        m.status = status
        ev.append(InstrumentStatusChanged(c.seq, c.ts, m.symbol, status))
        self._finish(m, c.seq, c.ts, ev)

    def _on_set_position(self, c: SetPosition, ev: list) -> None:
        m = self.markets.get(c.symbol)
        if m is None:
            self._request_reject(c, RequestKind.ADMIN, 0, c.account, R.UNKNOWN_SYMBOL, ev)
            return
        if m.instrument.max_leverage:
            self._request_reject(c, RequestKind.ADMIN, 0, c.account, R.MARGINED_INSTRUMENT, ev)
            return
        m.positions[c.account] = c.position
        self._enforce_reduce_only(m, c.account, c.seq, c.ts, ev)
        self._finish(m, c.seq, c.ts, ev)

    def _on_account_stp(self, c: SetAccountStp, ev: list) -> None:
        mode = _as_enum(StpMode, c.mode)
        if mode is None:
            self._request_reject(c, RequestKind.ADMIN, 0, c.account, R.INVALID_STP_MODE, ev)
            return
        self.account_stp[c.account] = mode

    def _on_tick(self, c: Tick, ev: list) -> None:
        heap = self._expiry
        while heap and heap[0][0] <= c.ts:
            exp, oid = heappop(heap)
            o = self.orders.get(oid)
            if o is None or o.spec.expire_ts != exp:
                continue  # already gone
            self._remove_live(self.markets[o.symbol], o)
            o.leaves = 0
            ev.append(self._oev(OrderExpired, c.seq, c.ts, o, C.EXPIRY))
        if self.risk.marks:
            self.risk.on_tick(c.ts, c.seq, ev)
        self._finish_all(c.seq, c.ts, ev)


# command class -> handler; plain functions (not bound methods) so the engine holds no
# reference cycle to itself and is freed by reference counting like everything it owns
_DISPATCH: dict[type, Callable[[MatchingEngine, Any, list], None]] = {
    NewOrder: MatchingEngine._on_new,
    CancelOrder: MatchingEngine._on_cancel,
    ReplaceOrder: MatchingEngine._on_replace,
    MassCancel: MatchingEngine._on_mass_cancel,
    SetInstrumentStatus: MatchingEngine._on_status,
    SetPosition: MatchingEngine._on_set_position,
    SetAccountStp: MatchingEngine._on_account_stp,
    KillSwitch: _controls.kill_switch,
    AdminAction: _controls.admin_action,
    SessionStatus: _controls.session_status,
    SetTradingDay: _controls.set_trading_day,
    ConfigureInstrument: _controls.configure_instrument,
    Deposit: _risk_commands.deposit,
    Withdraw: _risk_commands.withdraw,
    SetLeverage: _risk_commands.set_leverage,
    SetMarginMode: _risk_commands.set_margin_mode,
    AdjustIsolatedMargin: _risk_commands.adjust_isolated_margin,
    SetIndexPrice: _risk_commands.set_index_price,
    Tick: MatchingEngine._on_tick,
}
