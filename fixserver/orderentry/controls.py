"""Per-session and per-firm risk controls: the message throttle and the kill switch.

Throttle: each session may send ``rate`` application messages per second (ThrottleRate).
Messages over the rate get a BusinessMessageReject (380=8) and are not processed; only a
session that keeps going at more than ``DISCONNECT_FACTOR`` times its rate within one second
is logged out. The window is a fixed one-second bucket of the injected time (no clock read).

Kill switch: an operator switches a firm off; all its orders are canceled and new ones are
refused until the switch is lifted. The state is journaled (engine KillSwitch command, see
:mod:`engine.controls`). :class:`KillSwitchFile` is the file earlier versions kept it in:
start-up reads it once so a switch turned on before the upgrade stays on (it is journaled
then), and nothing writes it any more.
"""

from __future__ import annotations

import enum
import json

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
    """The killed firms as earlier versions saved them in ``path`` (JSON:
    ``{"killed": ["FIRM", ...]}``); read once at start-up (see the module docstring)."""

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
