"""Funding: premium sampling inside ticks and payments at fixed UTC instants (spec/risk.md).

Theory of operation
-------------------
Every time a margined instrument's mark is due (``mark_interval_ms``, inside ticks), the
premium index is sampled: ``(max(0, impact bid - index) - max(0, index - impact ask)) /
index`` in 1e-8 units, where the impact bid (ask) is the average price of selling (buying)
``impact_notional`` into the book; a side too thin for it contributes nothing. Samples are
time-weighted: each counts for the time since the previous one.

Funding happens in the first tick at or after each multiple of ``funding_interval_s`` since
the epoch (00:00, 08:00, 16:00 UTC by default), with

    rate = premium + clamp(interest - premium, +-clamp), then clamped to +-cap

(Binance's formula). Every open position pays ``notional at mark * rate`` (longs pay shorts
when the rate is positive): the paying side's amounts round up, the receiving side's down,
and the difference goes to the insurance fund, so payments sum to zero exactly. An isolated
position's margin follows its funding (down to zero; beyond that the balance pays).
Positions are charged in account order, so a replay from a snapshot emits the same events.
"""

from __future__ import annotations

from typing import Any

from engine.enums import LedgerCause, MarginMode, Side
from engine.events import FundingApplied, FundingPayment
from engine.risk import margin as mg
from engine.risk.accounts import INSURANCE

E8 = 100_000_000
SECOND = 1_000_000_000


class FundingState:
    """The premium samples of the current funding interval of one instrument."""

    __slots__ = ("acc", "last_ts", "next_ts", "span")

    def __init__(self) -> None:
        self.acc = 0  # sum of premium_e8 * ns
        self.span = 0  # ns covered by samples
        self.last_ts = 0
        self.next_ts = 0

    def as_row(self) -> list:
        """Fields for snapshots."""
        return [self.acc, self.span, self.last_ts, self.next_ts]


def next_instant(ts: int, interval_s: int) -> int:
    """The first funding instant strictly after ``ts`` (ns)."""
    step = interval_s * SECOND
    return (ts // step + 1) * step


def impact_price(book: Any, side: Side, notional: int, v: int) -> int:
    """Average price (ticks, floor) of filling ``notional`` minor units against ``side``
    of the book (bids for an impact bid); 0 if the side is too thin."""
    need = notional
    cost = qty = 0
    for level in book.iter_side(side):
        price = level[0].price
        for o in level:
            if not o.visible:
                continue
            value = price * o.visible * v
            if value >= need:
                take = mg.ceil_div(need, price * v)
                return (cost + price * take) // (qty + take)
            need -= value
            cost += price * o.visible
            qty += o.visible
    return 0


def sample(fs: FundingState, book: Any, index: int, v: int, notional: int, ts: int) -> None:
    """Add one premium sample at ``ts``."""
    if not index:
        return
    bid = impact_price(book, Side.BUY, notional, v)
    ask = impact_price(book, Side.SELL, notional, v)
    premium = 0
    if bid:
        premium += max(0, bid - index)
    if ask:
        premium -= max(0, index - ask)
    premium_e8 = premium * E8 // index if premium >= 0 else -((-premium * E8) // index)
    if fs.last_ts:
        dt = ts - fs.last_ts
        fs.acc += premium_e8 * dt
        fs.span += dt
    fs.last_ts = ts


def rate_e8(fs: FundingState, inst: Any) -> int:
    """The funding rate the samples so far give (1e-8 units)."""
    premium = fs.acc // fs.span if fs.span else 0
    clamp = inst.funding_clamp_e8
    diff = inst.funding_interest_e8 - premium
    rate = premium + (clamp if diff > clamp else -clamp if diff < -clamp else diff)
    cap = inst.funding_cap_e8
    return cap if rate > cap else -cap if rate < -cap else rate


def apply_funding(book: Any, sym: str, fs: FundingState, ts: int, seq: int,
                  ev: list) -> None:
    """Charge every open position of ``sym`` at the current mark (see module docstring)."""
    ir = book.instruments[sym]
    inst = ir.instrument
    rate = rate_e8(fs, inst)
    mark = book.mark_of(sym)
    v = ir.v
    paid = received = count = 0
    holders = book.holders[sym]
    if rate:
        for account in sorted(holders):
            p = holders[account]
            notional = abs(p.size) * mark * v
            pays = (p.size > 0) == (rate > 0)
            if pays:
                amount = -mg.ceil_div(notional * abs(rate), E8)
                paid -= amount
            else:
                amount = notional * abs(rate) // E8
                received += amount
            if not amount:
                continue
            count += 1
            a = p.owner
            if p.mode is MarginMode.ISOLATED:
                move = amount if amount > 0 or p.iso + amount >= 0 else -p.iso
                p.iso += move
                a.iso_total += move
            ev.append(FundingPayment(seq, ts, account, sym, ir.asset, amount, rate, p.size,
                                     mark))
            book.credit(a, amount, LedgerCause.FUNDING, sym, str(seq), seq, ts, ev)
            if p.mode is MarginMode.ISOLATED:
                book.touch(a, p)  # its margin moved
    residual = paid - received
    if residual:
        book.credit(book.account(INSURANCE, ir.asset), residual, LedgerCause.FUNDING, sym,
                    "residual", seq, ts, ev)
    fs.acc = fs.span = 0
    fs.next_ts = next_instant(ts, inst.funding_interval_s)
    ev.append(FundingApplied(seq, ts, sym, ir.asset, rate, mark, paid, received, residual,
                             count, fs.next_ts))
