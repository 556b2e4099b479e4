"""Failed logons: growing delays, then a lockout (sans-IO: time is an argument).

Theory of operation
-------------------
Each failed Logon (credentials refused, or CompIDs naming no configured session) counts
against keys: the session it named (``("session", session id)``) and the remote address it
came from (``("address", host)``). After the n-th failure of a key in a row the refusal is
held back for a growing delay (``first_delay * 2**(n-1)``, at most ``max_delay``), so a
guesser waits longer for each wrong answer. The ``max_failures``-th failure locks the key out
for ``lockout``: a Logon naming a locked session, or a connection from a locked address, is
refused at once, without its credentials being looked at (a right guess during the lockout is
worth nothing). When the lockout ends the count starts again from zero.

A successful logon clears its session's count, not its address's (one good account must not
buy an address more guesses at others). A key without a failure for ``forget_after`` is
forgotten. At most ``max_keys`` keys are kept; past that the ones that failed longest ago are
dropped first (a flood from more addresses than that can shorten a lockout, never lengthen
one).

The limits of a failure are those of the session it named (``LockoutPolicy.from_settings``);
failures naming no session use ``default_policy``, the strictest of the configured sessions
(as the shortest ``LogonTimeout`` applies before a session is known).

The glue (``fixserver.protocol``) consults it: when a connection is made (its address), before
a Logon's credentials are checked (session and address), after each failure (the delay, and
the keys now locked out) and after each logon. ``LogRateLimiter`` keeps the log lines about
such events to a few per period however many there are (the metrics count every one).
"""

from __future__ import annotations

from collections.abc import Iterable

import attr

from fixserver.settings import SessionSettings
from fixserver.timeutil import NS_PER_SECOND

#: ("session", session id) or ("address", remote host)
ThrottleKey = tuple[str, str]

SESSION_SCOPE = "session"
ADDRESS_SCOPE = "address"


@attr.s(frozen=True, slots=True, auto_attribs=True)
class LockoutPolicy:
    """How many failures in a row lock a key out, for how long, and the delays before that."""

    #: failures in a row that lock the key out; 0 = no delays and no lockout
    max_failures: int = 5
    lockout_ns: int = 60 * NS_PER_SECOND
    #: delay after the first failure; doubled after each further one
    first_delay_ns: int = NS_PER_SECOND
    max_delay_ns: int = 8 * NS_PER_SECOND

    @property
    def enabled(self) -> bool:
        return self.max_failures > 0

    def delay_ns(self, failures: int) -> int:
        """The delay after the ``failures``-th failure in a row (1-based)."""
        return min(self.max_delay_ns, self.first_delay_ns << min(failures - 1, 40))

    @classmethod
    def from_settings(cls, settings: SessionSettings) -> LockoutPolicy:
        return cls(
            max_failures=settings.logon_lockout_failures,
            lockout_ns=settings.logon_lockout_seconds * NS_PER_SECOND,
        )

    @classmethod
    def strictest(cls, policies: Iterable[LockoutPolicy]) -> LockoutPolicy:
        """Fewest failures, longest lockout and delays of the enabled policies (none: off)."""
        enabled = [p for p in policies if p.enabled]
        if not enabled:
            return cls(max_failures=0)
        return cls(
            max_failures=min(p.max_failures for p in enabled),
            lockout_ns=max(p.lockout_ns for p in enabled),
            first_delay_ns=max(p.first_delay_ns for p in enabled),
            max_delay_ns=max(p.max_delay_ns for p in enabled),
        )


DEFAULT_POLICY = LockoutPolicy()


@attr.s(frozen=True, slots=True, auto_attribs=True)
class FailureVerdict:
    """What one failure earned: hold the refusal back ``delay_ns``; keys locked out from now."""

    delay_ns: int
    locked_out: tuple[ThrottleKey, ...] = ()


class _KeyState:
    __slots__ = ("failures", "last_failure_ns", "locked_until_ns")

    def __init__(self) -> None:
        self.failures = 0
        self.last_failure_ns = 0
        self.locked_until_ns = 0


