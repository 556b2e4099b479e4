"""Which sessions may serve the next chunk of their resend, and when (sans-IO: time is an
argument).

Theory of operation
-------------------
A session answering a ResendRequest asks to ``request`` a turn. At most ``max_concurrent``
resends run at once across the server; more wait, in arrival order, and are admitted as
running ones end (``done``). The running ones take turns one chunk at a time, round robin
(``next_due``): one whose transport is backed up is skipped until it drains (the caller's
``blocked``). Each one is paced at its ``rate`` in messages per second: after a chunk of n
messages at time t its next chunk is not due before t + n / rate (``served``; 0 = unpaced).
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Generic, TypeVar

from fixserver.timeutil import NS_PER_SECOND

K = TypeVar("K")  # a connection's glue (hashable)


class ResendScheduler(Generic[K]):
    """The running and the waiting resends (see the module docstring)."""

    def __init__(self, max_concurrent: int) -> None:
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        self.max_concurrent = max_concurrent
        #: running key -> when its next chunk is due (ns); dict order is the round robin
        self._running: dict[K, int] = {}
        self._waiting: deque[K] = deque()

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def is_running(self, key: K) -> bool:
        return key in self._running

    def knows(self, key: K) -> bool:
        return key in self._running or key in self._waiting

    def request(self, key: K) -> bool:
        """``key`` has a resend to serve. True if it runs (now or already), False if it
        waits for one of the running ones to end."""
        if key in self._running:
            return True
        if key in self._waiting:
            return False
        if len(self._running) < self.max_concurrent:
            self._running[key] = 0
            return True
        self._waiting.append(key)
        return False

    def done(self, key: K) -> list[K]:
        """``key``'s resend ended (or its connection did); returns the keys admitted in its
        place, in the order they asked."""
        if self._running.pop(key, None) is None:
            try:
                self._waiting.remove(key)
            except ValueError:
                pass
            return []
        admitted = []
        while self._waiting and len(self._running) < self.max_concurrent:
            waiting = self._waiting.popleft()
            self._running[waiting] = 0
            admitted.append(waiting)
        return admitted

    def next_due(self, now_ns: int, blocked: Callable[[K], bool]) -> tuple[K | None, int | None]:
        """(the running key whose turn it is now, None) or, if none is due, (None, when the
        earliest unblocked one will be; None if every running one is blocked or none runs)."""
        soonest: int | None = None
        for key, due in self._running.items():
            if blocked(key):
                continue
            if due <= now_ns:
                return key, None
            if soonest is None or due < soonest:
                soonest = due
        return None, soonest

    def served(self, key: K, messages: int, rate: int, now_ns: int) -> None:
        """``key`` served a chunk of ``messages`` at ``now_ns``: its next one is paced at
        ``rate`` messages per second and it goes to the back of the round robin."""
        if key not in self._running:
            return
        del self._running[key]
        self._running[key] = now_ns + (messages * NS_PER_SECOND // rate if rate > 0 else 0)
