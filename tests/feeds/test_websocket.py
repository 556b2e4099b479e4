"""Real Autobahn clients over loopback: books, trades and klines match the engine; limits hold."""

from __future__ import annotations

import random
import socket

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task

from engine.enums import Side
from engine.events import LevelChanged, Trade
from engine.instruments import demo_instruments
from engine.matcher import MatchingEngine
from feeds.channels import ErrorCode
from feeds.core import FeedCore
from feeds.diffs import FULL_DEPTH
from feeds.hub import FeedHub
from feeds.kline import INTERVALS
from feeds.numbers import UnitFormatter
from feeds.replica import BookReplica
from feeds.websocket import SLOW_CONSUMER_CODE, FeedServerFactory
from tests.feeds.orderflow import OrderFlow
from tests.feeds.wsclient import FeedClientFactory

INSTRUMENTS = demo_instruments()
FMT = {i.symbol: (UnitFormatter(i.tick_size), UnitFormatter(i.lot_size)) for i in INSTRUMENTS}
T0 = 1_700_000_000 * 10**9
TIMEOUT = 20


class Waiter:
    """Deferreds that fire when a condition holds; re-checked after every client message."""

    def __init__(self):
        self.pending = []

    def until(self, condition, what, timeout=TIMEOUT):
        d = defer.Deferred()
        if condition():
            d.callback(None)
            return d
        self.pending.append((condition, d))

        def expired():
            if not d.called:
                d.errback(AssertionError(f"timed out after {timeout}s waiting for {what}"))
        call = reactor.callLater(timeout, expired)
        d.addBoth(lambda r: (call.active() and call.cancel(), r)[1])
        return d

    def check(self, *_):
        for item in list(self.pending):
            condition, d = item
            if not d.called and condition():
                self.pending.remove(item)
                d.callback(None)


def start_server(**limits):
    """A feed server on a loopback port; returns (hub, factory, port)."""
    hub = FeedHub(FeedCore(INSTRUMENTS))
    factory = FeedServerFactory(hub, **limits)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    return hub, factory, port


def connect(port, query="", on_message=None):
    """Open a client; returns (factory, Deferred firing with the client when open)."""
    url = f"ws://127.0.0.1:{port.getHost().port}/{query}"
    f = FeedClientFactory(url, on_message)
    reactor.connectTCP("127.0.0.1", port.getHost().port, f, timeout=TIMEOUT)
    f.opened.addTimeout(TIMEOUT, reactor)
    return f, f.opened


def levels_as_wire(engine, symbol):
    """The engine's full L2 book of a symbol as wire tuples."""
    price, qty = FMT[symbol]
    return tuple(
        [(price(p), qty(q), c) for p, q, c in engine.book(symbol).levels(side)]
        for side in (Side.BUY, Side.SELL)
    )


