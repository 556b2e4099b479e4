"""C codec accelerator: identical results to the pure-Python codec on any input, no leaks."""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fixserver import codec
from fixserver.codec import FixMessage, FrameDecoder, GarbledMessage

needs_accel = pytest.mark.skipif(
    not codec.ACCELERATED,
    reason="fixserver._codec_accel is not built (or FIXSERVER_PURE_CODEC is set)",
)

DIFF = settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@contextlib.contextmanager
def pure_codec() -> Iterator[None]:
    """Run encode/frame_body (and default FrameDecoders) on the pure-Python code."""
    saved = codec._codec_accel
    codec._codec_accel = None
    try:
        yield
    finally:
        codec._codec_accel = saved


# --- streams ---------------------------------------------------------------------------------

# Mostly canonical tags (the C fast path) and now and then one at the edges of it: data-length
# tags, the trailer's tag, leading zeros, 0, negatives, 5 digits, empty and non-numeric.
GOOD_TAGS = [b"35", b"49", b"56", b"34", b"1", b"11", b"55", b"9999", b"10"]
ODD_TAGS = [b"95", b"96", b"212", b"0", b"035", b"-1", b"10000", b"", b"x", b"4x"]
tags = st.sampled_from(GOOD_TAGS * 6 + ODD_TAGS)
odd_value_bytes = st.sampled_from([b"A", b"=", b"\x01", b"\xe9", b"8=", b"10=000\x01", b"3"])
clean_values = st.binary(max_size=6).filter(lambda v: b"\x01" not in v and b"=" not in v)
values = st.one_of(
    clean_values, clean_values, clean_values, st.lists(odd_value_bytes, max_size=4).map(b"".join)
)


def mostly(right: Any, *wrong: Any) -> Any:
    """A strategy that draws ``right`` nine times in ten, else one of ``wrong``."""
    return st.sampled_from([right] * 9 * len(wrong) + list(wrong))


@st.composite
def frames(draw) -> bytes:
    """A frame, mostly well-formed, else wrong in BeginString, BodyLength, CheckSum or fields."""
    begin = draw(mostly(b"FIX.4.4", b"", b"X" * 29, b"X" * 30, b"F=X", b"FIXT.1.1"))
    body = b"".join(
        b"%s=%s\x01" % (draw(tags), draw(values)) for _ in range(draw(st.integers(0, 6)))
    )
    if draw(mostly(False, True)):
        data = draw(st.binary(max_size=5))
        body += b"95=%d\x0196=%s\x01" % (len(data) + draw(mostly(0, 1, -1)), data)
    if draw(mostly(True, False)):
        body = b"35=D\x01" + body
    length = len(body) + draw(mostly(0, 1, -1, 7, -7, 10**8))
    width = draw(mostly(0, 2, 9, 10, 12))  # zero-padded to 9 digits is the most accepted
    length_field = b"%0*d" % (width, length) if length >= 0 else b"-1"
    head = b"8=%s\x019=%s\x01" % (begin, length_field)
    total = sum(head + body)
    declared = draw(mostly(total % 256, (total + 1) % 256, 256, 999))
    trailer = draw(
        mostly(b"10=%03d\x01" % declared, b"10=%d\x01" % declared, b"10=%03d" % declared)
    )
    return head + body + trailer


@st.composite
def streams(draw) -> bytes:
    """Frames with junk between them and bytes flipped, dropped or cut anywhere."""
    parts = []
    for frame in draw(st.lists(frames(), min_size=1, max_size=6)):
        action = draw(mostly("keep", "flip", "drop", "cut", "junk"))
        if action in ("flip", "drop", "cut") and frame:
            at = draw(st.integers(0, len(frame) - 1))
            if action == "flip":
                new = draw(st.sampled_from([b"\x01", b"=", b"8", b"9", b"1", b"0", b"\xff"]))
                frame = frame[:at] + new + frame[at + 1 :]
            elif action == "drop":
                frame = frame[:at] + frame[at + 1 :]
            else:
                frame = frame[:at]
        elif action == "junk":
            parts.append(
                draw(st.sampled_from([b"8", b"8=", b"\x0110=", b"x8=FIX\x019=9", b"\x01"]))
            )
        parts.append(frame)
    return b"".join(parts)


