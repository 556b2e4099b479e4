"""Journal group-commit throughput against fsync-per-command, in the same run.

Three measurements, each on a fresh journal directory on the same disk, with real fdatasync:

- **fsync per command** (the baseline): every command is its own journal record, written and
  fdatasynced before the next one, as a server that acknowledges each order durably one by one.
- **group commit, journal only**: the producer encodes ticks of ``--tick-size`` commands as
  fast as it can while one committer thread writes + fdatasyncs everything that piled up
  during the previous fsync (what ``JournalWriter.commit`` does on the journal thread).
- **pipeline end to end**: the real ``OrderPipeline`` on the Twisted reactor with the real
  engine, a one-thread journal pool and release after fsync: requests are submitted
  ``--tick-size`` per reactor turn; the rate counts commands released to a subscriber
  (stamped, matched, journaled and durable).

Prints the median commands/s over ``--reps`` repetitions and the ratio to the baseline.
Usage: python bench/bench_journal.py [--reps N] [--quick] [--dir PATH]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from engine import MatchingEngine, demo_instruments
from engine.commands import CancelOrder, NewOrder
from engine.enums import Side
from engine.journal import encode_record
from engine.sequencer import Sequencer
from fixserver.journal_file import JournalDirectory

T0 = 1_700_000_000_000_000_000


def requests(n: int, seed: int = 7) -> list[tuple[Any, Any]]:
    """Order-entry traffic: limit orders around the BTC reference price (some cross), cancels."""
    rng = random.Random(seed)
    out: list[tuple[Any, Any]] = []
    for i in range(n):
        account = f"ACC{rng.randrange(50)}"
        origin = (f"FIX.4.4:EXCH->{account}", i)
        if rng.random() < 0.2 and i > 10:
            out.append((origin, CancelOrder(0, 0, account, rng.randrange(1, i), f"x{i}")))
        else:
            side = Side.BUY if rng.random() < 0.5 else Side.SELL
            price = 600_000 + rng.randint(-200, 200)
            out.append((origin, NewOrder(0, 0, account, "BTC-PERP", side, rng.randint(1, 20),
                                         price, cl_ord_id=f"ord-{i:08d}")))
    return out


def fsync_per_command(path: str, reqs: list[tuple[Any, Any]]) -> float:
    """Commands/s when each command is its own record, fdatasynced before the next."""
    directory = JournalDirectory(path)
    writer = directory.open_writer(1)
    seq = Sequencer(idle_tick_ns=1 << 62)
    t0 = time.perf_counter()
    for i, (origin, req) in enumerate(reqs):
        seq.submit(origin, req)
        batch = seq.next_batch(T0 + i)
        assert batch is not None
        writer.commit([encode_record(batch)])
    elapsed = time.perf_counter() - t0
    writer.close()
    return len(reqs) / elapsed


def group_commit_journal(path: str, reqs: list[tuple[Any, Any]], tick_size: int) -> float:
    """Commands/s encoded and made durable with one committer thread doing group commits."""
    directory = JournalDirectory(path)
    writer = directory.open_writer(1)
    seq = Sequencer(idle_tick_ns=1 << 62)
    pending: list[bytes] = []
    lock = threading.Lock()
    wake = threading.Condition(lock)
    done = threading.Event()
    producing = [True]

    def committer() -> None:
        while True:
            with wake:
                while not pending and producing[0]:
                    wake.wait()
                items = pending[:]
                pending.clear()
                last = not producing[0]
            if items:
                writer.commit(items)
            if last and not items:
                done.set()
                return

    thread = threading.Thread(target=committer, name="committer")
    t0 = time.perf_counter()
    thread.start()
    for start in range(0, len(reqs), tick_size):
        for origin, req in reqs[start:start + tick_size]:
            seq.submit(origin, req)
        batch = seq.next_batch(T0 + start)
        assert batch is not None
        record = encode_record(batch)
        with wake:
            pending.append(record)
            wake.notify()
    with wake:
        producing[0] = False
        wake.notify()
    done.wait()
    elapsed = time.perf_counter() - t0
    thread.join()
    writer.close()
    return len(reqs) / elapsed


def pipeline_end_to_end(path: str, reqs: list[tuple[Any, Any]], tick_size: int) -> float:
    """Commands/s through the real OrderPipeline (reactor, engine, thread pool, fsync)."""
    from twisted.internet import reactor as _reactor

    from fixserver.pipeline import open_pipeline

    reactor: Any = _reactor  # typed Any: mypy cannot see the reactor's interfaces
    pipeline = open_pipeline(path, reactor, lambda: MatchingEngine(demo_instruments()),
                             MatchingEngine.restore, eager=True, tick_interval=0.001)
    released = [0]
    result: dict[str, float] = {}
    total = len(reqs)

    def on_tick(processed: list) -> None:
        released[0] += len(processed)

    pipeline.subscribe(on_tick)
    t0 = [0.0]

    def feed(start: int) -> None:
        for origin, req in reqs[start:start + tick_size]:
            pipeline.submit(origin, req)
        if start + tick_size < total:
            reactor.callLater(0, feed, start + tick_size)
        else:
            pipeline.when_idle().addCallback(finish)

    def finish(_: Any) -> None:
        result["elapsed"] = time.perf_counter() - t0[0]
        result["released"] = released[0]
        pipeline.shutdown().addBoth(lambda _: reactor.callLater(0, reactor.stop))

    def begin() -> None:
        pipeline.start()
        t0[0] = time.perf_counter()
        feed(0)

    reactor.callWhenRunning(begin)
    reactor.run()
    commands = result["released"] - pipeline.ticks  # not counting the sequencer's own Ticks
    return commands / result["elapsed"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer commands per repetition")
    parser.add_argument("--tick-size", type=int, default=200,
                        help="commands arriving per tick / reactor turn")
    parser.add_argument("--dir", default=None, help="directory on the disk to measure")
    args = parser.parse_args()
    n_base = 500 if args.quick else 3_000
    n_group = 20_000 if args.quick else 200_000
    base_dir = tempfile.mkdtemp(prefix="bench-journal-", dir=args.dir)
    reqs = requests(n_group)
    base: list[float] = []
    group: list[float] = []
    try:
        for rep in range(args.reps):
            for name, out, fn in (
                ("base", base, lambda p: fsync_per_command(p, reqs[:n_base])),
                ("group", group, lambda p: group_commit_journal(p, reqs, args.tick_size)),
            ):
                path = os.path.join(base_dir, f"{name}-{rep}")
                out.append(fn(path))
                shutil.rmtree(path)
        # The reactor runs once per process, so the end-to-end pipeline runs once, larger.
        e2e_path = os.path.join(base_dir, "pipeline")
        e2e = pipeline_end_to_end(e2e_path, requests(n_group * max(1, args.reps // 2), 9),
                                  args.tick_size)
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)
    b = statistics.median(base)
    g = statistics.median(group)
    print(f"python {sys.version.split()[0]}, tick size {args.tick_size}, reps {args.reps}")
    print(f"fsync per command (baseline)   {b:>12,.0f} commands/s")
    print(f"group commit, journal only     {g:>12,.0f} commands/s   {g / b:8.1f}x baseline")
    print(f"pipeline end to end (1 run)    {e2e:>12,.0f} commands/s   {e2e / b:8.1f}x baseline")


if __name__ == "__main__":
    main()
