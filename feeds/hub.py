"""FeedHub: the fan-out seam between the pure feed core and whoever consumes batches.

Theory of operation
-------------------
The hub owns a :class:`~feeds.core.FeedCore`. Engine events go in through :meth:`publish`
(the sequencer calls it with each tick's released events); :meth:`flush` (a timer every
10 ms) asks the core for the batch and then

1. hands the whole batch, every channel, to each registered *sink* (``on_batch``): the
   Redis publisher, the FIX market-data layer, anything else that wants batches;
2. hands each message to the channel's subscribers, grouped by wire format, so a message is
   encoded once per format and *framed* once per format (``framer``: the WebSocket glue
   passes Autobahn's ``prepareMessage``) and every subscriber gets the same object.

Subscribers are anything with a ``wire_format`` and a ``deliver(frame)``; a subscriber must
never block (the WebSocket glue queues, and closes a slow consumer instead). A new
subscriber first gets the channel's snapshot (order book, ticker, current candle, trading
status, mark price, latest liquidations), taken from the state the last flush published,
so the next update on the channel chains onto it.

The hub reads a wall clock (``wall_ns``, injectable) only for the latency metric.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from feeds import metrics
from feeds.channels import KINDS, Channel
from feeds.core import BookSnapshot, FeedCore, FeedMessage
from feeds.diffs import FULL_DEPTH
from feeds.encoding import WireFormat


class Subscriber(Protocol):
    """A consumer of framed messages (a WebSocket connection)."""

    wire_format: WireFormat

    def deliver(self, frame: Any) -> None:
        """Take one framed message; must not block."""


class FeedSink(Protocol):
    """A consumer of whole batches (Redis, FIX market data)."""

    def on_batch(self, messages: list[FeedMessage]) -> None:
        """Take one batch: every channel with news, one message per channel (a
        liquidations channel: one per liquidation step, see feeds.liquidations)."""


def raw_frame(data: bytes, is_binary: bool) -> bytes:
    """The default framer: subscribers get the encoded bytes themselves."""
    return data


class FeedHub:
    """Publishes engine events as batched channel messages to subscribers and sinks."""

    def __init__(
        self,
        core: FeedCore,
        *,
        framer: Callable[[bytes, bool], Any] = raw_frame,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.core = core
        self.framer = framer
        self.wall_ns = wall_ns
        self.sinks: list[FeedSink] = []
        # channel name -> wire format -> subscribers (a dict as an insertion-ordered set)
        self._subs: dict[str, dict[WireFormat, dict[Subscriber, None]]] = {}
        self._sent = {
            (kind, fmt): metrics.MESSAGES_SENT.labels(kind, fmt.value)
            for kind in KINDS for fmt in WireFormat
        }

    # -- input ---------------------------------------------------------------------------

    def publish(self, events: Iterable[Any]) -> None:
        """Take released engine events (sent out at the next flush)."""
        self.core.apply(events)

    # -- batches -------------------------------------------------------------------------

    def add_sink(self, sink: FeedSink) -> None:
        """Register a batch consumer; it gets every later batch, all channels."""
        self.sinks.append(sink)

    def remove_sink(self, sink: FeedSink) -> None:
        """Unregister a batch consumer."""
        self.sinks.remove(sink)

    def book_snapshot(self, symbol: str, depth: int = FULL_DEPTH) -> BookSnapshot:
        """A symbol's L2 book as of the last flush, with its update id (see FeedCore)."""
        return self.core.book_snapshot(symbol, depth)

    def flush(self) -> list[FeedMessage]:
        """Build this batch, hand it to the sinks and the subscribers; return it."""
        started = time.perf_counter()
        messages = self.core.flush()
        if not messages:
            return messages
        for sink in self.sinks:
            sink.on_batch(messages)
        subs_by_channel = self._subs
        framer = self.framer
        now_ns = 0
        for msg in messages:
            by_format = subs_by_channel.get(msg.channel)
            if not by_format:
                continue
            if msg.trade_ts:
                now_ns = now_ns or self.wall_ns()
                metrics.LATENCY_MS.observe((now_ns - msg.trade_ts) / 1e6)
            for fmt, subs in list(by_format.items()):
                if not subs:
                    continue
                frame = framer(msg.encoded(fmt), fmt.is_binary)
                count = len(subs)
                for sub in list(subs):  # deliver may close a slow consumer and unsubscribe it
                    sub.deliver(frame)
                self._sent[(msg.kind, fmt)].inc(count)
        metrics.BATCH_SECONDS.observe(time.perf_counter() - started)
        return messages

    # -- subscriptions -------------------------------------------------------------------

    def subscribe(self, sub: Subscriber, channel: Channel) -> None:
        """Add ``sub`` to ``channel`` and deliver the channel's snapshot, if it has one."""
        by_format = self._subs.setdefault(channel.name, {})
        by_format.setdefault(sub.wire_format, {})[sub] = None
        snap = self.core.snapshot_message(channel)
        if snap is not None:
            fmt = sub.wire_format
            sub.deliver(self.framer(snap.encoded(fmt), fmt.is_binary))

    def unsubscribe(self, sub: Subscriber, channel: Channel) -> None:
        """Remove ``sub`` from ``channel`` (no error if it was not there)."""
        by_format = self._subs.get(channel.name)
        if by_format is None:
            return
        subs = by_format.get(sub.wire_format)
        if subs is not None:
            subs.pop(sub, None)
            if not subs:
                del by_format[sub.wire_format]
        if not by_format:
            del self._subs[channel.name]

    def unsubscribe_all(self, sub: Subscriber, channels: Iterable[Channel]) -> None:
        """Remove ``sub`` from every channel in ``channels``."""
        for channel in channels:
            self.unsubscribe(sub, channel)

    def subscriber_count(self, channel_name: str) -> int:
        """How many subscribers a channel has."""
        return sum(len(s) for s in self._subs.get(channel_name, {}).values())
