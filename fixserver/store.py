"""FIX message store: the next sequence numbers, the sent messages kept for resend, and the
nonces of signed logons already accepted (``fixserver.logon_auth``; a reset keeps them).

The session core talks to a store synchronously; implementations keep their state in memory
and make it durable in their own way (``fixserver.filestore.FileMessageStore`` appends each
change to a file and fsyncs off the reactor thread). ``MemoryMessageStore`` is the reference
implementation used by the session's unit tests.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Sequence
from typing import Callable, Protocol


class MessageStore(Protocol):
    """What a session needs from its store."""

    def next_sender_seq(self) -> int: ...

    def next_target_seq(self) -> int: ...

    def set_next_sender_seq(self, seq: int) -> None: ...

    def set_next_target_seq(self, seq: int) -> None: ...

    def save_sent(self, seq: int, raw: bytes) -> None:
        """Keep an application message we sent (for ResendRequest); also advances
        next_sender_seq past ``seq``."""

    def get_sent(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        """The stored messages with begin <= seq <= end, in order (gaps where none was kept)."""

    def read_sent(
        self, begin: int, end: int, max_messages: int, max_bytes: int
    ) -> list[tuple[int, bytes]]:
        """The first of ``get_sent(begin, end)``: at most ``max_messages`` of them, and no
        more once they add up to ``max_bytes`` (always at least one if there is one). A
        resend reads its range this way, one chunk at a time (``fixserver.retransmit``)."""

    def reset(self, now_ns: int) -> None:
        """Both sequence numbers back to 1, sent messages dropped, creation time = now."""

    def creation_time_ns(self) -> int: ...

    def spend_nonce(self, nonce: bytes, accepted_ns: int, forget_before_ns: int) -> None:
        """Keep a signed Logon's nonce as spent (as durably as the sequence numbers); those
        accepted before ``forget_before_ns`` need not be kept any more."""

    def spent_nonces(self) -> dict[bytes, int]:
        """The spent nonces kept: nonce -> time accepted."""


def index_sent(seqs: list[int], seq: int) -> None:
    """Add a newly kept ``seq`` to the sorted list of kept sequence numbers (an append,
    except after the sender sequence number was set back)."""
    if not seqs or seq > seqs[-1]:
        seqs.append(seq)
    else:
        insort(seqs, seq)


def seqs_in_range(seqs: Sequence[int], begin: int, end: int) -> list[int]:
    """The kept sequence numbers in ``begin..end`` (``seqs`` sorted: a list or an array)."""
    return list(seqs[bisect_left(seqs, begin) : bisect_right(seqs, end)])


def first_seqs(
    seqs: Sequence[int],
    size_of: Callable[[int], int],
    begin: int,
    end: int,
    max_messages: int,
    max_bytes: int,
) -> list[int]:
    """The first kept sequence numbers from ``begin`` within the limits of ``read_sent``
    (``size_of`` gives a kept message's length)."""
    start = bisect_left(seqs, begin)
    stop = min(bisect_right(seqs, end), start + max(max_messages, 1))
    chosen: list[int] = []
    total = 0
    for index in range(start, stop):
        seq = seqs[index]
        if chosen and total >= max_bytes:
            break
        chosen.append(seq)
        total += size_of(seq)
    return chosen


class MemoryMessageStore:
    """An in-memory store (lost with the process)."""

    def __init__(self, now_ns: int = 0) -> None:
        self._next_sender = 1
        self._next_target = 1
        self._sent: dict[int, bytes] = {}
        self._seqs: list[int] = []  # the keys of _sent, sorted
        self._created = now_ns
        self._nonces: dict[bytes, int] = {}

    def next_sender_seq(self) -> int:
        return self._next_sender

    def next_target_seq(self) -> int:
        return self._next_target

    def set_next_sender_seq(self, seq: int) -> None:
        self._next_sender = seq

    def set_next_target_seq(self, seq: int) -> None:
        self._next_target = seq

    def save_sent(self, seq: int, raw: bytes) -> None:
        if seq not in self._sent:
            index_sent(self._seqs, seq)
        self._sent[seq] = raw
        if seq >= self._next_sender:
            self._next_sender = seq + 1

    def get_sent(self, begin: int, end: int) -> list[tuple[int, bytes]]:
        sent = self._sent
        return [(s, sent[s]) for s in seqs_in_range(self._seqs, begin, end)]

    def read_sent(
        self, begin: int, end: int, max_messages: int, max_bytes: int
    ) -> list[tuple[int, bytes]]:
        sent = self._sent
        chosen = first_seqs(
            self._seqs, lambda s: len(sent[s]), begin, end, max_messages, max_bytes
        )
        return [(s, sent[s]) for s in chosen]

    def reset(self, now_ns: int) -> None:
        self._next_sender = 1
        self._next_target = 1
        self._sent.clear()
        self._seqs.clear()
        self._created = now_ns

    def creation_time_ns(self) -> int:
        return self._created

    def spend_nonce(self, nonce: bytes, accepted_ns: int, forget_before_ns: int) -> None:
        nonces = self._nonces
        for old in [n for n, t in nonces.items() if t < forget_before_ns]:
            del nonces[old]
        nonces[nonce] = accepted_ns

    def spent_nonces(self) -> dict[bytes, int]:
        return dict(self._nonces)
