"""A client's copy of an order-book channel, rebuilt from its wire messages.

The reference implementation of the client algorithm in spec/websocket-feed.md, used by the
tests and the benchmark: take the ``snapshot``, then apply each ``update`` whose ``pu``
equals the ``u`` held (a mismatch is a gap: :class:`GapError`), and after each message check
the ``checksum`` against the copy (:class:`ChecksumError`). Levels are kept as the decimal
strings of the wire, so nothing is re-rounded.
"""

from __future__ import annotations

from decimal import Decimal

from feeds.checksum import CHECKSUM_LEVELS, book_checksum


class GapError(Exception):
    """An update does not chain onto the copy (``pu`` != held ``u``): resubscribe."""


class ChecksumError(Exception):
    """The copy's checksum differs from the message's: resubscribe."""


class BookReplica:
    """One order-book channel's book as a client holds it (price string -> (qty, count))."""

    def __init__(self) -> None:
        self.update_id: int | None = None
        self.bids: dict[str, tuple[str, int]] = {}
        self.asks: dict[str, tuple[str, int]] = {}

    def apply(self, msg: dict) -> None:
        """Apply a ``snapshot`` or ``update`` message (as decoded from the wire)."""
        if msg["type"] == "snapshot":
            self.bids = {p: (q, c) for p, q, c in msg["bids"]}
            self.asks = {p: (q, c) for p, q, c in msg["asks"]}
        elif msg["type"] == "update":
            if self.update_id is None or msg["pu"] != self.update_id:
                raise GapError(f"update pu={msg['pu']} does not follow u={self.update_id}")
            for side, levels in ((self.bids, msg["bids"]), (self.asks, msg["asks"])):
                for p, q, c in levels:
                    if Decimal(q) == 0:
                        side.pop(p, None)
                    else:
                        side[p] = (q, c)
        else:
            raise ValueError(f"not an order-book message: {msg['type']!r}")
        self.update_id = msg["u"]
        if self.checksum() != msg["checksum"]:
            raise ChecksumError(f"checksum mismatch at u={self.update_id}")

    def levels(self, side: str) -> list[tuple[str, str, int]]:
        """(price, qty, count) strings of ``side`` ("bids"/"asks"), best first."""
        book = self.bids if side == "bids" else self.asks
        prices = sorted(book, key=Decimal, reverse=side == "bids")
        return [(p, *book[p]) for p in prices]

    def checksum(self) -> int:
        """The checksum of the copy (top 25 per side)."""
        n = CHECKSUM_LEVELS
        bids = [(p, q) for p, q, _ in self.levels("bids")[:n]]
        asks = [(p, q) for p, q, _ in self.levels("asks")[:n]]
        return book_checksum(bids, asks)
