"""Liquidation, ADL, funding and the insurance fund reach Postgres (migration 009): one row per
event, written once, the same after catch-up from the journal."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import attr
import psycopg
import pytest

from engine import MatchingEngine, NewOrder, Side
from engine.commands import Deposit, SetIndexPrice, SetLeverage, Tick, Withdraw
from engine.events import BalanceChanged, FundingPayment
from engine.positions import PositionBook
from engine.risk.accounts import INSURANCE
from engine.risk.liquidation import LIQ_ID_BASE
from fixserver.journal_file import JournalDirectory
from fixserver.pg.batch import STRATEGIES, BatchWriter
from fixserver.pg.catchup import regenerate, risk_state_of
from fixserver.pg.liquidation_rows import (
    FundingPaymentRow,
    FundingRateRow,
    LiquidationRow,
    TransferRow,
)
from fixserver.pg.rows import Row, RowBuilder, ns_to_datetime
from tests.engine.riskutil import SECOND, margined_instruments
from tests.fixserver.pg_fixtures import migrated_dsn, pg_dsn
from tests.fixserver.test_pg_risk import Exchange, fetch

__all__ = ["migrated_dsn", "pg_dsn"]  # fixtures used below

BTC, ETH = "BTC-PERP", "ETH-PERP"
USDT = 1_000_000
BUY, SELL = Side.BUY, Side.SELL
#: BTC-PERP and ETH-PERP margined (100x, tiers 0.5%/1%/5%), a 20% band for the crash prices
INSTRUMENTS = margined_instruments(price_band_ppm=200_000)
NEW_TABLES = ("funding_payments", "funding_rates", "liquidations", "position_transfers")
FACT_ROWS = (FundingPaymentRow, FundingRateRow, LiquidationRow, TransferRow)
#: the row each migration-009 table shows of its rows, in key order
QUERIES = {
    "funding_payments": "SELECT * FROM funding_payments ORDER BY seq, symbol, account",
    "funding_rates": "SELECT * FROM funding_rates ORDER BY symbol, seq",
    "liquidations": "SELECT * FROM liquidations ORDER BY order_id",
    "position_transfers": "SELECT * FROM position_transfers ORDER BY exec_id",
}


def order(account: str, side: Side, qty: int, price: int, symbol: str = BTC) -> NewOrder:
    return NewOrder(0, 0, account, symbol, side, qty, price)


def deposit(account: str, usdt: int) -> Deposit:
    return Deposit(0, 0, account, "USDT", usdt * USDT)


#: the scenario, one list of requests per tick (a tick starts with the engine's Tick):
#: ADL while the fund is empty, a takeover by the funded insurance fund, then funding
ADL = [
    [SetIndexPrice(0, 0, BTC, 600_000), SetIndexPrice(0, 0, ETH, 300_000)],
    [deposit("A", 1_000), deposit("B", 100_000), deposit("D", 100_000),
     SetLeverage(0, 0, "A", BTC, 100)],
    # B short 400, D short 300, A long 700 (balance 979); B's equity lower: ranked first
    [order("B", SELL, 400, 600_000), order("D", SELL, 300, 600_000),
     order("A", BUY, 700, 600_000), Withdraw(0, 0, "B", "USDT", 90_000 * USDT)],
    [SetIndexPrice(0, 0, BTC, 580_000)],
    [],  # the mark follows: A is bankrupt, no bids, the fund is empty -> ADL against B, D
]
TAKEOVER = [
    [deposit(INSURANCE, 1_000), deposit("A2", 1_000), SetLeverage(0, 0, "A2", BTC, 100),
     deposit("S", 100_000), deposit("F", 10_000), deposit("G", 10_000)],
    [order("S", SELL, 700, 580_000), order("A2", BUY, 700, 580_000),
     order("G", SELL, 7, 580_000), order("F", BUY, 7, 580_000)],
    [SetIndexPrice(0, 0, BTC, 560_000)],
    [],  # A2 below its bankruptcy price 56,600.5, no bids: the fund takes 0.7 BTC over
]
#: a mark of 56,000.1 makes F's and G's payments round apart: a residual for the fund
FUNDING = [[SetIndexPrice(0, 0, BTC, 560_001)]]


class Venue:
    """A bare engine on INSTRUMENTS and a RowBuilder fed with its events, one tick a call
    (ticks one second apart, starting at ``t0``)."""

    def __init__(self, t0: int = 1_000 * SECOND) -> None:
        self.engine = MatchingEngine(INSTRUMENTS)
        self.builder = RowBuilder(INSTRUMENTS)
        self.seq = 0
        self.ts = t0
        self.events: list[Any] = []
        self.per_tick: list[list[Row]] = []

    def tick(self, requests: list[Any], ts: int | None = None) -> list[Any]:
        self.ts = self.ts + SECOND if ts is None else ts
        events: list[Any] = []
        for request in [Tick(0, 0), *requests]:
            self.seq += 1
            command = attr.evolve(request, seq=self.seq, ts=self.ts)
            events += self.engine.process(command)
        self.events += events
        self.per_tick.append(self.builder.rows(events))
        return events

    def run(self, ticks: list[list[Any]]) -> None:
        for requests in ticks:
            self.tick(requests)

    def rows(self) -> list[Row]:
        return [r for rows in self.per_tick for r in rows]


def full_scenario() -> Venue:
    """ADL, takeover and a funding instant (08:00 UTC of day 0)."""
    v = Venue()
    v.run(ADL + TAKEOVER + FUNDING)
    v.tick([], ts=28_800 * SECOND)
    return v


def facts(rows: list[Row], kind: type) -> list[Any]:
    return [r for r in rows if type(r) is kind]


# -- rows (pure) ------------------------------------------------------------------------------


def test_adl_takeover_and_funding_rows_carry_the_engines_numbers() -> None:
    """ADL against B and D at A's bankruptcy price, a takeover of A2's position by the fund,
    and funding with a rounding residual: each event one row, in asset units and prices."""
    v = full_scenario()
    rows = v.rows()
    adl_at, takeover_at = v.per_tick[4], v.per_tick[8]
    assert [(r.kind, r.from_account, r.to_account, r.side, r.qty, r.price)
            for r in facts(adl_at, TransferRow)] == [
        ("ADL", "A", "B", "SELL", Decimal("0.400"), Decimal("58601.5")),
        ("ADL", "A", "D", "SELL", Decimal("0.300"), Decimal("58601.5"))]
    (step,) = facts(adl_at, LiquidationRow)
    assert step.order_id == LIQ_ID_BASE and step.account == "A"
    assert (step.side, step.qty, step.filled, step.avg_price, step.bankruptcy_price,
            step.taken_over, step.deleveraged) == (
        "SELL", Decimal("0.700"), Decimal("0.000"), None, Decimal("58601.5"),
        Decimal("0.000"), Decimal("0.700"))
    # A's 979 USDT less 0.7 x (60,000 - 58,601.5) = 978.95 of loss: 0.05 left for the fee
    assert step.fee == Decimal("0.05")
    (tr,) = facts(takeover_at, TransferRow)
    assert (tr.kind, tr.from_account, tr.to_account, tr.qty, tr.price) == (
        "TAKEOVER", "A2", INSURANCE, Decimal("0.700"), Decimal("56600.5"))
    (step2,) = facts(takeover_at, LiquidationRow)
    assert (step2.order_id, step2.taken_over, step2.deleveraged) == (
        LIQ_ID_BASE + 1, Decimal("0.700"), Decimal("0.000"))
    # funding at 08:00 UTC: 0.01% of each notional at 56,000.1; payers round up
    rate = facts(rows, FundingRateRow)
    btc = next(r for r in rate if r.symbol == BTC)
    assert (btc.rate, btc.mark, btc.positions, btc.ts, btc.next_funding_ts) == (
        Decimal("0.0001"), Decimal("56000.1"), 4, ns_to_datetime(28_800 * SECOND),
        ns_to_datetime(57_600 * SECOND))
    pays = {r.account: (r.amount, r.size) for r in facts(rows, FundingPaymentRow)}
    # 0.7 x 56,000.1 x 0.0001 = 3.9200070; 0.007 x 56,000.1 x 0.0001 = 0.039200070
    assert pays == {
        INSURANCE: (Decimal("-3.920007"), Decimal("0.700")),
        "S": (Decimal("3.920007"), Decimal("-0.700")),
        "F": (Decimal("-0.039201"), Decimal("0.007")),
        "G": (Decimal("0.039200"), Decimal("-0.007")),
    }
    assert (btc.paid, btc.received, btc.residual) == (
        Decimal("3.959208"), Decimal("3.959207"), Decimal("0.000001"))
    assert sum(a for a, _ in pays.values()) + btc.residual == 0
    # every FundingPayment is one row, with the engine's numbers
    engine_pays = [e for e in v.events if type(e) is FundingPayment]
    assert [(r.seq, r.account, r.rate) for r in facts(rows, FundingPaymentRow)] == [
        (e.seq, e.account, Decimal(e.rate_e8) / 10**8) for e in engine_pays]


def test_facts_are_keyed_by_what_a_replay_gives_again() -> None:
    """Two builders over the same events give the same rows (the keys are journaled ids)."""
    v = full_scenario()
    again = RowBuilder(INSTRUMENTS)
    assert [r for r in again.rows(v.events) if type(r) in FACT_ROWS] == \
        [r for r in v.rows() if type(r) in FACT_ROWS]


# -- Postgres ---------------------------------------------------------------------------------


@pytest.fixture(params=STRATEGIES)
def writer(request: pytest.FixtureRequest, migrated_dsn: str) -> Iterator[BatchWriter]:
    """A BatchWriter of each strategy on a migrated schema."""
    w = BatchWriter(migrated_dsn, request.param)
    yield w
    w.close()


def dump(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    tables = {t: fetch(dsn, q) for t, q in QUERIES.items()}
    tables["insurance_fund"] = fetch(dsn, "SELECT * FROM insurance_fund ORDER BY asset")
    tables["insurance_fund_ledger"] = fetch(dsn, "SELECT * FROM insurance_fund_ledger "
                                                 "ORDER BY seq, entry")
    tables["positions"] = fetch(dsn, "SELECT * FROM positions ORDER BY account, symbol")
    return tables


def test_rows_are_written_once_and_the_fund_views_match_the_engine(writer: BatchWriter) -> None:
    """Written tick by tick, then all again in one batch and newest first, the tables hold one
    row per event; insurance_fund is the engine's fund balance and its ledger sums to it;
    the fund's taken-over position is its positions row."""
    v = full_scenario()
    for rows in v.per_tick:
        writer.write(rows)
    dsn = writer.dsn
    once = dump(dsn)
    writer.write(v.rows())
    for rows in reversed(v.per_tick):
        writer.write(rows)
    assert dump(dsn) == once
    counts = {t: len(once[t]) for t in NEW_TABLES}
    assert counts == {"funding_payments": 4, "funding_rates": 2, "liquidations": 2,
                      "position_transfers": 3}
    assert fetch(dsn, "SELECT order_id, account, side, qty, filled, avg_price, "
                      "bankruptcy_price, taken_over, deleveraged, fee FROM liquidations "
                      "ORDER BY order_id") == [
        (LIQ_ID_BASE, "A", "SELL", Decimal("0.700"), Decimal("0.000"), None,
         Decimal("58601.5"), Decimal("0.000"), Decimal("0.700"), Decimal("0.050000")),
        (LIQ_ID_BASE + 1, "A2", "SELL", Decimal("0.700"), Decimal("0.000"), None,
         Decimal("56600.5"), Decimal("0.700"), Decimal("0.000"), Decimal("0.050000"))]
    # the liquidation order is an order like any other (cl_ord_id LIQ-n), in its own table
    assert fetch(dsn, f"SELECT cl_ord_id, account, status FROM orders "
                      f"WHERE order_id >= {LIQ_ID_BASE} ORDER BY order_id") == [
        ("LIQ-0", "A", "CANCELED"), ("LIQ-1", "A2", "CANCELED")]
    fund = v.engine.risk.accounts[(INSURANCE, "USDT")]
    ((asset, balance, last_seq, _),) = once["insurance_fund"]
    assert (asset, balance) == ("USDT", Decimal(fund.balance).scaleb(-6))
    assert last_seq == max(e.seq for e in v.events if type(e) is BalanceChanged
                           and e.account == INSURANCE)
    ledger = once["insurance_fund_ledger"]
    assert sum(r[4] for r in ledger) == balance
    assert [(r[6], r[4]) for r in ledger] == [
        ("LIQUIDATION", Decimal("0.05")),  # A's fee (ADL)
        ("DEPOSIT", Decimal(1000)),
        ("LIQUIDATION", Decimal("0.05")),  # A2's fee (takeover)
        ("FUNDING", Decimal("-3.920007")),  # the taken-over long pays
        ("FUNDING", Decimal("0.000001")),  # the residual
    ]
    assert fetch(dsn, f"SELECT side, size_lots, entry_price, asset FROM positions "
                      f"WHERE account = '{INSURANCE}'") == [
        ("LONG", 700, Decimal("56600.5"), "USDT")]


