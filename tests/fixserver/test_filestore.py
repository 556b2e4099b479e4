"""FileMessageStore keeps sequence numbers, sent messages and spent logon nonces across restarts
and torn writes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixserver.filestore import FileMessageStore, StoreCorruptError, WriteBatch, store_file_name
from fixserver.store import MemoryMessageStore

SID = "FIX.4.4:EXCH->CLIENT1"


def test_new_store_starts_at_one_with_creation_time(tmp_path):
    """A fresh store has both sequence numbers at 1 and the given creation time."""
    store = FileMessageStore(str(tmp_path), SID, now_ns=123)
    assert (store.next_sender_seq(), store.next_target_seq()) == (1, 1)
    assert store.creation_time_ns() == 123
    assert os.path.basename(store.path) == store_file_name(SID)


def test_state_survives_reopen(tmp_path):
    """Sequence numbers, sent messages and creation time are rebuilt from the file."""
    store = FileMessageStore(str(tmp_path), SID, now_ns=5)
    store.set_next_target_seq(7)
    store.save_sent(1, b"8=FIX.4.4\x019=5\x0135=j\x0110=000\x01")
    store.save_sent(3, b"msg three")
    store.set_next_sender_seq(10)
    again = FileMessageStore(str(tmp_path), SID, now_ns=999)
    assert again.next_target_seq() == 7
    assert again.next_sender_seq() == 10
    assert again.creation_time_ns() == 5
    assert again.get_sent(1, 5) == [
        (1, b"8=FIX.4.4\x019=5\x0135=j\x0110=000\x01"),
        (3, b"msg three"),
    ]
    assert again.get_sent(2, 2) == []


def test_save_sent_advances_sender(tmp_path):
    """Saving message N makes N+1 the next sender sequence number, live and after reload."""
    store = FileMessageStore(str(tmp_path), SID)
    store.save_sent(4, b"four")
    assert store.next_sender_seq() == 5
    assert FileMessageStore(str(tmp_path), SID).next_sender_seq() == 5


def test_reset_clears_and_survives_reopen(tmp_path):
    """reset() puts both numbers back to 1, forgets sent messages, and a reload agrees."""
    store = FileMessageStore(str(tmp_path), SID, now_ns=1)
    store.save_sent(1, b"one")
    store.set_next_target_seq(9)
    size_before = os.path.getsize(store.path)
    store.reset(now_ns=77)
    assert (store.next_sender_seq(), store.next_target_seq()) == (1, 1)
    assert store.get_sent(1, 10) == []
    assert os.path.getsize(store.path) < size_before
    store.save_sent(1, b"after reset")
    store.sync()
    again = FileMessageStore(str(tmp_path), SID)
    assert again.creation_time_ns() == 77
    assert again.get_sent(1, 1) == [(1, b"after reset")]
    assert not os.path.exists(store.path + ".new")


@pytest.mark.parametrize("cut", [1, 4, 8, 9, 12])
def test_torn_last_record_is_dropped(tmp_path, cut):
    """A last record cut short by a crash is ignored and later appends follow the good part."""
    store = FileMessageStore(str(tmp_path), SID)
    store.set_next_target_seq(2)
    store.save_sent(1, b"0123456789")
    full = os.path.getsize(store.path)
    os.truncate(store.path, full - cut)
    again = FileMessageStore(str(tmp_path), SID)
    assert again.next_target_seq() == 2
    assert again.get_sent(1, 1) == []
    assert again.next_sender_seq() == 1
    assert again.dropped_tail_bytes > 0
    again.save_sent(1, b"resent")
    assert FileMessageStore(str(tmp_path), SID).get_sent(1, 1) == [(1, b"resent")]


def test_garbage_tail_is_dropped(tmp_path):
    """Zeros or a bad checksum in the last record (power loss) count as a torn tail."""
    store = FileMessageStore(str(tmp_path), SID)
    store.set_next_target_seq(3)
    with open(store.path, "ab") as handle:
        handle.write(b"\x00" * 100)
    assert FileMessageStore(str(tmp_path), SID).next_target_seq() == 3
    store2 = FileMessageStore(str(tmp_path), SID)
    store2.set_next_target_seq(4)
    with open(store2.path, "r+b") as handle:
        handle.seek(-1, os.SEEK_END)
        handle.write(b"\xff")
    assert FileMessageStore(str(tmp_path), SID).next_target_seq() == 3


def test_corruption_before_good_records_is_an_error(tmp_path):
    """A damaged record followed by intact ones raises instead of silently losing data."""
    store = FileMessageStore(str(tmp_path), SID)
    store.save_sent(1, b"first message")
    first_end = os.path.getsize(store.path)
    store.save_sent(2, b"second message")
    with open(store.path, "r+b") as handle:
        handle.seek(first_end - 3)
        handle.write(b"X")
    with pytest.raises(StoreCorruptError, match="checksum"):
        FileMessageStore(str(tmp_path), SID)


def test_sync_runs_beside_appends_and_resets(tmp_path):
    """sync() from another thread while the owner appends and resets loses nothing."""
    store = FileMessageStore(str(tmp_path), SID)
    stop = threading.Event()
    errors: list[BaseException] = []

    def syncer() -> None:
        try:
            while not stop.is_set():
                store.sync()
        except BaseException as exc:  # surfaced to the test thread below
            errors.append(exc)

    thread = threading.Thread(target=syncer)
    thread.start()
    try:
        for round_ in range(20):
            for seq in range(1, 30):
                store.save_sent(seq, b"m%d" % seq)
            store.reset(now_ns=round_)
    finally:
        stop.set()
        thread.join(10)
    assert not errors
    store.save_sent(1, b"last")
    store.close()
    assert FileMessageStore(str(tmp_path), SID).get_sent(1, 1) == [(1, b"last")]


def test_state_survives_sigkill(tmp_path):
    """Records written before a SIGKILL (no fsync, no close) are there after restart."""
    code = (
        "import os, signal, sys\n"
        "from fixserver.filestore import FileMessageStore\n"
        f"s = FileMessageStore({str(tmp_path)!r}, {SID!r})\n"
        "for i in range(1, 101): s.save_sent(i, b'msg%d' % i)\n"
        "s.set_next_target_seq(42)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], timeout=60, check=False)
    assert proc.returncode == -9
    store = FileMessageStore(str(tmp_path), SID)
    assert store.next_sender_seq() == 101
    assert store.next_target_seq() == 42
    assert store.get_sent(100, 100) == [(100, b"msg100")]


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("sender"), st.integers(1, 50)),
        st.tuples(st.just("target"), st.integers(1, 50)),
        st.tuples(st.just("sent"), st.integers(1, 50), st.binary(max_size=20)),
        st.tuples(st.just("reset"), st.integers(0, 10**18)),
    ),
    max_size=30,
)


@settings(max_examples=40, derandomize=True, deadline=None)
@given(ops=_ops)
def test_matches_memory_store_after_reload(tmp_path_factory, ops):
    """Any sequence of changes gives the memory store's state, live and after a reload."""
    path = str(tmp_path_factory.mktemp("store"))
    disk = FileMessageStore(path, SID, now_ns=0)
    memory = MemoryMessageStore(now_ns=0)
    for op in ops:
        for store in (disk, memory):
            if op[0] == "sender":
                store.set_next_sender_seq(op[1])
            elif op[0] == "target":
                store.set_next_target_seq(op[1])
            elif op[0] == "sent":
                store.save_sent(op[1], op[2])
            else:
                store.reset(op[1])
    for store in (disk, FileMessageStore(path, SID)):
        assert store.next_sender_seq() == memory.next_sender_seq()
        assert store.next_target_seq() == memory.next_target_seq()
        assert store.creation_time_ns() == memory.creation_time_ns()
        assert store.get_sent(1, 50) == memory.get_sent(1, 50)


