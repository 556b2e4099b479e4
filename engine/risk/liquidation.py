"""Liquidation, the insurance fund and auto-deleveraging, inside the tick (spec/risk.md).

Theory of operation
-------------------
The margin monitor queues every owner (a cross account in one asset, or an isolated
position) whose equity fell below its maintenance margin. At the end of the tick's mark and
funding work, :func:`liquidate_pending` takes them in owner order:

1. Cancel the owner's live orders (cross: every instrument it trades in cross margin;
   isolated: that instrument), reason LIQUIDATION; untriggered stops included.
2. While the owner is still under maintenance margin, close its riskiest position (largest
   maintenance margin) one step: down to the cap of the next lower risk-limit tier, or
   entirely from the first tier. A step is an IOC reduce-only order through the book at
   the *bankruptcy price* (where the owner's equity would be zero, other positions held at
   mark), so no fill is worse than it.
3. What the book did not take is taken over by the insurance fund at the bankruptcy price,
   if the fund's equity stays non-negative with it; otherwise it is auto-deleveraged: the
   opposite positions, ranked by PnL ratio times effective leverage (losers by PnL ratio
   divided by it; ties by account id), are reduced at the bankruptcy price. ADL never
   happens while the fund can cover.
4. A liquidation fee (``liquidation_fee_ppm`` of the closed notional) goes to the fund,
   capped at what is left of the owner's equity; a balance left negative is brought back to
   zero by the fund (ledger cause INSURANCE on both sides).

The insurance fund is an account (:data:`INSURANCE`) in each settlement asset: its balance
is the fund, its ledger the fund's ledger, and positions it takes over stay with it.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from engine.enums import (
    CancelReason,
    InstrumentStatus,
    LedgerCause,
    MarginMode,
    Side,
    TransferKind,
)
from engine.events import Liquidated, OrderAccepted, PositionTransferred
from engine.order import Order
from engine.risk import margin as mg
from engine.risk.accounts import INSURANCE

LIQ_ID_BASE = 1 << 60  # liquidation order ids: far above any command seq
_MAX_STEPS = 64


def bankruptcy_price(size: int, entry_cost: int, v: int, collateral: int) -> int:
    """The mark (ticks) at which ``collateral`` + the position's PnL is zero, rounded so a
    fill at it leaves the owner no worse than zero (long up, short down); at least 1."""
    s = abs(size)
    if size > 0:
        return max(1, mg.ceil_div(entry_cost * v - collateral, s * v))
    return max(1, (entry_cost * v + collateral) // (s * v))


def liquidate_pending(book: Any, eng: Any, seq: int, ts: int, ev: list) -> None:
    """Liquidate every queued owner (see module docstring)."""
    pending = book.monitor.pending
    if not pending:
        return
    owners = sorted(pending)
    accounts = {(o[0], o[1]) for o in owners}
    # the queued owners' live orders, found in one pass over the held orders and stops
    orders: dict[tuple, list] = {}
    for oid, h in book.held.items():
        p = h[2]
        if (p.account, p.asset) in accounts:
            orders.setdefault((p.account, p.symbol), []).append(oid)
    for sym in book.instruments:
        for lst in eng.markets[sym].trigger_lists():
            for _price, oid in lst:
                o = eng.orders[oid]
                if (o.account, book.instruments[sym].asset) in accounts:
                    orders.setdefault((o.account, sym), []).append(oid)
    for owner in owners:
        if owner in pending:
            _liquidate(book, eng, owner, orders, seq, ts, ev)


def _owner_state(book: Any, owner: tuple) -> tuple[int, int]:
    """(equity, maintenance margin) of an owner at the current marks."""
    account, asset, symbol = owner
    a = book.accounts[(account, asset)]
    if not symbol:
        book.value(a)
        return a.balance - a.iso_total + a.upnl, a.mm
    p = a.positions[symbol]
    ir = book.instruments[symbol]
    r = mg.position_risk(p.size, p.entry_cost, book.mark_of(symbol), ir.v, p.leverage,
                         ir.tiers)
    return p.iso + r.unrealised_pnl, r.maintenance_margin


def _liquidate(book: Any, eng: Any, owner: tuple, orders: dict, seq: int, ts: int,
               ev: list) -> None:
    account, asset, symbol = owner
    book.monitor.pending.pop(owner, None)
    a = book.accounts[(account, asset)]
    if symbol:
        scope = [symbol]
    else:
        scope = sorted(s for s, p in a.positions.items() if p.mode is MarginMode.CROSS)
    for sym in scope:
        for oid in sorted(orders.pop((account, sym), ())):
            o = eng.orders.get(oid)
            if o is not None:
                eng._cancel(eng.markets[sym], o, CancelReason.LIQUIDATION, seq, ts, ev)
    book.sync(ev)
    for _ in range(_MAX_STEPS):
        equity, mm = _owner_state(book, owner)
        if equity >= mm:
            break
        p = _riskiest(book, a, scope)
        if p is None:
            break
        _step(book, eng, owner, a, p, equity, seq, ts, ev)
    if a.balance < 0:  # a loss beyond the collateral: the fund covers it
        fund = book.account(INSURANCE, asset)
        cover = -a.balance
        book.credit(fund, -cover, LedgerCause.INSURANCE, symbol, account, seq, ts, ev)
        book.credit(a, cover, LedgerCause.INSURANCE, symbol, INSURANCE, seq, ts, ev)
    book.touch(a)


def _riskiest(book: Any, a: Any, scope: list) -> Any:
    best = None
    best_mm = -1
    for sym in scope:
        p = a.positions.get(sym)
        if p is None or not p.size:
            continue
        ir = book.instruments[sym]
        mm = ir.maintenance(abs(p.size) * book.mark_of(sym) * ir.v)
        if mm > best_mm:
            best, best_mm = p, mm
    return best


def _step(book: Any, eng: Any, owner: tuple, a: Any, p: Any, equity: int, seq: int, ts: int,
          ev: list) -> None:
    """Close one tier's worth of ``p`` (see module docstring)."""
    sym = p.symbol
    ir = book.instruments[sym]
    v = ir.v
    mark = book.mark_of(sym)
    size = abs(p.size)
    tiers = ir.tiers
    t = mg.tier_index(tiers, size * mark * v)
    target = tiers[t - 1][0] // (mark * v) if t > 0 else 0
    qty = size - target if 0 < size - target <= size else size
    if p.mode is MarginMode.ISOLATED:
        collateral = p.iso
    else:
        collateral = equity - mg.unrealised_pnl(p.size, p.entry_cost, mark, v)
    bk = bankruptcy_price(p.size, p.entry_cost, v, collateral)
    balance_before, iso_before = a.balance, p.iso
    side = Side.SELL if p.size > 0 else Side.BUY
    oid = LIQ_ID_BASE + book.liquidations
    book.liquidations += 1
    o = Order(oid, f"LIQ-{oid - LIQ_ID_BASE}", a.account, sym, side, bk, qty, qty, 0, 0, 0,
              eng.liquidation_spec)
    eng.orders[oid] = o
    ev.append(eng._oev(OrderAccepted, seq, ts, o))
    m = eng.markets[sym]
    if m.status is InstrumentStatus.TRADING or m.status is InstrumentStatus.POST_ONLY:
        eng._execute(m, o, seq, ts, ev, True)
    else:  # a halted or cancel-only book is frozen: the fund or ADL take it all
        eng._cancel(m, o, CancelReason.INSTRUMENT_HALTED, seq, ts, ev)
    eng.orders.pop(oid, None)
    book.sync(ev)
    filled, notional = o.filled, o.notional
    rest = qty - filled
    taken = adl = 0
    fund = book.account(INSURANCE, a.asset)
    if rest:
        book.value(fund)
        gain = (mark - bk) * rest * v if side is Side.SELL else (bk - mark) * rest * v
        if fund.balance - fund.iso_total + fund.upnl + gain >= 0:
            transfer(book, eng, sym, TransferKind.TAKEOVER, a.account, INSURANCE, side, rest,
                     bk, seq, ts, ev)
            taken = rest
        else:
            adl = deleverage(book, eng, sym, a.account, side, rest, bk, seq, ts, ev)
            if adl < rest:  # nobody left to deleverage: the fund takes the rest regardless
                transfer(book, eng, sym, TransferKind.TAKEOVER, a.account, INSURANCE, side,
                         rest - adl, bk, seq, ts, ev)
                taken = rest - adl
    closed = (notional + (taken + adl) * bk) * v
    fee = mg.ceil_div(closed * ir.instrument.liquidation_fee_ppm, mg.PPM)
    if owner[2]:  # isolated: what is left of its margin after the step
        left = (iso_before + a.balance - balance_before
                + mg.unrealised_pnl(p.size, p.entry_cost, mark, v))
    else:
        left = _owner_state(book, owner)[0]
    fee = max(0, min(fee, left))
    if fee:
        book.credit(a, -fee, LedgerCause.LIQUIDATION, sym, o.cl_ord_id, seq, ts, ev)
        book.credit(fund, fee, LedgerCause.LIQUIDATION, sym, a.account, seq, ts, ev)
    ev.append(Liquidated(seq, ts, a.account, a.asset, owner[2] or sym, side, qty, filled,
                         notional, bk, taken, adl, fee, oid))


