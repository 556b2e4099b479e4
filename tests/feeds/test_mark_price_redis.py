"""Mark and index reach real Redis (ticker and mark keys) and a follower, in-process or a
separate feed process, shows the same values as the exchange."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.error import ProcessExitedAlready

from engine.commands import SetIndexPrice, Tick
from engine.events import MarkPriceUpdated
from engine.instruments import demo_instruments
from feeds.channels import MARK_PRICE, TICKER, Channel
from feeds.core import FeedMessage
from feeds.encoding import WireFormat
from feeds.redis_follower import RedisFollower
from feeds.redis_keys import blocking_client
from tests.feeds.redisutil import (
    SHARED_URL,
    TIMEOUT,
    Exchange,
    decode,
    delete_prefix,
    shared_redis_or_skip,
    unique_keys,
    until,
)
from tests.feeds.test_redis_feed_process import REPO, FeedProcess
from tests.feeds.wsclient import FeedClientFactory

pytestmark = pytest.mark.integration
BTC = "BTC-PERP"
SECOND = 10**9
PRICE = demo_instruments()[0].ticks_to_price
assert demo_instruments()[0].symbol == BTC
MARK_BTC = Channel(MARK_PRICE, BTC, None)
TICKER_BTC = Channel(TICKER, BTC, None)


@pytest.fixture
def rig():
    """An exchange writing to the shared Redis (unique prefix, removed after) and a follower."""
    client = shared_redis_or_skip()
    keys = unique_keys()
    ex = Exchange(SHARED_URL, keys, seed=3)
    follower = RedisFollower(blocking_client(SHARED_URL), reactor, keys=keys)
    ex.sink.start()
    yield ex, follower, client
    follower.stop()
    ex.sink.stop()
    delete_prefix(client, keys)
    client.close()


def set_index_and_mark(ex: Exchange, index: int, symbol: str = BTC) -> MarkPriceUpdated:
    """SetIndexPrice, then a Tick one mark interval later, through the engine; one batch."""
    ex.ts += SECOND
    events: list[Any] = []
    for command in (SetIndexPrice, Tick):
        ex.flow.seq += 1
        args = (symbol, index) if command is SetIndexPrice else ()
        events += ex.engine.process(command(ex.flow.seq, ex.ts, *args))
    ex.hub.publish(events)
    ex.messages.extend(ex.hub.flush())
    marks = [e for e in events if type(e) is MarkPriceUpdated and e.symbol == symbol]
    assert len(marks) == 1, events
    return marks[0]


def payload(msg: FeedMessage | None) -> dict:
    assert msg is not None
    return msg.payload


class Collector:
    """A subscriber of the follower's hub (msgpack frames, decoded)."""

    wire_format = WireFormat.MSGPACK

    def __init__(self) -> None:
        self.messages: list[dict] = []

    def deliver(self, frame: bytes) -> None:
        self.messages.append(decode(frame))


