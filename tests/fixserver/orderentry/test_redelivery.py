"""Reports of journaled ticks that never reached the sessions' stores are stored at start-up,
once, with the live path's ExecIDs and content; nothing already stored is repeated."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest_twisted

from engine.commands import SetInstrumentStatus
from engine.enums import InstrumentStatus
from fixserver.codec import encode, parse
from fixserver.orderentry.redelivery import report_key, stored_key
from fixserver.server import FixServer
from tests.fixserver.inprocess_exchange import fix_message, new_order, start_exchange

HEADER_TAGS = {8, 9, 10, 34, 35, 49, 52, 56}


HALTED, TRADING = InstrumentStatus.HALTED, InstrumentStatus.TRADING


def _cancel(cl_ord_id: str, orig: str) -> Any:
    return fix_message("F", (11, cl_ord_id), (41, orig), (55, "BTC-PERP"), (54, "2"),
                       (60, "20240101-00:00:00"))


def _sessions(server: FixServer) -> dict[str, Any]:
    return {s.settings.target_comp_id: s for s in server.sessions}


def _stored(session: Any) -> list[tuple[str, list[tuple[int, bytes]]]]:
    """(MsgType, body fields) of every message in the session's store, in MsgSeqNum order."""
    store = session.store
    out = []
    for _, raw in store.get_sent(1, store.next_sender_seq() - 1):
        msg = parse(raw)
        out.append((msg.msg_type.decode(), [(t, v) for t, v in msg.fields
                                             if t not in HEADER_TAGS]))
    return out


def _body(fields: list) -> list[tuple[int, bytes]]:
    return [(t, v if isinstance(v, bytes) else str(v).encode()) for t, v in fields]


def _recorder(into: list) -> Any:
    """A Session.send stand-in that keeps (MsgType, body) and stores nothing."""

    def send(msg_type: str, fields: list, now_ns: int, **kw: Any) -> int:
        into.append((msg_type, _body(fields)))
        return 0

    return send


@pytest_twisted.inlineCallbacks
def test_reports_lost_between_fsync_and_store_are_stored_once_at_restart(tmp_path):
    """Ticks journaled but never stored (a crash between the fsync and the release) are
    rebuilt from the journal tail after a snapshot and stored in the owner's and the drop
    copy's stores, in order and identical to what the live path made; a second restart adds
    nothing; the ledger knows the orders that ended in the tail."""
    server = start_exchange(tmp_path, drop_copy=True)
    service = server.application
    s = _sessions(server)
    acme, beta = s["ACME1"], s["BETA1"]
    now = server.now_ns()
    service.on_message(acme, new_order("S1", "A1", "2", "0.010", "60000"), now)
    service.pipeline.tick()
    service.pipeline.take_snapshot()  # S1 is live at the snapshot
    yield service.pipeline.when_idle()
    service.on_message(beta, new_order("B1", "B1", "1", "0.004", "60000"), now)  # S1 partly
    service.on_message(acme, new_order("S2", "A1", "2", "0.001", "61000"), now)
    service.pipeline.tick()
    yield service.pipeline.when_idle()
    before = {name: _stored(x) for name, x in s.items()}

    # The crash window: these ticks are journaled, their reports never reach a store.
    lost: dict[str, list] = {name: [] for name in s}
    for name, x in s.items():
        x.send = _recorder(lost[name])
    service.on_message(beta, new_order("B2", "B1", "1", "0.006", "60000"), now)  # S1 filled
    service.pipeline.submit(("", "A"), SetInstrumentStatus(0, 0, "BTC-PERP", HALTED))
    service.pipeline.tick()
    yield service.pipeline.when_idle()
    service.on_message(acme, _cancel("C2", "S2"), now)  # the engine rejects it: halted
    service.pipeline.submit(("", "A"), SetInstrumentStatus(0, 0, "BTC-PERP", TRADING))
    # behind C2 in ACME1's lane: handled once C2 is released (trading again), cancels S2
    service.on_message(acme, _cancel("C1", "S2"), now)
    service.pipeline.tick()
    yield service.pipeline.when_idle()
    mass_cancel = fix_message("q", (11, "M1"), (530, "7"), (60, "20240101-00:00:00"))
    service.on_message(acme, mass_cancel, now)
    service.pipeline.tick()
    yield service.pipeline.when_idle()
    service.pipeline.snapshot_on_shutdown = False  # as a crash: the next start replays the tail
    yield server.stop()
    assert {mt for mt, _ in lost["ACME1"]} == {"8", "9", "r"}, lost["ACME1"]
    assert lost["BETA1"] and lost["ACMEDC"]

    restarted = start_exchange(tmp_path, drop_copy=True)
    try:
        assert restarted.application.pipeline.recovered_extra is not None, "from a snapshot"
        result = restarted.application.redelivery
        assert result.redelivered == {
            sid: len(lost[x.settings.target_comp_id])
            for sid, x in ((x.settings.session_id, x) for x in restarted.sessions)}
        after = {name: _stored(x) for name, x in _sessions(restarted).items()}
        for name in s:
            assert after[name] == before[name] + lost[name], name
        ledger = restarted.application.app.ledger
        s1 = ledger.find(acme.settings.session_id, "S1")
        assert s1 is not None and s1.status == "2" and not s1.live, "S1 filled in the tail"
        s2 = ledger.find(acme.settings.session_id, "S2")
        assert s2 is not None and s2.status == "4"
    finally:
        yield restarted.stop()

    again = start_exchange(tmp_path, drop_copy=True)
    try:
        second = again.application.redelivery
        assert second.total_redelivered == 0
        assert second.stored == result.stored + result.total_redelivered
        assert second.rebuilt == 2, "only the 9 and the r are formatted to be looked up"
        for name, x in _sessions(again).items():
            keys = [stored_key(raw) for _, raw in x.store.get_sent(1, x.store.next_sender_seq())]
            engine_keys = [k for k in keys if k is not None]
            duplicated = [k for k, n in Counter(engine_keys).items() if n > 1]
            assert not duplicated, (name, duplicated)
    finally:
        yield again.stop()


