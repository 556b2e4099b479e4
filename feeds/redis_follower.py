"""A feed process's link to Redis: subscribe, bootstrap from the stored state, follow.

Theory of operation
-------------------
:class:`RedisFollower` keeps a :class:`~feeds.redis_relay.RelayCore` in step with the exchange
through Redis and serves it through its own :class:`~feeds.hub.FeedHub` (the Autobahn server
of :mod:`feeds.feed_process` sits on that hub). It uses the blocking redis client off the
reactor: one thread runs the pub/sub subscription loop for as long as it lasts and hands
each envelope to the reactor (``callFromThread``); a second one-thread pool does the reads
(``deferToThreadPool``). The reactor thread only decodes and applies envelopes.

The standard race-free bootstrap: subscribe first; once Redis confirms the subscription,
read the whole state in one MULTI (:func:`read_state`) while the envelopes that arrive are
held; load the state, then apply the held envelopes newer than it, then every later one as
it comes, handing each to the hub (``hub.flush()``: no extra batching delay). A
:class:`~feeds.redis_relay.ResyncNeeded` (a gap, a SYNC notice from the sink, another sink
epoch, a ``pu`` or checksum mismatch) starts a new read on the same subscription; the
subscribers then get fresh snapshots. If Redis holds no state yet (it restarted empty and the
sink has not synced), the read is retried after a backoff, unless a SYNC notice comes first.

A SYNC notice that arrives while a read is in flight is held like any other envelope, and the
state read decides about it: one at or below the state's ``seq`` (same epoch) is already in
that state and skipped; a newer one (or another epoch) makes the held replay raise
``ResyncNeeded`` and read again. It is never a reason to throw a read away unseen: the
subscription runs behind the reads (envelopes wait in Redis's output buffer, the socket and the
reactor's queue), so under a busy exchange whose sink keeps resyncing (its queue overflows)
nearly every read would see an older SYNC arrive while it is in flight, and the follower would
read again and again and never bootstrap.

Redis down: the subscription loop fails, the follower counts it
(``redis_follower_connected`` 0) and resubscribes after a backoff that doubles up to
``backoff_max``; its WebSocket clients stay connected and keep the last state until then.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from prometheus_client import Counter, Gauge
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from feeds.core import FeedCore
from feeds.hub import FeedHub
from feeds.redis_keys import SYNC, Envelope, RedisKeys, parse_meta, unpack_envelope
from feeds.redis_relay import RelayCore, ResyncNeeded, StoredState, parse_book

log = Logger(namespace="feeds.redis_follower")

CONNECTED = Gauge("redis_follower_connected", "1 while the follower is subscribed and in step")
BOOTSTRAPS = Counter(
    "redis_follower_bootstraps_total", "State reads by the Redis follower, by cause", ["cause"]
)
FAILURES = Counter("redis_follower_failures_total", "Lost subscriptions and failed state reads")
ENVELOPES = Counter("redis_follower_envelopes_total", "Envelopes applied by the Redis follower")

POLL_S = 0.2  # how often the subscription thread looks at its stop flag while idle


class StateNotReady(Exception):
    """Redis holds no feed state (yet)."""


def read_state(client: Any, keys: RedisKeys) -> StoredState:
    """Read the whole feed state consistently (worker thread); raises StateNotReady."""
    meta = parse_meta(client.hgetall(keys.meta))
    if meta is None:
        raise StateNotReady(f"no feed state under {keys.prefix!r}")
    pipe = client.pipeline(transaction=True)
    pipe.hgetall(keys.meta)
    for symbol in meta.symbols:
        pipe.hgetall(keys.book(symbol))
        pipe.get(keys.ticker(symbol))
        pipe.hgetall(keys.kline(symbol))
        pipe.get(keys.mark(symbol))
        pipe.get(keys.liquidations(symbol))
    results = pipe.execute()
    meta = parse_meta(results[0])
    per = 5  # reads per symbol
    if meta is None or len(results) != 1 + per * len(meta.symbols):
        raise StateNotReady("the feed state changed shape while being read")
    books, tickers, klines, marks, liquidations = {}, {}, {}, {}, {}
    for i, symbol in enumerate(meta.symbols):
        book, ticker, kline, mark, liq = results[1 + per * i: 1 + per * (i + 1)]
        books[symbol] = parse_book(book)
        if ticker is not None:
            tickers[symbol] = ticker
        klines[symbol] = {k.decode("ascii"): v for k, v in kline.items()}
        if mark is not None:  # a sink older than the markPrice channel wrote none
            marks[symbol] = mark
        if liq is not None:  # a sink older than the liquidations channel wrote none
            liquidations[symbol] = liq
    return StoredState(meta, books, tickers, klines, marks, liquidations)


class RedisFollower:
    """Follows the exchange's feed through Redis; see the module docstring.

    ``client`` is a blocking ``redis.Redis`` (:func:`feeds.redis_keys.blocking_client`), used
    only from the follower's threads. ``clock`` (default: the reactor) times the backoff.
    """

    def __init__(
        self,
        client: Any,
        reactor: Any,
        clock: Any = None,
        *,
        keys: RedisKeys | None = None,
        hub: FeedHub | None = None,
        verify_checksums: bool = True,
        backoff_initial: float = 0.05,
        backoff_max: float = 2.0,
    ) -> None:
        self.client = client
        self.keys = keys if keys is not None else RedisKeys()
        self.relay = RelayCore(verify_checksums)
        # The hub only needs FeedCore's read side, which RelayCore has (duck-typed).
        self.hub = hub if hub is not None else FeedHub(cast(FeedCore, self.relay))
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.state = "stopped"  # stopped, subscribing, bootstrapping, live, down
        self.in_step = False
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.bootstraps = 0
        self.ready: defer.Deferred[None] = defer.Deferred()  # the first successful bootstrap
        self.on_envelope: list[Callable[[Envelope], None]] = []  # observers (tests, metrics)
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._sub_pool = ThreadPool(1, 1, "redis-follower-sub")
        self._read_pool = ThreadPool(1, 1, "redis-follower-read")
        self._generation = 0  # bumps on every (re)subscription; stale thread callbacks ignored
        self._held: list[Envelope] | None = None  # envelopes held while a read is in flight
        self._reading = False
        self._retry: Any = None
        CONNECTED.set(0)

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the threads and subscribe."""
        self._sub_pool.start()
        self._read_pool.start()
        self._subscribe()

    def stop(self) -> None:
        """Stop following: the subscription thread leaves at its next poll, threads joined."""
        self.state = "stopped"
        self._generation += 1
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._sub_pool.stop()
        self._read_pool.stop()
        self.client.close()

    # -- subscription -------------------------------------------------------------------------

    def _subscribe(self) -> None:
        self._generation += 1
        self.state = "subscribing"
        gen = self._generation
        d = threads.deferToThreadPool(self._reactor, self._sub_pool, self._listen, gen)
        d.addErrback(self._lost, gen)

    def _listen(self, gen: int) -> None:
        """Subscription thread: runs until stopped or the connection fails (then raises)."""
        call = self._reactor.callFromThread
        pubsub = self.client.pubsub()
        try:
            pubsub.subscribe(self.keys.updates)
            while self._generation == gen:
                m = pubsub.get_message(timeout=POLL_S)
                if m is None:
                    continue
                if m["type"] == "message":
                    call(self._received, gen, m["data"])
                elif m["type"] == "subscribe":
                    call(self._subscribed, gen)
        finally:
            pubsub.close()

    def _subscribed(self, gen: int) -> None:
        if gen != self._generation:
            return
        self._bootstrap("subscribed")

    def _lost(self, failure: Failure, gen: int) -> None:
        if gen != self._generation or self.state == "stopped":
            return
        self._generation += 1  # results of reads under the old subscription are void
        self._held = None
        self._reading = False
        if self._retry is not None:  # a read retry belongs to the lost subscription
            self._retry.cancel()
            self._retry = None
        self._went_down(failure, "subscription")
        self._schedule(self._subscribe)

    def _went_down(self, failure: Failure, what: str) -> None:
        FAILURES.inc()
        CONNECTED.set(0)
        self.in_step = False
        self.state = "down"
        self.consecutive_failures += 1
        self.last_error = f"{type(failure.value).__name__}: {failure.value}".strip()
        log.warn("redis_follower.{what}_failed error={error!r} attempt={attempt}",
                 what=what, error=self.last_error, attempt=self.consecutive_failures)

    def _schedule(self, call: Callable[[], None]) -> None:
        if self.state == "stopped" or self._retry is not None:
            return
        delay = min(self.backoff_initial * 2 ** max(self.consecutive_failures - 1, 0),
                    self.backoff_max)
        self._retry = self._clock.callLater(delay, self._retry_now, call)

    def _retry_now(self, call: Callable[[], None]) -> None:
        self._retry = None
        call()

    # -- bootstrap ----------------------------------------------------------------------------

    def _bootstrap(self, cause: str) -> None:
        BOOTSTRAPS.labels(cause).inc()
        self.in_step = False
        CONNECTED.set(0)
        if self._held is None:
            self._held = []
        if self._reading:
            return  # the read in flight serves: the held replay tells whether it is recent enough
        self.state = "bootstrapping"
        self._reading = True
        gen = self._generation
        d = threads.deferToThreadPool(self._reactor, self._read_pool, read_state, self.client,
                                      self.keys)
        d.addCallbacks(self._loaded, self._read_failed, callbackArgs=(gen,), errbackArgs=(gen,))

    def _loaded(self, state: StoredState, gen: int) -> None:
        if gen != self._generation:
            return
        self._reading = False
        hub = self.hub
        self.relay.load(state, resend=lambda name: hub.subscriber_count(name) > 0)
        held, self._held = self._held or [], None
        self.state = "live"
        self.in_step = True
        self.bootstraps += 1
        CONNECTED.set(1)
        if self.consecutive_failures:
            log.info("redis_follower.recovered failures={n} seq={seq}",
                     n=self.consecutive_failures, seq=state.meta.seq)
        self.consecutive_failures = 0
        self.last_error = None
        hub.flush()  # the fresh snapshots, to the subscribers that hold older state
        for env in held:
            if not self._apply(env):
                return
        if not self.ready.called:
            self.ready.callback(None)

    def _read_failed(self, failure: Failure, gen: int) -> None:
        if gen != self._generation:
            return
        self._reading = False
        if failure.check(StateNotReady):
            if self.state != "waiting":
                log.info("redis_follower.no_state prefix={prefix}", prefix=self.keys.prefix)
            self.state = "waiting"  # a SYNC notice will trigger the next read sooner
            self.consecutive_failures += 1
            self._schedule(lambda: self._bootstrap("retry"))
            return
        self._went_down(failure, "read")
        self._schedule(lambda: self._bootstrap("retry"))

    # -- envelopes ----------------------------------------------------------------------------

    def _received(self, gen: int, data: bytes) -> None:
        if gen != self._generation:
            return
        try:
            env = unpack_envelope(data)
        except ValueError as exc:
            log.warn("redis_follower.bad_envelope error={error!r}", error=str(exc))
            return
        if self._held is not None:
            self._held.append(env)
            # A SYNC during a read stays held: the state read tells whether it includes it.
            if env.kind == SYNC and self._retry is not None:  # waiting for state: it is there
                self._retry.cancel()
                self._retry = None
                self._bootstrap("sync")
            return
        self._apply(env)

    def _apply(self, env: Envelope) -> bool:
        """Apply one envelope and publish it; False if a new bootstrap had to start."""
        try:
            applied = self.relay.accept(env)
        except ResyncNeeded as exc:
            log.info("redis_follower.resync reason={reason} detail={detail}",
                     reason=exc.reason, detail=str(exc))
            self._bootstrap(exc.reason)
            return False
        if applied:
            ENVELOPES.inc()
            self.hub.flush()
            for observer in self.on_envelope:
                observer(env)
        return True
