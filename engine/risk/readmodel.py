"""RiskReadModel: accounts, positions and marks rebuilt from durable engine events.

The FIX layer, the Postgres writer and the admin API must show what has been journaled,
not the engine's live state (which runs ahead of the disk). They feed this model the
released events (:meth:`apply`) and read views from it; the numbers are the engine's own,
because AccountChanged and PositionChanged carry the engine's state after each command and
the valuation is the same pure code (engine.risk.views).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.enums import MarginMode
from engine.events import (
    AccountChanged,
    InstrumentConfigured,
    MarkPriceUpdated,
    PositionChanged,
    RiskSettingsChanged,
)
from engine.instruments import Instrument
from engine.risk.views import (
    AccountView,
    InstrumentParams,
    PositionView,
    shown,
    value_positions,
)


class _Position:
    __slots__ = ("account", "entry_cost", "fees", "iso", "last_exec_id", "leverage", "mode",
                 "realised", "size", "symbol")

    def __init__(self, account: str, symbol: str, leverage: int) -> None:
        self.account, self.symbol = account, symbol
        self.size = self.entry_cost = self.realised = self.fees = self.iso = 0
        self.last_exec_id = 0
        self.leverage = leverage
        self.mode = MarginMode.CROSS


class RiskReadModel:
    """Collateral and positions as of the last applied event (pure; no I/O)."""

    def __init__(self, instruments: Iterable[Instrument] = ()) -> None:
        self.params: dict[str, InstrumentParams] = {}
        self.defaults: dict[str, int] = {}
        self.marks: dict[str, int] = {}
        self.index: dict[str, int] = {}
        self.accounts: dict[tuple[str, str], tuple[int, int, int]] = {}
        self.positions: dict[tuple[str, str], _Position] = {}
        self.by_account: dict[str, dict[str, _Position]] = {}
        for inst in instruments:
            self.instrument(inst)

    def instrument(self, inst: Instrument) -> None:
        """Know an instrument's rules (margined ones only have positions here)."""
        if inst.margined:
            self.params[inst.symbol] = InstrumentParams(inst.value_per_tick_lot(),
                                                        inst.tiers(), inst.settlement_asset)
            self.defaults[inst.symbol] = inst.leverage_default()
            self.marks.setdefault(inst.symbol, inst.reference_price)
        elif inst.symbol in self.params:  # no longer margined (only possible while flat)
            del self.params[inst.symbol]
            self.defaults.pop(inst.symbol, None)

    def seed(self, engine: Any) -> None:
        """Start from a recovered engine (all of its state is durable: recovery is the
        journal's replay): its instruments and :meth:`RiskBook.state_events`."""
        for inst in engine.instruments:
            self.instrument(inst)
        for e in engine.risk.state_events():
            self.apply(e)

    def apply(self, e: Any) -> bool:
        """Apply one event; True if it changed something this model shows."""
        t = type(e)
        if t is AccountChanged:
            self.accounts[(e.account, e.asset)] = (e.balance, e.isolated_margin, e.order_margin)
            return True
        if t is PositionChanged or t is RiskSettingsChanged:
            p = self._position(e.account, e.symbol)
            if t is PositionChanged:
                p.size, p.entry_cost, p.realised, p.fees = (e.size, e.entry_cost,
                                                            e.realised_pnl, e.fees)
                p.last_exec_id = e.last_exec_id
            p.leverage, p.mode, p.iso = e.leverage, MarginMode(e.mode), e.isolated_margin
            return True
        if t is MarkPriceUpdated:
            self.marks[e.symbol] = e.mark
            self.index[e.symbol] = e.index
            return True
        if t is InstrumentConfigured:
            self.instrument(e.instrument)
            return True
        return False

    def _position(self, account: str, symbol: str) -> _Position:
        key = (account, symbol)
        p = self.positions.get(key)
        if p is None:
            p = self.positions[key] = _Position(account, symbol, self.defaults.get(symbol, 1))
            self.by_account.setdefault(account, {})[symbol] = p
        return p

    def assets_of(self, account: str) -> list[str]:
        """Settlement assets the account holds collateral in, sorted."""
        return sorted(asset for (acct, asset) in self.accounts if acct == account)

    def view(self, account: str, asset: str, include: str = ""
             ) -> tuple[AccountView, list[PositionView]]:
        """The account's collateral view and its positions in instruments settling in
        ``asset`` (sorted by symbol; those :func:`~engine.risk.views.shown` accepts, and
        ``include`` whatever it is)."""
        balance, iso, om = self.accounts.get((account, asset), (0, 0, 0))
        mine = self.by_account.get(account, {})
        positions = [mine[s] for s in sorted(mine) if self.params[s].asset == asset
                     and (s == include or shown(mine[s], self.defaults.get(s, 1)))]
        return value_positions(account, asset, balance, iso, om, positions, self.params,
                               self.marks)

    def position_view(self, account: str, symbol: str) -> PositionView | None:
        """One position's view (None for an unknown or unmargined instrument)."""
        prm = self.params.get(symbol)
        if prm is None:
            return None
        self._position(account, symbol)
        _acct, views = self.view(account, prm.asset, include=symbol)
        for v in views:
            if v.symbol == symbol:
                return v
        return None

    def holders(self, symbol: str) -> list[str]:
        """Accounts with an open position in ``symbol`` (sorted)."""
        return sorted(a for (a, s), p in self.positions.items() if s == symbol and p.size)
