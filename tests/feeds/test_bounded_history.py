"""What the feed keeps of past trades is bounded by time (24 h of minutes, N recent trades, one
candle per interval), never by the number of trades."""

from __future__ import annotations

from engine.enums import OrdType, Side
from engine.events import Trade
from engine.instruments import demo_instruments
from feeds.channels import TICKER, Channel
from feeds.core import RECENT_TRADES, FeedCore, KeptHistory, SeedTrade
from feeds.kline import INTERVALS
from feeds.ticker import MINUTE_NS, WINDOW_MINUTES

T0 = 1_700_000_000 * 1_000_000_000  # a UTC instant (ns)
SPAN = 48 * 60 * MINUTE_NS  # the trades are spread over 48 h
SYMBOL = "BTC-PERP"
#: every minute of the last 24 h saw a trade, the latest RECENT_TRADES are kept, every
#: interval has its current candle, and nothing is queued after a flush
FULL = KeptHistory(WINDOW_MINUTES, RECENT_TRADES, len(INTERVALS), 0)


def trades(n: int) -> list[SeedTrade]:
    """``n`` trades evenly spread over 48 h (at least one a minute for n >= 2,880)."""
    return [SeedTrade(SYMBOL, 500_000 + i % 97, 1 + i % 5, T0 + SPAN * i // n, i + 1,
                      Side.BUY if i % 2 else Side.SELL, 2 * i + 1) for i in range(n)]


def trade_event(t: SeedTrade) -> Trade:
    """The engine Trade a seed trade stands for."""
    return Trade(
        t.seq, t.ts, t.trade_id, t.symbol, t.price, t.qty, t.aggressor_side,
        1, "m", "A1", t.qty, 0, t.price * t.qty, 0,
        2, "t", "B1", t.qty, 0, t.price * t.qty, 0, OrdType.LIMIT, t.price,
    )


def kept_after_live_trading(n: int) -> tuple[KeptHistory, int]:
    """Apply ``n`` trades as engine events, flushing every 100; what is kept, and the
    largest number of ticker buckets seen at any flush."""
    core = FeedCore(demo_instruments())
    most = 0
    for i, t in enumerate(trades(n), start=1):
        core.apply([trade_event(t)])
        if i % 100 == 0:
            core.flush()
            most = max(most, core.kept(SYMBOL).ticker_buckets)
    core.flush()
    return core.kept(SYMBOL), most


def test_live_trading_keeps_the_same_bounded_state_for_any_trade_count():
    """3,000 or 60,000 trades over 48 h leave 1,440 buckets, 200 trades, 6 candles."""
    small, small_most = kept_after_live_trading(3_000)
    large, large_most = kept_after_live_trading(60_000)
    assert small == large == FULL
    assert small_most == large_most == WINDOW_MINUTES
    idle = FeedCore(demo_instruments())
    assert idle.kept(SYMBOL) == KeptHistory(0, 0, 0, 0)


def test_seeding_keeps_the_same_bounded_state_for_any_trade_count():
    """Seeding 3,000 or 60,000 trades (one by one, from an iterator) keeps the same bounded
    state as live trading, and the ticker counts only the last 24 h's trades."""
    for n in (3_000, 60_000):
        core = FeedCore(demo_instruments())
        assert core.seed_trades(iter(trades(n))) == n
        assert core.kept(SYMBOL) == FULL
        assert core.kept("ETH-PERP") == KeptHistory(0, 0, 0, 0)
        in_window = sum(1 for t in trades(n)
                        if t.ts // MINUTE_NS > core.now // MINUTE_NS - WINDOW_MINUTES)
        assert n // 3 < in_window < n
        ticker = core.snapshot_message(Channel(TICKER, SYMBOL, None))
        assert ticker is not None and ticker.payload["trades"] == in_window


def test_queued_trades_are_released_by_the_flush():
    """Trades wait for the next flush only: the queue empties on every flush."""
    core = FeedCore(demo_instruments())
    core.apply(trade_event(t) for t in trades(500))
    assert core.kept(SYMBOL).queued_trades == 500
    core.flush()
    assert core.kept(SYMBOL).queued_trades == 0
