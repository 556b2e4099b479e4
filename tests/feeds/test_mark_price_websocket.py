"""A real Autobahn client on loopback sees markPrice@BTC-PERP move as the engine marks."""

from __future__ import annotations

import pytest_twisted

from engine.commands import SetIndexPrice, Tick
from engine.events import MarkPriceUpdated
from engine.matcher import MatchingEngine
from feeds.channels import ErrorCode
from tests.feeds.test_websocket import INSTRUMENTS, T0, Waiter, connect, start_server

SECOND = 10**9
BTC = INSTRUMENTS[0]
assert BTC.symbol == "BTC-PERP"


@pytest_twisted.inlineCallbacks
def test_subscriber_sees_snapshot_then_each_mark_and_the_ticker_carries_it():
    """Subscribe (with a bad symbol in the same request: error 5, the connection stays);
    snapshot with null prices; SetIndexPrice + Tick give a mark; a new index and a Tick one
    mark interval later move it; the ticker shows mark and index; JSON and msgpack agree."""
    hub, factory, port = start_server()
    engine = MatchingEngine(INSTRUMENTS)
    waiter = Waiter()
    seq = 0

    def run(command_of_seq) -> list:
        nonlocal seq
        seq += 1
        events = engine.process(command_of_seq(seq))
        hub.publish(events)
        hub.flush()
        return events

    try:
        clients = []
        for query in ("", "?format=msgpack"):
            _, d = connect(port, query, waiter.check)
            clients.append((yield d))
        for c in clients:
            c.send_json({"op": "subscribe", "id": 1,
                         "channels": ["markPrice@NOPE", "markPrice@BTC-PERP",
                                      "ticker@BTC-PERP"]})

        def marks(c) -> list[dict]:
            return [m for m in c.messages if m.get("type") == "markPrice"]

        yield waiter.until(lambda: all(len(marks(c)) == 1 for c in clients), "the snapshots")
        for c in clients:
            error, ack = c.messages[:2]
            assert error == {"event": "error", "code": int(ErrorCode.UNKNOWN_SYMBOL),
                             "message": "unknown symbol 'NOPE'", "id": 1,
                             "channel": "markPrice@NOPE"}
            assert ack == {"event": "subscribed", "channel": "markPrice@BTC-PERP", "id": 1}
            assert marks(c) == [{"channel": "markPrice@BTC-PERP", "type": "markPrice",
                                 "symbol": "BTC-PERP", "index": None, "mark": None,
                                 "funding_rate": None, "next_funding_ts": None,
                                 "last_funding_rate": None, "last_funding_ts": None,
                                 "u": 0, "ts": 0}]

        run(lambda s: SetIndexPrice(s, T0, "BTC-PERP", 600_000))
        first = [e for e in run(lambda s: Tick(s, T0 + 1)) if type(e) is MarkPriceUpdated]
        run(lambda s: SetIndexPrice(s, T0 + 2, "BTC-PERP", 601_000))
        assert run(lambda s: Tick(s, T0 + 3)) == [], "within the mark interval: no mark"
        second = [e for e in run(lambda s: Tick(s, T0 + 1 + SECOND))
                  if type(e) is MarkPriceUpdated]
        assert len(first) == len(second) == 1
        expected = [(e.seq, e.ts, BTC.ticks_to_price(e.index), BTC.ticks_to_price(e.mark))
                    for e in (*first, *second)]
        def last_ticker(c) -> dict:
            tickers = [m for m in c.messages if m.get("type") == "ticker"]
            return tickers[-1] if tickers else {}

        # in a batch the ticker follows the markPrice message: wait for both
        yield waiter.until(lambda: all(
            len(marks(c)) == 3 and last_ticker(c).get("mark") == expected[-1][3]
            for c in clients), f"two marks and the ticker at {expected}")
        for c in clients:
            got = [(m["u"], m["ts"], m["index"], m["mark"]) for m in marks(c)[1:]]
            assert got == expected
            assert got[1][3] != got[0][3], "the mark moved"
            assert last_ticker(c)["index"] == "60100.0"
        assert clients[0].messages == clients[1].messages
        assert all(c.close_info is None for c in clients)
    finally:
        for c in factory.connections.copy():
            c.dropConnection(abort=True)
        yield port.stopListening()
