"""The sequencer: turns the inbox of unstamped requests into one stamped batch per tick.

Theory of operation
-------------------
Every session hands its engine commands to :meth:`Sequencer.submit` as *requests*: command
objects whose ``seq`` and ``ts`` are 0, together with an opaque ``origin`` (who sent it; it is
journaled with the command and handed back with the command's events, so the FIX layer can
rebuild order ownership after a replay). Requests wait in the inbox until the next tick.

:meth:`Sequencer.next_batch` is the tick. It reads no clock: ``now_ns`` is passed in. The tick's
time is ``ts = max(now_ns, last ts)`` so time never runs backwards even when the wall clock
steps back. Every command of the tick gets that same ``ts`` and consecutive sequence numbers
starting at ``next_seq``; a NewOrder's order id is its ``seq``.

Sequencing policy (deterministic; first come, first served within each class):

- ``FIFO``: arrival order.
- ``PROTECTIVE_FIRST`` (default): the performance guide's priority queue, narrowed to what
  protects positions and kept causal. Every request belongs to a *lane* (``lane_of(origin)``;
  the FIX layer gives each firm its own lane). A protective request (``CancelOrder``,
  ``MassCancel``, reduce-only ``NewOrder``) goes before the other requests of the same tick
  *of other lanes*, but never before an earlier request of its own lane: once a lane has a
  request in the unprioritised part, everything after it from that lane stays behind it, in
  arrival order. So each session's (each firm's) requests take effect in the order they were
  sent, exactly as if the client had waited for every answer, and a firm-wide mass cancel
  sees every order of the firm accepted before it; priority only reorders across lanes. The
  guide also put market orders first; we do not, since jumping a market order ahead of limit
  orders that arrived earlier is unfair to them and protects nobody. With the default
  ``lane_of`` every request is in one lane, which makes the policy the same as FIFO.

Time ticks: when the tick's ``ts`` is later than the last engine ``Tick`` command, the batch
starts with a ``Tick`` (seq first, origin ``None``) so GTD/DAY orders due at or before ``ts``
expire before the tick's requests are matched. A tick with no requests emits a ``Tick`` only
once ``idle_tick_ns`` has passed since the last one (0: whenever time advanced), so an idle
exchange does not journal a record every millisecond; expiry while idle is then at most
``idle_tick_ns`` late.

Stamping builds the command anew with its class's constructor from an ``attrgetter`` over
its other fields: measured on CPython 3.11 for a NewOrder, ~1.4 us against ~3.3 us for
``attr.evolve``.
"""

from __future__ import annotations

from enum import IntEnum
from operator import attrgetter
from typing import Any, Callable, NamedTuple

import attr

from engine.commands import (
    AdjustIsolatedMargin,
    AdminAction,
    CancelOrder,
    ConfigureInstrument,
    Deposit,
    KillSwitch,
    MassCancel,
    NewOrder,
    ReplaceOrder,
    SessionStatus,
    SetAccountStp,
    SetIndexPrice,
    SetInstrumentStatus,
    SetLeverage,
    SetMarginMode,
    SetPosition,
    SetTradingDay,
    Tick,
    Withdraw,
)

COMMAND_CLASSES: tuple[type, ...] = (
    NewOrder, CancelOrder, ReplaceOrder, MassCancel, SetInstrumentStatus, SetPosition,
    SetAccountStp, KillSwitch, SessionStatus, SetTradingDay, ConfigureInstrument, Tick,
    AdminAction, Deposit, Withdraw, SetLeverage, SetMarginMode, AdjustIsolatedMargin,
    SetIndexPrice,
)


def _one_lane(origin: Any) -> None:
    return None


class SequencingPolicy(IntEnum):
    """How requests of one tick are ordered (see module docstring)."""

    FIFO = 1
    PROTECTIVE_FIRST = 2


class Batch(NamedTuple):
    """One tick's stamped commands: ``entries`` are (origin, command) in sequence order."""

    first_seq: int
    ts: int
    entries: list