def transfer(book: Any, eng: Any, sym: str, kind: TransferKind, from_account: str,
             to_account: str, side: Side, qty: int, price: int, seq: int, ts: int,
             ev: list) -> None:
    """Move ``qty`` lots off the book: ``from_account`` trades on ``side``, ``to_account``
    on the other, at ``price``; both positions, ledgers and reduce-only orders follow."""
    eng.exec_id += 1
    e = PositionTransferred(seq, ts, eng.exec_id, sym, kind, from_account, to_account, side,
                            qty, price)
    ev.append(e)
    ir = book.instruments[sym]
    book.fill(ir, from_account, side is Side.BUY, e, 0, ev)
    book.fill(ir, to_account, side is not Side.BUY, e, 0, ev)
    m = eng.markets[sym]
    signed = qty if side is Side.BUY else -qty
    m.positions[from_account] = m.positions.get(from_account, 0) + signed
    m.positions[to_account] = m.positions.get(to_account, 0) - signed
    for acct in (from_account, to_account):
        if acct in m.reduce_only:
            eng._enforce_reduce_only(m, acct, seq, ts, ev)


def adl_ranking(book: Any, sym: str, exclude: str, longs: bool) -> list:
    """Opposite positions in ADL order: highest score first, ties by account id."""
    ir = book.instruments[sym]
    v = ir.v
    mark = book.mark_of(sym)
    ranked = []
    for acct, p in book.holders[sym].items():
        if acct == exclude or acct == INSURANCE or (p.size > 0) != longs:
            continue
        upnl = mg.unrealised_pnl(p.size, p.entry_cost, mark, v)
        if p.mode is MarginMode.ISOLATED:
            equity = p.iso + upnl
        else:
            owner = book.value(p.owner)
            equity = owner.balance - owner.iso_total + owner.upnl
        cost = max(p.entry_cost * v, 1)
        ratio = Fraction(upnl, cost)
        leverage = Fraction(abs(p.size) * mark * v, max(equity, 1))
        score = ratio * leverage if upnl > 0 else ratio / leverage
        ranked.append((-score, acct, p))
    ranked.sort(key=lambda r: (r[0], r[1]))
    return [p for _s, _a, p in ranked]


def deleverage(book: Any, eng: Any, sym: str, account: str, side: Side, qty: int, price: int,
               seq: int, ts: int, ev: list) -> int:
    """Close up to ``qty`` of ``account``'s position against ranked opposite positions at
    ``price``; return how much was closed."""
    done = 0
    for p in adl_ranking(book, sym, account, longs=side is Side.BUY):
        if done == qty:
            break
        q = min(qty - done, abs(p.size))
        transfer(book, eng, sym, TransferKind.ADL, account, p.account, side, q, price, seq,
                 ts, ev)
        done += q
    return done