def test_migration_applies_on_a_database_at_008(pg_dsn: str) -> None:
    """009 applies after 008 on a database that already holds risk rows, and its views read
    those rows."""
    from fixserver.pg.migrations import discover, migrate

    migrations = discover()
    (mig,) = [m for m in migrations if m.name == "009_liquidation_funding.sql"]
    with psycopg.connect(pg_dsn) as conn:
        migrate(conn, migrations[:mig.version - 1])
        conn.execute(f"INSERT INTO balances VALUES ('{INSURANCE}', 'USDT', 12.5, 0, 0, 7, "
                     "now())")
        conn.commit()
        assert [m.name for m in migrate(conn, migrations)] == [
            m.name for m in migrations[mig.version - 1:]]
    assert fetch(pg_dsn, "SELECT asset, balance, last_seq FROM insurance_fund") == [
        ("USDT", Decimal("12.5"), 7)]
    tables = {r[0] for r in fetch(pg_dsn, "SELECT tablename FROM pg_tables "
                                          "WHERE schemaname = current_schema()")}
    assert tables >= set(NEW_TABLES)


# -- catch-up after an outage -----------------------------------------------------------------


T0 = 1_700_000_000 * SECOND  # the next funding instant is 6,400 s later (8 h multiples)
FUNDING_AT = 1_700_006_400 * SECOND


