"""Order-entry state stays bounded under steady load: ended orders leave memory after their
retention, ClOrdIDs are unique per session per trading day (two days remembered), and what a
snapshot carries does not grow with history. Counted in objects, not RSS."""

from __future__ import annotations

from .harness import Exchange, msg, new_order

DAY = 86_400 * 1_000_000_000
KEY = ((55, "BTC-PERP"), (54, "1"), (60, "20240101-00:00:00"))


def _day_of_trading(x: Exchange, day: int, orders: int) -> None:
    """``orders`` buy orders that each fill against a resting sell, on trading day ``day``."""
    x.pipeline.now = day * DAY + 3_600 * 1_000_000_000
    for i in range(orders):
        x.run(x.beta, new_order(f"S{day}-{i}", side="2", qty="0.001", account="B1"))
        x.run(x.acme, new_order(f"B{day}-{i}", qty="0.001"))


def test_kept_objects_do_not_grow_with_days_of_trading() -> None:
    """Ten trading days of 50 filled order pairs each: the ledger holds only the last day's
    ended orders; the ClOrdIDs of two days are kept once, in the recorder (what snapshots
    carry), and the ledger keeps no copy of its own (no claim left unrecorded)."""
    x = Exchange()
    sizes = []
    for day in range(20_000, 20_010):
        _day_of_trading(x, day, 50)
        ledger = x.app.ledger
        recorder = x.pipeline.sequencer
        used = (len(ledger.used) + len(ledger.used_prev) + len(ledger.claimed)
                + len(ledger.claimed_prev))
        snap = recorder.snapshot(x.engine.orders)
        snap_ids = (len(snap["used"]) + len(snap["used_prev"])) // 8  # 8 bytes per ClOrdID
        sizes.append((len(ledger.orders), len(ledger.ended), used, snap_ids,
                      len(recorder.owners)))
    # day 1: 100 orders ended that day; from day 2 on: still one day's orders, two days' ids
    assert sizes[0] == (100, 100, 0, 100, 0)
    assert all(s == (100, 100, 0, 200, 0) for s in sizes[1:]), sizes


def test_cl_ord_id_may_be_reused_two_trading_days_later_not_before() -> None:
    """A ClOrdID is refused as a duplicate the same day and the next; two days later it is
    new again; one still naming a live order is refused whatever the day."""
    x = Exchange()
    x.pipeline.now = 20_000 * DAY
    x.run(x.acme, new_order("LIVE", "1", "0.001", "59000", "2", "BTC-PERP", "A1", (59, "1")))
    x.run(x.acme, new_order("DONE", price="59000"))
    x.run(x.acme, msg("F", (41, "DONE"), (11, "C1"), *KEY))
    x.pipeline.now = 20_001 * DAY
    (dup,) = x.run(x.acme, new_order("DONE", price="59000"))
    assert dup[1][103] == "6", "the previous trading day's ClOrdID is still taken"
    x.pipeline.now = 20_002 * DAY
    x.run(x.acme, new_order("TICK", price="59000"))  # a release on the new day rolls it
    (again,) = x.run(x.acme, new_order("DONE", price="59000"))
    assert again[1][150] == "0", again
    (live,) = x.run(x.acme, new_order("LIVE", price="59000"))  # the GTC one is still live
    assert live[1][103] == "6", "a ClOrdID naming a live order stays taken"


def test_recorder_rolls_by_the_commands_own_time() -> None:
    """The recorder (what snapshots carry) rolls its ClOrdIDs by command timestamps, so a
    replay of the same commands keeps the same sets."""
    x = Exchange()
    x.pipeline.now = 20_000 * DAY
    x.run(x.acme, new_order("A", price="59000"))
    x.pipeline.now = 20_001 * DAY
    x.run(x.acme, new_order("B", price="59000"))
    rec = x.pipeline.sequencer
    sid = x.acme.settings.session_id
    assert rec.used.has(sid, "B") and len(rec.used) == 1
    assert rec.used_prev.has(sid, "A") and len(rec.used_prev) == 1
    x.pipeline.now = 20_005 * DAY
    x.run(x.acme, new_order("C", price="59000"))
    assert rec.used.has(sid, "C") and len(rec.used) == 1 and len(rec.used_prev) == 0


def test_ended_orders_in_memory_are_bounded_by_count() -> None:
    """600 orders fill within one trading day with MaxEndedOrdersInMemory 50: the ledger never
    holds more than 50 orders, nor names for more, and a snapshot carries at most 50; the
    oldest-ended leave first."""
    x = Exchange(max_ended_orders=50)
    ledger = x.app.ledger
    x.pipeline.now = 20_000 * DAY + 3_600 * 1_000_000_000
    peak = 0
    for i in range(300):
        x.run(x.beta, new_order(f"S{i}", side="2", qty="0.001", account="B1"))
        x.run(x.acme, new_order(f"B{i}", qty="0.001"))
        names = sum(len(v) for v in ledger.by_cl_ord_id.values())
        peak = max(peak, len(ledger.orders), len(ledger.ended), names,
                   len(ledger.ended_rows()))
    assert peak == 50
    assert len(ledger.orders) == 50
    kept = sorted(v.cl_ord_id for v in ledger.orders.values())
    assert kept == sorted([f"S{i}" for i in range(275, 300)] + [f"B{i}" for i in range(275, 300)])
    used = len(ledger.ids.used)  # the recorder's set: the one copy
    assert used == 600, "ClOrdIDs stay taken for the trading day whatever memory keeps"
    (dup,) = x.run(x.acme, new_order("B0", qty="0.001"))
    assert dup[1][103] == "6"


