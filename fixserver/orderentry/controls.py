"""Per-session and per-firm risk controls: the message throttle and the kill switch.

Throttle: each session may send ``rate`` application messages per second (ThrottleRate).
Messages over the rate get a BusinessMessageReject (380=8) and are not processed; only a
session that keeps going at more than ``DISCONNECT_FACTOR`` times its rate within one second
is logged out. The window is a fixed one-second bucket of the injected time (no clock read).

Kill switch: an operator switches a firm off; all its orders are canceled and new ones are
refused until the switch is lifted. :class:`KillSwitchFile` keeps the set of killed firms in
a small JSON file written atomically (temp file, fsync, rename, directory fsync) so the state
survives a restart; its methods block and run off the reactor.
"""

from __future__ import annotations

import enum
import json
import os

NS_PER_SECOND = 1_000_000_000
#: logged out when sending at more than this many times the ThrottleRate within one second
DISCONNECT_FACTOR = 3


class Verdict(enum.Enum):
    ADMIT = "admit"
    THROTTLE = "throttle"  # BusinessMessageReject 380=8
    DISCONNECT = "disconnect"  # BusinessMessageReject 380=8, then Logout


class Throttle:
    """Messages per second of one session (see module docstring)."""

    __slots__ = ("_count", "_window", "rate")

    def __init__(self, rate: int) -> None:
        if rate <= 0:
            raise ValueError("ThrottleRate must be positive")
        self.rate = rate
        self._window = -1
        self._count = 0

    def admit(self, now_ns: int) -> Verdict:
        window = now_ns // NS_PER_SECOND
        if window != self._window:
            self._window = window
            self._count = 0
        self._count += 1
        if self._count <= self.rate:
            return Verdict.ADMIT
        if self._count > self.rate * DISCONNECT_FACTOR:
            return Verdict.DISCONNECT
        return Verdict.THROTTLE


class KillSwitchFile:
    """The killed firms, persisted in ``path`` (JSON: ``{"killed": ["FIRM", ...]}``)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> set[str]:
        """The killed firms (empty if the file does not exist)."""
        try:
            with open(self.path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            return set()
        return {str(firm) for firm in data.get("killed", [])}

    def save(self, killed: set[str]) -> None:
        """Write the set atomically and durably."""
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump({"killed": sorted(killed)}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
