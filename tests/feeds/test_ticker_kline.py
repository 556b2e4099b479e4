"""Rolling 24h ticker and interval-aligned klines follow trade timestamps, not a clock."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from feeds.kline import INTERVALS, KlineSeries
from feeds.ticker import MINUTE_NS, WINDOW_MINUTES, RollingTicker

T0 = 1_700_000_000 * 1_000_000_000  # a UTC instant (ns)
HOUR = 60 * MINUTE_NS


def naive_window(trades, now):
    """Reference: trades whose minute is within the 1,440 minutes ending at now's minute."""
    lo = now // MINUTE_NS - WINDOW_MINUTES + 1
    return [t for t in trades if t[0] // MINUTE_NS >= lo]


def test_ticker_matches_naive_window_on_random_trades():
    """Open/high/low/volume/count equal a brute-force computation after every trade."""
    rng = random.Random(7)
    ticker = RollingTicker("X")
    trades = []
    ts = T0
    for _ in range(3000):
        ts += rng.choice([0, 1, MINUTE_NS // 3, 7 * MINUTE_NS, 2 * HOUR])
        price, qty = rng.randint(90, 110), rng.randint(1, 9)
        ticker.on_trade(ts, price, qty)
        trades.append((ts, price, qty))
        win = naive_window(trades, ts)
        assert ticker.open == win[0][1]
        assert ticker.high == max(t[1] for t in win)
        assert ticker.low == min(t[1] for t in win)
        assert ticker.volume == sum(t[2] for t in win)
        assert ticker.quote_volume == sum(t[1] * t[2] for t in win)
        assert ticker.count == len(win)
        assert (ticker.last_price, ticker.last_qty) == (price, qty)


def expected_window(trades, now):
    """Reference statistics of the documented rule: the trades of now's UTC minute and the
    1,439 minutes before it; open = the first of them (trade order)."""
    win = naive_window(trades, now)
    if not win:
        return (0, None, None, 0, 0, 0)
    return (win[0][1], max(t[1] for t in win), min(t[1] for t in win),
            sum(t[2] for t in win), sum(t[1] * t[2] for t in win), len(win))


GAPS = st.sampled_from([0, 1, MINUTE_NS - 1, MINUTE_NS, 59 * MINUTE_NS, 3 * HOUR, 23 * HOUR,
                        24 * HOUR - MINUTE_NS, 24 * HOUR, 25 * HOUR])
#: (gap ns, trade or only time passing, price, qty)
STEPS = st.lists(st.tuples(GAPS, st.booleans(), st.integers(1, 40), st.integers(1, 9)),
                 max_size=200)


@settings(derandomize=True, max_examples=300, deadline=None)
@given(STEPS)
def test_ticker_equals_brute_force_over_the_window_rule(steps):
    """After every trade or passing of time, the ticker equals a brute-force computation over
    all trades so far for the documented 1-minute-step window, and keeps one bucket per
    minute of the window that saw a trade (at most 1,440)."""
    ticker = RollingTicker("X")
    trades = []
    ts = T0
    for gap, is_trade, price, qty in steps:
        ts += gap
        if is_trade:
            ticker.on_trade(ts, price, qty)
            trades.append((ts, price, qty))
        else:
            ticker.advance(ts)
        got = (ticker.open, ticker.high if ticker.count else None,
               ticker.low if ticker.count else None, ticker.volume, ticker.quote_volume,
               ticker.count)
        assert got == expected_window(trades, ts)
        minutes = {t[0] // MINUTE_NS for t in naive_window(trades, ts)}
        assert ticker.bucket_count == len(minutes) <= WINDOW_MINUTES


@settings(derandomize=True, max_examples=200, deadline=None)
@given(STEPS, st.sampled_from(sorted(INTERVALS.values())))
def test_minute_aggregates_build_the_same_ticker_and_candles_as_the_trades(steps, interval):
    """add_bucket of each minute's aggregate leaves ticker and candle as on_trade of its trades."""
    trades = []
    ts = T0
    for gap, _, price, qty in steps:
        ts += gap
        trades.append((ts, price, qty))
    by_trade, by_bucket = RollingTicker("X"), RollingTicker("X")
    series_t, series_b = KlineSeries(interval), KlineSeries(interval)
    minutes: dict[int, list] = {}
    for t in trades:
        by_trade.on_trade(*t)
        series_t.on_trade(*t)
        minutes.setdefault(t[0] // MINUTE_NS, []).append(t)
    for minute, g in minutes.items():
        prices = [t[1] for t in g]
        by_bucket.add_bucket(minute, g[-1][0], prices[0], max(prices), min(prices),
                             sum(t[2] for t in g), sum(t[1] * t[2] for t in g), len(g))
        series_b.add_bucket(minute * MINUTE_NS, prices[0], max(prices), min(prices), prices[-1],
                            sum(t[2] for t in g), sum(t[1] * t[2] for t in g), len(g))
    for ticker in (by_trade, by_bucket):
        ticker.advance(ts)
    fields = ("open", "high", "low", "volume", "quote_volume", "count", "now", "bucket_count")
    assert ([getattr(by_bucket, f) for f in fields] == [getattr(by_trade, f) for f in fields])
    assert ((series_b.current and series_b.current.as_tuple())
            == (series_t.current and series_t.current.as_tuple()))


def test_ticker_window_empties_but_last_price_stays():
    """A day and a minute without trades empties the window; last price survives."""
    ticker = RollingTicker("X")
    ticker.on_trade(T0, 100, 2)
    assert not ticker.advance(T0 + 23 * HOUR)
    assert ticker.count == 1
    assert ticker.advance(T0 + 24 * HOUR + MINUTE_NS)
    assert (ticker.count, ticker.volume, ticker.open) == (0, 0, 0)
    assert ticker.last_price == 100
    ticker.on_trade(T0 + 25 * HOUR, 90, 1)
    assert (ticker.open, ticker.high, ticker.low) == (90, 90, 90)


def test_klines_are_aligned_and_match_grouped_trades():
    """Each interval's candles equal trades grouped by ts // interval, closed when passed."""
    rng = random.Random(11)
    trades = []
    ts = T0 + 12345
    for _ in range(2000):
        ts += rng.randint(0, 20 * MINUTE_NS)
        trades.append((ts, rng.randint(1, 50), rng.randint(1, 5)))
    for name, interval in INTERVALS.items():
        series = KlineSeries(interval)
        seen = {}
        for t in trades:
            series.on_trade(*t)
            for c in series.take_changed():
                seen[c.start] = c.as_tuple()
        series.advance(trades[-1][0] + 10 * 86400 * 10**9)
        for c in series.take_changed():
            seen[c.start] = c.as_tuple()
        groups: dict[int, list] = {}
        for t in trades:
            groups.setdefault(t[0] - t[0] % interval, []).append(t)
        expected = {
            start: (start, start + interval, g[0][1], max(x[1] for x in g),
                    min(x[1] for x in g), g[-1][1], sum(x[2] for x in g),
                    sum(x[1] * x[2] for x in g), len(g), True)
            for start, g in groups.items()
        }
        assert seen == expected, name
        assert all(start % interval == 0 for start in seen)


def test_kline_4h_and_1d_boundaries_are_utc():
    """A 4h candle starts on a multiple of 4 hours since the epoch; 1d at UTC midnight."""
    ts = 1_700_000_000 * 10**9  # 2023-11-14T22:13:20Z
    s4 = KlineSeries(INTERVALS["4h"])
    s4.on_trade(ts, 1, 1)
    assert s4.current is not None and s4.current.start == 1_699_992_000 * 10**9  # 20:00Z
    sd = KlineSeries(INTERVALS["1d"])
    sd.on_trade(ts, 1, 1)
    assert sd.current is not None and sd.current.start == 1_699_920_000 * 10**9  # 00:00Z