@st.composite
def chunkings(draw, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary points."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=6)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


def describe(item: FixMessage | GarbledMessage) -> tuple:
    """Everything observable about a decoded item."""
    if isinstance(item, GarbledMessage):
        return ("garbled", item.raw, item.reason)
    return (type(item).__name__, item.raw, item._tags, item._values, item.fields, item.get(35))


def decode(chunks: list[bytes], accelerated: bool, max_size: int) -> tuple[list[tuple], int]:
    """Descriptions of everything decoded from the chunks, and the bytes still buffered."""
    decoder = FrameDecoder(max_size, accelerated=accelerated)
    out = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (item := decoder.next_message()) is not None:
            out.append(describe(item))
            assert len(out) <= sum(map(len, chunks)), "decoder is looping"
    return out, decoder.buffered


@needs_accel
@DIFF
@given(st.data(), streams(), mostly(4096, 64, 40))
def test_accelerated_and_pure_decoders_agree_on_any_stream(data, stream, max_size):
    """Same messages, garbled frames (raw and reason) and buffer, in any chunking."""
    chunks = data.draw(chunkings(stream))
    assert decode(chunks, True, max_size) == decode(chunks, False, max_size)


@needs_accel
@DIFF
@given(st.data(), st.binary(max_size=200))
def test_accelerated_and_pure_decoders_agree_on_random_bytes(data, stream):
    """Arbitrary bytes (mostly junk) decode identically on both paths."""
    chunks = data.draw(chunkings(b"8=FIX.4.4\x019=" + stream))
    assert decode(chunks, True, 128) == decode(chunks, False, 128)


@needs_accel
def test_every_single_byte_change_of_a_frame_decodes_identically():
    """Each byte of a small frame replaced by every value, deleted or doubled: same results."""
    frame = codec.encode([(35, b"0"), (34, b"7")])
    after = codec.encode([(35, b"1")])
    variants = [frame[:at] + frame[at + 1 :] for at in range(len(frame))]
    variants += [frame[:at] + frame[at : at + 1] + frame[at:] for at in range(len(frame))]
    variants += [
        frame[:at] + bytes([new]) + frame[at + 1 :]
        for at in range(len(frame))
        for new in range(256)
    ]
    for variant in variants:
        stream = variant + after
        assert decode([stream], True, 4096) == decode([stream], False, 4096), variant


@needs_accel
def test_every_checksum_spelling_decodes_identically():
    """Trailers 10=xyz of digits and the bytes after them (':' is '9'+1 ...): same results."""
    frame = codec.encode([(35, b"0"), (34, b"7")])
    head = frame[:-4]
    nearly_digits = b"0123456789:;<=>?@ABC/ "
    for x in nearly_digits:
        for y in nearly_digits:
            for z in nearly_digits:
                stream = head + bytes([x, y, z, 1])
                assert decode([stream], True, 4096) == decode([stream], False, 4096), stream


@needs_accel
def test_accelerated_decoder_honours_custom_data_tags():
    """A custom data-length tag is left to the careful parser, which reads its data by length."""
    data_tags = {5001: 5002}
    raw = codec.encode([(35, b"U"), (5001, b"3"), (5002, b"a\x01=")])
    for accelerated in (True, False):
        decoder = FrameDecoder(data_tags=data_tags, accelerated=accelerated)
        decoder.feed(raw * 2)
        items = [decoder.next_message(), decoder.next_message(), decoder.next_message()]
        assert [item.get(5002) for item in items[:2]] == [b"a\x01=", b"a\x01="]
        assert items[2] is None


@needs_accel
def test_accelerated_decoder_shares_tag_bytes_and_values_are_copies():
    """Tags come from the canonical table (no allocation); raw and values equal the wire bytes."""
    raw = codec.encode([(35, b"D"), (55, b"BTC-PERP")])
    decoder = FrameDecoder(accelerated=True)
    decoder.feed(b"junk" + raw + raw)
    assert isinstance(decoder.next_message(), GarbledMessage)
    first, second = decoder.next_message(), decoder.next_message()
    assert first._tags[3] is codec._TAG_BYTES[55] and second._tags[3] is codec._TAG_BYTES[55]
    assert first.raw == second.raw == raw and first.get(55) == b"BTC-PERP"


@needs_accel
def test_next_frame_checks_its_arguments():
    """Wrong argument types or an offset outside the buffer raise instead of reading memory."""
    next_frame = codec._codec_accel.next_frame
    table = codec._fast_tag_table(codec._fast_tag_set(codec.STANDARD_DATA_TAGS))
    raw = codec.encode([(35, b"0")])
    assert next_frame(raw, 0, 4096, table)[0] == len(raw)
    assert next_frame(raw, len(raw), 4096, table) is None
    assert next_frame(raw, 0, len(raw) - 1, table) is None  # over max_message_size
    with pytest.raises(ValueError):
        next_frame(raw, len(raw) + 1, 4096, table)
    with pytest.raises(ValueError):
        next_frame(raw, -1, 4096, table)
    with pytest.raises(TypeError):
        next_frame(bytearray(raw), 0, 4096, table)
    with pytest.raises(TypeError):
        next_frame(raw, 0, 4096, table[:100])
    with pytest.raises(TypeError):
        next_frame(raw, 0, 4096)


# --- encoding --------------------------------------------------------------------------------

tag_values = st.one_of(
    st.integers(-(10**4), 10**4),
    st.integers(-(10**4), 10**4),
    st.integers(-(10**4), 10**4),
    st.sampled_from([0, 2**31, -(2**63), 2**63 - 1, 2**63, 10**30, True, "35", 1.5, None]),
)
field_values = st.one_of(
    st.binary(max_size=8),
    st.text(alphabet="abc\xe9\xff", max_size=6),  # latin-1: one byte per character
    st.text(alphabet="ab\u20ac\U0001f600", min_size=1, max_size=4),  # not latin-1
    st.text(max_size=4),
    st.integers(),
    st.sampled_from([True, 2.5, None, bytearray(b"ba"), -(2**63), 2**64]),
)


def outcome(call: Callable[[], Any]) -> tuple:
    """The value returned, or the type and text of the exception raised."""
    try:
        return ("ok", call())
    except Exception as exc:  # the point is to compare any failure
        return ("error", type(exc), str(exc))


@needs_accel
@DIFF
@given(
    st.lists(st.tuples(tag_values, field_values), max_size=6),
    st.sampled_from(["list", "list", "tuple", "generator", "lists", "triples"]),
    st.sampled_from([b"FIX.4.4", b"FIXT.1.1", b""]),
)
def test_accelerated_and_pure_encode_agree(fields, container, begin_string):
    """encode gives the same bytes (or the same exception) for any tags, values and container."""

    def make() -> Any:
        if container == "tuple":
            return tuple(fields)
        if container == "generator":
            return (field for field in fields)
        if container == "lists":
            return [list(field) for field in fields]
        if container == "triples":
            return [(*field, b"x") for field in fields]
        return list(fields)

    accelerated = outcome(lambda: codec.encode(make(), begin_string))
    with pure_codec():
        pure = outcome(lambda: codec.encode(make(), begin_string))
    assert accelerated == pure


@needs_accel
@DIFF
@given(st.one_of(st.binary(max_size=600), st.binary(max_size=20).map(bytearray)))
def test_accelerated_and_pure_frame_body_agree(body):
    """frame_body gives the same bytes for any body, long ones and bytearrays included."""
    accelerated = codec.frame_body(body, b"FIX.4.2")
    with pure_codec():
        assert accelerated == codec.frame_body(body, b"FIX.4.2")


@needs_accel
def test_encoded_messages_decode_on_both_paths():
    """A message encoded by the C path frames and checks out on the pure decoder."""
    raw = codec.encode([(35, "D"), (34, 7), (58, "caf\xe9"), (44, b"1.5")])
    assert raw.endswith(b"10=%03d\x01" % codec.checksum(raw[:-7]))
    decoder = FrameDecoder(accelerated=False)
    decoder.feed(raw)
    fields = decoder.next_message().fields
    assert fields[2:-1] == [(35, b"D"), (34, b"7"), (58, b"caf\xe9"), (44, b"1.5")]


# --- resources and switches ------------------------------------------------------------------


@needs_accel
def test_many_parses_and_encodes_leave_no_allocated_blocks_behind():
    """20,000 rounds of decoding (fast and careful) and encoding keep the block count flat."""
    good = [codec.encode([(35, b"D"), (34, i), (58, "t\xe9xt"), (55, b"BTC")]) for i in range(50)]
    bad = [raw[:-4] + b"999\x01" for raw in good[:5]]
    stream = b"".join(good) + b"".join(bad) + good[0][:30]

    def rounds(count: int) -> None:
        for _ in range(count):
            decoder = FrameDecoder(accelerated=True)
            decoder.feed(stream)
            while decoder.next_message() is not None:
                pass
            codec.encode([(35, b"0"), (34, 9), (58, "x")])
            codec.frame_body(b"35=0\x01")

    rounds(50)
    gc.collect()
    before = sys.getallocatedblocks()
    rounds(400)  # 400 x 56 frames + 800 encodes
    gc.collect()
    assert sys.getallocatedblocks() - before < 200


def test_accelerated_true_without_the_extension_is_an_error():
    """Asking for the C path where it is not loaded raises instead of silently running pure."""
    with pure_codec():
        with pytest.raises(ValueError, match="not available"):
            FrameDecoder(accelerated=True)
        assert FrameDecoder()._next_frame is None


def test_environment_variable_forces_the_pure_codec():
    """FIXSERVER_PURE_CODEC=1 makes a fresh interpreter run the pure-Python codec."""
    env = dict(os.environ, FIXSERVER_PURE_CODEC="1")
    result = subprocess.run(
        [sys.executable, "-c", "from fixserver import codec; print(codec.ACCELERATED)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
