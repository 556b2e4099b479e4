"""The order pipeline: inbox -> tick (stamp, match, journal) -> release once durable.

Theory of operation
-------------------
Sessions call :meth:`OrderPipeline.submit` with an origin and a request (see
:mod:`engine.sequencer`); the request's journal entry is packed right there, so one the
journal cannot hold is refused with TypeError before it gets a seq. A *tick* takes the
whole inbox as one batch, stamps it, runs every command through the engine on the reactor
thread (matching never waits for the disk), and appends the tick's journal record to the
pending commit list. The tick's :class:`~engine.recovery.ProcessedCommand` list is *held*.

Group commit: at most one commit runs at a time, on the journal's own one-thread pool. It
writes every pending record and fdatasyncs once. While it runs, later ticks keep matching and
their records pile up for the next commit. When a commit completes, the ticks it covered are
released to the subscribers, in tick order, and the next commit starts at once if records are
pending. So nothing leaves the process before its inputs are durable, and one fsync covers
as many ticks as arrived during the previous one.

Ticks run from a LoopingCall every ``tick_interval`` seconds (this also emits the
sequencer's idle time ticks that expire GTD/DAY orders), and, with ``eager`` (default), as
soon as the reactor is free after a submit (``callLater(0)``), so that everything read from
the sockets in one reactor turn is one batch and an order waits for no timer. While a commit
runs, neither ticks: nothing matched then could leave before that commit ends and the next
one starts, so the requests that arrive meanwhile wait in the inbox and are matched as one
tick when the commit ends, just before the next commit starts (one tick per commit instead
of one per reactor turn: at a few thousand orders/s that was nearly one tick per order). The
next commit starts before the ticks just made durable are released, so the disk works while
the reactor builds and sends their reports.

Snapshots: after a tick, once ``snapshot_every_commands`` commands or ``snapshot_every_s``
seconds have passed since the last one (or :meth:`OrderPipeline.request_snapshot` asked for
one), the engine's snapshot, state hash and the sequencer's position are taken at that tick
boundary (on the reactor thread: this costs time proportional to the book), a segment
rotation is queued right after the tick's record, and the snapshot file is written on its
own thread once that tick is durable (a snapshot never gets ahead of the journal).
``snapshot_extra()`` (the subscribers' own state, e.g. the FIX layer's order ownership) is
called right after that tick is released, when the subscribers have seen exactly the ticks
the snapshot holds. Pruning after a snapshot write keeps the
journal from ``retain_from_seq()`` on (called on the reactor thread when the write starts; the
Postgres writer's durable high-water mark, so rows a Postgres outage kept back can still be
regenerated after a crash); ``journal_segments_retained_for_postgres`` counts the segments
kept only for it. The journal records carry the state hash every
``hash_every_ticks`` ticks (0: never) so that recovery proves the replay.

A failed commit (disk full, I/O error) stops the pipeline: the engine has matched ticks that
cannot be made durable, so nothing more is released or accepted and ``on_failure`` is called;
the process must restart and recover from the journal, which is the truth.

Metrics (prometheus default registry): ``order_queue_depth`` (inbox, read at scrape time),
``matching_engine_latency_ms`` (engine time of one tick's batch), ``orders_processed_total``
(client commands matched), ``trades_executed_total``, ``journal_commit_failures_total`` and
``journal_failed`` (1 once a commit failed and the pipeline stopped).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Callable

import attr
import msgpack
from prometheus_client import Counter, Gauge, Histogram
from twisted.internet import task
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from engine.commands import Tick
from engine.events import Trade
from engine.journal import TICK_ENTRY, encode_entry, encode_packed_record
from engine.recovery import EXTRA_PACKED, ProcessedCommand, SnapshotState
from engine.sequencer import Sequencer, SequencingPolicy
from fixserver.journal_file import CommitItem, JournalDirectory, JournalWriter, Rotate
from fixserver.snapshot_fork import (
    ForkedDump,
    can_fork,
    fork_dump,
    fork_packed,
    remove_stale_dumps,
)

log = Logger()

ORDER_QUEUE_DEPTH = Gauge("order_queue_depth", "Requests waiting in the sequencer inbox")
MATCHING_LATENCY_MS = Histogram(
    "matching_engine_latency_ms",
    "Engine time to match one tick's batch, in milliseconds",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 100.0),
)
ORDERS_PROCESSED = Counter("orders_processed", "Client commands matched by the engine")
TRADES_EXECUTED = Counter("trades_executed", "Trades executed by the engine")
SNAPSHOT_STALL_MS = Histogram(
    "snapshot_stall_ms",
    "Reactor time to serialise the engine for a snapshot (matching waits), in milliseconds",
    buckets=(1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0),
)
SNAPSHOT_EXTRA_MS = Histogram(
    "snapshot_extra_ms",
    "Reactor time to gather the subscribers' (FIX layer's) state for a snapshot when its "
    "tick is released, in milliseconds",
    buckets=(1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0),
)
SEGMENTS_RETAINED = Gauge(
    "journal_segments_retained_for_postgres",
    "Journal segments that pruning keeps only because Postgres has not committed their rows",
)
JOURNAL_COMMIT_FAILURES = Counter(
    "journal_commit_failures", "Journal group commits (write + fdatasync) that failed")
JOURNAL_FAILED = Gauge(
    "journal_failed",
    "1 once a journal commit failed: the order pipeline stopped and the process exits to recover",
)

Subscriber = Callable[[list], None]


class PipelineStopped(Exception):
    """The pipeline is stopped (or failed) and takes no more requests."""


class ThreadPoolRunner:
    """Runs blocking calls on a dedicated thread pool of its own (one thread: calls in order)."""

    def __init__(self, reactor: Any, name: str, threads: int = 1) -> None:
        self.reactor = reactor
        self.pool = ThreadPool(minthreads=threads, maxthreads=threads, name=name)
        self.pool.start()
        self._stopped = False
        # A process that exits without shutdown() must not hang on the pool's thread.
        reactor.addSystemEventTrigger("after", "shutdown", self.stop)

    def run(self, f: Callable[..., Any], *args: Any) -> Deferred:
        """``f(*args)`` on the pool; a Deferred of its result fired on the reactor thread."""
        return deferToThreadPool(self.reactor, self.pool, f, *args)

    def stop(self) -> None:
        """Join the pool's thread (after the work it was given); idempotent."""
        if not self._stopped:
            self._stopped = True
            self.pool.stop()


