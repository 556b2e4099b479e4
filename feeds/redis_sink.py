"""The Redis sink: after each feed batch, the market-data state and the batch go to Redis.

Theory of operation
-------------------
:class:`RedisSink` is a :class:`~feeds.hub.FeedSink`. On the reactor thread,
:meth:`RedisSink.on_batch` turns the batch into a short list of Redis commands (no I/O): the
level changes of each full-depth book update into the symbol's book hash, the depth-20
snapshot when the top 20 changed, tickers (with mark and index), mark-price messages, the
liquidations snapshot of a symbol with new steps, kline
candles, recent trades, trading statuses (in the meta hash), the meta ``seq``, and one
PUBLISH of the batch envelope whose payloads are the very bytes the WebSocket batch sends
(``FeedMessage.encoded``, encoded once). Key layout: :mod:`feeds.redis_keys`.

The commands run on a dedicated one-thread ThreadPool with the blocking redis client, as one
pipelined MULTI/EXEC per write (``deferToThreadPool``), so nothing blocks the reactor and each
write is atomic: a reader sees the state after some whole batch. One write is in flight at a
time; batches that arrive meanwhile are pipelined together into the next write.

Redis down (a write fails): the sink never raises into the reactor. It counts the failure
(``redis_sink_failures_total``), sets ``redis_sink_connected`` to 0, drops what was queued
and, while down, drops each new batch (``redis_sink_dropped_batches_total``): the state is
coalesced to the latest snapshot instead. After a backoff it tries a *sync*: the full state of
every symbol, taken from the feed core at that moment, rewritten in one MULTI with the meta
hash and a SYNC envelope on the channel, which tells every follower to bootstrap again. Its
success is the recovery. The sink starts with a sync too, and does one whenever its queue
overflows (Redis too slow). Batch ``seq`` numbers count every batch, written or dropped, so a
follower sees a dropped batch as a gap.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from feeds.channels import (
    DEPTH_NAMES,
    KLINE,
    LIQUIDATIONS,
    MARK_PRICE,
    ORDERBOOK,
    STATUS,
    TICKER,
    TRADES,
    Channel,
)
from feeds.core import FeedCore, FeedMessage
from feeds.diffs import FULL_DEPTH
from feeds.encoding import WireFormat, encode
from feeds.kline import INTERVALS
from feeds.redis_keys import (
    BATCH,
    SYNC,
    U_DEPTH,
    RedisKeys,
    is_zero_qty,
    level_field,
    level_value,
    meta_mapping,
    pack_envelope,
    status_field,
)

log = Logger(namespace="feeds.redis_sink")

FAILURES = Counter("redis_sink_failures_total", "Failed Redis writes of the feed sink")
CONNECTED = Gauge("redis_sink_connected", "1 while the feed sink's last Redis write succeeded")
DROPPED = Counter(
    "redis_sink_dropped_batches_total",
    "Feed batches not written to Redis (Redis down or too slow); a later sync covers them",
)
SYNCS = Counter("redis_sink_syncs_total", "Full market-data state rewrites to Redis")
WRITE_SECONDS = Histogram(
    "redis_sink_write_seconds",
    "Time of one pipelined MULTI/EXEC write of the feed sink",
    buckets=(0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 2.0),
)

Command = tuple[str, tuple, dict]  # (redis-py method, args, kwargs)

_TOP_DEPTH = 20


def execute(client: Any, commands: list[Command]) -> float:
    """Run ``commands`` as one pipelined MULTI/EXEC (worker thread); returns the seconds taken."""
    started = time.perf_counter()
    pipe = client.pipeline(transaction=True)
    for name, args, kwargs in commands:
        getattr(pipe, name)(*args, **kwargs)
    pipe.execute()
    return time.perf_counter() - started


def _depth_of(channel_name: str) -> int:
    return DEPTH_NAMES[channel_name.rsplit("@", 1)[1]]


class RedisSink:
    """Writes each feed batch to Redis off the reactor thread; see the module docstring.

    ``client`` is a blocking ``redis.Redis`` (see :func:`feeds.redis_keys.blocking_client`),
    used only from the sink's thread. ``clock`` (default: the reactor) times the backoff.
    ``epoch`` identifies this run of the sink to the followers (default: the wall clock).
    """

    def __init__(
        self,
        core: FeedCore,
        client: Any,
        reactor: Any,
        clock: Any = None,
        *,
        keys: RedisKeys | None = None,
        wire_format: WireFormat = WireFormat.MSGPACK,
        threadpool: ThreadPool | None = None,
        recent_trades: int = 200,
        max_pending_batches: int = 500,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
        epoch: int | None = None,
    ) -> None:
        self.core = core
        self.client = client
        self.keys = keys if keys is not None else RedisKeys()
        self.wire_format = wire_format
        self.recent_trades = recent_trades
        self.max_pending_batches = max_pending_batches
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.epoch = epoch if epoch is not None else time.time_ns()
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._own_pool = threadpool is None
        self._pool = threadpool if threadpool is not None else ThreadPool(1, 1, "redis-sink")
        self._symbols = sorted(core.symbols)
        self.seq = 0  # batches seen (written or dropped)
        self.connected = False
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self._need_sync = True
        self._inflight: str | None = None  # None, BATCH or SYNC
        self._pending: list[list[Command]] = []
        self._retry: Any = None
        self._waiters: list[defer.Deferred[None]] = []
        self._started = False
        self._stopped = False
        CONNECTED.set(0)

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread and write the full state (the first sync)."""
        if self._own_pool and not self._pool.started:
            self._pool.start()
        self._started = True
        self._kick()

    def stop(self) -> None:
        """Stop writing (queued batches are not written) and stop our thread."""
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._own_pool and self._pool.started:
            self._pool.callInThread(self.client.close)
            self._pool.stop()

    # -- FeedSink -----------------------------------------------------------------------------

    def on_batch(self, messages: list[FeedMessage]) -> None:
        """Queue one batch's writes (O(batch), no I/O); never raises."""
        self.seq += 1
        try:
            if len(self.core.symbols) != len(self._symbols):
                # an instrument was listed: the meta hash and the followers need the new
                # symbol set, which a full sync (and the followers' re-bootstrap) carries
                self._symbols = sorted(self.core.symbols)
                self._pending = []
                self._need_sync = True
            if self._need_sync and self._inflight != SYNC:
                # Down or about to sync: the sync will write the state this batch led to.
                DROPPED.inc()
                self._kick()
                return
            self._pending.append(self._batch_commands(messages, self.seq))
            if len(self._pending) > self.max_pending_batches:
                # Redis is too slow for the feed: coalesce everything queued into one sync.
                DROPPED.inc(len(self._pending))
                self._pending = []
                self._need_sync = True
                log.warn("redis_sink.overflow pending={n}", n=self.max_pending_batches)
            self._kick()
        except Exception:
            # A bug here must not reach the hub (and the other sinks, and the subscribers).
            FAILURES.inc()
            self._need_sync = True
            log.failure("redis_sink.on_batch failed")

    def request_sync(self) -> None:
        """Rewrite the whole state at the next opportunity (followers then bootstrap again)."""
        self._need_sync = True
        self._kick()

    def flushed(self) -> defer.Deferred[None]:
        """A Deferred firing once Redis holds the state of every batch seen so far."""
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append(d)
        self._fire_waiters()
        return d

    # -- commands -----------------------------------------------------------------------------

    def _batch_commands(self, messages: list[FeedMessage], seq: int) -> list[Command]:
        keys, fmt = self.keys, self.wire_format
        cmds: list[Command] = []
        items: list[tuple[str, str, bytes]] = []
        liquidated: list[str] = []  # symbols with steps in this batch (in order, once each)
        for msg in messages:
            data = msg.encoded(fmt)
            items.append((msg.channel, msg.kind, data))
            p = msg.payload
            kind = msg.kind
            if kind == ORDERBOOK:
                cmds.extend(self._book_commands(msg))
            elif kind == TRADES:
                key = keys.trades(p["symbol"])
                cmds.append(("rpush", (key, *[encode(t, fmt) for t in p["data"]]), {}))
                cmds.append(("ltrim", (key, -self.recent_trades, -1), {}))
            elif kind == TICKER:
                cmds.append(("set", (keys.ticker(p["symbol"]), data), {}))
            elif kind == KLINE:
                cmds.append(("hset", (keys.kline(p["symbol"]), p["interval"], data), {}))
            elif kind == STATUS:
                cmds.append(("hset", (keys.meta, status_field(p["symbol"]), data), {}))
            elif kind == MARK_PRICE:
                cmds.append(("set", (keys.mark(p["symbol"]), data), {}))
            elif kind == LIQUIDATIONS and p["symbol"] not in liquidated:
                liquidated.append(p["symbol"])
        for symbol in liquidated:
            # the snapshot as it stands after this batch (the core published its steps)
            snap = self.core.snapshot_message(Channel(LIQUIDATIONS, symbol, None))
            assert snap is not None  # a liquidations channel always has a snapshot
            cmds.append(("set", (keys.liquidations(symbol), snap.encoded(fmt)), {}))
        cmds.append(("hset", (keys.meta, "seq", seq), {}))
        envelope = pack_envelope(self.epoch, seq, BATCH, fmt, items)
        cmds.append(("publish", (keys.updates, envelope), {}))
        return cmds

    def _book_commands(self, msg: FeedMessage) -> list[Command]:
        p = msg.payload
        symbol = p["symbol"]
        key = self.keys.book(symbol)
        depth = _depth_of(msg.channel)
        if depth != FULL_DEPTH:
            cmds: list[Command] = [("hset", (key, U_DEPTH[depth], p["u"]), {})]
            if depth == _TOP_DEPTH:
                top = self.core.snapshot_message(Channel(ORDERBOOK, symbol, _TOP_DEPTH))
                assert top is not None  # an order-book channel always has a snapshot
                cmds.append(("set", (self.keys.top(symbol), top.encoded(self.wire_format)), {}))
            return cmds
        gone: list[str] = []
        mapping: dict[Any, Any] = {"u": p["u"], "ts": p["ts"]}
        for is_bid, levels in ((True, p["bids"]), (False, p["asks"])):
            for price, qty, count in levels:
                if is_zero_qty(qty):
                    gone.append(level_field(is_bid, price))
                else:
                    mapping[level_field(is_bid, price)] = level_value(qty, count)
        cmds = [("hdel", (key, *gone), {})] if gone else []
        cmds.append(("hset", (key,), {"mapping": mapping}))
        return cmds

    def _sync_commands(self) -> list[Command]:
        """The whole state, from the core as the last flush published it."""
        core, keys, fmt = self.core, self.keys, self.wire_format
        cmds: list[Command] = []
        statuses: list[tuple[str, bytes]] = []
        for symbol in self._symbols:
            status = core.snapshot_message(Channel(STATUS, symbol, None))
            assert status is not None  # every symbol has a status
            statuses.append((symbol, status.encoded(fmt)))
            cmds.append(("delete", tuple(keys.symbol_keys(symbol)), {}))
            full = core.snapshot_message(Channel(ORDERBOOK, symbol, FULL_DEPTH))
            top = core.snapshot_message(Channel(ORDERBOOK, symbol, _TOP_DEPTH))
            ticker = core.snapshot_message(Channel(TICKER, symbol, None))
            mark = core.snapshot_message(Channel(MARK_PRICE, symbol, None))
            assert full is not None and top is not None and ticker is not None
            assert mark is not None  # every symbol has one (null prices until a first mark)
            p = full.payload
            mapping: dict[Any, Any] = {"u": p["u"], "ts": p["ts"]}
            for depth, field in U_DEPTH.items():
                mapping[field] = core.book_snapshot(symbol, depth).update_id
            for is_bid, levels in ((True, p["bids"]), (False, p["asks"])):
                for price, qty, count in levels:
                    mapping[level_field(is_bid, price)] = level_value(qty, count)
            cmds.append(("hset", (keys.book(symbol),), {"mapping": mapping}))
            cmds.append(("set", (keys.top(symbol), top.encoded(fmt)), {}))
            cmds.append(("set", (keys.ticker(symbol), ticker.encoded(fmt)), {}))
            cmds.append(("set", (keys.mark(symbol), mark.encoded(fmt)), {}))
            liquidations = core.snapshot_message(Channel(LIQUIDATIONS, symbol, None))
            assert liquidations is not None  # possibly with no steps
            cmds.append(("set", (keys.liquidations(symbol), liquidations.encoded(fmt)), {}))
            candles = {}
            for interval in INTERVALS:
                kline = core.snapshot_message(Channel(KLINE, symbol, interval))
                if kline is not None:
                    candles[interval] = kline.encoded(fmt)
            if candles:
                cmds.append(("hset", (keys.kline(symbol),), {"mapping": candles}))
        cmds.append(("delete", (keys.meta,), {}))
        meta = meta_mapping(self.epoch, self.seq, fmt, self._symbols, statuses)
        cmds.append(("hset", (keys.meta,), {"mapping": meta}))
        envelope = pack_envelope(self.epoch, self.seq, SYNC, fmt, [])
        cmds.append(("publish", (keys.updates, envelope), {}))
        return cmds

    # -- writing ------------------------------------------------------------------------------

    def _kick(self) -> None:
        if (self._inflight is not None or self._retry is not None or not self._started
                or self._stopped):
            return
        if self._need_sync:
            self._need_sync = False
            self._pending = []  # the sync covers them
            commands = self._sync_commands()
            self._inflight = SYNC
        elif self._pending:
            commands = [c for batch in self._pending for c in batch]
            self._pending = []
            self._inflight = BATCH
        else:
            self._fire_waiters()
            return
        d = threads.deferToThreadPool(self._reactor, self._pool, execute, self.client, commands)
        d.addCallbacks(self._written, self._failed)

    def _written(self, seconds: float) -> None:
        WRITE_SECONDS.observe(seconds)
        if self._inflight == SYNC:
            SYNCS.inc()
        self._inflight = None
        if not self.connected:
            self.connected = True
            CONNECTED.set(1)
            if self.consecutive_failures:
                log.info("redis_sink.recovered failures={failures} seq={seq}",
                         failures=self.consecutive_failures, seq=self.seq)
            self.consecutive_failures = 0
            self.last_error = None
        self._kick()

    def _failed(self, failure: Failure) -> None:
        self._inflight = None
        self.connected = False
        CONNECTED.set(0)
        FAILURES.inc()
        self.consecutive_failures += 1
        if self._pending:
            DROPPED.inc(len(self._pending))
            self._pending = []
        self._need_sync = True
        delay = min(self.backoff_initial * 2 ** (self.consecutive_failures - 1), self.backoff_max)
        self.last_error = f"{type(failure.value).__name__}: {failure.value}".strip()
        log.warn("redis_sink.write_failed error={error!r} attempt={attempt} retry_in={retry_in}",
                 error=self.last_error, attempt=self.consecutive_failures,
                 retry_in=round(delay, 3))
        if not self._stopped:
            self._retry = self._clock.callLater(delay, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self._kick()

    def _fire_waiters(self) -> None:
        if self._inflight is None and not self._pending and not self._need_sync and self.connected:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)
