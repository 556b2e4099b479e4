"""An L2 (price level) book rebuilt from the engine's ``LevelChanged`` events.

Each side is a ``SortedDict`` keyed so that iteration runs best first (bids by negated
price), holding ``(qty, count)`` per level. ``update_id`` is the ``seq`` of the last
``LevelChanged`` applied: the exchange-wide command sequence, so ids of one symbol are
increasing but not contiguous.
"""

from __future__ import annotations

from itertools import islice

from sortedcontainers import SortedDict

from engine.enums import Side

Level = tuple[int, int, int]
"""(price ticks, qty lots, order count)."""


class L2Book:
    """Aggregated price levels of one symbol, best first on each side."""

    __slots__ = ("_asks", "_bids", "symbol", "update_id")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.update_id = 0
        self._bids: SortedDict = SortedDict()  # -price -> (qty, count)
        self._asks: SortedDict = SortedDict()  # price -> (qty, count)

    def set_level(self, side: Side, price: int, qty: int, count: int) -> None:
        """Set a level's aggregate; qty 0 removes it."""
        if side == Side.BUY:
            book, key = self._bids, -price
        else:
            book, key = self._asks, price
        if qty:
            book[key] = (qty, count)
        else:
            book.pop(key, None)

    def levels(self, side: Side, depth: int | None = None) -> list[Level]:
        """(price, qty, count) of the best ``depth`` levels (all if None), best first."""
        if side == Side.BUY:
            items = self._bids.items()
            it = items if depth is None else islice(items, depth)
            return [(-k, q, c) for k, (q, c) in it]
        items = self._asks.items()
        it = items if depth is None else islice(items, depth)
        return [(k, q, c) for k, (q, c) in it]

    def best(self, side: Side) -> Level | None:
        """The best level of a side, or None if the side is empty."""
        if side == Side.BUY:
            if not self._bids:
                return None
            k, (q, c) = self._bids.peekitem(0)
            return (-k, q, c)
        if not self._asks:
            return None
        k, (q, c) = self._asks.peekitem(0)
        return (k, q, c)

    def level(self, side: Side, price: int) -> tuple[int, int] | None:
        """(qty, count) at one price, or None."""
        if side == Side.BUY:
            return self._bids.get(-price)
        return self._asks.get(price)

    def depth(self, side: Side) -> int:
        """Number of levels on a side."""
        return len(self._bids if side == Side.BUY else self._asks)
