"""Status requests (H) for ended orders no longer in memory are answered from Postgres, off the
reactor and in the session's order; Postgres down answers "unknown" with a Text saying so."""

from __future__ import annotations

import socket
from typing import Any

import psycopg
import pytest_twisted
from twisted.internet import defer, reactor, task

from fixserver.orderentry.status import STORE_UNAVAILABLE
from fixserver.orderentry.stored import StatusQuery
from fixserver.pg.order_reader import PgStatusReader
from tests.fixserver.inprocess_exchange import (
    fix_message,
    new_order,
    session_of,
    start_exchange,
)
from tests.fixserver.pg_fixtures import migrated_dsn, pg_dsn

__all__ = ["migrated_dsn", "pg_dsn"]

TIMEOUT = 20.0


def _service(server: Any) -> Any:
    """The order-entry service (server.application routes to it, for attribute reads only)."""
    return getattr(server.application, "other", server.application)


def _answers(session: Any) -> list:
    """Replace the session's send with a recorder of (MsgType, {tag: value})."""
    got: list = []

    def send(msg_type: str, fields: list, now_ns: int, **kw: Any) -> int:
        got.append((msg_type, {t: (v.decode() if isinstance(v, bytes) else str(v))
                               for t, v in fields}))
        return 0

    session.send = send
    return got


@defer.inlineCallbacks
def _until(check: Any, timeout: float = TIMEOUT) -> Any:
    """Wait (letting the reactor run) until ``check()`` is true."""
    waited = 0.0
    while not check():
        if waited >= timeout:
            raise AssertionError("timed out waiting")
        yield task.deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


def _down_dsn() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return f"postgresql://postgres@127.0.0.1:{port}/x"  # nothing listens there


@pytest_twisted.inlineCallbacks
def test_status_of_an_evicted_order_is_read_from_postgres_in_order(tmp_path, migrated_dsn):
    """S1 and B1 fill, Postgres commits them and they leave memory. ACME sends H for S1, a D
    and an F for that D in one burst: the answers are the status from Postgres (39=2), the
    New ack, the cancel, in that order. By OrderID the firm finds its order and another firm
    does not; a ClOrdID never used is unknown. Orders carry their session in Postgres."""
    server = start_exchange(tmp_path, migrated_dsn)
    service = _service(server)
    try:
        app = service.app
        app.max_ended_orders = 0
        acme, beta = session_of(server, "ACME1"), session_of(server, "BETA1")
        now = server.now_ns()
        service.on_message(acme, new_order("S1", "A1", "2", "0.004", "60000"), now)
        service.on_message(beta, new_order("B1", "B1", "1", "0.004", "60000"), now)
        service.pipeline.tick()
        yield service.pipeline.when_idle()
        assert len(app.ledger.orders) == 2
        yield service.pg_writer.flush().addTimeout(TIMEOUT, reactor)
        app.evict_ended()
        assert not app.ledger.orders, "committed to Postgres, so they left memory"
        with psycopg.connect(migrated_dsn) as conn:
            rows = conn.execute("SELECT cl_ord_id, session_id, order_id FROM orders").fetchall()
        assert {cl: sid for cl, sid, _ in rows} == {
            "S1": acme.settings.session_id, "B1": beta.settings.session_id}
        (s1_id,) = [oid for cl, _, oid in rows if cl == "S1"]

        got = _answers(acme)
        now = server.now_ns()
        service.on_message(acme, fix_message("H", (11, "S1"), (790, "R1"), (55, "BTC-PERP"),
                                             (54, "2")), now)
        service.on_message(acme, new_order("S2", "A1", "2", "0.001", "61000"), now)
        service.on_message(acme, fix_message("F", (41, "S2"), (11, "X2"), (55, "BTC-PERP"),
                                             (54, "2"), (60, "20240101-00:00:00")), now)
        assert got == [], "nothing is answered before the read completes"
        yield _until(lambda: len(got) >= 3)
        yield service.pipeline.when_idle()
        (status, ack, canceled) = [f for _, f in got]
        assert (status[150], status[39], status[11], status[14], status[151], status[6],
                status[790]) == ("I", "2", "S1", "0.004", "0", "60000.0", "R1")
        assert (ack[150], ack[11]) == ("0", "S2")
        assert (canceled[150], canceled[11], canceled[41]) == ("4", "X2", "S2")

        got.clear()
        beta_got = _answers(beta)
        service.on_message(acme, fix_message("H", (37, str(s1_id)), (55, "BTC-PERP"),
                                             (54, "2")), server.now_ns())
        service.on_message(beta, fix_message("H", (37, str(s1_id)), (55, "BTC-PERP"),
                                             (54, "1")), server.now_ns())
        service.on_message(acme, fix_message("H", (11, "NEVER"), (55, "BTC-PERP"),
                                             (54, "1")), server.now_ns())
        yield _until(lambda: len(got) >= 2 and beta_got)
        by_id, never = [f for _, f in got]
        assert (by_id[39], by_id[11], by_id[37]) == ("2", "S1", str(s1_id))
        assert (beta_got[0][1][39], beta_got[0][1][58]) == ("8", "unknown order")
        assert (never[39], never[58]) == ("8", "unknown order")
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_reader_finds_rows_within_the_retention_window(migrated_dsn):
    """The reader's query: by the session's ClOrdID (current or before the last replace) and
    by OrderID, only rows updated at or after the window's start."""
    day = 86_400 * 1_000_000_000
    with psycopg.connect(migrated_dsn) as conn:
        conn.execute(
            "INSERT INTO orders (order_id, cl_ord_id, orig_cl_ord_id, account, symbol, side, "
            "ord_type, time_in_force, price, quantity, filled_qty, leaves_qty, avg_price, "
            "status, created_at, updated_at, last_exec_id, session_id) VALUES "
            "(7, 'C2', 'C1', 'A1', 'BTC-PERP', 'BUY', 'LIMIT', 'GTC', 60000.0, 0.004, 0.004, "
            "0, 60000.0, 'FILLED', to_timestamp(2 * 86400), to_timestamp(2 * 86400), 9, 'S'), "
            "(3, 'OLD', NULL, 'A1', 'BTC-PERP', 'BUY', 'LIMIT', 'GTC', 60000.0, 0.004, 0, "
            "0.004, NULL, 'CANCELED', to_timestamp(86400), to_timestamp(86400), 4, 'S')")
    reader = PgStatusReader(migrated_dsn, reactor)
    reader.start()
    try:
        results = []
        for query in (StatusQuery("S", "C2", None, 2 * day), StatusQuery("S", "C1", None, 2 * day),
                      StatusQuery("T", "C2", None, 2 * day), StatusQuery("T", "", 7, 2 * day),
                      StatusQuery("S", "OLD", 3, 2 * day), StatusQuery("S", "OLD", 3, day)):
            d: defer.Deferred = defer.Deferred()
            reader.lookup(query, lambda row, error, d=d: d.callback((row, error)))
            results.append((yield d.addTimeout(TIMEOUT, reactor)))
        found = [(row.order_id if row else None, error) for row, error in results]
        assert found == [(7, None), (7, None), (None, None), (7, None), (None, None),
                         (3, None)]
        row = results[0][0]
        assert (row.session_id, row.orig_cl_ord_id, row.status, str(row.filled_qty)) == (
            "S", "C1", "FILLED", "0.004")
    finally:
        reader.stop()


