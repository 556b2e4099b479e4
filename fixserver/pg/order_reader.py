"""Reads ended orders from Postgres for status requests (H) the ledger can no longer answer.

Theory of operation
-------------------
:class:`PgStatusReader` implements :class:`fixserver.orderentry.stored.StatusStore`. Each
lookup runs :meth:`OrderFetcher.fetch` (blocking psycopg, one connection kept and made anew
after any error) in the reader's own one-thread pool (``deferToThreadPool``), so the reactor
never waits for the database. A lookup is bounded in time: after ``timeout`` seconds it is
cancelled and answered with an error ("unavailable"); a job still queued then is skipped
when its turn comes, and the connection carries a ``statement_timeout`` so a slow query frees
the thread too. At most ``max_outstanding`` lookups wait at once; more are answered
"unavailable" at once rather than queued behind a stuck database.

Outcomes are counted (``order_status_store_reads_total{result}``: found, not_found,
unavailable) and timed (``order_status_store_read_seconds``). Failures are logged when the
reader turns unhealthy (``orderentry.status_store_unavailable``, with the error), then every
``log_every`` seconds while it stays so, and the recovery once
(``orderentry.status_store_recovered``).

The query (``orders`` with migration 007: ``session_id`` and the ClOrdID indexes): by the
session's ClOrdID (the order's current one or the one before its last replace), newest
order first; else by OrderID; only rows updated at or after the retention window's start.
"""

from __future__ import annotations

from typing import Any, Callable

import psycopg
from prometheus_client import Counter, Histogram
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from fixserver.orderentry.stored import LookupDone, StatusQuery, StoredOrder
from fixserver.pg.rows import ns_to_datetime

log = Logger(namespace="fixserver.orderentry")

READS = Counter("order_status_store_reads_total",
                "Status requests (H) for orders no longer in memory, read from Postgres",
                ["result"])