def test_batched_records_reach_the_file_on_flush(tmp_path):
    """With a WriteBatch, changes are written by batch.flush(), one write per store."""
    batch = WriteBatch()
    store = FileMessageStore(str(tmp_path), SID, batch=batch)
    other = FileMessageStore(str(tmp_path), "FIX.4.4:EXCH->CLIENT2", batch=batch)
    store.set_next_target_seq(2)
    store.save_sent(1, b"one")
    other.save_sent(1, b"other")
    assert store.next_sender_seq() == 2  # the in-memory state is current at once
    assert FileMessageStore(str(tmp_path), SID).next_target_seq() == 1  # not written yet
    assert batch.pending == {store, other}
    batch.flush()
    assert not batch.pending
    reloaded = FileMessageStore(str(tmp_path), SID)
    assert reloaded.next_target_seq() == 2 and reloaded.get_sent(1, 1) == [(1, b"one")]
    assert FileMessageStore(str(tmp_path), "FIX.4.4:EXCH->CLIENT2").get_sent(1, 1) == [
        (1, b"other")
    ]


def test_batched_get_sent_and_reset(tmp_path):
    """get_sent sees unflushed messages; reset drops the superseded unflushed records."""
    batch = WriteBatch()
    store = FileMessageStore(str(tmp_path), SID, now_ns=1, batch=batch)
    store.save_sent(1, b"one")
    assert store.get_sent(1, 1) == [(1, b"one")]
    store.save_sent(2, b"two")
    store.reset(now_ns=9)
    store.save_sent(1, b"new one")
    batch.flush()
    reloaded = FileMessageStore(str(tmp_path), SID)
    assert reloaded.creation_time_ns() == 9
    assert reloaded.get_sent(1, 5) == [(1, b"new one")]


