"""Margin arithmetic against hand-computed cases (integers, exact)."""

from __future__ import annotations

import attr
import pytest

from engine.instruments import demo_instruments
from engine.risk import margin as mg

# Binance-like BTC tiers in USDT minor units (6 decimals): caps 50k / 250k / 10M USDT
TIERS = ((50_000_000_000, 5_000, 100), (250_000_000_000, 10_000, 50),
         (10_000_000_000_000, 50_000, 10))
USDT = 1_000_000
V = 100  # BTC-PERP: 0.1 USDT tick * 0.001 BTC lot = 0.0001 USDT = 100 minor units


def test_value_per_tick_lot_is_exact_or_refused():
    btc, eth = demo_instruments()
    assert btc.value_per_tick_lot() == 100
    assert eth.value_per_tick_lot() == 100  # 0.01 * 0.01 * 10**6
    assert attr.evolve(btc, multiplier=3).value_per_tick_lot() == 300
    assert attr.evolve(btc, settlement_decimals=2).value_per_tick_lot() == 0  # 0.01 of a cent


def test_cumulative_deductions_make_maintenance_continuous():
    # cum_1 = 50k * (1% - 0.5%) = 250 USDT; cum_2 = 250 + 250k * (5% - 1%) = 10,250 USDT
    assert mg.cumulative_deductions(TIERS) == (0, 250 * USDT * 10**6, 10_250 * USDT * 10**6)
    # at the first cap both formulas give 250 USDT: 50k*0.5% and 50k*1% - 250
    assert mg.maintenance_margin(TIERS, 50_000 * USDT) == 250 * USDT
    assert mg.maintenance_margin(TIERS, 50_000 * USDT + 1) == 250 * USDT + 1  # ceil(0.01)
    # 100k USDT in tier 2: 1,000 - 250 = 750
    assert mg.maintenance_margin(TIERS, 100_000 * USDT) == 750 * USDT
    # 250k boundary: 2,500 - 250 = 2,250 = 12,500 - 10,250
    assert mg.maintenance_margin(TIERS, 250_000 * USDT) == 2_250 * USDT
    assert mg.maintenance_margin(TIERS, 1_000_000 * USDT) == 39_750 * USDT  # 50,000 - 10,250
    assert mg.maintenance_margin(TIERS, 0) == 0


def test_maintenance_rounds_up_to_a_minor_unit():
    assert mg.maintenance_margin(TIERS, 1) == 1  # 0.005 -> 1
    assert mg.maintenance_margin(TIERS, 200) == 1
    assert mg.maintenance_margin(TIERS, 201) == 2


def test_max_notional_per_leverage():
    assert mg.max_notional(TIERS, 100) == 50_000 * USDT
    assert mg.max_notional(TIERS, 51) == 50_000 * USDT
    assert mg.max_notional(TIERS, 50) == 250_000 * USDT
    assert mg.max_notional(TIERS, 10) == 10_000_000 * USDT
    assert mg.max_notional(TIERS, 1) == 10_000_000 * USDT
    assert mg.max_notional(TIERS, 101) == 0


def test_initial_margin_and_fee_rounding():
    assert mg.initial_margin(60_000 * USDT, 10) == 6_000 * USDT
    assert mg.initial_margin(7, 2) == 4
    # fee units (see engine.instruments): 1 BTC at 60,000 taker 500 ppm = 30 USDT
    fee_units = 600_000 * 1_000 * 500
    assert mg.fee_minor_units(fee_units, 100) == 30 * USDT
    assert mg.fee_minor_units(-600_000 * 1_000 * 100, 100) == -6 * USDT
    assert mg.fee_minor_units(1, 100) == 1  # charges round up
    assert mg.fee_minor_units(-1, 100) == 0  # rebates round toward zero
    assert mg.fee_minor_units(-19_999, 100) == -1


def test_unrealised_pnl_long_and_short():
    # long 2 BTC (2000 lots) at 60,000 (entry cost 600000*2000 ticks*lots), mark 61,000
    assert mg.unrealised_pnl(2000, 600_000 * 2000, 610_000, V) == 2_000 * USDT
    assert mg.unrealised_pnl(-2000, 600_000 * 2000, 610_000, V) == -2_000 * USDT
    assert mg.unrealised_pnl(0, 0, 610_000, V) == 0


@pytest.mark.parametrize(
    ("size", "buys", "sells", "expected"),
    [
        # flat: buys 1 BTC @60k and sells 0.5 BTC @61k -> the larger side (buys) counts
        (0, (1000, 600_000 * 1000), (500, 610_000 * 500), 6_000 * USDT + 30 * USDT),
        # long 1 BTC: sells up to 1 BTC close it, so 1.5 BTC of sells open only 0.5
        (1000, (0, 0), (1500, 610_000 * 1500),
         # opening part: 1/3 of the sell cost = 305,000,000 ticks*lots -> 30,500 USDT
         3_050 * USDT + 15_250_000),
        # short 2 BTC: 1 BTC of buys only closes: nothing to hold
        (-2000, (1000, 600_000 * 1000), (0, 0), 0),
    ],
)
def test_order_margin_nets_the_closing_side(size, buys, sells, expected):
    got = mg.order_margin(size, buys[0], buys[1], sells[0], sells[1], V, 10, 500)
    assert got == expected


def test_open_loss_only_when_worse_than_mark():
    assert mg.open_loss(True, 601_000, 600_000, 1000, V) == 100 * USDT  # buy 100 above
    assert mg.open_loss(True, 599_000, 600_000, 1000, V) == 0
    assert mg.open_loss(False, 599_000, 600_000, 1000, V) == 100 * USDT
    assert mg.open_loss(False, 601_000, 600_000, 1000, V) == 0


def test_liquidation_price_isolated_long_and_short():
    # long 1 BTC @ 60,000 with 600 USDT isolated margin: ~59.7k of notional is in tier 2
    # (1%, cum 250): 600 + (p - 60000) = 0.01p - 250 -> p = 59150 / 0.99 = 59747.47 -> up
    p = mg.liquidation_price(1000, 600_000 * 1000, V, TIERS, 600 * USDT)
    assert p == 597_475
    # check the definition at the tick on either side
    def equity_minus_mm(ticks: int) -> int:
        pos = mg.position_risk(1000, 600_000 * 1000, ticks, V, 100, TIERS)
        return 600 * USDT + pos.unrealised_pnl - pos.maintenance_margin
    assert equity_minus_mm(p) >= 0 > equity_minus_mm(p - 1)
    # short 1 BTC @ 60,000 with 600 USDT: 600 + 60000 - p = 0.01p - 250 -> p = 60850 / 1.01
    q = mg.liquidation_price(-1000, 600_000 * 1000, V, TIERS, 600 * USDT)
    assert q == 602_475  # 60247.52 -> down to the tick


def test_liquidation_price_in_a_higher_tier():
    # long 2 BTC @ 60,000 (120k notional: tier 2, 1%, cum 250) with 10,000 USDT:
    # 10000 + 2p - 120000 = 0.02p - 250 -> p = 109750 / 1.98 = 55429.29 -> 554,293 ticks
    p = mg.liquidation_price(2000, 600_000 * 2000, V, TIERS, 10_000 * USDT)
    assert p == 554_293
    assert 50_000 * USDT < 2000 * p * V <= 250_000 * USDT


def test_no_liquidation_price_when_fully_collateralised_long():
    assert mg.liquidation_price(1000, 600_000 * 1000, V, TIERS, 61_000 * USDT) == 0
    assert mg.liquidation_price(0, 0, V, TIERS, 1) == 0
