"""RiskBook: collateral, margin, marks and the pre-trade check, inside the engine.

Theory of operation
-------------------
The matcher knows nothing of money. The risk book follows the matcher's own events
(:meth:`sync`): an accepted or triggered order adds its leaves and leaves*price to its
account's aggregates in that instrument, fills, cancels, replaces, restatements and expiry
take them off, and each Trade moves both positions, realises PnL, charges fees and (for
isolated positions) moves margin. It is therefore deterministic and replayed with the
journal like the matcher. Before the matcher accepts a new order, a replace or a triggered
stop in a margined instrument it asks :meth:`check_order`, which syncs first so it sees
every earlier effect of the same command.

Cost per order is O(1) in the account's orders: the order margin of an instrument is a
function of four aggregates and the position (:func:`engine.risk.margin.order_margin`), and
the account keeps the sum. The cross valuation (unrealised PnL, initial and maintenance
margin at mark) is cached per account and recomputed over its positions only when a mark
or the account changed since the last use (amortised: marks change at most once per
instrument's ``mark_interval_ms``).

At the end of every command :meth:`finish` re-arms the mark thresholds of touched
accounts (see engine.risk.thresholds) and emits one AccountChanged per touched account and
one PositionChanged per touched position, so readers (FIX reports, Postgres, feeds) follow
durable events instead of reading live engine state.
"""

from __future__ import annotations

import weakref
from typing import Any

from engine.enums import (
    LedgerCause,
    MarginMode,
    OrdType,
    RejectReason,
    RequestKind,
    Side,
)
from engine.events import (
    AccountChanged,
    BalanceChanged,
    IndexPriceUpdated,
    MarkPriceUpdated,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderReplaced,
    OrderRestated,
    OrderTriggered,
    PositionChanged,
    RequestRejected,
    RiskSettingsChanged,
    Trade,
)
from engine.instruments import Instrument
from engine.risk import funding as fu
from engine.risk import liquidation as lq
from engine.risk import margin as mg
from engine.risk.monitor import MarginMonitor
from engine.risk.state import MarkState, RiskAccount, RiskPosition
from engine.risk.thresholds import PPM
from engine.risk.views import (
    AccountView,
    InstrumentParams,
    PositionView,
    shown,
    value_positions,
)

R = RejectReason
BUY = Side.BUY
_STOP_TYPES = (OrdType.STOP, OrdType.STOP_LIMIT, OrdType.TAKE_PROFIT, OrdType.TAKE_PROFIT_LIMIT)
_MARKET_TYPES = (OrdType.MARKET, OrdType.STOP, OrdType.TAKE_PROFIT)
MS = 1_000_000
_tn = tuple.__new__


