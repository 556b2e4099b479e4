"""Keeps the ``fix_sessions`` rows current: state, last logon and logout, sequence numbers.

Theory of operation
-------------------
Twisted glue around :class:`~fixserver.pg.session_state.SessionStateTracker` (the sans-IO
part, which coalesces to at most one pending row per session). The session host tells the
writer of every logon and logout (:class:`~fixserver.protocol.SessionObserver`); every
``interval`` seconds a tick reads each session's store (in memory, cheap) and writes the
sessions whose numbers moved. A logon or logout is written at once, or right after the write
in flight. Nothing here touches the per-message path: sequence numbers are sampled, not
pushed.

Writes run in a dedicated one-thread pool (``deferToThreadPool``) through
:class:`~fixserver.pg.batch.BatchWriter` (pipeline mode, its ``fix_sessions`` upsert, which
inserts a session missing from the table), one transaction per batch and one batch in flight.
The reactor thread never waits for Postgres.

Postgres down or failing: the batch's sessions go back to the tracker, the next attempt
follows after a backoff doubling from ``backoff_initial`` to ``backoff_max`` seconds, with a
new connection. Meanwhile changes keep coalescing, so the backlog is bounded by the number of
sessions (``pg_session_writer_pending``). Failures are counted
(``pg_session_writer_failures_total``) and logged (``pg.sessions_write_failed``, then
``pg.sessions_recovered``); the FIX server goes on regardless.

:meth:`SessionStateWriter.stop` (after the sessions were logged out at shutdown) writes what is
pending, waiting at most ``stop_timeout`` seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Protocol

from prometheus_client import Counter, Gauge
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from fixserver.pg.batch import BatchWriter
from fixserver.pg.rows import Row, SessionRow
from fixserver.pg.session_state import SessionStateTracker, StoreNumbers
from fixserver.pg.writer import observe_query

if TYPE_CHECKING:
    from fixserver.session import Session

log = Logger(namespace="fixserver.pg")

PENDING = Gauge("pg_session_writer_pending",
                "FIX sessions whose fix_sessions row has changes not yet committed")
FAILURES = Counter("pg_session_writer_failures_total",
                   "Failed fix_sessions writes (each retried after a backoff)")
ROWS_WRITTEN = Counter("pg_session_writer_rows_total", "fix_sessions rows committed")


class RowWriter(Protocol):
    """The blocking part (run in the writer's thread): fixserver.pg.batch.BatchWriter."""

    def write(self, rows: Sequence[Row], next_seq: int | None = None) -> float: ...

    def close(self) -> None: ...


def store_numbers(session: Session) -> StoreNumbers:
    """What the session's message store says now."""
    store = session.store
    return StoreNumbers(store.next_sender_seq(), store.next_target_seq(),
                        store.creation_time_ns())


class SessionStateWriter:
    """Writes the sessions' ``fix_sessions`` rows off the reactor thread (module docstring).

    ``reactor`` runs the Deferreds; ``clock`` (default: the reactor) times ticks and backoff;
    ``threadpool`` (default: its own one-thread pool) runs ``row_writer`` (default: a
    BatchWriter on ``dsn``).
    """

    def __init__(
        self,
        dsn: str,
        sessions: Sequence[Session],
        reactor: Any,
        now_ns: Callable[[], int],
        clock: Any = None,
        *,
        threadpool: ThreadPool | None = None,
        row_writer: RowWriter | None = None,
        interval: float = 1.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        stop_timeout: float = 3.0,
        connect_timeout: int = 3,
    ) -> None:
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._now_ns = now_ns
        self._sessions = list(sessions)
        self._own_pool = threadpool is None
        self._pool = threadpool if threadpool is not None else ThreadPool(1, 1, "pg-sessions")
        self._writer: RowWriter = row_writer if row_writer is not None else BatchWriter(
            dsn, "pipeline", connect_timeout, observe_query)
        self.tracker = SessionStateTracker()
        self.interval = interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stop_timeout = stop_timeout
        self._loop: task.LoopingCall | None = None
        self._inflight: list[SessionRow] | None = None
        self._retry: Any = None  # IDelayedCall while a retry is scheduled
        self._waiters: list[defer.Deferred[None]] = []
        self._started = False
        self._stopped = False
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.committed = 0  # rows committed since start

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Track every configured session and write them all; then tick every ``interval``."""
        if self._own_pool and not self._pool.started:
            self._pool.start()
        for session in self._sessions:
            self.tracker.track(session.settings, store_numbers(session))
        self._started = True
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = self._clock
        self._loop.start(self.interval, now=True)

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Write what is pending (at most ``stop_timeout`` seconds), then stop the thread."""
        if self._stopped:
            return
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._started:
            self._poll()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
            self._retry = None
        flushed = self.flush()
        timeout = self._clock.callLater(self.stop_timeout, flushed.cancel)
        try:
            yield flushed
        except defer.CancelledError:
            log.warn("pg.sessions_flush_timeout pending={pending} error={error!r}",
                     pending=self.pending, error=self.last_error)
        finally:
            if timeout.active():
                timeout.cancel()
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._own_pool and self._pool.started:
            self._pool.callInThread(self._writer.close)
            self._pool.stop()  # joins the thread after the jobs queued before it
        else:
            self._writer.close()

    # -- SessionObserver (reactor thread) -----------------------------------------------------

    def session_logged_on(self, session: Session, now_ns: int) -> None:
        self.tracker.logged_on(session.settings, store_numbers(session), now_ns)
        self._write_now()

    def session_logged_out(self, session: Session, now_ns: int) -> None:
        self.tracker.logged_out(session.settings, store_numbers(session), now_ns)
        self._write_now()

    # -- ticks and writes ---------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Sessions with changes not committed yet (waiting or in flight)."""
        return self.tracker.pending + (len(self._inflight) if self._inflight else 0)

    def flush(self) -> defer.Deferred[None]:
        """A Deferred firing once nothing is pending; writes what is due now rather than at
        the next tick (tests; stop)."""
        if not self.pending:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred(lambda d: self._waiters.remove(d))
        self._waiters.append(d)
        self._write_now()
        return d

    def tick(self) -> None:
        """Sample the stores; write the sessions that changed (unless backing off)."""
        self._poll()
        self._write_now()

    def _poll(self) -> None:
        observe = self.tracker.observe
        for session in self._sessions:
            observe(session.settings.session_id, store_numbers(session))
        PENDING.set(self.pending)

    def _write_now(self) -> None:
        if self._inflight is not None or self._retry is not None or self._stopped:
            return
        if not self.tracker.pending:
            return
        rows = self.tracker.take(self._now_ns())
        self._inflight = rows
        PENDING.set(self.pending)
        d = threads.deferToThreadPool(self._reactor, self._pool, self._writer.write, rows)
        d.addCallbacks(self._written, self._failed)

    def _written(self, seconds: float) -> None:
        rows = self._inflight or []
        self._inflight = None
        self.committed += len(rows)
        ROWS_WRITTEN.inc(len(rows))
        if self.consecutive_failures:
            log.info("pg.sessions_recovered failures={failures} pending={pending}",
                     failures=self.consecutive_failures, pending=self.pending)
            self.consecutive_failures = 0
            self.last_error = None
        if self.tracker.urgent or self._waiters:  # a logon or logout, or a flush, waits
            self._write_now()
        PENDING.set(self.pending)
        self._fire_waiters()

    def _failed(self, failure: Failure) -> None:
        rows = self._inflight or []
        self._inflight = None
        self.tracker.retry(rows)
        self.consecutive_failures += 1
        FAILURES.inc()
        PENDING.set(self.pending)
        delay = min(self.backoff_initial * 2 ** (self.consecutive_failures - 1), self.backoff_max)
        self.last_error = f"{type(failure.value).__name__}: {failure.value}".strip()
        log.warn("pg.sessions_write_failed error={error!r} attempt={attempt} "
                 "retry_in={retry_in} pending={pending}", error=self.last_error,
                 attempt=self.consecutive_failures, retry_in=round(delay, 3),
                 pending=self.pending)
        if not self._stopped:
            self._retry = self._clock.callLater(delay, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        self._write_now()

    def _fire_waiters(self) -> None:
        if self.pending:
            return
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)
