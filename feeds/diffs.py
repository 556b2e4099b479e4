"""Per-symbol order-book channels: batched diffs with update ids and checksums.

Theory of operation
-------------------
:class:`BookFeed` receives ``LevelChanged`` events as they happen and only records them as
*pending* (latest ``(qty, count)`` per level, plus the first and last ``seq`` seen). At
:meth:`BookFeed.flush` (once per batch) the pending changes are applied to the *published*
:class:`~feeds.l2book.L2Book`, and one update per depth is produced. So the published book
is always exactly the state the last sent updates describe, and a snapshot taken from it
(for a new subscriber, for Redis, for FIX market data) is consistent with the update ids:
the next update on that channel has ``pu`` equal to the snapshot's ``u``.

Update ids are engine command ``seq`` numbers (exchange-wide). An update carries ``U`` (the
first seq in the batch that changed this symbol's book), ``u`` (the last) and ``pu`` (the
``u`` of the previous message on the same channel). A client applies an update only if its
``pu`` equals the ``u`` of what it holds; otherwise it missed something and resubscribes.

Full depth sends every touched level with its final aggregate (qty 0: level gone). A depth-N
channel (5, 20) compares the new top N of each side with the top N it last sent and sends
the levels that changed or entered (with their aggregate) and the ones that left the top N
(qty 0), so a client that applies the update has exactly the new top N, with no truncation
rule of its own. A batch that does not change the top N sends nothing on that channel; its
``pu`` chain still holds because it only links messages actually sent.
"""

from __future__ import annotations

from collections.abc import Callable

from engine.enums import Side
from feeds.checksum import CHECKSUM_LEVELS, book_checksum
from feeds.l2book import L2Book, Level

FULL_DEPTH = 0
"""The depth key of the full-depth channel."""

BOOK_DEPTHS = (5, 20, FULL_DEPTH)

Wire = list  # [price str, qty str, count]


class BookUpdate:
    """One channel's update from one batch (integers; rendered by the caller)."""

    __slots__ = ("asks", "bids", "depth", "first_id", "last_id", "prev_id", "top_asks", "top_bids")

    def __init__(
        self,
        depth: int,
        first_id: int,
        last_id: int,
        prev_id: int,
        bids: list[Level],
        asks: list[Level],
        top_bids: list[Level],
        top_asks: list[Level],
    ) -> None:
        self.depth = depth
        self.first_id = first_id
        self.last_id = last_id
        self.prev_id = prev_id
        self.bids = bids  # changed levels, best first (qty 0: removed)
        self.asks = asks
        self.top_bids = top_bids  # the book the client must now hold, checksum depth
        self.top_asks = top_asks


class _DepthView:
    """What a depth-N channel last sent: its top N per side and the last update id."""

    __slots__ = ("asks", "bids", "depth", "last_id")

    def __init__(self, depth: int, book: L2Book) -> None:
        self.depth = depth
        self.last_id = book.update_id
        self.bids: dict[int, tuple[int, int]] = {
            p: (q, c) for p, q, c in book.levels(Side.BUY, depth)
        }
        self.asks: dict[int, tuple[int, int]] = {
            p: (q, c) for p, q, c in book.levels(Side.SELL, depth)
        }


def _top_diff(old: dict[int, tuple[int, int]], new: list[Level], best_first: Callable) -> tuple:
    """Changes turning ``old`` (price -> (qty, count)) into ``new``; and ``new`` as a dict."""
    new_map = {p: (q, c) for p, q, c in new}
    changes: list[Level] = [
        (p, q, c) for p, q, c in new if old.get(p) != (q, c)
    ]
    changes.extend((p, 0, 0) for p in old if p not in new_map)
    changes.sort(key=best_first)
    return changes, new_map


def _bid_order(level: Level) -> int:
    return -level[0]


def _ask_order(level: Level) -> int:
    return level[0]


