"""Fuzz: random bytes and mutated valid messages never make the session core raise, and a
logged-on session still answers a TestRequest correctly afterwards (unless it closed)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixserver.session_events import ConnectionState
from tests.fixserver.session_helpers import Peer, ts

FUZZ = settings(
    max_examples=150,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

TEMPLATES = [
    b"8=FIX.4.4\x019=%d\x0135=0\x0134=%d\x0149=TW44\x0152=%s\x0156=ISLD\x01",
    b"8=FIX.4.4\x019=%d\x0135=D\x0134=%d\x0149=TW44\x0152=%s\x0156=ISLD\x0111=A\x0121=1\x01"
    b"40=1\x0154=1\x0155=X\x0160=20240102-12:00:00\x01",
    b"8=FIX.4.4\x019=%d\x0135=2\x0134=%d\x0149=TW44\x0152=%s\x0156=ISLD\x017=1\x0116=0\x01",
    b"8=FIX.4.4\x019=%d\x0135=4\x0134=%d\x0149=TW44\x0152=%s\x0156=ISLD\x0136=5\x01123=Y\x01",
]


def _logged_on() -> Peer:
    peer = Peer()
    peer.logon()
    peer.take_events()
    return peer


def _still_works(peer: Peer) -> None:
    """If the connection survived, a correctly numbered TestRequest gets its Heartbeat."""
    peer.received()
    peer.take_events()
    if peer.conn.state is not ConnectionState.ACTIVE:
        assert peer.conn.should_close or peer.conn.state is ConnectionState.LOGOUT_SENT
        return
    # Resynchronise framing (a partial frame may be pending) and sequence numbers.
    peer.conn._decoder = type(peer.conn._decoder)()
    peer.conn._queue.clear()
    peer.conn._resend_range = None
    expected = peer.session.store.next_target_seq()
    peer.send(b"1", [(112, b"ALIVE")], seq=expected)
    replies = [m for m in peer.received() if m.get(35) == b"0" and m.get(112) == b"ALIVE"]
    assert len(replies) == 1


@FUZZ
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_random_bytes_never_raise_and_session_keeps_working(chunks):
    """Arbitrary byte strings fed to a logged-on connection never raise."""
    peer = _logged_on()
    for chunk in chunks:
        peer.feed(chunk)
    _still_works(peer)


@FUZZ
@given(
    template=st.sampled_from(TEMPLATES),
    seq=st.integers(min_value=-3, max_value=12),
    edits=st.lists(
        st.tuples(st.integers(min_value=0, max_value=400), st.binary(min_size=0, max_size=4)),
        max_size=4,
    ),
    fix_checksum=st.booleans(),
)
def test_mutated_messages_never_raise_and_session_keeps_working(template, seq, edits, fix_checksum):
    """Valid messages with bytes replaced, inserted or removed never make the session raise."""
    peer = _logged_on()
    body = template % (0, seq, ts(peer.now))
    head_end = body.index(b"\x0135=") + 1
    raw = b"8=FIX.4.4\x019=%d\x01" % (len(body) - head_end) + body[head_end:]
    data = bytearray(raw)
    for position, replacement in edits:
        at = position % (len(data) + 1)
        data[at : at + len(replacement) // 2] = replacement
    if fix_checksum:
        data += b"10=%03d\x01" % (sum(data) % 256)
    else:
        data += b"10=000\x01"
    peer.feed(bytes(data))
    _still_works(peer)
