"""Account and position views: what a CollateralReport, PositionReport or the admin API shows.

Pure functions of an account's collateral, its positions and the marks, used both by the
engine's :class:`~engine.risk.book.RiskBook` and by :class:`~engine.risk.readmodel.
RiskReadModel` (which rebuilds the same inputs from durable events). Money is minor units of
the settlement asset, prices ticks; ratios are parts per million.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple, Protocol

from engine.enums import MarginMode
from engine.risk import margin as mg


class PositionState(Protocol):
    """What a view needs of a position (RiskPosition and the read model's rows have it)."""

    account: str
    symbol: str
    size: int
    entry_cost: int
    realised: int
    fees: int
    leverage: int
    mode: MarginMode
    iso: int


def shown(p: PositionState, default_leverage: int) -> bool:
    """True if a position is worth a view row: open, or ever traded, or with settings of its
    own (a record created only by resting orders, at the defaults, is not shown)."""
    return bool(p.size or p.realised or p.fees or p.iso or p.mode is not MarginMode.CROSS
                or p.leverage != default_leverage)


class PositionView(NamedTuple):
    """A position valued at the mark."""

    account: str
    symbol: str
    asset: str
    size: int
    entry_cost: int  # ticks*lots; entry price = entry_cost / abs(size) ticks
    realised_pnl: int
    fees: int
    leverage: int
    mode: MarginMode
    isolated_margin: int
    mark: int
    notional: int
    unrealised_pnl: int
    initial_margin: int
    maintenance_margin: int
    liquidation_price: int  # ticks; 0 when it cannot be liquidated (or is flat)


class AccountView(NamedTuple):
    """An account's collateral in one asset, valued at the marks."""

    account: str
    asset: str
    balance: int  # the balance ledger's sum (isolated margin included)
    isolated_margin: int
    order_margin: int
    unrealised_pnl: int  # all positions
    equity: int  # balance + unrealised_pnl
    initial_margin: int  # positions' initial margin (cross) plus isolated margin
    maintenance_margin: int  # all positions
    available: int  # free for new orders
    withdrawable: int  # like available, without unrealised profit
    margin_ratio_ppm: int  # cross maintenance margin / cross equity (0: no cross position)


class InstrumentParams(NamedTuple):
    """An instrument's value of a tick-lot (``v``), its tiers and settlement asset."""

    v: int
    tiers: tuple
    asset: str


def value_positions(
    account: str, asset: str, balance: int, iso_total: int, order_margin: int,
    positions: Iterable[PositionState], params: Mapping[str, InstrumentParams],
    marks: Mapping[str, int],
) -> tuple[AccountView, list[PositionView]]:
    """The account's view and one view per position (in the given order)."""
    rows = []
    upnl_c = im_c = mm_c = upnl_all = mm_all = 0
    for p in positions:
        prm = params[p.symbol]
        mark = marks.get(p.symbol, 0)
        r = mg.position_risk(p.size, p.entry_cost, mark, prm.v, p.leverage, prm.tiers)
        rows.append((p, prm, mark, r))
        upnl_all += r.unrealised_pnl
        mm_all += r.maintenance_margin
        if p.mode is MarginMode.CROSS:
            upnl_c += r.unrealised_pnl
            im_c += r.initial_margin
            mm_c += r.maintenance_margin
    cross_equity = balance - iso_total + upnl_c
    views = []
    for p, prm, _mark, r in rows:
        if p.mode is MarginMode.ISOLATED:
            collateral = p.iso
        else:
            collateral = (cross_equity - r.unrealised_pnl) - (mm_c - r.maintenance_margin)
        liq = mg.liquidation_price(p.size, p.entry_cost, prm.v, prm.tiers, collateral)
        views.append(PositionView(
            p.account, p.symbol, prm.asset, p.size, p.entry_cost, p.realised, p.fees,
            p.leverage, p.mode, p.iso, _mark, r.notional, r.unrealised_pnl, r.initial_margin,
            r.maintenance_margin, liq))
    available = balance - iso_total - order_margin + upnl_c - im_c
    withdrawable = balance - iso_total - order_margin + min(upnl_c, 0) - im_c
    ratio = mm_c * 1_000_000 // cross_equity if mm_c and cross_equity > 0 else (
        0 if not mm_c else 1_000_000_000)
    acct = AccountView(account, asset, balance, iso_total, order_margin, upnl_all,
                       balance + upnl_all, im_c + iso_total, mm_all, available, withdrawable,
                       ratio)
    return acct, views
