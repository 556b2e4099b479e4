"""The batch timer: flushes the hub every ``interval`` seconds on the reactor (10 ms default)."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from feeds.hub import FeedHub

DEFAULT_INTERVAL_S = 0.010


class FeedBatcher:
    """Calls ``hub.flush()`` periodically; a failing flush is logged, the timer keeps going."""

    log = Logger()

    def __init__(self, hub: FeedHub, interval_s: float = DEFAULT_INTERVAL_S,
                 clock: Any = None) -> None:
        self.hub = hub
        self.interval_s = interval_s
        self._loop = LoopingCall(self._flush)
        if clock is not None:
            self._loop.clock = clock

    def _flush(self) -> None:
        try:
            self.hub.flush()
        except Exception:
            # A bug in one batch must not stop market data for good; it is loud in the log.
            self.log.failure("feed batch flush failed")

    def start(self) -> None:
        """Start flushing (first flush one interval from now)."""
        self._loop.start(self.interval_s, now=False)

    def stop(self) -> None:
        """Stop flushing (pending events stay for a later flush)."""
        if self._loop.running:
            self._loop.stop()
