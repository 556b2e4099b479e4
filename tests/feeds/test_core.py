"""The pure feed core rebuilds the engine's L2 book, trades, klines and ticker exactly."""

from __future__ import annotations

import json
import random

import pytest

from engine.enums import Side
from engine.events import LevelChanged, Trade
from engine.instruments import demo_instruments
from engine.matcher import MatchingEngine
from feeds.channels import parse_channel
from feeds.core import FeedCore
from feeds.diffs import FULL_DEPTH
from feeds.encoding import WireFormat
from feeds.kline import INTERVALS
from feeds.numbers import UnitFormatter
from feeds.replica import BookReplica, GapError
from tests.feeds.orderflow import OrderFlow

T0 = 1_700_000_000 * 10**9
INSTRUMENTS = demo_instruments()
FORMATTERS = {
    i.symbol: (UnitFormatter(i.tick_size), UnitFormatter(i.lot_size)) for i in INSTRUMENTS
}


def engine_levels(engine, symbol, depth):
    """The engine's L2 book of a symbol as wire strings, best first."""
    price, qty = FORMATTERS[symbol]
    out = []
    for side in (Side.BUY, Side.SELL):
        levels = engine.book(symbol).levels(side)
        if depth != FULL_DEPTH:
            levels = levels[:depth]
        out.append([(price(p), qty(q), c) for p, q, c in levels])
    return out


def run_flow(seed, commands, step_ns, late_subscribers=True, check=True):
    """Drive engine and core with random flow and flush points; check replicas every batch."""
    rng = random.Random(seed)
    engine, core = MatchingEngine(INSTRUMENTS), FeedCore(INSTRUMENTS)
    flow = OrderFlow(INSTRUMENTS, seed=seed)
    replicas: dict[str, BookReplica] = {}
    all_messages = []
    fills = []
    book_changes = 0

    def subscribe(name):
        replicas[name] = BookReplica()
        replicas[name].apply(core.snapshot_message(parse_channel(name, core.symbols)).payload)

    for inst in INSTRUMENTS:
        for depth in ("5", "20", "full"):
            if not late_subscribers or depth == "full":
                subscribe(f"orderbook@{inst.symbol}@{depth}")
    for i, cmd in enumerate(flow.commands(commands, T0, step_ns)):
        events = engine.process(cmd)
        fills.extend(e for e in events if type(e) is Trade)
        book_changes += sum(type(e) is LevelChanged for e in events)
        core.apply(events)
        if rng.random() < 0.3:
            continue  # several commands per batch
        for msg in core.flush():
            # every message survives both encodings unchanged
            assert json.loads(msg.encoded(WireFormat.JSON)) == msg.payload
            all_messages.append(msg)
            if msg.kind == "orderbook" and msg.channel in replicas:
                replicas[msg.channel].apply(msg.payload)  # raises on a gap or bad checksum
        if late_subscribers and i == commands // 3:
            for inst in INSTRUMENTS:
                for depth in ("5", "20"):
                    subscribe(f"orderbook@{inst.symbol}@{depth}")
        for name, rep in replicas.items() if check else ():
            _, symbol, depth = name.split("@")
            d = FULL_DEPTH if depth == "full" else int(depth)
            bids, asks = engine_levels(engine, symbol, d)
            assert (rep.levels("bids"), rep.levels("asks")) == (bids, asks), (name, i)
    return engine, core, all_messages, fills, book_changes


@pytest.mark.parametrize("seed", [1, 2])
def test_replicas_equal_engine_book_after_every_batch(seed):
    """Snapshot + diffs of every depth equal the engine's L2 book after each flush."""
    _, _, messages, fills, book_changes = run_flow(seed, 2000, 10**8)
    assert fills and book_changes > 1000, "the flow must trade and move the book"
    depth5 = [m for m in messages if m.channel.endswith("@5")]
    full = [m for m in messages if m.channel.endswith("@full")]
    assert 0 < len(depth5) < len(full), "depth 5 sends only when the top 5 changes"