def field_getter(cls: type) -> Callable[[Any], tuple]:
    """A function returning the fields of a command after ``seq`` and ``ts``, as a tuple."""
    names = [a.name for a in attr.fields(cls)][2:]
    if not names:
        return lambda _c: ()
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda c: (one(c),)
    return attrgetter(*names)


_GETTERS: dict[type, Callable[[Any], tuple]] = {c: field_getter(c) for c in COMMAND_CLASSES}


def stamp(request: Any, seq: int, ts: int) -> Any:
    """A copy of ``request`` carrying ``seq`` and ``ts``."""
    cls = type(request)
    return cls(seq, ts, *_GETTERS[cls](request))


def is_protective(request: Any) -> bool:
    """True for the requests PROTECTIVE_FIRST puts first: cancels and reduce-only orders."""
    cls = type(request)
    if cls is CancelOrder or cls is MassCancel:
        return True
    return cls is NewOrder and bool(request.reduce_only)


class Sequencer:
    """Inbox plus stamping (see module docstring). Pure: no clock, no I/O."""

    def __init__(
        self,
        policy: SequencingPolicy = SequencingPolicy.PROTECTIVE_FIRST,
        *,
        next_seq: int = 1,
        last_ts: int = 0,
        last_tick_ts: int = 0,
        idle_tick_ns: int = 1_000_000_000,
        lane_of: Callable[[Any], Any] | None = None,
    ) -> None:
        if next_seq < 1:
            raise ValueError("next_seq starts at 1")
        self.policy = SequencingPolicy(policy)
        self.next_seq = next_seq
        self.last_ts = last_ts
        #: ts of the last engine Tick command stamped
        self.last_tick_ts = last_tick_ts
        self.idle_tick_ns = idle_tick_ns
        #: origin -> lane key (hashable); requests of one lane are never reordered
        self.lane_of: Callable[[Any], Any] = lane_of if lane_of is not None else _one_lane
        self._inbox: list[tuple[Any, Any]] = []

    def submit(self, origin: Any, request: Any) -> None:
        """Queue a request (a command with seq=0, ts=0) from ``origin`` for the next tick."""
        if type(request) not in _GETTERS or type(request) is Tick:
            raise TypeError(f"not a request the sequencer takes: {type(request).__name__}")
        self._inbox.append((origin, request))

    @property
    def pending(self) -> int:
        """Requests waiting for the next tick."""
        return len(self._inbox)

    def position(self) -> tuple[int, int, int]:
        """(next_seq, last_ts, last_tick_ts): what a snapshot must carry to resume."""
        return self.next_seq, self.last_ts, self.last_tick_ts

    def next_batch(self, now_ns: int) -> Batch | None:
        """Take the inbox, order it by the policy and stamp it; None if there is nothing to do."""
        ts = now_ns if now_ns > self.last_ts else self.last_ts
        inbox = self._inbox
        advanced = ts > self.last_tick_ts
        want_tick = advanced and (
            bool(inbox) or ts - self.last_tick_ts >= self.idle_tick_ns
        )
        if not inbox and not want_tick:
            return None
        self._inbox = []
        if self.policy is SequencingPolicy.PROTECTIVE_FIRST and len(inbox) > 1:
            first: list = []
            rest: list = []
            behind: set = set()  # lanes with a request in ``rest``: theirs stay in order
            lane_of = self.lane_of
            for e in inbox:
                lane = lane_of(e[0])
                if lane not in behind and is_protective(e[1]):
                    first.append(e)
                else:
                    rest.append(e)
                    behind.add(lane)
            if first and rest:
                inbox = first + rest
        first_seq = seq = self.next_seq
        entries: list = []
        append = entries.append
        if want_tick:
            append((None, Tick(seq, ts)))
            seq += 1
            self.last_tick_ts = ts
        getters = _GETTERS
        for origin, req in inbox:
            cls = type(req)
            append((origin, cls(seq, ts, *getters[cls](req))))
            seq += 1
        self.next_seq = seq
        self.last_ts = ts
        return Batch(first_seq, ts, entries)
