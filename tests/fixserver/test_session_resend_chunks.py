"""Session layer: a ResendRequest is answered a chunk at a time, exactly as in one piece, with
what the session numbers meanwhile held back until the resent range is out."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fixserver.codec import FixMessage, FrameDecoder
from fixserver.retransmit import GapFill, clamp_end, plan_retransmit
from fixserver.store import MemoryMessageStore
from tests.fixserver.session_helpers import Peer, summary, ts

BIG = 1 << 30


class CountingStore(MemoryMessageStore):
    """A memory store that records how the resend reads it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[int] = []  # messages returned by each read_sent
        self.whole_range_reads = 0

    def read_sent(self, begin, end, max_messages, max_bytes):
        out = super().read_sent(begin, end, max_messages, max_bytes)
        self.reads.append(len(out))
        return out

    def get_sent(self, begin, end):
        self.whole_range_reads += 1
        return super().get_sent(begin, end)


def logged_on(**settings: object) -> Peer:
    peer = Peer(**settings)
    peer.logon()
    peer.take_events()
    return peer


def history(peer: Peer, pattern: str) -> None:
    """After our Logon (1): ``a`` an application message, ``h`` an admin one (a Heartbeat)."""
    for i, kind in enumerate(pattern):
        if kind == "a":
            peer.session.send("8", [(11, f"A{i + 2}"), (37, b"O")], peer.now)
        else:
            peer.send(b"1", [(112, b"T")])  # answered with a Heartbeat
    peer.received()


def ask(peer: Peer, begin: int, end: int) -> None:
    peer.send(b"2", [(7, begin), (16, end)])


def decode(data: bytes) -> list[FixMessage]:
    decoder = FrameDecoder()
    decoder.feed(data)
    out = []
    while (item := decoder.next_message()) is not None:
        assert isinstance(item, FixMessage), item
        out.append(item)
    return out


def chunks(peer: Peer, max_messages: int, max_bytes: int = BIG) -> list[list[FixMessage]]:
    """Serve the resend to its end as the glue would; the messages of each chunk."""
    out = []
    while peer.conn.resend_pending:
        count = peer.conn.continue_resend(max_messages, max_bytes, peer.now)
        chunk = decode(peer.conn.data_to_send())
        assert len(chunk) == count
        out.append(chunk)
    return out


def shape(msgs: list[FixMessage]) -> list[tuple]:
    return [summary(m, 43, 36, 123, 11) for m in msgs]


def expected_shape(peer: Peer, begin: int, end: int) -> list[tuple]:
    """What ``plan_retransmit`` says the whole answer is (the one-piece reference)."""
    store = peer.session.store
    end = clamp_end(end, store.next_sender_seq())
    out: list[tuple] = []
    for step in plan_retransmit(store.get_sent(max(begin, 1), end), begin, end):
        if isinstance(step, GapFill):
            out.append(("4", step.seq, "Y", str(step.new_seq_no), "Y", None))
        else:
            msg = decode(step.raw)[0]
            out.append(("8", step.seq, "Y", None, None, msg.get_str(11)))
    return out


def test_request_only_starts_a_resend_and_writes_nothing_yet():
    """Answering is the glue's job, chunk by chunk: the ResendRequest alone writes nothing."""
    peer = logged_on()
    history(peer, "aaaa")
    ask(peer, 2, 0)
    assert peer.conn.resend_pending
    assert peer.conn.data_to_send() == b""


def test_chunks_hold_at_most_max_messages_and_stop_at_max_bytes():
    """Each chunk has at most max_messages; it stops once max_bytes is reached (never empty)."""
    peer = logged_on()
    history(peer, "a" * 20)
    ask(peer, 2, 0)
    served = chunks(peer, 6)
    assert [len(c) for c in served] == [6, 6, 6, 2]
    ask(peer, 2, 0)
    one_message = len(peer.session.store.get_sent(2, 2)[0][1])
    served = chunks(peer, 100, max_bytes=2 * one_message)  # resends are a little longer
    assert all(len(c) <= 2 for c in served) and sum(len(c) for c in served) == 20
    ask(peer, 2, 0)
    assert [len(c) for c in chunks(peer, 100, max_bytes=1)] == [1] * 20


