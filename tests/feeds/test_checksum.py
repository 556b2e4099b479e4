"""The order-book checksum is the documented CRC-32 over interleaved top-25 levels."""

from __future__ import annotations

import zlib

from feeds.checksum import book_checksum, checksum_string


def test_documented_example():
    """The spec's example string and CRC-32 are what the code computes."""
    bids = [("100.0", "1.000")]
    asks = [("100.5", "2.000"), ("101.0", "0.500")]
    assert checksum_string(bids, asks) == "100.0:1.000:100.5:2.000:101.0:0.500"
    assert book_checksum(bids, asks) == zlib.crc32(b"100.0:1.000:100.5:2.000:101.0:0.500")


def test_interleaves_and_stops_at_25_levels():
    """Bids and asks alternate, the longer side continues alone, only 25 per side count."""
    bids = [(f"{100 - i}.0", "1", 7) for i in range(30)]
    asks = [(f"{200 + i}.0", "2", 7) for i in range(3)]
    parts = checksum_string(bids, asks).split(":")
    assert parts[:8] == ["100.0", "1", "200.0", "2", "99.0", "1", "201.0", "2"]
    assert len(parts) == 2 * (25 + 3)
    assert parts[-2:] == ["76.0", "1"]


def test_empty_book_and_sensitivity():
    """An empty book checks to 0; any quantity change changes the checksum."""
    assert book_checksum([], []) == 0
    a = book_checksum([("1.0", "1.000")], [("2.0", "1.000")])
    b = book_checksum([("1.0", "1.001")], [("2.0", "1.000")])
    assert a != b and 0 <= a < 2**32
