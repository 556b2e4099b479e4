"""FIX codec: framing across splits, garbled frames and resync, data fields, encoding."""

from __future__ import annotations

import pytest

from fixserver.codec import (
    STANDARD_DATA_TAGS,
    FixCodecError,
    FixMessage,
    FrameDecoder,
    GarbledMessage,
    checksum,
    encode,
    encode_body,
    frame_body,
    parse,
    parse_fields,
)

ORDER = [
    (35, "D"),
    (49, "CLIENT1"),
    (56, "EXCH"),
    (34, 12),
    (52, "20240101-12:00:00.123"),
    (11, "ORD-1"),
    (55, "BTC-PERP"),
    (54, "1"),
    (38, "1.5"),
    (40, "2"),
    (44, "42123.5"),
]
ORDER_RAW = encode(ORDER)
HEARTBEAT_RAW = encode([(35, "0"), (49, "CLIENT1"), (56, "EXCH"), (34, 13)])


def drain(decoder: FrameDecoder) -> list[FixMessage | GarbledMessage]:
    out: list[FixMessage | GarbledMessage] = []
    while True:
        item = decoder.next_message()
        if item is None:
            return out
        out.append(item)


def decode_chunks(chunks: list[bytes], max_message_size: int = 4096) -> list:
    decoder = FrameDecoder(max_message_size)
    out = []
    for chunk in chunks:
        decoder.feed(chunk)
        out.extend(drain(decoder))
    return out


def kinds(items: list) -> list[str]:
    return [type(item).__name__ for item in items]


def reframe(body: bytes, body_length: int | None = None, check: int | None = None) -> bytes:
    """A frame around ``body`` with optionally wrong BodyLength or CheckSum."""
    head = b"8=FIX.4.4\x019=%d\x01" % (len(body) if body_length is None else body_length)
    value = checksum(head + body) if check is None else check
    return head + body + b"10=%03d\x01" % value


def test_encode_sets_body_length_and_checksum():
    """encode adds 8, 9 (bytes after it up to the SOH before 10) and 10 (byte sum mod 256)."""
    raw = encode([(35, "0"), (49, "A"), (34, 1)])
    assert raw.startswith(b"8=FIX.4.4\x019=15\x0135=0\x01")
    body = raw[raw.index(b"35=") : raw.index(b"10=")]
    assert body == b"35=0\x0149=A\x0134=1\x01"
    assert raw.endswith(b"10=%03d\x01" % (sum(raw[: raw.index(b"10=")]) % 256))


def test_encode_parse_round_trip_keeps_wire_order_and_types():
    """str, int and bytes values encode and parse back as bytes, fields in wire order."""
    msg = parse(ORDER_RAW)
    assert msg.fields[:3] == [(8, b"FIX.4.4"), (9, msg.get(9)), (35, b"D")]
    assert [tag for tag, _ in msg.fields][2:-1] == [tag for tag, _ in ORDER]
    assert msg.get(34) == b"12"
    assert msg.get_int(34) == 12
    assert msg.get_str(55) == "BTC-PERP"
    assert msg.msg_type == b"D"
    assert msg.begin_string == b"FIX.4.4"
    assert 44 in msg and 95 not in msg and "44" not in msg
    assert msg.get(95) is None and msg.get(95, b"x") == b"x"
    assert msg.raw == ORDER_RAW


def test_encode_fast_path_equals_mixed_value_path():
    """All-bytes fields (fast path) encode exactly like str/int values."""
    as_bytes = [(tag, str(value).encode()) for tag, value in ORDER]
    assert encode(as_bytes) == ORDER_RAW
    assert encode(iter(as_bytes)) == ORDER_RAW
    assert encode_body(as_bytes) == encode_body(ORDER)


def test_encode_rejects_unsupported_value_type():
    """A float value is refused (prices are decimal strings at the edges, never floats)."""
    with pytest.raises(TypeError):
        encode([(35, "D"), (44, 1.5)])


def test_frame_body_wraps_a_pre_encoded_body():
    """frame_body(body) equals encode of the same fields, for any BeginString."""
    body = encode_body(ORDER)
    assert frame_body(body) == ORDER_RAW
    fixt = frame_body(body, b"FIXT.1.1")
    assert fixt.startswith(b"8=FIXT.1.1\x01")
    assert parse(fixt).get(35) == b"D"


