"""A clean stop writes a snapshot: the next start replays nothing and holds the same state
(engine hash, the FIX layer's orders); a crash-like stop (no final snapshot) replays."""

from __future__ import annotations

import pytest_twisted

from tests.fixserver.inprocess_exchange import new_order, session_of, start_exchange


@pytest_twisted.inlineCallbacks
def test_clean_stop_snapshots_and_the_restart_replays_nothing(tmp_path):
    """Orders, a trade; stop; the restart starts from the shutdown snapshot (0 commands
    replayed), with the same state hash and the live order known to the ledger."""
    server = start_exchange(tmp_path)
    service = server.application
    acme, beta = session_of(server, "ACME1"), session_of(server, "BETA1")
    now = server.now_ns()
    service.on_message(acme, new_order("S1", "A1", "2", "0.010", "60000"), now)
    service.on_message(beta, new_order("B1", "B1", "1", "0.004", "60000"), now)
    service.pipeline.tick()
    yield service.pipeline.when_idle()
    before = service.pipeline.engine.state_hash()
    yield server.stop()

    restarted = start_exchange(tmp_path)
    try:
        pipeline = restarted.application.pipeline
        assert pipeline.recovered_extra is not None, "started from a snapshot"
        assert pipeline.recovered_commands == 0, "the shutdown snapshot covers every command"
        assert pipeline.engine.state_hash() == before
        view = restarted.application.app.ledger.find(acme.settings.session_id, "S1")
        assert view is not None and view.live and view.filled == 4
    finally:
        yield restarted.stop()


@pytest_twisted.inlineCallbacks
def test_without_the_final_snapshot_the_restart_replays_the_journal(tmp_path):
    """snapshot_on_shutdown off (as after a crash): the journal tail is replayed."""
    server = start_exchange(tmp_path)
    service = server.application
    service.on_message(session_of(server, "ACME1"), new_order("S1", "A1", "2", "0.010", "60000"),
                       server.now_ns())
    service.pipeline.tick()
    yield service.pipeline.when_idle()
    service.pipeline.snapshot_on_shutdown = False
    yield server.stop()
    restarted = start_exchange(tmp_path)
    try:
        assert restarted.application.pipeline.recovered_extra is None
        assert restarted.application.pipeline.recovered_commands > 0
    finally:
        yield restarted.stop()