@pytest_twisted.inlineCallbacks
def test_clients_rebuild_engine_book_trades_and_klines():
    """JSON and msgpack clients (one late) mirror the engine at every update id; see all fills."""
    hub, factory, port = start_server()
    engine = MatchingEngine(INSTRUMENTS)
    flow = OrderFlow(INSTRUMENTS, seed=21)
    waiter = Waiter()
    history = {i.symbol: {0: ([], [])} for i in INSTRUMENTS}  # symbol -> update id -> book
    problems = []
    replicas = {}  # (client, channel) -> BookReplica
    channels = ["orderbook@BTC-PERP@5", "orderbook@BTC-PERP@20", "orderbook@BTC-PERP@full",
                "orderbook@ETH-PERP", "trades@BTC-PERP", "trades@ETH-PERP",
                "kline@BTC-PERP@1m", "kline@ETH-PERP@5m", "ticker@BTC-PERP"]

    def on_message(client, msg):
        if msg.get("type") in ("snapshot", "update"):
            rep = replicas.setdefault((id(client), msg["channel"]), BookReplica())
            try:
                rep.apply(msg)
                _, symbol, depth = msg["channel"].split("@")
                n = None if depth == "full" else int(depth)
                bids, asks = history[symbol][msg["u"]]
                if (rep.levels("bids"), rep.levels("asks")) != (bids[:n], asks[:n]):
                    problems.append(f"{msg['channel']} differs from engine at u={msg['u']}")
            except Exception as exc:
                problems.append(repr(exc))
        waiter.check()

    try:
        opened = [connect(port, q, on_message) for q in ("", "?format=msgpack")]
        clients = []
        for _, d in opened:
            clients.append((yield d))
        for c in clients:
            c.send_json({"op": "subscribe", "channels": channels, "id": 1})
        yield waiter.until(lambda: all(
            sum(m.get("event") == "subscribed" for m in c.messages) == len(channels)
            for c in clients), "subscription acks")
        fills = []
        late = None
        for batch in range(150):
            for _ in range(random.Random(batch).randint(1, 25)):
                events = engine.process(flow.next_command(T0 + flow.seq * 3 * 10**9))
                fills.extend(e for e in events if type(e) is Trade)
                hub.publish(events)
            hub.flush()
            for inst in INSTRUMENTS:
                uid = hub.book_snapshot(inst.symbol, FULL_DEPTH).update_id
                history[inst.symbol][uid] = levels_as_wire(engine, inst.symbol)
            if batch == 60:
                _, d = connect(port, "?format=msgpack", on_message)
                late = yield d
                late.send_json({"op": "subscribe", "channels": channels[:4], "id": "late"})
            if batch % 10 == 0:
                yield task.deferLater(reactor, 0, lambda: None)  # let the clients read
        final = {i.symbol: hub.book_snapshot(i.symbol).update_id for i in INSTRUMENTS}
        everyone = [*clients, late]

        def caught_up():
            for c in everyone:
                for (cid, ch), rep in replicas.items():
                    symbol = ch.split("@")[1]
                    if cid == id(c) and ch.endswith("@full") and rep.update_id != final[symbol]:
                        return False
            return all(sum(len(m["data"]) for m in c.messages if m.get("type") == "trades")
                       == len(fills) for c in clients)
        yield waiter.until(caught_up, "every client to receive the last update and all trades")
        assert not problems, problems[:5]
        assert len(replicas) == 2 * 4 + 4
        for c in clients:
            for inst in INSTRUMENTS:
                price, qty = FMT[inst.symbol]
                got = [(d["id"], d["price"], d["qty"]) for m in c.messages
                       if m.get("type") == "trades" and m["channel"] == f"trades@{inst.symbol}"
                       for d in m["data"]]
                assert got == [(t.exec_id, price(t.price), qty(t.qty)) for t in fills
                               if t.symbol == inst.symbol]
            for symbol, interval in (("BTC-PERP", "1m"), ("ETH-PERP", "5m")):
                price, qty = FMT[symbol]
                candles = {}
                for m in c.messages:
                    if m.get("type") == "kline" and m["channel"] == f"kline@{symbol}@{interval}":
                        for k in m["data"]:
                            candles[k["start"]] = (k["open"], k["high"], k["low"], k["close"],
                                                   k["volume"], k["trades"])
                groups = {}
                ns = INTERVALS[interval]
                for t in fills:
                    if t.symbol == symbol:
                        groups.setdefault(t.ts - t.ts % ns, []).append(t)
                assert candles == {
                    s: (price(g[0].price), price(max(t.price for t in g)),
                        price(min(t.price for t in g)), price(g[-1].price),
                        qty(sum(t.qty for t in g)), len(g))
                    for s, g in groups.items()
                }
            assert any(m.get("type") == "ticker" for m in c.messages)
        assert len(fills) > 50
    finally:
        for c in factory.connections.copy():
            c.dropConnection(abort=True)
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_bad_requests_get_errors_and_oversized_closes():
    """Bad JSON, unknown op/channel/symbol, bad depth/interval get coded errors; 1009 on size."""
    _, _, port = start_server(max_message_bytes=512)
    waiter = Waiter()
    try:
        f, d = connect(port, "", waiter.check)
        client = yield d
        bad = [
            (b"{nope", ErrorCode.BAD_JSON),
            (b'{"op":"fly","id":1}', ErrorCode.UNKNOWN_OP),
            (b'{"op":"subscribe","channels":["candle@BTC-PERP"],"id":2}',
             ErrorCode.UNKNOWN_CHANNEL),
            (b'{"op":"subscribe","channels":["trades@FOO"],"id":3}', ErrorCode.UNKNOWN_SYMBOL),
            (b'{"op":"subscribe","channels":["orderbook@BTC-PERP@3"],"id":4}', ErrorCode.BAD_DEPTH),
            (b'{"op":"subscribe","channels":["kline@BTC-PERP@7m"],"id":5}', ErrorCode.BAD_INTERVAL),
        ]
        for data, _ in bad:
            client.sendMessage(data, False)
        client.send_json({"op": "ping", "id": 6})
        yield waiter.until(lambda: len(client.messages) == len(bad) + 1, "error replies")
        codes = [m.get("code") for m in client.messages[:-1]]
        assert codes == [code for _, code in bad]
        assert [m["id"] for m in client.messages] == [None, 1, 2, 3, 4, 5, 6]
        assert client.messages[-1] == {"event": "pong", "id": 6}
        assert all(m["message"] for m in client.messages[:-1])
        client.sendMessage(b'{"op":"ping","pad":"' + b"x" * 1000 + b'"}', False)
        _, code, reason = yield f.closed
        assert code == 1009, (code, reason)
        _, d2 = connect(port, "?format=xml")
        with pytest.raises(ConnectionError, match="400"):
            yield d2
    finally:
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_slow_consumer_closed_while_other_keeps_receiving():
    """A client that stops reading is closed with 4008; the other gets every update in order."""
    # a long close-handshake timeout: the slow client must get to read the 4008 close frame
    hub, factory, port = start_server(max_buffer_bytes=64 * 1024, close_timeout_s=60)
    waiter = Waiter()
    fast_book = BookReplica()
    errors = []

    def fast_message(client, msg):
        if msg.get("type") in ("snapshot", "update"):
            try:
                fast_book.apply(msg)
            except Exception as exc:
                errors.append(repr(exc))
        waiter.check()

    try:
        fs, ds = connect(port, "", waiter.check)
        slow = yield ds
        _, df = connect(port, "", fast_message)
        fast = yield df
        for c in (slow, fast):
            c.send_json({"op": "subscribe", "channels": ["orderbook@BTC-PERP@full"]})
        yield waiter.until(lambda: fast_book.update_id is not None and len(slow.messages) == 2,
                           "snapshots")
        server_slow = next(p for p in factory.connections
                           if p.transport.getPeer().port == slow.transport.getHost().port)
        # Small socket buffers so that a few hundred KB back up into the server's queue
        # (loopback's autotuned buffers would otherwise absorb megabytes first).
        server_slow.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        slow.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        slow.transport.pauseProducing()  # stop reading
        rng = random.Random(3)
        seq = 0
        for _ in range(1000):
            events = []
            for _ in range(200):  # big updates (several KB each) fill buffers quickly
                seq += 1
                events.append(_level(seq, rng))
            hub.publish(events)
            hub.flush()
            yield task.deferLater(reactor, 0, lambda: None)
            if server_slow.closed_cause:
                break
        assert server_slow.closed_cause == "slow_consumer", "the slow client was never closed"
        assert server_slow.queued_bytes == 0
        assert hub.subscriber_count("orderbook@BTC-PERP@full") == 1
        slow.transport.resumeProducing()  # read again: the close frame is behind the backlog
        # the fast client keeps getting updates after the slow one is gone
        for _ in range(20):
            seq += 1
            hub.publish([_level(seq, rng)])
            hub.flush()
        last = hub.book_snapshot("BTC-PERP").update_id
        yield waiter.until(lambda: fast_book.update_id == last, "the fast client to catch up")
        assert not errors, errors[:3]
        _, code, reason = yield fs.closed
        assert code == SLOW_CONSUMER_CODE and reason == "slow consumer", (code, reason)
    finally:
        for c in factory.connections.copy():
            c.dropConnection(abort=True)
        yield port.stopListening()


