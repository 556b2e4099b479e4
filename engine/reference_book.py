"""The reference order book: the simplest obviously-correct implementation.

Each side is one Python list of ``(key, stamp, order)`` kept sorted, where ``key`` is
``-price`` for bids and ``price`` for asks and ``stamp`` a counter taken when the order
joins its level: sorting by (key, stamp) *is* price-time priority. Everything else (best
prices, level aggregates, removal) is a linear scan. It implements the same interface as
:class:`engine.book.FastBook` and records touched levels in the same first-touch order, so
the matcher runs unchanged on it and both must produce identical events and state.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterator

from engine.book import NO_ASK, Book
from engine.enums import Side
from engine.events import LevelChanged
from engine.order import Order

BUY = Side.BUY
SELL = Side.SELL


class ReferenceBook(Book):
    """Sorted-list book; O(n) everywhere, trivially right."""

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self._sides: dict[Side, list[tuple[int, int, Order]]] = {BUY: [], SELL: []}
        self._stamp = 0
        self._touched: list[tuple[Side, int]] = []
        self.best_bid = 0
        self.best_ask = NO_ASK

    def _refresh(self) -> None:
        """Recompute best bid and ask from the sorted lists (after every change)."""
        bids = self._sides[BUY]
        asks = self._sides[SELL]
        self.best_bid = bids[0][2].price if bids else 0
        self.best_ask = asks[0][2].price if asks else NO_ASK

    def _touch(self, side: Side, price: int) -> None:
        if (side, price) not in self._touched:
            self._touched.append((side, price))

    def add(self, o: Order) -> None:
        """Rest ``o`` behind every order at its price."""
        self._stamp += 1
        key = -o.price if o.side is BUY else o.price
        insort(self._sides[o.side], (key, self._stamp, o))
        self._touch(o.side, o.price)
        self._refresh()

    def remove(self, o: Order) -> None:
        """Take ``o`` out of the book."""
        entries = self._sides[o.side]
        for i, e in enumerate(entries):
            if e[2] is o:
                del entries[i]
                break
        else:
            raise KeyError(o.id)
        o.visible = 0
        self._touch(o.side, o.price)
        self._refresh()

    def restate(self, o: Order, leaves: int) -> None:
        """Reduce leaves, keeping priority; visible shrinks only if above the new leaves."""
        o.qty -= o.leaves - leaves
        o.leaves = leaves
        if o.visible > leaves:
            o.visible = leaves
            self._touch(o.side, o.price)

    def best_order(self, side: Side) -> Order | None:
        """First order of the best level, or None."""
        entries = self._sides[side]
        return entries[0][2] if entries else None

    def fill(self, o: Order, qty: int) -> None:
        """Execute qty of the best order; refresh an exhausted iceberg at the back."""
        o.leaves -= qty
        o.filled += qty
        o.notional += o.price * qty
        o.visible -= qty
        self._touch(o.side, o.price)
        if o.visible == 0:
            self.remove(o)
            if o.leaves:
                o.visible = min(o.spec.display, o.leaves)
                self.add(o)

    def drain_levels(self, seq: int, out: list) -> None:
        """Append a LevelChanged for each touched level, in first-touch order."""
        for side, price in self._touched:
            orders = self.orders_at(side, price)
            out.append(
                LevelChanged(seq, self.symbol, side, price, sum(o.visible for o in orders),
                             len(orders))
            )
        self._touched = []

    def levels(self, side: Side) -> list[tuple[int, int, int]]:
        """L2 (price, qty, count), best first."""
        out: list[tuple[int, int, int]] = []
        for _, _, o in self._sides[side]:
            if out and out[-1][0] == o.price:
                p, q, c = out[-1]
                out[-1] = (p, q + o.visible, c + 1)
            else:
                out.append((o.price, o.visible, 1))
        return out

    def orders_at(self, side: Side, price: int) -> list[Order]:
        """L3 orders at one price in time priority."""
        return [o for _, _, o in self._sides[side] if o.price == price]

    def iter_side(self, side: Side) -> Iterator[list[Order]]:
        """Each level's orders, best level first."""
        for price, _, _ in self.levels(side):
            yield self.orders_at(side, price)

    def iter_crossing(self, side: Side, limit: int) -> Iterator[list[Order]]:
        """Each level at or better than ``limit``, best first."""
        for level in self.iter_side(side):
            price = level[0].price
            if (price < limit) if side is BUY else (price > limit):
                return
            yield level

    def order_count(self) -> int:
        """Number of resting orders."""
        return len(self._sides[BUY]) + len(self._sides[SELL])
