"""A status request (H) for an ended order no longer in memory is answered from the status
store, in the session's order: what the session sends after it waits for the read."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import REGISTRY
from twisted.internet import defer, task

from fixserver.orderentry.lanes import LaneError, SessionLanes
from fixserver.orderentry.status import STORE_UNAVAILABLE
from fixserver.pg.order_reader import PgStatusReader

from .harness import Exchange, ShadowStore, msg, new_order

KEY = ((55, "BTC-PERP"), (54, "1"), (60, "20240101-00:00:00"))


def _filled_pair(x: Exchange, n: int = 1) -> int:
    """S<n> (BETA) and B<n> (ACME) fill each other; returns B<n>'s OrderID."""
    x.run(x.beta, new_order(f"S{n}", side="2", qty="0.002", account="B1"))
    (ack, fill) = x.run(x.acme, new_order(f"B{n}", qty="0.002"))
    assert fill[1][39] == "2"
    x.beta.take()
    return int(ack[1][37])


def kinds(received: list) -> list[tuple[str, str, str]]:
    """(MsgType, ExecType, ClOrdID) of each message received."""
    return [(m, f.get(150, ""), f.get(11, "")) for m, f in received]


def test_status_of_an_evicted_order_comes_from_the_store() -> None:
    """By ClOrdID and by OrderID, the evicted order is reported as the ledger did (OrdStatus,
    quantities, AvgPx, OrdStatusReqID echoed); another firm's OrderID stays unknown."""
    x = Exchange(max_ended_orders=0)
    store = ShadowStore(x, at_once=True)
    oid = _filled_pair(x)
    assert not x.app.ledger.orders, "both ended orders left memory"
    (by_cl,) = x.run(x.acme, msg("H", (11, "B1"), (790, "Q1"), *KEY))
    f = by_cl[1]
    assert (f[150], f[39], f[11], f[37], f[14], f[151], f[6], f[790]) == (
        "I", "2", "B1", str(oid), "0.002", "0", "60000.0", "Q1")
    (by_id,) = x.run(x.acme, msg("H", (37, str(oid)), *KEY))
    assert by_id[1][39] == "2" and by_id[1][11] == "B1"
    (other_firm,) = x.run(x.beta, msg("H", (37, str(oid)), *KEY))
    assert (other_firm[1][39], other_firm[1][58]) == ("8", "unknown order")
    (never,) = x.run(x.acme, msg("H", (11, "NEVER"), *KEY))
    assert (never[1][39], never[1][58]) == ("8", "unknown order")
    assert [q.cl_ord_id for q in store.lookups] == ["B1", "", "", "NEVER"]


def test_status_read_holds_the_sessions_later_messages_in_order() -> None:
    """H for an evicted order, then a D and an F for it in one burst: nothing is answered or
    submitted until the read completes; then the status, the New ack and the cancel, in
    order; another session is not held up meanwhile."""
    x = Exchange(max_ended_orders=0)
    store = ShadowStore(x)
    _filled_pair(x)
    x.send(x.acme, msg("H", (11, "B1"), *KEY))
    x.send(x.acme, new_order("C2", price="59000"))
    x.send(x.acme, msg("F", (41, "C2"), (11, "X2"), *KEY))
    assert x.app.lanes.reading(x.acme.settings.session_id)
    x.pipeline.tick()
    assert x.acme.take() == [] and not x.pipeline.sequencer.pending, "the D waits too"
    x.send(x.beta, new_order("S9", side="2", qty="0.001", account="B1", price="61000"))
    x.pipeline.tick()
    assert kinds(x.beta.take()) == [("8", "0", "S9")], "another session is not held up"
    x.flushed.clear()
    assert store.complete() == 1
    assert x.flushed == [x.acme], "answered outside a pump: the session is flushed"
    x.settle()
    got = x.acme.take()
    assert kinds(got) == [("8", "I", "B1"), ("8", "0", "C2"), ("8", "4", "X2")], got
    assert got[0][1][39] == "2"
    assert [o.cl_ord_id for o in x.engine.orders.values()] == ["S9"], "C2 was canceled"


def test_a_status_read_behind_unreleased_requests_starts_after_them() -> None:
    """D then H (evicted order) in one burst: the H waits for the D's release, then reads;
    answers in order."""
    x = Exchange(max_ended_orders=0)
    store = ShadowStore(x)
    _filled_pair(x)
    x.send(x.acme, new_order("C2", price="59000"))
    x.send(x.acme, msg("H", (11, "B1"), *KEY))
    assert store.lookups == []
    x.pipeline.tick()
    assert len(store.lookups) == 1
    x.settle()
    assert kinds(x.acme.take()) == [("8", "0", "C2"), ("8", "I", "B1")]


