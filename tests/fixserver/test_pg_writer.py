"""Engine events become rows, and the batched writer commits them idempotently to Postgres."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import pytest_twisted
from prometheus_client import REGISTRY
from twisted.internet import defer, reactor, task
from twisted.logger import globalLogPublisher

from engine import (
    CancelOrder,
    LevelChanged,
    MatchingEngine,
    NewOrder,
    Side,
    demo_instruments,
)
from fixserver.pg.batch import STRATEGIES, BatchWriter, coalesce
from fixserver.pg.rows import (
    ExecutionRow,
    OrderRow,
    PositionRow,
    RowBuilder,
    SessionRow,
    maker_exec_id,
    ns_to_datetime,
    session_row,
    taker_exec_id,
)
from fixserver.pg.writer import PgWriter
from fixserver.settings import SessionSettings
from tests.fixserver.pg_fixtures import migrated_dsn, pg_dsn

__all__ = ["migrated_dsn", "pg_dsn"]  # fixtures used below

BTC = "BTC-PERP"
TIMEOUT = 20.0


class Venue:
    """A real matching engine and a RowBuilder fed with its events."""

    def __init__(self) -> None:
        self.engine = MatchingEngine(demo_instruments())
        self.builder = RowBuilder(demo_instruments())
        self.seq = 0
        self.events: list[Any] = []

    def run(self, make: Callable[[int, int], Any]) -> list[Any]:
        """Process one command built from (seq, ts); return its rows."""
        self.seq += 1
        events = self.engine.process(make(self.seq, 1_700_000_000_000_000_000 + self.seq * 1000))
        self.events.extend(events)
        return self.builder.rows(events)

    def order(self, account: str, side: Side, qty: int, price: int) -> list[Any]:
        return self.run(lambda seq, ts: NewOrder(seq, ts, account, BTC, side, qty, price,
                                                 cl_ord_id=f"c{seq}"))


def fetch(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


# -- rows (pure) ------------------------------------------------------------------------------


def test_accept_trade_cancel_rows() -> None:
    """Accepted, traded and canceled orders give order, execution and position rows."""
    v = Venue()
    accepted = v.order("ACME", Side.SELL, 5, 600_000)
    assert [type(r) for r in accepted] == [OrderRow, ExecutionRow]
    order, execution = accepted
    assert (order.order_id, order.side, order.price, order.quantity, order.status) == \
        (1, "SELL", Decimal("60000.0"), Decimal("0.005"), "NEW")
    assert (execution.exec_id, execution.exec_type, execution.ord_status) == ("1", "NEW", "NEW")

    traded = v.order("BETA", Side.BUY, 3, 600_010)
    trade = next(e for e in v.events if type(e).__name__ == "Trade")
    kinds = [type(r) for r in traded]
    assert kinds == [OrderRow, ExecutionRow] + [OrderRow, ExecutionRow] * 2 + [PositionRow] * 2
    maker_exec, taker_exec = (r for r in traded[2:] if isinstance(r, ExecutionRow))
    assert maker_exec.exec_id == maker_exec_id(trade.exec_id) == f"{trade.exec_id}-M"
    assert taker_exec.exec_id == taker_exec_id(trade.exec_id) == f"{trade.exec_id}-T"
    assert (maker_exec.liquidity, maker_exec.side, maker_exec.ord_status) == \
        ("MAKER", "SELL", "PARTIALLY_FILLED")
    assert (taker_exec.liquidity, taker_exec.side, taker_exec.ord_status) == \
        ("TAKER", "BUY", "FILLED")
    assert (taker_exec.last_px, taker_exec.last_qty, taker_exec.avg_price) == \
        (Decimal("60000.0"), Decimal("0.003"), Decimal("60000.0"))
    assert taker_exec.fee == Decimal("0.09") and maker_exec.fee == Decimal("-0.018")
    maker_pos, taker_pos = traded[-2:]
    assert (maker_pos.account, maker_pos.side, maker_pos.size, maker_pos.size_lots) == \
        ("ACME", "SHORT", Decimal("0.003"), -3)
    assert (taker_pos.account, taker_pos.side, taker_pos.entry_price) == \
        ("BETA", "LONG", Decimal("60000.0"))

    canceled = v.run(lambda seq, ts: CancelOrder(seq, ts, "ACME", 1, cl_ord_id="x1"))
    order, execution = canceled
    assert (order.status, order.cl_ord_id, order.filled_qty, order.leaves_qty) == \
        ("CANCELED", "c1", Decimal("0.003"), Decimal("0.000"))
    assert (execution.cl_ord_id, execution.orig_cl_ord_id, execution.reason) == \
        ("x1", "c1", "USER")


def test_rejected_order_is_an_execution_only_and_market_data_is_skipped() -> None:
    """A reject writes only its execution row; L2 events produce nothing."""
    v = Venue()
    rows = v.run(lambda seq, ts: NewOrder(seq, ts, "ACME", "NOPE", Side.BUY, 1, 10))
    assert [(type(r), r.exec_type, r.reason) for r in rows] == \
        [(ExecutionRow, "REJECTED", "UNKNOWN_SYMBOL")]
    assert v.builder.rows([LevelChanged(1, BTC, Side.BUY, 1, 1, 1)]) == []


def test_ns_timestamps_become_utc_microseconds() -> None:
    """Nanosecond timestamps become aware UTC datetimes floored to the microsecond."""
    dt = ns_to_datetime(1_700_000_000_123_456_789)
    assert dt.isoformat() == "2023-11-14T22:13:20.123456+00:00"


def test_coalesce_merges_an_orders_rows_and_keeps_newest_position() -> None:
    """Rows of one order merge (non-NULL wins, oldest created_at); positions keep the newest."""
    v = Venue()
    rows = v.order("ACME", Side.SELL, 5, 600_000) + v.order("BETA", Side.BUY, 3, 600_010)
    rows += v.order("BETA", Side.BUY, 1, 600_000)
    orders, executions, positions, sessions = coalesce(rows)
    assert len(executions) == sum(isinstance(r, ExecutionRow) for r in rows)
    maker = next(o for o in orders if o.order_id == 1)
    assert (maker.ord_type, maker.time_in_force, maker.quantity) == ("LIMIT", "GTC",
                                                                     Decimal("0.005"))
    assert (maker.filled_qty, maker.status) == (Decimal("0.004"), "PARTIALLY_FILLED")
    assert maker.created_at == ns_to_datetime(1_700_000_000_000_001_000)
    assert {(p.account, p.size_lots) for p in positions} == {("ACME", -4), ("BETA", 4)}
    assert sessions == []


# -- BatchWriter against Postgres (synchronous) -----------------------------------------------


@pytest.fixture(params=STRATEGIES)
def batch_writer(request: pytest.FixtureRequest, migrated_dsn: str) -> Iterator[BatchWriter]:
    """A BatchWriter of each strategy on a migrated schema."""
    writer = BatchWriter(migrated_dsn, request.param)
    yield writer
    writer.close()


def test_batch_write_is_idempotent_and_never_regresses(batch_writer: BatchWriter) -> None:
    """Writing the same rows again, or older rows after newer ones, changes nothing."""
    v = Venue()
    first = v.order("ACME", Side.SELL, 5, 600_000)
    second = v.order("BETA", Side.BUY, 3, 600_010)
    batch_writer.write(first)
    batch_writer.write(second)
    dsn = batch_writer.dsn
    snapshot = [fetch(dsn, f"SELECT * FROM {t} ORDER BY 1") for t in
                ("orders", "executions", "positions")]
    batch_writer.write(first + second)  # a replay after a restart
    batch_writer.write(first)  # an old version of order 1
    assert [fetch(dsn, f"SELECT * FROM {t} ORDER BY 1") for t in
            ("orders", "executions", "positions")] == snapshot
    assert fetch(dsn, "SELECT order_id, status, ord_type, time_in_force, quantity, filled_qty, "
                      "last_exec_id FROM orders ORDER BY 1") == [
        (1, "PARTIALLY_FILLED", "LIMIT", "GTC", Decimal("0.005"), Decimal("0.003"), 3),
        (2, "FILLED", "LIMIT", "GTC", Decimal("0.003"), Decimal("0.003"), 3),
    ]
    assert fetch(dsn, "SELECT exec_id FROM executions ORDER BY engine_exec_id, exec_id") == \
        [("1",), ("2",), ("3-M",), ("3-T",)]
    assert fetch(dsn, "SELECT account, side, size, size_lots, entry_price, leverage, fees "
                      "FROM positions ORDER BY 1") == [
        ("ACME", "SHORT", Decimal("0.003"), -3, Decimal("60000.0"), Decimal(1),
         Decimal("-0.018")),
        ("BETA", "LONG", Decimal("0.003"), 3, Decimal("60000.0"), Decimal(1), Decimal("0.09")),
    ]


def test_strategies_write_identical_tables(migrated_dsn: str, pg_dsn: str) -> None:
    """COPY+upsert and pipelined upserts leave the same rows for the same event stream."""
    v = Venue()
    rows = []
    for i in range(30):
        rows += v.order("ACME", Side.SELL, 2 + i % 3, 600_000 + i % 4)
        rows += v.order("BETA", Side.BUY, 3, 600_003)
    results = []
    for strategy in STRATEGIES:
        with psycopg.connect(migrated_dsn) as conn:
            conn.execute("TRUNCATE orders, executions, positions")
        writer = BatchWriter(migrated_dsn, strategy)
        for start in range(0, len(rows), 17):  # odd batch edges split orders' rows
            writer.write(rows[start:start + 17])
        writer.close()
        results.append([fetch(migrated_dsn, f"SELECT * FROM {t} ORDER BY 1, 2")
                        for t in ("orders", "executions", "positions")])
    assert results[0] == results[1]
    assert len(results[0][1]) == sum(isinstance(r, ExecutionRow) for r in rows)


def test_session_rows_upsert_newest(batch_writer: BatchWriter) -> None:
    """FIX session state rows insert, then update only with a newer or equal updated_at."""
    settings = SessionSettings("FIX.4.4", "EXCH", "CLIENT1", firm="ACME")
    t0 = 10**18
    batch_writer.write([session_row(settings, 5, 7, t0, "LOGGED_ON", t0 + 5, t0 + 9000)])
    batch_writer.write([session_row(settings, 3, 3, t0, "OLD", None, t0 + 1000)])  # older
    row = fetch(batch_writer.dsn, "SELECT session_id, next_sender_seq, next_target_seq, state, "
                                  "firm_id FROM fix_sessions")
    assert row == [("FIX.4.4:EXCH->CLIENT1", 5, 7, "LOGGED_ON", "ACME")]
    assert isinstance(session_row(settings, 1, 1, 0, "X", None, 0), SessionRow)


# -- PgWriter on the reactor ------------------------------------------------------------------


def _metric(name: str, labels: dict[str, str] | None = None) -> float:
    value = REGISTRY.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


@pytest_twisted.inlineCallbacks
def test_writer_batches_and_flush_waits_for_commit(migrated_dsn: str) -> Any:
    """Enqueued ticks are committed in batches; flush fires when all of them are in."""
    writer = PgWriter(migrated_dsn, reactor, max_batch_rows=50)
    writer.start()
    try:
        assert (yield writer.flush()) is None  # nothing enqueued: fires at once
        v = Venue()
        expected = 0
        before = _metric("database_query_latency_ms_count", {"operation": "upsert",
                                                             "table": "executions"})
        for i in range(200):
            rows = v.order("ACME" if i % 2 else "BETA", Side.SELL if i % 2 else Side.BUY, 1,
                           600_000)
            expected += sum(isinstance(r, ExecutionRow) for r in rows)
            writer.enqueue(rows)
        assert writer.backlog > 0
        yield writer.flush().addTimeout(TIMEOUT, reactor)
        assert writer.backlog == 0
        assert fetch(migrated_dsn, "SELECT count(*) FROM executions") == [(expected,)]
        assert _metric("pg_writer_lag_rows") == 0
        assert _metric("database_query_latency_ms_count", {
            "operation": "upsert", "table": "executions"}) > before
    finally:
        writer.stop()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest_twisted.inlineCallbacks
def test_writer_backs_off_exponentially_then_recovers(migrated_dsn: str) -> Any:
    """With Postgres unreachable, retries back off 0.05, 0.1, 0.2 ... capped; rows catch up."""
    clock = task.Clock()
    down_dsn = f"postgresql://postgres@127.0.0.1:{_free_port()}/x"  # nothing listens there
    writer = PgWriter(down_dsn, reactor, clock, backoff_initial=0.05, backoff_max=0.3)
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    failures_before = _metric("pg_writer_failures_total")
    writer.start()
    try:
        v = Venue()
        expected = 0
        delays = []
        for attempt in range(1, 6):
            rows = v.order("ACME" if attempt % 2 else "BETA",
                           Side.SELL if attempt % 2 else Side.BUY, 2, 600_000)
            expected += sum(isinstance(r, ExecutionRow) for r in rows)
            writer.enqueue(rows)  # queueing keeps working while the database is down
            yield _until(lambda a=attempt: writer.consecutive_failures == a)
            (call,) = clock.getDelayedCalls()
            delays.append(round(call.getTime() - clock.seconds(), 3))
            if attempt == 5:
                writer._batch_writer.dsn = migrated_dsn  # Postgres is back for the next try
            clock.advance(call.getTime() - clock.seconds())
        assert delays == [0.05, 0.1, 0.2, 0.3, 0.3]
        assert _metric("pg_writer_failures_total") >= failures_before + 5
        yield writer.flush().addTimeout(TIMEOUT, reactor)
        assert writer.backlog == 0 and writer.consecutive_failures == 0
        assert writer.last_error is None
        assert fetch(migrated_dsn, "SELECT count(*) FROM executions") == [(expected,)]
        names = [e.get("log_format", "").split(" ")[0] for e in events
                 if e.get("log_namespace") == "fixserver.pg"]
        assert "pg.write_failed" in names and names[-1] == "pg.recovered"
    finally:
        globalLogPublisher.removeObserver(events.append)
        writer.stop()


@defer.inlineCallbacks
def _until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> Any:
    """Wait (on the real reactor) until the writer thread's result made ``condition`` true."""
    waited = 0.0
    while not condition():
        if waited > timeout:
            raise AssertionError("condition not met in time")
        yield task.deferLater(reactor, 0.005, lambda: None)
        waited += 0.005