@pytest_twisted.inlineCallbacks
def test_reader_with_postgres_down_answers_unavailable():
    """Nothing listens at the DSN: the lookup fails (within the timeout) with the error, and
    the application turns that into the unknown answer with the Text."""
    reader = PgStatusReader(_down_dsn(), reactor, timeout=5.0)
    reader.start()
    try:
        d: defer.Deferred = defer.Deferred()
        reader.lookup(StatusQuery("S", "C1", None, 0), lambda row, error: d.callback((row, error)))
        row, error = yield d.addTimeout(TIMEOUT, reactor)
        assert row is None and error.startswith("OperationalError")
        assert reader.failures == 1 and reader.outstanding == 0
    finally:
        reader.stop()
    assert STORE_UNAVAILABLE.startswith("unknown order")


def test_order_rows_carry_the_session_that_entered_the_order():
    """processed_rows: the NewOrder's accepted row names the session of its origin; the rows
    of the trade it makes (both orders) leave the stored session alone (None)."""
    from engine import MatchingEngine, demo_instruments
    from engine.commands import NewOrder
    from engine.enums import Side
    from engine.recovery import ProcessedCommand
    from fixserver.orderentry.ownership import entering_session, origin
    from fixserver.pg.rows import OrderRow, RowBuilder

    engine = MatchingEngine(demo_instruments())
    builder = RowBuilder(demo_instruments())
    processed = []
    for seq, (sid, account, side) in enumerate((("S", "A1", Side.SELL), ("T", "B1", Side.BUY)),
                                               start=1):
        command = NewOrder(seq, seq, account, "BTC-PERP", side, 1, price=600000,
                           cl_ord_id=f"C{seq}")
        processed.append(ProcessedCommand(origin(sid, "D", ""), command, engine.process(command)))
    rows = [r for r in builder.processed_rows(processed, entering_session)
            if isinstance(r, OrderRow)]
    assert [(r.order_id, r.status, r.session_id) for r in rows] == [
        (1, "NEW", "S"), (2, "NEW", "T"), (1, "FILLED", None), (2, "FILLED", None)]