@pytest_twisted.inlineCallbacks
def test_redis_keys_and_follower_carry_mark_and_index(rig):
    """After a mark the Redis ticker key holds mark and index and the mark key the markPrice
    message; a follower bootstrapped from Redis serves the same snapshots, relays each later
    mark to its subscribers, and keeps them across a sync (the sink's full rewrite)."""
    ex, follower, client = rig
    for _ in range(5):
        ex.batch(6)
    first = set_index_and_mark(ex, 600_500)
    yield ex.sink.flushed()
    ticker = decode(client.get(ex.keys.ticker(BTC)))
    # the mark is the index plus the book's smoothed basis (the order flow made a book)
    assert (ticker["mark"], ticker["index"]) == (PRICE(first.mark), "60050.0")
    assert ticker == payload(ex.core.snapshot_message(TICKER_BTC))
    stored = decode(client.get(ex.keys.mark(BTC)))
    assert stored == payload(ex.core.snapshot_message(MARK_BTC))
    assert (stored["u"], stored["ts"], stored["index"], stored["mark"]) == (
        first.seq, first.ts, "60050.0", PRICE(first.mark))
    eth = decode(client.get(ex.keys.mark("ETH-PERP")))  # written by the start-up sync
    assert (eth["index"], eth["mark"]) == (None, None)

    follower.start()
    yield until(lambda: follower.ready.called, "the follower's first bootstrap")
    relay = follower.relay
    assert payload(relay.snapshot_message(MARK_BTC)) == stored
    assert payload(relay.snapshot_message(TICKER_BTC)) == ticker
    sub = Collector()
    follower.hub.subscribe(sub, MARK_BTC)
    follower.hub.subscribe(sub, TICKER_BTC)
    second = set_index_and_mark(ex, 601_500)
    yield until(lambda: relay.seq == ex.sink.seq, "the mark batch at the follower")
    marks = [m for m in sub.messages if m["type"] == "markPrice"]
    assert [(m["u"], m["mark"]) for m in marks] == [(first.seq, PRICE(first.mark)),
                                                    (second.seq, PRICE(second.mark))]
    assert marks[-1] == payload(ex.core.snapshot_message(MARK_BTC))
    tickers = [m for m in sub.messages if m["type"] == "ticker"]
    assert (tickers[-1]["mark"], tickers[-1]["index"]) == (PRICE(second.mark), "60150.0")

    # the sink's full rewrite (start-up, recovery) writes the same mark and ticker, and a
    # follower bootstrapped from it serves them
    ex.sink.request_sync()
    yield ex.sink.flushed()
    assert decode(client.get(ex.keys.mark(BTC))) == payload(ex.core.snapshot_message(MARK_BTC))
    assert decode(client.get(ex.keys.ticker(BTC))) == payload(
        ex.core.snapshot_message(TICKER_BTC))
    later = RedisFollower(blocking_client(SHARED_URL), reactor, keys=ex.keys)
    later.start()
    try:
        yield until(lambda: later.ready.called, "the second follower's bootstrap")
        assert payload(later.relay.snapshot_message(MARK_BTC)) == payload(
            ex.core.snapshot_message(MARK_BTC))
        assert payload(later.relay.snapshot_message(TICKER_BTC))["mark"] == PRICE(second.mark)
    finally:
        later.stop()


@pytest.mark.slow
@pytest_twisted.inlineCallbacks
def test_second_feed_process_shows_the_same_mark(rig):
    """`python -m feeds.feed_process` over the same Redis gives a WebSocket client the
    exchange's markPrice snapshot and ticker mark, then the next mark as it happens."""
    ex, _, _ = rig
    first = set_index_and_mark(ex, 600_700)
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
        client_factory = FeedClientFactory(f"ws://127.0.0.1:{port}/?format=json")
        reactor.connectTCP("127.0.0.1", port, client_factory, timeout=TIMEOUT)
        client_factory.opened.addTimeout(TIMEOUT, reactor)
        client = yield client_factory.opened
        client.send_json({"op": "subscribe", "id": 1,
                          "channels": ["markPrice@BTC-PERP", "ticker@BTC-PERP"]})

        def of(kind: str) -> list[dict]:
            return [m for m in client.messages if m.get("type") == kind]

        def said() -> str:
            return f"messages {client.messages[-4:]}, stderr {proc.err[-2000:]!r}"

        yield until(lambda: of("markPrice") and of("ticker"), said)
        assert of("markPrice")[0] == payload(ex.core.snapshot_message(MARK_BTC))
        assert of("ticker")[0] == payload(ex.core.snapshot_message(TICKER_BTC))
        assert of("ticker")[0]["mark"] == PRICE(first.mark)
        moved = set_index_and_mark(ex, 601_700)
        yield until(lambda: len(of("markPrice")) == 2, said)
        assert of("markPrice")[1] == payload(ex.core.snapshot_message(MARK_BTC))
        assert of("markPrice")[1]["u"] == moved.seq
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
