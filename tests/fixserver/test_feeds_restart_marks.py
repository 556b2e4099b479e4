"""After a restart the feed's markPrice snapshot and ticker show the recovered index and mark."""

from __future__ import annotations

import pytest
import pytest_twisted

from engine.commands import SetIndexPrice
from feeds.channels import MARK_PRICE, TICKER, Channel
from fixserver.orderentry.ownership import origin
from fixserver.server import FixServer
from tests.fixserver.inprocess_exchange import start_exchange

BTC = "BTC-PERP"
MARK = Channel(MARK_PRICE, BTC, None)
TICKER_BTC = Channel(TICKER, BTC, None)


def _pipeline(server: FixServer):
    """The order pipeline behind the server's market-data router."""
    return server.feeds.application.other.pipeline


def _shown(server: FixServer) -> tuple[dict, dict]:
    core = server.feeds.core
    mark, ticker = core.snapshot_message(MARK), core.snapshot_message(TICKER_BTC)
    assert mark is not None and ticker is not None
    return mark.payload, ticker.payload


@pytest.mark.parametrize("from_snapshot", [True, False], ids=["snapshot", "journal-replay"])
@pytest_twisted.inlineCallbacks
def test_restarted_feed_shows_the_recovered_mark(tmp_path, from_snapshot):
    """Index set and marked through the pipeline; a restart (from the shutdown snapshot, or
    replaying the journal as after a crash) seeds the same index and mark, u and ts 0, and
    publishes no markPrice message for it."""
    server = start_exchange(tmp_path)
    pipeline = _pipeline(server)
    who = origin("", "A", "test", "index-price")
    for price in (600_500, 600_700):  # the second batch's Tick computes the first mark
        pipeline.submit(who, SetIndexPrice(0, 0, BTC, price))
        pipeline.tick()
        yield pipeline.when_idle()
    server.feeds.hub.flush()
    mark, ticker = _shown(server)
    assert mark["mark"] is not None and mark["u"] > 0, mark
    assert ticker["index"] == "60070.0" and ticker["mark"] == mark["mark"]
    pipeline.snapshot_on_shutdown = from_snapshot
    yield server.stop()

    restarted = start_exchange(tmp_path)
    try:
        assert (_pipeline(restarted).recovered_extra is not None) is from_snapshot
        again, again_ticker = _shown(restarted)
        assert again == dict(mark, index="60070.0", u=0, ts=0), "the latest index, no u/ts"
        assert (again_ticker["mark"], again_ticker["index"]) == (mark["mark"], "60070.0")
        kinds = {m.kind for m in restarted.feeds.hub.flush()}
        assert MARK_PRICE not in kinds, "the recovered mark is state, not news"
    finally:
        yield restarted.stop()