def test_update_ids_chain_and_are_engine_seqs():
    """U <= u, pu is the previous u on the channel, and ids are seqs of LevelChanged events."""
    _, _, messages, _, _ = run_flow(4, 1500, 10**8, late_subscribers=False, check=False)
    last: dict[str, int] = {}
    for m in messages:
        if m.kind != "orderbook":
            continue
        p = m.payload
        assert p["U"] <= p["u"]
        assert p["pu"] == last.get(m.channel, 0)
        assert p["pu"] < p["U"]
        last[m.channel] = p["u"]


def test_gap_is_detected():
    """A replica that misses an update refuses the next one."""
    _, _, messages, _, _ = run_flow(5, 300, 10**8, late_subscribers=False)
    updates = [m.payload for m in messages if m.channel == "orderbook@BTC-PERP@full"]
    rep = BookReplica()
    rep.apply({"type": "snapshot", "u": 0, "bids": [], "asks": [], "checksum": 0})
    rep.apply(updates[0])
    with pytest.raises(GapError):
        rep.apply(updates[2])


def test_trades_and_klines_match_the_fills():
    """Trade messages list every fill in order; final candles equal fills grouped by interval."""
    _, core, messages, fills, _ = run_flow(6, 3000, 9 * 10**9, late_subscribers=False, check=False)
    for inst in INSTRUMENTS:
        sym = inst.symbol
        price, qty = FORMATTERS[sym]
        mine = [t for t in fills if t.symbol == sym]
        sent = [d for m in messages if m.channel == f"trades@{sym}" for d in m.payload["data"]]
        assert sent == [
            {"id": t.exec_id, "u": t.seq, "ts": t.ts, "price": price(t.price), "qty": qty(t.qty),
             "side": "buy" if t.aggressor_side == Side.BUY else "sell"}
            for t in mine
        ]
        for name, interval in INTERVALS.items():
            candles = {}
            for m in messages:
                if m.channel == f"kline@{sym}@{name}":
                    for c in m.payload["data"]:
                        candles[c["start"]] = c
            groups: dict[int, list] = {}
            for t in mine:
                groups.setdefault(t.ts - t.ts % interval, []).append(t)
            assert sorted(candles) == sorted(groups), name
            for start, g in groups.items():
                c = candles[start]
                assert (c["open"], c["close"], c["trades"]) == (
                    price(g[0].price), price(g[-1].price), len(g))
                assert c["high"] == price(max(t.price for t in g))
                assert c["low"] == price(min(t.price for t in g))
                assert c["volume"] == qty(sum(t.qty for t in g))
        ticker = core.snapshot_message(parse_channel(f"ticker@{sym}", core.symbols)).payload
        window = [t for t in mine if t.ts // 60_000_000_000 > core.now // 60_000_000_000 - 1440]
        assert ticker["last"] == price(mine[-1].price)
        assert ticker["open"] == price(window[0].price)
        assert ticker["volume"] == qty(sum(t.qty for t in window))
        assert ticker["high"] == price(max(t.price for t in window))


def test_seeded_book_and_snapshot_ids():
    """A seeded book is the snapshot at its update id; the next update chains onto it."""
    core = FeedCore(INSTRUMENTS)
    core.seed_book("BTC-PERP", [(100, 5, 1)], [(101, 3, 2)], update_id=41)
    snap = core.book_snapshot("BTC-PERP")
    assert (snap.update_id, snap.bids, snap.asks) == (41, [(100, 5, 1)], [(101, 3, 2)])
    core.apply([LevelChanged(42, "BTC-PERP", Side.BUY, 100, 0, 0)])
    assert core.book_snapshot("BTC-PERP").bids == [(100, 5, 1)], "published only at flush"
    (upd,) = [m for m in core.flush() if m.channel == "orderbook@BTC-PERP@full"]
    assert (upd.payload["U"], upd.payload["u"], upd.payload["pu"]) == (42, 42, 41)
    assert upd.payload["bids"] == [["10.0", "0.000", 0]]
    assert core.book_snapshot("BTC-PERP", 5).update_id == 42