def test_checksum_matches_plain_sum_for_long_and_binary_data():
    """checksum equals sum mod 256 for short, long, ASCII and non-ASCII inputs."""
    for data in (b"", b"a", bytes(range(256)) * 7, b"x" * 515, b"x" * 516, b"\xff" * 4099):
        assert checksum(data) == sum(data) % 256


def test_first_occurrence_wins_and_get_all_lists_repeats():
    """get returns the first of repeated tags (groups); get_all returns all in order."""
    raw = encode([(35, "V"), (146, 2), (55, "BTC-PERP"), (55, "ETH-PERP")])
    msg = parse(raw)
    assert msg.get(55) == b"BTC-PERP"
    assert msg.get_all(55) == [b"BTC-PERP", b"ETH-PERP"]
    assert len(msg) == 7


def test_value_containing_equals_sign_parses():
    """A value may contain '=' (the careful path takes it)."""
    msg = parse(encode([(35, "D"), (58, "a=b=c"), (11, "X")]))
    assert msg.get(58) == b"a=b=c"
    assert msg.get(11) == b"X"


def test_data_field_may_contain_soh_and_equals():
    """RawData (96) is read by RawDataLength (95), SOH and '=' included."""
    raw = encode([(35, "A"), (95, 7), (96, b"a\x01b=\x01cd"), (98, 0)])
    msg = parse(raw)
    assert msg.get(96) == b"a\x01b=\x01cd"
    assert msg.get(98) == b"0"
    assert [tag for tag, _ in msg.fields] == [8, 9, 35, 95, 96, 98, 10]
    [decoded] = decode_chunks([raw])
    assert isinstance(decoded, FixMessage) and decoded.get(96) == b"a\x01b=\x01cd"


def test_every_standard_data_pair_is_read_by_length():
    """Each standard length/data pair reads its data field by length."""
    for length_tag, data_tag in STANDARD_DATA_TAGS.items():
        msg = parse(encode([(35, "B"), (length_tag, 3), (data_tag, b"\x01=\x01")]))
        assert msg.get(data_tag) == b"\x01=\x01"


def test_data_field_length_mismatch_raises_and_is_garbled_in_stream():
    """A data field whose length is wrong is a codec error; in a stream it is garbled."""
    raw = encode([(35, "A"), (95, 5), (96, b"abc")])
    with pytest.raises(FixCodecError):
        parse(raw)
    [item] = decode_chunks([raw])
    assert isinstance(item, GarbledMessage) and "data field 96" in item.reason


@pytest.mark.parametrize(
    "raw",
    [
        b"8=FIX.4.4\x01x35=D\x01",
        b"8=FIX.4.4\x01abc=1\x01",
        b"8=FIX.4.4\x0135=D",
        b"8=FIX\x0195=x\x01",
    ],
)
def test_parse_rejects_malformed_fields(raw):
    """Fields without '=', non-numeric tags, no final SOH or a bad data length raise."""
    with pytest.raises(FixCodecError):
        parse(raw)


def test_zero_and_negative_tags_parse_as_quickfix_reads_them():
    """Tags 0 and -1 parse (the dictionary rejects them); '-' alone or '+1' do not."""
    msg = parse(reframe(b"35=0\x010=HI\x01-1=HO\x01-035=X\x01"))
    assert msg.fields[3:6] == [(0, b"HI"), (-1, b"HO"), (-35, b"X")]
    assert msg.get(-1) == b"HO" and msg.get(-35) == b"X"
    for tag in (b"-", b"+1", b"1-", b"--1"):
        with pytest.raises(FixCodecError, match="not a number"):
            parse(reframe(b"35=0\x01" + tag + b"=HI\x01"))


def test_tags_beyond_32_bits_are_malformed():
    """A tag outside the signed 32-bit range (or thousands of digits) is a codec error."""
    assert parse(reframe(b"35=0\x012147483647=x\x01")).fields[3] == (2147483647, b"x")
    assert parse(reframe(b"35=0\x01-2147483648=x\x01")).fields[3] == (-(2**31), b"x")
    for tag in (b"2147483648", b"-2147483649", b"9" * 5000, b"0" * 5000 + b"7"):
        if tag.endswith(b"7"):  # leading zeros are not digits of the number
            assert parse(reframe(b"35=0\x01" + tag + b"=x\x01")).fields[3] == (7, b"x")
            continue
        with pytest.raises(FixCodecError, match="out of range"):
            parse(reframe(b"35=0\x01" + tag + b"=x\x01"))


