"""The market-data composition: feed books seeded from the engine, and a server whose Redis
is unreachable still starts, serves its feed and shuts down within the bounded wait."""

from __future__ import annotations

import time

import pytest_twisted
from twisted.internet import reactor

from engine.commands import NewOrder
from engine.enums import OrdType, Side, TimeInForce
from engine.instruments import demo_instruments
from engine.matcher import MatchingEngine
from feeds.core import FeedCore
from fixserver import feeds_wiring
from fixserver.config import parse_config
from fixserver.server import FixServer
from tests.integration.conftest import free_port, wait_until

INSTRUMENTS = demo_instruments()

CONFIG = """\
[DEFAULT]
BeginString=FIX.4.4
SenderCompID=EXCH
SocketAcceptAddress=127.0.0.1
SocketAcceptPort=0
JournalPath={tmp}/journal
WebSocketPort=0
RedisURL=redis://127.0.0.1:{redis_port}/0
[FIRM]
Firm=ACME
Accounts=A1
[SESSION]
TargetCompID=ACME1
Firm=ACME
"""


def resting(seq: int, side: Side, price: int, qty: int) -> NewOrder:
    return NewOrder(seq=seq, ts=seq, cl_ord_id=f"c{seq}", account="A1", symbol="BTC-PERP",
                    side=side, ord_type=OrdType.LIMIT, qty=qty, price=price,
                    tif=TimeInForce.GTC)


def test_seeded_books_are_the_engine_books_at_the_given_update_id():
    """Every symbol's published book (all depths) is the engine's, labelled with the id."""
    engine = MatchingEngine(INSTRUMENTS)
    for seq, (side, price, qty) in enumerate(
            [(Side.BUY, 599_000, 3), (Side.BUY, 599_000, 2), (Side.BUY, 598_000, 1),
             (Side.SELL, 601_000, 4)], start=1):
        engine.process(resting(seq, side, price, qty))
    core = FeedCore(INSTRUMENTS)
    feeds_wiring.seed_from_engine(core, engine, 41)
    for depth in (5, 20, 0):
        snap = core.book_snapshot("BTC-PERP", depth)
        assert snap.update_id == 41
        assert snap.bids == [(599_000, 5, 2), (598_000, 1, 1)]
        assert snap.asks == [(601_000, 4, 1)]
    empty = core.book_snapshot("ETH-PERP")
    assert (empty.update_id, empty.bids, empty.asks) == (41, [], [])


@pytest_twisted.inlineCallbacks
def test_unreachable_redis_neither_blocks_start_nor_shutdown(tmp_path, monkeypatch):
    """With nothing listening at RedisURL the server starts, its WebSocket port is open, the
    sink reports itself down, and stop() returns after the bounded Redis wait."""
    monkeypatch.setattr(feeds_wiring, "REDIS_FLUSH_TIMEOUT_S", 0.3)
    text = CONFIG.format(tmp=tmp_path, redis_port=free_port())
    server = FixServer(parse_config(text, base_dir=str(tmp_path)), reactor)
    server.start()
    try:
        assert server.feeds.websocket_port.getHost().port > 0
        sink = server.feeds.redis_sink
        assert sink is not None
        yield wait_until(lambda: sink.last_error, "the sink's first write to fail")
        assert not sink.connected
    finally:
        started = time.monotonic()
        yield server.stop()
    assert time.monotonic() - started < 5.0, "stop() waited for Redis beyond its bound"
    assert not server.feeds.websocket_port.connected
