"""Composition of market data: the feed hub fed from released ticks, and its three outlets.

Theory of operation
-------------------
One :class:`~feeds.hub.FeedHub` per process, over one :class:`~feeds.core.FeedCore` of the
exchange's instruments. It is fed by the order pipeline's *released* ticks only (those whose
journal record is durable), so no feed message can describe a state a crash could take back.
The batch timer (:class:`~feeds.batcher.FeedBatcher`, ``FeedBatchInterval`` ms) flushes the
hub; each batch goes to

- the WebSocket subscribers (:class:`~feeds.websocket.FeedServerFactory`, ``WebSocketPort``),
- the Redis sink (:class:`~feeds.redis_sink.RedisSink`, ``RedisURL``): snapshots, trades,
  tickers and one PUBLISH per batch, written off the reactor thread,
- the FIX market-data application (market-data sessions; V/x are routed to it by
  :class:`~fixserver.marketdata.routing.MarketDataRouter`, everything else to order entry),

so the three agree on the books and on the update ids: one exchange-wide id, the engine
command ``seq`` of the last change a message covers.

Restart: the recovered engine (snapshot + journal replay) holds exactly the book state after
the last journaled command, so every symbol's feed book is seeded from it at that command's
seq. Update ids after a restart therefore continue above every id published before it (the
next change has a higher seq), never going back; a client holding an id from before sees the
next update's ``pu`` not chain onto it and resubscribes, as the protocol says. The journal
tail does not reach back 24 h, so the rolling tickers, candles and recent trades are rebuilt
from Postgres (``PostgresDSN``): per-minute aggregates and the latest trades of the last
24 h before the replayed tail, then the tail's trades (:mod:`fixserver.feeds_history`),
seeded into the core without publishing them. Without
Postgres, or if it cannot be read at start-up, they start empty (a warning says so).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from engine.enums import Side
from engine.events import MarkPriceUpdated
from feeds.batcher import FeedBatcher
from feeds.core import FeedCore
from feeds.hub import FeedHub
from fixserver.feeds_history import History, history_start, load_history, tail_start, tail_trades
from fixserver.marketdata import MarketDataApplication, build_market_data_application
from fixserver.marketdata.routing import MarketDataRouter

log = Logger(namespace="fixserver.feeds")

#: seconds a clean shutdown waits for Redis to hold the last batch
REDIS_FLUSH_TIMEOUT_S = 5.0
#: WebSocket close code sent to feed clients at shutdown (Autobahn lets a server send only
#: 1000 or 3000-4999, so not 1001 "going away"; the reason says it)
SHUTDOWN_CLOSE_CODE = 1000


def seed_from_engine(core: FeedCore, engine: Any, update_id: int) -> None:
    """Start every symbol's feed book from the engine's L2 book, labelled ``update_id``
    (a symbol the engine does not list yet, about to be listed at start-up, starts empty),
    and its index, mark and funding prediction from the engine's (a quiet market may see no
    new mark for long)."""
    marks = engine.marks()  # symbol -> (index, mark) in ticks
    # the predicted funding rate and next instant of each symbol with a mark, as the engine
    # sums its risk state up (seq 0 MarkPriceUpdated events)
    funding = {e.symbol: (e.funding_rate_e8, e.next_funding_ts)
               for e in engine.risk.state_events() if type(e) is MarkPriceUpdated}
    for symbol in sorted(core.symbols):
        if symbol not in engine.markets:
            continue
        book = engine.book(symbol)
        core.seed_book(symbol, book.levels(Side.BUY), book.levels(Side.SELL), update_id)
        index, mark = marks.get(symbol, (0, 0))
        if index or mark:
            core.seed_mark(symbol, index, mark, *funding.get(symbol, (0, 0)))


class MarketDataFeeds:
    """The hub, its batch timer and outlets, wired to an order-entry service's pipeline.

    ``service`` is a :class:`fixserver.orderentry.wiring.OrderEntryService` (its
    ``pipeline``, ``pipeline.engine`` and ``instruments``). :attr:`application` is what
    the FixServer hosts: order entry with V/x routed to FIX market data. Call :meth:`start`
    once the reactor can listen, :meth:`stop` after the pipeline has released its last tick.
    """

    def __init__(self, server: Any, service: Any) -> None:
        config = server.config
        self.server = server
        self.reactor = server.reactor
        pipeline = service.pipeline
        engine = pipeline.engine
        next_seq, last_ts, _ = pipeline.sequencer.position()
        self.core = FeedCore(service.instruments)
        #: the update id the books start at: the last journaled command's seq (0: none yet)
        self.start_update_id = next_seq - 1
        seed_from_engine(self.core, engine, self.start_update_id)
        self.core.now = last_ts  # engine time, for the tickers' and candles' windows
        #: trades the tickers, candles and recent trades were rebuilt from at start-up
        self.seeded_trades = 0
        if next_seq > 1:
            self._seed_trades(config.postgres_dsn, service.instruments, last_ts, next_seq,
                              getattr(service, "replayed_trades", ()))
        # taken once: the replayed tail's trades must not live as long as the process
        service.replayed_trades = []
        self.hub = FeedHub(self.core, wall_ns=server.now_ns)
        # The server builds its session host after the application: look it up when used.
        self.market_data: MarketDataApplication = build_market_data_application(
            service.instruments, self.hub, now_ns=server.now_ns,
            # service.instruments carry each one's status now (the engine's, or the
            # configured initial status of one about to be listed)
            flush=lambda session: server.host.flush(session),
        )
        hub = self.hub

        def publish(processed: list) -> None:
            hub.publish([e for p in processed for e in p.events])

        # Released ticks only (the pipeline calls subscribers once a tick is durable).
        pipeline.subscribe(publish)
        pipeline.subscribe(self.market_data.on_released)
        self.application = MarketDataRouter(self.market_data, service)
        self.batcher = FeedBatcher(hub, config.feed_batch_interval_ms / 1000.0,
                                   clock=self.reactor)
        self.redis_sink: Any = None
        if config.redis_url:
            from feeds.redis_keys import RedisKeys, blocking_client
            from feeds.redis_sink import RedisSink

            self.redis_sink = RedisSink(self.core, blocking_client(config.redis_url),
                                        self.reactor, keys=RedisKeys(config.redis_key_prefix))
            hub.add_sink(self.redis_sink)
        self.websocket_factory: Any = None
        self.websocket_port: Any = None  # IListeningPort once started
        if config.websocket_port is not None:
            from feeds.websocket import FeedServerFactory

            host, port = config.websocket_address, config.websocket_port
            # Autobahn refuses port 0 in the URL (it is only the server's idea of itself).
            url = f"ws://{host}:{port}" if port else f"ws://{host}"
            self.websocket_factory = FeedServerFactory(
                hub, url,
                max_connections_per_address=config.websocket_max_connections_per_address,
                max_buffer_bytes=config.websocket_max_buffer_bytes,
            )
        log.info("feeds.seeded update_id={u} symbols={symbols} websocket={ws} redis={redis}",
                 u=self.start_update_id, symbols=sorted(self.core.symbols),
                 ws=config.websocket_port is not None, redis=bool(config.redis_url))

    def _seed_trades(self, dsn: str | None, instruments: Any, last_ts: int, next_seq: int,
                     replayed: Any) -> None:
        # Blocking, but this is start-up: the reactor is not serving anyone yet. Postgres
        # gives per-minute aggregates of the trades before the journal tail; the tail's own
        # trades follow one by one (see fixserver.feeds_history).
        history = History([], [])
        if dsn:
            try:
                history = load_history(dsn, instruments, last_ts, tail_start(replayed, next_seq))
            except Exception as exc:  # the exchange runs without the database
                log.warn("feeds.history_unavailable error={error} (tickers, candles and recent "
                         "trades start from the journal tail only)", error=repr(exc))
        n = self.core.seed_history(history.buckets, history.recent,
                                   tail_trades(replayed, history_start(last_ts)))
        if not n:
            return
        self.seeded_trades = n
        log.info("feeds.history_seeded trades={n} minute_buckets={buckets}", n=n,
                 buckets=len(history.buckets))

    def start(self) -> None:
        """Write the seeded state to Redis, start batching, open the WebSocket port."""
        if self.redis_sink is not None:
            self.redis_sink.start()
        self.batcher.start()
        if self.websocket_factory is not None:
            config = self.server.config
            self.websocket_port = self.reactor.listenTCP(
                config.websocket_port, self.websocket_factory,
                backlog=config.listen_backlog, interface=config.websocket_address)
            host = self.websocket_port.getHost()
            log.info("feeds.listen_websocket address={host}:{port}", host=host.host,
                     port=host.port)

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Publish what was released, close the feed clients, let Redis catch up (bounded)."""
        self.batcher.stop()
        if self.websocket_port is not None and self.websocket_port.connected:
            yield self.websocket_port.stopListening()
        self.hub.flush()  # the last released ticks: to the subscribers, FIX and Redis
        if self.websocket_factory is not None:
            for connection in list(self.websocket_factory.connections):
                if connection.state == connection.STATE_OPEN:
                    connection.sendClose(SHUTDOWN_CLOSE_CODE, "server shutting down")
                elif connection.state in (connection.STATE_CONNECTING,
                                          connection.STATE_PROXY_CONNECTING):
                    connection.transport.loseConnection()  # no handshake yet: nothing to close
        sink = self.redis_sink
        if sink is not None:
            flushed = sink.flushed()
            timeout = self.reactor.callLater(REDIS_FLUSH_TIMEOUT_S, flushed.cancel)
            try:
                yield flushed
            except defer.CancelledError:
                log.warn("feeds.redis_flush_timeout seq={seq} last_error={error}",
                         seq=sink.seq, error=sink.last_error)
            finally:
                if timeout.active():
                    timeout.cancel()
            sink.stop()
