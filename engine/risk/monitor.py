"""MarginMonitor: margin calls and liquidation triggers at O(log n) per mark move.

An *owner* is what has a margin ratio: ``(account, asset, "")`` for an account's cross
positions in one settlement asset, ``(account, asset, symbol)`` for an isolated position.
Its ratio is maintenance margin / equity (cross: balance - isolated margin + cross
unrealised PnL; isolated: the position's margin + its unrealised PnL).

Each owner is armed (engine.risk.thresholds) toward the next level it has not crossed:
the warning levels of its asset (e.g. 80%, 90%: a MarginCall once per crossing) and then
liquidation (equity below maintenance margin: MarginBreached, and the owner is queued for
liquidation in the tick). An owner past a warning level is also armed on the favourable side
so that, once it recovers below the level, a later crossing warns again. A fired owner is
valued exactly and re-armed; firing early only costs that.

The monitor holds no reference to the book (the book owns it): the book is passed in.
"""

from __future__ import annotations

from typing import Any

from engine.enums import MarginMode
from engine.events import MarginBreached, MarginCall
from engine.risk import margin as mg
from engine.risk.accounts import INSURANCE
from engine.risk.thresholds import PPM, Thresholds, trigger_distance


class MarginMonitor:
    """Armed thresholds, crossed warning levels, breached and pending owners."""

    def __init__(self) -> None:
        self.thresholds: dict[str, Thresholds] = {}
        self.armed: dict[tuple, list] = {}  # owner -> [(symbol, in_longs, entry)]
        self.levels_crossed: dict[tuple, int] = {}  # owner -> warning levels crossed
        self.breached: set = set()  # owners under maintenance margin (reported once)
        self.pending: dict[tuple, None] = {}  # breached owners waiting for liquidation
        # headroom held back when an owner was armed: a later small debit (a funding payment)
        # that fits in it keeps the armed prices conservative without re-arming
        self.reserve: dict[tuple, int] = {}

    def add_symbol(self, symbol: str) -> None:
        """Track a margined instrument."""
        self.thresholds.setdefault(symbol, Thresholds())

    def has_crossed(self, a: Any) -> bool:
        """True if any owner of account record ``a`` is past a warning level or breached."""
        crossed, breached = self.levels_crossed, self.breached
        if not crossed and not breached:
            return False
        owner = (a.account, a.asset, "")
        if owner in crossed or owner in breached:
            return True
        for sym, p in a.positions.items():
            if p.mode is MarginMode.ISOLATED:
                owner = (a.account, a.asset, sym)
                if owner in crossed or owner in breached:
                    return True
        return False

    def absorb(self, a: Any, amount: int) -> bool:
        """A debit of ``amount`` from account record ``a``'s balance: True if its cross
        owner's reserve covers it (the armed prices stay conservative, nothing crossed), so
        it need not be re-armed."""
        owner = (a.account, a.asset, "")
        left = self.reserve.get(owner)
        if left is None or left < amount or owner not in self.armed:
            return False
        self.reserve[owner] = left - amount
        return True

    def disarm(self, owner: tuple) -> None:
        """Remove an owner's entries."""
        self.reserve.pop(owner, None)
        for sym, in_longs, entry in self.armed.pop(owner, ()):
            th = self.thresholds[sym]
            (th.longs if in_longs else th.shorts).discard(entry)

    def arm(self, book: Any, a: Any, seq: int, ts: int, ev: list) -> None:
        """Value an account (collateral record ``a``) and re-arm its owners."""
        cross_owner = (a.account, a.asset, "")
        self.disarm(cross_owner)
        if a.account == INSURANCE:
            return  # the fund is never margin-called nor liquidated
        book.value(a)
        cross = [p for p in a.positions.values() if p.size and p.mode is MarginMode.CROSS]
        if cross:
            equity = a.balance - a.iso_total + a.upnl
            self._arm_owner(book, cross_owner, cross, equity, a.mm, seq, ts, ev)
        else:
            self._clear(cross_owner)
        for p in a.positions.values():
            if p.mode is not MarginMode.ISOLATED:
                continue
            owner = (a.account, a.asset, p.symbol)
            self.disarm(owner)
            if not p.size:
                self._clear(owner)
                continue
            ir = book.instruments[p.symbol]
            r = mg.position_risk(p.size, p.entry_cost, book.mark_of(p.symbol), ir.v,
                                 p.leverage, ir.tiers)
            self._arm_owner(book, owner, [p], p.iso + r.unrealised_pnl,
                            r.maintenance_margin, seq, ts, ev)

    def _clear(self, owner: tuple) -> None:
        self.levels_crossed.pop(owner, None)
        self.breached.discard(owner)
        self.pending.pop(owner, None)

    def _arm_owner(self, book: Any, owner: tuple, positions: list, equity: int, mm: int,
                   seq: int, ts: int, ev: list) -> None:
        account, asset, symbol = owner
        if equity < mm:
            if owner not in self.breached:
                self.breached.add(owner)
                ev.append(MarginBreached(seq, ts, account, asset, symbol, equity, mm))
            self.pending[owner] = None
            return
        self.breached.discard(owner)
        self.pending.pop(owner, None)
        levels = book.call_levels.get(asset, ())
        ratio = mm * PPM // equity if equity > 0 and mm else 0
        crossed = sum(1 for lv in levels if lv <= ratio)
        before = self.levels_crossed.get(owner, 0)
        if crossed > before:
            ev.append(MarginCall(seq, ts, account, asset, symbol, levels[crossed - 1], ratio,
                                 equity, mm))
        if crossed:
            self.levels_crossed[owner] = crossed
        else:
            self.levels_crossed.pop(owner, None)
        toward = levels[crossed] if crossed < len(levels) else PPM
        headroom = equity - mg.ceil_div(mm * PPM, toward)
        reserve = headroom // 4
        entries = self._place(book, owner, positions, headroom - reserve, toward, adverse=True)
        if crossed:
            back = levels[crossed - 1]
            deficit = mg.ceil_div(mm * PPM, back) - equity
            entries += self._place(book, owner, positions, max(deficit, 0), back,
                                   adverse=False)
        self.armed[owner] = entries
        self.reserve[owner] = reserve

    def _place(self, book: Any, owner: tuple, positions: list, amount: int, level: int,
               adverse: bool) -> list:
        """One entry per position: the mark move (against it if ``adverse``, for it
        otherwise) that could change ``amount`` of headroom toward ``level``, split evenly."""
        share = amount // len(positions)
        out = []
        for p in positions:
            ir = book.instruments[p.symbol]
            slope = ir.mmr_max * PPM // level  # maintenance growth per unit of notional
            d = trigger_distance(share, p.size, ir.v, slope)
            if not adverse:
                d = max(d, 1)
            mark = book.mark_of(p.symbol)
            th = self.thresholds[p.symbol]
            falls = (p.size > 0) == adverse  # fire when the mark falls to the price
            entry = (mark - d, owner) if falls else (mark + d, owner)
            (th.longs if falls else th.shorts).add(entry)
            out.append((p.symbol, falls, entry))
        return out

    def fire(self, book: Any, symbol: str, mark: int, seq: int, ts: int, ev: list) -> None:
        """A new mark: re-value and re-arm every owner whose entry it reached."""
        owners = self.thresholds[symbol].fired(mark)
        if not owners:
            return
        accounts: dict = {}
        for account, asset, _sym in owners:
            accounts[(account, asset)] = None
        for key in accounts:
            self.arm(book, book.accounts[key], seq, ts, ev)

    # -- snapshots --------------------------------------------------------------------------

    def to_state(self) -> dict:
        """Crossed levels and breach flags (entries are re-armed on restore)."""
        return {
            "levels": sorted([*o, n] for o, n in self.levels_crossed.items()),
            "breached": sorted(list(o) for o in self.breached),
            "pending": sorted(list(o) for o in self.pending),
        }

    def load_state(self, st: dict) -> None:
        """Inverse of :meth:`to_state`."""
        self.levels_crossed = {(a, s, y): n for a, s, y, n in st.get("levels", [])}
        self.breached = {tuple(o) for o in st.get("breached", [])}
        self.pending = {tuple(o): None for o in st.get("pending", [])}
