"""Answering a ResendRequest: which stored messages go out again and where gap fills go.

Only application messages are kept in the store; admin messages (Logon, Heartbeat, Reject...)
leave holes. Every run of holes becomes one SequenceReset-GapFill whose MsgSeqNum is the first
hole and whose NewSeqNo is the next message that will be resent (or one past the end).
"""

from __future__ import annotations

from typing import Union

import attr


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
