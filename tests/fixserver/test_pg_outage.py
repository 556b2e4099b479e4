"""Postgres stopped under load: matching and enqueueing go on, and no row is lost or doubled.

The test runs its own throwaway cluster (initdb in a temp folder, a free port, fsync off):
stopping the shared server would break the other engineers' tests.
"""

from __future__ import annotations

import glob
import os
import random
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task, utils

from engine import CancelOrder, MatchingEngine, NewOrder, Side, demo_instruments
from fixserver.pg.batch import coalesce
from fixserver.pg.migrations import migrate
from fixserver.pg.rows import Row, RowBuilder
from fixserver.pg.writer import PgWriter

BTC = "BTC-PERP"
ACCOUNTS = ("A", "B", "C", "D")
TIMEOUT = 30.0


def _pg_bin() -> str:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not found:
        pytest.skip("no PostgreSQL server binaries under /usr/lib/postgresql/*/bin")
    return os.path.dirname(found[-1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A private Postgres cluster; as root the server runs as the postgres user."""

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.port = _free_port()
        self.dir = tempfile.mkdtemp(prefix="pg-outage-")
        self.data = os.path.join(self.dir, "data")
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")

    def argv(self, tool: str, *args: str) -> list[str]:
        cmd = [os.path.join(self.bin, tool), *args]
        return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd

    def ctl_argv(self, action: str) -> list[str]:
        if action == "start":
            return self.argv("pg_ctl", "start", "-w", "-D", self.data, "-l",
                             os.path.join(self.dir, "log"), "-o",
                             f"-F -c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir}")
        return self.argv("pg_ctl", "stop", "-m", "immediate", "-w", "-D", self.data)

    def init(self) -> None:
        import subprocess

        subprocess.run(self.argv("initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                                 "--no-sync", "-E", "UTF8"), check=True, capture_output=True)
        subprocess.run(self.ctl_argv("start"), check=True, capture_output=True)

    @defer.inlineCallbacks
    def ctl(self, action: str) -> Any:
        """pg_ctl start/stop without blocking the reactor."""
        argv = self.ctl_argv(action)
        out, err, code = yield utils.getProcessOutputAndValue(argv[0], argv[1:],
                                                              env=dict(os.environ))
        assert code == 0, f"pg_ctl {action} failed: {out!r} {err!r}"

    def destroy(self) -> None:
        import subprocess

        subprocess.run(self.ctl_argv("stop"), capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    """A running private cluster, destroyed after the test."""
    c = Cluster()
    try:
        c.init()
        with psycopg.connect(c.dsn) as conn:
            migrate(conn)
        yield c
    finally:
        c.destroy()


class Load:
    """Drives a real matching engine with a deterministic random order flow, tick by tick."""

    def __init__(self, writer: PgWriter) -> None:
        self.writer = writer
        self.engine = MatchingEngine(demo_instruments())
        self.builder = RowBuilder(demo_instruments())
        self.rng = random.Random(7)
        self.seq = 0
        self.live: list[tuple[str, int]] = []
        self.rows: list[Row] = []
        self.ticks = 0
        self.slowest_enqueue = 0.0
        self.slowest_gap = 0.0
        self._last = time.perf_counter()

    def _command(self) -> Any:
        self.seq += 1
        ts = 1_700_000_000_000_000_000 + self.seq * 1000
        if self.live and self.rng.random() < 0.2:
            account, order_id = self.live.pop(self.rng.randrange(len(self.live)))
            return CancelOrder(self.seq, ts, account, order_id, cl_ord_id=f"x{self.seq}")
        account = self.rng.choice(ACCOUNTS)
        self.live.append((account, self.seq))
        return NewOrder(self.seq, ts, account, BTC, self.rng.choice((Side.BUY, Side.SELL)),
                        self.rng.randint(1, 5), 600_000 + self.rng.randint(-5, 5),
                        cl_ord_id=f"c{self.seq}")

    def tick(self) -> None:
        """One sequencer tick: a few commands, their rows enqueued as one chunk."""
        now = time.perf_counter()
        self.slowest_gap = max(self.slowest_gap, now - self._last)
        events: list[Any] = []
        for _ in range(5):
            events.extend(self.engine.process(self._command()))
        rows = self.builder.rows(events)
        start = time.perf_counter()
        self.writer.enqueue(rows)
        self._last = time.perf_counter()
        self.slowest_enqueue = max(self.slowest_enqueue, self._last - start)
        self.rows.extend(rows)
        self.ticks += 1


@defer.inlineCallbacks
def _until(condition: Any, what: str) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        yield task.deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.inlineCallbacks
def test_no_row_lost_across_postgres_outage(cluster: Cluster) -> Any:
    """Orders flow while Postgres is killed and restarted; afterwards every row is there once."""
    writer = PgWriter(cluster.dsn, reactor, backoff_initial=0.02, backoff_max=0.2,
                      max_batch_rows=500)
    writer.start()
    load = Load(writer)
    ticking = task.LoopingCall(load.tick)
    ticking.clock = reactor
    ticking.start(0.002)
    try:
        yield _until(lambda: load.ticks >= 100 and writer.committed > 0, "rows committed")
        yield cluster.ctl("stop")
        down_at = load.ticks
        yield _until(lambda: writer.consecutive_failures >= 3, "the writer to notice")
        yield _until(lambda: load.ticks >= down_at + 100, "ticks during the outage")
        assert writer.backlog > 0 and writer.last_error is not None
        yield cluster.ctl("start")
        up_at = load.ticks
        yield _until(lambda: load.ticks >= up_at + 100, "ticks after the restart")
    finally:
        ticking.stop()
    try:
        yield writer.flush().addTimeout(TIMEOUT, reactor)
    finally:
        writer.stop()

    assert writer.backlog == 0
    assert load.slowest_enqueue < 0.005, f"enqueue took {load.slowest_enqueue:.4f}s"
    assert load.slowest_gap < 1.0, f"the reactor stalled {load.slowest_gap:.3f}s"
    orders, executions, positions, _ = coalesce(load.rows)
    with psycopg.connect(cluster.dsn) as conn:
        stored = conn.execute("SELECT exec_id FROM executions").fetchall()
        assert sorted(e for (e,) in stored) == sorted(e.exec_id for e in executions)
        assert len(stored) > 1000
        assert sorted(conn.execute(
            "SELECT order_id, status, filled_qty, leaves_qty, last_exec_id FROM orders"
        ).fetchall()) == sorted((o.order_id, o.status, o.filled_qty, o.leaves_qty,
                                 o.last_exec_id) for o in orders)
        assert sorted(conn.execute(
            "SELECT account, size_lots, realised_pnl, fees, last_exec_id FROM positions"
        ).fetchall()) == sorted((p.account, p.size_lots, p.realised_pnl, p.fees,
                                 p.last_exec_id) for p in positions)
