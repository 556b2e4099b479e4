"""Pure, deterministic matching engine for perpetual futures.

``engine = MatchingEngine(demo_instruments())``; ``events = engine.process(command)``;
``engine.state_hash()``; ``engine.snapshot() -> bytes``; ``MatchingEngine.restore(bytes)``.
No I/O, no clock, no randomness; integer ticks and lots throughout.
"""

from __future__ import annotations

from engine.book import FastBook
from engine.commands import (
    CancelOrder,
    Command,
    MassCancel,
    NewOrder,
    ReplaceOrder,
    SetAccountStp,
    SetInstrumentStatus,
    SetPosition,
    Tick,
)
from engine.enums import (
    CancelReason,
    InstrumentStatus,
    OrdType,
    RejectReason,
    RequestKind,
    Side,
    StpMode,
    TimeInForce,
)
from engine.events import (
    InstrumentStatusChanged,
    LevelChanged,
    MassCancelDone,
    OrderAccepted,
    OrderCanceled,
    OrderExpired,
    OrderRejected,
    OrderReplaced,
    OrderRestated,
    OrderTriggered,
    RequestRejected,
    Trade,
)
from engine.instruments import Instrument, demo_instruments
from engine.matcher import MatchingEngine
from engine.reference_book import ReferenceBook

__all__ = [
    "CancelOrder",
    "CancelReason",
    "Command",
    "FastBook",
    "Instrument",
    "InstrumentStatus",
    "InstrumentStatusChanged",
    "LevelChanged",
    "MassCancel",
    "MassCancelDone",
    "MatchingEngine",
    "NewOrder",
    "OrdType",
    "OrderAccepted",
    "OrderCanceled",
    "OrderExpired",
    "OrderRejected",
    "OrderReplaced",
    "OrderRestated",
    "OrderTriggered",
    "ReferenceBook",
    "RejectReason",
    "ReplaceOrder",
    "RequestKind",
    "RequestRejected",
    "SetAccountStp",
    "SetInstrumentStatus",
    "SetPosition",
    "Side",
    "StpMode",
    "Tick",
    "TimeInForce",
    "Trade",
    "demo_instruments",
]