def test_a_run_of_admin_messages_across_a_chunk_boundary_is_one_gap_fill():
    """The gap fill of a run goes right before the message ending it, in whichever chunk."""
    peer = logged_on()
    history(peer, "ahhhhhha")  # 2 app, 3-8 admin, 9 app
    ask(peer, 2, 0)
    served = chunks(peer, 1)
    assert [shape(c) for c in served] == [
        [("8", 2, "Y", None, None, "A2")],
        [("4", 3, "Y", "9", "Y", None)],
        [("8", 9, "Y", None, None, "A9")],
    ]


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    pattern=st.text(alphabet="ah", min_size=1, max_size=40),
    begin=st.integers(0, 45),
    end=st.integers(0, 45),
    max_messages=st.integers(1, 7),
    max_bytes=st.sampled_from([1, 150, 400, BIG]),
)
def test_chunked_answer_is_the_one_piece_answer(pattern, begin, end, max_messages, max_bytes):
    """Whatever the limits, the chunks together are plan_retransmit's answer, in order."""
    peer = logged_on()
    history(peer, pattern)
    reference = expected_shape(peer, begin, end)
    ask(peer, begin, end)
    served = [m for c in chunks(peer, max_messages, max_bytes) for m in c]
    assert shape(served) == reference
    for msg in served:
        assert msg.get(43) == b"Y" and msg.get(122) is not None


def test_store_is_read_a_chunk_at_a_time():
    """The range is read lazily: read_sent per chunk within its limit, never the whole range."""
    store = CountingStore()
    peer = Peer(session=None)
    peer.session.store = store
    peer.logon()
    history(peer, "a" * 50)
    store.reads.clear()
    ask(peer, 1, 0)
    chunks(peer, 8)
    assert store.whole_range_reads == 0
    assert max(store.reads) <= 8 and sum(store.reads) == 50


def test_new_messages_wait_behind_the_resend_in_order():
    """Application and admin messages numbered during a resend go out after its last message,
    in their own order, without PossDupFlag."""
    peer = logged_on()
    history(peer, "aaaaa")  # 2-6
    ask(peer, 2, 0)
    first = chunks_once(peer, 2)
    peer.session.send("8", [(11, b"NEW1")], peer.now)  # 8 (7 is the Heartbeat below)
    peer.send(b"1", [(112, b"PING")])
    peer.session.send("8", [(11, b"NEW2")], peer.now)
    rest = [m for c in chunks(peer, 2) for m in c]
    seqs = [m.get_int(34) for m in first + rest]
    assert seqs == [2, 3, 4, 5, 6, 7, 8, 9]
    assert [summary(m, 43, 112, 11) for m in rest[-3:]] == [
        ("8", 7, None, None, "NEW1"),
        ("0", 8, None, "PING", None),
        ("8", 9, None, None, "NEW2"),
    ]
    peer.session.send("8", [(11, b"AFTER")], peer.now)  # no resend running: out at once
    assert [summary(m) for m in decode(peer.conn.data_to_send())] == [("8", 10)]


def chunks_once(peer: Peer, max_messages: int) -> list[FixMessage]:
    peer.conn.continue_resend(max_messages, BIG, peer.now)
    return decode(peer.conn.data_to_send())


def test_held_messages_are_released_in_chunks_too():
    """What waited behind the resend goes out within the same chunk limits."""
    peer = logged_on()
    history(peer, "a")
    ask(peer, 2, 2)
    for i in range(5):
        peer.session.send("8", [(11, f"N{i}")], peer.now)
    assert peer.conn.held_output_bytes > 0
    served = chunks(peer, 2)
    assert [[m.get_int(34) for m in c] for c in served] == [[2, 3], [4, 5], [6, 7]]
    assert peer.conn.held_output_bytes == 0


def test_our_resend_request_for_a_gap_follows_the_resend():
    """A too-high ResendRequest is answered first, then our own ResendRequest goes out."""
    peer = logged_on()
    history(peer, "aa")  # 2, 3
    peer.send(b"2", [(7, 2), (16, 0)], seq=peer.seq + 3)  # the peer's 2-4 are missing
    out = [m for c in chunks(peer, 1) for m in c]
    assert [summary(m, 7, 16) for m in out] == [
        ("8", 2, None, None),
        ("8", 3, None, None),
        ("2", 4, "2", "0"),
    ]


def test_second_request_restarts_from_its_begin_through_the_later_end():
    """A ResendRequest while one runs restarts it at its BeginSeqNo; the first range's end
    still counts while part of it is unsent."""
    peer = logged_on()
    history(peer, "a" * 10)  # 2-11
    ask(peer, 2, 0)
    assert [m.get_int(34) for m in chunks_once(peer, 4)] == [2, 3, 4, 5]
    ask(peer, 3, 6)  # an impatient repeat for part of it
    rest = [m.get_int(34) for c in chunks(peer, 4) for m in c]
    assert rest == [3, 4, 5, 6, 7, 8, 9, 10, 11]


