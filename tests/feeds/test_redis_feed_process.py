"""`python -m feeds.feed_process` serves the books from Redis to a real WebSocket client."""

from __future__ import annotations

import os
import sys

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ProcessExitedAlready

from feeds.diffs import FULL_DEPTH
from feeds.replica import BookReplica
from tests.feeds.redisutil import (
    INSTRUMENTS,
    SHARED_URL,
    TIMEOUT,
    Exchange,
    delete_prefix,
    shared_redis_or_skip,
    unique_keys,
    until,
)
from tests.feeds.wsclient import FeedClientFactory

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYMBOLS = [i.symbol for i in INSTRUMENTS]


class FeedProcess(protocol.ProcessProtocol):
    """The subprocess: ``ready`` fires with its WebSocket port, ``ended`` when it exits."""

    def __init__(self) -> None:
        self.ready: defer.Deferred = defer.Deferred()
        self.ended: defer.Deferred = defer.Deferred()
        self.out = b""
        self.err = b""

    def outReceived(self, data: bytes) -> None:
        self.out += data
        for line in self.out.splitlines():
            if line.startswith(b"feed_process ready port=") and not self.ready.called:
                self.ready.callback(int(line.split(b"=")[1]))

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: object) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"feed_process exited: {self.err[-2000:]!r}"))
        self.ended.callback(None)


@pytest.fixture
def exchange():
    """An exchange rig writing to the shared Redis under a unique prefix (removed after)."""
    client = shared_redis_or_skip()
    keys = unique_keys()
    ex = Exchange(SHARED_URL, keys, seed=5)
    ex.sink.start()
    yield ex
    ex.sink.stop()
    delete_prefix(client, keys)
    client.close()


@pytest_twisted.inlineCallbacks
def test_feed_process_client_book_equals_engine_at_every_batch(exchange):
    """A client of the feed process holds each engine book (full and top 5) after every batch."""
    ex = exchange
    for _ in range(20):
        ex.batch(6)
    yield ex.sink.flushed()
    proc = FeedProcess()
    argv = [sys.executable, "-m", "feeds.feed_process", "--redis", SHARED_URL,
            "--prefix", ex.keys.prefix, "--port", "0"]
    env = dict(os.environ, PYTHONPATH=REPO)
    transport = reactor.spawnProcess(proc, sys.executable, argv, env=env, path=REPO)
    client_factory = None
    try:
        proc.ready.addTimeout(TIMEOUT, reactor)
        port = yield proc.ready
        replicas = {f"orderbook@{s}@{d}": BookReplica() for s in SYMBOLS for d in ("full", "5")}
        trades: list[dict] = []

        def on_message(client, msg):
            channel = msg.get("channel", "")
            if channel in replicas and msg.get("type") in ("snapshot", "update"):
                replicas[channel].apply(msg)  # raises on a gap or a bad checksum
            elif msg.get("type") == "trades":
                trades.extend(msg["data"])

        client_factory = FeedClientFactory(f"ws://127.0.0.1:{port}/?format=json", on_message)
        reactor.connectTCP("127.0.0.1", port, client_factory, timeout=TIMEOUT)
        client_factory.opened.addTimeout(TIMEOUT, reactor)
        client = yield client_factory.opened
        client.send_json({"op": "subscribe", "id": 1,
                          "channels": [*replicas, *(f"trades@{s}" for s in SYMBOLS)]})

        def caught_up():
            return all(
                replicas[f"orderbook@{s}@full"].update_id == ex.last_level_seq[s]
                and replicas[f"orderbook@{s}@5"].update_id == ex.core.book_snapshot(
                    s, 5).update_id
                for s in SYMBOLS)

        traded = 0
        for i in range(120):
            if i:
                traded += sum(len(m.payload["data"]) for m in ex.batch(1 + i % 8)
                              if m.kind == "trades")
            yield until(caught_up, lambda: (
                f"batch {ex.sink.seq} at the WebSocket client (client holds "
                f"{[(n, r.update_id) for n, r in replicas.items()]}, exchange "
                f"{ex.last_level_seq}, last messages {client.messages[-3:]}, "
                f"feed_process stderr {proc.err[-2000:]!r})"))
            for s in SYMBOLS:
                for depth, name in ((FULL_DEPTH, "full"), (5, "5")):
                    bids, asks = ex.levels(s, depth)
                    rep = replicas[f"orderbook@{s}@{name}"]
                    assert rep.levels("bids") == bids and rep.levels("asks") == asks
        yield until(lambda: len(trades) == traded, f"{traded} trades at the client")
        assert traded > 0
        assert client.close_info is None, client.close_info
    finally:
        if client_factory is not None and client_factory.client is not None:
            client_factory.client.dropConnection(abort=True)
        if not proc.ended.called:
            try:
                transport.signalProcess("TERM")
            except ProcessExitedAlready:
                pass
        ended = proc.ended
        ended.addTimeout(TIMEOUT, reactor)
        yield ended
