"""The liquidations@SYMBOL channel: steps as public messages, snapshot, hub, relay (no sockets)."""

from __future__ import annotations

import json

import pytest

from engine.enums import MarginMode, Side
from engine.events import Liquidated
from engine.risk.liquidation import INSURANCE, LIQ_ID_BASE
from feeds.channels import LIQUIDATIONS, Channel, ChannelError, ErrorCode, parse_channel
from feeds.core import FeedCore
from feeds.encoding import WireFormat
from feeds.hub import FeedHub
from feeds.liquidations import RECENT_LIQUIDATIONS, average_price_ticks
from feeds.redis_keys import BATCH, VERSION, Envelope, Meta
from feeds.redis_relay import RelayCore, StoredBook, StoredState
from tests.engine.riskutil import BTC, BUY, ETH, SELL, RiskDriver, margined_instruments, of

INSTRUMENTS = margined_instruments()
SYMBOLS = frozenset(i.symbol for i in INSTRUMENTS)
LIQ_BTC = Channel(LIQUIDATIONS, BTC, None)
T0 = 1_700_000_000 * 10**9
LIVE_KEYS = ["channel", "type", "symbol", "id", "side", "price", "qty", "u", "ts"]


def step(seq: int, qty: int, filled: int, notional: int, bankruptcy: int = 540_000,
         side: Side = Side.SELL, symbol: str = BTC, n: int = 0) -> Liquidated:
    """A synthetic liquidation step of account "A" (the feed must not show the account)."""
    return Liquidated(seq, T0 + seq, "A", "USDT", symbol, side, qty, filled, notional,
                      bankruptcy, qty - filled, 0, 1_234, LIQ_ID_BASE + n)


def liquidations_of(batch: list) -> list[dict]:
    return [m.payload for m in batch if m.kind == LIQUIDATIONS]


class Collector:
    """A hub subscriber keeping the frames it got."""

    def __init__(self, wire_format: WireFormat = WireFormat.JSON) -> None:
        self.wire_format = wire_format
        self.frames: list[bytes] = []

    def deliver(self, frame: bytes) -> None:
        self.frames.append(frame)

    @property
    def messages(self) -> list[dict]:
        return [json.loads(f) for f in self.frames]


def test_channel_name_parses_and_bad_names_get_the_usual_errors():
    """liquidations@SYMBOL is canonical as given; a parameter, another spelling or an unknown
    symbol get the errors every channel gets, and the error lists the new kind."""
    assert parse_channel("liquidations@BTC-PERP", SYMBOLS) == LIQ_BTC
    assert LIQ_BTC.name == "liquidations@BTC-PERP"
    for name, code in (("liquidations@DOGE-PERP", ErrorCode.UNKNOWN_SYMBOL),
                       ("liquidations@BTC-PERP@20", ErrorCode.UNKNOWN_CHANNEL),
                       ("Liquidations@BTC-PERP", ErrorCode.UNKNOWN_CHANNEL),
                       ("liquidations", ErrorCode.UNKNOWN_CHANNEL)):
        with pytest.raises(ChannelError) as exc:
            parse_channel(name, SYMBOLS)
        assert exc.value.code is code, name
    with pytest.raises(ChannelError) as exc:
        parse_channel("nope@BTC-PERP", SYMBOLS)
    assert "liquidations@SYMBOL" in exc.value.message


def test_average_price_rounds_to_the_nearest_tick_half_up():
    """notional / filled in ticks: exact, below a half, a half (up), above a half."""
    assert average_price_ticks(579_900 * 138, 138) == 579_900
    assert average_price_ticks(2 * 100 + 101, 3) == 100  # 100.33
    assert average_price_ticks(100 + 101, 2) == 101  # 100.5
    assert average_price_ticks(100 + 2 * 101, 3) == 101  # 100.67