def test_second_request_after_the_range_does_not_resend_held_messages():
    """A request while held messages are still going out ends before the first held one (it
    was never sent, so it is not resent with PossDupFlag; it follows in order)."""
    peer = logged_on()
    history(peer, "aa")  # 2, 3
    ask(peer, 2, 0)
    for i in range(4):
        peer.session.send("8", [(11, f"N{i}")], peer.now)  # 4-7 held
    first = chunks_once(peer, 3)  # 2, 3 and held 4
    assert [m.get_int(34) for m in first] == [2, 3, 4]
    ask(peer, 3, 0)  # seq 4 went out already, 5-7 are still held
    rest = [m for c in chunks(peer, 10) for m in c]
    assert [(m.get_int(34), m.get_str(43)) for m in rest] == [
        (3, "Y"),
        (4, "Y"),
        (5, None),
        (6, None),
        (7, None),
    ]


def test_request_after_a_finished_resend_answers_its_own_range_only():
    """Once a resend has ended, a new request is answered for its own range only."""
    peer = logged_on()
    history(peer, "a" * 6)  # 2-7
    ask(peer, 2, 0)
    assert len(chunks_once(peer, 6)) == 6 and not peer.conn.resend_pending
    peer.session.send("8", [(11, b"N")], peer.now)  # no resend running: out at once
    assert [summary(m) for m in decode(peer.conn.data_to_send())] == [("8", 8)]
    ask(peer, 4, 5)
    rest = [m.get_int(34) for c in chunks(peer, 10) for m in c]
    assert rest == [4, 5]


def test_our_logout_ends_the_resend_and_what_waited_goes_out_first():
    """Our Logout stops the resend; the held messages precede it; nothing more is resent."""
    peer = logged_on()
    history(peer, "a" * 6)  # 2-7
    ask(peer, 2, 0)
    chunks_once(peer, 2)
    peer.session.send("8", [(11, b"N")], peer.now)  # 8
    peer.conn.initiate_logout("bye", peer.now)
    assert not peer.conn.resend_pending
    out = decode(peer.conn.data_to_send())
    assert [summary(m, 58) for m in out] == [("8", 8, None), ("5", 9, "bye")]


def test_peer_logout_during_a_resend_is_answered_and_closes():
    """The peer's Logout ends the resend: our Logout answers it and the connection closes."""
    peer = logged_on()
    history(peer, "a" * 6)
    ask(peer, 2, 0)
    chunks_once(peer, 2)
    peer.send(b"5")
    assert not peer.conn.resend_pending and peer.conn.should_close
    assert [summary(m) for m in decode(peer.conn.data_to_send())] == [("5", 8)]


def test_in_session_sequence_reset_ends_the_resend():
    """A Logon with ResetSeqNumFlag during a resend ends it before the store is reset."""
    peer = logged_on()
    history(peer, "a" * 6)
    ask(peer, 2, 0)
    chunks_once(peer, 2)
    peer.session.send("8", [(11, b"OLD")], peer.now)  # 8, held
    peer.seq = 1
    peer.send(b"A", [(98, 0), (108, 30), (141, b"Y")])
    assert not peer.conn.resend_pending
    out = decode(peer.conn.data_to_send())
    assert [summary(m, 141) for m in out] == [("8", 8, None), ("A", 1, "Y")]


def test_lost_connection_drops_the_resend_and_messages_stay_stored():
    """A connection lost mid-resend forgets it; what was held is in the store for the next
    ResendRequest (application messages) or gap filled (admin ones)."""
    peer = logged_on()
    history(peer, "aa")
    ask(peer, 2, 0)
    peer.session.send("8", [(11, b"LATER")], peer.now)  # 4, held
    peer.conn.connection_lost(peer.now)
    assert not peer.conn.resend_pending
    assert [s for s, _ in peer.session.store.get_sent(1, 10)] == [2, 3, 4]


def test_resend_chunk_uses_now_for_sending_time():
    """Each chunk is stamped when it is served: SendingTime is the chunk's time."""
    peer = logged_on()
    history(peer, "aa")
    ask(peer, 2, 0)
    first = chunks_once(peer, 1)
    peer.now += 3_000_000_000
    second = chunks_once(peer, 1)
    assert first[0].get(52) != second[0].get(52) == ts(peer.now)