def test_catch_up_regenerates_liquidation_and_funding_rows(tmp_path: Any,
                                                           migrated_dsn: str) -> None:
    """Postgres commits nothing after the positions open; the ADL, the takeover and the
    funding instant are regenerated from the journal (from a snapshot before them) and the
    replayed tail, leaving exactly the tables an uninterrupted writer leaves."""
    ex = Exchange(str(tmp_path), INSTRUMENTS)
    ex.step(*ADL[0], seconds=1.1)
    ex.step(*ADL[1], seconds=1.1, snapshot=True)  # the base catch-up starts from
    ex.step(*ADL[2], seconds=1.1)
    mark = ex.ticks[-1][1]  # Postgres committed every tick before this, then went away
    ex.pipeline.retain_from_seq = lambda: mark
    for requests in ADL[3:] + TAKEOVER:
        ex.step(*requests, seconds=1.1)
    ex.step(*FUNDING[0], seconds=1.1, snapshot=True)
    # hours later: past SnapshotEverySeconds, so the pipeline snapshots this tick itself
    ex.step(seconds=(FUNDING_AT - T0) / SECOND - ex.clock.seconds() + 0.5)
    funded = ex.pipeline.sequencer.position()[0]
    assert ex.directory.snapshots()[-1][0] == funded
    ex.step(deposit(INSURANCE, 5), seconds=1.1)  # the tail after the latest snapshot
    ex.pipeline.writer.close()
    produced = [r for rows, _ in ex.ticks for r in rows]
    assert {type(r) for r in produced} >= set(FACT_ROWS), "every kind of fact happened"
    assert len(facts(produced, LiquidationRow)) == 2

    w = BatchWriter(migrated_dsn)
    try:
        for rows, next_seq in ex.ticks:  # the uninterrupted writer
            w.write(rows, next_seq)
        expected = dump(migrated_dsn)
        with psycopg.connect(migrated_dsn) as conn:
            conn.execute("TRUNCATE pg_writer_progress, balances, balance_ledger, positions, "
                         "orders, executions, " + ", ".join(NEW_TABLES))
        for rows, next_seq in ex.ticks:
            if next_seq <= mark:
                w.write(rows, next_seq)
        assert fetch(migrated_dsn, "SELECT count(*) FROM liquidations") == [(0,)]

        directory = JournalDirectory(str(tmp_path), fsync=False)
        seen: list[Any] = []

        def restore(data: bytes) -> MatchingEngine:
            engine = MatchingEngine.restore(data)
            seen.append(risk_state_of(engine))
            return engine

        rec = directory.recover(lambda: MatchingEngine(INSTRUMENTS), restore)
        latest = rec.next_seq
        assert directory.snapshots()[0][0] < mark < latest
        regen = regenerate(directory, INSTRUMENTS, mark, latest)
        assert regen.gap is None
        regenerated = [r for rows, _ in regen.chunks for r in rows]
        assert len(facts(regenerated, LiquidationRow)) == 2
        assert facts(regenerated, FundingRateRow)
        for rows, next_seq in regen.chunks:
            w.write(rows, next_seq)
        tail = RowBuilder(INSTRUMENTS, PositionBook.from_dict(rec.extra["positions"]),
                          risk_state=seen[-1])
        replayed = list(rec.replay(directory.read_records(latest)))
        assert replayed
        w.write(tail.processed_rows(replayed, lambda origin: None),
                replayed[-1].command.seq + 1)
    finally:
        w.close()
    assert dump(migrated_dsn) == expected
    assert expected["funding_rates"] and expected["insurance_fund"]
