"""The ClOrdIDs a trading day has used, at 8 bytes each.

ClOrdIDs are unique per session per trading day, so the exchange must remember every one a
day used: at 3,000 orders/s that is millions, and a Python ``set`` of strings costs about
100 bytes per ClOrdID (the string object and the set slot), per copy kept. :class:`UsedIds`
keeps a 64-bit fingerprint of ``(session, ClOrdID)`` instead (BLAKE2b, so the same in every
process and across restarts), in 65,536 buckets of ``array('Q')`` chosen by the
fingerprint's low bits: an insert appends, a lookup is one C-level scan of a bucket holding
1/65,536 of the day. Two different pairs share a fingerprint with probability about
n^2 / 2^65 (a few in a million for 10 million ClOrdIDs a day): such a pair would be refused as
a duplicate ClOrdID, never accepted twice.

Snapshots carry the fingerprints as bytes (:meth:`to_bytes`); :meth:`load` also takes the
``{session: [ClOrdID, ...]}`` form older snapshots hold.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping
from hashlib import blake2b
from typing import Any

BUCKET_BITS = 16
_MASK = (1 << BUCKET_BITS) - 1


def fingerprint(session_id: str, cl_ord_id: str) -> int:
    """The 64-bit fingerprint of one (session, ClOrdID) pair."""
    data = f"{session_id}\x00{cl_ord_id}".encode("utf-8", "surrogatepass")
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little")


class UsedIds:
    """A set of (session, ClOrdID) pairs, as fingerprints (see module docstring)."""

    __slots__ = ("_buckets", "_count")

    def __init__(self) -> None:
        self._buckets: dict[int, array] = {}
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def has(self, session_id: str, cl_ord_id: str) -> bool:
        return self.has_fingerprint(fingerprint(session_id, cl_ord_id))

    def has_fingerprint(self, fp: int) -> bool:
        bucket = self._buckets.get(fp & _MASK)
        return bucket is not None and fp in bucket

    def add_fingerprint(self, fp: int) -> bool:
        """:meth:`add` for a pair whose :func:`fingerprint` the caller has already."""
        return self._add(fp)

    def add(self, session_id: str, cl_ord_id: str) -> bool:
        """Remember the pair; False if it was already there."""
        return self._add(fingerprint(session_id, cl_ord_id))

    def _add(self, fp: int) -> bool:
        key = fp & _MASK
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = array("Q")
        elif fp in bucket:
            return False
        bucket.append(fp)
        self._count += 1
        return True

    def merge(self, other: UsedIds) -> None:
        """Add every pair of ``other``."""
        for bucket in other._buckets.values():
            for fp in bucket:
                self._add(fp)

    def to_bytes(self) -> bytes:
        """Every fingerprint, 8 bytes each (msgpack-able)."""
        out = array("Q")
        for key in sorted(self._buckets):
            out.extend(self._buckets[key])
        return out.tobytes()

    @classmethod
    def load(cls, saved: Any) -> UsedIds:
        """From :meth:`to_bytes`, or from the ``{session: [ClOrdID, ...]}`` of older
        snapshots, or from nothing (None)."""
        ids = cls()
        if isinstance(saved, (bytes, bytearray, memoryview)):
            fps = array("Q")
            fps.frombytes(bytes(saved))
            for fp in fps:
                ids._add(fp)
        elif isinstance(saved, Mapping):
            ids.add_all(saved)
        elif saved is not None:
            raise TypeError(f"not a saved set of ClOrdIDs: {type(saved).__name__}")
        return ids

    def add_all(self, by_session: Mapping[str, Iterable[str]]) -> None:
        """Add ``{session: [ClOrdID, ...]}``."""
        for session_id, cl_ord_ids in by_session.items():
            for cl_ord_id in cl_ord_ids:
                self.add(str(session_id), str(cl_ord_id))
