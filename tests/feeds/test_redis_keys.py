"""Redis key names, level fields, meta and envelope encodings round-trip exactly."""

from __future__ import annotations

import pytest

from feeds.encoding import WireFormat
from feeds.redis_keys import (
    BATCH,
    SYNC,
    VERSION,
    Meta,
    RedisKeys,
    StoredLevel,
    is_zero_qty,
    level_field,
    level_value,
    meta_mapping,
    pack_envelope,
    parse_book_hash,
    parse_meta,
    unpack_envelope,
)


def test_key_names_live_under_the_prefix():
    """Every key and the channel start with the prefix; symbols keep their spelling."""
    keys = RedisKeys("x1")
    assert keys.meta == "x1:meta" and keys.updates == "x1:updates"
    assert keys.book("BTC-PERP") == "x1:book:BTC-PERP"
    assert keys.symbol_keys("ETH-PERP") == [
        "x1:book:ETH-PERP", "x1:top:ETH-PERP", "x1:ticker:ETH-PERP", "x1:kline:ETH-PERP",
        "x1:mark:ETH-PERP", "x1:liquidations:ETH-PERP"]
    assert RedisKeys().meta == "md:meta"


@pytest.mark.parametrize("qty,zero", [
    ("0", True), ("0.000", True), ("0.0", True), ("10", False), ("100.000", False),
    ("0.001", False), ("5", False), ("1.0", False),
])
def test_is_zero_qty(qty, zero):
    """Only quantities with no non-zero digit count as a removed level."""
    assert is_zero_qty(qty) is zero


def test_book_hash_round_trip():
    """Level fields and id fields of a book hash parse back to what was written."""
    stored = {
        level_field(True, "60000.5").encode(): level_value("1.250", 3).encode(),
        level_field(False, "60001.0").encode(): level_value("0.500", 1).encode(),
        b"u": b"42", b"u:5": b"40", b"u:20": b"41", b"ts": b"1700000000000000000",
    }
    ids, bids, asks = parse_book_hash(stored)
    assert bids == [StoredLevel("60000.5", "1.250", 3)]
    assert asks == [StoredLevel("60001.0", "0.500", 1)]
    assert ids == {b"u": 42, b"u:5": 40, b"u:20": 41, b"ts": 1_700_000_000_000_000_000}


def test_meta_round_trip_and_missing_meta():
    """The meta hash parses back; an empty or partial one is None (no state yet)."""
    fields = meta_mapping(7, 99, WireFormat.JSON, ["BTC-PERP", "ETH-PERP"])
    raw = {k.encode(): v.encode() for k, v in fields.items()}
    assert parse_meta(raw) == Meta(VERSION, 7, 99, WireFormat.JSON, ("BTC-PERP", "ETH-PERP"))
    assert parse_meta({}) is None
    del raw[b"epoch"]
    assert parse_meta(raw) is None


def test_envelope_round_trip_keeps_payload_bytes():
    """An envelope carries the payload bytes unchanged, with epoch, seq, kind and format."""
    items = [("trades@BTC-PERP", "trades", b"\x81\xa1a\x01"), ("ticker@BTC-PERP", "ticker", b"{}")]
    env = unpack_envelope(pack_envelope(5, 12, BATCH, WireFormat.MSGPACK, items))
    assert (env.version, env.epoch, env.seq, env.kind, env.format) == (
        VERSION, 5, 12, BATCH, WireFormat.MSGPACK)
    assert env.messages == items
    sync = unpack_envelope(pack_envelope(5, 13, SYNC, WireFormat.JSON, []))
    assert sync.kind == SYNC and sync.messages == []


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x93\x01\x02\x03", b"not msgpack at all"])
def test_unpack_envelope_rejects_garbage(data):
    """Anything that is not an envelope raises ValueError."""
    with pytest.raises(ValueError):
        unpack_envelope(data)
