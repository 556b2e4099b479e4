"""A follower fed only through Redis rebuilds every engine book at every batch, race-free."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from feeds.channels import TICKER, TRADES, Channel, parse_channel
from feeds.diffs import FULL_DEPTH
from feeds.encoding import WireFormat
from feeds.redis_follower import RedisFollower
from feeds.redis_keys import BATCH, SYNC, Envelope, blocking_client, parse_meta, unpack_envelope
from feeds.redis_sink import RedisSink
from tests.feeds.redisutil import (
    INSTRUMENTS,
    SHARED_URL,
    TIMEOUT,
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


class GatedClient:
    """The follower's blocking client, with the test deciding when its state reads run.

    A read waits before its MULTI until ``go`` is set, and after it (the state is then fixed
    at ``read_seqs[-1]``) until ``deliver`` is set, so a test can publish batches in each
    window of a bootstrap. ``handed`` lists the envelopes the subscription thread has handed
    to the reactor (one is recorded when the thread comes back for the next message, after
    its ``callFromThread``): a read result released after that is applied after them.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.go = threading.Event()
        self.deliver = threading.Event()
        self.at_read = threading.Event()  # a read is waiting for ``go``
        self.read_seqs: list[int] = []  # the seq of each state read, in order
        self.handed: list[Envelope] = []

    def open(self) -> None:
        """Let every read through (also what teardown does, so no thread stays blocked)."""
        self.go.set()
        self.deliver.set()

    def hgetall(self, key: str) -> Any:
        return self.client.hgetall(key)

    def pipeline(self, transaction: bool = True) -> GatedPipeline:
        return GatedPipeline(self, self.client.pipeline(transaction=transaction))

    def pubsub(self) -> HandingPubSub:
        return HandingPubSub(self, self.client.pubsub())

    def close(self) -> None:
        self.client.close()


class GatedPipeline:
    """The MULTI of a state read, held at both ends by its GatedClient."""

    def __init__(self, gate: GatedClient, pipe: Any) -> None:
        self.gate = gate
        self.pipe = pipe

    def hgetall(self, key: str) -> None:
        self.pipe.hgetall(key)

    def get(self, key: str) -> None:
        self.pipe.get(key)

    def execute(self) -> list:
        self.gate.at_read.set()
        self.gate.go.wait(TIMEOUT)
        results = self.pipe.execute()
        meta = parse_meta(results[0])
        self.gate.read_seqs.append(meta.seq if meta is not None else -1)
        self.gate.deliver.wait(TIMEOUT)
        return list(results)


class HandingPubSub:
    """A pub/sub that records each envelope once the follower's thread has handed it over."""

    def __init__(self, gate: GatedClient, pubsub: Any) -> None:
        self.gate = gate
        self.pubsub = pubsub
        self.last: Envelope | None = None

    def subscribe(self, channel: str) -> None:
        self.pubsub.subscribe(channel)

    def get_message(self, timeout: float) -> Any:
        if self.last is not None:  # the caller is back: it has handed the last one over
            self.gate.handed.append(self.last)
            self.last = None
        m = self.pubsub.get_message(timeout=timeout)
        if m is not None and m["type"] == "message":
            self.last = unpack_envelope(m["data"])
        return m

    def close(self) -> None:
        self.pubsub.close()


@pytest.fixture
def gated_rig():
    """The rig with a GatedClient under the follower (its gates opened at teardown)."""
    client = shared_redis_or_skip()
    keys = unique_keys()
    ex = Exchange(SHARED_URL, keys, seed=11)
    gate = GatedClient(blocking_client(SHARED_URL))
    follower = RedisFollower(gate, reactor, keys=keys)
    ex.sink.start()
    yield ex, follower, gate
    gate.open()
    follower.stop()
    ex.sink.stop()
    delete_prefix(client, keys)
    client.close()


