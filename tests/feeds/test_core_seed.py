"""FeedCore.seed_trades and seed_history (per-minute aggregates) rebuild tickers, candles and
recent trades exactly as live trading would have, and publish nothing of it."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from engine.enums import OrdType, Side
from engine.events import Trade
from engine.instruments import demo_instruments
from feeds.channels import KLINE, TICKER, Channel
from feeds.core import RECENT_TRADES, FeedCore, SeedBucket, SeedTrade
from feeds.kline import INTERVALS

T0 = 1_700_000_000 * 1_000_000_000  # a UTC instant (ns)
MINUTE = 60 * 1_000_000_000
SYMBOLS = ("BTC-PERP", "ETH-PERP")


def trade_event(t: SeedTrade) -> Trade:
    """The engine Trade a seed trade stands for (the fields the feed reads are the same)."""
    return Trade(
        t.seq, t.ts, t.trade_id, t.symbol, t.price, t.qty, t.aggressor_side,
        1, "m", "A1", t.qty, 0, t.price * t.qty, 0,
        2, "t", "B1", t.qty, 0, t.price * t.qty, 0, OrdType.LIMIT, t.price,
    )


def snapshots(core: FeedCore) -> dict:
    """Every ticker and current-candle snapshot payload, and the recent trades, per symbol."""
    out: dict = {}
    for symbol in SYMBOLS:
        ticker = core.snapshot_message(Channel(TICKER, symbol, None))
        assert ticker is not None
        out[(symbol, TICKER)] = ticker.payload
        for interval in INTERVALS:
            kline = core.snapshot_message(Channel(KLINE, symbol, interval))
            out[(symbol, interval)] = kline.payload if kline is not None else None
        out[(symbol, "recent")] = core.recent_trades(symbol)
    return out


def make_trades(steps: list[tuple[int, int, int, int, bool]]) -> list[SeedTrade]:
    """Seed trades in engine order from (gap ns, symbol index, price, qty, buy) steps."""
    trades = []
    ts = T0
    for n, (gap, sym, price, qty, buy) in enumerate(steps, start=1):
        ts += gap
        trades.append(SeedTrade(SYMBOLS[sym], price, qty, ts, 100 + n, Side.BUY if buy
                                else Side.SELL, 10 + 2 * n))
    return trades


def live_and_seeded(trades: list[SeedTrade], now: int) -> tuple[FeedCore, FeedCore]:
    """One core that traded live (and flushed at ``now``), one seeded from the same trades."""
    live = FeedCore(demo_instruments())
    live.apply(trade_event(t) for t in trades)
    live.now = max(live.now, now)
    live.flush()
    seeded = FeedCore(demo_instruments())
    seeded.now = now
    seeded.seed_trades(trades)
    return live, seeded


GAPS = st.sampled_from([0, 1, 999, MINUTE // 7, MINUTE, 37 * MINUTE, 5 * 60 * MINUTE])
STEPS = st.lists(
    st.tuples(GAPS, st.integers(0, 1), st.integers(500_000, 500_100), st.integers(1, 50),
              st.booleans()),
    max_size=300,
)


@settings(derandomize=True, max_examples=60, deadline=None)
@given(STEPS, st.sampled_from([0, 1, MINUTE, 24 * 60 * MINUTE, 30 * 60 * MINUTE]))
def test_seeding_equals_trading_live(steps, later):
    """Ticker, every interval's current candle and the recent trades match a live run."""
    trades = make_trades(steps)
    now = (trades[-1].ts if trades else T0) + later
    live, seeded = live_and_seeded(trades, now)
    assert snapshots(seeded) == snapshots(live)
    assert seeded.now == live.now


def test_seeding_publishes_nothing_and_later_trades_build_on_it():
    """The flush after a seed is empty; a live trade after it extends the seeded 24h window."""
    trades = make_trades([(MINUTE, 0, 500_000 + i % 7, 1 + i % 3, i % 2 == 0) for i in range(50)])
    live, seeded = live_and_seeded(trades, trades[-1].ts)
    assert seeded.flush() == []
    nxt = SeedTrade("BTC-PERP", 499_000, 5, trades[-1].ts + MINUTE, 999, Side.SELL, 999)
    live.apply([trade_event(nxt)])
    seeded.apply([trade_event(nxt)])
    live_batch = {m.channel: m.payload for m in live.flush()}
    seeded_batch = {m.channel: m.payload for m in seeded.flush()}
    assert seeded_batch == live_batch
    ticker = seeded_batch[Channel(TICKER, "BTC-PERP", None).name]
    assert ticker["trades"] == 51 and ticker["low"] == "49900.0"
    assert snapshots(seeded) == snapshots(live)


