"""Risk-engine benchmark: the cost of margin on the matcher, and a mark move with many holders.

Usage::

    .venv/bin/python bench/bench_risk.py            # 200k commands x 5 rounds, 100k holders
    .venv/bin/python bench/bench_risk.py --quick    # 50k commands x 3 rounds, 20k holders

1. **Risk on beside risk off, same run.** bench_engine's mixed workload (40% passive new
   orders, 35% cancels, 15% replaces, 10% marketable; 1,000 accounts) runs on the demo
   instruments unmargined (risk off) and margined (risk on: every account funded, an index
   set, every order through the pre-trade check, every fill through positions, fees and the
   ledger). Rounds alternate off/on; the figure is process CPU time per command, median of
   the rounds, and the ratio on/off. Goal: risk costs at most 30% of the matcher's rate.
2. **A mark move with N accounts holding positions** in the instrument (each bought from
   one market maker, cross margin, well collateralised) and nobody near a threshold: the
   CPU time of the Tick that recomputes the mark (index moved by one tick, alternating up
   and down), median of 200. Goal: at most 1 ms at N = 100,000.
3. **A mark move that liquidates 1,000 accounts at once**: 1,000 accounts long 10 lots at
   100x with 0.6% of collateral, a market maker's bids below; the index drops 1.5% and the
   one Tick cancels, liquidates through the book (one IOC each) and charges fees. CPU time
   of that tick, median of 3 set-ups.
4. **Funding over N open positions**: the N holders of (2) plus the market maker; the Tick
   at the funding instant charges every position (N+1 payments, ledger entries, threshold
   re-arming). CPU time of that tick.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import attr

from bench.bench_engine import SYMBOL, make_workload
from engine import MatchingEngine, NewOrder, Side, demo_instruments
from engine.commands import Deposit, SetIndexPrice, SetLeverage, Tick
from engine.events import FundingPayment, Liquidated, MarkPriceUpdated

TIERS = ((50_000_000_000, 5_000, 100), (250_000_000_000, 10_000, 50),
         (10_000_000_000_000, 50_000, 10))
USDT = 1_000_000
REF = 600_000
BIG_SEQ = 10**13  # seqs for set-up commands, far from the workload's order ids
TARGET_RATIO = 1.30
TARGET_MARK_MS = 1.0


def margined() -> list:
    return [attr.evolve(i, max_leverage=100, default_leverage=10, risk_tiers=TIERS)
            for i in demo_instruments()]


def risk_on_engine(prefill: list) -> MatchingEngine:
    eng = MatchingEngine(margined())
    ts = prefill[0].ts - 1_000
    for i in range(1_000):
        eng.process(Deposit(BIG_SEQ + i, ts, f"acct{i}", "USDT", 10_000_000 * USDT))
    eng.process(SetIndexPrice(BIG_SEQ + 2_000, ts, SYMBOL, REF))
    eng.process(Tick(BIG_SEQ + 2_001, ts))
    for c in prefill:
        eng.process(c)
    return eng


def risk_off_engine(prefill: list) -> MatchingEngine:
    eng = MatchingEngine(demo_instruments())
    for c in prefill:
        eng.process(c)
    return eng


def cpu_per_command(eng: MatchingEngine, cmds: list) -> float:
    """Process CPU microseconds per command (events built and dropped)."""
    process = eng.process
    c0 = time.process_time()
    for c in cmds:
        process(c)
    return (time.process_time() - c0) / len(cmds) * 1e6


class Runner:
    """Feeds commands with increasing seq (one ts) to a margined engine whose market maker
    "mm" is funded and whose BTC-PERP index and mark are at REF."""

    def __init__(self) -> None:
        self.eng = MatchingEngine(margined())
        self.seq = 0
        self.ts = 1_700_000_000_000_000_000
        self.run(Deposit, "mm", "USDT", 10**9 * USDT)
        self.run(SetIndexPrice, SYMBOL, REF)
        self.run(Tick)

    def run(self, cmd_cls: Any, *args: Any, **kw: Any) -> list:
        self.seq += 1
        return self.eng.process(cmd_cls(self.seq, self.ts, *args, **kw))

    def longs(self, n: int, lots: int, usdt: int, leverage: int = 0) -> None:
        """``n`` accounts h0.. funded with ``usdt``, each buying ``lots`` from mm."""
        for i in range(n):
            self.run(Deposit, f"h{i}", "USDT", usdt * USDT)
            if leverage:
                self.run(SetLeverage, f"h{i}", SYMBOL, leverage)
        self.run(NewOrder, "mm", SYMBOL, Side.SELL, lots * n, REF)
        for i in range(n):
            self.run(NewOrder, f"h{i}", SYMBOL, Side.BUY, lots, REF)


def holders_engine(n: int) -> tuple[MatchingEngine, int, int]:
    """An engine where ``n`` accounts are long 1 lot each against one market maker."""
    r = Runner()
    r.longs(n, 1, 1_000)
    return r.eng, r.seq, r.ts


def mark_move_ms(eng: MatchingEngine, seq: int, ts: int, moves: int) -> tuple[float, int]:
    """Median CPU ms of a Tick that moves the mark by one tick; also thresholds armed."""
    samples = []
    for k in range(moves):
        seq += 1
        ts += 2_000_000_000  # past the mark interval
        eng.process(SetIndexPrice(seq, ts, SYMBOL, REF + (k + 1) % 2))
        seq += 1
        c0 = time.process_time_ns()
        events = eng.process(Tick(seq, ts))
        samples.append((time.process_time_ns() - c0) / 1e6)
        assert any(type(e) is MarkPriceUpdated for e in events)
    armed = len(eng.risk.monitor.thresholds[SYMBOL])
    return statistics.median(samples), armed


def liquidation_tick_ms(n: int) -> tuple[float, int]:
    """CPU ms of the tick that liquidates ``n`` accounts; also how many were liquidated."""
    r = Runner()
    # 10 lots at 60,000 = 600 USDT of notional each; 100x: 6 USDT margin, 0.3 fee
    r.longs(n, 10, 7, leverage=100)
    run = r.run
    for k in range(20):  # the market maker's bids, 1-1.5% below: the liquidations hit them
        run(NewOrder, "mm", SYMBOL, Side.BUY, n, REF - 6_000 - 150 * k)
    r.ts += 2_000_000_000
    run(SetIndexPrice, SYMBOL, REF - 9_000)
    c0 = time.process_time_ns()
    events = run(Tick)
    ms = (time.process_time_ns() - c0) / 1e6
    return ms, sum(1 for e in events if type(e) is Liquidated)


def funding_tick_ms(eng: MatchingEngine, seq: int, ts: int) -> tuple[float, int]:
    """CPU ms of the tick at the next funding instant; also the payments made."""
    step = 28_800 * 1_000_000_000
    ts = (ts // step + 1) * step
    c0 = time.process_time_ns()
    events = eng.process(Tick(seq + 1, ts))
    ms = (time.process_time_ns() - c0) / 1e6
    return ms, sum(1 for e in events if type(e) is FundingPayment)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n, rounds, holders = (50_000, 3, 20_000) if args.quick else (200_000, 5, 100_000)
    print(f"python {sys.version.split()[0]} ({sys.implementation.name}); "
          f"load average {os.getloadavg()[0]:.1f}")
    prefill, cmds = make_workload(n, 20_000)
    off_us, on_us = [], []
    for _ in range(rounds):
        off_us.append(cpu_per_command(risk_off_engine(prefill), cmds))
        on_us.append(cpu_per_command(risk_on_engine(prefill), cmds))
    off, on = statistics.median(off_us), statistics.median(on_us)
    print(f"\n{n:,} mixed commands, {rounds} rounds alternating (process CPU time/command):")
    print(f"  risk off  {off:6.2f} us  ({1e6 / off:10,.0f} commands/s)  runs "
          + ", ".join(f"{x:.2f}" for x in off_us))
    print(f"  risk on   {on:6.2f} us  ({1e6 / on:10,.0f} commands/s)  runs "
          + ", ".join(f"{x:.2f}" for x in on_us))
    ratio = on / off
    print(f"  risk on / off = {ratio:.2f}x CPU per command; goal <= {TARGET_RATIO:.2f}x: "
          f"{'met' if ratio <= TARGET_RATIO else 'NOT met'}")
    t0 = time.perf_counter()
    eng, seq, ts = holders_engine(holders)
    print(f"\nmark move with {holders:,} accounts holding positions "
          f"(set-up {time.perf_counter() - t0:.1f} s):")
    ms, armed = mark_move_ms(eng, seq, ts, 200)
    print(f"  Tick that moves the mark: median {ms:.3f} ms CPU ({armed:,} thresholds armed); "
          f"goal <= {TARGET_MARK_MS} ms: {'met' if ms <= TARGET_MARK_MS else 'NOT met'}")
    fms, paid = funding_tick_ms(eng, seq + 1_000, ts + 10**12)
    print(f"\nfunding over {holders + 1:,} open positions: the funding tick took {fms:,.0f} ms "
          f"CPU ({paid:,} payments)")
    liq = [liquidation_tick_ms(1_000 if not args.quick else 300) for _ in range(3)]
    count = liq[0][1]
    print(f"\na mark move that liquidates {count:,} accounts: the tick took median "
          f"{statistics.median(x[0] for x in liq):,.0f} ms CPU (runs "
          + ", ".join(f"{x[0]:.0f}" for x in liq) + ")")


if __name__ == "__main__":
    main()
