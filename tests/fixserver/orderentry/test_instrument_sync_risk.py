"""Start-up instrument sync with risk parameters: a changed risk key is one journaled
ConfigureInstrument carrying every risk field (the engine applies it); the settlement asset
cannot change, nor the margin go away, under live orders."""

from __future__ import annotations

import attr
import pytest

from engine import MatchingEngine, demo_instruments
from engine.commands import Deposit, NewOrder
from engine.enums import Side
from fixserver.orderentry.instrument_sync import InstrumentConfigError, plan

TIERS = ((50_000_000_000, 4_000, 100), (600_000_000_000, 5_000, 75))


def _margined():
    btc, eth = demo_instruments()
    return [attr.evolve(btc, max_leverage=100, default_leverage=20, risk_tiers=TIERS), eth]


def _engine_with(instruments) -> MatchingEngine:
    engine = MatchingEngine([])
    for command in plan(engine, instruments):
        events = engine.process(command)
        assert type(events[-1]).__name__ == "InstrumentConfigured", events
    return engine


def test_unchanged_risk_is_no_command_and_a_change_is_one_carrying_every_field():
    """Same config: nothing to journal; new tiers and mark settings: one command, and the
    engine's instrument has them after it."""
    engine = _engine_with(_margined())
    assert plan(engine, _margined()) == []
    btc, eth = _margined()
    changed = attr.evolve(btc, risk_tiers=((100_000_000_000, 4_000, 100),), max_leverage=125,
                          mark_interval_ms=500, mark_smoothing=30, mark_basis_cap_ppm=2_000)
    (command,) = plan(engine, [changed, eth])
    assert (command.symbol, command.max_leverage, command.risk_tiers, command.mark_interval_ms,
            command.mark_smoothing, command.mark_basis_cap_ppm, command.settlement_asset,
            command.settlement_decimals, command.default_leverage) == (
        "BTC-PERP", 125, ((100_000_000_000, 4_000, 100),), 500, 30, 2_000, "USDT", 6, 20)
    engine.process(command)
    assert engine.markets["BTC-PERP"].instrument == changed
    margined_eth = attr.evolve(eth, max_leverage=50)
    (listed,) = plan(engine, [changed, margined_eth])
    assert listed.symbol == "ETH-PERP" and listed.max_leverage == 50


@pytest.mark.parametrize("change, words", [
    ({"settlement_asset": "USDC"}, "settlement USDT (6 decimals) -> USDC (6 decimals)"),
    ({"max_leverage": 0, "risk_tiers": (), "default_leverage": 0},
     "no margin (MaxLeverage removed)"),
])
def test_settlement_change_or_unmargining_under_live_orders_is_refused(change, words):
    """With a resting order in BTC-PERP, another settlement asset or no MaxLeverage stops
    start-up naming the instrument and what holds collateral; without it, it is allowed."""
    engine = _engine_with(_margined())
    btc, eth = _margined()
    wanted = [attr.evolve(btc, **change), eth]
    assert len(plan(engine, wanted)) == 1  # nothing open: allowed
    engine.process(Deposit(1, 1, "A1", "USDT", 10**12, "x"))
    events = engine.process(NewOrder(2, 2, "A1", "BTC-PERP", Side.BUY, 10, 590_000))
    assert type(events[0]).__name__ == "OrderAccepted", events
    with pytest.raises(InstrumentConfigError) as caught:
        plan(engine, wanted)
    message = str(caught.value)
    assert "[INSTRUMENT] BTC-PERP" in message and words in message
    assert "1 live order(s)" in message
