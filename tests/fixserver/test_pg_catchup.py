"""Postgres catches up after a crash on ticks released before the latest snapshot."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

import psycopg
import pytest_twisted
from prometheus_client import REGISTRY
from twisted.internet import reactor

from fixserver.journal_file import JournalDirectory, segment_name, snapshot_name
from fixserver.pg.batch import read_progress
from fixserver.pg.catchup import regenerate
from fixserver.pg.rows import ExecutionRow, RowBuilder
from fixserver.pg.writer import PgWriter
from fixserver.server import FixServer
from tests.fixserver.inprocess_exchange import new_order, session_of, start_exchange
from tests.fixserver.pg_fixtures import migrated_dsn, pg_dsn

__all__ = ["migrated_dsn", "pg_dsn"]

TIMEOUT = 20.0


def _down_dsn() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    return f"postgresql://postgres@127.0.0.1:{port}/x"  # nothing listens there


def _service(server: FixServer) -> Any:
    """The order-entry service (server.application routes to it, for attribute reads only)."""
    return getattr(server.application, "other", server.application)


class Exchange:
    """Drives a FixServer's order entry without sockets and records every execution id."""

    def __init__(self, server: FixServer) -> None:
        self.server = server
        self.service: Any = _service(server)
        self.acme = session_of(server, "ACME1")
        self.beta = session_of(server, "BETA1")
        self.exec_ids: list[str] = []
        self._rows = RowBuilder(self.service.instruments)  # its own book: the live one is real
        self.service.pipeline.subscribe(self._collect)
        self._n = 0

    def _collect(self, processed: list) -> None:
        for row in self._rows.rows(e for p in processed for e in p.events):
            if isinstance(row, ExecutionRow):
                self.exec_ids.append(row.exec_id)

    def trade(self, snapshot: bool = False) -> Any:
        """ACME sells, BETA buys part of it (alternating prices): one tick, optional snapshot."""
        self._n += 1
        n, now = self._n, self.server.now_ns()
        price = "60000" if n % 2 else "59000"
        self.service.on_message(self.acme, new_order(f"S{n}", "A1", "2", "0.003", price), now)
        self.service.on_message(self.beta, new_order(f"B{n}", "B1", "1", "0.002", price), now)
        if snapshot:
            # as the server does it: the tick takes the snapshot, and the FIX layer's state
            # (positions included) joins it when that tick is released
            self.service.pipeline.request_snapshot()
        self.service.pipeline.tick()
        d = self.service.pipeline.when_idle()
        if snapshot:
            d.addCallback(lambda _: self.service.pipeline.when_snapshots_written())
        return d

    def expected_positions(self) -> list[tuple[Any, ...]]:
        """(account, symbol, size_lots, realised_pnl, fees, last_exec_id) of the live book."""
        builder = RowBuilder(self.service.instruments, self.service.positions)
        rows = [builder.position_row(p) for p in self.service.positions.positions()]
        return sorted((r.account, r.symbol, r.size_lots, r.realised_pnl, r.fees, r.last_exec_id)
                      for r in rows)