def test_forgetting_a_replaced_order_unnames_all_its_clordids() -> None:
    """An order replaced three times, then canceled and evicted, leaves no ClOrdID naming
    it (each replace names it once more)."""
    x = Exchange(max_ended_orders=0)
    x.pipeline.now = 20_000 * DAY
    x.run(x.acme, new_order("R0", price="59000"))
    for n in range(1, 4):
        (ack,) = x.run(x.acme, msg("G", (41, f"R{n - 1}"), (11, f"R{n}"), (1, "A1"), *KEY,
                                   (38, "0.005"), (40, "2"), (44, f"5900{n}")))
        assert ack[1][150] == "5", ack
    sid = x.acme.settings.session_id
    assert set(x.app.ledger.by_cl_ord_id[sid]) == {"R0", "R1", "R2", "R3"}
    x.run(x.acme, msg("F", (41, "R3"), (11, "X"), *KEY))
    assert not x.app.ledger.orders
    assert x.app.ledger.by_cl_ord_id == {}


def test_without_a_store_an_evicted_order_is_unknown() -> None:
    """Without Postgres, H for an order that left memory answers unknown order."""
    x = Exchange(max_ended_orders=1)
    x.run(x.beta, new_order("S1", side="2", qty="0.001", account="B1"))
    x.run(x.acme, new_order("B1", qty="0.001"))
    (found,) = x.run(x.acme, msg("H", (11, "B1"), *KEY))
    assert found[1][39] == "2", "the newest ended order is still in memory"
    x.run(x.beta, new_order("S2", side="2", qty="0.001", account="B1", price="59000"))
    x.run(x.beta, msg("F", (41, "S2"), (11, "X2"), *KEY))
    (gone,) = x.run(x.acme, msg("H", (11, "B1"), *KEY))
    assert (gone[1][39], gone[1][58]) == ("8", "unknown order")


def test_used_ids_cost_eight_bytes_each_and_survive_a_snapshot() -> None:
    """100,000 ClOrdIDs of two sessions: kept as 8-byte fingerprints (the saved form is
    exactly 800,000 bytes), found again after a save and load, other pairs not found."""
    from fixserver.orderentry.used_ids import UsedIds

    ids = UsedIds()
    for i in range(50_000):
        assert ids.add("S1", f"ord-{i}") and ids.add("S2", f"ord-{i}")
    assert not ids.add("S1", "ord-7"), "a pair is there only once"
    saved = ids.to_bytes()
    assert len(ids) == 100_000 and len(saved) == 800_000
    back = UsedIds.load(saved)
    assert len(back) == 100_000 and back.has("S2", "ord-49999") and back.has("S1", "ord-0")
    assert not back.has("S3", "ord-0") and not back.has("S1", "ord-50000")
    legacy = UsedIds.load({"S1": ["a", "b"]})  # an older snapshot's form
    assert legacy.has("S1", "a") and legacy.has("S1", "b") and len(legacy) == 2


def test_a_claim_is_held_by_the_ledger_until_recorded_and_a_refused_one_stays_taken() -> None:
    """The ledger keeps a claim only until the recorder has it (then there is one copy); a
    ClOrdID refused before it reached a tick stays taken for the day, and after two trading
    days both are free again."""
    x = Exchange()
    x.pipeline.now = 20_000 * DAY
    ledger, recorder = x.app.ledger, x.pipeline.sequencer
    sid = x.acme.settings.session_id
    x.send(x.acme, new_order("P1", price="59000"))  # claimed, not yet matched
    assert ledger.is_used(sid, "P1") and len(ledger.claimed) == 1
    assert not recorder.used.has(sid, "P1")
    x.settle()
    x.acme.take()
    assert recorder.used.has(sid, "P1") and ledger.claimed == set(), "moved, not copied"
    (refused,) = x.run(x.acme, new_order("R1", price="59000", account="NOPE"))
    assert refused[1][150] == "8", refused  # refused before submission: never recorded
    assert len(ledger.claimed) == 1 and ledger.is_used(sid, "R1")
    (dup,) = x.run(x.acme, new_order("R1", price="59000"))
    assert dup[1][103] == "6", "a refused ClOrdID is taken for the day too"
    x.pipeline.now = 20_002 * DAY
    x.run(x.acme, new_order("TICK", price="59000"))  # rolls the recorder and the ledger
    (again,) = x.run(x.acme, new_order("R1", price="59000"))
    assert again[1][150] == "0", again
