"""The fix_sessions writer: ticks, prompt logon/logout writes, backoff, bounded stop, upserts."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import psycopg
import pytest_twisted
from prometheus_client import REGISTRY
from twisted.internet import defer, reactor, task
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from fixserver.pg.batch import BatchWriter
from fixserver.pg.rows import SessionRow, ns_to_datetime
from fixserver.pg.session_state import DISCONNECTED, LOGGED_ON
from fixserver.pg.session_writer import SessionStateWriter
from fixserver.protocol import SessionHost
from fixserver.session import Session, SessionRegistry
from fixserver.settings import SessionSettings
from fixserver.store import MemoryMessageStore
from tests.fixserver.pg_fixtures import migrated_dsn, pg_dsn

__all__ = ["migrated_dsn", "pg_dsn"]  # fixtures used below

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000
TIMEOUT = 20.0


class ThreadlessClock(task.Clock):
    """task.Clock that also runs callFromThread at once (the ManualPool's results)."""

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        f(*args, **kw)


class ManualPool:
    """A thread pool whose jobs run only when the test says so (a write stays in flight)."""

    started = True

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, Any, tuple[Any, ...]]] = []

    def callInThreadWithCallback(self, on_result: Any, func: Any, *args: Any) -> None:
        self.jobs.append((on_result, func, args))

    def callInThread(self, func: Any, *args: Any) -> None:
        func(*args)

    def run_all(self) -> None:
        while self.jobs:
            on_result, func, args = self.jobs.pop(0)
            try:
                result = func(*args)
            except Exception:
                on_result(False, Failure())
            else:
                on_result(True, result)


class FakeRows:
    """Records each batch; fails while ``down`` is set."""

    def __init__(self) -> None:
        self.batches: list[list[SessionRow]] = []
        self.down = False
        self.closed = False

    def write(self, rows: Any, next_seq: int | None = None) -> float:
        if self.down:
            raise ConnectionError("connection refused")
        self.batches.append(list(rows))
        return 0.001

    def close(self) -> None:
        self.closed = True


def make_session(client: str, firm: str | None = "ACME") -> Session:
    settings = SessionSettings("FIX.4.4", "EXCH", client, firm=firm)
    return Session(settings, MemoryMessageStore(T0 - 60 * S), None)  # type: ignore[arg-type]


class Rig:
    """A writer on a ThreadlessClock, a ManualPool and FakeRows, with two sessions."""

    def __init__(self, **kw: Any) -> None:
        self.clock = ThreadlessClock()
        self.pool = ManualPool()
        self.rows = FakeRows()
        self.acme = make_session("ACME1")
        self.beta = make_session("BETA1", "BETA")
        self.writer = SessionStateWriter(
            "unused", [self.acme, self.beta], self.clock, self.now_ns, self.clock,
            threadpool=self.pool, row_writer=self.rows, **kw)  # type: ignore[arg-type]

    def now_ns(self) -> int:
        return T0 + int(self.clock.seconds() * S)

    def written(self) -> list[list[tuple[str, str, int, int]]]:
        """Each batch as (client, state, next sender seq, next target seq) per row."""
        return [[(r.target_comp_id, r.state, r.next_sender_seq, r.next_target_seq) for r in b]
                for b in self.rows.batches]


def _metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


def test_start_writes_every_session_once_then_only_what_changed_each_tick() -> None:
    """Start writes all sessions; a tick writes only moved seqs, coalesced to one row each."""
    rig = Rig()
    rig.acme.store.set_next_sender_seq(57)
    rig.writer.start()
    rig.pool.run_all()
    assert rig.written() == [[("ACME1", DISCONNECTED, 57, 1), ("BETA1", DISCONNECTED, 1, 1)]]
    rig.clock.advance(1.0)
    rig.pool.run_all()
    assert len(rig.rows.batches) == 1  # nothing moved: nothing written
    for seq in range(58, 90):  # many messages within one tick
        rig.acme.store.set_next_sender_seq(seq)
        rig.acme.store.set_next_target_seq(seq - 50)
    rig.clock.advance(0.5)
    assert rig.pool.jobs == []  # seqs wait for the tick
    rig.clock.advance(0.5)
    rig.pool.run_all()
    assert rig.written()[1:] == [[("ACME1", DISCONNECTED, 89, 39)]]
    assert rig.writer.pending == 0 and _metric("pg_session_writer_pending") == 0