@settings(max_examples=40, derandomize=True, deadline=None)
@given(ops=_ops, flush_every=st.integers(1, 5))
def test_batched_store_matches_memory_store(tmp_path_factory, ops, flush_every):
    """Batched writes with flushes at any points give the memory store's state after reload."""
    path = str(tmp_path_factory.mktemp("store"))
    batch = WriteBatch()
    disk = FileMessageStore(path, SID, now_ns=0, batch=batch)
    memory = MemoryMessageStore(now_ns=0)
    for i, op in enumerate(ops):
        for store in (disk, memory):
            if op[0] == "sender":
                store.set_next_sender_seq(op[1])
            elif op[0] == "target":
                store.set_next_target_seq(op[1])
            elif op[0] == "sent":
                store.save_sent(op[1], op[2])
            else:
                store.reset(op[1])
        if i % flush_every == 0:
            batch.flush()
    assert disk.get_sent(1, 50) == memory.get_sent(1, 50)
    batch.flush()
    reloaded = FileMessageStore(path, SID)
    assert reloaded.next_sender_seq() == memory.next_sender_seq()
    assert reloaded.next_target_seq() == memory.next_target_seq()
    assert reloaded.creation_time_ns() == memory.creation_time_ns()
    assert reloaded.get_sent(1, 50) == memory.get_sent(1, 50)


# --- spent logon nonces (<session>.nonces) ---

S = 1_000_000_000


def test_spent_nonces_survive_reopen_and_reset_and_are_fsynced(tmp_path):
    """Spent nonces are kept across a reopen and a sequence reset; they make the store need
    a sync until it has run."""
    store = FileMessageStore(str(tmp_path), SID, now_ns=0)
    assert store.spent_nonces() == {} and not os.path.exists(tmp_path / _nonce_file())
    store.sync()
    store.spend_nonce(b"nonce-1", 10 * S, 0)
    store.spend_nonce(b"nonce-2", 11 * S, 0)
    assert store.needs_sync
    store.sync()
    assert not store.needs_sync
    store.reset(12 * S)
    assert FileMessageStore(str(tmp_path), SID).spent_nonces() == {
        b"nonce-1": 10 * S,
        b"nonce-2": 11 * S,
    }
    memory = MemoryMessageStore()
    memory.spend_nonce(b"nonce-1", 10 * S, 0)
    memory.reset(12 * S)
    assert memory.spent_nonces() == {b"nonce-1": 10 * S}


def test_nonce_file_stays_bounded_by_the_horizon(tmp_path):
    """With one logon a second and a 60 s horizon, 10,000 logons leave a small file holding
    only the nonces still inside the horizon."""
    store = FileMessageStore(str(tmp_path), SID, now_ns=0)
    for i in range(10_000):
        now = i * S
        store.spend_nonce(b"nonce-%08d" % i, now, now - 60 * S)
    path = tmp_path / _nonce_file()
    assert os.path.getsize(path) < 200 * 40
    again = FileMessageStore(str(tmp_path), SID).spent_nonces()
    assert len(again) >= 61 and max(again.values()) - min(again.values()) <= 200 * S
    assert b"nonce-00009999" in again


def test_torn_nonce_record_is_dropped(tmp_path):
    """A nonce record cut short by a crash is dropped; the ones before it are kept."""
    store = FileMessageStore(str(tmp_path), SID, now_ns=0)
    store.spend_nonce(b"nonce-1", 10 * S, 0)
    store.spend_nonce(b"nonce-2", 11 * S, 0)
    path = tmp_path / _nonce_file()
    with open(path, "r+b") as handle:
        handle.truncate(os.path.getsize(path) - 3)
    assert FileMessageStore(str(tmp_path), SID).spent_nonces() == {b"nonce-1": 10 * S}


def _nonce_file() -> str:
    return store_file_name(SID, ".nonces")


def test_kept_messages_cost_one_index_entry_per_anchor(tmp_path):
    """100,000 sent messages: the in-memory index holds one anchor per ANCHOR_EVERY messages
    (two 8-byte items each), nothing per message besides; a seq set back is indexed exactly
    and wins over the older copy; the messages read back as written, also after a reopen."""
    from fixserver.filestore import ANCHOR_EVERY

    store = FileMessageStore(str(tmp_path), SID)
    for seq in range(1, 100_001):
        store.save_sent(seq, b"8=FIX.4.4\x019=5\x0135=8\x01%d" % seq)
    assert store.kept_index_entries == 100_000 // ANCHOR_EVERY + 1
    assert store._anchor_seqs.itemsize == store._anchor_offsets.itemsize == 8
    store.save_sent(5, b"again")  # the sender sequence number was set back
    assert store.kept_index_entries == 100_000 // ANCHOR_EVERY + 2
    assert store.get_sent(5, 5) == [(5, b"again")]
    assert store.get_sent(99_999, 100_000)[1] == (100_000, b"8=FIX.4.4\x019=5\x0135=8\x01100000")
    store.close()
    again = FileMessageStore(str(tmp_path), SID)
    assert again.get_sent(4, 6) == [(4, b"8=FIX.4.4\x019=5\x0135=8\x014"), (5, b"again"),
                                    (6, b"8=FIX.4.4\x019=5\x0135=8\x016")]
    assert again.kept_index_entries == store.kept_index_entries
    again.close()