def _level(seq, rng):
    """A random BTC-PERP level change (about 600 levels per side at most)."""
    side = Side.BUY if rng.random() < 0.5 else Side.SELL
    base = 590_000 if side == Side.BUY else 610_000
    return LevelChanged(seq, "BTC-PERP", side, base + rng.randint(-300, 300),
                        rng.randint(0, 50), rng.randint(1, 5))


@pytest_twisted.inlineCallbacks
def test_connection_limit_per_address():
    """Past the per-address limit the handshake is refused (429); a freed slot can be reused."""
    _, factory, port = start_server(max_connections_per_address=2)
    try:
        f1, d1 = connect(port)
        _, d2 = connect(port)
        c1 = yield d1
        yield d2
        _, d3 = connect(port)
        with pytest.raises(ConnectionError, match="429"):
            yield d3
        assert len(factory.connections) == 2
        c1.sendClose(1000)
        yield f1.closed
        yield waiter_for_count(factory, 1)
        _, d4 = connect(port)
        c4 = yield d4
        assert c4.state == c4.STATE_OPEN
    finally:
        for c in factory.connections.copy():
            c.dropConnection(abort=True)
        yield port.stopListening()


@defer.inlineCallbacks
def waiter_for_count(factory, n):
    """Wait (bounded) until the server has forgotten closed connections."""
    for _ in range(200):
        if len(factory.connections) <= n:
            return
        yield task.deferLater(reactor, 0.01, lambda: None)
    raise AssertionError(f"server still holds {len(factory.connections)} connections")


@pytest_twisted.inlineCallbacks
def test_keepalive_drops_a_client_that_stops_answering_pings():
    """The server pings every client; one that never answers with a pong is dropped after the
    ping timeout, while a client that answers stays connected through several pings."""
    _, factory, port = start_server(ping_interval_s=0.5, ping_timeout_s=1.0)
    try:
        f_mute, d_mute = connect(port)
        _, d_live = connect(port)
        mute = yield d_mute
        live = yield d_live
        mute_pings = []
        mute.onPing = mute_pings.append  # Autobahn's default onPing answers with a pong
        pings = {"live": 0}
        original = live.onPing

        def counting_on_ping(payload, _original=original):
            pings["live"] += 1
            return _original(payload)

        live.onPing = counting_on_ping
        yield f_mute.closed.addTimeout(TIMEOUT, reactor)
        assert live.state == live.STATE_OPEN
        waiter = Waiter()
        loop = task.LoopingCall(waiter.check)
        loop.start(0.05)
        try:
            yield waiter.until(lambda: pings["live"] >= 3, "three pings answered by a live client")
        finally:
            loop.stop()
        assert live.state == live.STATE_OPEN, "a client answering pings is kept"
    finally:
        for c in factory.connections.copy():
            c.dropConnection(abort=True)
        yield port.stopListening()
