"""The deferred-based, batched Postgres writer: matching never waits for the database.

Theory of operation
-------------------
The reactor thread calls :meth:`PgWriter.enqueue` with each released tick's rows: the list is
appended to a queue as one chunk (O(1), no I/O, never blocks). Whenever no write is in flight,
the writer takes the queued chunks (up to ``max_batch_rows``) as one batch and hands it to a
dedicated one-thread ThreadPool (``deferToThreadPool``), where :class:`BatchWriter` writes it
in one transaction. Rows queued meanwhile form the next batch, so batches grow with the load
(group commit) and there is only ever one connection and one transaction in flight, which
keeps the rows committed in order.

When a write fails (Postgres down, restarting, a network error) the batch stays at the head
of the queue and is sent again after a backoff that doubles from ``backoff_initial`` up to
``backoff_max`` seconds; the connection is made anew each time. Rows are never dropped: the
queue is unbounded and its size is the backlog (:attr:`PgWriter.backlog`, the
``pg_writer_lag_rows`` gauge). Writes are idempotent (see fixserver.pg.batch), so sending a
batch that in fact committed before the connection died does no harm. A batch Postgres
refuses for good (a constraint it breaks) is retried like any other rather than dropped: it
shows as a growing backlog, ``pg_writer_failures_total`` and the logged error. Failures and the
recovery are logged as structured lines (``pg.write_failed``, ``pg.recovered``).

High-water mark: :meth:`PgWriter.enqueue` takes the ``next_seq`` of the tick the rows came
from (the seq after its last command; chunks arrive in seq order, and a tick without rows is
still enqueued as an empty chunk so the mark moves while nothing trades). A batch carries the
``next_seq`` of its last chunk, and :class:`BatchWriter` upserts it into
``pg_writer_progress`` in the batch's transaction. When the batch commits,
:attr:`PgWriter.committed_next_seq` moves to it: every tick below it has all its rows in
Postgres, exactly as durably as the stored mark says. Journal pruning keeps the segments from
that seq on, and start-up regenerates rows from there (fixserver.pg.catchup). Chunks enqueued
without a seq (tests, tools) leave the mark alone.

:meth:`PgWriter.flush` returns a Deferred that fires once every row enqueued before the call
(and every seq enqueued before it) is committed (tests and a clean shutdown wait on it).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from fixserver.pg.batch import BatchWriter
from fixserver.pg.rows import Row

log = Logger(namespace="fixserver.pg")

LAG_ROWS = Gauge("pg_writer_lag_rows", "Rows enqueued for Postgres and not yet committed")
BATCH_SECONDS = Histogram(
    "pg_writer_batch_seconds",
    "Time to write and commit one batch of rows to Postgres",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
FAILURES = Counter("pg_writer_failures_total", "Failed Postgres batch writes (each retried)")
ROWS_WRITTEN = Counter("pg_writer_rows_total", "Rows committed to Postgres by the writer")
# The performance guide's database latency histogram (milliseconds, its buckets).
QUERY_LATENCY_MS = Histogram(
    "database_query_latency_ms",
    "Database query latency in milliseconds",
    ["operation", "table"],
    buckets=(0.5, 1, 2, 5, 10, 25, 50, 100, 250),
)


def observe_query(operation: str, table: str, seconds: float) -> None:
    """Record one statement's latency in database_query_latency_ms."""
    QUERY_LATENCY_MS.labels(operation, table).observe(seconds * 1000.0)


