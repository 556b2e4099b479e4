"""Requests nested deeper than the limit are refused before decoding, JSON and msgpack alike."""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from feeds.channels import ErrorCode
from feeds.protocol import MAX_REQUEST_DEPTH, ClientSession, Reply
from feeds.request_decoder import (
    RequestTooDeep,
    decode_request,
    json_too_deep,
    msgpack_too_deep,
)

SYMBOLS = frozenset({"BTC-PERP"})

DEEP_JSON = [
    b"[" * 2040,  # the report: unclosed
    b"[" * 2040 + b"]" * 2040,  # valid JSON
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b'{"op":"ping","x":' + b"[" * 2040 + b"]" * 2040 + b"}",
    ("[" * 2040).encode("utf-16-le"),  # NULs are UTF-8 too: read as UTF-8, still deep
]
DEEP_MSGPACK = [
    b"\x91" * 2040 + b"\xc0",  # fixarray of one
    b"\x91" * 2040,  # truncated
    b"\x81\xa1a" * 2040 + b"\xc0",  # fixmap {"a": ...}
    b"\xdc\x00\x01" * 2040 + b"\x01",  # array 16
    b"\xdf\x00\x00\x00\x01\xc0" * 2040 + b"\xc0",  # map 32, the value nests
    msgpack.packb({"op": "ping", "x": [[[[[[[[[[]]]]]]]]]]}),
]


def depth(obj):
    """How many lists/dicts are open at the deepest point of ``obj``."""
    if isinstance(obj, list):
        return 1 + max((depth(v) for v in obj), default=0)
    if isinstance(obj, dict):
        return 1 + max((depth(v) for v in obj.values()), default=0)
    return 0


@pytest.mark.parametrize("data", DEEP_JSON)
def test_deep_json_gets_one_bad_request_error(data):
    """Deep JSON text gets one BAD_REQUEST error naming the limit, never a RecursionError."""
    with pytest.raises(RequestTooDeep):
        decode_request(data, False, MAX_REQUEST_DEPTH)
    actions = ClientSession(SYMBOLS).handle(data, False)
    assert len(actions) == 1 and type(actions[0]) is Reply
    p = actions[0].payload
    assert p["event"] == "error" and p["code"] == ErrorCode.BAD_REQUEST, p
    assert p["message"] == f"request nests deeper than {MAX_REQUEST_DEPTH} levels"


@pytest.mark.parametrize("data", DEEP_MSGPACK)
def test_deep_msgpack_gets_one_bad_request_error(data):
    """Deep msgpack gets the same BAD_REQUEST error (checked before the unpacker runs)."""
    with pytest.raises(RequestTooDeep):
        decode_request(data, True, MAX_REQUEST_DEPTH)
    actions = ClientSession(SYMBOLS).handle(data, True)
    assert len(actions) == 1
    assert actions[0].payload["code"] == ErrorCode.BAD_REQUEST


def test_brackets_inside_strings_do_not_count():
    """Brackets in string literals (escaped quotes included) and in msgpack str/bin are data."""
    s = ClientSession(SYMBOLS)
    for request_id in ("[" * 500, '\\"[{' * 200, '"' + "{" * 300):
        text = json.dumps({"op": "ping", "id": request_id})
        assert json.loads(text)["id"] == request_id
        assert s.handle(text.encode(), False) == [Reply({"event": "pong", "id": request_id})]
    packed = msgpack.packb({"op": "ping", "id": "\x91" * 300, "pad": b"\x91\xdf" * 300})
    assert s.handle(packed, True) == [Reply({"event": "pong", "id": "\x91" * 300})]


def test_limit_is_inclusive():
    """Exactly the limit decodes; one level more is refused."""
    for n in (MAX_REQUEST_DEPTH, MAX_REQUEST_DEPTH + 1):
        obj: list = []
        for _ in range(n - 1):
            obj = [obj]
        assert depth(obj) == n
        for data, binary in ((json.dumps(obj).encode(), False), (msgpack.packb(obj), True)):
            if n <= MAX_REQUEST_DEPTH:
                assert decode_request(data, binary, MAX_REQUEST_DEPTH) == obj
            else:
                with pytest.raises(RequestTooDeep):
                    decode_request(data, binary, MAX_REQUEST_DEPTH)


def test_text_frames_are_read_as_utf8_only():
    """Text is UTF-8 (RFC 6455): no guessing UTF-16 from NULs, which the scan could not follow."""
    s = ClientSession(SYMBOLS)
    # in UTF-16 a character may hold a 0x22 byte ('"' to a byte scan) inside a string
    hidden = ('"\u0122"' + "[" * 2040 + '"').encode("utf-16-le")
    for data in (hidden, '{"op":"ping"}'.encode("utf-16")):
        actions = s.handle(data, False)
        assert [a.payload["code"] for a in actions] == [ErrorCode.BAD_JSON], data[:20]


def test_malformed_input_is_still_bad_json():
    """Undecodable input that is not deep keeps its BAD_JSON error (code 1)."""
    s = ClientSession(SYMBOLS)
    for data, binary in ((b"{nope", False), (b"\xff\xfe", False), (b"\xc1", True),
                         (b"\xdc\x00", True), (b"\x92\x01", True), (b"\xd9\x10ab", True)):
        actions = s.handle(data, binary)
        assert [a.payload["code"] for a in actions] == [ErrorCode.BAD_JSON], data


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=5) | st.binary(max_size=5),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=30,
)


@given(values, st.integers(0, 6))
def test_scans_measure_the_exact_depth(obj, limit):
    """On any encodable value both scans say 'too deep' exactly when its depth passes the limit."""
    assert msgpack_too_deep(msgpack.packb(obj, use_bin_type=True), limit) == (depth(obj) > limit)
    try:
        text = json.dumps(obj)
    except TypeError:  # bytes somewhere inside: not JSON
        return
    assert json_too_deep(text, limit) == (depth(obj) > limit)
