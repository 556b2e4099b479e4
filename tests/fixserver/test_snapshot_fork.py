"""Engine snapshots serialised by a forked child (fixserver.snapshot_fork)."""

from __future__ import annotations

import os

import pytest

from engine import MatchingEngine, NewOrder, Side, demo_instruments
from fixserver.snapshot_fork import SnapshotChildFailed, can_fork, fork_dump

pytestmark = pytest.mark.skipif(not can_fork(), reason="no os.fork here")


def _engine() -> MatchingEngine:
    eng = MatchingEngine(demo_instruments())
    for i in range(1, 2_001):
        side = Side.BUY if i % 2 else Side.SELL
        price = 600_000 - 1 - i % 50 if side is Side.BUY else 600_001 + i % 50
        eng.process(NewOrder(i, i, f"a{i % 7}", "BTC-PERP", side, 1 + i % 5, price,
                             cl_ord_id=f"C{i}"))
    return eng


def test_the_child_writes_the_engines_own_bytes_and_the_parent_goes_on(tmp_path):
    eng = _engine()
    expected = eng.snapshot()
    dump = fork_dump(eng, str(tmp_path))
    # the parent changes its engine at once: the child serialises the state at the fork
    eng.process(NewOrder(10_000, 10_000, "z", "BTC-PERP", Side.BUY, 3, 599_000))
    assert dump.result() == expected
    assert dump.result() == expected  # idempotent
    assert os.listdir(tmp_path) == []  # the temporary file is gone
    assert eng.snapshot() != expected


def test_a_failed_child_is_reported(tmp_path):
    class Broken:
        def snapshot(self) -> bytes:
            raise RuntimeError("boom")

    dump = fork_dump(Broken(), str(tmp_path))
    with pytest.raises(SnapshotChildFailed):
        dump.result()
    assert os.listdir(tmp_path) == []


def test_stale_dumps_of_a_killed_process_are_removed(tmp_path):
    from fixserver.snapshot_fork import remove_stale_dumps

    (tmp_path / "engine-abc.dump.tmp").write_bytes(b"half")
    (tmp_path / "snapshot-00000000000000000001.snap").write_bytes(b"keep")
    assert remove_stale_dumps(str(tmp_path)) == 1
    assert os.listdir(tmp_path) == ["snapshot-00000000000000000001.snap"]
    assert remove_stale_dumps(str(tmp_path / "missing")) == 0


def test_the_child_holds_no_descriptor_of_the_parent(tmp_path):
    """A socket the parent closes while the child serialises is closed at once: the child
    closed its copies first (here: the peer sees EOF before the child is reaped)."""
    import socket

    class Slow:
        def snapshot(self) -> bytes:
            import time
            time.sleep(0.5)
            return b"x"

    a, b = socket.socketpair()
    dump = fork_dump(Slow(), str(tmp_path))
    a.close()
    b.settimeout(0.3)
    assert b.recv(1) == b""  # EOF while the child still runs
    assert dump.result() == b"x"
    b.close()


def test_an_extra_packed_by_a_child_decodes_like_one_packed_in_line(tmp_path):
    import msgpack

    from engine.recovery import EXTRA_PACKED, SnapshotState, decode_snapshot, encode_snapshot
    from fixserver.snapshot_fork import fork_packed

    extra = {"ended": [[1, "a", 2]], "positions": {"BTC-PERP": [1, 2]}}
    inline = decode_snapshot(encode_snapshot(SnapshotState(5, 1, 1, None, b"\x80", extra)))
    packed = fork_packed(lambda: extra, str(tmp_path)).result()
    forked = decode_snapshot(encode_snapshot(
        SnapshotState(5, 1, 1, None, b"\x80", msgpack.ExtType(EXTRA_PACKED, packed))))
    assert forked.extra == inline.extra