def test_eviction_waits_for_the_stores_durable_mark() -> None:
    """With a store, an ended order leaves memory only once the store holds its final state
    (it ended in a command below the store's durable mark)."""
    x = Exchange(max_ended_orders=0)
    mark: list[Any] = [None]
    x.app.use_status_store(ShadowStore(x, at_once=True), lambda: mark[0])
    _filled_pair(x)
    ledger = x.app.ledger
    assert len(ledger.orders) == 2, "the mark is not known yet"
    (end_seq,) = {v.ended_seq for v in ledger.orders.values()}  # both ended in one trade
    mark[0] = end_seq
    assert x.app.evict_ended() == 0 and len(ledger.orders) == 2
    mark[0] = end_seq + 1
    assert x.app.evict_ended() == 2 and not ledger.orders


def test_snapshot_rows_carry_the_end_seq_and_older_rows_still_load() -> None:
    """ended_rows() carries each order's end seq; rows of the earlier 18-field form load."""
    from fixserver.orderentry.ownership import OrderLedger

    x = Exchange()
    _filled_pair(x)
    rows = x.app.ledger.ended_rows()
    assert all(len(r) == 19 and r[18] > 0 for r in rows)
    ledger = OrderLedger()
    ledger.adopt_ended([r[:18] for r in rows])
    assert {v.ended_seq for v in ledger.orders.values()} == {0}
    ledger.adopt_ended(rows)
    assert {v.ended_seq for v in ledger.orders.values()} == {rows[0][18]}


def _reader(clock: task.Clock, run: Any, **kw: Any) -> PgStatusReader:
    return PgStatusReader("", clock, clock, run=run, **kw)


def _count(result: str) -> float:
    return REGISTRY.get_sample_value("order_status_store_reads_total", {"result": result}) or 0.0


def test_store_that_never_answers_times_out_to_unknown_with_text() -> None:
    """Postgres unreachable (the read never returns): the reactor is not blocked (the call
    returns at once, the session's later messages wait); after the timeout H answers unknown
    with a Text saying the store is unavailable, then the waiting D is handled."""
    x = Exchange(max_ended_orders=0)
    clock = task.Clock()
    reads: list[defer.Deferred] = []

    def never(query: Any) -> defer.Deferred:
        reads.append(defer.Deferred())
        return reads[-1]

    reader = _reader(clock, never, timeout=2.0)
    x.app.use_status_store(reader, lambda: 1 << 62)
    _filled_pair(x)
    before = _count("unavailable")
    x.send(x.acme, msg("H", (11, "B1"), (790, "Q9"), *KEY))
    x.send(x.acme, new_order("C2", price="59000"))
    assert len(reads) == 1 and reader.outstanding == 1
    clock.advance(1.9)
    x.pipeline.tick()
    assert x.acme.take() == [] and not x.pipeline.sequencer.pending
    clock.advance(0.1)
    (status,) = x.acme.take()
    f = status[1]
    assert (f[150], f[39], f[103], f[58], f[790]) == ("I", "8", "5", STORE_UNAVAILABLE, "Q9")
    assert reader.outstanding == 0 and reader.last_error == "no answer within 2 s"
    assert _count("unavailable") == before + 1
    reads[0].callback(None)  # a late answer is ignored
    x.settle()
    assert kinds(x.acme.take()) == [("8", "0", "C2")]


def test_store_failure_and_too_many_reads_answer_unavailable() -> None:
    """A failed read answers unknown with the Text at once; so does a read beyond
    max_outstanding, without asking the store; a found row is answered."""
    x = Exchange(max_ended_orders=0)
    clock = task.Clock()
    shadow = ShadowStore(x)
    outcomes: list[Any] = []

    def run(query: Any) -> defer.Deferred:
        if outcomes.pop(0) == "fail":
            return defer.fail(ConnectionError("connection refused"))
        return defer.succeed(shadow.find(query))

    reader = _reader(clock, run, max_outstanding=1)
    x.app.use_status_store(reader, lambda: 1 << 62)
    _filled_pair(x)
    outcomes[:] = ["fail", "ok"]
    (failed,) = x.run(x.acme, msg("H", (11, "B1"), *KEY))
    assert (failed[1][39], failed[1][58]) == ("8", STORE_UNAVAILABLE)
    assert reader.last_error == "ConnectionError: connection refused"
    (ok,) = x.run(x.acme, msg("H", (11, "B1"), *KEY))
    assert ok[1][39] == "2" and reader.failures == 0
    reader.outstanding = 1  # one read still waiting somewhere
    (busy,) = x.run(x.acme, msg("H", (11, "B1"), *KEY))
    assert (busy[1][39], busy[1][58]) == ("8", STORE_UNAVAILABLE)
    assert outcomes == []


def test_lane_read_transitions() -> None:
    """A read starts only in an empty lane and completes only where one is outstanding; a
    new order waits behind it; its answer goes first, then what waited."""
    lanes = SessionLanes()
    lanes.submitted("S")
    with pytest.raises(LaneError):
        lanes.start_read("S", "H")
    with pytest.raises(LaneError):
        lanes.read_done("S", "answer")
    lanes.released("S")
    lanes.start_read("S", "H")
    assert lanes.must_wait("S", is_new_order=True)
    lanes.wait("S", "D")
    assert lanes.hold_reply("S", "refusal")
    replies, again = lanes.read_done("S", "answer")
    assert replies == ["answer"] and [e.item for e in again] == ["D", "refusal"]
    assert lanes.pending("S") == 0

