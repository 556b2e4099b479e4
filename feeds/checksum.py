"""The order-book checksum a client uses to verify its copy (OKX/Kraken style).

Take the top ``CHECKSUM_LEVELS`` (25) bids and asks of the book as the client holds it
(for a depth-5 channel that is the top 5), best first, as the decimal strings sent on the
wire. Interleave them ``bid1, ask1, bid2, ask2, ...`` as ``price:qty`` pairs; when one side
runs out, the rest of the other follows alone. Join everything with ``:`` and take the
unsigned CRC-32 (zlib, IEEE polynomial) of its ASCII bytes. An empty book checks to 0.

Example: bids [("100.0", "1.000")], asks [("100.5", "2.000"), ("101.0", "0.500")] ->
``crc32(b"100.0:1.000:100.5:2.000:101.0:0.500")``.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

CHECKSUM_LEVELS = 25


def checksum_string(bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> str:
    """The string the checksum is taken over (levels are (price, qty, ...) strings)."""
    parts: list[str] = []
    nb = min(len(bids), CHECKSUM_LEVELS)
    na = min(len(asks), CHECKSUM_LEVELS)
    for i in range(max(nb, na)):
        if i < nb:
            parts.append(bids[i][0])
            parts.append(bids[i][1])
        if i < na:
            parts.append(asks[i][0])
            parts.append(asks[i][1])
    return ":".join(parts)


def book_checksum(bids: Sequence[Sequence[str]], asks: Sequence[Sequence[str]]) -> int:
    """Unsigned CRC-32 of :func:`checksum_string`."""
    return zlib.crc32(checksum_string(bids, asks).encode("ascii"))
