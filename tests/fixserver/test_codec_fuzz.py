"""FIX codec fuzz: any bytes in any chunking decode without raising, losing or inventing data."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixserver.codec import (
    STANDARD_DATA_TAGS,
    FixMessage,
    FrameDecoder,
    GarbledMessage,
    encode,
    parse,
)

FUZZ = settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
MAX_SIZE = 512

plain_value = st.binary(min_size=1, max_size=12).filter(lambda v: b"\x01" not in v)
plain_field = st.tuples(st.sampled_from([1, 11, 38, 44, 55, 58, 9999, 20001]), plain_value)
data_field = st.binary(max_size=10).map(lambda data: [(95, len(data)), (96, data)])


@st.composite
def valid_messages(draw) -> bytes:
    """An encoded message of plain fields with an optional RawData pair."""
    fields: list = [(35, draw(st.sampled_from(["0", "D", "8", "AE"])))]
    fields += draw(st.lists(plain_field, max_size=6))
    if draw(st.booleans()):
        fields += draw(data_field)
    return encode(fields)


@st.composite
def chunkings(draw, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary points."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=8)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def decode(chunks: list[bytes], max_size: int = MAX_SIZE) -> tuple[list, int]:
    """Everything the decoder yields for the chunks, and what it still buffers.

    Fails if the decoder raises or yields more items than there are bytes (a loop).
    """
    decoder = FrameDecoder(max_size)
    total = sum(len(chunk) for chunk in chunks)
    items: list = []
    for chunk in chunks:
        decoder.feed(chunk)
        while True:
            item = decoder.next_message()
            if item is None:
                break
            assert isinstance(item, (FixMessage, GarbledMessage))
            assert item.raw, "every item consumes at least one byte"
            items.append(item)
            assert len(items) <= total, "decoder is looping"
    return items, decoder.buffered


def messages(items: list) -> list[bytes]:
    return [item.raw for item in items if isinstance(item, FixMessage)]


@FUZZ
@given(st.data(), st.binary(max_size=300))
def test_any_bytes_any_chunking_never_raises_and_conserves_bytes(data, stream):
    """Random bytes: only FixMessage/GarbledMessage/None, and raws + buffer == input."""
    chunks = data.draw(chunkings(stream))
    items, buffered = decode(chunks)
    consumed = b"".join(item.raw for item in items)
    assert consumed == stream[: len(consumed)]
    assert len(consumed) + buffered == len(stream)


@st.composite
def mangled_streams(draw) -> bytes:
    """Valid messages with junk, truncations and flipped bytes between and inside them."""
    parts = []
    for raw in draw(st.lists(valid_messages(), min_size=1, max_size=4)):
        action = draw(st.sampled_from(["keep", "keep", "flip", "cut", "junk"]))
        if action == "flip":
            at = draw(st.integers(0, len(raw) - 1))
            raw = raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
        elif action == "cut":
            raw = raw[: draw(st.integers(0, len(raw) - 1))]
        elif action == "junk":
            parts.append(draw(st.sampled_from([b"8", b"8=", b"\x019=", b"x8=FIX\x019=9"])))
        parts.append(raw)
    return b"".join(parts)


@FUZZ
@given(st.data(), mangled_streams())
def test_chunking_does_not_change_what_is_decoded(data, stream):
    """The same stream split differently gives the same messages and consumes the same bytes."""
    whole_items, whole_buffered = decode([stream])
    items, buffered = decode(data.draw(chunkings(stream)))
    assert messages(items) == messages(whole_items)
    assert b"".join(i.raw for i in items) == b"".join(i.raw for i in whole_items)
    assert buffered == whole_buffered


@FUZZ
@given(mangled_streams())
def test_fast_path_agrees_with_careful_path(stream):
    """The fast path returns exactly what the step-by-step framing rules return."""
    fast, _ = decode([stream])
    careful = FrameDecoder(MAX_SIZE)
    careful.feed(stream)
    careful._absorb_pending()
    slow = []
    while (item := careful._next_careful()) is not None:
        slow.append(item)
    assert [type(i) for i in fast] == [type(i) for i in slow]
    assert [i.raw for i in fast] == [i.raw for i in slow]
    assert [i.fields for i in fast if isinstance(i, FixMessage)] == [
        i.fields for i in slow if isinstance(i, FixMessage)
    ]


junk = st.binary(max_size=40).filter(lambda j: b"8=" not in j)


@FUZZ
@given(st.data(), st.lists(st.tuples(junk, valid_messages()), min_size=1, max_size=4), junk)
def test_valid_messages_embedded_in_junk_are_recovered(data, pieces, tail):
    """Junk (without '8=') around valid messages never hides one: all come out, in order."""
    stream = b"".join(j + raw for j, raw in pieces) + tail
    items, _ = decode(data.draw(chunkings(stream)))
    assert messages(items) == [raw for _, raw in pieces]
    for item, (_, raw) in zip([i for i in items if isinstance(i, FixMessage)], pieces):
        assert item == parse(raw, STANDARD_DATA_TAGS)