class PgWriter:
    """Batches rows to Postgres off the reactor thread; see the module docstring.

    ``reactor`` runs the Deferreds (callFromThread); ``clock`` (default: the reactor) times the
    backoff; ``threadpool`` (default: a dedicated one-thread pool, started by :meth:`start`)
    runs the blocking writes.
    """

    def __init__(
        self,
        dsn: str,
        reactor: Any,
        clock: Any = None,
        *,
        threadpool: ThreadPool | None = None,
        strategy: str = "copy",
        max_batch_rows: int = 5000,
        backoff_initial: float = 0.05,
        backoff_max: float = 5.0,
        connect_timeout: int = 3,
        committed_next_seq: int | None = None,
    ) -> None:
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._own_pool = threadpool is None
        self._pool = threadpool if threadpool is not None else ThreadPool(1, 1, "pg-writer")
        self._batch_writer = BatchWriter(dsn, strategy, connect_timeout, observe_query)
        self.max_batch_rows = max_batch_rows
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        # (rows, next_seq or None) in seq order
        self._chunks: collections.deque[tuple[Sequence[Row], int | None]] = collections.deque()
        # the batch (rows, its next_seq) being written or awaiting retry
        self._inflight: tuple[list[Row], int | None] | None = None
        self._busy = False
        self._retry: Any = None  # an IDelayedCall while a retry is scheduled
        self._enqueued = 0  # rows ever enqueued
        self._committed = 0  # rows ever committed
        self._waiters: list[tuple[int, int | None, defer.Deferred[None]]] = []
        self._enqueued_next_seq: int | None = committed_next_seq
        #: every tick with seqs below this has its rows committed (None: not known yet)
        self.committed_next_seq: int | None = committed_next_seq
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self._stopped = False

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (a no-op for a pool the caller owns and started)."""
        if self._own_pool and not self._pool.started:
            self._pool.start()

    def stop(self) -> None:
        """Stop writing: cancel a pending retry, close the connection, stop our thread.

        Rows still queued are not written (call :meth:`flush` first for a clean shutdown).
        """
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._own_pool and self._pool.started:
            self._pool.callInThread(self._batch_writer.close)
            self._pool.stop()  # joins the thread after the jobs queued before it
        else:
            self._batch_writer.close()

    # -- reactor-thread API -------------------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Rows enqueued and not yet committed."""
        return self._enqueued - self._committed

    @property
    def committed(self) -> int:
        """Rows committed since the writer was made."""
        return self._committed

    def enqueue(self, rows: Sequence[Row], next_seq: int | None = None) -> None:
        """Queue rows (in event order) for writing, with the ``next_seq`` of the tick they came
        from (see the module docstring). O(1); never blocks, never raises on I/O."""
        if not rows and next_seq is None:
            return
        if next_seq is not None:
            self._enqueued_next_seq = next_seq
        self._chunks.append((rows, next_seq))
        self._enqueued += len(rows)
        LAG_ROWS.set(self._enqueued - self._committed)
        if not self._busy and self._retry is None and not self._stopped:
            self._write_next()

    def flush(self) -> defer.Deferred[None]:
        """A Deferred firing once every row enqueued so far is committed."""
        target, target_seq = self._enqueued, self._enqueued_next_seq
        if self._reached(target, target_seq):
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiters.append((target, target_seq, d))
        return d

    def _reached(self, target: int, target_seq: int | None) -> bool:
        if self._committed < target:
            return False
        return target_seq is None or (self.committed_next_seq is not None
                                      and self.committed_next_seq >= target_seq)

    # -- batching -----------------------------------------------------------------------------

    def _take_batch(self) -> tuple[list[Row], int | None]:
        batch: list[Row] = []
        next_seq = None
        chunks = self._chunks
        while chunks and (not batch or len(batch) + len(chunks[0][0]) <= self.max_batch_rows):
            rows, seq = chunks.popleft()
            batch.extend(rows)
            if seq is not None:
                next_seq = seq
        return batch, next_seq

    def _write_next(self) -> None:
        if self._inflight is None:
            if not self._chunks:
                return
            self._inflight = self._take_batch()
        batch, next_seq = self._inflight
        self._busy = True
        d = threads.deferToThreadPool(self._reactor, self._pool, self._batch_writer.write,
                                      batch, next_seq)
        d.addCallbacks(self._written, self._failed, callbackArgs=(len(batch), next_seq))

    def _written(self, seconds: float, count: int, next_seq: int | None) -> None:
        self._busy = False
        self._inflight = None
        self._committed += count
        if next_seq is not None and (self.committed_next_seq is None
                                     or next_seq > self.committed_next_seq):
            self.committed_next_seq = next_seq
        BATCH_SECONDS.observe(seconds)
        ROWS_WRITTEN.inc(count)
        LAG_ROWS.set(self._enqueued - self._committed)
        if self.consecutive_failures:
            log.info(
                "pg.recovered failures={failures} backlog={backlog}",
                failures=self.consecutive_failures, backlog=self.backlog,
            )
            self.consecutive_failures = 0
            self.last_error = None
        if self._waiters:
            self._fire_waiters()
        if not self._stopped:
            self._write_next()

    def _failed(self, failure: Failure) -> None:
        self._busy = False
        self.consecutive_failures += 1
        FAILURES.inc()
        delay = min(self.backoff_initial * 2 ** (self.consecutive_failures - 1), self.backoff_max)
        self.last_error = f"{type(failure.value).__name__}: {failure.value}".strip()
        log.warn(
            "pg.write_failed error={error!r} attempt={attempt} retry_in={retry_in} "
            "backlog={backlog}",
            error=self.last_error, attempt=self.consecutive_failures,
            retry_in=round(delay, 3), backlog=self.backlog,
        )
        if not self._stopped:
            self._retry = self._clock.callLater(delay, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        if not self._stopped and not self._busy:
            self._write_next()

    def _fire_waiters(self) -> None:
        ready = [d for target, seq, d in self._waiters if self._reached(target, seq)]
        self._waiters = [w for w in self._waiters if not self._reached(w[0], w[1])]
        for d in ready:
            d.callback(None)
