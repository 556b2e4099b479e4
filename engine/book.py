"""The fast order book: price-time priority with O(1) cancel and O(1) best bid/ask.

Theory of operation
-------------------
Each side is a dict ``price -> Level`` plus a binary heap of prices (negated for bids) used
only to find the next best price when the best level empties. ``best_bid``/``best_ask`` are
cached attributes (``0`` and ``NO_ASK`` when a side is empty, so "crosses" is one integer
comparison). The heap is lazy: a price stays in it after its level is deleted until it
surfaces at the top; ``_*_heaped`` remembers which prices are in the heap so a price is never
pushed twice, and the heap is rebuilt when stale entries outnumber live levels.

A Level is a FIFO list of orders with a ``head`` index. Cancel is O(1): the order's
``visible`` is set to 0 (its tombstone) and the level's aggregates are adjusted at once; dead
entries are skipped when they reach the head and the list is compacted when dead entries
outnumber live ones or the consumed prefix is more than half the list (amortised O(1)).
Matching only ever takes from the head, so an iceberg refresh is "advance head, append".
Nothing points back from an order to its level or book: no reference cycles, orders are
freed by reference counting.

Both this book and :class:`engine.reference_book.ReferenceBook` implement the same
interface (``best_bid``, ``best_ask``, ``add``, ``remove``, ``best_order``, ``fill``,
``restate``, ``drain_levels``, ``levels``, ``orders_at``, ``iter_side``, ``order_count``)
and record touched levels in the same first-touch order, so the matcher produces identical
events on either.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from heapq import heapify, heappop, heappush
from typing import Final

from engine.enums import Side
from engine.events import LevelChanged
from engine.order import Order

BUY: Final = Side.BUY
SELL: Final = Side.SELL
NO_ASK: Final = 1 << 62  # best_ask when there are no asks (above every valid price)
_tn: Final = tuple.__new__


class Book(ABC):
    """The interface the matcher uses; FastBook and ReferenceBook implement it.

    ``best_bid`` is 0 and ``best_ask`` NO_ASK when that side is empty. Mutations record the
    levels they touch; ``drain_levels`` turns them into LevelChanged events.
    """

    __slots__ = ()
    symbol: str
    best_bid: int
    best_ask: int

    @abstractmethod
    def add(self, o: Order) -> None:
        """Rest ``o`` (``o.visible`` already set) at the back of its price level."""

    @abstractmethod
    def remove(self, o: Order) -> None:
        """Take a resting order out of the book (sets ``o.visible`` to 0)."""

    @abstractmethod
    def restate(self, o: Order, leaves: int) -> None:
        """Reduce a resting order's leaves (0 < leaves <= o.leaves), keeping its priority."""

    @abstractmethod
    def best_order(self, side: Side) -> Order | None:
        """The first order in time at the best price of ``side``, or None."""

    @abstractmethod
    def fill(self, o: Order, qty: int) -> None:
        """Execute ``qty`` (<= visible) of the best order ``o`` at its price."""

    @abstractmethod
    def drain_levels(self, seq: int, out: list) -> None:
        """Append a LevelChanged for every level touched since the last drain."""

    @abstractmethod
    def levels(self, side: Side) -> list[tuple[int, int, int]]:
        """L2: (price, visible qty, order count) per level, best first."""

    @abstractmethod
    def orders_at(self, side: Side, price: int) -> list[Order]:
        """L3: the live orders at one price, in time priority."""

    @abstractmethod
    def iter_side(self, side: Side) -> Iterator[list[Order]]:
        """Each level's live orders in priority order, best level first."""

    @abstractmethod
    def iter_crossing(self, side: Side, limit: int) -> Iterator[list[Order]]:
        """Like iter_side, but only levels at or better than ``limit`` (lazily, best first)."""

    @abstractmethod
    def order_count(self) -> int:
        """Number of resting orders."""


class Level:
    """One price level: FIFO orders with a head index and visible-quantity aggregates."""

    __slots__ = ("count", "dead", "head", "orders", "price", "qty")
    price: int
    orders: list[Order]
    head: int
    qty: int
    count: int
    dead: int

    def __init__(self, price: int) -> None:
        self.price = price
        self.orders = []
        self.head = 0
        self.qty = 0  # aggregate visible quantity of live orders
        self.count = 0  # live orders
        self.dead = 0  # tombstones at or after head

    def live(self) -> list[Order]:
        """Live orders in time priority."""
        return [o for o in self.orders[self.head :] if o.visible]