class LogonThrottle:
    """Failure counts and lockouts per session and per remote address (module docstring)."""

    def __init__(
        self,
        default_policy: LockoutPolicy = DEFAULT_POLICY,
        forget_after_ns: int = 15 * 60 * NS_PER_SECOND,
        max_keys: int = 100_000,
    ) -> None:
        self.default_policy = default_policy
        self.forget_after_ns = forget_after_ns
        self.max_keys = max_keys
        #: ordered by last failure, oldest first (a key is re-inserted at each failure)
        self._keys: dict[ThrottleKey, _KeyState] = {}

    @classmethod
    def for_sessions(cls, sessions: Iterable[SessionSettings], **kwargs: int) -> LogonThrottle:
        """A throttle whose default policy is the strictest of ``sessions``' settings."""
        policy = LockoutPolicy.strictest(LockoutPolicy.from_settings(s) for s in sessions)
        return cls(policy, **kwargs)

    def locked_until_ns(self, key: ThrottleKey, now_ns: int) -> int | None:
        """End of ``key``'s lockout, or None if it is not locked out."""
        state = self._keys.get(key)
        if state is None or state.locked_until_ns <= now_ns:
            return None
        return state.locked_until_ns

    def first_locked(
        self, keys: Iterable[ThrottleKey], now_ns: int
    ) -> tuple[ThrottleKey, int] | None:
        """The first of ``keys`` that is locked out, with the end of its lockout."""
        for key in keys:
            until = self.locked_until_ns(key, now_ns)
            if until is not None:
                return key, until
        return None

    def record_failure(
        self, keys: Iterable[ThrottleKey], policy: LockoutPolicy, now_ns: int
    ) -> FailureVerdict:
        """Count a failed Logon against ``keys`` under ``policy``."""
        if not policy.enabled:
            return FailureVerdict(0)
        self._forget_quiet(now_ns)
        delay = 0
        locked: list[ThrottleKey] = []
        for key in keys:
            state = self._keys.pop(key, None)
            if state is None or self._forgettable(state, now_ns):
                state = _KeyState()
            state.failures += 1
            state.last_failure_ns = now_ns
            if state.failures >= policy.max_failures:
                state.failures = 0
                state.locked_until_ns = now_ns + policy.lockout_ns
                locked.append(key)
            else:
                delay = max(delay, policy.delay_ns(state.failures))
            self._keys[key] = state
        while len(self._keys) > self.max_keys:
            del self._keys[next(iter(self._keys))]
        # A failure that starts a lockout is answered at once: the lockout is its penalty.
        return FailureVerdict(0 if locked else delay, tuple(locked))

    def record_success(self, key: ThrottleKey) -> None:
        """A logon under ``key`` succeeded: its failures are forgotten."""
        self._keys.pop(key, None)

    def active_lockouts(self, now_ns: int) -> int:
        return sum(1 for state in self._keys.values() if state.locked_until_ns > now_ns)

    def __len__(self) -> int:
        return len(self._keys)

    def _forgettable(self, state: _KeyState, now_ns: int) -> bool:
        return (
            state.locked_until_ns <= now_ns
            and now_ns - state.last_failure_ns >= self.forget_after_ns
        )

    def _forget_quiet(self, now_ns: int) -> None:
        """Drop keys quiet for ``forget_after`` from the old end (amortised O(1))."""
        keys = self._keys
        while keys:
            oldest = next(iter(keys))
            state = keys[oldest]
            if now_ns - state.last_failure_ns < self.forget_after_ns:
                return
            if state.locked_until_ns > now_ns:  # a lockout longer than forget_after
                return
            del keys[oldest]


class LogRateLimiter:
    """At most ``max_lines`` log lines per ``period_ns``; the rest are counted, and the next
    line allowed reports how many were left out."""

    def __init__(self, max_lines: int = 10, period_ns: int = 10 * NS_PER_SECOND) -> None:
        self.max_lines = max_lines
        self.period_ns = period_ns
        self._period_start_ns: int | None = None
        self._lines = 0
        self._suppressed = 0

    def allow(self, now_ns: int) -> int | None:
        """None: leave this line out. Otherwise log it, with the returned number of lines
        left out since the last one logged."""
        start = self._period_start_ns
        if start is None or now_ns - start >= self.period_ns or now_ns < start:
            self._period_start_ns = now_ns
            self._lines = 0
        if self._lines >= self.max_lines:
            self._suppressed += 1
            return None
        self._lines += 1
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed
