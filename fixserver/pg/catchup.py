"""Start-up catch-up of Postgres: regenerate the rows of ticks released before the latest
snapshot that never reached Postgres (blocking: run it before the reactor).

Theory of operation
-------------------
The writer persists its durable high-water mark in ``pg_writer_progress`` in the same
transaction as each batch (fixserver.pg.writer): every tick whose seqs are all below
``next_seq`` has its rows committed. Start-up replays only the journal tail after the latest
snapshot, and those rows are queued again anyway; but when Postgres was down (or slow) for
longer than a snapshot interval and the process then died, the ticks between the stored mark
and the latest snapshot would never reach Postgres. Journal pruning keeps them (the
pipeline's ``retain_from_seq`` is the writer's mark), and :func:`regenerate` turns them into
rows again:

- it picks the newest *base* at or before the mark: a retained snapshot, or a fresh engine at
  seq 1 when the journal still starts there (an unknown mark, Postgres unreachable at
  start-up or a fresh table, takes the oldest base: everything retained is regenerated);
- it replays the journal from the base into its own engine and its own
  :class:`~engine.positions.PositionBook` (from the snapshot's saved positions), so the live
  book is never touched twice, up to the latest snapshot's seq (the live tail does the rest);
  its RowBuilder's risk read model starts from the base engine's risk state, so margined
  positions' liquidation prices come out as they did live;
- it returns the rows of each tick after the mark, with the tick's next seq, to be enqueued
  before the tail's rows. All writes are idempotent: orders are guarded by ``last_exec_id``,
  positions by ``(last_exec_id, last_seq)``, balances by ``last_seq``, executions, ledger,
  funding, liquidation and transfer rows are ``DO NOTHING``, so ticks Postgres already holds (those
  between the base and the mark) are harmless if repeated; they are skipped anyway.

When the mark is older than every retained base (pruned before this code, or by an operator),
or the retained journal is damaged, the seq range that cannot be regenerated is logged as
``pg.catchup_gap`` and the rest is still regenerated.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Callable, NamedTuple

from engine import MatchingEngine
from engine.instruments import Instrument
from engine.journal import JournalCorruptError
from engine.positions import PositionBook
from engine.recovery import (
    Recovery,
    RecoveryError,
    SnapshotCorruptError,
    decode_snapshot,
)
from fixserver.journal_file import JournalDirectory
from fixserver.pg.rows import MARK_HISTORY_EVERY_S, Row, RowBuilder

log = logging.getLogger(__name__)


class Regeneration(NamedTuple):
    """What :func:`regenerate` found: (rows, next seq) per tick, and the writer's start mark."""

    chunks: list[tuple[list[Row], int]]
    #: the writer's initial high-water mark: the journal from here on is still needed
    start_seq: int
    #: (first, end) seqs whose rows could not be regenerated, or None
    gap: tuple[int, int] | None


def _bases(directory: JournalDirectory) -> list[tuple[int, str | None]]:
    """(seq, snapshot path or None for a fresh engine) a replay can start from, oldest first."""
    bases: list[tuple[int, str | None]] = []
    segs = directory.segments()
    if segs and segs[0][0] == 1:
        bases.append((1, None))
    bases.extend((seq, path) for seq, path in directory.snapshots() if seq > 1)
    return bases


def risk_state_of(engine: MatchingEngine) -> dict[str, Any] | None:
    """The risk state of an engine as restored from a snapshot (before any replay), for
    :class:`~fixserver.pg.rows.RowBuilder`'s ``risk_state``."""
    return engine.risk.to_state()


def _open_base(base: tuple[int, str | None], instruments: list[Instrument]
               ) -> tuple[Recovery, PositionBook]:
    path = base[1]
    if path is None:
        return Recovery(MatchingEngine(instruments)), PositionBook.for_instruments(instruments)
    with open(path, "rb") as f:
        snap = decode_snapshot(f.read())
    recovery = Recovery.from_snapshot(snap, MatchingEngine.restore)
    saved = dict(snap.extra or {}).get("positions")
    positions = (PositionBook.from_dict(saved) if saved
                 else PositionBook.for_instruments(instruments))
    return recovery, positions


def regenerate(directory: JournalDirectory, instruments: Iterable[Instrument],
               stored_next_seq: int | None, until_seq: int,
               session_of: Callable[[Any], str | None] = lambda origin: None,
               mark_history_every_s: float = MARK_HISTORY_EVERY_S) -> Regeneration:
    """The rows of the ticks in [``stored_next_seq``, ``until_seq``) (see module docstring).

    ``stored_next_seq``: the mark read from Postgres (None: unknown); ``until_seq``: the seq
    the live replay started at (the latest snapshot's next seq); ``session_of``: the session
    that entered a NewOrder, from its journaled origin (written with the order's row);
    ``mark_history_every_s``: the mark_prices sampling period (MarkHistoryEverySeconds).
    """
    instruments = list(instruments)
    if stored_next_seq is not None and stored_next_seq >= until_seq:
        return Regeneration([], stored_next_seq, None)
    target = stored_next_seq if stored_next_seq is not None else 1
    bases = [b for b in _bases(directory) if b[0] <= until_seq]
    if not bases:
        return _gap([], target, until_seq, stored_next_seq, until_seq)
    candidates = [b for b in bases if b[0] <= target] or bases[:1]
    for base in reversed(candidates):
        try:
            recovery, positions = _open_base(base, instruments)
            break
        except (OSError, SnapshotCorruptError, RecoveryError) as exc:
            log.error("pg.catchup snapshot %s unusable (%s); trying an older one", base[1], exc)
    else:
        return _gap([], target, until_seq, stored_next_seq, until_seq)
    base_seq = base[0]
    builder = RowBuilder(instruments, positions,
                         risk_state=risk_state_of(recovery.engine) if base[1] else None,
                         mark_history_every_s=mark_history_every_s)
    chunks: list[tuple[list[Row], int]] = []
    start = max(target, base_seq)
    reached = base_seq
    try:
        for rec in directory.read_records(base_seq):
            if rec.first_seq >= until_seq:
                break
            rows = builder.processed_rows(recovery.replay([rec]), session_of)
            reached = rec.next_seq
            if rows and rec.next_seq > target:
                chunks.append((rows, rec.next_seq))
    except (OSError, JournalCorruptError, RecoveryError) as exc:
        log.error("pg.catchup replay from seq %d stopped at seq %d: %s", base_seq, reached, exc)
    if reached < until_seq:
        return _gap(chunks, max(reached, target), until_seq, stored_next_seq, start)
    if stored_next_seq is not None and base_seq > stored_next_seq:
        return _gap(chunks, stored_next_seq, base_seq, stored_next_seq, start)
    log.info("pg.catchup regenerated ticks=%d rows=%d seqs=[%d, %d) from_base=%d",
             len(chunks), sum(len(r) for r, _ in chunks), start, until_seq, base_seq)
    return Regeneration(chunks, start, None)


def _gap(chunks: list[tuple[list[Row], int]], first: int, end: int,
         stored: int | None, start: int) -> Regeneration:
    log.warning("pg.catchup_gap seqs=[%d, %d): the rows of these ticks cannot be regenerated "
                "(Postgres mark %s, journal no longer holds them); regenerated ticks=%d",
                first, end, stored, len(chunks))
    return Regeneration(chunks, start, (first, end))