def _fetch(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def _check_database(dsn: str, exec_ids: list[str], positions: list[tuple[Any, ...]]) -> None:
    stored = [r[0] for r in _fetch(dsn, "SELECT exec_id FROM executions")]
    assert len(stored) == len(set(stored)), "every execution row exactly once"
    assert sorted(stored) == sorted(exec_ids), "every execution of every tick is in Postgres"
    got = _fetch(dsn, "SELECT account, symbol, size_lots, realised_pnl, fees, last_exec_id "
                      "FROM positions")
    assert sorted(got) == positions


@pytest_twisted.inlineCallbacks
def test_rows_held_back_across_snapshots_catch_up_after_restart(tmp_path, migrated_dsn):
    """Postgres stops committing after the first trade; three snapshots later the process
    stops; the restart regenerates the older ticks' rows from the retained journal."""
    server = start_exchange(tmp_path, migrated_dsn)
    ex = Exchange(server)
    yield ex.trade()
    first_end = ex.service.pipeline.sequencer.position()[0]
    yield ex.service.pg_writer.flush().addTimeout(TIMEOUT, reactor)
    ex.service.pg_writer.stop()  # Postgres commits nothing more in this run
    (mark,) = _fetch(migrated_dsn, "SELECT next_seq FROM pg_writer_progress")[0]
    assert mark >= first_end, "the first trade's tick is committed, and the mark says so"
    yield ex.trade(snapshot=True)
    yield ex.trade(snapshot=True)
    yield ex.trade(snapshot=True)
    yield ex.trade()
    positions = ex.expected_positions()
    ex.service.pg_flush_timeout = 0.05
    ex.service.pipeline.snapshot_on_shutdown = False  # the three snapshots above are the point
    yield server.stop()
    run_end = ex.service.pipeline.sequencer.position()[0]
    directory = JournalDirectory(os.path.join(str(tmp_path), "journal"))
    assert len(directory.snapshots()) == 3, "no snapshot is at or before the Postgres mark"
    assert directory.segments()[0][0] == 1, "the journal Postgres still needs is kept"
    assert REGISTRY.get_sample_value("journal_segments_retained_for_postgres") == 2
    assert len(_fetch(migrated_dsn, "SELECT exec_id FROM executions")) < len(ex.exec_ids)

    restarted = start_exchange(tmp_path, migrated_dsn)
    try:
        yield _service(restarted).pg_writer.flush().addTimeout(TIMEOUT, reactor)
        _check_database(migrated_dsn, ex.exec_ids, positions)
        (stored,) = _fetch(migrated_dsn, "SELECT next_seq FROM pg_writer_progress")[0]
        assert stored >= run_end, "the mark covers every tick of the first run"
    finally:
        yield restarted.stop()


@pytest_twisted.inlineCallbacks
def test_first_run_without_postgres_catches_up_on_restart(tmp_path, pg_dsn):
    """A first run whose PostgresDSN is unreachable keeps every tick's journal; the next run
    with Postgres up writes every execution once and the right positions."""
    server = start_exchange(tmp_path, _down_dsn())
    ex = Exchange(server)
    yield ex.trade()
    yield ex.trade(snapshot=True)
    yield ex.trade(snapshot=True)
    yield ex.trade(snapshot=True)
    yield ex.trade()
    positions = ex.expected_positions()
    ex.service.pg_flush_timeout = 0.05
    yield server.stop()

    restarted = start_exchange(tmp_path, pg_dsn)
    try:
        yield _service(restarted).pg_writer.flush().addTimeout(TIMEOUT, reactor)
        _check_database(pg_dsn, ex.exec_ids, positions)
    finally:
        yield restarted.stop()


@pytest_twisted.inlineCallbacks
def test_regenerate_names_the_range_the_journal_no_longer_holds(tmp_path, caplog):
    """With the journal pruned past the Postgres mark, regenerate logs the lost seq range and
    still regenerates what is retained; with it retained, every older tick comes back."""
    server = start_exchange(tmp_path, None)
    ex = Exchange(server)
    yield ex.trade()
    yield ex.trade(snapshot=True)
    yield ex.trade()
    mark = ex.service.pipeline.sequencer.position()[0]  # Postgres has the ticks before this
    execs_before_mark = len(ex.exec_ids)
    yield ex.trade(snapshot=True)
    instruments = ex.service.instruments
    yield server.stop()
    directory = JournalDirectory(os.path.join(str(tmp_path), "journal"))
    latest = directory.snapshots()[-1][0]

    full = regenerate(directory, instruments, mark, latest)
    regenerated = [r.exec_id for rows, _ in full.chunks for r in rows
                   if isinstance(r, ExecutionRow)]
    assert full.gap is None and full.start_seq == mark
    assert [seq for _, seq in full.chunks] == [latest]
    assert sorted(regenerated) == sorted(ex.exec_ids[execs_before_mark:])

    directory.prune(1)  # what pruning did before Postgres had a say
    with caplog.at_level(logging.WARNING, logger="fixserver.pg.catchup"):
        lost = regenerate(directory, instruments, mark, latest)
    assert lost.gap == (mark, latest) and lost.chunks == []
    assert f"seqs=[{mark}, {latest})" in caplog.text


def test_prune_keeps_what_postgres_still_needs(tmp_path):
    """Pruning keeps the newest snapshot at or before retain_from_seq and every segment from
    it on (all of them when no snapshot is that old); without it, only keep_snapshots."""
    def layout() -> JournalDirectory:
        directory = JournalDirectory(str(tmp_path), fsync=False)
        for name in os.listdir(str(tmp_path)):
            os.unlink(os.path.join(str(tmp_path), name))
        for seq in (1, 10, 20, 30):
            open(os.path.join(str(tmp_path), segment_name(seq)), "wb").close()
        for seq in (10, 20, 30):
            open(os.path.join(str(tmp_path), snapshot_name(seq)), "wb").close()
        return directory

    def left(directory: JournalDirectory) -> tuple[list[int], list[int]]:
        return ([s for s, _ in directory.snapshots()], [s for s, _ in directory.segments()])

    d = layout()
    d.prune(2)
    assert left(d) == ([20, 30], [20, 30]) and d.held_for_retain == 0
    d = layout()
    d.prune(2, retain_from_seq=15)
    assert left(d) == ([10, 20, 30], [10, 20, 30]) and d.held_for_retain == 1
    d = layout()
    d.prune(2, retain_from_seq=5)
    assert left(d) == ([10, 20, 30], [1, 10, 20, 30]) and d.held_for_retain == 2
    d = layout()
    d.prune(2, retain_from_seq=25)
    assert left(d) == ([20, 30], [20, 30]) and d.held_for_retain == 0


@pytest_twisted.inlineCallbacks
def test_writer_mark_follows_commits_and_never_moves_back(migrated_dsn):
    """The mark moves with each committed batch (rowless ticks too), is stored in Postgres in
    the batch's transaction, and an older batch written later does not move it back."""
    writer = PgWriter(migrated_dsn, reactor, committed_next_seq=5)
    writer.start()
    try:
        assert writer.committed_next_seq == 5
        writer.enqueue([], 9)  # a tick without rows still moves the mark
        yield writer.flush().addTimeout(TIMEOUT, reactor)
        assert writer.committed_next_seq == 9
        assert _fetch(migrated_dsn, "SELECT next_seq FROM pg_writer_progress") == [(9,)]
        writer.enqueue([], 7)  # a regenerated older tick
        yield writer.flush().addTimeout(TIMEOUT, reactor)
        assert writer.committed_next_seq == 9
        assert _fetch(migrated_dsn, "SELECT next_seq FROM pg_writer_progress") == [(9,)]
        with psycopg.connect(migrated_dsn) as conn:
            assert read_progress(conn) == 9
    finally:
        writer.stop()
