"""Session helpers: UTCTimestamp conversion, session schedules, retransmit plans, signing."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fixserver.logon_auth import NonceMemory, sign_logon, signed_logon_payload
from fixserver.retransmit import GapFill, Resend, clamp_end, plan_retransmit
from fixserver.schedule import SessionSchedule
from fixserver.timeutil import format_utc_timestamp, parse_utc_timestamp

T0 = 1_704_196_800_000_000_000  # 2024-01-02 12:00:00 UTC (a Tuesday)
S = 1_000_000_000
H = 3600 * S


def test_format_utc_timestamp_with_and_without_millis():
    """SendingTime is formatted YYYYMMDD-HH:MM:SS.sss (or whole seconds)."""
    assert format_utc_timestamp(T0 + 123_456_789) == b"20240102-12:00:00.123"
    assert format_utc_timestamp(T0, millis=False) == b"20240102-12:00:00"


@settings(max_examples=200, derandomize=True)
@given(st.integers(min_value=0, max_value=4_102_444_800 * S))
def test_parse_inverts_format_to_the_millisecond(now_ns):
    """parse(format(t)) is t truncated to milliseconds."""
    assert parse_utc_timestamp(format_utc_timestamp(now_ns)) == now_ns - now_ns % 1_000_000


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"20240102-12:00",
        b"20240230-12:00:00",
        b"20230229-00:00:00",
        b"20240102-24:00:00",
        b"20240102-12:00:00.1",
        b"2024010x-12:00:00",
        b"20240102 12:00:00",
    ],
)
def test_parse_rejects_malformed_timestamps(bad):
    """Malformed UTCTimestamps raise ValueError."""
    with pytest.raises(ValueError):
        parse_utc_timestamp(bad)


def test_parse_accepts_micro_and_nanoseconds():
    """Micro- and nanosecond fractions are accepted."""
    assert parse_utc_timestamp(b"20240102-12:00:00.000001") == T0 + 1000
    assert parse_utc_timestamp(b"20240102-12:00:00.000000001") == T0 + 1


def test_daily_schedule_open_window_and_period_start():
    """A daily 08:00-17:00 window: open inside, closed outside, period starts at 08:00."""
    sched = SessionSchedule(datetime.time(8), datetime.time(17))
    assert sched.is_open(T0) and not sched.is_open(T0 + 6 * H)
    assert sched.period_start_ns(T0) == T0 - 4 * H
    assert sched.close_ns(T0) == T0 + 5 * H + 1


def test_overnight_schedule_wraps_midnight():
    """A 22:00-06:00 window is open at 23:00 and 05:00, closed at noon."""
    sched = SessionSchedule(datetime.time(22), datetime.time(6))
    assert sched.is_open(T0 + 11 * H) and sched.is_open(T0 + 17 * H)
    assert not sched.is_open(T0)
    assert sched.period_start_ns(T0 + 17 * H) == T0 + 10 * H


def test_equal_start_and_end_is_always_open_with_daily_period():
    """StartTime == EndTime: always open, a new period each day at that time."""
    sched = SessionSchedule(datetime.time(0), datetime.time(0))
    assert sched.is_open(T0) and sched.close_ns(T0) is None
    assert sched.period_start_ns(T0) == T0 - 12 * H


def test_weekly_schedule_uses_days():
    """Monday 00:00 to Friday 22:00: Tuesday open, Saturday closed."""
    sched = SessionSchedule(datetime.time(0), datetime.time(22), start_day=0, end_day=4)
    assert sched.is_open(T0)
    assert not sched.is_open(T0 + 4 * 24 * H)
    assert sched.period_start_ns(T0) == T0 - 36 * H


def test_unscheduled_session_always_open_never_new_period():
    """No StartTime/EndTime: always open and no period resets."""
    sched = SessionSchedule(None, None)
    assert sched.is_open(T0) and sched.period_start_ns(T0) is None


def test_plan_merges_admin_runs_into_gap_fills():
    """Holes become one gap fill each; stored messages are resent in order."""
    stored = [(5, b"m5"), (6, b"m6"), (9, b"m9")]
    assert plan_retransmit(stored, 2, 10) == [
        GapFill(2, 5),
        Resend(5, b"m5"),
        Resend(6, b"m6"),
        GapFill(7, 9),
        Resend(9, b"m9"),
        GapFill(10, 11),
    ]


def test_clamp_end_handles_infinity_and_beyond():
    """EndSeqNo 0 or beyond our last message means our last message."""
    assert clamp_end(0, 11) == 10 and clamp_end(50, 11) == 10 and clamp_end(7, 11) == 7


def test_signed_logon_payload_and_signature_are_documented_format():
    """The signed string is 52|34|49|56|nonce and the signature is hex HMAC-SHA256."""
    payload = signed_logon_payload(b"20240102-12:00:00.000", b"1", b"C1", b"EXCH", b"n0nce123")
    assert payload == b"20240102-12:00:00.000|1|C1|EXCH|n0nce123"
    assert len(sign_logon(b"key", payload)) == 64


def test_nonce_memory_forgets_after_horizon():
    """Nonces are remembered for the horizon, then forgotten."""
    memory = NonceMemory(horizon_ns=60 * S)
    memory.remember(b"a", T0)
    assert memory.seen(b"a", T0 + 59 * S)
    assert not memory.seen(b"a", T0 + 61 * S)
