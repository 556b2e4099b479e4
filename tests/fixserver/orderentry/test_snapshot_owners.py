"""The FIX layer's snapshot state is that of the snapshot's tick even when the engine has
matched later ticks by the time it is gathered, and order owners leave memory as orders end
(not at snapshots, which may be gathered in a forked child)."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.fixserver.inprocess_exchange import new_order, session_of, start_exchange


@pytest.mark.parametrize("in_child", [True, False])
@pytest_twisted.inlineCallbacks
def test_an_order_live_at_the_snapshot_keeps_its_owner_when_it_ends_before_the_release(
        tmp_path, in_child):
    """S1 rests at the snapshot's tick; B1 fills it in the next tick, matched while the
    snapshot's tick is still being committed. After a crash and a restart from that
    snapshot, the ledger knows S1 and its owner, and S1's fill is in ACME1's store."""
    server = start_exchange(tmp_path)
    service = server.application
    service.pipeline.snapshot_in_child = in_child
    acme, beta = session_of(server, "ACME1"), session_of(server, "BETA1")
    now = server.now_ns()
    service.on_message(acme, new_order("S1", "A1", "2", "0.004", "60000"), now)
    service.pipeline.tick()
    service.pipeline.take_snapshot()  # S1 live here
    service.on_message(beta, new_order("B1", "B1", "1", "0.004", "60000"), now)
    service.pipeline.tick()  # matched before the snapshot's tick is durable and released
    assert not service.pipeline.engine.orders, "the engine is past the snapshot's tick"
    yield service.pipeline.when_idle()
    yield service.pipeline.when_snapshots_written()
    assert service.pipeline.snapshots_written == 1
    assert service.recorder.owners == {}, "both orders ended: no owner kept"
    service.pipeline.snapshot_on_shutdown = False  # as a crash: restart from that snapshot
    yield server.stop()

    restarted = start_exchange(tmp_path)
    try:
        pipeline = restarted.application.pipeline
        assert pipeline.recovered_extra is not None and pipeline.recovered_commands >= 1
        saved_owners = pipeline.recovered_extra["owners"]
        assert list(saved_owners.values()) == [acme.settings.session_id], "S1's owner saved"
        ledger = restarted.application.app.ledger
        s1 = ledger.find(acme.settings.session_id, "S1")
        assert s1 is not None and s1.status == "2" and not s1.live, "S1's fill was known"
        store = session_of(restarted, "ACME1").store
        reports = [raw for _, raw in store.get_sent(1, store.next_sender_seq())]
        assert sum(b"\x0111=S1\x01" in r and b"\x0139=2\x01" in r for r in reports) == 1
        assert restarted.application.recorder.owners == {}
    finally:
        yield restarted.stop()


@pytest_twisted.inlineCallbacks
def test_cl_ord_ids_from_the_snapshot_and_the_replayed_tail_stay_taken_after_a_restart(
        tmp_path):
    """One copy of the day's ClOrdIDs (the recorder's) is what snapshots carry and replay
    extends: after a crash, a ClOrdID used before the snapshot and one used in the replayed
    tail are both refused as duplicates; a new one is accepted."""
    server = start_exchange(tmp_path)
    service = server.application
    acme = session_of(server, "ACME1")
    now = server.now_ns()
    service.on_message(acme, new_order("BEFORE", "A1", "1", "0.001", "59900"), now)
    service.pipeline.tick()
    service.pipeline.take_snapshot()
    yield service.pipeline.when_idle()
    yield service.pipeline.when_snapshots_written()
    service.on_message(acme, new_order("TAIL", "A1", "1", "0.001", "59900"), now)
    service.pipeline.tick()
    yield service.pipeline.when_idle()
    service.pipeline.snapshot_on_shutdown = False  # as a crash: TAIL is replayed
    yield server.stop()

    restarted = start_exchange(tmp_path)
    try:
        assert restarted.application.pipeline.recovered_commands >= 1
        acme = session_of(restarted, "ACME1")
        answers: list = []

        def send(msg_type, fields, now_ns, **kw):
            answers.append((msg_type, dict(fields)))
            return 0

        acme.send = send
        now = restarted.now_ns()
        for cl in ("BEFORE", "TAIL", "FRESH"):
            restarted.application.on_message(
                acme, new_order(cl, "A1", "1", "0.001", "59900"), now)
        refusals = [f for t, f in answers if t == "8" and f.get(150) in ("8", b"8")]
        assert [(f[11], f[103]) for f in refusals] == [("BEFORE", 6), ("TAIL", 6)], answers
        restarted.application.pipeline.tick()
        yield restarted.application.pipeline.when_idle()
        fresh = [f for t, f in answers if t == "8" and f.get(11) == "FRESH"]
        assert fresh and str(fresh[0][150]) == "0", fresh[0].get(58)  # accepted
    finally:
        yield restarted.stop()
