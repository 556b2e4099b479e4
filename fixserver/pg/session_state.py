"""FIX session state for the ``fix_sessions`` table, coalesced per session (pure: no I/O, no
clock, no Twisted).

Theory of operation
-------------------
The glue (fixserver.pg.session_writer) tells the tracker about each logon and logout as it
happens and, about once a second, what each session's message store says (next sender and
target seq, creation time). The tracker keeps one *picture* per session (state, last logon,
last logout, the store's numbers) and the set of sessions whose picture changed since it was
last handed out: the *dirty* set.

:meth:`SessionStateTracker.take` returns one row per dirty session, built from the session's
picture *at that moment*, and empties the set. However many messages and logons happened in
between, at most one row per session is pending, and no row ever carries stale values. A
failed write hands its sessions back (:meth:`SessionStateTracker.retry`); the next take
rebuilds them from the then-current pictures, so a retry never overwrites newer values with
older ones.

Logons and logouts make the tracker :attr:`~SessionStateTracker.urgent` (until the next
take): the glue writes at once instead of waiting for its next tick, so ``state`` and the
logon/logout times reach Postgres promptly while sequence numbers are written at most once a
tick.

Every configured session is tracked from the start, and dirty: the first write puts each
session's real sequence numbers (its store survives restarts) and ``DISCONNECTED`` in the
table, which also corrects a ``LOGGED_ON`` left by a process that died. A picture starts with
no logon or logout time; the writer's upsert keeps the stored times for those (see
fixserver.pg.batch).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from fixserver.pg.rows import SessionRow, session_row

#: ``fix_sessions.state`` values
LOGGED_ON = "LOGGED_ON"
DISCONNECTED = "DISCONNECTED"


class StoreNumbers(NamedTuple):
    """What a session's message store says right now."""

    next_sender_seq: int
    next_target_seq: int
    creation_time_ns: int


class _Picture:
    """One session's current state, as the next row will show it."""

    __slots__ = ("last_logon_ns", "last_logout_ns", "numbers", "settings", "state")

    def __init__(self, settings: Any, numbers: StoreNumbers) -> None:
        self.settings = settings  # a fixserver.settings.SessionSettings
        self.numbers = numbers
        self.state = DISCONNECTED
        self.last_logon_ns: int | None = None
        self.last_logout_ns: int | None = None


class SessionStateTracker:
    """Session pictures and the dirty set (see the module docstring)."""

    def __init__(self) -> None:
        self._pictures: dict[str, _Picture] = {}
        self._dirty: dict[str, None] = {}  # an ordered set: rows come out in change order
        #: a logon or logout is waiting to be written
        self.urgent = False

    @property
    def pending(self) -> int:
        """Sessions with a change not handed out yet."""
        return len(self._dirty)

    def state_of(self, session_id: str) -> str | None:
        """The session's current state (None: not tracked)."""
        picture = self._pictures.get(session_id)
        return None if picture is None else picture.state

    def track(self, settings: Any, numbers: StoreNumbers) -> None:
        """Start tracking a session (dirty: its first row is due); a no-op if tracked."""
        if settings.session_id not in self._pictures:
            self._pictures[settings.session_id] = _Picture(settings, numbers)
            self._dirty[settings.session_id] = None

    def observe(self, session_id: str, numbers: StoreNumbers) -> bool:
        """The store's numbers now; True if they changed (the session is dirty then)."""
        picture = self._pictures[session_id]
        if picture.numbers == numbers:
            return False
        picture.numbers = numbers
        self._dirty[session_id] = None
        return True

    def logged_on(self, settings: Any, numbers: StoreNumbers, now_ns: int) -> None:
        """The session logged on at ``now_ns``."""
        picture = self._change(settings, numbers)
        picture.state = LOGGED_ON
        picture.last_logon_ns = now_ns

    def logged_out(self, settings: Any, numbers: StoreNumbers, now_ns: int) -> None:
        """The session logged out (or lost its connection) at ``now_ns``."""
        picture = self._change(settings, numbers)
        picture.state = DISCONNECTED
        picture.last_logout_ns = now_ns

    def _change(self, settings: Any, numbers: StoreNumbers) -> _Picture:
        self.track(settings, numbers)
        picture = self._pictures[settings.session_id]
        picture.numbers = numbers
        self._dirty[settings.session_id] = None
        self.urgent = True
        return picture

    def take(self, now_ns: int) -> list[SessionRow]:
        """One row per dirty session (its picture now, ``updated_at`` = ``now_ns``); the dirty
        set empties and ``urgent`` clears."""
        rows = []
        for session_id in self._dirty:
            p = self._pictures[session_id]
            n = p.numbers
            rows.append(session_row(
                p.settings, n.next_sender_seq, n.next_target_seq, n.creation_time_ns, p.state,
                p.last_logon_ns, now_ns, p.last_logout_ns,
            ))
        self._dirty.clear()
        self.urgent = False
        return rows

    def retry(self, rows: list[SessionRow]) -> None:
        """A write of ``rows`` failed: their sessions are dirty again (rebuilt at the next take
        from their pictures then)."""
        for row in rows:
            self._dirty[row.session_id] = None
