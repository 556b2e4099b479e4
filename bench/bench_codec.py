"""FIX codec throughput against simplefix, in the same run.

Parse = what the server does per inbound message: frame it out of a stream buffer fed in 16 KiB
reads (BodyLength and CheckSum verified), split its fields into a FixMessage. A second parse
line also reads four header fields from each message (the tag index is built lazily, so this is
the cost once the session looks at it). simplefix's parser does not verify the CheckSum.

Encode = fields in, complete message bytes out (BodyLength and CheckSum computed). Ours is
measured with bytes values (the fast path) and with str/int values.

Ours is measured twice: with the C accelerator (fixserver._codec_accel, when it is built) and
on the pure-Python code (the fallback, e.g. on PyPy). Prints the median messages per CPU
second over several repetitions and each one's ratio to simplefix; the parse target is judged
on the accelerated numbers where the accelerator is built.
Usage: python bench/bench_codec.py [--reps N] [--quick]
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import time
from importlib.metadata import version
from typing import Any, Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import simplefix

from fixserver import codec
from fixserver.codec import FrameDecoder, encode

PARSE_TARGET_RATE = 400_000
PARSE_TARGET_RATIO = 15.0
READ_SIZE = 16 * 1024
DISTINCT = 256  # distinct messages per stream, so nothing is parsed from one cached object


def new_order_single(seq: int) -> list[tuple[int, str | int]]:
    """A FIX 4.4 NewOrderSingle (35=D) as a client sends it: 20 fields."""
    return [
        (35, "D"),
        (49, "CLIENT1"),
        (56, "EXCH"),
        (34, 1000 + seq),
        (52, f"20240315-09:30:00.{seq % 1000:03d}"),
        (1, "ACC-0001"),
        (11, f"CL-{seq:08d}"),
        (21, "1"),
        (55, "BTC-PERP"),
        (460, "12"),
        (54, "1" if seq % 2 else "2"),
        (60, f"20240315-09:30:00.{seq % 1000:03d}"),
        (38, f"0.{seq % 900 + 100:03d}"),
        (40, "2"),
        (44, f"6{seq % 10000:04d}.5"),
        (59, "1"),
        (18, "6"),
        (15, "USD"),
        (581, "1"),
        (528, "A"),
    ]


def execution_report(seq: int) -> list[tuple[int, str | int]]:
    """A FIX 4.4 ExecutionReport (35=8) for a partial fill: 26 fields."""
    return [
        (35, "8"),
        (49, "EXCH"),
        (56, "CLIENT1"),
        (34, 2000 + seq),
        (52, f"20240315-09:30:00.{seq % 1000:03d}"),
        (1, "ACC-0001"),
        (6, f"6{seq % 10000:04d}.5"),
        (11, f"CL-{seq:08d}"),
        (14, "0.050"),
        (17, f"E-{seq:012d}"),
        (31, f"6{seq % 10000:04d}.5"),
        (32, "0.050"),
        (37, f"O-{seq:012d}"),
        (38, "0.100"),
        (39, "1"),
        (40, "2"),
        (44, f"6{seq % 10000:04d}.5"),
        (54, "1"),
        (55, "BTC-PERP"),
        (59, "1"),
        (60, f"20240315-09:30:00.{seq % 1000:03d}"),
        (150, "F"),
        (151, "0.050"),
        (460, "12"),
        (851, "1"),
        (1057, "Y"),
    ]


def stream_reads(messages: list[bytes], count: int) -> list[bytes]:
    """``count`` messages back to back, cut into socket-sized reads (splitting messages)."""
    stream = b"".join(messages[i % len(messages)] for i in range(count))
    return [stream[i : i + READ_SIZE] for i in range(0, len(stream), READ_SIZE)]


def parse_ours(reads: list[bytes], accelerated: bool) -> int:
    decoder = FrameDecoder(accelerated=accelerated)
    feed = decoder.feed
    next_message = decoder.next_message
    count = 0
    for data in reads:
        feed(data)
        while next_message() is not None:
            count += 1
    return count


def parse_ours_and_read_header(reads: list[bytes], accelerated: bool) -> int:
    decoder = FrameDecoder(accelerated=accelerated)
    feed = decoder.feed
    next_message = decoder.next_message
    count = 0
    for data in reads:
        feed(data)
        while (msg := next_message()) is not None:
            msg.get(35), msg.get(34), msg.get(49), msg.get(56)
            count += 1
    return count


def parse_simplefix(reads: list[bytes]) -> int:
    parser = simplefix.FixParser()
    count = 0
    for data in reads:
        parser.append_buffer(data)
        while parser.get_message() is not None:
            count += 1
    return count


def encode_ours(bodies: list[list], count: int, accelerated: bool) -> int:
    size = len(bodies)
    saved = codec._codec_accel
    if not accelerated:
        codec._codec_accel = None  # the module-level switch encode() consults
    try:
        for i in range(count):
            encode(bodies[i % size])
    finally:
        codec._codec_accel = saved
    return count


def encode_simplefix(bodies: list[list], count: int) -> int:
    size = len(bodies)
    for i in range(count):
        msg = simplefix.FixMessage()
        msg.append_pair(8, b"FIX.4.4")
        for tag, value in bodies[i % size]:
            msg.append_pair(tag, value)
        msg.encode()
    return count


def median_rate(reps: int, run: Callable[..., int], *args: Any) -> float:
    """Median messages per CPU second of ``run(*args)`` over ``reps`` runs after a warm-up, GC
    off. Process CPU time, not wall time: on the two shared cores other processes preempt us,
    which wall time would count against whichever side happened to be running."""
    run(*args)
    rates = []
    for _ in range(reps):
        gc.collect()
        gc.disable()
        try:
            start = time.process_time()
            done = run(*args)
            elapsed = time.process_time() - start
        finally:
            gc.enable()
        rates.append(done / elapsed)
    return statistics.median(rates)


def report(label: str, ours: float, theirs: float) -> float:
    ratio = ours / theirs
    print(f"{label:<40} ours {ours:>11,.0f}/s  simplefix {theirs:>9,.0f}/s  ratio {ratio:6.1f}x")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer messages per repetition")
    args = parser.parse_args()
    ours_n, theirs_n = (20_000, 2_000) if args.quick else (100_000, 10_000)

    modes = [("C", True), ("pure", False)] if codec.ACCELERATED else [("pure", False)]
    print(
        f"python {sys.version.split()[0]}, simplefix {version('simplefix')}, "
        f"median of {args.reps} repetitions, "
        f"C accelerator {'built' if codec.ACCELERATED else 'NOT built (pure code only)'}"
    )
    targets_met = True
    for name, build in (
        ("NewOrderSingle", new_order_single),
        ("ExecutionReport", execution_report),
    ):
        bodies = [build(seq) for seq in range(DISTINCT)]
        wire = [encode(body) for body in bodies]
        print(f"\n{name}: {len(bodies[0]) + 3} fields, {len(wire[0])} bytes")
        ours_reads = stream_reads(wire, ours_n)
        theirs_reads = stream_reads(wire, theirs_n)
        theirs = median_rate(args.reps, parse_simplefix, theirs_reads)
        for mode, accelerated in modes:
            ours = median_rate(args.reps, parse_ours, ours_reads, accelerated)
            ratio = report(f"parse (frame+checksum+split), {mode}", ours, theirs)
            met = ours >= PARSE_TARGET_RATE and ratio >= PARSE_TARGET_RATIO
            if mode == modes[0][0]:
                targets_met = targets_met and met
            print(
                f"{'':<40} target >= {PARSE_TARGET_RATE:,}/s and >= {PARSE_TARGET_RATIO:.0f}x: "
                f"{'met' if met else 'NOT met'}"
            )
        for mode, accelerated in modes:
            ours = median_rate(args.reps, parse_ours_and_read_header, ours_reads, accelerated)
            report(f"parse + get(35, 34, 49, 56), {mode}", ours, theirs)

        bytes_bodies = [[(tag, str(value).encode()) for tag, value in body] for body in bodies]
        theirs = median_rate(args.reps, encode_simplefix, bodies, theirs_n)
        for mode, accelerated in modes:
            ours = median_rate(args.reps, encode_ours, bytes_bodies, ours_n, accelerated)
            report(f"encode (bytes values), {mode}", ours, theirs)
            ours = median_rate(args.reps, encode_ours, bodies, ours_n, accelerated)
            report(f"encode (str/int values), {mode}", ours, theirs)
    judged = "C accelerator" if codec.ACCELERATED else "pure code"
    print(f"\nparse targets {'met' if targets_met else 'NOT met'} for both messages ({judged})")


if __name__ == "__main__":
    main()
