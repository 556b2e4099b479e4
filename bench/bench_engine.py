"""Matching-engine benchmark: throughput, latency, memory per resting order, GC tail latency.

Usage::

    .venv/bin/python bench/bench_engine.py            # 1M-command mix, 3 repetitions, 1M resting
    .venv/bin/python bench/bench_engine.py --quick    # seconds: 100k commands, 100k resting

Workload (fixed seed): a book pre-filled near the touch, then a realistic mix of 40% new
passive limit orders within 10 ticks of the touch, 35% cancels of live orders, 15% replaces
(half quantity changes, half price moves) and 10% marketable orders (half IOC limits two
ticks through the touch, half market orders), 1,000 accounts, 1-10 lots. The commands are
generated once (by running an engine, so cancels and replaces name live orders) and then
timed on fresh engines: events are built and returned exactly as in production.

Prints, for the fast and the reference book: commands/s (median of the repetitions) and
their ratio; per-command latency p50/p99/p99.9/max; bytes per resting order with N resting
orders (tracemalloc); and latency percentiles while N orders rest, with CPython's default GC
settings and with the server's (engine.gc_tuning).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from engine import (
    CancelOrder,
    FastBook,
    MatchingEngine,
    NewOrder,
    OrdType,
    ReferenceBook,
    ReplaceOrder,
    Side,
    TimeInForce,
    demo_instruments,
    gc_tuning,
)

SYMBOL = "BTC-PERP"
REF = 600_000
BUY, SELL = Side.BUY, Side.SELL
SEED = 20_240_601
TARGET_RATE = 1_000_000
TARGET_BYTES = 250
RESTING_IDS = 10**12


def make_workload(n: int, prefill: int, seed: int = SEED) -> tuple[list, list]:
    """Build ``prefill`` resting orders then ``n`` mixed commands (see module docstring)."""
    rng = random.Random(seed)
    eng = MatchingEngine(demo_instruments())
    book = eng.book(SYMBOL)
    cmds: list[Any] = []
    live: list[int] = []
    seq = 0
    ts = 1_700_000_000_000_000_000

    def run(cmd: Any) -> None:
        cmds.append(cmd)
        eng.process(cmd)

    def pick_live() -> int:
        while live:
            i = rng.randrange(len(live))
            oid = live[i]
            if oid in eng.orders:
                return oid
            live[i] = live[-1]
            live.pop()
        return 0

    for _ in range(prefill):
        seq += 1
        ts += 1_000
        side = BUY if seq % 2 else SELL
        off = 1 + rng.randrange(50)
        price = REF - off if side is BUY else REF + off
        run(NewOrder(seq, ts, f"acct{rng.randrange(1000)}", SYMBOL, side, 1 + rng.randrange(10),
                     price, cl_ord_id=f"C{seq:09d}"))
        live.append(seq)
    start = len(cmds)
    while len(cmds) - start < n:
        seq += 1
        ts += 1_000
        acct = f"acct{rng.randrange(1000)}"
        r = rng.random()
        bb = book.best_bid or REF - 1
        ba = book.best_ask if book.best_ask < (1 << 62) else REF + 1
        if r < 0.40:
            side = BUY if rng.random() < 0.5 else SELL
            if side is BUY:
                price = min(bb - rng.randrange(10), ba - 1)
            else:
                price = max(ba + rng.randrange(10), bb + 1)
            run(NewOrder(seq, ts, acct, SYMBOL, side, 1 + rng.randrange(10), price,
                         cl_ord_id=f"C{seq:09d}"))
            live.append(seq)
        elif r < 0.75:
            oid = pick_live()
            if oid:
                run(CancelOrder(seq, ts, eng.orders[oid].account, oid, f"X{seq:09d}"))
        elif r < 0.90:
            oid = pick_live()
            if oid:
                o = eng.orders[oid]
                if rng.random() < 0.5:
                    qty, price = max(1, o.qty + rng.choice((-2, -1, 1, 2))), o.price
                else:
                    qty, price = o.qty, o.price + rng.choice((-2, -1, 1, 2))
                    if o.side is BUY:
                        price = min(price, ba - 1)
                    else:
                        price = max(price, bb + 1)
                run(ReplaceOrder(seq, ts, o.account, oid, qty, price, f"R{seq:09d}"))
        else:
            side = BUY if rng.random() < 0.5 else SELL
            qty = 1 + rng.randrange(5)
            if rng.random() < 0.5:
                price = ba + 2 if side is BUY else bb - 2
                run(NewOrder(seq, ts, acct, SYMBOL, side, qty, price, tif=TimeInForce.IOC,
                             cl_ord_id=f"C{seq:09d}"))
            else:
                run(NewOrder(seq, ts, acct, SYMBOL, side, qty, 0, ord_type=OrdType.MARKET,
                             tif=TimeInForce.IOC, cl_ord_id=f"C{seq:09d}"))
    return cmds[:prefill], cmds[prefill:]


def fresh_engine(book_factory: Any, prefill: list) -> MatchingEngine:
    eng = MatchingEngine(demo_instruments(), book_factory=book_factory)
    for c in prefill:
        eng.process(c)
    return eng


def throughput(eng: MatchingEngine, cmds: list) -> tuple[float, float]:
    """Commands/s by wall clock and by process CPU time (events built and then dropped).

    On a shared machine the wall-clock rate includes time the process was not running; the
    CPU-time rate does not (it still pays for caches shared with other processes).
    """
    process = eng.process
    n_events = 0
    c0 = time.process_time()
    t0 = time.perf_counter()
    for c in cmds:
        n_events += len(process(c))
    dt = time.perf_counter() - t0
    dc = time.process_time() - c0
    return len(cmds) / dt, len(cmds) / dc


def latencies(eng: MatchingEngine, cmds: list) -> list[int]:
    """Per-command latency in ns (perf_counter_ns around each process call)."""
    process = eng.process
    clock = time.perf_counter_ns
    out = [0] * len(cmds)
    i = 0
    for c in cmds:
        t0 = clock()
        process(c)
        out[i] = clock() - t0
        i += 1
    return out


def pct(sorted_ns: list[int], p: float) -> float:
    """Percentile (nearest rank) in microseconds."""
    k = min(len(sorted_ns) - 1, max(0, round(p / 100 * len(sorted_ns)) - 1))
    return sorted_ns[k] / 1000


def fmt_lat(ns: list[int]) -> str:
    s = sorted(ns)
    return (f"p50 {pct(s, 50):6.2f} us  p99 {pct(s, 99):7.2f} us  p99.9 {pct(s, 99.9):8.2f} us"
            f"  max {s[-1] / 1000:9.1f} us")


def clock_overhead() -> float:
    clock = time.perf_counter_ns
    t = [0] * 10000
    for i in range(10000):
        a = clock()
        t[i] = clock() - a
    return statistics.median(t) / 1000


def resting_orders(n: int, seed: int = SEED + 1) -> list:
    """``n`` non-crossing limit orders spread over the band (about 10 per price level)."""
    rng = random.Random(seed)
    out = []
    for seq in range(1, n + 1):
        side = BUY if seq % 2 else SELL
        off = 1 + rng.randrange(max(1, min(29_000, n // 20)))
        price = REF - off if side is BUY else REF + off
        oid = RESTING_IDS + seq  # above every id of the mixed workload
        out.append(NewOrder(oid, seq, f"acct{rng.randrange(1000)}", SYMBOL, side,
                            1 + rng.randrange(10), price, cl_ord_id=f"C{seq:09d}"))
    return out


def bytes_per_order(n: int, cl_ord_id: bool) -> float:
    """tracemalloc growth per resting order while n orders are added (commands not kept)."""
    rng = random.Random(SEED + 2)
    import tracemalloc  # CPython only

    gc.collect()
    eng = MatchingEngine(demo_instruments())
    eng.process(NewOrder(10**9, 0, "warm", SYMBOL, BUY, 1, REF - 1))
    accounts = [f"acct{i}" for i in range(1000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for seq in range(1, n + 1):
        side = BUY if seq % 2 else SELL
        off = 1 + rng.randrange(max(1, min(29_000, n // 20)))
        price = REF - off if side is BUY else REF + off
        eng.process(NewOrder(seq, seq, accounts[seq % 1000], SYMBOL, side, 1 + seq % 10, price,
                             cl_ord_id=f"C{seq:09d}" if cl_ord_id else ""))
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(eng.orders) == n + 1
    return (after - before) / n


class GcPauses:
    """Records every cyclic-GC pause (gc.callbacks) by generation while active."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[int]] = {0: [], 1: [], 2: []}
        self._t0 = 0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter_ns()
        else:
            self.pauses[info["generation"]].append(time.perf_counter_ns() - self._t0)

    def summary(self) -> str:
        parts = []
        for gen, p in self.pauses.items():
            if p:
                parts.append(f"gen{gen}: {len(p)} x, max {max(p) / 1000:,.0f} us")
            else:
                parts.append(f"gen{gen}: 0 x")
        return "; ".join(parts)


