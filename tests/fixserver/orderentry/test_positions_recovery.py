"""Positions follow released fills and survive a restart that starts from a snapshot."""

from __future__ import annotations

import pytest_twisted
from twisted.internet import reactor

from fixserver.codec import encode, parse
from fixserver.config import parse_config
from fixserver.server import FixServer

CONFIG = """\
[DEFAULT]
BeginString=FIX.4.4
SenderCompID=EXCH
SocketAcceptAddress=127.0.0.1
SocketAcceptPort=0
FileStorePath={tmp}/store
JournalPath={tmp}/journal
ShutdownTimeout=1
[FIRM]
Firm=ACME
Accounts=A1
[FIRM]
Firm=BETA
Accounts=B1
[SESSION]
TargetCompID=ACME1
Firm=ACME
[SESSION]
TargetCompID=BETA1
Firm=BETA
"""


def _order(cl_ord_id: str, account: str, side: str, qty: str, price: str):
    return parse(encode([
        (35, "D"), (49, "X"), (56, "EXCH"), (34, 1), (52, "20240101-00:00:00"),
        (11, cl_ord_id), (1, account), (55, "BTC-PERP"), (54, side),
        (60, "20240101-00:00:00"), (38, qty), (40, "2"), (44, price),
    ]))


def _start(tmp_path) -> FixServer:
    config = parse_config(CONFIG.format(tmp=tmp_path), base_dir=str(tmp_path))
    server = FixServer(config, reactor)
    server.start()
    return server


@pytest_twisted.inlineCallbacks
def test_positions_survive_restart_from_snapshot_plus_journal_tail(tmp_path):
    """Fills before a snapshot and after it both count in the positions rebuilt at start-up."""
    server = _start(tmp_path)
    service = server.application
    acme = next(s for s in server.sessions if s.settings.target_comp_id == "ACME1")
    beta = next(s for s in server.sessions if s.settings.target_comp_id == "BETA1")
    now = server.now_ns()
    service.on_message(acme, _order("S1", "A1", "2", "0.010", "60000"), now)
    service.on_message(beta, _order("B1", "B1", "1", "0.004", "60000"), now)
    service.pipeline.tick()  # match the inbox now; when_idle covers matched ticks
    service.pipeline.take_snapshot()  # at this tick boundary, as the periodic snapshots do
    yield service.pipeline.when_idle()
    before = service.positions.position("B1", "BTC-PERP")
    assert before.size > 0, "the buyer holds a long position after the fill"
    service.on_message(beta, _order("B2", "B1", "2", "0.001", "59000"), now)  # reduces ...
    service.on_message(acme, _order("S2", "A1", "1", "0.001", "59000"), now)  # ... on this fill
    service.pipeline.tick()  # match the inbox now; when_idle covers matched ticks
    yield service.pipeline.when_idle()
    expected = service.positions.to_dict()
    assert service.positions.position("B1", "BTC-PERP").size < before.size
    yield server.stop()

    restarted = _start(tmp_path)
    try:
        assert restarted.application.pipeline.recovered_extra is not None, "started from a snapshot"
        assert restarted.application.positions.to_dict() == expected
    finally:
        yield restarted.stop()
