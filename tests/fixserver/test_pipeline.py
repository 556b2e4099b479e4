"""The order pipeline releases each tick's events only once its journal commit is durable."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any, Callable

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY
from twisted.internet import task
from twisted.internet.defer import Deferred

from engine import MatchingEngine, demo_instruments
from engine.commands import CancelOrder, NewOrder, Tick
from engine.enums import Side, TimeInForce
from engine.events import OrderAccepted, OrderExpired, Trade
from engine.journal import JournalCorruptError, decode_segment
from engine.recovery import ProcessedCommand
from fixserver.journal_file import JournalDirectory
from fixserver.pipeline import OrderPipeline, PipelineStopped, open_pipeline
from tests.engine.test_recovery import random_requests

BTC = "BTC-PERP"
T0 = 1_700_000_000_000_000_000


class ManualRunner:
    """A fake thread pool: jobs wait until the test completes them, in order, synchronously."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[..., Any], tuple, Deferred]] = []
        self.fail_with: Exception | None = None

    def run(self, f: Callable[..., Any], *args: Any) -> Deferred:
        d: Deferred = Deferred()
        self.jobs.append((f, args, d))
        return d

    def complete(self, n: int = 1) -> None:
        for _ in range(n):
            f, args, d = self.jobs.pop(0)
            if self.fail_with is not None:
                d.errback(self.fail_with)
            else:
                d.callback(f(*args))

    def complete_all(self) -> None:
        while self.jobs:
            self.complete()


class Harness:
    """A pipeline on a task.Clock with manual journal and snapshot runners in a tmp dir."""

    def __init__(self, path: str, **options: Any) -> None:
        self.path = path
        self.clock = task.Clock()
        self.journal = ManualRunner()
        self.snapshots = ManualRunner()
        self.directory = JournalDirectory(path, fsync=False)
        rec = self.directory.recover(lambda: MatchingEngine(demo_instruments()),
                                     MatchingEngine.restore)
        self.replayed = list(rec.replay(self.directory.read_records(rec.next_seq)))
        self.extra = rec.extra
        options.setdefault("eager", False)
        self.pipeline = OrderPipeline(
            rec.engine, rec.sequencer(idle_tick_ns=options.pop("idle_tick_ns", 10**9)),
            self.directory.open_writer(rec.next_seq), self.directory,
            clock=self.clock, journal_runner=self.journal, snapshot_runner=self.snapshots,
            now_ns=lambda: T0 + int(self.clock.seconds() * 1e9), **options,
        )
        self.released: list[list[ProcessedCommand]] = []
        self.pipeline.subscribe(self.released.append)

    def order(self, origin: Any, side: Side, qty: int, price: int, **kw: Any) -> None:
        self.pipeline.submit(origin, NewOrder(0, 0, str(origin), BTC, side, qty, price, **kw))

    def flat(self) -> list[ProcessedCommand]:
        return [p for tick in self.released for p in tick]


@pytest.fixture
def h(tmp_path: Any) -> Harness:
    return Harness(str(tmp_path))


def test_events_are_held_until_the_commit_completes(h: Harness) -> None:
    """A tick's events reach subscribers only after its journal commit finished."""
    h.order("A", Side.SELL, 5, 600_000)
    h.order("B", Side.BUY, 3, 600_000)
    h.pipeline.tick()
    assert h.released == [] and len(h.journal.jobs) == 1
    h.journal.complete()
    assert len(h.released) == 1
    origins = [p.origin for p in h.released[0]]
    assert origins == [None, "A", "B"]
    assert any(type(e) is Trade for p in h.released[0] for e in p.events)


def test_ticks_during_a_commit_share_the_next_commit_in_order(h: Harness) -> None:
    """While one fsync runs, later ticks match and are committed together, released in order."""
    h.order("A", Side.SELL, 1, 600_000)
    h.pipeline.tick()
    for i in range(3):
        h.clock.advance(0.001)
        h.order(f"o{i}", Side.SELL, 1, 600_001 + i)
        h.pipeline.tick()
    assert len(h.journal.jobs) == 1  # one commit in flight, three ticks waiting
    h.journal.complete()
    assert len(h.released) == 1
    assert len(h.journal.jobs) == 1  # the next commit started at once with all three
    assert len([x for x in h.journal.jobs[0][1][0] if isinstance(x, bytes)]) == 3
    h.journal.complete()
    assert [p.command.seq for p in h.flat()] == list(range(1, 9))  # each tick leads with a Tick
    assert h.pipeline.writer.commits == 2


