"""The logon throttle: growing delays, then a lockout per key; bounded; log lines rate-limited."""

from __future__ import annotations

from fixserver.logon_throttle import (
    LockoutPolicy,
    LogonThrottle,
    LogRateLimiter,
)
from fixserver.settings import SessionSettings
from fixserver.timeutil import NS_PER_SECOND

S = NS_PER_SECOND
T0 = 1_704_196_800 * S
SESSION = ("session", "FIX.4.4:EXCH->CLIENT1")
ADDRESS = ("address", "10.0.0.7")
POLICY = LockoutPolicy()  # 5 failures, 60 s, delays 1 2 4 8 s


def test_delays_grow_then_the_fifth_failure_locks_out_for_60_seconds():
    """Failures 1-4 earn 1, 2, 4, 8 s; the 5th locks both keys out for 60 s, answered at once."""
    throttle = LogonThrottle()
    delays = [throttle.record_failure([SESSION, ADDRESS], POLICY, T0 + i * S) for i in range(4)]
    assert [v.delay_ns for v in delays] == [1 * S, 2 * S, 4 * S, 8 * S]
    assert all(v.locked_out == () for v in delays)
    assert throttle.first_locked([SESSION, ADDRESS], T0 + 4 * S) is None
    fifth = throttle.record_failure([SESSION, ADDRESS], POLICY, T0 + 4 * S)
    assert fifth.delay_ns == 0 and fifth.locked_out == (SESSION, ADDRESS)
    assert throttle.first_locked([ADDRESS], T0 + 63 * S) == (ADDRESS, T0 + 64 * S)
    assert throttle.active_lockouts(T0 + 63 * S) == 2
    assert throttle.first_locked([SESSION, ADDRESS], T0 + 64 * S) is None
    assert throttle.active_lockouts(T0 + 64 * S) == 0
    # After the lockout the count starts again from zero.
    assert throttle.record_failure([SESSION], POLICY, T0 + 65 * S).delay_ns == 1 * S


def test_keys_are_counted_separately_and_success_clears_only_its_session():
    """A success clears the session's count; the address keeps its failures."""
    throttle = LogonThrottle()
    other = ("session", "FIX.4.4:EXCH->CLIENT2")
    for i in range(4):
        throttle.record_failure([SESSION, ADDRESS], POLICY, T0 + i * S)
    throttle.record_success(SESSION)
    verdict = throttle.record_failure([other, ADDRESS], POLICY, T0 + 5 * S)
    assert verdict.locked_out == (ADDRESS,)  # the address's fifth failure
    assert throttle.locked_until_ns(SESSION, T0 + 5 * S) is None
    assert throttle.locked_until_ns(other, T0 + 5 * S) is None


def test_failures_are_forgotten_after_a_quiet_period():
    """A key without a failure for forget_after starts again at the first delay."""
    throttle = LogonThrottle(forget_after_ns=900 * S)
    for i in range(4):
        throttle.record_failure([ADDRESS], POLICY, T0 + i * S)
    assert throttle.record_failure([ADDRESS], POLICY, T0 + 904 * S).delay_ns == 1 * S
    assert len(throttle) == 1


def test_disabled_policy_and_strictest_of_sessions():
    """LogonLockoutFailures=0 turns the throttle off; unknown CompIDs get the strictest
    enabled policy of the sessions."""
    throttle = LogonThrottle()
    off = LockoutPolicy(max_failures=0)
    for i in range(20):
        assert throttle.record_failure([ADDRESS], off, T0 + i).delay_ns == 0
    assert len(throttle) == 0
    sessions = [
        SessionSettings("FIX.4.4", "EXCH", "A", logon_lockout_failures=0),
        SessionSettings("FIX.4.4", "EXCH", "B", logon_lockout_failures=7),
        SessionSettings("FIX.4.4", "EXCH", "C", logon_lockout_failures=3,
                        logon_lockout_seconds=10),
        SessionSettings("FIX.4.4", "EXCH", "D", logon_lockout_seconds=300),
    ]
    policy = LogonThrottle.for_sessions(sessions).default_policy
    assert (policy.max_failures, policy.lockout_ns) == (3, 300 * S)
    assert not LockoutPolicy.strictest([off]).enabled


def test_memory_is_bounded_by_max_keys():
    """A flood from more addresses than max_keys keeps only the most recent ones."""
    throttle = LogonThrottle(max_keys=100)
    for i in range(1000):
        throttle.record_failure([("address", f"10.1.{i // 256}.{i % 256}")], POLICY, T0 + i)
    assert len(throttle) == 100
    assert throttle.record_failure([("address", "10.1.3.231")], POLICY, T0 + S).delay_ns == 2 * S


def test_log_rate_limiter_reports_what_it_left_out():
    """At most max_lines per period; the first line of the next period says how many were
    left out."""
    limiter = LogRateLimiter(max_lines=3, period_ns=10 * S)
    allowed = [limiter.allow(T0 + i * S // 10) for i in range(50)]
    assert allowed[:3] == [0, 0, 0] and allowed[3:] == [None] * 47
    assert limiter.allow(T0 + 10 * S) == 47
    assert limiter.allow(T0 + 10 * S) == 0