def resting_latency(
    n_rest: int, prefill: list, cmds: list, server_gc: bool
) -> tuple[list[int], str, float]:
    """Mix latency while n_rest orders rest, under default or server GC settings.

    Returns the latencies, the GC pauses seen during the run and the duration (ms) of one
    full collection forced afterwards (what a generation-2 collection costs in that state).
    """
    gc_tuning.restore_defaults()
    gc.collect()
    eng = MatchingEngine(demo_instruments())
    for c in resting_orders(n_rest):
        eng.process(c)
    for c in prefill:
        eng.process(c)
    if server_gc:
        gc_tuning.apply_server_settings(freeze=True)
    pauses = GcPauses()
    cpython = hasattr(gc, "callbacks")
    if cpython:
        gc.callbacks.append(pauses)
    try:
        lat = latencies(eng, cmds)
    finally:
        if cpython:
            gc.callbacks.remove(pauses)
    t0 = time.perf_counter()
    gc.collect()
    full_ms = (time.perf_counter() - t0) * 1000
    gc_tuning.restore_defaults()
    return lat, pauses.summary() if cpython else "n/a", full_ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    ap.add_argument("--commands", type=int, default=None)
    ap.add_argument("--resting", type=int, default=None)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--skip-memory", action="store_true")
    args = ap.parse_args()
    n = args.commands or (100_000 if args.quick else 1_000_000)
    n_rest = args.resting or (100_000 if args.quick else 1_000_000)
    reps = args.reps or (1 if args.quick else 3)
    n_ref = max(10_000, n // 10)
    print(f"python {sys.version.split()[0]} ({sys.implementation.name}); "
          f"{n:,} commands, {reps} repetitions; reference book on the first {n_ref:,}")
    t0 = time.perf_counter()
    prefill, cmds = make_workload(n, prefill=2_000)
    kinds: dict[str, int] = {}
    for c in cmds:
        k = type(c).__name__
        if isinstance(c, NewOrder):
            k += " (marketable)" if c.tif is TimeInForce.IOC else " (limit)"
        kinds[k] = kinds.get(k, 0) + 1
    print(f"workload built in {time.perf_counter() - t0:.1f} s: "
          + ", ".join(f"{k} {v / len(cmds):.0%}" for k, v in sorted(kinds.items())))

    rates: dict[str, list[float]] = {"fast": [], "reference": []}
    cpu_rates: dict[str, list[float]] = {"fast": [], "reference": []}
    lats: dict[str, list[int]] = {}
    for _ in range(reps):
        for name, factory, part in (("fast", FastBook, cmds), ("reference", ReferenceBook,
                                                                cmds[:n_ref])):
            eng = fresh_engine(factory, prefill)
            rate, cpu_rate = throughput(eng, part)
            rates[name].append(rate)
            cpu_rates[name].append(cpu_rate)
    for name, factory, part in (("fast", FastBook, cmds), ("reference", ReferenceBook,
                                                            cmds[:n_ref])):
        eng = fresh_engine(factory, prefill)
        lats[name] = latencies(eng, part)
    fast = statistics.median(rates["fast"])
    ref = statistics.median(rates["reference"])
    print("\nthroughput (median, events built):")
    print(f"  fast book       {fast:12,.0f} commands/s   runs: "
          + ", ".join(f"{r:,.0f}" for r in rates["fast"]))
    print(f"  reference book  {ref:12,.0f} commands/s   runs: "
          + ", ".join(f"{r:,.0f}" for r in rates["reference"]))
    print(f"  ratio fast/reference {fast / ref:.2f}x;  target {TARGET_RATE:,}/s: "
          + ("MET" if fast >= TARGET_RATE else f"NOT MET ({fast / TARGET_RATE:.0%} of it)"))
    cfast = statistics.median(cpu_rates["fast"])
    cref = statistics.median(cpu_rates["reference"])
    print(f"  by process CPU time: fast {cfast:,.0f}/s, reference {cref:,.0f}/s "
          f"(ratio {cfast / cref:.2f}x)")
    print(f"\nper-command latency (clock overhead ~{clock_overhead():.2f} us included):")
    for name in ("fast", "reference"):
        print(f"  {name:<10} {fmt_lat(lats[name])}")

    if sys.implementation.name != "cpython":
        args.skip_memory = True  # tracemalloc is CPython's
    if not args.skip_memory:
        print(f"\nmemory with {n_rest:,} resting orders (tracemalloc, whole engine state):")
        b1 = bytes_per_order(n_rest, cl_ord_id=True)
        b0 = bytes_per_order(n_rest, cl_ord_id=False)
        print(f"  {b1:6.0f} bytes/order with a 10-char cl_ord_id;  {b0:6.0f} without one;  "
              f"target {TARGET_BYTES}: " + ("MET" if b1 <= TARGET_BYTES else "NOT MET"))

    m = min(len(cmds), 200_000 if not args.quick else 50_000)
    print(f"\nlatency of {m:,} mixed commands while {n_rest:,} orders rest:")
    for server_gc in (False, True):
        lat, pauses, full_ms = resting_latency(n_rest, prefill, cmds[:m], server_gc)
        label = "server GC " if server_gc else "default GC"
        print(f"  {label} {fmt_lat(lat)}")
        print(f"             GC pauses during the run: {pauses}")
        print(f"             one full collection afterwards: {full_ms:,.1f} ms")
    if sys.implementation.name == "cpython":
        print(f"  (server GC = engine.gc_tuning: freeze after load, thresholds "
              f"{gc_tuning.SERVER_THRESHOLDS})")
    else:
        print("  (not CPython: no generations to tune or freeze; both lines use the same GC)")
    print("  max latencies of ~10 ms that also appear with the collector disabled are the"
          " scheduler\n  preempting the process on a shared machine, not the engine")


if __name__ == "__main__":
    main()