def test_eager_tick_runs_on_the_next_reactor_turn(tmp_path: Any) -> None:
    """With eager ticks a submit is matched at callLater(0), without waiting for the timer."""
    h = Harness(str(tmp_path), eager=True, tick_interval=1.0)
    h.pipeline.start()
    h.order("A", Side.BUY, 1, 599_000)
    h.order("A", Side.BUY, 1, 599_001)
    assert h.journal.jobs == []
    h.clock.advance(0)
    h.journal.complete()
    assert [p.origin for p in h.flat()] == [None, "A", "A"]


def test_no_tick_while_a_commit_runs_then_one_for_all_that_arrived(tmp_path: Any) -> None:
    """Eager and timer ticks wait while a commit runs; its end matches everything that came
    meanwhile as one tick and starts the next commit before releasing the covered tick."""
    h = Harness(str(tmp_path), eager=True, tick_interval=0.001)
    h.pipeline.start()
    h.order("A", Side.SELL, 1, 600_000)
    h.clock.advance(0)
    assert h.pipeline.ticks == 1 and len(h.journal.jobs) == 1
    for i in range(5):  # five reactor turns and timer periods during the fsync
        h.order(f"o{i}", Side.BUY, 1, 599_000 + i)
        h.clock.advance(0.001)
    assert h.pipeline.ticks == 1 and h.pipeline.sequencer.pending == 5
    seen_at_release: list[int] = []
    h.pipeline.subscribe(lambda _p: seen_at_release.append(len(h.journal.jobs)))
    h.journal.complete()
    assert h.pipeline.ticks == 2 and h.pipeline.sequencer.pending == 0
    assert seen_at_release == [1], "the next commit was already running at the release"
    h.journal.complete()
    assert [p.origin for p in h.flat()] == [None, "A", None, "o0", "o1", "o2", "o3", "o4"]


def test_requests_submitted_by_the_release_are_matched_before_idle(h: Harness) -> None:
    """A subscriber that submits while a tick is released (a session's lane letting a
    waiting cancel go) gets it matched and committed at once: when_idle waits for it."""
    submitted: list[int] = []

    def follow_up(processed: list) -> None:
        if not submitted:
            submitted.append(1)
            h.order("B", Side.BUY, 1, 599_000)

    h.pipeline.subscribe(follow_up)
    h.order("A", Side.BUY, 1, 599_000)
    h.pipeline.tick()
    idle = h.pipeline.when_idle()
    fired: list[object] = []
    idle.addCallback(fired.append)
    h.journal.complete()
    assert h.pipeline.sequencer.pending == 0 and len(h.journal.jobs) == 1, "B committed"
    assert not fired, "not idle while B is being committed"
    h.journal.complete()
    assert fired and [p.origin for p in h.flat()] == [None, "A", "B"]


def test_requests_arriving_during_a_commit_are_matched_when_it_completes(h: Harness) -> None:
    """Completing a commit ticks at once if requests queued meanwhile (no timer wait)."""
    h.order("A", Side.BUY, 1, 599_000)
    h.pipeline.tick()
    h.order("B", Side.BUY, 1, 599_000)
    h.journal.complete()
    assert len(h.journal.jobs) == 1 and h.pipeline.sequencer.pending == 0


def test_loop_ticks_expire_gtd_orders_while_idle(tmp_path: Any) -> None:
    """The tick loop emits idle time ticks that expire GTD orders with no other traffic."""
    h = Harness(str(tmp_path), tick_interval=0.001, idle_tick_ns=5_000_000)
    h.pipeline.start()
    h.order("A", Side.BUY, 1, 599_000, tif=TimeInForce.GTD, expire_ts=T0 + 20_000_000)
    for _ in range(40):
        h.clock.advance(0.001)
        h.journal.complete_all()
    expired = [e for p in h.flat() for e in p.events if type(e) is OrderExpired]
    assert len(expired) == 1
    ticks = [p for p in h.flat() if type(p.command) is Tick]
    assert 5 <= len(ticks) <= 9  # one per 5 ms idle, not one per 1 ms loop


def test_stop_drains_the_inbox_and_fires_when_released(h: Harness) -> None:
    """stop() matches what is queued and fires once it is released; later submits raise."""
    h.pipeline.start()
    h.order("A", Side.BUY, 1, 599_000)
    d = h.pipeline.stop()
    fired: list[Any] = []
    d.addCallback(fired.append)
    assert fired == []
    h.journal.complete_all()
    assert fired == [None] and len(h.flat()) == 2
    with pytest.raises(PipelineStopped):
        h.order("A", Side.BUY, 1, 599_000)


