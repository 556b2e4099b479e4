"""``fixserver admin journal-verify``: check a journal directory offline, changing nothing.

Nothing is written, truncated or deleted (start-up, unlike this, repairs a torn tail). Meant
for a stopped server's directory or a copy of it: on a live one the record being appended
may show as a torn tail, and pruning may remove a file during the check. What is checked:

1. Every segment: its magic, every frame's length and CRC32, every record decodes, records
   follow each other without a gap, and each segment starts where the previous one ended.
   A torn last record at the very end of the last segment is what a crash mid-append
   leaves (start-up truncates it; nothing acknowledged was in it): reported, not an error.
2. Every snapshot: it decodes and its engine, restored, has the state hash it records.
3. Replay: from an empty engine when the journal starts at seq 1, else from the oldest
   snapshot the segments continue, every record is replayed through the engine; the state
   hash a record carries must be reproduced, and so must the hash of every later snapshot
   when the replay reaches its seq.

The summary counts records, commands and hashes checked, and the operators' audit records
(AdminAction) by who. Pure apart from reading the files.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any, Callable

import attr

from engine import MatchingEngine
from engine.commands import AdminAction
from engine.journal import JournalCorruptError, JournalRecord, decode_segment
from engine.recovery import (
    Recovery,
    RecoveryError,
    SnapshotCorruptError,
    SnapshotState,
    StateHashMismatch,
    decode_snapshot,
)

# The names fixserver.journal_file writes (journal-<first seq>.jnl, snapshot-<next seq>.snap).
_SEGMENT = re.compile(r"^journal-(\d{20})\.jnl$")
_SNAPSHOT = re.compile(r"^snapshot-(\d{20})\.snap$")

#: the engine a replay from seq 1 starts with, given the first record's commands
Genesis = Callable[[list], Any]


def demo_genesis(first_commands: list) -> Any:
    """The engine start-up builds for a replay from seq 1: no instruments for a journal that
    lists its own (ConfigureInstrument first), the built-in demo set for an older one."""
    from fixserver.orderentry.instrument_sync import genesis_instruments

    return MatchingEngine(genesis_instruments(first_commands))


@attr.s(auto_attribs=True)
class VerifyReport:
    """What :func:`verify_journal` found; ``ok`` is False once a problem is recorded."""

    path: str
    problems: list[str] = attr.Factory(list)
    notes: list[str] = attr.Factory(list)
    segments: int = 0
    records: int = 0
    commands: int = 0
    first_seq: int = 0
    next_seq: int = 0
    snapshots: int = 0
    snapshots_checked: int = 0
    record_hashes_checked: int = 0
    replayed_from: str = ""
    state_hash: str = ""
    admin_actions: Counter = attr.Factory(Counter)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """The printed summary."""
        out = [f"journal {self.path}",
               f"segments {self.segments}, records {self.records}, commands {self.commands}, "
               f"seqs {self.first_seq}..{max(self.next_seq - 1, 0)}",
               f"snapshots {self.snapshots} ({self.snapshots_checked} hash-checked)",
               f"replayed from {self.replayed_from or '-'}; record state hashes checked "
               f"{self.record_hashes_checked}"]
        if self.state_hash:
            out.append(f"state hash at seq {self.next_seq - 1}: {self.state_hash}")
        if self.admin_actions:
            by = ", ".join(f"{who} {n}" for who, n in sorted(self.admin_actions.items()))
            out.append(f"admin audit records {sum(self.admin_actions.values())} ({by})")
        out += [f"note: {n}" for n in self.notes]
        out += [f"PROBLEM: {p}" for p in self.problems]
        out.append("OK" if self.ok else f"FAILED ({len(self.problems)} problem(s))")
        return out


def _listed(path: str, pattern: re.Pattern[str]) -> list[tuple[int, str]]:
    found = []
    for name in os.listdir(path):
        m = pattern.match(name)
        if m:
            found.append((int(m.group(1)), name))
    return sorted(found)


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def verify_journal(path: str, genesis: Genesis = demo_genesis) -> VerifyReport:
    """Check the journal directory ``path`` (module docstring); never writes to it."""
    report = VerifyReport(path)
    if not os.path.isdir(path):
        report.problems.append("not a directory")
        return report
    try:
        records = _read_segments(path, report)
        snapshots = _read_snapshots(path, report)
    except OSError as exc:
        report.problems.append(f"cannot read: {exc}")
        return report
    if records is None:
        return report
    _replay(records, snapshots, genesis, report)
    return report


def _read_segments(path: str, report: VerifyReport) -> list[JournalRecord] | None:
    """Every record of every segment, in order; None after a problem that stops the check."""
    segments = _listed(path, _SEGMENT)
    report.segments = len(segments)
    if not segments:
        report.notes.append("no journal segments")
        return []
    all_records: list[JournalRecord] = []
    expected: int | None = None
    for i, (first_seq, name) in enumerate(segments):
        last = i == len(segments) - 1
        data = _read(os.path.join(path, name))
        try:
            records, good_end, torn = decode_segment(data)
        except JournalCorruptError as exc:
            report.problems.append(f"{name}: {exc}")
            return None
        if records and records[0].first_seq != first_seq:
            report.problems.append(f"{name} holds seq {records[0].first_seq} first")
            return None
        if expected is not None and first_seq != expected:
            report.problems.append(f"{name} starts at seq {first_seq}, the previous segment "
                                   f"ended before seq {expected}")
            return None
        if torn:
            if not last:
                report.problems.append(f"{name} is torn ({len(data) - good_end} bytes at "
                                       f"offset {good_end}) but is not the last segment")
                return None
            report.notes.append(f"{name} has a torn tail of {len(data) - good_end} bytes at "
                                f"offset {good_end} (a crash mid-append; start-up truncates "
                                "it, nothing in it was acknowledged)")
        expected = records[-1].next_seq if records else first_seq
        all_records += records
    report.first_seq = segments[0][0]
    report.next_seq = expected or segments[0][0]
    report.records = len(all_records)
    report.commands = sum(len(r.entries) for r in all_records)
    return all_records


def _read_snapshots(path: str, report: VerifyReport) -> dict[int, tuple[str, SnapshotState]]:
    """The snapshots that decode and whose restored engine has their hash, by next seq."""
    found: dict[int, tuple[str, SnapshotState]] = {}
    listed = _listed(path, _SNAPSHOT)
    report.snapshots = len(listed)
    for next_seq, name in listed:
        try:
            snap = decode_snapshot(_read(os.path.join(path, name)))
            if snap.next_seq != next_seq:
                raise SnapshotCorruptError(f"holds next seq {snap.next_seq}")
            Recovery.from_snapshot(snap, MatchingEngine.restore)  # checks its state hash
        except (SnapshotCorruptError, StateHashMismatch) as exc:
            report.problems.append(f"{name}: {exc}")
            continue
        except Exception as exc:  # an engine that cannot be restored from it
            report.problems.append(f"{name}: cannot be restored: {exc!r}")
            continue
        report.snapshots_checked += 1
        found[next_seq] = (name, snap)
    return found


def _replay(records: list[JournalRecord], snapshots: dict[int, tuple[str, SnapshotState]],
            genesis: Genesis, report: VerifyReport) -> None:
    first = records[0].first_seq if records else (min(snapshots) if snapshots else 1)
    end = records[-1].next_seq if records else first
    for seq, (name, _) in snapshots.items():
        if seq > end:
            report.problems.append(f"{name} is ahead of the journal, which ends before seq "
                                   f"{end}")
    if first == 1:
        commands = [c for _, c in records[0].entries] if records else []
        recovery = Recovery(genesis(commands))
        report.replayed_from = "an empty engine (seq 1)"
    else:
        usable = [s for s in sorted(snapshots) if first <= s <= end]
        if not usable:
            report.problems.append(f"the journal starts at seq {first} and no usable snapshot "
                                   "covers the seqs before it")
            return
        name, snap = snapshots[usable[0]]
        recovery = Recovery.from_snapshot(snap, MatchingEngine.restore)
        report.replayed_from = name
    try:
        for rec in records:
            if rec.next_seq <= recovery.next_seq:
                continue
            for _origin, command in rec.entries:
                if type(command) is AdminAction:
                    report.admin_actions[command.who] += 1
            recovery.run([rec])
            at = snapshots.get(recovery.next_seq)
            if at is not None and at[1].state_hash is not None:
                got = recovery.engine.state_hash()
                if got != at[1].state_hash:
                    report.problems.append(
                        f"replayed to seq {recovery.next_seq - 1} the state hashes to {got}, "
                        f"{at[0]} says {at[1].state_hash}")
    except (RecoveryError, JournalCorruptError) as exc:
        report.problems.append(f"replay: {exc}")
    except Exception as exc:  # the engine failed on a journaled command
        report.problems.append(f"replay: the engine failed at seq {recovery.next_seq}: "
                               f"{exc!r}")
    report.record_hashes_checked = recovery.verified_hashes
    report.state_hash = recovery.engine.state_hash()
    if not records:
        report.next_seq = recovery.next_seq
