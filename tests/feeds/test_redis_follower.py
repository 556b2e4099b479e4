"""A follower fed only through Redis rebuilds every engine book at every batch, race-free."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor, task

from feeds.channels import TICKER, TRADES, Channel, parse_channel
from feeds.diffs import FULL_DEPTH
from feeds.encoding import WireFormat
from feeds.redis_follower import RedisFollower
from feeds.redis_keys import blocking_client
from feeds.redis_sink import RedisSink
from tests.feeds.redisutil import (
    INSTRUMENTS,
    SHARED_URL,
    Exchange,
    ReplicaSubscriber,
    delete_prefix,
    shared_redis_or_skip,
    unique_keys,
    until,
)

pytestmark = pytest.mark.integration
SYMBOLS = [i.symbol for i in INSTRUMENTS]


@pytest.fixture
def rig():
    """An exchange writing to the shared Redis and a follower of it (unique prefix, cleaned)."""
    client = shared_redis_or_skip()
    keys = unique_keys()
    ex = Exchange(SHARED_URL, keys, seed=11)
    follower = RedisFollower(blocking_client(SHARED_URL), reactor, keys=keys)
    ex.sink.start()
    yield ex, follower
    follower.stop()
    ex.sink.stop()
    delete_prefix(client, keys)
    client.close()


def in_step(ex: Exchange, follower: RedisFollower):
    """A condition: the follower has applied every batch the sink has seen."""
    return lambda: follower.in_step and follower.relay.seq == ex.sink.seq


def check_books(ex: Exchange, follower: RedisFollower, sub: ReplicaSubscriber | None) -> None:
    """The follower's books, and its subscribers' copies, equal the engine's books."""
    for sym in SYMBOLS:
        bids, asks = ex.levels(sym)
        u, f_bids, f_asks = follower.relay.book_snapshot(sym, FULL_DEPTH)
        assert [tuple(lv) for lv in f_bids] == bids, sym
        assert [tuple(lv) for lv in f_asks] == asks, sym
        assert u == ex.last_level_seq[sym]
        for depth in (5, 20):
            assert follower.relay.book_snapshot(sym, depth)[0] == ex.core.book_snapshot(
                sym, depth).update_id
            primary = ex.core.snapshot_message(Channel("orderbook", sym, depth)).payload
            mine = follower.relay.snapshot_message(Channel("orderbook", sym, depth)).payload
            assert {k: v for k, v in mine.items() if k != "ts"} == {
                k: v for k, v in primary.items() if k != "ts"}
        if sub is None:
            continue
        for depth, name in ((FULL_DEPTH, "full"), (5, "5"), (20, "20")):
            rep = sub.replicas[f"orderbook@{sym}@{name}"]
            d_bids, d_asks = ex.levels(sym, depth)
            assert rep.levels("bids") == d_bids and rep.levels("asks") == d_asks
            assert rep.update_id == ex.core.book_snapshot(sym, depth).update_id


def subscribe_all(follower: RedisFollower, fmt: WireFormat) -> ReplicaSubscriber:
    """A subscriber on every order-book channel, the tickers and the trades via the follower."""
    sub = ReplicaSubscriber(fmt)
    for sym in SYMBOLS:
        for depth in ("5", "20", "full"):
            follower.hub.subscribe(sub, parse_channel(f"orderbook@{sym}@{depth}", SYMBOLS))
        follower.hub.subscribe(sub, Channel(TICKER, sym, None))
        follower.hub.subscribe(sub, Channel(TRADES, sym, None))
    return sub


@pytest_twisted.inlineCallbacks
def test_follower_equals_engine_at_every_batch(rig):
    """Bootstrapped mid-stream, the follower and its subscribers match the engine every batch."""
    ex, follower = rig
    for _ in range(40):
        ex.batch(6)
    yield ex.sink.flushed()
    follower.start()
    yield until(lambda: follower.ready.called, "the first bootstrap")
    yield until(in_step(ex, follower), "the follower to catch up")
    sub_json = subscribe_all(follower, WireFormat.JSON)
    sub_msgpack = subscribe_all(follower, WireFormat.MSGPACK)
    check_books(ex, follower, sub_json)
    relayed_trades = 0
    for i in range(150):
        messages = ex.batch(1 + i % 9)
        relayed_trades += sum(len(m.payload["data"]) for m in messages if m.kind == TRADES)
        yield until(in_step(ex, follower), f"batch {ex.sink.seq} at the follower")
        check_books(ex, follower, sub_json)
        check_books(ex, follower, sub_msgpack)
    got_trades = [t for m in sub_json.other if m["type"] == "trades" for t in m["data"]]
    assert len(got_trades) == relayed_trades > 0
    assert [m for m in sub_json.other if m["type"] == "ticker"], "tickers relayed"
    assert follower.bootstraps == 1


@pytest_twisted.inlineCallbacks
def test_bootstrap_while_batches_keep_coming(rig):
    """A follower subscribing while batches stream in skips none and applies none twice."""
    ex, follower = rig
    yield ex.sink.flushed()
    follower.start()
    # Keep the exchange busy, one batch per reactor turn, until the follower is live.
    turns = 0
    while not follower.ready.called:
        turns += 1
        assert turns < 20_000, "the follower never bootstrapped"
        ex.batch(4)
        yield task.deferLater(reactor, 0, lambda: None)
    assert turns > 1, "batches should have streamed during the bootstrap"
    for _ in range(20):
        ex.batch(4)
    yield until(in_step(ex, follower), "the follower to catch up")
    check_books(ex, follower, None)


@pytest_twisted.inlineCallbacks
def test_exchange_restart_new_epoch_is_followed(rig):
    """A new sink (exchange restart, new epoch) makes the follower bootstrap again and resnap."""
    ex, follower = rig
    for _ in range(20):
        ex.batch(5)
    follower.start()
    yield until(lambda: follower.ready.called, "the first bootstrap")
    yield until(in_step(ex, follower), "the follower to catch up")
    sub = subscribe_all(follower, WireFormat.JSON)
    before = sub.snapshots
    ex.sink.stop()
    ex.hub.remove_sink(ex.sink)
    ex.sink = RedisSink(ex.core, blocking_client(SHARED_URL), reactor, keys=ex.keys,
                        epoch=ex.sink.epoch + 1)
    ex.hub.add_sink(ex.sink)
    ex.sink.start()
    yield ex.sink.flushed()
    for _ in range(10):
        ex.batch(5)
    yield until(lambda: follower.relay.epoch == ex.sink.epoch, "the new epoch")
    yield until(in_step(ex, follower), "the follower to catch up")
    check_books(ex, follower, sub)
    assert follower.bootstraps >= 2
    assert sub.snapshots >= before + 3 * len(SYMBOLS), "subscribers got fresh snapshots"