def test_each_step_is_one_public_message_with_its_price_and_no_account():
    """Two steps of one tick and one of another symbol: one message each, engine order; the
    price is the book fills' average or, with no fill, the bankruptcy price; the side is the
    liquidation order's; quantity is what the step closed; no account, asset or fee."""
    core = FeedCore(INSTRUMENTS)
    core.apply([step(7, 78, 78, 78 * 545_000, n=0),
                step(7, 922, 900, 900 * 545_001, n=1),  # 22 lots taken over by the fund
                step(7, 500, 0, 0, bankruptcy=310_050, side=Side.BUY, symbol=ETH, n=2)])
    batch = core.flush()
    btc = liquidations_of(batch)[:2]
    assert [list(p) for p in btc] == [LIVE_KEYS, LIVE_KEYS]
    assert btc == [
        {"channel": "liquidations@BTC-PERP", "type": "liquidation", "symbol": BTC,
         "id": LIQ_ID_BASE, "side": "sell", "price": "54500.0", "qty": "0.078", "u": 7,
         "ts": T0 + 7},
        {"channel": "liquidations@BTC-PERP", "type": "liquidation", "symbol": BTC,
         "id": LIQ_ID_BASE + 1, "side": "sell", "price": "54500.1", "qty": "0.922", "u": 7,
         "ts": T0 + 7}]
    (eth,) = liquidations_of(batch)[2:]
    assert (eth["channel"], eth["side"], eth["price"], eth["qty"]) == (
        "liquidations@ETH-PERP", "buy", "3100.50", "5.00")
    for msg in batch:
        if msg.kind == LIQUIDATIONS:
            assert b'"A"' not in msg.encoded(WireFormat.JSON) and b"USDT" not in msg.encoded(
                WireFormat.JSON)
    assert liquidations_of(core.flush()) == [], "published once"


def test_snapshot_holds_the_latest_published_steps_bounded():
    """Empty before any step; a queued step is not in it (it comes live at the flush, once);
    then the latest RECENT_LIQUIDATIONS steps, oldest first, as the live messages' fields;
    one message object until the next step."""
    core = FeedCore(INSTRUMENTS)
    empty = core.snapshot_message(LIQ_BTC)
    assert empty is not None and empty.payload == {
        "channel": "liquidations@BTC-PERP", "type": "snapshot", "symbol": BTC, "data": []}
    core.apply([step(1, 10, 10, 10 * 600_000, n=0)])
    queued = core.snapshot_message(LIQ_BTC)
    assert queued is not None and queued.payload["data"] == []
    (live,) = liquidations_of(core.flush())
    snap = core.snapshot_message(LIQ_BTC)
    assert snap is not None and snap.payload["data"] == [
        {k: v for k, v in live.items() if k not in ("channel", "type", "symbol")}]
    assert core.snapshot_message(LIQ_BTC) is snap, "shared until the next step"
    for i in range(1, RECENT_LIQUIDATIONS + 5):
        core.apply([step(1 + i, 10, 10, 10 * 600_000, n=i)])
        core.flush()
    data = core.snapshot_message(LIQ_BTC).payload["data"]  # type: ignore[union-attr]
    assert len(data) == RECENT_LIQUIDATIONS
    assert [d["id"] - LIQ_ID_BASE for d in data] == list(range(5, RECENT_LIQUIDATIONS + 5))
    eth = core.snapshot_message(Channel(LIQUIDATIONS, ETH, None))
    assert eth is not None and eth.payload["data"] == []


def test_hub_sends_snapshot_then_each_step_encoded_once_for_all_subscribers():
    """Every subscriber of a format gets the very same bytes for a step (encoded once)."""
    hub = FeedHub(FeedCore(INSTRUMENTS), wall_ns=lambda: 0)
    subs = [Collector() for _ in range(3)]
    packed = Collector(WireFormat.MSGPACK)
    for sub in [*subs, packed]:
        hub.subscribe(sub, LIQ_BTC)
    hub.publish([step(3, 5, 5, 5 * 600_000, n=0), step(3, 6, 0, 0, n=1)])
    hub.flush()
    assert [(m["type"], m.get("id")) for m in subs[0].messages] == [
        ("snapshot", None), ("liquidation", LIQ_ID_BASE), ("liquidation", LIQ_ID_BASE + 1)]
    for i in range(1, 3):
        assert all(a is b for a, b in zip(subs[0].frames, subs[i].frames))
    assert len(packed.frames) == 3 and packed.frames[1] is not subs[0].frames[1]


def driver() -> RiskDriver:
    """The engine scenarios' start (tests/engine/test_liquidation.py): indexes and a mark."""
    d = RiskDriver(price_band_ppm=200_000)  # room for the crash bids
    d.index(600_000)
    d.index(300_000, ETH)
    d.tick()
    return d


def open_long(d: RiskDriver, account: str, lots: int) -> None:
    d.deposit("B", 1_000_000)
    d.order("B", SELL, lots, 600_000)
    d.order(account, BUY, lots, 600_000)


