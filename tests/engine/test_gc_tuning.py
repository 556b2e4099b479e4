"""GC settings: server thresholds applied, long-lived state frozen, defaults restorable."""

from __future__ import annotations

import gc
import platform

import pytest

from engine import gc_tuning

pytestmark = pytest.mark.skipif(
    platform.python_implementation() != "CPython",
    reason="CPython's cyclic collector and reference counting (PyPy has neither)",
)


def test_apply_and_restore_server_settings():
    """apply_server_settings sets the shipped thresholds and freezes; restore undoes both."""
    old = gc.get_threshold()
    try:
        gc_tuning.apply_server_settings(freeze=True)
        assert gc.get_threshold() == gc_tuning.SERVER_THRESHOLDS
        assert gc.get_freeze_count() > 0
    finally:
        gc_tuning.restore_defaults()
        gc.set_threshold(*old)
    assert gc.get_freeze_count() == 0


def test_engine_state_has_no_reference_cycles():
    """Dropping an engine full of orders frees it by reference counting alone."""
    import weakref

    from engine import FastBook, MatchingEngine, NewOrder, Side, demo_instruments
    from engine.order import Order

    def live_orders() -> int:
        return sum(1 for o in gc.get_objects() if type(o) is Order)

    gc.collect()
    before = live_orders()  # engines other tests left to the collector do not count
    gc.disable()
    try:
        eng = MatchingEngine(demo_instruments(), book_factory=FastBook)
        for i in range(1, 200):
            eng.process(NewOrder(i, i, "a", "BTC-PERP", Side.BUY if i % 2 else Side.SELL, 1,
                                 600_000 + (-5 - i % 7 if i % 2 else 5 + i % 7)))
        assert len(eng.orders) > 100
        ref = weakref.ref(eng)
        del eng
        assert ref() is None
        assert live_orders() == before
    finally:
        gc.enable()
