"""Event stream: fees, execution ids, average price numerator, L2 changes, determinism."""

from __future__ import annotations

from decimal import Decimal

from engine import (
    FastBook,
    LevelChanged,
    OrderAccepted,
    Trade,
    demo_instruments,
)
from tests.engine.conftest import BUY, REF, SELL, Driver, of


def test_fees_in_fee_units_with_maker_rebate(d):
    """Maker and taker fees are price*qty*multiplier*rate_ppm; a negative maker rate rebates."""
    d.new("m", SELL, 3, REF)
    t = of(d.new("t", BUY, 3, REF), Trade)[0]
    assert t.maker_fee == REF * 3 * -100
    assert t.taker_fee == REF * 3 * 500
    btc = demo_instruments()[0]
    # 60000.0 USD * 0.003 BTC = 180 USD; taker 5 bp = 0.09 USD; maker rebate 1 bp = 0.018 USD
    assert btc.fee_to_quote(t.taker_fee) == Decimal("0.09")
    assert btc.fee_to_quote(t.maker_fee) == Decimal("-0.018")


def test_exec_ids_strictly_increase(d):
    """Every execution-report event gets the next execution id."""
    ids = []
    d.new("m", SELL, 3, REF)
    for ev in (d.new("m", SELL, 3, REF + 1), d.new("t", BUY, 5, REF + 1), d.cancel("m", 2)):
        ids += [e.exec_id for e in ev if hasattr(e, "exec_id")]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_average_price_numerator_is_exact(d):
    """notional / filled gives the exact average price across levels."""
    d.new("m", SELL, 1, REF)
    d.new("m", SELL, 2, REF + 3)
    last = of(d.new("t", BUY, 3, REF + 3), Trade)[-1]
    assert last.taker_notional == REF + 2 * (REF + 3)
    btc = demo_instruments()[0]
    assert btc.avg_price(last.taker_notional, last.taker_filled) == str(
        (Decimal(REF + 2 * (REF + 3)) / 3) * Decimal("0.1"))


def test_level_changes_after_each_command(d):
    """Each command ends with one LevelChanged per touched level in first-touch order."""
    d.new("m", SELL, 1, REF)
    d.new("m", SELL, 2, REF + 1)
    ev = d.new("t", BUY, 4, REF + 1)
    assert of(ev, LevelChanged) == [
        LevelChanged(3, "BTC-PERP", SELL, REF, 0, 0),
        LevelChanged(3, "BTC-PERP", SELL, REF + 1, 0, 0),
        LevelChanged(3, "BTC-PERP", BUY, REF + 1, 1, 1),
    ]
    assert ev[-1] == LevelChanged(3, "BTC-PERP", BUY, REF + 1, 1, 1)


def test_events_carry_execution_report_fields(d):
    """Accepted carries everything an ExecutionReport needs."""
    a = of(d.new("acct", BUY, 4, REF, cl_ord_id="my-id"), OrderAccepted)[0]
    assert a._asdict() == {
        "seq": 1, "ts": d.ts, "exec_id": 1, "order_id": 1, "cl_ord_id": "my-id",
        "account": "acct", "symbol": "BTC-PERP", "side": BUY, "ord_type": a.ord_type,
        "tif": a.tif, "price": REF, "stop_price": 0, "qty": 4, "filled": 0, "leaves": 4,
        "notional": 0,
    }


def test_same_commands_give_same_events_and_hash():
    """Two engines fed the same commands produce identical events and state hashes."""
    out = []
    for _ in range(2):
        d = Driver(FastBook)
        evs = []
        for i in range(50):
            evs += d.new(f"a{i % 3}", BUY if i % 2 else SELL, 1 + i % 4, REF - 5 + i % 11)
        out.append((evs, d.eng.state_hash()))
    assert out[0] == out[1]