def test_logon_and_logout_are_written_at_once_or_right_after_the_write_in_flight() -> None:
    """A logon goes out without waiting for a tick; one during a write follows it, coalesced."""
    rig = Rig()
    rig.writer.start()
    rig.pool.run_all()
    rig.clock.advance(0.25)
    rig.acme.store.set_next_target_seq(2)
    rig.writer.session_logged_on(rig.acme, rig.now_ns())
    assert len(rig.pool.jobs) == 1  # in flight now, not at the next tick
    rig.acme.store.set_next_sender_seq(2)
    rig.writer.session_logged_on(rig.beta, rig.now_ns())  # while ACME's write is in flight
    rig.writer.session_logged_out(rig.beta, rig.now_ns() + 1)
    assert len(rig.pool.jobs) == 1
    rig.pool.run_all()  # ACME's write done -> BETA's logon and logout follow as one row
    batches = rig.rows.batches
    assert rig.written()[1:] == [[("ACME1", LOGGED_ON, 1, 2)], [("BETA1", DISCONNECTED, 1, 1)]]
    beta = batches[2][0]
    assert beta.last_logon == ns_to_datetime(T0 + S // 4)
    assert beta.last_logout == ns_to_datetime(T0 + S // 4 + 1)
    assert batches[1][0].last_logon == ns_to_datetime(T0 + S // 4)
    rig.clock.advance(0.75)  # the tick picks up ACME's sender seq moved during the write
    rig.pool.run_all()
    assert rig.written()[3:] == [[("ACME1", LOGGED_ON, 2, 2)]]


def test_postgres_down_backs_off_keeps_coalescing_and_recovers() -> None:
    """Failed writes retry after 0.5, 1, 2 ... s (capped), are counted and logged; meanwhile
    changes coalesce; on recovery the newest values are written and the recovery logged."""
    rig = Rig(backoff_initial=0.5, backoff_max=2.0)
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    failures_before = _metric("pg_session_writer_failures_total")
    try:
        rig.rows.down = True
        rig.writer.start()
        delays = []
        for attempt in range(1, 5):
            rig.pool.run_all()
            assert rig.writer.consecutive_failures == attempt
            retry = [c for c in rig.clock.getDelayedCalls() if c.func == rig.writer._retry_now]
            delays.append(retry[0].getTime() - rig.clock.seconds())
            rig.acme.store.set_next_sender_seq(10 + attempt)
            rig.writer.session_logged_on(rig.acme, rig.now_ns())  # no write while backing off
            assert rig.pool.jobs == []
            rig.clock.advance(delays[-1])
        assert delays == [0.5, 1.0, 2.0, 2.0]
        assert _metric("pg_session_writer_failures_total") == failures_before + 4
        assert rig.writer.pending == 2 and _metric("pg_session_writer_pending") == 2
        assert "ConnectionError" in (rig.writer.last_error or "")
        rig.rows.down = False
        rig.pool.run_all()
        assert sorted(rig.written()[0]) == [("ACME1", LOGGED_ON, 14, 1),
                                            ("BETA1", DISCONNECTED, 1, 1)]
        assert rig.writer.pending == 0 and rig.writer.consecutive_failures == 0
        names = [e.get("log_format", "").split(" ")[0] for e in events
                 if e.get("log_namespace") == "fixserver.pg"]
        assert names.count("pg.sessions_write_failed") == 4
        assert names[-1] == "pg.sessions_recovered"
    finally:
        globalLogPublisher.removeObserver(events.append)


def test_stop_writes_the_last_logouts_and_closes() -> None:
    """stop() samples once more, writes what is pending and closes the connection."""
    rig = Rig()
    rig.writer.start()
    rig.pool.run_all()
    rig.writer.session_logged_on(rig.acme, rig.now_ns())
    rig.pool.run_all()
    rig.writer.session_logged_out(rig.acme, rig.now_ns())
    rig.beta.store.set_next_sender_seq(3)
    d = rig.writer.stop()
    rig.pool.run_all()
    assert d.called and rig.rows.closed
    # the logout was in flight when stop() began; the sampled seq follows at once
    assert rig.written()[2:] == [[("ACME1", DISCONNECTED, 1, 1)], [("BETA1", DISCONNECTED, 3, 1)]]
    assert not rig.clock.getDelayedCalls()  # the tick loop is gone


def test_stop_gives_up_after_its_timeout_while_postgres_is_down() -> None:
    """With Postgres down, stop() ends after stop_timeout, logging what stays unwritten."""
    rig = Rig(stop_timeout=3.0)
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        rig.rows.down = True
        rig.writer.start()
        rig.pool.run_all()
        d = rig.writer.stop()
        rig.pool.run_all()
        for _ in range(10):
            rig.clock.advance(0.5)
            rig.pool.run_all()
        assert d.called and rig.rows.closed and rig.writer.pending == 2
        assert not rig.clock.getDelayedCalls()
        assert any(e.get("log_format", "").startswith("pg.sessions_flush_timeout")
                   for e in events)
    finally:
        globalLogPublisher.removeObserver(events.append)


class _Protocol:
    peer = "127.0.0.1:1"


def test_session_host_tells_its_observers_of_logons_logouts_and_lost_connections() -> None:
    """SessionHost calls the writer on logon, on logout of the bound connection only, and
    on a connection lost without a LoggedOut."""
    rig = Rig()
    rig.writer.start()
    rig.pool.run_all()
    host = SessionHost(SessionRegistry([rig.acme, rig.beta]), None,  # type: ignore[arg-type]
                       rig.clock, rig.now_ns)
    host.observers.append(rig.writer)
    bound, other = _Protocol(), _Protocol()
    host.logged_on(rig.acme, bound)  # type: ignore[arg-type]
    rig.pool.run_all()
    host.logged_out(rig.acme, other, "not the bound connection")  # type: ignore[arg-type]
    assert rig.writer.tracker.state_of(rig.acme.settings.session_id) == LOGGED_ON
    host.logged_out(rig.acme, bound, "logout")  # type: ignore[arg-type]
    rig.pool.run_all()
    host.logged_on(rig.beta, bound)  # type: ignore[arg-type]
    rig.pool.run_all()
    host.connection_gone(bound)  # type: ignore[arg-type]
    rig.pool.run_all()
    assert [b[0][:2] for b in rig.written()[1:]] == [
        ("ACME1", LOGGED_ON), ("ACME1", DISCONNECTED), ("BETA1", LOGGED_ON),
        ("BETA1", DISCONNECTED)]


# -- against the real Postgres ------------------------------------------------------------------


def fetch(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def test_session_upsert_inserts_missing_rows_and_keeps_stored_times(migrated_dsn: str) -> None:
    """A session missing from the table is inserted; a row without logon/logout times keeps
    the stored ones; seqs and state always take the newest row's values."""
    writer = BatchWriter(migrated_dsn, "pipeline")
    try:
        acme = make_session("ACME1")
        settings = acme.settings
        from fixserver.pg.rows import session_row

        writer.write([session_row(settings, 5, 7, T0, LOGGED_ON, T0 + S, T0 + S)])
        writer.write([session_row(settings, 9, 8, T0, DISCONNECTED, None, T0 + 3 * S,
                                  T0 + 2 * S)])
        writer.write([session_row(settings, 11, 12, T0, DISCONNECTED, None, T0 + 4 * S)])
        assert fetch(migrated_dsn, "SELECT session_id, firm_id, state, next_sender_seq, "
                                   "next_target_seq, last_logon, last_logout "
                                   "FROM fix_sessions") == [
            ("FIX.4.4:EXCH->ACME1", "ACME", DISCONNECTED, 11, 12, ns_to_datetime(T0 + S),
             ns_to_datetime(T0 + 2 * S))]
    finally:
        writer.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@defer.inlineCallbacks
def _until(condition: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> Any:
    """Wait on the real reactor (the writer's thread reports through it) for ``condition``."""
    waited = 0.0
    while not condition():
        if waited > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        yield task.deferLater(reactor, 0.01, lambda: None)
        waited += 0.01


@pytest_twisted.inlineCallbacks
def test_real_postgres_unreachable_then_back(migrated_dsn: str) -> Any:
    """With Postgres unreachable the writer retries on its own thread; once it is back the
    rows land with the newest values."""
    clock = task.Clock()
    acme = make_session("ACME1")
    writer = SessionStateWriter(
        f"postgresql://postgres@127.0.0.1:{_free_port()}/x", [acme], reactor, time_ns, clock,
        backoff_initial=0.5)
    writer.start()
    try:
        yield _until(lambda: writer.consecutive_failures == 1, "the first failed write")
        acme.store.set_next_sender_seq(4)
        writer.session_logged_on(acme, T0 + S)
        assert fetch(migrated_dsn, "SELECT count(*) FROM fix_sessions") == [(0,)]
        writer._writer.dsn = migrated_dsn  # type: ignore[attr-defined]  # Postgres is back
        clock.advance(0.5)
        yield _until(lambda: writer.pending == 0, "the rows after recovery")
        assert fetch(migrated_dsn, "SELECT state, next_sender_seq, last_logon "
                                   "FROM fix_sessions") == [
            (LOGGED_ON, 4, ns_to_datetime(T0 + S))]
    finally:
        yield writer.stop()


def time_ns() -> int:
    import time

    return time.time_ns()
