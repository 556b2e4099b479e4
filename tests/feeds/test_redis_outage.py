"""Redis killed under load: matching goes on, the sink resyncs, the follower re-bootstraps.

The test runs its own redis-server (a free port, no persistence) and SIGKILLs it: the shared
Redis of the other tests is never touched.
"""

from __future__ import annotations

import pytest
import pytest_twisted
from prometheus_client import REGISTRY
from twisted.internet import reactor

from feeds.encoding import WireFormat
from feeds.redis_follower import RedisFollower
from feeds.redis_keys import blocking_client, parse_meta
from tests.feeds.redisutil import Exchange, PrivateRedis, unique_keys, until
from tests.feeds.test_redis_follower import check_books, in_step, subscribe_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def metric(name: str) -> float:
    """A sample of the default registry (0 if it has none yet)."""
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture
def private_redis():
    """A private redis-server, killed and removed afterwards."""
    server = PrivateRedis()
    server.start()
    yield server
    server.close()


@pytest_twisted.inlineCallbacks
def test_redis_outage_matching_goes_on_and_feeds_recover(private_redis):
    """Kill Redis mid-flow, keep trading, restart it: Redis and the follower end up exact."""
    server = private_redis
    keys = unique_keys()
    fast = {"backoff_initial": 0.01, "backoff_max": 0.1}
    ex = Exchange(server.url, keys, seed=23, **fast)
    follower = RedisFollower(blocking_client(server.url, timeout_s=1.0), reactor, keys=keys,
                             **fast)
    try:
        ex.sink.start()
        for _ in range(30):
            ex.batch(5)
        follower.start()
        yield until(lambda: follower.ready.called, "the first bootstrap")
        sub = subscribe_all(follower, WireFormat.MSGPACK)
        for _ in range(30):
            ex.batch(5)
            yield until(in_step(ex, follower), "the follower in step before the outage")
            check_books(ex, follower, sub)
        assert ex.sink.connected and metric("redis_sink_connected") == 1
        failures = metric("redis_sink_failures_total")
        bootstraps = follower.bootstraps

        server.kill()
        messages_before = len(ex.messages)
        trades_before = sum(len(t) for t in ex.trades.values())
        for _ in range(5):
            ex.batch(5)  # matching and the hub go on; nothing raises into the reactor
        yield until(lambda: not ex.sink.connected, "the sink to notice the outage")
        yield until(lambda: follower.state in ("down", "subscribing"),
                    "the follower to notice the outage")
        for _ in range(40):
            ex.batch(5)  # dropped and coalesced while Redis is down
        # the engine matched and the hub published to its own subscribers all along
        assert sum(len(t) for t in ex.trades.values()) > trades_before
        assert len(ex.messages) > messages_before + 45
        assert metric("redis_sink_connected") == 0
        assert metric("redis_sink_failures_total") > failures
        assert metric("redis_follower_connected") == 0

        server.start()  # empty: no state, no meta until the sink syncs
        yield until(lambda: ex.sink.connected, "the sink to reconnect and sync")
        yield until(lambda: follower.bootstraps > bootstraps and follower.in_step,
                    "the follower to bootstrap again")
        snapshots = sub.snapshots
        assert metric("redis_sink_connected") == 1
        meta = parse_meta(blocking_client(server.url).hgetall(keys.meta))
        assert meta is not None and meta.epoch == ex.sink.epoch
        yield until(in_step(ex, follower), "the follower at the sink's seq")
        check_books(ex, follower, sub)  # subscribers got fresh snapshots of the new state
        for _ in range(30):
            ex.batch(5)
            yield until(in_step(ex, follower), "the follower in step after the outage")
            check_books(ex, follower, sub)
        assert sub.snapshots == snapshots, "no further resync once in step"
    finally:
        follower.stop()
        ex.sink.stop()
