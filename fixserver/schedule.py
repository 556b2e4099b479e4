"""Session windows (QuickFIX StartTime/EndTime, optionally StartDay/EndDay), all in UTC.

A schedule is a cycle (a day, or a week when both days are set) with an open interval
``[start, end]`` inside it, both ends inclusive as in QuickFIX; the interval may wrap past
midnight (or the end of the week). ``start == end`` means always open, with a new session
period starting at that moment every cycle. With no StartTime/EndTime at all the session is
always open and never begins a new period.
"""

from __future__ import annotations

import datetime

from fixserver.settings import SessionSettings
from fixserver.timeutil import NS_PER_SECOND

DAY_NS = 86_400 * NS_PER_SECOND
WEEK_NS = 7 * DAY_NS
#: 1970-01-05 was a Monday: week offsets count from Monday 00:00 UTC.
_MONDAY_OFFSET_NS = 4 * DAY_NS


def _time_ns(value: datetime.time) -> int:
    return ((value.hour * 60 + value.minute) * 60 + value.second) * NS_PER_SECOND + (
        value.microsecond * 1000
    )


class SessionSchedule:
    """When a session may be logged on, and when its current period began."""

    def __init__(
        self,
        start_time: datetime.time | None,
        end_time: datetime.time | None,
        start_day: int | None = None,
        end_day: int | None = None,
    ) -> None:
        if (start_time is None) != (end_time is None):
            raise ValueError("StartTime and EndTime must be configured together")
        if (start_day is None) != (end_day is None):
            raise ValueError("StartDay and EndDay must be configured together")
        self.always_open = start_time is None
        weekly = start_day is not None
        self.cycle_ns = WEEK_NS if weekly else DAY_NS
        self.anchor_ns = _MONDAY_OFFSET_NS if weekly else 0
        start = _time_ns(start_time) if start_time is not None else 0
        end = _time_ns(end_time) if end_time is not None else 0
        if weekly:
            assert start_day is not None and end_day is not None
            start += start_day * DAY_NS
            end += end_day * DAY_NS
        self.start_ns = start
        self.end_ns = end

    @classmethod
    def from_settings(cls, settings: SessionSettings) -> SessionSchedule:
        return cls(settings.start_time, settings.end_time, settings.start_day, settings.end_day)

    def _since_start(self, now_ns: int) -> int:
        """How far ``now`` is past the most recent start moment."""
        offset = (now_ns - self.anchor_ns) % self.cycle_ns
        return (offset - self.start_ns) % self.cycle_ns

    def _length(self) -> int:
        return (self.end_ns - self.start_ns) % self.cycle_ns

    def is_open(self, now_ns: int) -> bool:
        if self.always_open or self.start_ns == self.end_ns:
            return True
        return self._since_start(now_ns) <= self._length()

    def period_start_ns(self, now_ns: int) -> int | None:
        """Start of the session period containing ``now`` (None if unscheduled or closed)."""
        if self.always_open or not self.is_open(now_ns):
            return None
        return now_ns - self._since_start(now_ns)

    def close_ns(self, now_ns: int) -> int | None:
        """When the open period containing ``now`` ends (None if it never does, or closed):
        the first instant after the inclusive end."""
        if self.always_open or self.start_ns == self.end_ns or not self.is_open(now_ns):
            return None
        return now_ns - self._since_start(now_ns) + self._length() + 1
