"""ResendScheduler: at most N resends run, others wait in order; turns go round robin,
skipping blocked ones; each is paced at its rate."""

from __future__ import annotations

import pytest

from fixserver.resend_scheduler import ResendScheduler


def never(key: str) -> bool:
    return False


def test_at_most_max_concurrent_run_and_the_rest_wait_in_arrival_order():
    """Beyond the cap requests wait; each end admits the longest-waiting one."""
    s: ResendScheduler[str] = ResendScheduler(2)
    assert [s.request(k) for k in "abcd"] == [True, True, False, False]
    assert s.request("c") is False and (s.running, s.waiting) == (2, 2)  # idempotent
    assert s.done("b") == ["c"]
    assert s.is_running("c") and not s.is_running("d")
    assert s.done("d") == []  # a waiting one gone: nobody admitted, it no longer waits
    assert (s.running, s.waiting) == (2, 0)
    assert s.done("a") == [] and s.done("zzz") == []


def test_turns_go_round_robin():
    """The running ones are served in turn, each going to the back after its chunk."""
    s: ResendScheduler[str] = ResendScheduler(3)
    for k in "abc":
        s.request(k)
    order = []
    for _ in range(6):
        key, _due = s.next_due(0, never)
        assert key is not None
        order.append(key)
        s.served(key, 10, 0, 0)
    assert "".join(order) == "abcabc"


def test_blocked_ones_are_skipped_and_none_due_if_all_blocked():
    """A blocked (backed-up) resend gets no turn; if all are blocked nothing is due."""
    s: ResendScheduler[str] = ResendScheduler(2)
    s.request("a")
    s.request("b")
    assert s.next_due(0, lambda k: k == "a") == ("b", None)
    assert s.next_due(0, lambda k: True) == (None, None)


def test_pacing_delays_the_next_chunk_by_messages_over_rate():
    """After n messages at rate r the next chunk is due n/r seconds later; 0 = unpaced."""
    s: ResendScheduler[str] = ResendScheduler(2)
    s.request("a")
    s.served("a", 100, 1_000, 5_000)  # 100 messages at 1,000/s: 0.1 s
    assert s.next_due(5_000, never) == (None, 5_000 + 100_000_000)
    assert s.next_due(5_000 + 100_000_000, never) == ("a", None)
    s.request("b")
    s.served("b", 100, 0, 0)
    assert s.next_due(1, never) == ("b", None)


def test_at_least_one_must_run():
    """A cap below one is a configuration error."""
    with pytest.raises(ValueError):
        ResendScheduler(0)
