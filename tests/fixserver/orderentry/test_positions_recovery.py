"""Positions follow released fills and survive a restart that starts from a snapshot."""

from __future__ import annotations

import pytest_twisted

from tests.fixserver.inprocess_exchange import new_order, session_of, start_exchange


@pytest_twisted.inlineCallbacks
def test_positions_survive_restart_from_snapshot_plus_journal_tail(tmp_path):
    """Fills before a snapshot and after it both count in the positions rebuilt at start-up."""
    server = start_exchange(tmp_path)
    service = server.application
    acme = session_of(server, "ACME1")
    beta = session_of(server, "BETA1")
    now = server.now_ns()
    service.on_message(acme, new_order("S1", "A1", "2", "0.010", "60000"), now)
    service.on_message(beta, new_order("B1", "B1", "1", "0.004", "60000"), now)
    service.pipeline.tick()  # match the inbox now; when_idle covers matched ticks
    service.pipeline.take_snapshot()  # at this tick boundary, as the periodic snapshots do
    yield service.pipeline.when_idle()
    before = service.positions.position("B1", "BTC-PERP")
    assert before.size > 0, "the buyer holds a long position after the fill"
    service.on_message(beta, new_order("B2", "B1", "2", "0.001", "59000"), now)  # reduces ...
    service.on_message(acme, new_order("S2", "A1", "1", "0.001", "59000"), now)  # ... on this fill
    service.pipeline.tick()  # match the inbox now; when_idle covers matched ticks
    yield service.pipeline.when_idle()
    expected = service.positions.to_dict()
    assert service.positions.position("B1", "BTC-PERP").size < before.size
    yield server.stop()

    restarted = start_exchange(tmp_path)
    try:
        assert restarted.application.pipeline.recovered_extra is not None, "started from a snapshot"
        assert restarted.application.positions.to_dict() == expected
    finally:
        yield restarted.stop()