def test_negative_tag_in_a_stream_is_a_message_not_garbled():
    """A well-framed heartbeat carrying '-1=HI' comes out as a FixMessage with tag -1."""
    raw = reframe(b"35=0\x0134=4\x01-1=HI\x01")
    [item] = decode_chunks([raw])
    assert isinstance(item, FixMessage) and (-1, b"HI") in item.fields


def test_parse_fields_returns_int_tags():
    """parse_fields splits a body into (int, bytes) pairs."""
    assert parse_fields(b"35=0\x0134=1\x01") == [(35, b"0"), (34, b"1")]


def test_leading_zero_tag_is_parsed_by_number():
    """A tag written with a leading zero ('035') is still tag 35."""
    msg = parse(reframe(b"035=D\x0149=A\x01"))
    assert msg.get(35) == b"D"
    assert msg.fields[2] == (35, b"D")


def test_large_tag_numbers_are_parsed():
    """User-defined tags above the precomputed table (>= 10000) work."""
    msg = parse(encode([(35, "D"), (20001, "x"), (9999, "y")]))
    assert msg.get(20001) == b"x" and msg.get(9999) == b"y"
    assert msg.fields[3] == (20001, b"x")


def test_fix_message_built_from_fields_behaves_like_parsed():
    """FixMessage(fields) offers the same accessors and equals the parsed message."""
    parsed = parse(ORDER_RAW)
    built = FixMessage(list(parsed.fields), ORDER_RAW)
    assert built == parsed
    assert built.get(11) == b"ORD-1" and built.msg_type == b"D"
    assert "11=ORD-1" in repr(built)


def test_get_int_rejects_non_fix_integers():
    """get_int refuses values int() would take but FIX does not ('+1', ' 1', '1_0')."""
    msg = parse(reframe(b"35=0\x0134=+1\x0136=-5\x0137=1_0\x01"))
    with pytest.raises(ValueError):
        msg.get_int(34)
    with pytest.raises(ValueError):
        msg.get_int(37)
    assert msg.get_int(36) == -5
    assert msg.get_int(99, 7) == 7


def test_stream_of_messages_in_one_chunk():
    """Several messages fed at once come out in order."""
    items = decode_chunks([ORDER_RAW + HEARTBEAT_RAW + ORDER_RAW])
    assert [item.msg_type for item in items] == [b"D", b"0", b"D"]


def test_split_at_every_byte_boundary_decodes_identically():
    """A message fed one byte at a time, or split at any point, decodes the same."""
    stream = ORDER_RAW + HEARTBEAT_RAW
    whole = decode_chunks([stream])
    assert decode_chunks([bytes([b]) for b in stream]) == whole
    for cut in range(1, len(stream)):
        assert decode_chunks([stream[:cut], stream[cut:]]) == whole


def test_partial_message_waits_for_more_bytes():
    """A partial message yields None and is kept; the rest completes it."""
    decoder = FrameDecoder()
    decoder.feed(ORDER_RAW[:-1])
    assert decoder.next_message() is None
    assert decoder.next_message() is None
    assert decoder.buffered == len(ORDER_RAW) - 1
    decoder.feed(ORDER_RAW[-1:])
    assert decoder.next_message() == parse(ORDER_RAW)
    assert decoder.buffered == 0
    assert decoder.next_message() is None


def test_bad_checksum_is_garbled_then_next_message_decodes():
    """A wrong CheckSum yields GarbledMessage with the whole frame, then the good message."""
    bad = ORDER_RAW[:-4] + b"%03d\x01" % ((int(ORDER_RAW[-4:-1]) + 1) % 256)
    items = decode_chunks([bad + HEARTBEAT_RAW])
    assert kinds(items) == ["GarbledMessage", "_WireMessage"]
    assert items[0].raw == bad and "CheckSum (10)" in items[0].reason
    assert items[1].msg_type == b"0"