def test_engine_liquidation_through_the_book_reaches_the_channel():
    """An isolated long liquidated by an index drop (engine scenario): its two steps fill at
    the resting bid, so both show 54500.0 with the step quantities and the tick's u and ts."""
    d = driver()
    d.deposit("A", 10_000)
    d.mode("A", MarginMode.ISOLATED)
    open_long(d, "A", 1_000)
    d.deposit("C", 1_000_000)
    d.order("C", BUY, 1_000, 545_000)
    d.index(542_000)
    events = d.tick()
    steps = of(events, Liquidated)
    assert len(steps) == 2
    core = FeedCore(INSTRUMENTS)
    core.apply(events)
    got = liquidations_of(core.flush())
    assert [(p["side"], p["price"], p["qty"], p["u"], p["ts"]) for p in got] == [
        ("sell", "54500.0", "0.078", d.seq, d.ts), ("sell", "54500.0", "0.922", d.seq, d.ts)]
    assert [p["id"] for p in got] == [s.order_id for s in steps]


def test_engine_takeover_shows_the_bankruptcy_price():
    """A bankrupt long with no bids at all is taken over by the insurance fund: the step's
    price is the bankruptcy price (58601.5), the whole position (0.700) on the sell side."""
    d = driver()
    d.run_deposit(INSURANCE, 1_000)
    d.deposit("A", 1_000)
    d.leverage("A", 100)
    open_long(d, "A", 700)
    d.index(580_000)
    events = d.tick()
    (liq,) = of(events, Liquidated)
    assert (liq.filled, liq.taken_over) == (0, 700)
    core = FeedCore(INSTRUMENTS)
    core.apply(events)
    (got,) = liquidations_of(core.flush())
    assert (got["side"], got["price"], got["qty"]) == ("sell", "58601.5", "0.700")
    assert INSURANCE.encode() not in json.dumps(got).encode()


def _relay(liquidations: dict[str, bytes], resend: str = "") -> RelayCore:
    empty = StoredBook({0: 0, 5: 0, 20: 0}, 0, [], [])
    meta = Meta(VERSION, 1, 4, WireFormat.MSGPACK, tuple(sorted(SYMBOLS)))
    relay = RelayCore()
    relay.load(StoredState(meta, {s: empty for s in SYMBOLS}, {}, {}, {}, liquidations),
               resend=lambda name: name == resend)
    return relay


def test_relay_serves_the_stored_snapshot_and_follows_each_step():
    """A follower's relay serves the stored snapshot (its bytes as stored; resent after a
    reload to a channel with subscribers), relays each step with the exchange's bytes, and
    its snapshot then equals the exchange's, bounded the same way; none stored: none."""
    core = FeedCore(INSTRUMENTS)
    core.apply([step(1, 10, 10, 10 * 600_000, n=0)])
    core.flush()
    stored = core.snapshot_message(LIQ_BTC)
    assert stored is not None
    data = stored.encoded(WireFormat.MSGPACK)
    relay = _relay({BTC: data}, resend="liquidations@BTC-PERP")
    snap = relay.snapshot_message(LIQ_BTC)
    assert snap is not None and snap.payload == stored.payload
    assert snap.encoded(WireFormat.MSGPACK) is data
    assert [m.channel for m in relay.flush()] == ["liquidations@BTC-PERP"], "resent"
    assert _relay({}).snapshot_message(LIQ_BTC) is None, "a sink without the channel"
    seq = 4
    for i in range(1, RECENT_LIQUIDATIONS + 3):
        core.apply([step(10 + i, 3, 2, 2 * 600_001, n=i), step(10 + i, 4, 0, 0, n=100 + i)])
        batch = [m for m in core.flush() if m.kind == LIQUIDATIONS]
        assert len(batch) == 2
        seq += 1
        items = [(m.channel, m.kind, m.encoded(WireFormat.MSGPACK)) for m in batch]
        assert relay.accept(Envelope(VERSION, 1, seq, BATCH, WireFormat.MSGPACK, items))
        relayed = relay.flush()
        assert [m.payload for m in relayed] == [m.payload for m in batch]
        assert all(r.encoded(WireFormat.MSGPACK) is it[2] for r, it in zip(relayed, items))
    mine = relay.snapshot_message(LIQ_BTC)
    theirs = core.snapshot_message(LIQ_BTC)
    assert mine is not None and theirs is not None
    assert mine.payload == theirs.payload and len(mine.payload["data"]) == RECENT_LIQUIDATIONS
    assert relay.snapshot_message(LIQ_BTC) is mine, "shared until the next step"
