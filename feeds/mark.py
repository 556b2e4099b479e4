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

Funding rides on the same channel: each mark event carries the engine's *predicted* funding
rate (the rate the next funding would apply if it were now) and the next funding instant;
a ``FundingApplied`` publishes too, with the rate it applied and when (``last_funding_*``),
the next instant, and ``u``/``ts`` of the funding tick. A funding starts a new interval whose
predicted rate the engine has not computed yet, so ``funding_rate`` is null from a funding
until the next mark event gives one (the previous interval's rate would be a stale value
posing as a prediction). An instrument without funding (not margined: the engine gives 0 and
0) has null funding fields, never placeholder values.

Like every other channel the mark channel publishes at most once per batch
(:meth:`MarkFeed.take_update`): the state after the batch's latest mark or funding event
(with the engine's mark interval, two marks of one symbol in one 10 ms batch do not happen in
practice; if they did, the later one is the news). A new subscriber gets the published state
(:meth:`MarkFeed.snapshot`): ``null`` prices until a first mark exists. After a restart the
composition root seeds the recovered engine's index, mark, predicted rate and next funding
instant (:meth:`MarkFeed.seed`) with ``u`` and ``ts`` 0, as the status channel does: which
command set them is not known; the last funding applied is not known either (null).
"""

from __future__ import annotations

from collections.abc import Callable

from feeds.numbers import UnitFormatter

#: funding rates are in 1e-8 units: rendered with 8 decimal places ("0.00010000")
format_rate = UnitFormatter("0.00000001")


class MarkFeed:
    """One symbol's index, mark and funding: the latest applied, and the payload last
    published."""

    __slots__ = ("_price", "channel", "funding_rate", "index", "last_funding_rate",
                 "last_funding_ts", "mark", "mark_index", "next_funding_ts", "pending",
                 "published", "symbol", "ts", "u")

    def __init__(self, symbol: str, channel: str, price: Callable[[int], str]) -> None:
        self.symbol = symbol
        self.channel = channel
        self._price = price  # ticks -> decimal string (the symbol's price formatter)
        self.index = 0  # latest index in ticks, from either event (0: none yet)
        self.mark = 0  # latest mark in ticks (0: none yet)
        self.mark_index = 0  # the index the latest mark was computed from
        self.funding_rate: int | None = None  # predicted rate (1e-8), None: not known
        self.next_funding_ts = 0  # the next funding instant (ns, 0: no funding)
        self.last_funding_rate: int | None = None  # rate of the latest funding applied
        self.last_funding_ts = 0  # when it was applied (engine ns)
        self.u = 0  # command seq of the latest mark or funding event
        self.ts = 0  # its engine time
        self.pending = False  # an event not yet published
        #: the payload as last published: what a subscriber is told
        self.published = self._payload()

    def on_index(self, price: int) -> bool:
        """A released index price; True if the index shown in the ticker changed."""
        if price == self.index:
            return False
        self.index = price
        return True

    def on_mark(self, seq: int, ts: int, index: int, mark: int, funding_rate_e8: int = 0,
                next_funding_ts: int = 0) -> bool:
        """A released mark event; True if the ticker's index or mark changed."""
        changed = mark != self.mark or index != self.index
        self.index = self.mark_index = index
        self.mark, self.u, self.ts = mark, seq, ts
        self._funding(funding_rate_e8, next_funding_ts)
        self.pending = True
        return changed

    def on_funding(self, seq: int, ts: int, rate_e8: int, next_funding_ts: int) -> None:
        """A released ``FundingApplied``: the rate applied, the next instant."""
        self.last_funding_rate, self.last_funding_ts = rate_e8, ts
        self.next_funding_ts = next_funding_ts
        self.funding_rate = None  # the new interval's prediction comes with the next mark
        self.u, self.ts = seq, ts
        self.pending = True

    def seed(self, index: int, mark: int, funding_rate_e8: int = 0,
             next_funding_ts: int = 0) -> None:
        """Start from a recovered engine's index, mark and funding prediction (published at
        once, ``u``/``ts`` 0)."""
        self.index = index
        self.mark = mark
        # the engine keeps only the latest index, which may be newer than the mark's
        self.mark_index = index if mark else 0
        self._funding(funding_rate_e8, next_funding_ts)
        self.last_funding_rate, self.last_funding_ts = None, 0
        self.u = self.ts = 0
        self.pending = False
        self.published = self._payload()

    def _funding(self, rate_e8: int, next_ts: int) -> None:
        # the engine says "no funding" with a next instant of 0 (a rate of 0 is a real rate)
        self.funding_rate = rate_e8 if next_ts else None
        self.next_funding_ts = next_ts

    def take_update(self) -> dict | None:
        """The payload to publish in this batch, or None if no mark or funding came since."""
        if not self.pending:
            return None
        self.pending = False
        self.published = self._payload()
        return self.published

    def snapshot(self) -> dict:
        """The published state as a ``markPrice`` message payload."""
        return self.published

    def _payload(self) -> dict:
        price = self._price
        index, mark = self.mark_index, self.mark
        rate, last = self.funding_rate, self.last_funding_rate
        return {"channel": self.channel, "type": "markPrice", "symbol": self.symbol,
                "index": price(index) if index else None,
                "mark": price(mark) if mark else None,
                "funding_rate": format_rate(rate) if rate is not None else None,
                "next_funding_ts": self.next_funding_ts or None,
                "last_funding_rate": format_rate(last) if last is not None else None,
                "last_funding_ts": self.last_funding_ts if last is not None else None,
                "u": self.u, "ts": self.ts}

    def ticker_fields(self) -> tuple[str | None, str | None]:
        """(mark, index) as the ticker shows them: the latest of each, None if unknown."""
        price = self._price
        return (price(self.mark) if self.mark else None,
                price(self.index) if self.index else None)