def test_checksum_out_of_range_is_garbled():
    """A CheckSum of 256-999 can never be right and is garbled, not a crash."""
    raw = reframe(b"35=0\x01", check=999)
    [item] = decode_chunks([raw])
    assert isinstance(item, GarbledMessage) and "CheckSum" in item.reason


def test_too_short_body_length_drops_the_frame_up_to_its_own_checksum():
    """A too-short BodyLength garbles the frame up to its own CheckSum; the next one survives."""
    body = b"35=0\x0149=A\x01"
    bad = reframe(body, body_length=len(body) - 3)
    items = decode_chunks([bad + HEARTBEAT_RAW])
    assert kinds(items) == ["GarbledMessage", "_WireMessage"]
    assert items[0].raw == bad and "BodyLength" in items[0].reason
    assert items[1] == parse(HEARTBEAT_RAW)


def test_too_long_body_length_swallows_the_next_message_as_quickfix_does():
    """A too-long BodyLength drops everything up to the next CheckSum, as QuickFIX's parser."""
    body = b"35=0\x0149=A\x01"
    bad = reframe(body, body_length=len(body) + 2)
    items = decode_chunks([bad + HEARTBEAT_RAW + ORDER_RAW])
    assert kinds(items) == ["GarbledMessage", "_WireMessage"]
    assert items[0].raw == bad + HEARTBEAT_RAW and "BodyLength" in items[0].reason
    assert items[1] == parse(ORDER_RAW)


def test_too_long_body_length_waits_for_a_checksum_then_drops():
    """With no CheckSum after the announced end yet, the decoder waits rather than guesses."""
    body = b"35=0\x0149=A\x01"
    bad = reframe(body, body_length=len(body) + 2)
    decoder = FrameDecoder()
    decoder.feed(bad + b"8=FIX.4.4\x019=5\x01")
    assert decoder.next_message() is None
    decoder.feed(b"35=0\x0110=000\x01" + HEARTBEAT_RAW)
    items = drain(decoder)
    assert kinds(items) == ["GarbledMessage", "_WireMessage"]
    assert items[1] == parse(HEARTBEAT_RAW)


def test_wrong_body_length_without_any_checksum_is_dropped_at_the_size_bound():
    """If no CheckSum ends a frame within max_message_size, it is dropped up to the next 8=."""
    bad = b"8=FIX.4.4\x019=5\x0135=0\x0149=" + b"A" * 200 + b"\x01"
    items = decode_chunks([bad + HEARTBEAT_RAW], max_message_size=128)
    assert kinds(items) == ["GarbledMessage", "_WireMessage"]
    assert items[0].raw == bad and items[1] == parse(HEARTBEAT_RAW)


def test_garbage_before_a_frame_is_reported_then_frame_decodes():
    """Junk before 8= is one GarbledMessage; the message after it decodes."""
    items = decode_chunks([b"hello\r\n" + ORDER_RAW])
    assert kinds(items) == ["GarbledMessage", "_WireMessage"]
    assert items[0].raw == b"hello\r\n"


def test_junk_ending_in_8_keeps_the_8_until_known():
    """A trailing '8' may start the next frame, so it is held back, not discarded."""
    decoder = FrameDecoder()
    decoder.feed(b"xx8")
    assert kinds(drain(decoder)) == ["GarbledMessage"]
    assert decoder.buffered == 1
    decoder.feed(b"8")  # "88": the first 8 was junk after all
    assert [g.raw for g in drain(decoder)] == [b"8"]
    decoder.feed(ORDER_RAW[1:])
    assert drain(decoder) == [parse(ORDER_RAW)]


def test_missing_body_length_field_is_garbled():
    """A frame whose second field is not 9= is dropped up to the next frame start."""
    items = decode_chunks([b"8=FIX.4.4\x0135=0\x0110=000\x01" + HEARTBEAT_RAW])
    assert kinds(items) == ["GarbledMessage", "_WireMessage"]
    assert "BodyLength (9)" in items[0].reason


def test_non_numeric_body_length_is_garbled():
    """9=abc is garbled at once rather than waited on."""
    decoder = FrameDecoder()
    decoder.feed(b"8=FIX.4.4\x019=1a")
    [item] = drain(decoder)
    assert isinstance(item, GarbledMessage) and "not a number" in item.reason


