"""Margin arithmetic: pure integer functions shared by the engine and its readers.

Units (see spec/risk.md): prices are ticks, sizes lots, money is minor units of the
settlement asset. ``v`` is an instrument's value of one tick on one lot in minor units
(:meth:`engine.instruments.Instrument.value_per_tick_lot`), so a notional is
``abs(size) * price * v`` exactly. Rates are parts per million (ppm). Every division
rounds against the account (requirements up, credits down), so the engine never lends.

Risk-limit tiers are ``(cap, mmr_ppm, max_leverage)`` ascending by cap (position notional).
Maintenance margin of notional N in tier t is ``N * mmr_t - cum_t`` (over PPM), where the
cumulative deduction ``cum_t = cum_{t-1} + cap_{t-1} * (mmr_t - mmr_{t-1})`` makes it
continuous at tier boundaries (the "maintenance amount" of Binance's and Bybit's tables).
"""

from __future__ import annotations

from typing import NamedTuple

PPM = 1_000_000


def ceil_div(a: int, b: int) -> int:
    """Ceiling of a / b for b > 0."""
    return -((-a) // b)


def fee_minor_units(fee_units: int, unit_value: int) -> int:
    """A trade fee in engine fee units (see engine.instruments) as minor units: charges
    (positive) round up, rebates (negative) round toward zero."""
    return -((-fee_units * unit_value) // PPM)


def tier_index(tiers: tuple, notional: int) -> int:
    """The tier a position notional falls in (the last tier beyond every cap)."""
    for i, tier in enumerate(tiers):
        if notional <= tier[0]:
            return i
    return len(tiers) - 1


def cumulative_deductions(tiers: tuple) -> tuple:
    """``cum_t`` of each tier in ppm-scaled minor units (see module docstring)."""
    out = [0]
    for i in range(1, len(tiers)):
        out.append(out[-1] + tiers[i - 1][0] * (tiers[i][1] - tiers[i - 1][1]))
    return tuple(out)


def maintenance_margin(tiers: tuple, notional: int) -> int:
    """Maintenance margin of a position notional (minor units, rounded up)."""
    if notional <= 0:
        return 0
    t = tier_index(tiers, notional)
    cum = cumulative_deductions(tiers)[t]
    return ceil_div(notional * tiers[t][1] - cum, PPM)


def max_notional(tiers: tuple, leverage: int) -> int:
    """The largest position notional allowed at ``leverage`` (the cap of the highest tier
    whose maximum leverage is at least it; 0 if none is)."""
    best = 0
    for cap, _mmr, max_lev in tiers:
        if max_lev >= leverage and cap > best:
            best = cap
    return best


def initial_margin(notional: int, leverage: int) -> int:
    """Initial margin of a notional at ``leverage`` (rounded up)."""
    return ceil_div(notional, leverage) if notional > 0 else 0


def unrealised_pnl(size: int, entry_cost: int, mark: int, v: int) -> int:
    """PnL of a position at ``mark``: long (size*mark - cost)*v, short (cost - |size|*mark)*v."""
    if size > 0:
        return (size * mark - entry_cost) * v
    if size < 0:
        return (entry_cost + size * mark) * v
    return 0


def side_costs(
    size: int, buy_qty: int, buy_cost: int, sell_qty: int, sell_cost: int
) -> tuple[int, int]:
    """(long, short) order cost in ticks*lots that would *open* exposure if all orders of
    that side filled: orders on the closing side first offset the position (pro rata of
    their cost, the closing part rounded down so what remains is never understated)."""
    if size > 0 and sell_qty:
        closing = sell_qty if sell_qty < size else size
        return buy_cost, sell_cost - sell_cost * closing // sell_qty
    if size < 0 and buy_qty:
        closing = buy_qty if buy_qty < -size else -size
        return buy_cost - buy_cost * closing // buy_qty, sell_cost
    return buy_cost, sell_cost


def order_margin(
    size: int, buy_qty: int, buy_cost: int, sell_qty: int, sell_cost: int, v: int,
    leverage: int, taker_fee_ppm: int,
) -> int:
    """Margin held by an account's live orders in one instrument: the initial margin plus
    the opening fee (at the taker rate) of the larger side's opening cost. Only one side
    can end up open, so the sides are netted by taking the larger (as Binance does)."""
    # side_costs inlined: this runs for every order event of a margined instrument
    if size > 0 and sell_qty:
        closing = sell_qty if sell_qty < size else size
        sell_cost -= sell_cost * closing // sell_qty
    elif size < 0 and buy_qty:
        closing = buy_qty if buy_qty < -size else -size
        buy_cost -= buy_cost * closing // buy_qty
    cost = buy_cost if buy_cost > sell_cost else sell_cost
    if cost <= 0:
        return 0
    notional = cost * v
    if taker_fee_ppm > 0:
        return -(-notional // leverage) - (-notional * taker_fee_ppm // PPM)
    return -(-notional // leverage)


def open_loss(side_is_buy: bool, price: int, mark: int, qty: int, v: int) -> int:
    """The loss an order is born with when its price is worse than the mark (a buy above
    it, a sell below it): charged on top of its margin at acceptance, as Binance does."""
    if not mark:
        return 0
    diff = price - mark if side_is_buy else mark - price
    return diff * qty * v if diff > 0 else 0


class PositionRisk(NamedTuple):
    """One position valued at a mark (minor units except ``notional``, also minor units)."""

    notional: int
    unrealised_pnl: int
    initial_margin: int
    maintenance_margin: int


def position_risk(
    size: int, entry_cost: int, mark: int, v: int, leverage: int, tiers: tuple
) -> PositionRisk:
    """Value a position at ``mark``."""
    if not size:
        return PositionRisk(0, 0, 0, 0)
    notional = abs(size) * mark * v
    return PositionRisk(
        notional,
        unrealised_pnl(size, entry_cost, mark, v),
        initial_margin(notional, leverage),
        maintenance_margin(tiers, notional),
    )


def liquidation_price(
    size: int, entry_cost: int, v: int, tiers: tuple, collateral: int
) -> int:
    """The mark (ticks) at which ``collateral`` + unrealised PnL falls to the maintenance
    margin: for an isolated position ``collateral`` is its margin; for a cross one, the
    account's equity without this position's PnL and less the other positions'
    maintenance margin (the others held at their current marks). 0 if it cannot be
    liquidated (a long with collateral covering a price of zero) or is flat.

    Per tier t: long  c + (s*p - E)*v = (s*p*v*mmr - cum)/PPM  ->  p = (E*v - c - cum/PPM)
    / (s*v*(1 - mmr)); short likewise with the signs turned. The tier whose notional range
    contains the solution is the answer. Rounded so the engine acts no later (long: up,
    short: down).
    """
    if not size:
        return 0
    cums = cumulative_deductions(tiers)
    s = abs(size)
    prev_cap = 0
    for t, (cap, mmr, _lev) in enumerate(tiers):
        cum = cums[t]
        if size > 0:
            # PPM*(E*v - c) - cum = s*v*p*(PPM - mmr)
            num = PPM * (entry_cost * v - collateral) - cum
            den = s * v * (PPM - mmr)
            if num <= 0:
                p = 0
            else:
                p = ceil_div(num, den)
        else:
            # PPM*(E*v + c) + cum = s*v*p*(PPM + mmr)
            num = PPM * (entry_cost * v + collateral) + cum
            den = s * v * (PPM + mmr)
            p = num // den if num > 0 else 0
        notional = s * p * v
        last = t == len(tiers) - 1
        if (prev_cap < notional <= cap) or last or (t == 0 and notional <= cap):
            return p
        prev_cap = cap
    return 0
