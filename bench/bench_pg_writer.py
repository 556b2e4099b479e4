"""Rows/s of the Postgres writer against a naive one-INSERT-per-row baseline, in the same run.

Rows come from a real matching engine (orders, executions, positions of a random flow). Each
contender writes the same rows, in batches of ``--batch`` rows, into empty tables of a
throwaway schema; each run is repeated and the median reported:

- naive:     one INSERT ... ON CONFLICT statement per row, one commit per batch;
- copy:      BatchWriter, COPY into temp staging tables + INSERT ... SELECT ... ON CONFLICT;
- pipeline:  BatchWriter, executemany of single-row upserts in libpq pipeline mode;
- pgwriter:  PgWriter (copy) end to end on a running reactor: enqueue per tick -> flush.

    python bench/bench_pg_writer.py [--dsn DSN] [--rows N] [--batch N] [--repeat N]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import psycopg

from engine import CancelOrder, MatchingEngine, NewOrder, Side, demo_instruments
from fixserver.pg.batch import STRATEGIES, TABLES, BatchWriter
from fixserver.pg.migrations import migrate
from fixserver.pg.rows import ExecutionRow, OrderRow, PositionRow, Row, RowBuilder

DEFAULT_DSN = os.environ.get(
    "FIXEXCHANGE_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/fixexchange_test"
)
_TABLE_OF = {OrderRow: "orders", ExecutionRow: "executions", PositionRow: "positions"}


def make_ticks(min_rows: int) -> list[list[Row]]:
    """Rows of a deterministic random order flow, one list per 5-command tick."""
    engine = MatchingEngine(demo_instruments())
    builder = RowBuilder(demo_instruments())
    rng = random.Random(1)
    live: list[tuple[str, int]] = []
    ticks: list[list[Row]] = []
    total = seq = 0
    while total < min_rows:
        events: list[Any] = []
        for _ in range(5):
            seq += 1
            ts = 1_700_000_000_000_000_000 + seq * 1000
            if live and rng.random() < 0.2:
                account, order_id = live.pop(rng.randrange(len(live)))
                events += engine.process(CancelOrder(seq, ts, account, order_id))
            else:
                account = rng.choice("ABCDEFGH")
                live.append((account, seq))
                events += engine.process(NewOrder(
                    seq, ts, account, "BTC-PERP", rng.choice((Side.BUY, Side.SELL)),
                    rng.randint(1, 5), 600_000 + rng.randint(-5, 5), cl_ord_id=f"c{seq}"))
        rows = builder.rows(events)
        ticks.append(rows)
        total += len(rows)
    return ticks


def batches(ticks: Sequence[list[Row]], size: int) -> list[list[Row]]:
    out: list[list[Row]] = [[]]
    for tick in ticks:
        if out[-1] and len(out[-1]) + len(tick) > size:
            out.append([])
        out[-1].extend(tick)
    return out


def truncate(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("TRUNCATE orders, executions, positions")


def run_naive(dsn: str, work: list[list[Row]]) -> None:
    sql = {}
    for row_type, table in _TABLE_OF.items():
        cols = row_type._fields
        sql[row_type] = (f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
                         f"({', '.join(['%s'] * len(cols))}) {TABLES[table][1]}")
    with psycopg.connect(dsn) as conn:
        for batch in work:
            for row in batch:
                conn.execute(sql[type(row)], row)
            conn.commit()


def run_batch_writer(dsn: str, work: list[list[Row]], strategy: str) -> None:
    writer = BatchWriter(dsn, strategy)
    try:
        for batch in work:
            writer.write(batch)
    finally:
        writer.close()


def run_pgwriter(dsn: str, ticks: list[list[Row]], batch: int) -> None:
    """Enqueue every tick from the reactor thread, then wait for flush()."""
    from twisted.internet import reactor, task

    from fixserver.pg.writer import PgWriter

    writer = PgWriter(dsn, reactor, max_batch_rows=batch)
    writer.start()
    result: list[Any] = []

    def go() -> Any:
        for tick in ticks:
            writer.enqueue(tick)
        return writer.flush()

    d = task.deferLater(reactor, 0, go)
    d.addBoth(result.append)
    while not result:  # drive the reactor by hand: this script does not own reactor.run()
        reactor.iterate(0.001)  # type: ignore[attr-defined]
    writer.stop()
    if result[0] is not None:
        result[0].raiseException()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    ticks = make_ticks(args.rows)
    rows = sum(len(t) for t in ticks)
    work = batches(ticks, args.batch)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    dsn = psycopg.conninfo.make_conninfo(args.dsn, options=f"-c search_path={schema}")
    try:
        with psycopg.connect(dsn) as conn:
            migrate(conn)
        contenders: dict[str, Any] = {"naive": lambda: run_naive(dsn, work)}
        for strategy in STRATEGIES:
            contenders[strategy] = lambda s=strategy: run_batch_writer(dsn, work, s)
        contenders["pgwriter"] = lambda: run_pgwriter(dsn, ticks, args.batch)
        medians = {}
        for name, run in contenders.items():
            times = []
            for _ in range(args.repeat):
                truncate(dsn)
                start = time.perf_counter()
                run()
                times.append(time.perf_counter() - start)
            medians[name] = statistics.median(times)
        with psycopg.connect(dsn) as conn:
            stored = conn.execute("SELECT count(*) FROM executions").fetchone()
        expected = sum(isinstance(r, ExecutionRow) for t in ticks for r in t)
        assert stored == (expected,), f"executions {stored} != {expected}"
    finally:
        with psycopg.connect(args.dsn, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")

    print(f"pg writer: {rows} rows ({len(ticks)} ticks) in batches of <= {args.batch}, "
          f"median of {args.repeat}")
    base = rows / medians["naive"]
    for name, seconds in medians.items():
        rate = rows / seconds
        print(f"  {name:9s} {rate:>10,.0f} rows/s  {seconds:7.3f} s  x{rate / base:5.1f} vs naive")
    return 0


if __name__ == "__main__":
    sys.exit(main())