class OrderPipeline:
    """Sequencer + engine + journal + snapshots, releasing events once durable."""

    def __init__(
        self,
        engine: Any,
        sequencer: Sequencer,
        writer: JournalWriter,
        directory: JournalDirectory,
        *,
        clock: Any,  # IReactorTime (task.Clock in tests)
        journal_runner: Any,
        snapshot_runner: Any,
        now_ns: Callable[[], int] = time.time_ns,
        tick_interval: float = 0.001,
        eager: bool = True,
        hash_every_ticks: int = 0,
        snapshot_every_commands: int = 1_000_000,
        snapshot_every_s: float = 600.0,
        keep_snapshots: int = 2,
        snapshot_on_shutdown: bool = True,
        snapshot_extra: Callable[[], Any] | None = None,
        snapshot_in_child: bool = False,
        snapshot_extra_flush: Callable[[], None] | None = None,
        retain_from_seq: Callable[[], int | None] | None = None,
        on_failure: Callable[[Failure], None] | None = None,
    ) -> None:
        self.engine = engine
        self.sequencer = sequencer
        self.writer = writer
        self.directory = directory
        self.clock = clock
        self.journal_runner = journal_runner
        self.snapshot_runner = snapshot_runner
        self.now_ns = now_ns
        self.tick_interval = tick_interval
        self.eager = eager
        self.hash_every_ticks = hash_every_ticks
        self.snapshot_every_commands = snapshot_every_commands
        self.snapshot_every_s = snapshot_every_s
        self.keep_snapshots = keep_snapshots
        self.snapshot_on_shutdown = snapshot_on_shutdown
        self.snapshot_extra = snapshot_extra
        #: serialise the engine in a forked child (fixserver.snapshot_fork), not in-line
        self.snapshot_in_child = snapshot_in_child and can_fork()
        #: runs on the reactor just before ``snapshot_extra`` is gathered (in either mode)
        self.snapshot_extra_flush = snapshot_extra_flush
        self.retain_from_seq = retain_from_seq
        self.on_failure = on_failure
        self.failure: Failure | None = None
        self.ticks = 0  # ticks that produced a batch
        self.durable_ticks = 0  # of those, how many are durable (and released)
        self.snapshots_written = 0
        self._subscribers: list[Subscriber] = []
        self._pending: list[CommitItem] = []
        self._held: deque[list] = deque()  # processed lists of ticks not yet durable
        self._unflushed_ticks = 0  # held ticks whose records no commit has taken yet
        self._committing = False
        self._loop: task.LoopingCall | None = None
        self._eager_call: Any = None  # IDelayedCall
        self._stopping = False
        self._idle_waiters: list[Deferred] = []
        self._since_snapshot = 0
        self._last_snapshot_at = clock.seconds()
        self._snapshot_due: deque[tuple[int, SnapshotState]] = deque()  # (tick number, state)
        self._snapshot_busy = False
        self._snapshot_waiters: list[Deferred] = []
        self._snapshot_requested = False  # request_snapshot(): at the next tick with a batch
        #: set by open_pipeline: the recovered snapshot's extra, and how many commands replayed
        self.recovered_extra: Any = None
        self.recovered_commands = 0
        #: set by open_pipeline: the seq replay started at (the snapshot's next seq, or 1)
        self.recovered_from_seq = 1
        ORDER_QUEUE_DEPTH.set_function(lambda: self.sequencer.pending)
        JOURNAL_FAILED.set(0)

    # -- public API -----------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback(list of ProcessedCommand)`` for every durable tick, in tick order."""
        self._subscribers.append(callback)

    def submit(self, origin: Any, request: Any) -> None:
        """Queue a request (seq=0, ts=0) from ``origin`` for the next tick."""
        if self._stopping or self.failure is not None:
            raise PipelineStopped("the order pipeline is not accepting requests")
        # Packed now, so a request the journal cannot hold is refused (TypeError) before it
        # gets a seq, and the tick only concatenates bytes.
        packed = encode_entry(origin, request)
        self.sequencer.submit((origin, packed), request)
        if self.eager and self._eager_call is None and not self._committing:
            self._eager_call = self.clock.callLater(0, self._eager_tick)

    def start(self) -> None:
        """Start the tick loop."""
        self._loop = task.LoopingCall(self._timer_tick)
        self._loop.clock = self.clock
        self._loop.start(self.tick_interval, now=False).addErrback(self._fail)

    def stop(self) -> Deferred:
        """Stop taking requests, match what is queued, and fire once all of it is released."""
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._eager_call is not None and self._eager_call.active():
            self._eager_call.cancel()
            self._eager_call = None
        if self.failure is None:
            self.tick()
        return self.when_idle()

    def shutdown(self) -> Deferred:
        """:meth:`stop`, then (``snapshot_on_shutdown``, if anything was matched since the
        last snapshot) a snapshot so the next start replays nothing, then close the journal
        and join the I/O threads."""
        d = self.stop()

        def final_snapshot(_: Any) -> Deferred:
            if (self.snapshot_on_shutdown and self.failure is None and self._since_snapshot
                    and not self._snapshot_due):
                self.take_snapshot()
                if self.snapshot_extra is not None:  # every tick is released: in step
                    tick, state = self._snapshot_due[-1]
                    self._snapshot_due[-1] = (tick, attr.evolve(state,
                                                                extra=self._gather_extra()))
                self._maybe_commit()  # the segment rotation; the write follows its commit
            return self._wait_snapshots(None)

        def close(_: Any) -> Deferred:
            return self.journal_runner.run(self.writer.close)

        def join(_: Any) -> None:
            for runner in (self.journal_runner, self.snapshot_runner):
                stop = getattr(runner, "stop", None)
                if stop is not None:
                    stop()

        d.addCallback(final_snapshot)
        d.addCallback(close)
        d.addCallback(self._wait_snapshots)
        d.addCallback(join)
        return d

    @property
    def snapshot_in_progress(self) -> bool:
        """A snapshot is requested, taken and not yet written, or being written."""
        return self._snapshot_requested or self._snapshot_busy or bool(self._snapshot_due)

    def request_snapshot(self) -> None:
        """Take a snapshot at the end of the next tick that matches something, as the
        periodic ones are taken (admin "snapshot now": submit a request, then tick)."""
        self._snapshot_requested = True

    def when_snapshots_written(self) -> Deferred:
        """A Deferred fired once no snapshot is in progress (written, or its write failed:
        compare :attr:`snapshots_written` before and after)."""
        return self._wait_snapshots(None)

    def _wait_snapshots(self, _: Any) -> Deferred:
        if not self._snapshot_busy and not self._snapshot_due:
            return succeed(None)
        d: Deferred = Deferred()
        self._snapshot_waiters.append(d)
        return d

    def when_idle(self) -> Deferred:
        """A Deferred fired when every tick matched so far is durable and released."""
        if self.failure is not None:
            return succeed(None)
        if not self._held and not self._pending and not self._committing:
            return succeed(None)
        d: Deferred = Deferred()
        self._idle_waiters.append(d)
        return d

    # -- the tick -------------------------------------------------------------------------

    def _eager_tick(self) -> None:
        self._eager_call = None
        if not self._committing:  # else the commit's end ticks (see the module docstring)
            self.tick()

    def _timer_tick(self) -> None:
        if not self._committing:
            self.tick()

    def tick(self) -> None:
        """Match the inbox as one batch, queue its journal record, start a commit if idle."""
        if self.failure is not None:
            return
        batch = self.sequencer.next_batch(self.now_ns())
        if batch is not None:
            engine = self.engine
            process = engine.process
            processed = []
            packed = []
            t0 = time.perf_counter()
            for tagged, command in batch.entries:
                if tagged is None:  # the sequencer's own Tick
                    origin = None
                    packed.append(TICK_ENTRY)
                else:
                    origin, entry = tagged
                    packed.append(entry)
                processed.append(ProcessedCommand(origin, command, process(command)))
            MATCHING_LATENCY_MS.observe((time.perf_counter() - t0) * 1000.0)
            self.ticks += 1
            state_hash = None
            if self.hash_every_ticks and self.ticks % self.hash_every_ticks == 0:
                state_hash = engine.state_hash()
            self._pending.append(
                encode_packed_record(batch.first_seq, batch.ts, packed, state_hash)
            )
            self._held.append(processed)
            self._unflushed_ticks += 1
            commands = len(processed)
            trades = 0
            for p in processed:
                for e in p.events:
                    if type(e) is Trade:
                        trades += 1
            if processed and type(processed[0].command) is Tick:
                commands -= 1
            if commands:
                ORDERS_PROCESSED.inc(commands)
            if trades:
                TRADES_EXECUTED.inc(trades)
            self._since_snapshot += len(processed)
            self._maybe_snapshot()
        self._maybe_commit()

    # -- group commit ---------------------------------------------------------------------

    def _maybe_commit(self) -> None:
        if self._committing or not self._pending or self.failure is not None:
            return
        items, self._pending = self._pending, []
        covered, self._unflushed_ticks = self._unflushed_ticks, 0
        self._committing = True
        d = self.journal_runner.run(self.writer.commit, items)
        d.addCallbacks(self._committed, self._commit_failed, callbackArgs=(covered,))

    def _committed(self, _written: int, covered: int) -> None:
        self._committing = False
        if self.sequencer.pending and not self._stopping:
            self.tick()  # requests that arrived during the fsync: match them now
        self._maybe_commit()  # the next commit runs while the covered ticks are released
        for _ in range(covered):
            processed = self._held.popleft()
            self.durable_ticks += 1
            for callback in self._subscribers:
                try:
                    callback(processed)
                except Exception:
                    log.failure("order pipeline subscriber {callback!r} failed",
                                callback=callback)
            due = self._snapshot_due
            if due and due[0][0] == self.durable_ticks and self.snapshot_extra is not None:
                # Subscribers have now seen exactly the ticks the snapshot holds: their state
                # (snapshot_extra) matches the engine's, and replay resumes right after both.
                t0 = time.perf_counter()
                due[0] = (due[0][0], attr.evolve(due[0][1], extra=self._gather_extra()))
                extra_ms = (time.perf_counter() - t0) * 1000.0
                SNAPSHOT_EXTRA_MS.observe(extra_ms)
                log.info("snapshot.extra next_seq={seq} ms={ms:.1f}",
                         seq=due[0][1].next_seq, ms=extra_ms)
        self._start_due_snapshot()
        if self.sequencer.pending and not self._stopping and not self._committing:
            # requests the release itself submitted (those that waited in a session's lane
            # for it): matched and committed now, not a reactor turn later
            self.tick()
        if not self._held and not self._committing and not self._pending:
            waiters, self._idle_waiters = self._idle_waiters, []
            for d in waiters:
                d.callback(None)

    def _commit_failed(self, failure: Failure) -> None:
        JOURNAL_COMMIT_FAILURES.inc()
        JOURNAL_FAILED.set(1)
        self._fail(failure)

    def _fail(self, failure: Failure) -> None:
        self._committing = False
        if self.failure is None:
            self.failure = failure
            log.failure("order pipeline stopped: journal commit failed", failure)
            if self._loop is not None and self._loop.running:
                self._loop.stop()
            if self.on_failure is not None:
                self.on_failure(failure)
        waiters, self._idle_waiters = self._idle_waiters, []
        for d in waiters:
            d.callback(None)

    # -- snapshots ------------------------------------------------------------------------

    def _maybe_snapshot(self) -> None:
        if self._snapshot_busy or self._snapshot_due:
            return
        elapsed = self.clock.seconds() - self._last_snapshot_at
        if (not self._snapshot_requested
                and self._since_snapshot < self.snapshot_every_commands
                and elapsed < self.snapshot_every_s):
            return
        self.take_snapshot()

    def take_snapshot(self) -> None:
        """Snapshot the engine at this tick boundary; written once this tick is durable.

        Only the engine's serialisation runs here, on the reactor thread (the state must not
        change under it; the stall is measured in ``snapshot_stall_ms``); its hash (the
        state hash is the SHA-256 of these bytes) and the file are done on the snapshot
        thread."""
        t0 = time.perf_counter()
        next_seq, last_ts, last_tick_ts = self.sequencer.position()
        engine: Any
        if self.snapshot_in_child:
            engine = fork_dump(self.engine, self.directory.path)  # fixserver.snapshot_fork
            size = 0
        else:
            engine = self.engine.snapshot()
            size = len(engine)
        state = SnapshotState(next_seq, last_ts, last_tick_ts, None, engine)
        stall_ms = (time.perf_counter() - t0) * 1000.0
        SNAPSHOT_STALL_MS.observe(stall_ms)
        log.info("snapshot.taken next_seq={seq} bytes={size} stall_ms={stall:.1f}",
                 seq=next_seq, size=size, stall=stall_ms)
        self._pending.append(Rotate(next_seq))
        self._snapshot_due.append((self.ticks, state))
        self._since_snapshot = 0
        self._snapshot_requested = False
        self._last_snapshot_at = self.clock.seconds()

    def _start_due_snapshot(self) -> None:
        if self._snapshot_busy:
            return
        if not self._snapshot_due:
            waiters, self._snapshot_waiters = self._snapshot_waiters, []
            for d in waiters:
                d.callback(None)
            return
        tick_number, state = self._snapshot_due[0]
        if tick_number > self.durable_ticks:
            return
        self._snapshot_due.popleft()
        self._snapshot_busy = True
        retain = self.retain_from_seq() if self.retain_from_seq is not None else None
        d = self.snapshot_runner.run(self._write_snapshot, state, self.keep_snapshots, retain)
        d.addCallbacks(self._snapshot_written, self._snapshot_failed)

    def _gather_extra(self) -> Any:
        """The subscribers' snapshot state, now that they have seen exactly the snapshot's
        ticks: ``snapshot_extra_flush`` runs here (e.g. the FIX layer's reports into the
        kernel), then ``snapshot_extra`` runs here or, in child mode, in a forked child that
        packs it (the reactor pays for the fork only)."""
        assert self.snapshot_extra is not None
        if self.snapshot_extra_flush is not None:
            self.snapshot_extra_flush()
        if self.snapshot_in_child:
            return fork_packed(self.snapshot_extra, self.directory.path)
        return self.snapshot_extra()

    def _write_snapshot(self, state: SnapshotState, keep: int, retain: int | None) -> str:
        """On the snapshot thread: the engine's bytes and the subscribers' state (waiting
        for the forked children, if they serialise them), then the file."""
        if isinstance(state.engine, ForkedDump):
            state = attr.evolve(state, engine=state.engine.result())
        if isinstance(state.extra, ForkedDump):
            state = attr.evolve(state, extra=msgpack.ExtType(EXTRA_PACKED, state.extra.result()))
        return self.directory.write_snapshot(state, keep, retain)

    def _snapshot_written(self, path: str) -> None:
        self._snapshot_busy = False
        self.snapshots_written += 1
        log.info("snapshot written: {path}", path=path)
        held = self.directory.held_for_retain
        SEGMENTS_RETAINED.set(held)
        if held:
            log.warn("journal.retained_for_postgres segments={n}: Postgres has not committed "
                     "their rows yet, pruning waits", n=held)
        self._start_due_snapshot()

    def _snapshot_failed(self, failure: Failure) -> None:
        # The journal still holds everything: a missed snapshot only lengthens the next replay.
        self._snapshot_busy = False
        log.failure("snapshot write failed; the journal still covers the state", failure)
        self._start_due_snapshot()


