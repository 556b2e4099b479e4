"""The start-up history read from Postgres is per-minute aggregates and the latest trades of the
window below the journal tail, equal to grouping the trades themselves (real Postgres)."""

from __future__ import annotations

import datetime
import random
from decimal import Decimal

import psycopg

from engine.enums import Side
from engine.instruments import demo_instruments
from feeds.core import RECENT_TRADES, FeedCore, SeedTrade
from feeds.ticker import MINUTE_NS, WINDOW_MINUTES
from fixserver.feeds_history import history_start, load_history, recent_minutes
from tests.feeds.test_core_seed import latest, minute_buckets, snapshots, trade_event
from tests.fixserver.pg_fixtures import migrated_dsn, pg_dsn

__all__ = ["migrated_dsn", "pg_dsn"]  # fixtures used below

T0 = 1_700_000_000 * 1_000_000_000
INSTRUMENTS = {i.symbol: i for i in demo_instruments()}
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def random_trades(n: int, seed: int = 3) -> list[SeedTrade]:
    """``n`` trades of both symbols over about 40 h (ts whole microseconds, as Postgres keeps them),
    several a minute, in exec-id order."""
    rng = random.Random(seed)
    out = []
    ts = T0 + 123_456_000
    for i in range(n):
        ts += rng.choice([0, 1_000, 7 * 10**9, 50 * 10**9, 3 * MINUTE_NS])
        symbol = rng.choice(("BTC-PERP", "ETH-PERP"))
        out.append(SeedTrade(symbol, rng.randint(499_900, 500_100), rng.randint(1, 30), ts,
                             1000 + i, rng.choice((Side.BUY, Side.SELL)), 5000 + 3 * i))
    return out


def store(dsn: str, trades: list[SeedTrade]) -> None:
    """Insert each trade as the writer does: a maker and a taker execution (plus an order ack
    that is no trade), prices and quantities as decimals."""
    rows = []
    for t in trades:
        inst = INSTRUMENTS[t.symbol]
        px = Decimal(t.price) * Decimal(inst.tick_size)
        qty = Decimal(t.qty) * Decimal(inst.lot_size)
        at = _EPOCH + datetime.timedelta(microseconds=t.ts // 1000)
        maker = Side.SELL if t.aggressor_side is Side.BUY else Side.BUY
        rows.append((f"{t.trade_id}-M", t.trade_id, t.seq, 1, "A1", t.symbol, maker.name,
                     "TRADE", px, qty, at))
        rows.append((f"{t.trade_id}-T", t.trade_id, t.seq, 2, "B1", t.symbol,
                     t.aggressor_side.name, "TRADE", px, qty, at))
        rows.append((f"{t.trade_id}-N", t.trade_id, t.seq, 3, "B1", t.symbol,
                     t.aggressor_side.name, "NEW", None, None, at))
    with psycopg.connect(dsn) as conn:
        conn.cursor().executemany(
            "INSERT INTO executions (exec_id, engine_exec_id, seq, order_id, account, symbol,"
            " side, exec_type, ord_status, last_px, last_qty, exec_time)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'FILLED', %s, %s, %s)", rows)


def test_history_rows_are_the_minute_aggregates_and_latest_trades_below_the_tail(migrated_dsn):
    """Buckets and recent trades equal grouping the stored trades of the window whose seq is
    below the tail's first; one row per symbol and minute, whatever the trade count."""
    trades = random_trades(3_000)
    store(migrated_dsn, trades)
    last_ts = trades[-1].ts
    before = trades[-40].seq  # the journal tail's first trade: the last 40 come from it
    history = load_history(migrated_dsn, demo_instruments(), last_ts, before)
    since = history_start(last_ts)
    expected = [t for t in trades if t.ts >= since and t.seq < before]
    assert trades[0].ts < since, "the read leaves out trades older than the window"
    assert history.buckets == minute_buckets(expected)
    assert history.recent == latest(expected)
    assert len(history.recent) == 2 * RECENT_TRADES
    minutes = {(t.symbol, t.ts // MINUTE_NS) for t in expected}
    assert len(history.buckets) == len(minutes) < len(expected)
    assert len(history.buckets) <= len(INSTRUMENTS) * WINDOW_MINUTES


def test_seeding_from_postgres_aggregates_and_the_tail_equals_trading_live(migrated_dsn):
    """A core seeded from the aggregates and the tail's trades equals one that traded live."""
    trades = random_trades(2_500, seed=8)
    cut = len(trades) - 25  # the tail: also already in Postgres, and read from the replay
    store(migrated_dsn, trades)
    last_ts = trades[-1].ts + MINUTE_NS
    live = FeedCore(demo_instruments())
    live.apply(trade_event(t) for t in trades)
    live.now = last_ts
    live.flush()
    history = load_history(migrated_dsn, demo_instruments(), last_ts, trades[cut].seq)
    seeded = FeedCore(demo_instruments())
    seeded.now = last_ts
    since = history_start(last_ts)
    tail = [t for t in trades[cut:] if t.ts >= since]
    n = seeded.seed_history(history.buckets, history.recent, tail)
    assert n == sum(1 for t in trades if t.ts >= since)
    assert snapshots(seeded) == snapshots(live)
    assert seeded.flush() == []


def test_empty_history(migrated_dsn):
    """No trades stored: no buckets, no recent trades."""
    history = load_history(migrated_dsn, demo_instruments(), T0, 10)
    assert history.buckets == [] and history.recent == []


def test_recent_trades_are_read_from_the_minutes_that_hold_enough_of_them():
    """Per symbol, the newest minute from which the buckets count ``keep`` trades; the oldest
    minute when they count fewer."""
    rows = [("A", 10, 0, 0, 0, 0, 0, 0, 5, None), ("B", 10, 0, 0, 0, 0, 0, 0, 1, None),
            ("A", 11, 0, 0, 0, 0, 0, 0, 3, None), ("A", 12, 0, 0, 0, 0, 0, 0, 4, None)]
    assert recent_minutes(rows, keep=4) == {"A": 12, "B": 10}
    assert recent_minutes(rows, keep=7) == {"A": 11, "B": 10}
    assert recent_minutes(rows, keep=100) == {"A": 10, "B": 10}
    assert recent_minutes([], keep=4) == {}
