"""Index and mark price as the feed publishes them: one symbol's state for two channels.

Theory of operation
-------------------
The engine emits ``IndexPriceUpdated`` when a ``SetIndexPrice`` command is processed and
``MarkPriceUpdated`` when a tick recomputes a symbol's mark and it changed (at most once per
``mark_interval_ms`` per symbol). The feed core hands each released one to the symbol's
:class:`MarkFeed`, which keeps two views of them:

- for the ticker channel, the latest index and the latest mark, whichever event set them
  (an index set between two marks shows in the ticker at once: :meth:`MarkFeed.on_index`
  says whether it changed, so the core marks the ticker dirty);
- for the ``markPrice`` channel, the latest *mark event*: the mark together with the index it
  was computed from, the command seq ``u`` and engine time ``ts`` of the tick that computed
  it. An index alone does not publish on this channel: the channel's message is one mark
  computation, so its index and mark always belong together, and the channel stays bounded
  by the engine's mark interval whatever the index feed's rate.

Like every other channel the mark channel publishes at most once per batch
(:meth:`MarkFeed.take_update`): the latest mark event of the batch (with the engine's mark
interval, two marks of one symbol in one 10 ms batch do not happen in practice; if they did,
the later one is the news). A new subscriber gets the published state
(:meth:`MarkFeed.snapshot`): ``null`` prices until a first mark exists. After a restart the
composition root seeds the recovered engine's index and mark (:meth:`MarkFeed.seed`) with
``u`` and ``ts`` 0, as the status channel does: which command set them is not known.

Funding (next funding time and rate) belongs on the mark message too, once the engine has
funding; until then those fields are absent rather than filled with invented values.
"""

from __future__ import annotations

from collections.abc import Callable


class MarkFeed:
    """One symbol's index and mark: the latest applied, and the mark event last published."""

    __slots__ = ("_price", "channel", "index", "mark", "mark_index", "pending", "published",
                 "symbol", "ts", "u")

    def __init__(self, symbol: str, channel: str, price: Callable[[int], str]) -> None:
        self.symbol = symbol
        self.channel = channel
        self._price = price  # ticks -> decimal string (the symbol's price formatter)
        self.index = 0  # latest index in ticks, from either event (0: none yet)
        self.mark = 0  # latest mark in ticks (0: none yet)
        self.mark_index = 0  # the index the latest mark was computed from
        self.u = 0  # command seq of the latest mark event
        self.ts = 0  # its engine time
        self.pending = False  # a mark event not yet published
        #: (index, mark, u, ts) of the mark event as last published: what a subscriber is told
        self.published = (0, 0, 0, 0)

    def on_index(self, price: int) -> bool:
        """A released index price; True if the index shown in the ticker changed."""
        if price == self.index:
            return False
        self.index = price
        return True

    def on_mark(self, seq: int, ts: int, index: int, mark: int) -> bool:
        """A released mark event; True if the ticker's index or mark changed."""
        changed = mark != self.mark or index != self.index
        self.index = self.mark_index = index
        self.mark, self.u, self.ts = mark, seq, ts
        self.pending = True
        return changed

    def seed(self, index: int, mark: int) -> None:
        """Start from a recovered engine's index and mark (published at once, ``u``/``ts`` 0)."""
        self.index = index
        self.mark = mark
        # the engine keeps only the latest index, which may be newer than the mark's
        self.mark_index = index if mark else 0
        self.u = self.ts = 0
        self.pending = False
        self.published = (self.mark_index, self.mark, 0, 0)

    def take_update(self) -> dict | None:
        """The payload to publish in this batch, or None if no mark event came since."""
        if not self.pending:
            return None
        self.pending = False
        self.published = (self.mark_index, self.mark, self.u, self.ts)
        return self.snapshot()

    def snapshot(self) -> dict:
        """The published mark event as a ``markPrice`` message payload."""
        index, mark, u, ts = self.published
        price = self._price
        return {"channel": self.channel, "type": "markPrice", "symbol": self.symbol,
                "index": price(index) if index else None,
                "mark": price(mark) if mark else None, "u": u, "ts": ts}

    def ticker_fields(self) -> tuple[str | None, str | None]:
        """(mark, index) as the ticker shows them: the latest of each, None if unknown."""
        price = self._price
        return (price(self.mark) if self.mark else None,
                price(self.index) if self.index else None)
