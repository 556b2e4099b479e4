"""Positions per account and instrument, followed from the engine's Trade events.

Theory of operation
-------------------
A position is kept in integers only, so it is exact and deterministic:

- ``size``: signed lots (positive long, negative short).
- ``entry_notional``: the cost of the open size in ticks*lots (always >= 0). The average
  entry price is the exact fraction ``entry_notional / abs(size)`` ticks; nothing is rounded
  while a position is opened or added to.
- ``realised_pnl``: in ticks*lots*multiplier units (one unit is ``tick_size * lot_size`` of
  the quote currency), the same units as ``Instrument.fee_to_quote``'s numerator times PPM.
- ``fees``: the sum of the account's fees in engine fee units (negative: rebates).

A fill on the position's side (or on a flat position) opens or adds: ``size`` and
``entry_notional`` grow. A fill against it reduces: the cost of the closed lots is the open
cost pro rata, ``entry_notional * closed // abs(size)`` (floor). The rounding remainder stays
with the lots still open, so once the position is closed the realised PnL of the round trip
is exact: every tick of entry cost is realised exactly once. A fill larger than the position
closes it and opens the rest on the other side at the fill price (a flip).

Both sides of every Trade are applied: the taker trades on ``aggressor_side``, the maker on
the other side. ``last_exec_id`` is the engine exec id of the last fill applied; the Postgres
writer uses it as the row version so an older position never overwrites a newer one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from engine.enums import Side
from engine.events import Trade
from engine.instruments import Instrument


class Position(NamedTuple):
    """One account's position in one instrument (all integers, see the module docstring)."""

    account: str
    symbol: str
    size: int = 0
    entry_notional: int = 0
    realised_pnl: int = 0
    fees: int = 0
    last_exec_id: int = 0
    updated_ts: int = 0

    def entry_price(self) -> tuple[int, int]:
        """The average entry price as an exact fraction of ticks: (numerator, denominator).

        A flat position has (0, 1).
        """
        if self.size == 0:
            return 0, 1
        return self.entry_notional, abs(self.size)


def apply_fill(
    pos: Position, side: Side, price: int, qty: int, fee: int, multiplier: int,
    exec_id: int, ts: int,
) -> Position:
    """The position after one fill of ``qty`` lots at ``price`` ticks on ``side``."""
    size = pos.size
    notional = pos.entry_notional
    pnl = pos.realised_pnl
    signed = qty if side == Side.BUY else -qty
    if size == 0 or (size > 0) == (signed > 0):
        size += signed
        notional += price * qty
    else:
        open_lots = abs(size)
        closed = min(qty, open_lots)
        closed_cost = notional * closed // open_lots
        direction = 1 if size > 0 else -1  # a long gains when the exit price is higher
        pnl += direction * (price * closed - closed_cost) * multiplier
        notional -= closed_cost
        size += signed
        if qty > open_lots:  # flip: the rest opens the other side at the fill price
            notional = price * (qty - open_lots)
    return Position(pos.account, pos.symbol, size, notional, pnl, pos.fees + fee, exec_id, ts)


class PositionBook:
    """Every account's positions; pure and deterministic (fed in engine event order)."""

    __slots__ = ("_multipliers", "_positions")

    def __init__(self, multipliers: Mapping[str, int]) -> None:
        self._multipliers = dict(multipliers)
        self._positions: dict[tuple[str, str], Position] = {}

    @classmethod
    def for_instruments(cls, instruments: Iterable[Instrument]) -> PositionBook:
        """A book for these instruments (their multipliers scale the realised PnL)."""
        return cls({i.symbol: i.multiplier for i in instruments})

    def list_instrument(self, symbol: str, multiplier: int) -> None:
        """Know a newly listed instrument (a multiplier change needs it flat: the engine
        refuses one while positions are open)."""
        self._multipliers[symbol] = multiplier

    def position(self, account: str, symbol: str) -> Position:
        """The account's position in ``symbol`` (a flat zero position if it never traded)."""
        pos = self._positions.get((account, symbol))
        return pos if pos is not None else Position(account, symbol)

    def positions(self) -> list[Position]:
        """Every position ever opened (flat ones included), sorted by (account, symbol)."""
        return [self._positions[key] for key in sorted(self._positions)]

    def apply_trade(self, trade: Trade) -> tuple[Position, Position]:
        """Apply both sides of a trade; return the (maker, taker) positions after it.

        Raises KeyError for a symbol the book has no multiplier for (a configuration error
        that must not silently produce wrong PnL).
        """
        multiplier = self._multipliers[trade.symbol]
        taker_side = trade.aggressor_side
        maker_side = Side.SELL if taker_side == Side.BUY else Side.BUY
        maker = self._fill(
            trade.maker_account, trade.symbol, maker_side, trade, trade.maker_fee, multiplier
        )
        taker = self._fill(
            trade.taker_account, trade.symbol, taker_side, trade, trade.taker_fee, multiplier
        )
        return maker, taker

    def _fill(
        self, account: str, symbol: str, side: Side, trade: Trade, fee: int, multiplier: int
    ) -> Position:
        key = (account, symbol)
        pos = self._positions.get(key)
        if pos is None:
            pos = Position(account, symbol)
        new = apply_fill(
            pos, side, trade.price, trade.qty, fee, multiplier, trade.exec_id, trade.ts
        )
        self._positions[key] = new
        return new

    # -- snapshots --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A plain, msgpack-able dict of the whole book (deterministic order)."""
        return {
            "multipliers": {s: self._multipliers[s] for s in sorted(self._multipliers)},
            "positions": [list(p) for p in self.positions()],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PositionBook:
        """Inverse of :meth:`to_dict`."""
        book = cls(d["multipliers"])
        for fields in d["positions"]:
            pos = Position(*fields)
            book._positions[(pos.account, pos.symbol)] = pos
        return book