def open_pipeline(
    path: str,
    reactor: Any,
    new_engine: Callable[[], Any],
    restore: Callable[[bytes], Any],
    *,
    on_replayed: Callable[[ProcessedCommand], None] | None = None,
    policy: SequencingPolicy = SequencingPolicy.PROTECTIVE_FIRST,
    idle_tick_ns: int = 1_000_000_000,
    lane_of: Callable[[Any], Any] | None = None,
    fsync: bool = True,
    **options: Any,
) -> OrderPipeline:
    """Start-up: recover from ``path`` (latest snapshot + journal tail) and build the pipeline.

    Every replayed command goes to ``on_replayed`` (the FIX layer rebuilds order ownership and
    ExecutionReport data from them; the snapshot's ``extra`` is ``pipeline.recovered_extra``,
    the seq the replay started at ``pipeline.recovered_from_seq``). ``lane_of(origin)`` gives
    the sequencer's lane of a request (see :mod:`engine.sequencer`); the pipeline hands it the
    request's origin.
    Blocking: call it before the reactor runs, then ``pipeline.start()``. ``options`` go to
    :class:`OrderPipeline`.
    """
    directory = JournalDirectory(path, fsync=fsync)
    remove_stale_dumps(path)  # a child's dump left by a process killed while it ran
    recovery = directory.recover(new_engine, restore)
    recovered_from_seq = recovery.next_seq
    for processed in recovery.replay(directory.read_records(recovery.next_seq)):
        if on_replayed is not None:
            on_replayed(processed)
    writer = directory.open_writer(recovery.next_seq)
    pipeline = OrderPipeline(
        recovery.engine,
        recovery.sequencer(
            policy, idle_tick_ns=idle_tick_ns,
            # the pipeline submits (origin, packed entry) to the sequencer
            lane_of=None if lane_of is None else (lambda tagged: lane_of(tagged[0])),
        ),
        writer,
        directory,
        clock=reactor,
        journal_runner=ThreadPoolRunner(reactor, "journal"),
        snapshot_runner=ThreadPoolRunner(reactor, "snapshot"),
        **options,
    )
    pipeline.recovered_extra = recovery.extra
    pipeline.recovered_from_seq = recovered_from_seq
    pipeline.recovered_commands = recovery.replayed_commands
    return pipeline
