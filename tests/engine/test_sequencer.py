"""The sequencer stamps each tick's inbox with consecutive seqs and one monotonic ts, by policy."""

from __future__ import annotations

from typing import Any

import attr
import pytest

from engine.commands import (
    CancelOrder,
    MassCancel,
    NewOrder,
    ReplaceOrder,
    SetAccountStp,
    SetInstrumentStatus,
    SetPosition,
    Tick,
)
from engine.enums import InstrumentStatus, OrdType, Side, StpMode, TimeInForce
from engine.sequencer import Sequencer, SequencingPolicy, is_protective, stamp

BTC = "BTC-PERP"


def new(account: str = "A", reduce_only: bool = False, cl: str = "") -> NewOrder:
    return NewOrder(0, 0, account, BTC, Side.BUY, 1, 600_000, reduce_only=reduce_only,
                    cl_ord_id=cl)


def test_empty_inbox_without_time_advance_gives_no_batch() -> None:
    """Nothing queued and no time passed: the tick has nothing to do."""
    seq = Sequencer(idle_tick_ns=0, last_ts=5, last_tick_ts=5)
    assert seq.next_batch(5) is None
    assert seq.next_batch(4) is None


def test_batch_is_stamped_with_consecutive_seqs_and_one_ts() -> None:
    """A tick's commands share its ts and take consecutive seqs after the leading Tick."""
    seq = Sequencer(SequencingPolicy.FIFO)
    seq.submit("s1", new(cl="a"))
    seq.submit("s2", new(cl="b"))
    batch = seq.next_batch(1_000)
    assert batch is not None
    assert batch.first_seq == 1 and batch.ts == 1_000
    assert [(o, type(c).__name__, c.seq, c.ts) for o, c in batch.entries] == [
        (None, "Tick", 1, 1_000), ("s1", "NewOrder", 2, 1_000), ("s2", "NewOrder", 3, 1_000),
    ]
    assert [c.cl_ord_id for _, c in batch.entries[1:]] == ["a", "b"]
    assert seq.next_seq == 4 and seq.pending == 0


def test_ts_never_decreases_when_the_clock_steps_back() -> None:
    """A clock stepping backwards stamps the last ts again and emits no Tick."""
    seq = Sequencer()
    seq.submit("s", new())
    seq.next_batch(2_000)
    seq.submit("s", new())
    batch = seq.next_batch(1_500)
    assert batch is not None
    assert batch.ts == 2_000
    assert [type(c) for _, c in batch.entries] == [NewOrder]
    assert seq.last_ts == 2_000


def test_idle_tick_only_after_idle_interval() -> None:
    """With an empty inbox a Tick is emitted once idle_tick_ns has passed since the last one."""
    seq = Sequencer(idle_tick_ns=1_000, last_ts=10_000, last_tick_ts=10_000)
    assert seq.next_batch(10_999) is None
    batch = seq.next_batch(11_000)
    assert batch is not None and [type(c) for _, c in batch.entries] == [Tick]
    assert seq.last_tick_ts == 11_000


def test_zero_idle_interval_ticks_whenever_time_advances() -> None:
    """idle_tick_ns=0 gives a Tick for every advance of time."""
    seq = Sequencer(idle_tick_ns=0)
    assert seq.next_batch(1) is not None
    assert seq.next_batch(1) is None
    assert seq.next_batch(2) is not None


def test_protective_first_puts_cancels_and_reduce_only_first_fifo_within_class() -> None:
    """PROTECTIVE_FIRST: cancels, mass cancels and reduce-only orders first, each class FIFO
    (every origin its own lane here)."""
    seq = Sequencer(SequencingPolicy.PROTECTIVE_FIRST, lane_of=lambda origin: origin)
    reqs = [
        ("o1", new(cl="n1")),
        ("o2", CancelOrder(0, 0, "A", 7, "c1")),
        ("o3", ReplaceOrder(0, 0, "A", 8, 2, 600_001, "r1")),
        ("o4", new(reduce_only=True, cl="ro1")),
        ("o5", MassCancel(0, 0, account="B", cl_ord_id="m1")),
        ("o6", new(cl="n2")),
        ("o7", SetPosition(0, 0, "A", BTC, 3)),
    ]
    for origin, r in reqs:
        seq.submit(origin, r)
    batch = seq.next_batch(100)
    assert batch is not None
    assert [o for o, _ in batch.entries] == [None, "o2", "o4", "o5", "o1", "o3", "o6", "o7"]
    assert [c.seq for _, c in batch.entries] == list(range(1, 9))


