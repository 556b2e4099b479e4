"""Trading status through Redis: the sink keeps each symbol's status message in the meta hash
(batches and syncs), and a follower serves it to a late subscriber and relays each change."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor

from engine.commands import SetInstrumentStatus
from engine.enums import InstrumentStatus
from feeds.channels import STATUS, Channel
from feeds.encoding import WireFormat
from feeds.redis_follower import RedisFollower
from feeds.redis_keys import blocking_client, parse_meta, status_field
from tests.feeds.redisutil import (
    INSTRUMENTS,
    SHARED_URL,
    TIMEOUT,
    Exchange,
    ReplicaSubscriber,
    decode,
    delete_prefix,
    shared_redis_or_skip,
    unique_keys,
    until,
)

pytestmark = pytest.mark.integration
BTC = "BTC-PERP"


@pytest.fixture
def exchange():
    """An exchange rig writing to the shared Redis under a unique prefix (removed after)."""
    client = shared_redis_or_skip()
    keys = unique_keys()
    ex = Exchange(SHARED_URL, keys, seed=13)
    ex.client = client
    ex.sink.start()
    yield ex
    ex.sink.stop()
    delete_prefix(client, keys)
    client.close()


def set_status(ex: Exchange, symbol: str, status: InstrumentStatus) -> int:
    """Run a SetInstrumentStatus through the engine (the next seq of the flow) and a batch
    with a little more flow; returns the command's seq."""
    ex.flow.seq += 1
    seq = ex.flow.seq
    ex.ts += 1_000_000
    ex.hub.publish(ex.engine.process(SetInstrumentStatus(seq, ex.ts, symbol, status)))
    ex.batch(2)
    return seq


def stored_status(ex: Exchange, symbol: str) -> dict | None:
    data = ex.client.hget(ex.keys.meta, status_field(symbol))
    return None if data is None else decode(data)


@pytest_twisted.inlineCallbacks
def test_sink_stores_every_symbols_status_and_each_change(exchange):
    """The start-up sync stores every symbol's status; a released change overwrites it with the
    very bytes the WebSocket got, and a sync after it keeps it."""
    ex = exchange
    ex.batch(3)
    yield ex.sink.flushed()
    meta = parse_meta(ex.client.hgetall(ex.keys.meta))
    assert meta is not None
    assert [s for s, _ in meta.statuses] == sorted(i.symbol for i in INSTRUMENTS)
    assert stored_status(ex, BTC)["status"] == "trading"
    halted_at = set_status(ex, BTC, InstrumentStatus.HALTED)
    (message,) = [m for m in ex.messages if m.kind == STATUS]
    yield ex.sink.flushed()
    assert ex.client.hget(ex.keys.meta, status_field(BTC)) == message.encoded(
        WireFormat.MSGPACK)
    assert stored_status(ex, BTC)["u"] == halted_at
    ex.sink.request_sync()
    ex.batch(1)
    yield ex.sink.flushed()
    assert stored_status(ex, BTC) == message.payload
    assert stored_status(ex, "ETH-PERP")["status"] == "trading"


@pytest_twisted.inlineCallbacks
def test_follower_serves_the_status_and_relays_changes(exchange):
    """A follower started after a halt gives a new subscriber the halted status, then relays
    the resume as an update."""
    ex = exchange
    ex.batch(4)
    halted_at = set_status(ex, BTC, InstrumentStatus.HALTED)
    yield ex.sink.flushed()
    follower = RedisFollower(blocking_client(SHARED_URL), reactor, keys=ex.keys)
    follower.start()
    try:
        follower.ready.addTimeout(TIMEOUT, reactor)
        yield follower.ready
        sub = ReplicaSubscriber(WireFormat.MSGPACK)
        follower.hub.subscribe(sub, Channel(STATUS, BTC, None))
        assert [(m["status"], m["u"]) for m in sub.other] == [("halted", halted_at)]
        resumed_at = set_status(ex, BTC, InstrumentStatus.TRADING)
        yield until(lambda: len(sub.other) == 2,
                    lambda: f"the resume at the follower's subscriber (got {sub.other})")
        assert (sub.other[1]["type"], sub.other[1]["status"], sub.other[1]["u"]) == (
            "status", "trading", resumed_at)
    finally:
        follower.stop()