@pytest_twisted.inlineCallbacks
def test_reports_of_ticks_before_a_store_reset_are_not_redelivered(tmp_path):
    """A session whose store was reset after the lost tick (a new sequence period) gets
    nothing from before the reset."""
    server = start_exchange(tmp_path, drop_copy=True)
    service = server.application
    acme = _sessions(server)["ACME1"]
    now = server.now_ns()
    acme.send = lambda *a, **kw: 0
    service.on_message(acme, new_order("S1", "A1", "2", "0.010", "60000"), now)
    service.pipeline.tick()
    yield service.pipeline.when_idle()
    del acme.send
    acme.store.reset(server.now_ns() + 1)
    service.pipeline.snapshot_on_shutdown = False  # as a crash: the next start replays the tail
    yield server.stop()

    restarted = start_exchange(tmp_path, drop_copy=True)
    try:
        result = restarted.application.redelivery
        assert result.total_redelivered == 0
        assert result.skipped_before_reset == 1
        assert _stored(_sessions(restarted)["ACME1"]) == []
    finally:
        yield restarted.stop()


def test_report_key_matches_the_key_read_back_from_the_encoded_message():
    """The key of a report's fields equals the key scanned from its encoded message (8, 9, r),
    and a tag that merely ends in the key's digits is not taken for it."""
    cases = [
        ("8", [(37, "5"), (11, "A"), (117, "Q"), (17, "12-M"), (150, "F")]),
        ("9", [(37, "5"), (11, "C2"), (41, "S2"), (39, "4"), (102, 0), (58, "x")]),
        ("r", [(11, "M1"), (37, "MC-44"), (530, "7"), (531, "7"), (533, 0)]),
    ]
    for msg_type, fields in cases:
        raw = encode([(35, msg_type), (49, "EXCH"), (56, "C"), (34, 2), (115, "ON"),
                      (52, "20240101-00:00:00"), *fields])
        assert stored_key(raw) == report_key(msg_type, fields)
    assert report_key("8", cases[0][1]) == ("8", "12-M")
    assert stored_key(encode([(35, "0"), (49, "E"), (56, "C"), (34, 2)])) is None