def test_commit_failure_stops_the_pipeline_and_releases_nothing(tmp_path: Any) -> None:
    """A failed fsync never releases the tick; the pipeline refuses further requests."""
    failures: list[Any] = []
    h = Harness(str(tmp_path), on_failure=failures.append)
    h.order("A", Side.BUY, 1, 599_000)
    h.pipeline.tick()
    h.journal.fail_with = OSError(5, "I/O error")
    h.journal.complete()
    assert h.released == [] and len(failures) == 1
    assert h.pipeline.failure is not None
    with pytest.raises(PipelineStopped):
        h.order("A", Side.BUY, 1, 599_000)


def test_unjournalable_request_is_refused_before_it_gets_a_seq(h: Harness) -> None:
    """An origin msgpack cannot hold raises TypeError at submit and queues nothing."""
    with pytest.raises(TypeError):
        h.pipeline.submit(object(), CancelOrder(0, 0, "A", 1))
    with pytest.raises(TypeError):
        h.pipeline.submit("s", Tick(0, 0))
    assert h.pipeline.sequencer.pending == 0


def test_metrics_count_orders_trades_and_queue(h: Harness) -> None:
    """orders_processed_total, trades_executed_total, the latency histogram and queue depth."""
    def get(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    before = (get("orders_processed_total"), get("trades_executed_total"),
              get("matching_engine_latency_ms_count"))
    h.order("A", Side.SELL, 2, 600_000)
    h.order("B", Side.BUY, 1, 600_000)
    h.order("C", Side.BUY, 1, 600_000)
    assert get("order_queue_depth") == 3
    h.pipeline.tick()
    assert get("order_queue_depth") == 0
    after = (get("orders_processed_total"), get("trades_executed_total"),
             get("matching_engine_latency_ms_count"))
    assert [a - b for a, b in zip(after, before)] == [3, 2, 1]


def drive(h: Harness, rng: random.Random, ticks: int) -> list[str]:
    """Random traffic for ``ticks`` ticks, completing commits as it goes; hashes per tick."""
    hashes = []
    for _ in range(ticks):
        for origin, req in random_requests(rng, rng.randint(1, 8),
                                           h.pipeline.sequencer.next_seq + 8):
            h.pipeline.submit(origin, req)
        h.clock.advance(0.001)
        h.pipeline.tick()
        hashes.append(h.pipeline.engine.state_hash())
        if rng.random() < 0.7:
            h.journal.complete_all()
            h.snapshots.complete_all()
    h.journal.complete_all()
    h.snapshots.complete_all()
    return hashes


@pytest.mark.parametrize("in_child", [False, True])
def test_snapshots_rotate_prune_and_restart_identically(tmp_path: Any, in_child: bool) -> None:
    """Periodic snapshots rotate segments, prune old ones, and a restart resumes identically
    (the engine serialised in-line, or by a forked child: fixserver.snapshot_fork)."""
    path = str(tmp_path)
    seen = [0]  # a subscriber's own state: commands it has been given

    def count(processed: list) -> None:
        seen[0] += len(processed)

    h = Harness(path, snapshot_every_commands=40, hash_every_ticks=3,
                snapshot_extra=lambda: seen[0], snapshot_in_child=in_child)
    h.pipeline.subscribe(count)
    drive(h, random.Random(11), 60)
    h.pipeline.snapshot_every_commands = 10**9
    drive(h, random.Random(12), 2)  # a tail after the last snapshot
    assert h.pipeline.snapshots_written >= 4
    snaps = h.directory.snapshots()
    assert len(snaps) == 2  # keep_snapshots
    segs = h.directory.segments()
    assert segs[0][0] == snaps[0][0]  # nothing older than the older kept snapshot remains
    final_hash = h.pipeline.engine.state_hash()
    position = h.pipeline.sequencer.position()
    released = h.flat()
    h.pipeline.writer.close()

    again = Harness(path)
    assert again.pipeline.engine.state_hash() == final_hash
    assert again.pipeline.sequencer.position() == position
    assert again.replayed == released[len(released) - len(again.replayed):]
    assert [p.command.seq for p in again.replayed] == list(range(snaps[-1][0], position[0]))
    assert again.replayed
    # the subscriber state stored with the snapshot plus the replayed tail is all it saw
    assert again.extra + len(again.replayed) == seen[0] == len(released)
    again.order("Z", Side.BUY, 1, 590_000)
    again.pipeline.tick()
    again.journal.complete()
    assert again.released[0][0].command.seq == position[0]


def test_open_writer_refuses_to_fork_history(tmp_path: Any) -> None:
    """A writer may only start where the journal ends."""
    h = Harness(str(tmp_path))
    h.order("A", Side.BUY, 1, 599_000)
    h.pipeline.tick()
    h.journal.complete()
    h.pipeline.writer.close()
    with pytest.raises(JournalCorruptError):
        JournalDirectory(str(tmp_path), fsync=False).open_writer(1)


@settings(derandomize=True, max_examples=15, deadline=None)
@given(st.integers(0, 10**9), st.data())
def test_crash_mid_commit_recovers_released_events_and_last_complete_state(
    seed: int, data: st.DataObject
) -> None:
    """A crash tearing a commit at any byte loses no released event; state = last whole tick."""
    import tempfile

    with tempfile.TemporaryDirectory() as path:
        h = Harness(path, hash_every_ticks=1)
        rng = random.Random(seed)
        hashes = drive(h, rng, rng.randint(1, 12))
        released = h.flat()
        # The crash: one more batch of ticks is being committed and only part of it is written.
        more = drive_uncommitted(h, rng, rng.randint(1, 4))
        hashes += more
        _, args, _ = h.journal.jobs.pop(0)
        pending = b"".join(x for x in args[0] if isinstance(x, bytes))
        cut = data.draw(st.integers(0, len(pending)))
        os.write(h.pipeline.writer.fd, pending[:cut])
        os.close(h.pipeline.writer.fd)

        again = Harness(path)
        first = again.directory.segments()[0][1]
        with open(first, "rb") as f:
            assert not decode_segment(f.read())[2]  # the torn tail was truncated on open
        assert again.replayed[: len(released)] == released
        complete = len(hashes) - len(more) + whole_records(args[0], cut)
        assert again.pipeline.engine.state_hash() == hashes[complete - 1]


def drive_uncommitted(h: Harness, rng: random.Random, ticks: int) -> list[str]:
    """Ticks whose commit never completes (the crash comes first)."""
    hashes = []
    for _ in range(ticks):
        for origin, req in random_requests(rng, rng.randint(1, 8),
                                           h.pipeline.sequencer.next_seq + 8):
            h.pipeline.submit(origin, req)
        h.clock.advance(0.001)
        h.pipeline.tick()
        hashes.append(h.pipeline.engine.state_hash())
    return hashes


def whole_records(items: list, cut: int) -> int:
    """How many of the committed records lie wholly within the first ``cut`` bytes."""
    n = 0
    pos = 0
    for x in items:
        if isinstance(x, bytes):
            pos += len(x)
            if pos <= cut:
                n += 1
    return n


@pytest_twisted.inlineCallbacks
def test_real_thread_pool_and_fsync_round_trip(tmp_path: Any) -> Iterator[Any]:
    """With real threads and fsync, events are released, and a reopen rebuilds the state."""
    from twisted.internet import reactor

    path = str(tmp_path / "journal")

    def new_engine() -> MatchingEngine:
        return MatchingEngine(demo_instruments())

    p = open_pipeline(path, reactor, new_engine, MatchingEngine.restore, snapshot_every_commands=30,
                      tick_interval=0.001)
    released: list[ProcessedCommand] = []
    p.subscribe(released.extend)
    p.start()
    for i in range(50):
        p.submit(("s", i), NewOrder(0, 0, "A" if i % 2 else "B", BTC,
                                    Side.BUY if i % 2 else Side.SELL, 1, 600_000 + i % 3))
        if i % 10 == 9:
            yield p.when_idle()
    p.submit(("s", 99), CancelOrder(0, 0, "A", 2))
    yield p.shutdown()
    assert p.snapshots_written >= 1
    accepted = [e for r in released for e in r.events if type(e) is OrderAccepted]
    assert len(accepted) == 50
    final_hash = p.engine.state_hash()
    replayed: list[ProcessedCommand] = []
    q = open_pipeline(path, reactor, new_engine, MatchingEngine.restore,
                      on_replayed=replayed.append)
    try:
        assert q.engine.state_hash() == final_hash
        assert q.sequencer.position() == p.sequencer.position()
        assert replayed == released[len(released) - len(replayed):]
    finally:
        yield q.shutdown()

