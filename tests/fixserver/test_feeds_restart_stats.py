"""The feed's 24 h tickers, current candles and recent trades survive a restart (from Postgres)."""

from __future__ import annotations

import datetime
from decimal import Decimal

import psycopg
import pytest
import pytest_twisted
from twisted.logger import globalLogPublisher

from engine.enums import Side
from engine.instruments import demo_instruments
from feeds.channels import KLINE, TICKER, Channel
from feeds.core import SeedTrade
from feeds.kline import INTERVALS
from feeds.ticker import MINUTE_NS, WINDOW_MINUTES
from fixserver import feeds_wiring
from fixserver.feeds_history import (
    datetime_to_ns,
    history_start,
    load_history,
    seed_trades_of,
    tail_start,
    tail_trades,
)
from fixserver.server import FixServer
from tests.fixserver.inprocess_exchange import new_order, session_of, start_exchange
from tests.fixserver.pg_fixtures import migrated_dsn, pg_dsn

__all__ = ["migrated_dsn", "pg_dsn"]  # fixtures used below

SYMBOL = "BTC-PERP"


def _stats(server: FixServer) -> dict:
    """The ticker's 24 h statistics, every current candle and the recent trades (ts in us)."""
    core = server.feeds.core
    ticker = core.snapshot_message(Channel(TICKER, SYMBOL, None))
    assert ticker is not None
    window = {k: v for k, v in ticker.payload.items() if k not in ("ts", "bid", "bid_qty",
                                                                     "ask", "ask_qty")}
    candles = {}
    for interval in INTERVALS:
        msg = core.snapshot_message(Channel(KLINE, SYMBOL, interval))
        candles[interval] = msg.payload["data"] if msg is not None else None
    recent = [dict(t, ts=t["ts"] // 1000) for t in core.recent_trades(SYMBOL)]
    return {"ticker": window, "klines": candles, "recent": recent}


def _trade(server: FixServer, n: int, price: str) -> None:
    """ACME sells to BETA's bid at ``price`` (one trade), matched now."""
    acme = session_of(server, "ACME1")
    beta = session_of(server, "BETA1")
    now = server.now_ns()
    app = server.application
    app.on_message(beta, new_order(f"B{n}", "B1", "1", "0.002", price, symbol=SYMBOL), now)
    app.on_message(acme, new_order(f"S{n}", "A1", "2", "0.002", price, symbol=SYMBOL), now)


@pytest_twisted.inlineCallbacks
def test_ticker_klines_and_recent_trades_survive_restart_from_snapshot(tmp_path, migrated_dsn):
    """Trades before a snapshot and after it are all in the restarted feed's statistics."""
    server = start_exchange(tmp_path, migrated_dsn)
    order_pipeline = _pipeline(server)
    for n, price in enumerate(("60000", "60010.5", "59990")):
        _trade(server, n, price)
    order_pipeline.tick()
    order_pipeline.take_snapshot()  # the journal tail after it no longer holds these trades
    yield order_pipeline.when_idle()
    for n, price in enumerate(("60020", "59980.1"), start=10):
        _trade(server, n, price)
    order_pipeline.tick()
    yield order_pipeline.when_idle()
    server.feeds.hub.flush()
    expected = _stats(server)
    assert expected["ticker"]["trades"] == 5, "five trades in the 24 h window"
    assert expected["ticker"]["high"] == "60020.0" and expected["ticker"]["low"] == "59980.1"
    assert len(expected["recent"]) == 5
    yield server.stop()

    restarted = start_exchange(tmp_path, migrated_dsn)
    try:
        assert _pipeline(restarted).recovered_extra is not None, "started from a snapshot"
        assert restarted.feeds.seeded_trades == 5
        assert _stats(restarted) == expected
        kinds = {m.kind for m in restarted.feeds.hub.flush()}
        assert not kinds & {"trades", "kline"}, "the seeded history is not published again"
    finally:
        yield restarted.stop()


def _pipeline(server: FixServer):
    """The order pipeline behind the server's market-data router."""
    return server.feeds.application.other.pipeline


def test_load_history_raises_when_postgres_is_unreachable():
    """Nothing listening: the read fails fast with psycopg's error (the caller warns)."""
    with pytest.raises(psycopg.OperationalError):
        load_history("postgresql://postgres@127.0.0.1:1/none", demo_instruments(), 10**18, 5)


@pytest_twisted.inlineCallbacks
def test_unreadable_history_falls_back_to_the_journal_tail(tmp_path, migrated_dsn, monkeypatch):
    """If the history read fails at start-up the server still starts, with the statistics of
    the trades its journal tail replayed."""
    server = start_exchange(tmp_path, migrated_dsn)
    _trade(server, 1, "60000")
    order_pipeline = _pipeline(server)
    order_pipeline.tick()
    yield order_pipeline.when_idle()
    order_pipeline.snapshot_on_shutdown = False  # as a crash: the restart replays the tail
    yield server.stop()

    def unreachable(*args):
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(feeds_wiring, "load_history", unreachable)
    warnings: list[str] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "fixserver.feeds":
            warnings.append(event.get("log_format", ""))

    globalLogPublisher.addObserver(observe)
    try:
        restarted = start_exchange(tmp_path, migrated_dsn)
    finally:
        globalLogPublisher.removeObserver(observe)
    try:
        assert restarted.feeds.seeded_trades == 1
        assert _stats(restarted)["ticker"]["trades"] == 1
        assert any(w.startswith("feeds.history_unavailable") for w in warnings), warnings
    finally:
        yield restarted.stop()


def test_history_reaches_back_over_the_ticker_window_and_every_current_candle():
    """The read starts at the 24 h window's first minute, before the current 1d candle."""
    last = 1_700_000_123 * 1_000_000_000 + 456
    start = history_start(last)
    assert start == (last // MINUTE_NS - WINDOW_MINUTES + 1) * MINUTE_NS
    assert all(start <= last - last % ns for ns in INTERVALS.values())
    assert history_start(5) == 0


def test_rows_become_seed_trades_in_ticks_and_lots():
    """Decimal price and quantity become ticks and lots; the time keeps its microseconds."""
    at = datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=datetime.timezone.utc)
    rows = [(SYMBOL, Decimal("60010.5"), Decimal("0.002"), at, 43, "SELL", 7),
            ("NOPE-PERP", Decimal("1"), Decimal("1"), at, 44, "BUY", 8)]
    (trade,) = seed_trades_of(rows, demo_instruments())
    assert trade == SeedTrade(SYMBOL, 600105, 2, datetime_to_ns(at), 43, Side.SELL, 7)
    assert trade.ts % 1_000_000_000 == 678_901_000


def test_the_journal_tail_starts_at_its_first_trade_and_is_seeded_from_the_replay():
    """Postgres is read below the tail's first trade (all of the journal without a tail
    trade); the tail's trades, those in the window, are seeded one by one in replay order."""
    from engine.events import Trade

    def trade(exec_id: int, ts: int) -> Trade:
        return Trade(exec_id, ts, exec_id, SYMBOL, 600_000, 2, Side.BUY, 1, "", "A", 2, 0, 0,
                     0, 2, "", "B", 2, 0, 0, 0, 2, 600_000)

    replayed = [trade(5, 10), trade(6, 200), trade(7, 300)]
    assert tail_start(replayed, next_seq=9) == 5
    assert tail_start([], next_seq=9) == 9
    assert [t.trade_id for t in tail_trades(replayed, since_ns=50)] == [6, 7]
    assert list(tail_trades(replayed, since_ns=0))[1] == SeedTrade(
        SYMBOL, 600_000, 2, 200, 6, Side.BUY, 6)
