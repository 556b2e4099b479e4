"""``fixserver admin journal-verify``: a sound journal passes (exit 0), damage is found
(exit 1), a torn tail is only noted, and the directory is never changed."""

from __future__ import annotations

import os

from engine import MatchingEngine, demo_instruments
from engine.commands import AdminAction, NewOrder
from engine.enums import Side
from engine.journal import encode_record
from engine.recovery import SnapshotState
from engine.sequencer import Batch, Sequencer
from fixserver.admin.journal_verify import verify_journal
from fixserver.cli import main
from fixserver.journal_file import JournalDirectory, Rotate

TICKS = 20
SNAPSHOT_AFTER = 9  # a snapshot (and a new segment) after this tick


def build_journal(path: str, wrong_hash_at: int | None = None) -> None:
    """TICKS ticks of orders, one AdminAction, a state hash in every record, and a snapshot
    with a segment rotation in the middle."""
    directory = JournalDirectory(path, fsync=False)
    engine = MatchingEngine(demo_instruments())
    sequencer = Sequencer()
    writer = directory.open_writer(1)
    for i in range(TICKS):
        side = Side.BUY if i % 2 else Side.SELL
        sequencer.submit(("s", i), NewOrder(0, 0, "A1", "BTC-PERP", side, 1, 600_000 + i % 3))
        if i == 5:
            sequencer.submit(("", "A", "ops", "logout"), AdminAction(0, 0, "ops", "logout", "{}"))
        batch = sequencer.next_batch(1_000_000_000 * (i + 1))
        assert isinstance(batch, Batch)
        for _, command in batch.entries:
            engine.process(command)
        state_hash = engine.state_hash() if i != wrong_hash_at else "0" * 64
        writer.commit([encode_record(batch, state_hash)])
        if i == SNAPSHOT_AFTER:
            next_seq, last_ts, last_tick_ts = sequencer.position()
            writer.commit([Rotate(next_seq)])
            directory.write_snapshot(SnapshotState(next_seq, last_ts, last_tick_ts,
                                                   engine.state_hash(), engine.snapshot()))
    writer.close()


def _files(path: str) -> dict[str, bytes]:
    out = {}
    for name in sorted(os.listdir(path)):
        with open(os.path.join(path, name), "rb") as f:
            out[name] = f.read()
    return out


def _segments(path: str) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.endswith(".jnl"))


def test_sound_journal_passes_and_is_not_changed(tmp_path, capsys):
    """Every frame, record hash and the snapshot check out; the summary says so; exit 0."""
    path = str(tmp_path / "journal")
    build_journal(path)
    before = _files(path)
    report = verify_journal(path)
    assert report.ok, report.lines()
    assert (report.segments, report.records, report.snapshots_checked) == (2, TICKS, 1)
    assert report.record_hashes_checked == TICKS
    assert report.admin_actions == {"ops": 1}
    assert main(["admin", "journal-verify", "--journal", path]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("OK") and "admin audit records 1 (ops 1)" in out
    assert _files(path) == before


def test_flipped_byte_is_a_crc_error_and_exits_1(tmp_path, capsys):
    """A byte changed inside a record that has records after it: a checksum mismatch."""
    path = str(tmp_path / "journal")
    build_journal(path)
    first = os.path.join(path, _segments(path)[0])
    data = bytearray(open(first, "rb").read())
    data[len(data) // 2] ^= 0xFF
    with open(first, "wb") as f:
        f.write(data)
    before = _files(path)
    assert main(["admin", "journal-verify", "--journal", path]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM" in out and "FAILED" in out
    assert "checksum mismatch" in out or "bad frame length" in out
    assert _files(path) == before


def test_wrong_stored_state_hash_fails_the_replay(tmp_path):
    """A record whose CRC is right but whose state hash replay does not reproduce."""
    path = str(tmp_path / "journal")
    build_journal(path, wrong_hash_at=3)
    report = verify_journal(path)
    assert not report.ok
    assert any("state hashes to" in p for p in report.problems), report.problems


def test_torn_tail_is_noted_not_failed_and_left_alone(tmp_path):
    """Half a frame at the end of the last segment (a crash mid-append) is reported, the
    check passes, and the file keeps its bytes (start-up, not the verifier, repairs it)."""
    path = str(tmp_path / "journal")
    build_journal(path)
    last = os.path.join(path, _segments(path)[-1])
    with open(last, "ab") as f:
        f.write(b"\x40\x00\x00\x00\x01\x02")
    size = os.path.getsize(last)
    report = verify_journal(path)
    assert report.ok, report.lines()
    assert any("torn tail" in n for n in report.notes)
    assert os.path.getsize(last) == size


def test_pruned_journal_replays_from_its_snapshot_and_checks_it(tmp_path):
    """Without the segments before the snapshot the replay starts from it; a damaged
    snapshot is then a problem."""
    path = str(tmp_path / "journal")
    build_journal(path)
    os.unlink(os.path.join(path, _segments(path)[0]))
    report = verify_journal(path)
    assert report.ok, report.lines()
    assert report.replayed_from.startswith("snapshot-")
    assert report.admin_actions == {}  # the audit record was before the snapshot
    snap = os.path.join(path, next(n for n in os.listdir(path) if n.endswith(".snap")))
    data = bytearray(open(snap, "rb").read())
    data[-3] ^= 0xFF
    with open(snap, "wb") as f:
        f.write(data)
    report = verify_journal(path)
    assert not report.ok and any("snapshot-" in p for p in report.problems), report.problems


def test_missing_directory_fails(tmp_path):
    """A path that is not a journal directory: exit 1."""
    assert main(["admin", "journal-verify", "--journal", str(tmp_path / "none")]) == 1
