"""The fix_sessions tracker coalesces each session's changes into one row built when taken."""

from __future__ import annotations

from fixserver.pg.rows import ns_to_datetime
from fixserver.pg.session_state import (
    DISCONNECTED,
    LOGGED_ON,
    SessionStateTracker,
    StoreNumbers,
)
from fixserver.settings import SessionSettings

T0 = 1_700_000_000_000_000_000
S = 1_000_000_000
ACME = SessionSettings("FIX.4.4", "EXCH", "ACME1", firm="ACME")
BETA = SessionSettings("FIX.4.4", "EXCH", "BETA1", firm="BETA")


def numbers(sender: int, target: int, created: int = T0) -> StoreNumbers:
    return StoreNumbers(sender, target, created)


def tracked() -> SessionStateTracker:
    """A tracker with ACME and BETA tracked and their first rows already taken."""
    tracker = SessionStateTracker()
    tracker.track(ACME, numbers(1, 1))
    tracker.track(BETA, numbers(1, 1))
    tracker.take(T0)
    return tracker


def test_tracked_sessions_are_due_once_as_disconnected_with_their_store_numbers() -> None:
    """Tracking a session makes its first row due: DISCONNECTED, the store's seqs, no times."""
    tracker = SessionStateTracker()
    tracker.track(ACME, numbers(57, 60, T0 - 5 * S))
    tracker.track(ACME, numbers(1, 1))  # already tracked: ignored
    assert tracker.pending == 1 and not tracker.urgent
    (row,) = tracker.take(T0)
    assert (row.session_id, row.state, row.next_sender_seq, row.next_target_seq) == \
        ("FIX.4.4:EXCH->ACME1", DISCONNECTED, 57, 60)
    assert (row.firm_id, row.role, row.last_logon, row.last_logout) == \
        ("ACME", "order-entry", None, None)
    assert row.creation_time == ns_to_datetime(T0 - 5 * S)
    assert row.updated_at == ns_to_datetime(T0)
    assert tracker.pending == 0 and tracker.take(T0 + 1) == []


def test_many_changes_coalesce_into_one_row_per_session_with_the_latest_values() -> None:
    """Logon, many seq moves and a logout of one session give one row carrying the last."""
    tracker = tracked()
    tracker.logged_on(ACME, numbers(2, 2), T0 + S)
    assert tracker.urgent
    for seq in range(3, 50):
        tracker.observe(ACME.session_id, numbers(seq, seq + 1))
    tracker.logged_out(ACME, numbers(51, 52), T0 + 3 * S)
    (row,) = tracker.take(T0 + 4 * S)
    assert (row.state, row.next_sender_seq, row.next_target_seq) == (DISCONNECTED, 51, 52)
    assert row.last_logon == ns_to_datetime(T0 + S)
    assert row.last_logout == ns_to_datetime(T0 + 3 * S)
    assert not tracker.urgent and tracker.pending == 0


def test_unchanged_numbers_are_not_a_change_and_seq_moves_are_not_urgent() -> None:
    """Sampling the same store numbers makes nothing due; a moved seq is due but not urgent."""
    tracker = tracked()
    assert tracker.observe(ACME.session_id, numbers(1, 1)) is False
    assert tracker.pending == 0
    assert tracker.observe(BETA.session_id, numbers(2, 1)) is True
    assert tracker.pending == 1 and not tracker.urgent
    tracker.observe(ACME.session_id, numbers(1, 1, T0 + S))  # a reset: new creation time
    rows = tracker.take(T0 + 2 * S)
    assert [(r.session_id, r.next_sender_seq) for r in rows] == \
        [("FIX.4.4:EXCH->BETA1", 2), ("FIX.4.4:EXCH->ACME1", 1)]
    assert rows[1].creation_time == ns_to_datetime(T0 + S)


def test_logged_on_state_and_logon_time_stay_until_a_logout() -> None:
    """After a logon, later rows still say LOGGED_ON with the logon time and no logout."""
    tracker = tracked()
    tracker.logged_on(ACME, numbers(2, 2), T0 + S)
    tracker.take(T0 + S)
    tracker.observe(ACME.session_id, numbers(5, 4))
    (row,) = tracker.take(T0 + 2 * S)
    assert (row.state, row.next_sender_seq, row.last_logon, row.last_logout) == \
        (LOGGED_ON, 5, ns_to_datetime(T0 + S), None)
    assert tracker.state_of(ACME.session_id) == LOGGED_ON
    assert tracker.state_of("nope") is None


def test_a_failed_write_makes_its_sessions_due_again_with_their_current_values() -> None:
    """retry() hands the sessions back; the next row is rebuilt from the newest values."""
    tracker = tracked()
    tracker.logged_on(ACME, numbers(2, 2), T0 + S)
    failed = tracker.take(T0 + S)
    tracker.observe(ACME.session_id, numbers(9, 9))  # moved while the write was failing
    tracker.retry(failed)
    assert tracker.pending == 1
    (row,) = tracker.take(T0 + 2 * S)
    assert (row.state, row.next_sender_seq, row.last_logon) == \
        (LOGGED_ON, 9, ns_to_datetime(T0 + S))
    assert row.updated_at == ns_to_datetime(T0 + 2 * S)


def test_a_session_not_tracked_yet_is_tracked_by_its_logon() -> None:
    """A logon of a session the tracker did not know adds it (the upsert inserts the row)."""
    tracker = SessionStateTracker()
    tracker.logged_on(BETA, numbers(2, 2), T0)
    (row,) = tracker.take(T0)
    assert (row.session_id, row.state) == ("FIX.4.4:EXCH->BETA1", LOGGED_ON)
