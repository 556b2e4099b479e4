"""Answering a ResendRequest: which stored messages go out again, where gap fills go, and how
the answer is served a chunk at a time.

Only application messages are kept in the store; admin messages (Logon, Heartbeat, Reject...)
leave holes. Every run of holes becomes one SequenceReset-GapFill whose MsgSeqNum is the first
hole and whose NewSeqNo is the next message that will be resent (or one past the end).

Theory of operation (incremental resend)
----------------------------------------
A ``ResendJob`` is one ResendRequest being answered. It does not read its whole range at
once: ``next_chunk`` reads the next few stored messages (``MessageStore.read_sent``, bounded
in messages and bytes) from ``cursor`` on, writes a gap fill before a message whenever holes
lie between the cursor and it, and advances the cursor. The gap fill of a run of holes is
written just before the message that ends the run, so the chunks together are exactly what
``plan_retransmit`` gives for the whole range, whatever the chunk limits. Messages read but
not written within a chunk's limits wait in ``_lookahead`` for the next one.

Messages the session numbers while the job runs (new application messages, heartbeats, our
own ResendRequest...) have higher sequence numbers than the resent range, and FIX wants the
range first: the connection hands them to ``hold`` and they go out, in order, after the
range (``next_chunk`` releases them within the same limits). ``finished`` is True once both
are done.

A second ResendRequest while a job runs restarts it from the new BeginSeqNo (``restart``),
through the later of the two EndSeqNos while part of the first range is still unsent: the
peer's latest request says what it lacks, and nothing of the first range is dropped. The
EndSeqNo is never past the last message sent before the held ones.
"""

from __future__ import annotations

from collections import deque
from typing import Union

import attr

from fixserver.admin_messages import HeaderBuilder, rewrite_for_resend
from fixserver.store import MessageStore
from fixserver.timeutil import format_utc_timestamp


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Resend:
    seq: int
    raw: bytes


@attr.s(frozen=True, slots=True, auto_attribs=True)
class GapFill:
    seq: int
    new_seq_no: int


RetransmitStep = Union[Resend, GapFill]


def clamp_end(end_seq_no: int, next_sender_seq: int) -> int:
    """EndSeqNo 0 means "everything"; beyond what we sent means up to our last message."""
    last_sent = next_sender_seq - 1
    if end_seq_no == 0 or end_seq_no > last_sent:
        return last_sent
    return end_seq_no


def plan_retransmit(stored: list[tuple[int, bytes]], begin: int, end: int) -> list[RetransmitStep]:
    """Steps answering a request for ``begin..end`` (already clamped) given the stored
    application messages in that range, in sequence order."""
    steps: list[RetransmitStep] = []
    if begin < 1:
        begin = 1
    cursor = begin
    for seq, raw in stored:
        if seq < cursor or seq > end:
            continue
        if seq > cursor:
            steps.append(GapFill(cursor, seq))
        steps.append(Resend(seq, raw))
        cursor = seq + 1
    if cursor <= end:
        steps.append(GapFill(cursor, end + 1))
    return steps


def encode_gap_fill(header: HeaderBuilder, gap: GapFill, sending_time: bytes) -> bytes:
    """A SequenceReset-GapFill (PossDupFlag=Y, OrigSendingTime = SendingTime, as QuickFIX)."""
    return header.encode(
        b"4",
        gap.seq,
        sending_time,
        [(36, gap.new_seq_no), (123, b"Y")],
        header=[(43, b"Y"), (122, sending_time)],
    )


class ResendJob:
    """One ResendRequest being answered, a chunk at a time (see the module docstring)."""

    __slots__ = ("_lookahead", "cursor", "end", "held", "held_bytes")

    def __init__(self, begin: int, end: int) -> None:
        #: the next sequence number to resend or gap fill; past ``end`` when the range is done
        self.cursor = max(begin, 1)
        self.end = end
        #: messages numbered after the range, waiting for it (each one whole message)
        self.held: deque[bytes] = deque()
        self.held_bytes = 0
        self._lookahead: deque[tuple[int, bytes]] = deque()

    @property
    def range_done(self) -> bool:
        return self.cursor > self.end

    @property
    def finished(self) -> bool:
        """The range is resent and the held messages are out."""
        return self.cursor > self.end and not self.held

    def hold(self, raw: bytes) -> None:
        self.held.append(raw)
        self.held_bytes += len(raw)

    def restart(self, begin: int, end: int) -> None:
        """A new ResendRequest for ``begin..end`` (clamped) while this one runs."""
        if not self.range_done:
            end = max(end, self.end)
        self.cursor = max(begin, 1)
        self.end = end
        self._lookahead.clear()

    def next_chunk(
        self,
        store: MessageStore,
        header: HeaderBuilder,
        max_messages: int,
        max_bytes: int,
        now_ns: int,
    ) -> tuple[bytes, int]:
        """The next messages to write (resends, gap fills, then held ones): at most
        ``max_messages``, and no more once they reach ``max_bytes`` (at least one). Returns
        the bytes and how many messages they are."""
        max_messages = max(max_messages, 1)
        out: list[bytes] = []
        size = 0
        sending_time = format_utc_timestamp(now_ns)
        cursor = self.cursor
        end = self.end
        pending = self._lookahead
        while cursor <= end and len(out) < max_messages and size < max_bytes:
            if not pending:
                pending.extend(
                    store.read_sent(cursor, end, max_messages - len(out), max_bytes - size)
                )
                if not pending:  # only holes up to the end
                    message = encode_gap_fill(header, GapFill(cursor, end + 1), sending_time)
                    out.append(message)
                    size += len(message)
                    cursor = end + 1
                    break
            seq, raw = pending[0]
            if seq > cursor:
                message = encode_gap_fill(header, GapFill(cursor, seq), sending_time)
                cursor = seq
            else:
                pending.popleft()
                if seq < cursor:
                    continue
                message = rewrite_for_resend(raw, now_ns, sending_time)
                cursor = seq + 1
            out.append(message)
            size += len(message)
        self.cursor = cursor
        if cursor > end:
            pending.clear()
            held = self.held
            while held and len(out) < max_messages and size < max_bytes:
                message = held.popleft()
                self.held_bytes -= len(message)
                out.append(message)
                size += len(message)
        return b"".join(out), len(out)
