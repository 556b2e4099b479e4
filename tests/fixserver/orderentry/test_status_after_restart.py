"""A status request (H) after a restart finds orders that ended before the snapshot the
restart started from (retained for the trading day), as well as live ones."""

from __future__ import annotations

from typing import Any

import pytest_twisted

from tests.fixserver.inprocess_exchange import (
    fix_message,
    new_order,
    session_of,
    start_exchange,
)


def _answers(session: Any, into: list) -> None:
    """Replace the session's send with a recorder of (MsgType, {tag: value})."""

    def send(msg_type: str, fields: list, now_ns: int, **kw: Any) -> int:
        into.append((msg_type, {t: (v.decode() if isinstance(v, bytes) else str(v))
                                for t, v in fields}))
        return 0

    session.send = send


@pytest_twisted.inlineCallbacks
def test_status_of_an_order_filled_before_the_snapshot(tmp_path):
    """S1 and B1 fill completely, a snapshot is taken, the server restarts from it: H for B1
    answers 39=2 (filled) with its quantities, H for the live L1 answers 39=0."""
    server = start_exchange(tmp_path)
    service = server.application
    acme = session_of(server, "ACME1")
    beta = session_of(server, "BETA1")
    now = server.now_ns()
    service.on_message(acme, new_order("S1", "A1", "2", "0.004", "60000"), now)
    service.on_message(beta, new_order("B1", "B1", "1", "0.004", "60000"), now)
    service.on_message(beta, new_order("L1", "B1", "1", "0.001", "59000"), now)
    service.pipeline.tick()
    service.pipeline.take_snapshot()
    yield service.pipeline.when_idle()
    yield server.stop()

    restarted = start_exchange(tmp_path)
    try:
        assert restarted.application.pipeline.recovered_extra is not None, "from a snapshot"
        assert restarted.application.pipeline.recovered_commands == 0
        beta = session_of(restarted, "BETA1")
        got: list = []
        _answers(beta, got)
        now = restarted.now_ns()
        for cl in ("B1", "L1", "NOPE"):
            restarted.application.on_message(
                beta, fix_message("H", (11, cl), (55, "BTC-PERP"), (54, "1")), now)
        (filled, live, unknown) = [f for _, f in got]
        assert (filled[150], filled[39], filled[14], filled[151]) == ("I", "2", "0.004", "0")
        assert filled[6] == "60000.0"
        assert (live[150], live[39], live[151]) == ("I", "0", "0.001")
        assert unknown[39] == "8"
    finally:
        yield restarted.stop()
