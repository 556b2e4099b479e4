"""Per-session causal order: each session's requests take effect, and are answered, in
MsgSeqNum order, exactly as if the client had waited for every answer.

Theory of operation
-------------------
The order ledger is the *released* (durable) view of the orders. A request that reads it
(a cancel, replace, status request, mass cancel or mass status) must therefore see every
earlier request of its session released first; and every answer given at once (a refusal,
a status) must leave after the reports of the session's earlier requests. Each session has
a *lane*, a queue of four kinds of entry:

- ``REQ``: a request submitted to the sequencer whose tick is not released yet;
- ``REPLY``: an answer built at once that must wait for the entries before it;
- ``MSG``: a message that cannot be handled yet (it reads the ledger, or a message before
  it is itself waiting);
- ``READ``: a status request being answered from outside memory (an order the ledger no
  longer holds, read from Postgres off the reactor), not answered yet.

A new message is handled at once when the lane is empty. A NewOrderSingle is handled at once
also while the lane holds only ``REQ`` and ``REPLY`` entries: it needs nothing released (its
ClOrdID is claimed when it is submitted, and the sequencer keeps the session's order), so a
client streaming orders is not slowed down; a refusal it gets queues as a ``REPLY``. Anything
else waits as a ``MSG``. So a lane is always some ``REQ``/``REPLY`` entries followed by
``MSG``/``REPLY`` entries, and a ``MSG`` is never behind a ``REQ`` once the ``REQ`` ahead of
it is released.

When a request's tick is released, its ``REQ`` (the first in its lane: the sequencer never
reorders a session's requests) is removed, the ``REPLY`` entries now at the front are sent,
and if the front is a ``MSG`` the waiting entries are taken out and handled again in order,
as if they had just arrived.

A ``READ`` is added only to an empty lane (a status request is handled only when nothing of
its session is ahead of it). While it is there everything the session sends waits behind it
as a ``MSG``, a NewOrderSingle too: the reports of a request submitted now would leave at its
release, possibly before the status answer. When the read completes (found, not found or
failed, always: the caller bounds it with a timeout), its answer takes the ``READ``'s place
as a ``REPLY``, the answers now at the front are sent and the waiting messages are handled
again, exactly as after a release. The lane is pure bookkeeping: no clock, no I/O.
"""

from __future__ import annotations

from collections import deque
from typing import Any, NamedTuple

REQ, REPLY, MSG, READ = 0, 1, 2, 3


class LaneError(Exception):
    """An illegal lane transition (a bug in the caller)."""


class Entry(NamedTuple):
    """One lane entry: ``kind`` is REQ, REPLY, MSG or READ; ``item`` what the application
    queued."""

    kind: int
    item: Any


class Lane:
    """One session's queue (see module docstring)."""

    __slots__ = ("entries", "waiting")

    def __init__(self) -> None:
        self.entries: deque[Entry] = deque()
        self.waiting = 0  # MSG and READ entries in ``entries`` (a new order waits behind them)


_REQ_ENTRY = Entry(REQ, None)


class SessionLanes:
    """The lanes of every session (see module docstring)."""

    def __init__(self) -> None:
        self._lanes: dict[str, Lane] = {}

    def _lane(self, session_id: str) -> Lane:
        lane = self._lanes.get(session_id)
        if lane is None:
            lane = self._lanes[session_id] = Lane()
        return lane

    def must_wait(self, session_id: str, is_new_order: bool) -> bool:
        """Whether a message arriving now has to wait (see module docstring)."""
        lane = self._lanes.get(session_id)
        if lane is None or not lane.entries:
            return False
        return bool(lane.waiting) or not is_new_order

    def start_read(self, session_id: str, item: Any) -> None:
        """A status request of the session is being read from outside memory (a ``READ``);
        the lane must be empty (raises LaneError otherwise)."""
        lane = self._lane(session_id)
        if lane.entries:
            raise LaneError(f"a read may start only in an empty lane ({session_id})")
        lane.entries.append(Entry(READ, item))
        lane.waiting += 1

    def read_done(self, session_id: str, answer: Any) -> tuple[list[Any], list[Entry]]:
        """The session's read completed with ``answer``: (answers to send now, in order, the
        read's first; entries to handle again, in order), as :meth:`released`. Raises
        LaneError if the session has no read outstanding."""
        lane = self._lanes.get(session_id)
        if lane is None or not lane.entries or lane.entries[0].kind != READ:
            raise LaneError(f"no read outstanding for {session_id}")
        lane.entries[0] = Entry(REPLY, answer)
        lane.waiting -= 1
        return self._advance(session_id, lane)

    def wait(self, session_id: str, item: Any) -> None:
        """Queue a message to be handled later (a ``MSG``)."""
        lane = self._lane(session_id)
        lane.entries.append(Entry(MSG, item))
        lane.waiting += 1

    def waits(self, session_id: str) -> bool:
        """Whether the session's lane holds a waiting entry (a MSG or READ): then everything
        after it waits too."""
        lane = self._lanes.get(session_id)
        return lane is not None and bool(lane.waiting)

    def wait_all(self, session_id: str, entries: list[Entry]) -> None:
        """Put entries taken out by :meth:`released` back, unchanged and in order, behind
        what the lane holds: what a caller does once one of them had to wait again (all
        after it would wait too), instead of handling each again (which made a burst of n
        waiting messages cost n^2 re-queues)."""
        lane = self._lane(session_id)
        lane.entries.extend(entries)
        lane.waiting += sum(1 for e in entries if e.kind == MSG or e.kind == READ)

    def submitted(self, session_id: str, count: int = 1) -> None:
        """``count`` requests of the session went to the sequencer."""
        entries = self._lane(session_id).entries
        for _ in range(count):
            entries.append(_REQ_ENTRY)

    def hold_reply(self, session_id: str, item: Any) -> bool:
        """Queue an answer if anything is ahead of it; False: nothing is, send it now."""
        lane = self._lanes.get(session_id)
        if lane is None or not lane.entries:
            return False
        lane.entries.append(Entry(REPLY, item))
        return True

    def released(self, session_id: str) -> tuple[list[Any], list[Entry]]:
        """A request of the session was released: (answers to send now, in order; entries to
        handle again as if they had just arrived, in order)."""
        lane = self._lanes.get(session_id)
        if lane is None:
            return [], []
        entries = lane.entries
        for i, entry in enumerate(entries):
            if entry.kind == REQ:
                del entries[i]
                break
        else:
            return [], []
        return self._advance(session_id, lane)

    def _advance(self, session_id: str, lane: Lane) -> tuple[list[Any], list[Entry]]:
        """Take the answers now at the front, and the waiting entries if a MSG is first."""
        entries = lane.entries
        replies = []
        while entries and entries[0].kind == REPLY:
            replies.append(entries.popleft().item)
        again: list[Entry] = []
        if entries and entries[0].kind == MSG:
            again = list(entries)
            entries.clear()
            lane.waiting = 0
        if not entries:
            del self._lanes[session_id]
        return replies, again

    def reading(self, session_id: str) -> bool:
        """Whether a read of the session is outstanding."""
        lane = self._lanes.get(session_id)
        return lane is not None and bool(lane.entries) and lane.entries[0].kind == READ

    def pending(self, session_id: str) -> int:
        """Entries in the session's lane (0: everything it sent has been answered)."""
        lane = self._lanes.get(session_id)
        return len(lane.entries) if lane is not None else 0

    def busy_sessions(self) -> list[str]:
        return [sid for sid, lane in self._lanes.items() if lane.entries]
