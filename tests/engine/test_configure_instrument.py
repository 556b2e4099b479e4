"""ConfigureInstrument: listing an instrument and changing its rules, journaled."""

from __future__ import annotations

import attr

from engine import MatchingEngine, OrderAccepted, RejectReason, RequestRejected, Trade
from engine.commands import ConfigureInstrument
from engine.enums import InstrumentStatus
from engine.events import InstrumentConfigured
from engine.journal import decode_payload, encode_payload
from engine.sequencer import Batch
from tests.engine.conftest import BTC, BUY, REF, SELL, Driver

R = RejectReason
SOL = ConfigureInstrument(0, 0, "SOL-PERP", "0.001", "0.1", 1, 100_000, 1, -100, 500, 50_000,
                          150_000, InstrumentStatus.TRADING)


def _at(d: Driver, command: ConfigureInstrument) -> list:
    d.seq += 1
    return d.run(attr.evolve(command, seq=d.seq, ts=d.ts))


def test_listing_makes_an_instrument_tradable(d: Driver) -> None:
    """A new symbol is listed with its rules and status, trades, and survives a snapshot."""
    (listed,) = _at(d, SOL)
    assert type(listed) is InstrumentConfigured and listed.listed
    assert listed.instrument.tick_size == "0.001" and d.eng.status("SOL-PERP").name == "TRADING"
    d.new("A", SELL, 10, 150_000, symbol="SOL-PERP")
    (trade,) = [e for e in d.new("B", BUY, 10, 150_000, symbol="SOL-PERP") if type(e) is Trade]
    assert trade.taker_fee == 150_000 * 10 * 500
    restored = MatchingEngine.restore(d.eng.snapshot())
    assert restored.state_hash() == d.eng.state_hash()
    assert restored.markets["SOL-PERP"].instrument == listed.instrument


def test_fee_and_band_change_applies_to_later_trades(d: Driver) -> None:
    """A taker fee change on BTC applies from the next trade; resting orders are untouched."""
    d.new("A", SELL, 1, REF)
    btc = d.eng.markets[BTC].instrument
    change = ConfigureInstrument(0, 0, BTC, btc.tick_size, btc.lot_size, btc.min_qty,
                                 btc.max_qty, btc.multiplier, btc.maker_fee_ppm, 700,
                                 btc.price_band_ppm, btc.reference_price)
    (changed,) = _at(d, change)
    assert not changed.listed and changed.instrument.taker_fee_ppm == 700
    (trade,) = [e for e in d.new("B", BUY, 1, REF) if type(e) is Trade]
    assert trade.taker_fee == REF * 700


def test_tick_change_is_refused_while_orders_rest(d: Driver) -> None:
    """Tick size, lot size or multiplier change while orders rest: INSTRUMENT_IN_USE; once
    the book is empty and nobody holds a position, it is accepted."""
    d.new("A", SELL, 1, REF + 10)
    oid = d.seq
    btc = d.eng.markets[BTC].instrument
    change = ConfigureInstrument(0, 0, BTC, "0.5", btc.lot_size, btc.min_qty, btc.max_qty,
                                 btc.multiplier, 0, 0, btc.price_band_ppm, 120_000)
    (rej,) = _at(d, change)
    assert type(rej) is RequestRejected and rej.reason == R.INSTRUMENT_IN_USE
    d.cancel("A", oid)
    (ok,) = _at(d, change)
    assert ok.instrument.tick_size == "0.5"
    assert type(d.new("A", BUY, 1, 120_000)[0]) is OrderAccepted


def test_invalid_rules_are_rejected(d: Driver) -> None:
    """Nonsense (zero tick, min above max, band of 100%) is INVALID_INSTRUMENT."""
    for bad in (attr.evolve(SOL, tick_size="0"), attr.evolve(SOL, min_qty=10, max_qty=5),
                attr.evolve(SOL, price_band_ppm=1_000_000), attr.evolve(SOL, tick_size="x")):
        (rej,) = _at(d, bad)
        assert rej.reason == R.INVALID_INSTRUMENT, bad
    assert "SOL-PERP" not in d.eng.markets


def test_configure_instrument_round_trips_the_journal() -> None:
    """The command journals and decodes with its status enum."""
    record = decode_payload(encode_payload(Batch(4, 9, [(("", "A"), SOL)])))
    assert record.entries[0][1] == attr.evolve(SOL, seq=4, ts=9)
