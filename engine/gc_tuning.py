"""Garbage-collector settings the server ships with.

CPython's cyclic collector is the matching server's "GC pause": a full (generation 2)
collection walks every live container object, and with a million resting orders that stalls
for a long time. The engine creates no reference cycles (orders point to nothing that
points back; events are tuples), so everything it frees goes by reference counting and the
cyclic collector has nothing to find in engine state. So the server:

1. loads its state (snapshot + journal replay) and anything else long-lived, then calls
   :func:`freeze_long_lived`: a collection, then ``gc.freeze()``, which moves every object
   alive now into a permanent generation that collections never walk again;
2. runs with :data:`SERVER_THRESHOLDS`: a larger young generation (fewer, still short young
   collections) and a very high generation-2 threshold, so a full collection practically only
   happens when the server asks for one (:func:`freeze_long_lived` again, e.g. at an idle
   moment or after a snapshot), never in the middle of a burst of orders.

Objects created after the freeze (new resting orders) are still walked by young collections
until they age into generation 2, which is cheap; the bench (bench/bench_engine.py) measures
tail latency with a million resting orders under these settings against the defaults.
"""

from __future__ import annotations

import gc

SERVER_THRESHOLDS = (10_000, 50, 1_000_000)
DEFAULT_THRESHOLDS = (700, 10, 10)


def freeze_long_lived() -> int:
    """Collect once, then move everything alive into the permanent generation.

    Returns the number of objects now frozen.
    """
    gc.collect()
    if not hasattr(gc, "freeze"):  # PyPy: its GC is incremental; nothing to freeze
        return 0
    gc.freeze()
    return gc.get_freeze_count()


def apply_server_settings(freeze: bool = True) -> None:
    """Set the server's thresholds and (by default) freeze what is alive now."""
    if hasattr(gc, "set_threshold"):  # CPython; PyPy's incremental GC has no generations
        gc.set_threshold(*SERVER_THRESHOLDS)
    if freeze:
        freeze_long_lived()


def restore_defaults() -> None:
    """Undo :func:`apply_server_settings` (unfreeze, default thresholds); for tests and benches."""
    if hasattr(gc, "unfreeze"):
        gc.unfreeze()
    if hasattr(gc, "set_threshold"):
        gc.set_threshold(*DEFAULT_THRESHOLDS)
