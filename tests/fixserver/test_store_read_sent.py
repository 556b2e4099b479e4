"""MessageStore.read_sent: the first stored messages of a range within a message and a byte
limit, the same from the file store as from the memory store, read with few preads."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from fixserver.filestore import FileMessageStore, WriteBatch
from fixserver.store import MemoryMessageStore

SID = "FIX.4.4:EXCH->CLIENT1"


def filled(store, seqs, size=10):
    for seq in seqs:
        store.save_sent(seq, b"%0*d" % (size, seq))
    return store


def test_read_sent_takes_the_first_messages_within_both_limits():
    """At most max_messages; no more once max_bytes is reached, but always one."""
    store = filled(MemoryMessageStore(), [2, 3, 5, 8, 9])
    assert [s for s, _ in store.read_sent(1, 100, 3, 10**9)] == [2, 3, 5]
    assert [s for s, _ in store.read_sent(4, 100, 10, 10**9)] == [5, 8, 9]
    assert [s for s, _ in store.read_sent(4, 8, 10, 10**9)] == [5, 8]
    assert [s for s, _ in store.read_sent(1, 100, 10, 20)] == [2, 3]  # 10 bytes each
    assert [s for s, _ in store.read_sent(1, 100, 10, 1)] == [2]
    assert store.read_sent(10, 100, 10, 10**9) == []
    assert store.read_sent(6, 7, 10, 10**9) == []


def test_file_store_reads_a_chunk_with_one_pread(tmp_path, monkeypatch):
    """Messages lying close together in the file are read with one pread per chunk."""
    store = filled(FileMessageStore(str(tmp_path), SID), range(1, 201))
    calls = []
    real = os.pread

    def counting(fd, length, offset):
        calls.append(length)
        return real(fd, length, offset)

    monkeypatch.setattr(os, "pread", counting)
    chunk = store.read_sent(51, 10**6, 100, 10**9)
    assert [s for s, _ in chunk] == list(range(51, 151))
    assert chunk[0][1] == b"%010d" % 51
    # from the anchor at or before 51 (seq 1) to the end of the file: 200 records of 27 bytes
    assert len(calls) == 1 and calls[0] <= 200 * 27 + 17


def test_file_store_indexes_sparsely_and_reads_any_range(tmp_path, monkeypatch):
    """A day's messages cost one index entry per ANCHOR_EVERY; any range, chunk or not, read
    across anchors, span boundaries and interleaved sequence-number records, is exact, live
    and after a reload."""
    import random

    from fixserver import filestore

    monkeypatch.setattr(filestore, "_MIN_READ_SPAN", 300)  # many reads, records cut at ends
    monkeypatch.setattr(filestore, "_MAX_READ_SPAN", 700)
    rng = random.Random(7)
    store = FileMessageStore(str(tmp_path), SID)
    memory = MemoryMessageStore()
    seq = 0
    for _ in range(2_000):
        seq += rng.choice((1, 1, 1, 2))  # gaps: admin messages are not kept
        raw = bytes([65 + seq % 26]) * rng.randint(1, 400)
        store.save_sent(seq, raw)
        memory.save_sent(seq, raw)
        store.set_next_target_seq(seq)  # inbound traffic between the sent messages
    assert store.kept_index_entries == -(-2_000 // filestore.ANCHOR_EVERY)
    for reader in (store, FileMessageStore(str(tmp_path), SID)):
        assert reader.kept_index_entries == store.kept_index_entries
        for _ in range(200):
            begin = rng.randint(0, seq + 5)
            end = rng.randint(begin - 1, seq + 5)
            limit, max_bytes = rng.randint(1, 150), rng.randint(1, 20_000)
            assert reader.read_sent(begin, end, limit, max_bytes) == memory.read_sent(
                begin, end, limit, max_bytes)
        assert reader.get_sent(1, seq) == memory.get_sent(1, seq)


def test_file_store_reads_messages_not_yet_flushed(tmp_path):
    """With a WriteBatch, read_sent writes the gathered records first."""
    batch = WriteBatch()
    store = filled(FileMessageStore(str(tmp_path), SID, batch=batch), [1, 2, 3])
    assert store.read_sent(1, 3, 10, 10**9) == [(1, b"%010d" % 1), (2, b"%010d" % 2),
                                                (3, b"%010d" % 3)]


_ops = st.lists(
    st.one_of(
        st.tuples(st.just("sender"), st.integers(1, 50)),
        st.tuples(st.just("sent"), st.integers(1, 50), st.binary(max_size=20)),
        st.tuples(st.just("reset"), st.integers(0, 10**18)),
    ),
    max_size=40,
)


@settings(max_examples=50, derandomize=True, deadline=None)
@given(
    ops=_ops,
    begin=st.integers(0, 55),
    end=st.integers(0, 55),
    max_messages=st.integers(1, 8),
    max_bytes=st.integers(1, 80),
)
def test_file_store_reads_what_the_memory_store_reads(
    tmp_path_factory, ops, begin, end, max_messages, max_bytes
):
    """Out-of-order and overwritten messages, resets: both stores give the same chunk, live
    and after a reload, and it is the start of get_sent's answer."""
    path = str(tmp_path_factory.mktemp("store"))
    disk = FileMessageStore(path, SID, now_ns=0)
    memory = MemoryMessageStore(now_ns=0)
    for op in ops:
        for store in (disk, memory):
            if op[0] == "sender":
                store.set_next_sender_seq(op[1])
            elif op[0] == "sent":
                store.save_sent(op[1], op[2])
            else:
                store.reset(op[1])
    expected = memory.read_sent(begin, end, max_messages, max_bytes)
    assert expected == memory.get_sent(begin, end)[: len(expected)]
    assert len(expected) <= max_messages
    assert sum(len(m) for _, m in expected[:-1]) < max_bytes or len(expected) <= 1
    for store in (disk, FileMessageStore(path, SID)):
        assert store.read_sent(begin, end, max_messages, max_bytes) == expected
