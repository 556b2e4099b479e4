"""A real Autobahn client on loopback sees liquidations@BTC-PERP as the engine liquidates."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor

from engine.enums import MarginMode
from engine.events import Liquidated, Trade
from feeds.channels import ErrorCode
from feeds.core import FeedCore
from feeds.hub import FeedHub
from feeds.websocket import FeedServerFactory
from tests.engine.riskutil import BUY, ETH, SELL, RiskDriver, margined_instruments, of
from tests.feeds.test_websocket import Waiter, connect

INSTRUMENTS = margined_instruments()


@pytest_twisted.inlineCallbacks
def test_subscriber_sees_the_snapshot_then_each_liquidation_step():
    """JSON and msgpack clients subscribe (a bad symbol in the same request gets error 5);
    the snapshot is empty; an isolated long liquidated through the engine by an index drop
    arrives as two step messages with the fill price, quantities and the tick's u and ts, no
    account; a client subscribing afterwards gets both in its snapshot."""
    hub = FeedHub(FeedCore(INSTRUMENTS))
    factory = FeedServerFactory(hub)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    d = RiskDriver(price_band_ppm=200_000)
    waiter = Waiter()

    def run(events: list) -> list:
        hub.publish(events)
        hub.flush()
        return events

    try:
        clients = []
        for query in ("", "?format=msgpack"):
            _, opened = connect(port, query, waiter.check)
            clients.append((yield opened))
        for c in clients:
            c.send_json({"op": "subscribe", "id": 1,
                         "channels": ["liquidations@NOPE", "liquidations@BTC-PERP"]})

        def of_type(c, kind: str) -> list[dict]:
            return [m for m in c.messages if m.get("type") == kind]

        yield waiter.until(lambda: all(of_type(c, "snapshot") for c in clients),
                           "the liquidations snapshots")
        for c in clients:
            error, ack, snap = c.messages[:3]
            assert error == {"event": "error", "code": int(ErrorCode.UNKNOWN_SYMBOL),
                             "message": "unknown symbol 'NOPE'", "id": 1,
                             "channel": "liquidations@NOPE"}
            assert ack == {"event": "subscribed", "channel": "liquidations@BTC-PERP", "id": 1}
            assert snap == {"channel": "liquidations@BTC-PERP", "type": "snapshot",
                            "symbol": "BTC-PERP", "data": []}

        # the engine scenario of tests/engine/test_liquidation.py (isolated long, index drop)
        run(d.index(600_000))
        run(d.index(300_000, ETH))
        run(d.tick())
        run(d.deposit("A", 10_000))
        run(d.mode("A", MarginMode.ISOLATED))
        run(d.deposit("B", 1_000_000))
        run(d.order("B", SELL, 1_000, 600_000))
        assert of(run(d.order("A", BUY, 1_000, 600_000)), Trade)
        run(d.deposit("C", 1_000_000))
        run(d.order("C", BUY, 1_000, 545_000))
        run(d.index(542_000))
        steps = of(run(d.tick()), Liquidated)
        assert len(steps) == 2, "the engine liquidated in two steps"
        expected = [{"channel": "liquidations@BTC-PERP", "type": "liquidation",
                     "symbol": "BTC-PERP", "id": s.order_id, "side": "sell",
                     "price": "54500.0", "qty": qty, "u": d.seq, "ts": d.ts}
                    for s, qty in zip(steps, ("0.078", "0.922"))]
        yield waiter.until(lambda: all(len(of_type(c, "liquidation")) == 2 for c in clients),
                           "two liquidation messages")
        for c in clients:
            assert of_type(c, "liquidation") == expected
            assert not any(m.get("account") for m in c.messages)
        assert clients[0].messages == clients[1].messages, "JSON and msgpack agree"

        _, opened = connect(port, "", waiter.check)
        late = yield opened
        late.send_json({"op": "subscribe", "channels": ["liquidations@BTC-PERP"]})
        yield waiter.until(lambda: of_type(late, "snapshot"), "the late snapshot")
        (snap,) = of_type(late, "snapshot")
        assert snap["data"] == [{k: v for k, v in e.items()
                                 if k not in ("channel", "type", "symbol")} for e in expected]
        assert all(c.close_info is None for c in (*clients, late))
    finally:
        for c in factory.connections.copy():
            c.dropConnection(abort=True)
        yield port.stopListening()