class BookFeed:
    """Pending level changes of one symbol, its published L2 book and its depth channels."""

    __slots__ = ("_first_id", "_full_last_id", "_last_id", "_pending", "_views", "book", "symbol")

    def __init__(self, symbol: str) -> None:
        self.symbol = symbol
        self.book = L2Book(symbol)
        self._pending: dict[tuple[int, int], tuple[int, int]] = {}
        self._first_id = 0
        self._last_id = 0
        self._full_last_id = 0
        self._views = {d: _DepthView(d, self.book) for d in BOOK_DEPTHS if d != FULL_DEPTH}

    def seed(self, bids: list[Level], asks: list[Level], update_id: int) -> None:
        """Start from a known book (e.g. the engine's after a restart) at ``update_id``."""
        if self._pending:
            raise RuntimeError("seed() with changes pending")
        self.book = L2Book(self.symbol)
        for p, q, c in bids:
            self.book.set_level(Side.BUY, p, q, c)
        for p, q, c in asks:
            self.book.set_level(Side.SELL, p, q, c)
        self.book.update_id = update_id
        self._full_last_id = update_id
        self._views = {d: _DepthView(d, self.book) for d in BOOK_DEPTHS if d != FULL_DEPTH}

    def on_level(self, seq: int, side: int, price: int, qty: int, count: int) -> None:
        """Record a LevelChanged (applied to the published book at the next flush)."""
        if not self._pending:
            self._first_id = seq
        self._pending[(side, price)] = (qty, count)
        self._last_id = seq

    @property
    def has_pending(self) -> bool:
        """True if level changes wait for the next flush."""
        return bool(self._pending)

    def flush(self) -> list[BookUpdate]:
        """Publish pending changes; one BookUpdate per depth whose view changed."""
        pending = self._pending
        if not pending:
            return []
        self._pending = {}
        book = self.book
        bids: list[Level] = []
        asks: list[Level] = []
        for (side, price), (qty, count) in pending.items():
            book.set_level(side, price, qty, count)  # type: ignore[arg-type]
            (bids if side == Side.BUY else asks).append((price, qty, count))
        book.update_id = self._last_id
        bids.sort(key=_bid_order)
        asks.sort(key=_ask_order)
        first, last = self._first_id, self._last_id
        updates = [
            BookUpdate(
                FULL_DEPTH, first, last, self._full_last_id, bids, asks,
                book.levels(Side.BUY, CHECKSUM_LEVELS), book.levels(Side.SELL, CHECKSUM_LEVELS),
            )
        ]
        self._full_last_id = last
        for view in self._views.values():
            new_bids = book.levels(Side.BUY, view.depth)
            new_asks = book.levels(Side.SELL, view.depth)
            bid_changes, bid_map = _top_diff(view.bids, new_bids, _bid_order)
            ask_changes, ask_map = _top_diff(view.asks, new_asks, _ask_order)
            if not bid_changes and not ask_changes:
                continue
            n = min(view.depth, CHECKSUM_LEVELS)
            updates.append(
                BookUpdate(
                    view.depth, first, last, view.last_id, bid_changes, ask_changes,
                    new_bids[:n], new_asks[:n],
                )
            )
            view.bids, view.asks, view.last_id = bid_map, ask_map, last
        return updates

    def snapshot(self, depth: int) -> tuple[int, list[Level], list[Level]]:
        """(update id, bids, asks) of the published book as the channel of ``depth`` holds it.

        For a depth-N channel the id is the ``u`` of the last update sent on it: the top N has
        not changed since, so the next update's ``pu`` chains onto it.
        """
        if depth == FULL_DEPTH:
            return self.book.update_id, self.book.levels(Side.BUY), self.book.levels(Side.SELL)
        view = self._views[depth]
        return (
            view.last_id,
            self.book.levels(Side.BUY, depth),
            self.book.levels(Side.SELL, depth),
        )


def checksum_of(
    bids: list[Level], asks: list[Level], price: Callable[[int], str], qty: Callable[[int], str]
) -> int:
    """Checksum of integer levels rendered with the symbol's formatters."""
    n = CHECKSUM_LEVELS
    return book_checksum(
        [(price(p), qty(q)) for p, q, _ in bids[:n]], [(price(p), qty(q)) for p, q, _ in asks[:n]]
    )