class FastBook(Book):
    """Fast price-time priority book (see module docstring)."""

    __slots__ = (
        "_ask_heap",
        "_ask_heaped",
        "_bid_heap",
        "_bid_heaped",
        "_touched",
        "asks",
        "best_ask",
        "best_bid",
        "bids",
        "symbol",
    )
    bids: dict[int, Level]
    asks: dict[int, Level]
    _bid_heap: list[int]
    _ask_heap: list[int]
    _bid_heaped: set[int]
    _ask_heaped: set[int]
    _touched: dict[int, None]

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.bids = {}
        self.asks = {}
        self.best_bid = 0
        self.best_ask = NO_ASK
        self._bid_heap = []  # negated prices
        self._ask_heap = []
        self._bid_heaped = set()
        self._ask_heaped = set()
        self._touched = {}  # -price for bids, +price for asks

    # -- mutation -------------------------------------------------------------------------

    def add(self, o: Order) -> None:
        """Rest ``o`` (``o.visible`` already set) at the back of its price level."""
        p = o.price
        if o.side is BUY:
            lv = self.bids.get(p)
            if lv is None:
                lv = self.bids[p] = Level(p)
                if p not in self._bid_heaped:
                    heappush(self._bid_heap, -p)
                    self._bid_heaped.add(p)
                if p > self.best_bid:
                    self.best_bid = p
            self._touched[-p] = None
        else:
            lv = self.asks.get(p)
            if lv is None:
                lv = self.asks[p] = Level(p)
                if p not in self._ask_heaped:
                    heappush(self._ask_heap, p)
                    self._ask_heaped.add(p)
                if p < self.best_ask:
                    self.best_ask = p
            self._touched[p] = None
        o.price = lv.price  # share one int object per level
        lv.orders.append(o)
        lv.qty += o.visible
        lv.count += 1

    def remove(self, o: Order) -> None:
        """Take a resting order out of the book (O(1); leaves a tombstone)."""
        p = o.price
        if o.side is BUY:
            lv = self.bids[p]
            self._touched[-p] = None
        else:
            lv = self.asks[p]
            self._touched[p] = None
        lv.qty -= o.visible
        o.visible = 0
        lv.count -= 1
        if lv.count == 0:
            self._drop_level(o.side, p)
        else:
            lv.dead += 1
            if lv.dead > 8 and lv.dead > lv.count:
                lv.orders = [x for x in lv.orders[lv.head :] if x.visible]
                lv.head = 0
                lv.dead = 0

    def restate(self, o: Order, leaves: int) -> None:
        """Reduce a resting order's leaves (0 < leaves <= o.leaves), keeping its priority."""
        delta = o.leaves - leaves
        o.qty -= delta
        o.leaves = leaves
        if o.visible > leaves:
            p = o.price
            if o.side is BUY:
                lv = self.bids[p]
                self._touched[-p] = None
            else:
                lv = self.asks[p]
                self._touched[p] = None
            lv.qty -= o.visible - leaves
            o.visible = leaves

    def best_order(self, side: Side) -> Order | None:
        """The first order in time at the best price of ``side``, or None."""
        if side is BUY:
            if not self.bids:
                return None
            lv = self.bids[self.best_bid]
        else:
            if not self.asks:
                return None
            lv = self.asks[self.best_ask]
        orders = lv.orders
        i = lv.head
        o = orders[i]
        while not o.visible:
            i += 1
            lv.dead -= 1
            o = orders[i]
        lv.head = i
        return o

    def fill(self, o: Order, qty: int) -> None:
        """Execute ``qty`` (<= visible) of the best order ``o`` at its price.

        Updates leaves, filled, notional and the level; removes a filled order; an iceberg
        whose display is used up is refreshed and moves to the back of its level.
        """
        p = o.price
        o.leaves -= qty
        o.filled += qty
        o.notional += p * qty
        v = o.visible - qty
        if o.side is BUY:
            lv = self.bids[p]
            self._touched[-p] = None
        else:
            lv = self.asks[p]
            self._touched[p] = None
        lv.qty -= qty
        if v:
            o.visible = v
            return
        o.visible = 0
        lv.head += 1  # o was the head
        if o.leaves:
            v = o.spec.display
            if v > o.leaves:
                v = o.leaves
            o.visible = v
            lv.orders.append(o)
            lv.qty += v
        else:
            lv.count -= 1
            if lv.count == 0:
                self._drop_level(o.side, p)
                return
        if lv.head > 32 and lv.head * 2 > len(lv.orders):
            del lv.orders[: lv.head]
            lv.head = 0

    def _drop_level(self, side: Side, p: int) -> None:
        if side is BUY:
            del self.bids[p]
            if p == self.best_bid:
                heap = self._bid_heap
                levels = self.bids
                while heap and -heap[0] not in levels:
                    self._bid_heaped.discard(-heappop(heap))
                self.best_bid = -heap[0] if heap else 0
            if len(self._bid_heap) > 2 * len(self.bids) + 256:
                self._bid_heap = [-x for x in self.bids]
                heapify(self._bid_heap)
                self._bid_heaped = set(self.bids)
        else:
            del self.asks[p]
            if p == self.best_ask:
                heap = self._ask_heap
                levels = self.asks
                while heap and heap[0] not in levels:
                    self._ask_heaped.discard(heappop(heap))
                self.best_ask = heap[0] if heap else NO_ASK
            if len(self._ask_heap) > 2 * len(self.asks) + 256:
                self._ask_heap = list(self.asks)
                heapify(self._ask_heap)
                self._ask_heaped = set(self.asks)

    def drain_levels(self, seq: int, out: list) -> None:
        """Append a LevelChanged for every level touched since the last drain."""
        touched = self._touched
        if not touched:
            return
        symbol = self.symbol
        for k in touched:
            if k < 0:
                lv = self.bids.get(-k)
                if lv is None:
                    out.append(_tn(LevelChanged, (seq, symbol, BUY, -k, 0, 0)))
                else:
                    out.append(_tn(LevelChanged, (seq, symbol, BUY, -k, lv.qty, lv.count)))
            else:
                lv = self.asks.get(k)
                if lv is None:
                    out.append(_tn(LevelChanged, (seq, symbol, SELL, k, 0, 0)))
                else:
                    out.append(_tn(LevelChanged, (seq, symbol, SELL, k, lv.qty, lv.count)))
        touched.clear()

    # -- queries --------------------------------------------------------------------------

    def levels(self, side: Side) -> list[tuple[int, int, int]]:
        """L2: (price, visible qty, order count) per level, best first."""
        book = self.bids if side is BUY else self.asks
        prices = sorted(book, reverse=side is BUY)
        return [(p, book[p].qty, book[p].count) for p in prices]

    def orders_at(self, side: Side, price: int) -> list[Order]:
        """L3: the live orders at one price, in time priority."""
        lv = (self.bids if side is BUY else self.asks).get(price)
        return lv.live() if lv is not None else []

    def iter_side(self, side: Side) -> Iterator[list[Order]]:
        """Each level's live orders in priority order, best level first."""
        book = self.bids if side is BUY else self.asks
        for p in sorted(book, reverse=side is BUY):
            yield book[p].live()

    def iter_crossing(self, side: Side, limit: int) -> Iterator[list[Order]]:
        """Levels of ``side`` priced at or better than ``limit``, best first, lazily.

        Walks tick by tick from the best price when that is fewer steps than there are
        levels (the usual case: a limit near the touch, or a consumer that stops early);
        otherwise sorts just the crossing prices. Used by the FOK/min-qty dry run.
        """
        if side is BUY:
            book = self.bids
            if not book:
                return
            best = self.best_bid
            if best - limit < len(book):
                for p in range(best, limit - 1, -1):
                    lv = book.get(p)
                    if lv is not None:
                        yield lv.live()
                return
            prices = sorted((p for p in book if p >= limit), reverse=True)
        else:
            book = self.asks
            if not book:
                return
            best = self.best_ask
            if limit - best < len(book):
                for p in range(best, limit + 1):
                    lv = book.get(p)
                    if lv is not None:
                        yield lv.live()
                return
            prices = sorted(p for p in book if p <= limit)
        for p in prices:
            yield book[p].live()

    def order_count(self) -> int:
        """Number of resting orders."""
        return sum(lv.count for lv in self.bids.values()) + sum(
            lv.count for lv in self.asks.values()
        )