READ_SECONDS = Histogram(
    "order_status_store_read_seconds",
    "Time from a status request's Postgres read to its answer (timeouts included)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

_COLUMNS = ("order_id, session_id, cl_ord_id, orig_cl_ord_id, account, symbol, side, "
            "ord_type, time_in_force, price, stop_price, quantity, filled_qty, leaves_qty, "
            "avg_price, status")
BY_CL_ORD_ID = (f"SELECT {_COLUMNS} FROM orders WHERE session_id = %s "
                "AND (cl_ord_id = %s OR orig_cl_ord_id = %s) AND updated_at >= %s "
                "ORDER BY order_id DESC LIMIT 1")
BY_ORDER_ID = f"SELECT {_COLUMNS} FROM orders WHERE order_id = %s AND updated_at >= %s"


class OrderFetcher:
    """The blocking part (run in the reader's thread): one connection, made on first use and
    dropped on any error."""

    def __init__(self, dsn: str, connect_timeout: int = 2,
                 statement_timeout_ms: int = 2000) -> None:
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.statement_timeout_ms = statement_timeout_ms
        self.conn: psycopg.Connection[Any] | None = None

    def fetch(self, query: StatusQuery) -> StoredOrder | None:
        try:
            if self.conn is None:
                conn = psycopg.connect(self.dsn, connect_timeout=self.connect_timeout,
                                       autocommit=True)
                conn.execute(f"SET statement_timeout = {int(self.statement_timeout_ms)}")
                self.conn = conn
            since = ns_to_datetime(query.since_ns)
            row = None
            if query.cl_ord_id:
                row = self.conn.execute(BY_CL_ORD_ID, (query.session_id, query.cl_ord_id,
                                                       query.cl_ord_id, since)).fetchone()
            if row is None and query.order_id is not None:
                row = self.conn.execute(BY_ORDER_ID, (query.order_id, since)).fetchone()
        except BaseException:
            self.close()
            raise
        return None if row is None else StoredOrder(*row)

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken: nothing left to release
                pass


class PgStatusReader:
    """Status lookups in Postgres off the reactor thread (see the module docstring).

    ``reactor`` runs the Deferreds; ``clock`` (default: the reactor) times the timeout;
    ``run`` (default: ``fetcher.fetch`` in the reader's own one-thread pool) returns a
    Deferred of one lookup's row; tests pass one that never fires.
    """

    def __init__(
        self,
        dsn: str,
        reactor: Any,
        clock: Any = None,
        *,
        timeout: float = 2.0,
        max_outstanding: int = 64,
        log_every: float = 60.0,
        fetcher: OrderFetcher | None = None,
        run: Callable[[StatusQuery], defer.Deferred[StoredOrder | None]] | None = None,
    ) -> None:
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self.timeout = timeout
        self.max_outstanding = max_outstanding
        self.log_every = log_every
        self._fetcher = fetcher if fetcher is not None else OrderFetcher(
            dsn, statement_timeout_ms=max(1, int(timeout * 1000)))
        self._pool: ThreadPool | None = None
        self._run = run if run is not None else self._in_thread
        self.outstanding = 0
        self.failures = 0  # consecutive
        self.last_error: str | None = None
        self._logged_at: float | None = None  # clock time of the last failure logged
        self._stopped = False

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._run == self._in_thread and self._pool is None:
            self._pool = ThreadPool(1, 1, "pg-status-reader")
            self._pool.start()

    def stop(self) -> None:
        """Answer nothing more from Postgres; close the connection and stop the thread (the
        job running, if any, is waited for: its statement is bounded by statement_timeout;
        jobs still queued are skipped)."""
        self._stopped = True
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.callInThread(self._fetcher.close)
            pool.stop()

    # -- StatusStore ----------------------------------------------------------------------------

    def lookup(self, query: StatusQuery, done: LookupDone) -> None:
        if self._stopped or self.outstanding >= self.max_outstanding:
            READS.labels("unavailable").inc()
            done(None, "stopped" if self._stopped else "too many status reads waiting")
            return
        self.outstanding += 1
        started = self._clock.seconds()
        d = self._run(query)
        timer = self._clock.callLater(self.timeout, d.cancel)

        def finished(result: StoredOrder | Failure | None) -> None:
            self.outstanding -= 1
            if timer.active():
                timer.cancel()
            READ_SECONDS.observe(max(0.0, self._clock.seconds() - started))
            if isinstance(result, Failure):
                self._failed(result)
                done(None, self.last_error)
                return
            self._succeeded()
            READS.labels("found" if result is not None else "not_found").inc()
            done(result, None)

        d.addBoth(finished)
        d.addErrback(lambda f: log.failure("orderentry.status_store_answer_failed", f))

    # -- internals ------------------------------------------------------------------------------

    def _in_thread(self, query: StatusQuery) -> defer.Deferred[StoredOrder | None]:
        if self._pool is None:
            return defer.fail(RuntimeError("the status reader is not started"))
        cancelled = False

        def job() -> StoredOrder | None:
            if cancelled or self._stopped:  # timed out while queued, or shutting down
                raise defer.CancelledError()
            return self._fetcher.fetch(query)

        def cancel(_: Any) -> None:
            nonlocal cancelled
            cancelled = True

        d: defer.Deferred[StoredOrder | None] = defer.Deferred(cancel)
        pool = self._pool
        pool.callInThreadWithCallback(
            lambda ok, result: self._reactor.callFromThread(_fire, d, ok, result), job)
        return d

    def _failed(self, failure: Failure) -> None:
        READS.labels("unavailable").inc()
        self.failures += 1
        if failure.check(defer.CancelledError):
            self.last_error = f"no answer within {self.timeout:g} s"
        else:
            self.last_error = f"{type(failure.value).__name__}: {failure.value}".strip()
        now = self._clock.seconds()
        if self._logged_at is None or now - self._logged_at >= self.log_every:
            self._logged_at = now
            log.warn("orderentry.status_store_unavailable error={error!r} failures={failures} "
                     "outstanding={outstanding}", error=self.last_error, failures=self.failures,
                     outstanding=self.outstanding)

    def _succeeded(self) -> None:
        if self.failures:
            log.info("orderentry.status_store_recovered failures={failures}",
                     failures=self.failures)
        self.failures = 0
        self.last_error = None
        self._logged_at = None


def _fire(d: defer.Deferred[Any], ok: bool, result: Any) -> None:
    """Deliver a thread's result on the reactor thread (ignored if the lookup was cancelled)."""
    if d.called:
        return
    if ok:
        d.callback(result)
    else:
        d.errback(result)
