"""Liquidations and funding reach real Redis, and a follower (in-process or a separate feed
process) serves the same liquidations and markPrice messages as the exchange."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.error import ProcessExitedAlready

from engine.enums import MarginMode
from engine.events import Liquidated, Trade
from feeds.channels import LIQUIDATIONS, MARK_PRICE, Channel
from feeds.core import FeedCore, FeedMessage
from feeds.encoding import WireFormat
from feeds.hub import FeedHub
from feeds.redis_follower import RedisFollower
from feeds.redis_keys import blocking_client
from feeds.redis_sink import RedisSink
from tests.engine.riskutil import BTC, BUY, ETH, SELL, RiskDriver, margined_instruments, of
from tests.feeds.redisutil import (
    SHARED_URL,
    TIMEOUT,
    decode,
    delete_prefix,
    shared_redis_or_skip,
    unique_keys,
    until,
)
from tests.feeds.test_redis_feed_process import REPO, FeedProcess
from tests.feeds.wsclient import FeedClientFactory

pytestmark = pytest.mark.integration
INSTRUMENTS = margined_instruments()
LIQ_BTC = Channel(LIQUIDATIONS, BTC, None)
MARK_BTC = Channel(MARK_PRICE, BTC, None)


class MarginExchange:
    """Risk engine (margined instruments), feed core, hub and a Redis sink, command by
    command: every command's events are published and flushed as one batch."""

    def __init__(self, keys: Any) -> None:
        self.driver = RiskDriver(price_band_ppm=200_000)
        self.core = FeedCore(INSTRUMENTS)
        self.hub = FeedHub(self.core)
        self.keys = keys
        self.sink = RedisSink(self.core, blocking_client(SHARED_URL), reactor, keys=keys)
        self.hub.add_sink(self.sink)
        self.sent: list[FeedMessage] = []

    def run(self, events: list) -> list:
        self.hub.publish(events)
        self.sent.extend(self.hub.flush())
        return events

    def liquidate_isolated_long(self, account: str, lots: int) -> list[Liquidated]:
        """The engine's isolated-long scenario at the current prices: mark 60,000, a long of
        ``lots`` with 10% margin, a bid 9% down, then an index 9.7% down; its steps."""
        d, run = self.driver, self.run
        run(d.index(600_000))
        run(d.tick())
        run(d.deposit(account, 10 * lots))
        run(d.mode(account, MarginMode.ISOLATED))
        run(d.deposit("B", 1_000_000))
        run(d.order("B", SELL, lots, 600_000))
        assert of(run(d.order(account, BUY, lots, 600_000)), Trade)
        run(d.deposit("C", 1_000_000))
        run(d.order("C", BUY, lots, 545_000))
        run(d.index(542_000))
        steps = of(run(d.tick()), Liquidated)
        assert steps, "the engine liquidated"
        return steps


@pytest.fixture
def rig():
    """An exchange writing to the shared Redis (unique prefix, removed after) and a follower."""
    client = shared_redis_or_skip()
    keys = unique_keys()
    ex = MarginExchange(keys)
    ex.run(ex.driver.index(300_000, ETH))
    follower = RedisFollower(blocking_client(SHARED_URL), reactor, keys=keys)
    ex.sink.start()
    yield ex, follower, client
    follower.stop()
    ex.sink.stop()
    delete_prefix(client, keys)
    client.close()


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
def test_redis_key_and_follower_carry_liquidations_and_funding(rig):
    """After a liquidation the Redis key holds the exchange's liquidations snapshot and the
    mark key its markPrice with funding; a follower bootstrapped from Redis serves the same
    snapshots, relays the next liquidation's steps byte for byte in content, and its snapshot
    then equals the exchange's; a sync's rewrite gives a new follower the same."""
    ex, follower, client = rig
    first = ex.liquidate_isolated_long("A", 1_000)
    yield ex.sink.flushed()
    stored = decode(client.get(ex.keys.liquidations(BTC)))
    assert stored == payload(ex.core.snapshot_message(LIQ_BTC))
    assert [e["id"] for e in stored["data"]] == [s.order_id for s in first]
    mark = decode(client.get(ex.keys.mark(BTC)))
    assert mark == payload(ex.core.snapshot_message(MARK_BTC))
    assert mark["funding_rate"] is not None and mark["next_funding_ts"] > 0
    eth = decode(client.get(ex.keys.liquidations(ETH)))  # written by the start-up sync
    assert eth["data"] == []

    follower.start()
    yield until(lambda: follower.ready.called, "the follower's first bootstrap")
    relay = follower.relay
    assert payload(relay.snapshot_message(LIQ_BTC)) == stored
    assert payload(relay.snapshot_message(MARK_BTC)) == mark
    sub = Collector()
    follower.hub.subscribe(sub, LIQ_BTC)
    before = len(ex.sent)
    second = ex.liquidate_isolated_long("D", 500)
    sent = [m.payload for m in ex.sent[before:] if m.kind == LIQUIDATIONS]
    assert len(sent) == len(second)
    yield until(lambda: relay.seq == ex.sink.seq, "the liquidation batch at the follower")
    assert sub.messages[0] == stored, "the snapshot first"
    assert sub.messages[1:] == sent
    assert payload(relay.snapshot_message(LIQ_BTC)) == payload(ex.core.snapshot_message(LIQ_BTC))
    assert len(payload(relay.snapshot_message(LIQ_BTC))["data"]) == len(first) + len(second)

    ex.sink.request_sync()
    yield ex.sink.flushed()
    later = RedisFollower(blocking_client(SHARED_URL), reactor, keys=ex.keys)
    later.start()
    try:
        yield until(lambda: later.ready.called, "the second follower's bootstrap")
        assert payload(later.relay.snapshot_message(LIQ_BTC)) == payload(
            ex.core.snapshot_message(LIQ_BTC))
        assert payload(later.relay.snapshot_message(MARK_BTC)) == payload(
            ex.core.snapshot_message(MARK_BTC))
    finally:
        later.stop()


@pytest.mark.slow
@pytest_twisted.inlineCallbacks
def test_second_feed_process_shows_the_same_liquidations(rig):
    """`python -m feeds.feed_process` over the same Redis gives a WebSocket client the
    exchange's liquidations snapshot, then each step of the next liquidation as it happens."""
    ex, _, _ = rig
    ex.liquidate_isolated_long("A", 1_000)
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
        client.send_json({"op": "subscribe", "id": 1, "channels": ["liquidations@BTC-PERP"]})

        def of_type(kind: str) -> list[dict]:
            return [m for m in client.messages if m.get("type") == kind]

        def said() -> str:
            return f"messages {client.messages[-4:]}, stderr {proc.err[-2000:]!r}"

        yield until(lambda: of_type("snapshot"), said)
        assert of_type("snapshot")[0] == payload(ex.core.snapshot_message(LIQ_BTC))
        before = len(ex.sent)
        steps = ex.liquidate_isolated_long("D", 500)
        sent = [m.payload for m in ex.sent[before:] if m.kind == LIQUIDATIONS]
        yield until(lambda: len(of_type("liquidation")) == len(steps), said)
        assert of_type("liquidation") == sent
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