def test_protective_first_never_reorders_within_a_lane() -> None:
    """A protective request goes ahead of other lanes' requests only: behind an earlier
    request of its own lane it keeps its place, and so does everything after it there."""
    seq = Sequencer(SequencingPolicy.PROTECTIVE_FIRST, lane_of=lambda origin: origin[0])
    reqs = [
        (("A", 1), new(cl="a-new")),
        (("B", 1), new(cl="b-new")),
        (("A", 2), CancelOrder(0, 0, "A", 7, "a-cxl")),  # behind A's new order
        (("B", 2), new(reduce_only=True, cl="b-ro")),  # behind B's new order
        (("C", 1), CancelOrder(0, 0, "C", 9, "c-cxl")),  # C has nothing earlier: first
        (("A", 3), new(reduce_only=True, cl="a-ro")),  # behind A's cancel
    ]
    for origin, r in reqs:
        seq.submit(origin, r)
    batch = seq.next_batch(100)
    assert batch is not None
    assert [o for o, _ in batch.entries] == [None, ("C", 1), ("A", 1), ("B", 1), ("A", 2),
                                             ("B", 2), ("A", 3)]


def test_default_lane_makes_protective_first_fifo() -> None:
    """Without a lane function every request shares one lane: arrival order is kept."""
    seq = Sequencer(SequencingPolicy.PROTECTIVE_FIRST)
    for i, r in enumerate([new(), CancelOrder(0, 0, "A", 1), new(reduce_only=True)]):
        seq.submit(i, r)
    batch = seq.next_batch(1)
    assert batch is not None
    assert [o for o, _ in batch.entries] == [None, 0, 1, 2]


def test_fifo_keeps_arrival_order() -> None:
    """FIFO stamps requests in exactly the order they were submitted."""
    seq = Sequencer(SequencingPolicy.FIFO)
    for i, r in enumerate([new(), CancelOrder(0, 0, "A", 1), new(reduce_only=True)]):
        seq.submit(i, r)
    batch = seq.next_batch(1)
    assert batch is not None
    assert [o for o, _ in batch.entries] == [None, 0, 1, 2]


def test_is_protective_classifies_requests() -> None:
    """Only cancels, mass cancels and reduce-only new orders count as protective."""
    assert is_protective(CancelOrder(0, 0, "A", 1))
    assert is_protective(MassCancel(0, 0))
    assert is_protective(new(reduce_only=True))
    assert not is_protective(new())
    assert not is_protective(ReplaceOrder(0, 0, "A", 1, 1, 1))
    assert not is_protective(SetAccountStp(0, 0, "A", StpMode.CANCEL_BOTH))


@pytest.mark.parametrize(
    "request_",
    [
        NewOrder(0, 0, "A", BTC, Side.SELL, 3, 5, OrdType.STOP_LIMIT, TimeInForce.GTD, "x", 7,
                 99, True, True, 1, 2, StpMode.CANCEL_OLDEST),
        CancelOrder(0, 0, "A", 9, "y"),
        ReplaceOrder(0, 0, "A", 9, 4, 5, "z", 6),
        MassCancel(0, 0, "A", BTC, Side.BUY, "m"),
        SetInstrumentStatus(0, 0, BTC, InstrumentStatus.HALTED),
        SetPosition(0, 0, "A", BTC, -4),
        SetAccountStp(0, 0, "A", StpMode.CANCEL_BOTH),
    ],
)
def test_stamp_equals_attr_evolve(request_: Any) -> None:
    """Stamping through the constructor gives exactly what attr.evolve would."""
    assert stamp(request_, 11, 22) == attr.evolve(request_, seq=11, ts=22)


def test_submit_rejects_non_requests() -> None:
    """Ticks are the sequencer's own, and arbitrary objects are not commands."""
    seq = Sequencer()
    with pytest.raises(TypeError):
        seq.submit("s", Tick(0, 0))
    with pytest.raises(TypeError):
        seq.submit("s", ("not", "a", "command"))


def test_position_resumes_a_sequencer() -> None:
    """A sequencer built from another's position continues its numbering and time."""
    a = Sequencer(idle_tick_ns=0)
    a.submit("s", new())
    a.next_batch(50)
    next_seq, last_ts, last_tick_ts = a.position()
    b = Sequencer(idle_tick_ns=0, next_seq=next_seq, last_ts=last_ts, last_tick_ts=last_tick_ts)
    b.submit("s", new())
    batch = b.next_batch(40)
    assert batch is not None and batch.first_seq == 3 and batch.ts == 50
