"""Instrument config: demo instruments, decimal edges, fee units, dict round trip."""

from __future__ import annotations

from decimal import Decimal

from engine import Instrument, InstrumentStatus, demo_instruments


def test_demo_has_btc_and_eth_perps():
    """The demo venue lists BTC-PERP and ETH-PERP with sane integer rules."""
    inst = {i.symbol: i for i in demo_instruments()}
    assert {"BTC-PERP", "ETH-PERP"} <= inst.keys()
    for i in inst.values():
        assert 0 < i.min_qty <= i.max_qty
        assert i.maker_fee_ppm < 0 < i.taker_fee_ppm
        assert i.status is InstrumentStatus.TRADING
        assert i.reference_price > 0 and 0 < i.price_band_ppm < 1_000_000


def test_decimal_round_trip():
    """Ticks and lots convert to decimal strings and back exactly."""
    eth = demo_instruments()[1]
    assert eth.price_to_ticks("3000.25") == 300_025
    assert eth.ticks_to_price(300_025) == "3000.25"
    assert eth.qty_to_lots(eth.lots_to_qty(37)) == 37


def test_fee_units_are_exact():
    """One fee unit is tick_size * lot_size / 1e6 of the quote currency."""
    eth = demo_instruments()[1]
    assert eth.fee_to_quote(1) == Decimal("0.01") * Decimal("0.01") / 1_000_000


def test_dict_round_trip():
    """to_dict/from_dict (used by snapshots) give an equal instrument."""
    i = Instrument("X-PERP", "0.5", "1", status=InstrumentStatus.POST_ONLY)
    assert Instrument.from_dict(i.to_dict()) == i