def test_recent_trades_keep_the_latest_only():
    """At most RECENT_TRADES trades are kept, the newest, oldest first."""
    trades = make_trades([(1, 0, 500_000, 1, True)] * (RECENT_TRADES + 25))
    _, seeded = live_and_seeded(trades, trades[-1].ts)
    recent = seeded.recent_trades("BTC-PERP")
    assert [r["id"] for r in recent] == [t.trade_id for t in trades[-RECENT_TRADES:]]
    assert seeded.recent_trades("ETH-PERP") == []


def minute_buckets(trades: list[SeedTrade]) -> list[SeedBucket]:
    """Reference: trades (in trade order) grouped by UTC minute and symbol, in (minute,
    symbol) order, as Postgres aggregates them."""
    groups: dict[tuple[int, str], list[SeedTrade]] = {}
    for t in trades:
        groups.setdefault((t.ts // MINUTE, t.symbol), []).append(t)
    return [
        SeedBucket(symbol, minute, g[0].price, max(t.price for t in g),
                   min(t.price for t in g), g[-1].price, sum(t.qty for t in g),
                   sum(t.price * t.qty for t in g), len(g), g[-1].ts)
        for (minute, symbol), g in sorted(groups.items())
    ]


def latest(trades: list[SeedTrade], keep: int = RECENT_TRADES) -> list[SeedTrade]:
    """Reference: the last ``keep`` trades of each symbol, in trade order."""
    kept = {t.trade_id for s in SYMBOLS for t in [t for t in trades if t.symbol == s][-keep:]}
    return [t for t in trades if t.trade_id in kept]


@settings(derandomize=True, max_examples=60, deadline=None)
@given(STEPS, st.sampled_from([0, 1, MINUTE, 24 * 60 * MINUTE, 30 * 60 * MINUTE]),
       st.floats(0, 1), st.integers(0, RECENT_TRADES + 5))
def test_seeding_minute_buckets_then_the_tail_equals_trading_live(steps, later, cut, extra):
    """Aggregates of the older trades (with their latest trades) and then the newer trades one
    by one, cut anywhere (mid-minute too), give the live state."""
    trades = make_trades(steps)
    now = (trades[-1].ts if trades else T0) + later
    live, _ = live_and_seeded(trades, now)
    k = int(cut * len(trades))
    stored, tail = trades[:k], trades[k:]
    seeded = FeedCore(demo_instruments())
    seeded.now = now
    # the recent list needs the last RECENT_TRADES; more (as any row limit may give) is fine
    assert seeded.seed_history(minute_buckets(stored), latest(stored, RECENT_TRADES + extra),
                               iter(tail)) == len(trades)
    assert snapshots(seeded) == snapshots(live)
    assert seeded.now == live.now
    assert seeded.flush() == [m for m in live.flush() if m.kind == TICKER] == []


def test_seeded_buckets_then_live_trades_publish_as_live():
    """After a bucket seed the next live trade's batch equals the live core's, candles included."""
    trades = make_trades([(MINUTE // 3, i % 2, 500_000 + i % 11, 1 + i % 4, i % 3 == 0)
                          for i in range(400)])
    live, _ = live_and_seeded(trades, trades[-1].ts)
    seeded = FeedCore(demo_instruments())
    seeded.now = trades[-1].ts
    seeded.seed_history(minute_buckets(trades), latest(trades))
    assert seeded.flush() == []
    nxt = SeedTrade("ETH-PERP", 500_200, 3, trades[-1].ts + MINUTE // 2, 9999, Side.BUY, 9999)
    live.apply([trade_event(nxt)])
    seeded.apply([trade_event(nxt)])
    assert ({m.channel: m.payload for m in seeded.flush()}
            == {m.channel: m.payload for m in live.flush()})