def handed_up_to(gate: GatedClient, ex: Exchange):
    """A condition: the follower has been handed every envelope the sink has published."""
    return lambda: bool(gate.handed) and (gate.handed[-1].epoch, gate.handed[-1].seq) == (
        ex.sink.epoch, ex.sink.seq)


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
def test_bootstrap_while_batches_keep_coming(gated_rig):
    """A follower subscribing while batches stream in skips none and applies none twice."""
    # Batches land in each window of the bootstrap: after the subscription and before the
    # read (held, already in the state: skipped), after the read and before the state is
    # loaded (held, newer: applied on top), and after it (applied as they come). The gates
    # make every window non-empty on every run; a free-running stream left that to thread
    # scheduling (some runs held nothing, and under a busy reactor the test depended on how
    # soon the follower's threads got the GIL).
    ex, follower, gate = gated_rig
    applied: list[int] = []
    follower.on_envelope.append(lambda env: applied.append(env.seq))
    yield ex.sink.flushed()
    follower.start()
    yield until(gate.at_read.is_set, "the state read")
    for _ in range(5):
        ex.batch(4)
    yield ex.sink.flushed()
    yield until(handed_up_to(gate, ex), "the batches before the read at the follower")
    gate.go.set()
    yield until(lambda: gate.read_seqs, "the MULTI of the state read")
    assert gate.read_seqs == [ex.sink.seq] and ex.sink.seq >= 5
    read_at = ex.sink.seq
    for _ in range(5):
        ex.batch(4)
    yield ex.sink.flushed()
    yield until(handed_up_to(gate, ex), "the batches after the read at the follower")
    assert not follower.ready.called
    gate.deliver.set()
    yield until(lambda: follower.ready.called, "the first bootstrap")
    assert applied == list(range(read_at + 1, read_at + 6)), "held batches newer than the state"
    for _ in range(20):
        ex.batch(4)
    yield until(in_step(ex, follower), "the follower to catch up")
    check_books(ex, follower, None)
    assert applied == list(range(read_at + 1, ex.sink.seq + 1)), "each batch once, in order"
    assert gate.read_seqs == [read_at] and follower.bootstraps == 1


@pytest_twisted.inlineCallbacks
def test_sync_older_than_the_read_state_is_no_reason_to_read_again(gated_rig):
    """A SYNC arriving during a state read that already includes it costs no second read."""
    # The subscription runs behind the reads, so under a busy exchange whose sink keeps
    # resyncing (its queue overflows), older SYNC notices keep arriving during reads. When
    # each of them threw the read away, the follower never bootstrapped.
    ex, follower, gate = gated_rig
    yield ex.sink.flushed()
    follower.start()
    yield until(gate.at_read.is_set, "the state read")
    ex.batch(4)
    ex.sink.request_sync()
    yield ex.sink.flushed()
    ex.batch(4)
    yield ex.sink.flushed()
    yield until(handed_up_to(gate, ex), "the SYNC and the batches at the follower")
    assert [e.kind for e in gate.handed[-2:]] == [SYNC, BATCH]
    gate.open()
    yield until(lambda: follower.ready.called, "the first bootstrap")
    yield until(in_step(ex, follower), "the follower to catch up")
    assert gate.read_seqs == [ex.sink.seq], "one read, which already had the SYNC"
    check_books(ex, follower, None)


@pytest_twisted.inlineCallbacks
def test_sync_newer_than_the_read_state_makes_the_follower_read_again(gated_rig):
    """A SYNC of another sink run arriving after the state read makes the follower read again."""
    ex, follower, gate = gated_rig
    yield ex.sink.flushed()
    follower.start()
    gate.go.set()
    yield until(lambda: gate.read_seqs, "the MULTI of the state read")
    ex.batch(4)
    yield ex.sink.flushed()
    ex.sink.stop()
    ex.hub.remove_sink(ex.sink)
    ex.sink = RedisSink(ex.core, blocking_client(SHARED_URL), reactor, keys=ex.keys,
                        epoch=ex.sink.epoch + 1)
    ex.hub.add_sink(ex.sink)
    ex.sink.start()
    yield ex.sink.flushed()
    ex.batch(4)
    yield ex.sink.flushed()
    yield until(handed_up_to(gate, ex), "the new run's SYNC and batch at the follower")
    gate.deliver.set()
    yield until(lambda: follower.ready.called, "the first bootstrap")
    yield until(in_step(ex, follower), "the follower to catch up")
    assert follower.relay.epoch == ex.sink.epoch
    assert len(gate.read_seqs) == 2 and follower.bootstraps == 2
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