class InstrumentRisk:
    """What the risk book needs of one margined instrument, precomputed."""

    __slots__ = ("asset", "caps", "cums", "instrument", "mmr_max", "taker_ppm", "tiers", "unit",
                 "v")

    def __init__(self, inst: Instrument) -> None:
        self.instrument = inst
        self.asset = inst.settlement_asset
        self.unit = inst.unit_value()
        self.v = self.unit * inst.multiplier
        self.tiers = inst.tiers()
        self.mmr_max = max(t[1] for t in self.tiers)
        self.taker_ppm = inst.taker_fee_ppm
        self.cums = mg.cumulative_deductions(self.tiers)
        self.caps = {lev: mg.max_notional(self.tiers, lev)
                     for lev in range(1, inst.max_leverage + 1)}  # leverage -> notional cap

    def maintenance(self, notional: int) -> int:
        """Maintenance margin of a position notional (as margin.maintenance_margin)."""
        if notional <= 0:
            return 0
        tiers = self.tiers
        last = len(tiers) - 1
        t = 0
        while t < last and notional > tiers[t][0]:
            t += 1
        return -((self.cums[t] - notional * tiers[t][1]) // PPM)


class RiskBook:
    """Every account's collateral and margined positions (see module docstring)."""

    def __init__(self, engine: Any) -> None:
        # a proxy: the engine owns this book, and must stay free of reference cycles
        self.eng: Any = weakref.proxy(engine)
        self.instruments: dict[str, InstrumentRisk] = {}
        self.assets: dict[str, int] = {}  # settlement asset -> decimals
        self.accounts: dict[tuple[str, str], RiskAccount] = {}
        self.positions: dict[tuple[str, str], RiskPosition] = {}
        self.held: dict[int, list] = {}  # order id -> [leaves, price, position, is_buy]
        self.marks: dict[str, MarkState] = {}
        self.monitor = MarginMonitor()
        self.holders: dict[str, dict[str, RiskPosition]] = {}  # symbol -> open positions
        self.funding: dict[str, fu.FundingState] = {}
        self.liquidations = 0  # liquidation orders so far (their ids follow it)
        self.call_levels: dict[str, tuple] = {}  # asset -> margin-call levels (ppm)
        self.fee_pool: dict[str, int] = {}
        self.deposited: dict[str, int] = {}
        self.withdrawn: dict[str, int] = {}
        self.gen = 0  # bumped on every mark change: cached cross valuations are stale
        self.active = False
        self._ev: list | None = None
        self._cursor = 0
        self._touched_accounts: dict[tuple[str, str], RiskAccount] = {}
        self._touched_positions: dict[tuple[str, str], RiskPosition] = {}
        # accounts whose headroom may have changed (fills, collateral, settings): re-armed at
        # the end of the command; order margin alone does not move the thresholds
        self._rearm: dict[tuple[str, str], RiskAccount] = {}
        for inst in engine.instruments:
            self.configure(inst)

    # -- configuration ----------------------------------------------------------------------

    def configure(self, inst: Instrument) -> None:
        """Know an instrument's (new) rules."""
        sym = inst.symbol
        if inst.margined:
            self.instruments[sym] = InstrumentRisk(inst)
            self.assets.setdefault(inst.settlement_asset, inst.settlement_decimals)
            self.marks.setdefault(sym, MarkState())
            self.monitor.add_symbol(sym)
            self.holders.setdefault(sym, {})
            self.call_levels[inst.settlement_asset] = tuple(sorted(inst.margin_call_levels))
            self.active = True
        else:
            self.instruments.pop(sym, None)

    def problem(self, inst: Instrument) -> RejectReason | None:
        """Why these risk parameters cannot be used (None if they can)."""
        if not inst.margined:
            return None if inst.max_leverage == 0 else R.INVALID_INSTRUMENT
        known = self.assets.get(inst.settlement_asset)
        tiers = inst.tiers()
        caps = [t[0] for t in tiers]
        ok = (
            isinstance(inst.settlement_asset, str) and inst.settlement_asset
            and 0 <= inst.settlement_decimals <= 18
            and (known is None or known == inst.settlement_decimals)
            and inst.unit_value() > 0
            and 1 <= inst.max_leverage <= 1000
            and 0 <= inst.default_leverage <= inst.max_leverage
            and caps == sorted(caps) and len(set(caps)) == len(caps)
            and all(c > 0 and 0 < mmr < PPM and 1 <= lev <= inst.max_leverage
                    and mmr * lev < PPM for c, mmr, lev in tiers)
            and inst.mark_interval_ms > 0 and inst.mark_smoothing > 0
            and 0 <= inst.mark_basis_cap_ppm < PPM
            and 0 <= inst.liquidation_fee_ppm < PPM and inst.funding_interval_s > 0
            and 0 <= inst.funding_clamp_e8 and 0 <= inst.funding_cap_e8 < 10**8
            and inst.impact_notional > 0
            and all(0 < lv < PPM for lv in inst.margin_call_levels)
            and self.call_levels.get(inst.settlement_asset,
                                     tuple(sorted(inst.margin_call_levels)))
            == tuple(sorted(inst.margin_call_levels))
        )
        return None if ok else R.INVALID_INSTRUMENT

    # -- lookups ----------------------------------------------------------------------------

    def account(self, account: str, asset: str) -> RiskAccount:
        """The account's record in ``asset`` (created empty)."""
        key = (account, asset)
        a = self.accounts.get(key)
        if a is None:
            a = self.accounts[key] = RiskAccount(account, asset)
        return a

    def position(self, account: str, symbol: str) -> RiskPosition:
        """The account's position record in a margined instrument (created flat)."""
        key = (account, symbol)
        p = self.positions.get(key)
        if p is None:
            ir = self.instruments[symbol]
            a = self.account(account, ir.asset)
            p = self.positions[key] = RiskPosition(
                account, symbol, ir.asset, ir.instrument.leverage_default(), a)
            a.positions[symbol] = p
        return p

    def mark_of(self, symbol: str) -> int:
        """The mark price in ticks; before the first mark, the configured reference price
        (what a read model following the events also assumes)."""
        ms = self.marks.get(symbol)
        if ms is not None and ms.mark:
            return ms.mark
        return self.eng.markets[symbol].instrument.reference_price

    def value(self, a: RiskAccount) -> RiskAccount:
        """Bring the account's cross valuation up to date (at the current marks)."""
        if a.gen == self.gen:
            return a
        upnl = im = mm = 0
        cross = MarginMode.CROSS
        for sym, p in a.positions.items():
            size = p.size
            if size and p.mode is cross:
                ir = self.instruments[sym]
                mark = self.mark_of(sym)
                v = ir.v
                notional = (size if size > 0 else -size) * mark * v
                upnl += (size * mark - p.entry_cost if size > 0
                         else p.entry_cost + size * mark) * v
                im += -(-notional // p.leverage)
                mm += ir.maintenance(notional)
        a.upnl, a.im, a.mm, a.gen = upnl, im, mm, self.gen
        return a

    def available(self, a: RiskAccount) -> int:
        """Balance free for new orders: balance - isolated margin - order margin + cross
        unrealised PnL - cross position initial margin."""
        self.value(a)
        return a.balance - a.iso_total - a.om_total + a.upnl - a.im

    def withdrawable(self, a: RiskAccount) -> int:
        """Like :meth:`available` but unrealised profit does not count."""
        self.value(a)
        return a.balance - a.iso_total - a.om_total + min(a.upnl, 0) - a.im

    def view(self, account: str, asset: str) -> tuple[AccountView, list[PositionView]]:
        """The account's collateral and position views at the current marks (live engine
        state: for tests and benchmarks; servers read :class:`RiskReadModel`)."""
        a = self.accounts.get((account, asset)) or RiskAccount(account, asset)
        params = {s: InstrumentParams(ir.v, ir.tiers, ir.asset)
                  for s, ir in self.instruments.items()}
        marks = {s: self.mark_of(s) for s in a.positions}
        rows = [a.positions[s] for s in sorted(a.positions)
                if shown(a.positions[s], self.instruments[s].instrument.leverage_default())]
        return value_positions(account, asset, a.balance, a.iso_total, a.om_total, rows,
                               params, marks)

    # -- the pre-trade check ----------------------------------------------------------------

    def check_order(
        self, ev: list, account: str, symbol: str, side: Side, price: int, qty: int,
        old: list | None = None, can_fill: bool = True,
    ) -> tuple[int, int]:
        """(reject reason or 0, shortfall) for an order of ``qty`` lots at ``price`` ticks
        (a market order's band limit) on top of the account's orders, replacing held order
        ``old`` (a replace) if given."""
        if ev is not self._ev or self._cursor != len(ev):
            self.sync(ev)
        ir = self.instruments[symbol]
        p = self.positions.get((account, symbol))
        if p is None:
            size = bq = bc = sq = sc = old_om = 0
            lev = ir.instrument.leverage_default()
        else:
            size, bq, bc, sq, sc = p.size, p.buy_qty, p.buy_cost, p.sell_qty, p.sell_cost
            old_om, lev = p.om, p.leverage
        if old is not None:
            if old[3]:
                bq -= old[0]
                bc -= old[0] * old[1]
            else:
                sq -= old[0]
                sc -= old[0] * old[1]
        is_buy = side is BUY
        base = (bq, bc, sq, sc)  # the account's other orders
        if is_buy:
            bq += qty
            bc += qty * price
        else:
            sq += qty
            sc += qty * price
        v = ir.v
        mark = self.mark_of(symbol)
        long_cost, short_cost = mg.side_costs(size, bq, bc, sq, sc)
        worst = (size * mark + long_cost if is_buy and size >= 0 else
                 -size * mark + short_cost if not is_buy and size <= 0 else
                 (long_cost if is_buy else short_cost)) * v
        cap = ir.caps.get(lev)
        if cap is None:
            cap = mg.max_notional(ir.tiers, lev)
        if worst > cap:
            return R.RISK_LIMIT_EXCEEDED, 0
        # resting: the order margin it adds, plus the loss it is born with (Binance)
        loss = mg.open_loss(is_buy, price, mark, qty, v)
        need = mg.order_margin(size, bq, bc, sq, sc, v, lev, ir.taker_ppm) - old_om
        if need <= 0 and not loss:
            return 0, 0
        need = max(need, 0) + loss
        # filled at once at its price: what the position, its margin and the fee take
        if can_fill:
            need = max(need, self._fill_need(ir, p, is_buy, price, qty, size, base, lev, mark,
                                             old_om))
        if need <= 0:
            return 0, 0
        a = self.accounts.get((account, ir.asset))
        avail = self.available(a) if a is not None else 0
        if avail < need:
            return R.INSUFFICIENT_MARGIN, need - avail
        return 0, 0

    def _fill_need(self, ir: InstrumentRisk, p: RiskPosition | None, is_buy: bool,
                   price: int, qty: int, size: int, base: tuple, lev: int, mark: int,
                   old_om: int) -> int:
        """How much available balance an order takes if it fills entirely at ``price``
        now (the other orders still resting): for cross margin the change of equity at
        mark, position initial margin and order margin; for isolated the margin it
        allocates, the loss it realises and the fee."""
        v = ir.v
        signed = qty if is_buy else -qty
        new_size = size + signed
        fee = mg.fee_minor_units(price * qty * ir.instrument.multiplier * ir.taker_ppm,
                                 ir.unit) if ir.taker_ppm > 0 else 0
        om = mg.order_margin(new_size, base[0], base[1], base[2], base[3], v, lev, ir.taker_ppm)
        if p is None or p.mode is MarginMode.CROSS:
            equity = (mark - price) * signed * v - fee
            im = (mg.initial_margin(abs(new_size) * mark * v, lev)
                  - mg.initial_margin(abs(size) * mark * v, lev))
            return im + om - old_om - equity
        entry, iso = p.entry_cost, p.iso
        realised = 0
        if size == 0 or (size > 0) == is_buy:
            iso_after = iso + mg.initial_margin(price * qty * v, lev)
        else:
            open_lots = abs(size)
            closed = min(qty, open_lots)
            closed_cost = entry * closed // open_lots
            realised = ((price * closed - closed_cost) if size > 0
                        else (closed_cost - price * closed)) * v
            iso_after = iso - (iso if closed == open_lots else iso * closed // open_lots)
            if qty > open_lots:
                iso_after += mg.initial_margin(price * (qty - open_lots) * v, lev)
        return (iso_after - iso) - realised + fee + om - old_om

    def margin_price(self, symbol: str, side: Side, price: int) -> int:
        """The price an order's margin is computed at: its limit, or for a market order the
        price-band edge it may trade to."""
        if price:
            return price
        lo, hi = self.eng.markets[symbol].band()
        return hi if side is BUY else lo

    # -- following the matcher's events -----------------------------------------------------

    def sync(self, ev: list) -> None:
        """Apply the command's events not applied yet."""
        if ev is not self._ev:
            self._ev = ev
            self._cursor = 0
        i = self._cursor
        handlers = _HANDLERS
        instruments = self.instruments
        while i < len(ev):
            e = ev[i]
            i += 1
            h = handlers.get(type(e))
            if h is not None and e.symbol in instruments:
                h(self, e, ev)
        self._cursor = i

    def _hold(self, e: Any) -> None:
        if e.ord_type in _STOP_TYPES and type(e) is OrderAccepted:
            return  # an untriggered stop holds no margin until it triggers
        if not e.leaves:
            return
        p = self.positions.get((e.account, e.symbol)) or self.position(e.account, e.symbol)
        price = e.price or self.margin_price(e.symbol, e.side, 0)
        is_buy = e.side is BUY
        self.held[e.order_id] = [e.leaves, price, p, is_buy]
        if is_buy:
            p.buy_qty += e.leaves
            p.buy_cost += e.leaves * price
        else:
            p.sell_qty += e.leaves
            p.sell_cost += e.leaves * price
        self._reprice(p)

    def _set_leaves(self, oid: int, leaves: int, price: int | None = None) -> None:
        h = self.held.get(oid)
        if h is None:
            return
        old_leaves, old_price, p, is_buy = h
        new_price = old_price if price is None or not price else price
        if is_buy:
            p.buy_qty += leaves - old_leaves
            p.buy_cost += leaves * new_price - old_leaves * old_price
        else:
            p.sell_qty += leaves - old_leaves
            p.sell_cost += leaves * new_price - old_leaves * old_price
        if leaves:
            h[0], h[1] = leaves, new_price
        else:
            del self.held[oid]
        self._reprice(p)

    def _on_accepted(self, e: Any, ev: list) -> None:
        self._hold(e)

    def _on_ended(self, e: Any, ev: list) -> None:
        self._set_leaves(e.order_id, 0)

    def _on_replaced(self, e: Any, ev: list) -> None:
        self._set_leaves(e.order_id, e.leaves, e.price)

    def _on_restated(self, e: Any, ev: list) -> None:
        self._set_leaves(e.order_id, e.leaves)

    def _on_trade(self, e: Any, ev: list) -> None:
        h = self.held.get(e.maker_order_id)
        if h is not None:
            self._set_leaves(e.maker_order_id, h[0] - e.qty)
        h = self.held.get(e.taker_order_id)
        if h is not None:
            self._set_leaves(e.taker_order_id, h[0] - e.qty)
        ir = self.instruments[e.symbol]
        taker_buy = e.aggressor_side is BUY
        self.fill(ir, e.maker_account, not taker_buy, e, e.maker_fee, ev)
        self.fill(ir, e.taker_account, taker_buy, e, e.taker_fee, ev)

    def fill(self, ir: InstrumentRisk, account: str, is_buy: bool, e: Any, fee_units: int,
              ev: list) -> None:
        p = self.positions.get((account, e.symbol)) or self.position(account, e.symbol)
        a = p.owner
        qty, price, v = e.qty, e.price, ir.v
        size = p.size
        signed = qty if is_buy else -qty
        pnl = 0
        if size == 0 or (size > 0) == is_buy:
            p.size = size + signed
            p.entry_cost += price * qty
            if p.mode is MarginMode.ISOLATED:
                self._move_iso(p, a, mg.initial_margin(price * qty * v, p.leverage))
        else:
            open_lots = abs(size)
            closed = qty if qty < open_lots else open_lots
            closed_cost = p.entry_cost * closed // open_lots
            pnl = ((price * closed - closed_cost) if size > 0
                   else (closed_cost - price * closed)) * v
            p.entry_cost -= closed_cost
            p.size = size + signed
            if p.mode is MarginMode.ISOLATED:
                release = p.iso if closed == open_lots else p.iso * closed // open_lots
                self._move_iso(p, a, -release)
            if qty > open_lots:
                p.entry_cost = price * (qty - open_lots)
                if p.mode is MarginMode.ISOLATED:
                    self._move_iso(p, a, mg.initial_margin(p.entry_cost * v, p.leverage))
        ref = str(e.exec_id)
        if pnl:
            p.realised += pnl
            a.balance += pnl
            ev.append(BalanceChanged(e.seq, e.ts, account, ir.asset, pnl, a.balance,
                                     LedgerCause.REALISED_PNL, e.symbol, ref))
        fee = mg.fee_minor_units(fee_units, ir.unit) if fee_units else 0
        if fee:
            p.fees += fee
            a.balance -= fee
            self.fee_pool[ir.asset] = self.fee_pool.get(ir.asset, 0) + fee
            ev.append(BalanceChanged(e.seq, e.ts, account, ir.asset, -fee, a.balance,
                                     LedgerCause.FEE, e.symbol, ref))
        p.last_exec_id = e.exec_id
        self._reprice(p)
        a.gen = -1
        self._touched_positions[p.key] = p
        holders = self.holders[e.symbol]
        if p.size:
            holders[account] = p
        else:
            holders.pop(account, None)

    def credit(self, a: RiskAccount, amount: int, cause: LedgerCause, symbol: str, ref: str,
               seq: int, ts: int, ev: list) -> None:
        """One ledger entry: change ``a``'s balance by ``amount`` (negative: debit). A debit
        the account's armed reserve does not cover re-arms it at the end of the command; so
        does a credit to an account past a warning level (the level it may recover below must
        be noticed now, so that crossed levels stay a function of the state: a replay from a
        snapshot re-arms everything and must reach the same levels)."""
        a.balance += amount
        a.gen = -1
        ev.append(BalanceChanged(seq, ts, a.account, a.asset, amount, a.balance, cause, symbol,
                                 ref))
        self._touched_accounts[a.key] = a
        if amount < 0:
            if not self.monitor.absorb(a, -amount):
                self._rearm[a.key] = a
        elif self.monitor.has_crossed(a):
            self._rearm[a.key] = a
        # else: a credit to an account past no warning level changes no level and leaves
        # its armed prices conservative (funding credits half the holders at once)

    def _move_iso(self, p: RiskPosition, a: RiskAccount, amount: int) -> None:
        p.iso += amount
        a.iso_total += amount

    def _reprice(self, p: RiskPosition) -> None:
        ir = self.instruments[p.symbol]
        om = mg.order_margin(p.size, p.buy_qty, p.buy_cost, p.sell_qty, p.sell_cost, ir.v,
                             p.leverage, ir.taker_ppm)
        a = p.owner
        if om != p.om:
            a.om_total += om - p.om
            p.om = om
        self._touched_accounts[a.key] = a

    # -- end of command ---------------------------------------------------------------------

    def finish(self, command: Any, ev: list) -> None:
        """Sync the command's last events, re-arm and report what it touched."""
        self.sync(ev)
        if not self._touched_accounts and not self._touched_positions:
            self._ev = None
            return
        seq = command.seq
        ts = command.ts
        touched_p = self._touched_positions
        touched_a = self._touched_accounts
        rearm = self._rearm
        for p in touched_p.values():
            a = p.owner
            touched_a.setdefault(a.key, a)
            rearm[a.key] = a
        for a in self._rearm.values():
            self.arm(a, seq, ts, ev)
        self._rearm = {}
        append = ev.append
        for a in touched_a.values():
            append(_tn(AccountChanged, (seq, ts, a.account, a.asset, a.balance, a.iso_total,
                                        a.om_total)))
        for p in touched_p.values():
            append(_tn(PositionChanged, (seq, ts, p.account, p.symbol, p.size, p.entry_cost,
                                         p.realised, p.fees, p.leverage, p.mode, p.iso,
                                         p.last_exec_id)))
        self._touched_accounts = {}
        self._touched_positions = {}
        self._ev = None

    def touch(self, a: RiskAccount, p: RiskPosition | None = None) -> None:
        """Report ``a`` (and ``p``) at the end of this command and re-arm its thresholds."""
        self._touched_accounts[(a.account, a.asset)] = a
        self._rearm[(a.account, a.asset)] = a
        if p is not None:
            self._touched_positions[(p.account, p.symbol)] = p

    # -- margin monitoring -----------------------------------------------------------------

    def arm(self, a: RiskAccount, seq: int, ts: int, ev: list) -> None:
        """Re-arm an account's margin thresholds (see engine.risk.monitor)."""
        self.monitor.arm(self, a, seq, ts, ev)

    # -- marks ------------------------------------------------------------------------------

    def on_tick(self, ts: int, seq: int, ev: list) -> None:
        """The tick's risk work: marks that are due (with premium samples and the threshold
        checks), funding at its instants, then liquidation of every owner found under
        maintenance margin."""
        for sym, ms in self.marks.items():
            ir = self.instruments.get(sym)
            inst = ir.instrument if ir is not None else self.eng.markets[sym].instrument
            if ms.last_ts and ts - ms.last_ts < inst.mark_interval_ms * MS:
                continue
            if ir is None and not ms.index:
                continue
            ms.last_ts = ts
            fs = None
            if ir is not None:
                fs = self.funding.get(sym)
                if fs is None:
                    fs = self.funding[sym] = fu.FundingState()
                if not fs.next_ts:
                    fs.next_ts = fu.next_instant(ts, inst.funding_interval_s)
                fu.sample(fs, self.eng.markets[sym].book, ms.index, ir.v,
                          inst.impact_notional, ts)
            mark = self._compute_mark(sym, inst, ms)
            rate = fu.rate_e8(fs, inst) if fs is not None else 0
            next_ts = fs.next_ts if fs is not None else 0
            moved = bool(mark) and mark != ms.mark
            if moved or (ms.mark and (rate != ms.rate or next_ts != ms.next_ts)):
                # a new mark, or a new funding prediction at the same mark
                if moved:
                    ms.mark = mark
                    self.eng.markets[sym].mark_price = mark
                    self.gen += 1
                ms.rate, ms.next_ts = rate, next_ts
                ev.append(MarkPriceUpdated(seq, ts, sym, ms.index, ms.mark, rate, next_ts))
                if moved and ir is not None:
                    self.monitor.fire(self, sym, mark, seq, ts, ev)
        for sym, fs in self.funding.items():
            if fs.next_ts and ts >= fs.next_ts:
                fu.apply_funding(self, sym, fs, ts, seq, ev)
                self._rearm_now(seq, ts, ev)
                ms = self.marks[sym]
                if ms.mark:  # publish the new interval's prediction and instant at once
                    ms.rate = fu.rate_e8(fs, self.instruments[sym].instrument)
                    ms.next_ts = fs.next_ts
                    ev.append(MarkPriceUpdated(seq, ts, sym, ms.index, ms.mark, ms.rate,
                                               ms.next_ts))
        if self.monitor.pending:
            lq.liquidate_pending(self, self.eng, seq, ts, ev)

    def _rearm_now(self, seq: int, ts: int, ev: list) -> None:
        for a in self._rearm.values():
            self.arm(a, seq, ts, ev)
        self._rearm = {}

    def _compute_mark(self, sym: str, inst: Instrument, ms: MarkState) -> int:
        m = self.eng.markets[sym]
        bb, ba = m.book.best_bid, m.book.best_ask
        two_sided = bool(bb) and ba < (1 << 62)
        index = ms.index
        if not index:
            return m.last_price or ((bb + ba) // 2 if two_sided else inst.reference_price)
        cap = index * inst.mark_basis_cap_ppm // PPM
        if two_sided:
            basis = (bb + ba) // 2 - index
            basis = cap if basis > cap else -cap if basis < -cap else basis
            # rounded away from zero, so the average reaches a steady basis exactly
            delta, n = basis - ms.ema, inst.mark_smoothing
            ms.ema += (delta + n - 1) // n if delta > 0 else -((n - 1 - delta) // n)
        ema = cap if ms.ema > cap else -cap if ms.ema < -cap else ms.ema
        return index + ema

    # -- commands ---------------------------------------------------------------------------

    def reject(self, c: Any, kind: RequestKind, reason: RejectReason, ev: list,
               shortfall: int = 0) -> None:
        """Answer a risk request with RequestRejected."""
        eng = self.eng
        eng.exec_id += 1
        ev.append(RequestRejected(c.seq, c.ts, eng.exec_id, kind, 0,
                                  getattr(c, "request_id", "") or getattr(c, "ref", ""),
                                  getattr(c, "account", "") or "", reason, shortfall))

    def deposit(self, c: Any, ev: list) -> None:
        """Credit an account (Deposit)."""
        if c.asset not in self.assets:
            return self.reject(c, RequestKind.DEPOSIT, R.UNKNOWN_ASSET, ev)
        if not _positive_int(c.amount) or not c.account:
            return self.reject(c, RequestKind.DEPOSIT, R.INVALID_AMOUNT, ev)
        a = self.account(c.account, c.asset)
        a.balance += c.amount
        self.deposited[c.asset] = self.deposited.get(c.asset, 0) + c.amount
        self.active = True
        ev.append(BalanceChanged(c.seq, c.ts, c.account, c.asset, c.amount, a.balance,
                                 LedgerCause.DEPOSIT, "", c.ref))
        self.touch(a)

    def withdraw(self, c: Any, ev: list) -> None:
        """Debit an account unless that leaves it under its margin requirement (Withdraw)."""
        if c.asset not in self.assets:
            return self.reject(c, RequestKind.WITHDRAW, R.UNKNOWN_ASSET, ev)
        if not _positive_int(c.amount):
            return self.reject(c, RequestKind.WITHDRAW, R.INVALID_AMOUNT, ev)
        a = self.accounts.get((c.account, c.asset))
        free = self.withdrawable(a) if a is not None else 0
        if c.amount > free:
            return self.reject(c, RequestKind.WITHDRAW, R.INSUFFICIENT_MARGIN, ev,
                               c.amount - max(free, 0))
        assert a is not None
        a.balance -= c.amount
        self.withdrawn[c.asset] = self.withdrawn.get(c.asset, 0) + c.amount
        ev.append(BalanceChanged(c.seq, c.ts, c.account, c.asset, -c.amount, a.balance,
                                 LedgerCause.WITHDRAWAL, "", c.ref))
        self.touch(a)

    def _settings(self, c: Any, kind: RequestKind, p: RiskPosition, ev: list) -> None:
        ev.append(RiskSettingsChanged(c.seq, c.ts, kind, p.account, p.symbol, p.leverage,
                                      p.mode, p.iso, c.request_id))
        a = p.owner
        a.gen = -1
        self.touch(a, p)

    def set_leverage(self, c: Any, ev: list) -> None:
        """Change an account's leverage in an instrument (SetLeverage)."""
        ir = self.instruments.get(c.symbol)
        if ir is None:
            return self.reject(c, RequestKind.LEVERAGE, R.NOT_MARGINED, ev)
        lev = c.leverage
        if not _positive_int(lev) or lev > ir.instrument.max_leverage:
            return self.reject(c, RequestKind.LEVERAGE, R.INVALID_LEVERAGE, ev)
        p = self.position(c.account, c.symbol)
        a = self.account(c.account, ir.asset)
        mark = self.mark_of(c.symbol)
        long_cost, short_cost = mg.side_costs(p.size, p.buy_qty, p.buy_cost, p.sell_qty,
                                              p.sell_cost)
        worst = max(max(p.size, 0) * mark + long_cost, max(-p.size, 0) * mark + short_cost)
        if worst * ir.v > mg.max_notional(ir.tiers, lev):
            return self.reject(c, RequestKind.LEVERAGE, R.RISK_LIMIT_EXCEEDED, ev)
        new_om = mg.order_margin(p.size, p.buy_qty, p.buy_cost, p.sell_qty, p.sell_cost, ir.v,
                                 lev, ir.taker_ppm)
        notional = abs(p.size) * mark * ir.v
        if p.mode is MarginMode.ISOLATED:
            transfer = max(0, mg.initial_margin(notional, lev) - p.iso) if p.size else 0
            need = transfer + new_om - p.om
        else:
            transfer = 0
            need = (mg.initial_margin(notional, lev) - mg.initial_margin(notional, p.leverage)
                    + new_om - p.om)
        if need > 0:
            avail = self.available(a)
            if avail < need:
                return self.reject(c, RequestKind.LEVERAGE, R.INSUFFICIENT_MARGIN, ev,
                                   need - avail)
        p.leverage = lev
        if transfer:
            self._move_iso(p, a, transfer)
        self._reprice(p)
        self._settings(c, RequestKind.LEVERAGE, p, ev)

    def set_margin_mode(self, c: Any, ev: list) -> None:
        """Switch cross/isolated while the account has nothing open there (SetMarginMode)."""
        ir = self.instruments.get(c.symbol)
        if ir is None:
            return self.reject(c, RequestKind.MARGIN_MODE, R.NOT_MARGINED, ev)
        try:
            mode = MarginMode(c.mode)
        except ValueError:
            return self.reject(c, RequestKind.MARGIN_MODE, R.INVALID_MARGIN_MODE, ev)
        p = self.position(c.account, c.symbol)
        if mode is not p.mode and (not p.idle() or self._has_pending(c.account, c.symbol)):
            return self.reject(c, RequestKind.MARGIN_MODE, R.MARGIN_MODE_CHANGE_UNSAFE, ev)
        p.mode = mode
        self._settings(c, RequestKind.MARGIN_MODE, p, ev)

    def _has_pending(self, account: str, symbol: str) -> bool:
        # Untriggered stops hold no margin but would open a position under the new mode
        # (rare: a scan over the instrument's trigger index, only on a mode change).
        m = self.eng.markets[symbol]
        orders = self.eng.orders
        return any(orders[oid].account == account
                   for lst in m.trigger_lists() for _p, oid in lst)

    def adjust_isolated(self, c: Any, ev: list) -> None:
        """Add margin to or remove it from an open isolated position."""
        ir = self.instruments.get(c.symbol)
        if ir is None:
            return self.reject(c, RequestKind.ISOLATED_MARGIN, R.NOT_MARGINED, ev)
        p = self.positions.get((c.account, c.symbol))
        if p is None or not p.size or p.mode is not MarginMode.ISOLATED:
            return self.reject(c, RequestKind.ISOLATED_MARGIN, R.NO_ISOLATED_POSITION, ev)
        amount = c.amount
        if not isinstance(amount, int) or isinstance(amount, bool) or not amount:
            return self.reject(c, RequestKind.ISOLATED_MARGIN, R.INVALID_AMOUNT, ev)
        a = self.accounts[(c.account, ir.asset)]
        if amount > 0:
            avail = self.available(a)
            if avail < amount:
                return self.reject(c, RequestKind.ISOLATED_MARGIN, R.INSUFFICIENT_MARGIN, ev,
                                   amount - max(avail, 0))
        else:
            r = mg.position_risk(p.size, p.entry_cost, self.mark_of(c.symbol), ir.v,
                                 p.leverage, ir.tiers)
            removable = p.iso + min(r.unrealised_pnl, 0) - r.initial_margin
            if -amount > removable:
                return self.reject(c, RequestKind.ISOLATED_MARGIN, R.INSUFFICIENT_MARGIN, ev,
                                   -amount - max(removable, 0))
        self._move_iso(p, a, amount)
        self._settings(c, RequestKind.ISOLATED_MARGIN, p, ev)

    def set_index(self, c: Any, ev: list) -> None:
        """Record an index price (SetIndexPrice); the mark follows at the next due tick."""
        if c.symbol not in self.eng.markets:
            return self.reject(c, RequestKind.INDEX_PRICE, R.UNKNOWN_SYMBOL, ev)
        if not _positive_int(c.price):
            return self.reject(c, RequestKind.INDEX_PRICE, R.INVALID_INDEX_PRICE, ev)
        ms = self.marks.get(c.symbol)
        if ms is None:
            ms = self.marks[c.symbol] = MarkState()
        ms.index = c.price
        ms.index_ts = c.ts
        ev.append(IndexPriceUpdated(c.seq, c.ts, c.symbol, c.price))

    def state_events(self) -> list:
        """The risk state as the events that sum it up (seq 0): every account's
        AccountChanged, every position's PositionChanged and every known mark, in a fixed
        order. Feeding them to a :class:`~engine.risk.readmodel.RiskReadModel` brings it to
        this book (servers do it at start-up with the recovered engine)."""
        out: list = []
        for (account, asset), a in sorted(self.accounts.items()):
            out.append(AccountChanged(0, 0, account, asset, a.balance, a.iso_total, a.om_total))
        for _key, p in sorted(self.positions.items()):
            out.append(PositionChanged(0, 0, p.account, p.symbol, p.size, p.entry_cost,
                                       p.realised, p.fees, p.leverage, p.mode, p.iso,
                                       p.last_exec_id))
        for symbol, ms in sorted(self.marks.items()):
            if ms.mark:
                fs = self.funding.get(symbol)
                inst = self.eng.markets[symbol].instrument
                rate = fu.rate_e8(fs, inst) if fs is not None else 0
                out.append(MarkPriceUpdated(0, 0, symbol, ms.index, ms.mark, rate,
                                            fs.next_ts if fs is not None else 0))
        return out

    # -- snapshots --------------------------------------------------------------------------

    def to_state(self) -> dict | None:
        """Plain data for snapshots and the state hash (None when there is no risk state)."""
        if not (self.accounts or self.marks):
            return None
        return {
            "accounts": sorted([a.account, a.asset, a.balance]
                               for a in self.accounts.values()),
            # a record with working orders, or one a view would show; the rest is defaults
            "positions": sorted(p.as_row() for p in self.positions.values()
                                if not p.idle() or shown(
                                    p, self.instruments[p.symbol].instrument
                                    .leverage_default())),
            "marks": sorted([s, *ms.as_row()] for s, ms in self.marks.items()),
            "monitor": self.monitor.to_state(),
            "funding": sorted([sym, *fs.as_row()] for sym, fs in self.funding.items()),
            "liquidations": self.liquidations,
            "fee_pool": sorted(self.fee_pool.items()),
            "deposited": sorted(self.deposited.items()),
            "withdrawn": sorted(self.withdrawn.items()),
            "gen": self.gen,
        }

    def load_state(self, st: dict) -> None:
        """Inverse of :meth:`to_state`, after the engine's orders are restored."""
        for account, asset, balance in st["accounts"]:
            self.account(account, asset).balance = balance
        for (account, symbol, asset, size, entry, realised, fees, lev, mode, iso,
             last) in st["positions"]:
            p = self.position(account, symbol)
            p.size, p.entry_cost, p.realised, p.fees = size, entry, realised, fees
            p.leverage, p.mode, p.iso, p.last_exec_id = lev, MarginMode(mode), iso, last
            if size:
                self.holders[symbol][account] = p
            self.accounts[(account, asset)].iso_total += iso
        for row in st["marks"]:
            sym, index, index_ts, ema, mark, last_ts = row[:6]
            ms = self.marks.setdefault(sym, MarkState())
            ms.index, ms.index_ts, ms.ema, ms.mark, ms.last_ts = index, index_ts, ema, mark, last_ts
            if len(row) > 6:
                ms.rate, ms.next_ts = row[6], row[7]
            if mark:
                self.eng.markets[sym].mark_price = mark
        self.monitor.load_state(st["monitor"])
        for sym, acc, span, last_ts, next_ts in st.get("funding", []):
            fs = self.funding[sym] = fu.FundingState()
            fs.acc, fs.span, fs.last_ts, fs.next_ts = acc, span, last_ts, next_ts
        self.liquidations = st.get("liquidations", 0)
        self.fee_pool = dict(st["fee_pool"])
        self.deposited = dict(st["deposited"])
        self.withdrawn = dict(st["withdrawn"])
        self.gen = st["gen"]
        self.active = True
        ev: list = []
        for o in sorted(self.eng.orders.values(), key=lambda o: o.id):
            if o.symbol in self.instruments and not o.spec.pending and o.leaves:
                self._hold(_HeldOrder(o))
        for a in self.accounts.values():
            if any(p.size for p in a.positions.values()):
                self.arm(a, 0, 0, ev)
        self._touched_accounts = {}
        self._touched_positions = {}


class _HeldOrder:
    """Adapts a live Order to the fields :meth:`RiskBook._hold` reads from an event."""

    __slots__ = ("account", "leaves", "ord_type", "order_id", "price", "side", "symbol")

    def __init__(self, o: Any) -> None:
        self.order_id, self.account, self.symbol = o.id, o.account, o.symbol
        self.side, self.price, self.leaves = o.side, o.price, o.leaves
        self.ord_type = OrdType.LIMIT


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


_HANDLERS: dict[type, Any] = {
    OrderAccepted: RiskBook._on_accepted,
    OrderTriggered: RiskBook._on_accepted,
    OrderCanceled: RiskBook._on_ended,
    OrderExpired: RiskBook._on_ended,
    OrderReplaced: RiskBook._on_replaced,
    OrderRestated: RiskBook._on_restated,
    Trade: RiskBook._on_trade,
}