def test_unterminated_begin_string_is_garbled_after_a_bound():
    """8= without SOH is waited on briefly, then garbled once it is clearly too long."""
    decoder = FrameDecoder()
    decoder.feed(b"8=FIX.4.4")
    assert decoder.next_message() is None
    decoder.feed(b"x" * 40)
    item = decoder.next_message()
    assert isinstance(item, GarbledMessage) and "BeginString" in item.reason


def test_oversize_body_length_rejected_without_buffering():
    """A BodyLength beyond the maximum is garbled from the header alone."""
    decoder = FrameDecoder(max_message_size=1024)
    decoder.feed(b"8=FIX.4.4\x019=50000000\x0135=D\x01")
    item = decoder.next_message()
    assert isinstance(item, GarbledMessage) and "exceeds the maximum" in item.reason
    assert decoder.next_message() is None
    assert decoder.buffered == 0
    # The rest of the oversize message arrives and is dropped as junk, not buffered.
    decoder.feed(b"x" * 100_000)
    assert kinds(drain(decoder)) == ["GarbledMessage"]
    assert decoder.buffered == 0
    decoder.feed(HEARTBEAT_RAW)
    assert drain(decoder) == [parse(HEARTBEAT_RAW)]


def test_too_many_body_length_digits_is_garbled():
    """A BodyLength with more digits than any allowed size is garbled without waiting."""
    decoder = FrameDecoder()
    decoder.feed(b"8=FIX.4.4\x019=" + b"1" * 12)
    item = decoder.next_message()
    assert isinstance(item, GarbledMessage)


def test_message_exactly_at_maximum_size_is_accepted():
    """max_message_size is inclusive; one byte more is garbled."""
    size = len(ORDER_RAW)
    assert decode_chunks([ORDER_RAW], max_message_size=size) == [parse(ORDER_RAW)]
    items = decode_chunks([ORDER_RAW], max_message_size=size - 1)
    assert "exceeds the maximum" in items[0].reason
    assert kinds(items) == ["GarbledMessage"] * len(items)


def test_malformed_field_with_valid_checksum_is_garbled():
    """A correctly framed message with a non-numeric tag is garbled, not raised."""
    raw = reframe(b"35=0\x01ab=1\x01")
    [item] = decode_chunks([raw])
    assert isinstance(item, GarbledMessage) and item.raw == raw


def test_field_without_equals_is_not_misaligned_by_fast_path():
    """'5' (no '=') plus a value with '=' is garbled, not read as shifted tag/value pairs."""
    raw = reframe(b"35=0\x0158=a=1\x015\x01")
    [item] = decode_chunks([raw])
    assert isinstance(item, GarbledMessage)


def test_every_item_consumes_exactly_its_raw_bytes():
    """Concatenated raws of all results plus what is buffered equal the input stream."""
    bad = reframe(b"35=0\x01", check=1)
    stream = b"junk" + ORDER_RAW + bad + b"8=FIX.4.4\x01x" + HEARTBEAT_RAW + b"8=FIX.4.4\x019=5\x01"
    stream += ORDER_RAW + HEARTBEAT_RAW + b"tail8"
    decoder = FrameDecoder()
    decoder.feed(stream)
    items = drain(decoder)
    assert b"".join(item.raw for item in items) + b"8" == stream
    assert decoder.buffered == 1
    # The frame with 9=5 swallows the order behind it, up to the order's CheckSum (QuickFIX).
    assert [item.msg_type for item in items if isinstance(item, FixMessage)] == [b"D", b"0", b"0"]


def test_custom_data_tags_are_honoured():
    """A decoder given extra length/data pairs reads those by length too."""
    tags = {**STANDARD_DATA_TAGS, 5000: 5001}
    raw = encode([(35, "U1"), (5000, 3), (5001, b"a\x01b")])
    decoder = FrameDecoder(data_tags=tags)
    decoder.feed(raw)
    item = decoder.next_message()
    assert isinstance(item, FixMessage) and item.get(5001) == b"a\x01b"
    assert parse(raw, tags).get(5001) == b"a\x01b"
