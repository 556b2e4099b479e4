"""Twisted glue serving resends a chunk per reactor turn (``fixserver.resend_scheduler`` decides
whose turn it is; the session core writes the chunk: ``SessionConnection.continue_resend``).

Theory of operation
-------------------
A connection whose core has a resend pending asks for turns (``want``). The driver keeps at
most one delayed call armed. Each call is one turn: it serves one chunk of one running
resend (bounded by the session's ResendChunkMessages and ResendChunkBytes), then arms the
next turn with no delay, so the reactor reads sockets and runs other sessions' work between
two chunks. A connection whose transport has paused its producer (the socket's send buffer
is above its bound) is skipped until ``resumeProducing`` calls ``wake``; a paced one is not
served before its ResendRate allows, and the turn is armed for that time instead. A
connection that goes away (``gone``) frees its place for the next waiting resend.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import attr
from twisted.logger import Logger

from fixserver import metrics
from fixserver.resend_scheduler import ResendScheduler

log = Logger(namespace="fixserver")


class ResendTarget(Protocol):
    """What the driver needs from a connection's glue (``FixProtocol``)."""

    @property
    def resend_label(self) -> str:
        """The session id, for logs and metrics."""

    def resend_blocked(self) -> bool:
        """True while the transport wants no more output (its producer is paused)."""

    def resend_rate(self) -> int:
        """Messages per second this session's resend may take; 0 = unpaced."""

    def resend_chunk(self) -> tuple[int, bool]:
        """Serve and write one chunk: (messages written, whether more remains)."""


@attr.s(slots=True, auto_attribs=True)
class _Progress:
    asked_ns: int  # when the resend asked for its first turn
    messages: int = 0
    chunks: int = 0


class ResendDriver:
    """Serves the running resends, a chunk per reactor turn (see the module docstring)."""

    def __init__(
        self, clock: Any, now_ns: Callable[[], int], max_concurrent: int = 4
    ) -> None:
        self._clock = clock  # IReactorTime
        self._now_ns = now_ns
        self.scheduler: ResendScheduler[ResendTarget] = ResendScheduler(max_concurrent)
        self._progress: dict[ResendTarget, _Progress] = {}
        self._call: Any = None  # IDelayedCall of the next turn
        self._call_at = 0.0

    def want(self, target: ResendTarget) -> None:
        """``target``'s session core has a resend pending (called after every pump)."""
        if not self.scheduler.knows(target):
            running = self.scheduler.request(target)
            self._progress[target] = _Progress(self._now_ns())
            log.info(
                "fix.resend_start session={session} running={running} waiting={waiting}",
                session=target.resend_label,
                running=running,
                waiting=self.scheduler.waiting,
            )
            self._gauges()
        self._arm(0.0)

    def wake(self, target: ResendTarget) -> None:
        """``target``'s transport drained (its producer was resumed)."""
        if self.scheduler.is_running(target):
            self._arm(0.0)

    def gone(self, target: ResendTarget) -> None:
        """``target``'s connection is closed: its resend (running or waiting) ends."""
        if self.scheduler.knows(target):
            self._end(target, "connection closed")

    # --- turns ---

    def _arm(self, delay: float) -> None:
        at = self._clock.seconds() + delay
        if self._call is not None:
            if self._call.active() and self._call_at <= at:
                return
            if self._call.active():
                self._call.cancel()
        self._call_at = at
        self._call = self._clock.callLater(delay, self._turn)

    def _turn(self) -> None:
        self._call = None
        now = self._now_ns()
        target, due = self.scheduler.next_due(now, _blocked)
        if target is None:
            if due is not None:
                self._arm(max(0.0, (due - now) / 1e9))
            return  # everything running is blocked (wake re-arms) or nothing runs
        count, more = target.resend_chunk()
        progress = self._progress.get(target)
        if progress is not None:
            progress.messages += count
            progress.chunks += 1
        metrics.RESEND_MESSAGES.labels(target.resend_label).inc(count)
        if more:
            self.scheduler.served(target, count, target.resend_rate(), now)
        elif self.scheduler.knows(target):
            self._end(target, "done")
        self._arm(0.0)

    def _end(self, target: ResendTarget, outcome: str) -> None:
        for admitted in self.scheduler.done(target):
            log.info("fix.resend_admitted session={session}", session=admitted.resend_label)
        progress = self._progress.pop(target, None)
        if progress is not None:
            seconds = (self._now_ns() - progress.asked_ns) / 1e9
            metrics.RESEND_SECONDS.observe(seconds)
            log.info(
                "fix.resend_end session={session} outcome={outcome} messages={messages}"
                " chunks={chunks} seconds={seconds:.3f}",
                session=target.resend_label,
                outcome=outcome,
                messages=progress.messages,
                chunks=progress.chunks,
                seconds=seconds,
            )
        self._gauges()
        if self.scheduler.running:
            self._arm(0.0)

    def _gauges(self) -> None:
        metrics.RESENDS_RUNNING.set(self.scheduler.running)
        metrics.RESENDS_WAITING.set(self.scheduler.waiting)


def _blocked(target: ResendTarget) -> bool:
    return target.resend_blocked()
