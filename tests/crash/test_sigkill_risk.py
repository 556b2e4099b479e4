"""SIGKILL crash test with the risk engine in the flow: margined BTC-PERP, thinly funded
accounts at 50x, an index that jumps, funding every two seconds, liquidations (through the
book, insurance-fund takeovers, ADL). The exchange is killed at random moments and right
after index jumps (while the liquidation tick runs), restarted, and at the end its live
state hash must equal an offline replay of its journal, with liquidations and funding
having happened and collateral conserved in the replayed engine."""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator

import pytest

from engine.events import FundingApplied, Liquidated, PositionTransferred
from engine.matcher import MatchingEngine
from engine.recovery import Recovery
from fixserver.journal_file import JournalDirectory
from fixserver.orderentry.instrument_sync import first_commands, genesis_instruments
from tests.crash.harness import ADMIN_TOKEN, ServerProcess, TradingClient, free_port, write_config
from tests.crash.test_sigkill_recovery import check_violations, drive, reconnect

SEED = int(os.environ.get("CRASH_SEED", "20261205"))
CYCLES = int(os.environ.get("CRASH_RISK_CYCLES", "4"))
CLIENTS = (("RISK1", "F1", "A1"), ("RISK2", "F2", "A2"), ("RISK3", "F3", "A3"),
           ("RISK4", "F4", "A4"))
RISK_SECTIONS = """
[INSTRUMENT]
Symbol=BTC-PERP
TickSize=0.1
LotSize=0.001
MinQty=0.001
MaxQty=1000
MakerFeePpm=-100
TakerFeePpm=500
PriceBandPpm=100000
ReferencePrice=60000.0
MaxLeverage=100
DefaultLeverage=50
RiskTiers=50000:0.5%:100, 250000:1%:50, 10000000:5%:10
MarkIntervalMs=100
MarkSmoothing=4
FundingIntervalSeconds=2
FundingInterestRate=0.05%

[FUNDING]
Accounts=A1,A2,A3,A4
Asset=USDT
Amount=40
"""


@pytest.fixture
def exchange(tmp_path) -> Iterator[ServerProcess]:
    fix_port, http_port = free_port(), free_port()
    config = write_config(str(tmp_path), CLIENTS, fix_port=fix_port, http_port=http_port)
    with open(config, "a") as f:
        f.write(RISK_SECTIONS)
    server = ServerProcess(config, fix_port, http_port, str(tmp_path / "server.log"))
    try:
        yield server
    finally:
        if server.proc is not None:
            server.kill()


def post_index(server: ServerProcess, price: float) -> None:
    """Journal an index price through the admin API (returns once it is durable)."""
    body = json.dumps({"symbol": "BTC-PERP", "price": f"{price:.1f}"}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.http_port}/admin/index", data=body, method="POST",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=15) as r:
        assert r.status == 200, r.read()


def replay(journal: str, hash_at: int) -> tuple[MatchingEngine, Counter, dict[int, str]]:
    """Replay a copy of the journal from scratch as the server does at start-up (genesis
    instruments from its first commands); count the risk events; the state hash once seq
    ``hash_at`` is applied."""
    with tempfile.TemporaryDirectory(prefix="journal-copy-") as tmp:
        copy = os.path.join(tmp, "journal")
        shutil.copytree(journal, copy, ignore=shutil.ignore_patterns("snapshot-*", "*.tmp"))
        directory = JournalDirectory(copy, fsync=False)
        recovery = Recovery(MatchingEngine(genesis_instruments(first_commands(copy))))
        counts: Counter = Counter()
        hashes: dict[int, str] = {}
        for processed in recovery.replay(directory.read_records(1)):
            for e in processed.events:
                if type(e) in (Liquidated, FundingApplied, PositionTransferred):
                    counts[type(e).__name__] += 1
            if processed.command.seq == hash_at:
                hashes[hash_at] = recovery.engine.state_hash()
        return recovery.engine, counts, hashes


def conserved(eng: MatchingEngine) -> None:
    risk = eng.risk
    v = risk.instruments["BTC-PERP"].v
    balances = sum(a.balance for a in risk.accounts.values())
    open_cost = sum((p.entry_cost if p.size > 0 else -p.entry_cost) * v
                    for p in risk.positions.values() if p.size)
    assert (balances + risk.fee_pool.get("USDT", 0) - open_cost
            == risk.deposited.get("USDT", 0) - risk.withdrawn.get("USDT", 0))
    assert sum(p.size for p in risk.positions.values()) == 0


@pytest.mark.integration
def test_sigkill_during_liquidations_and_funding(exchange) -> None:
    server = exchange
    journal = os.path.join(os.path.dirname(server.config_path), "journal")
    rng = random.Random(SEED)
    clients = [TradingClient(comp, account, SEED * 10 + i)
               for i, (comp, _, account) in enumerate(CLIENTS)]
    server.start()
    reconnect(clients, server)
    index = 60_000.0
    for _cycle in range(CYCLES):
        # trade while the index walks, then jump it and kill at once: the liquidation tick
        # (the next mark, <= 100 ms later) is running or about to when the kill lands
        for _ in range(rng.randrange(4, 9)):
            index = max(50_000.0, min(70_000.0, index * (1 + rng.uniform(-0.004, 0.004))))
            post_index(server, index)
            drive(clients, rng.uniform(0.1, 0.4), rng)
        index *= 1 + rng.choice((-1, 1)) * rng.uniform(0.03, 0.06)
        post_index(server, index)
        time.sleep(rng.uniform(0.0, 0.15))
        server.kill()
        for c in clients:
            c.drop()
        server.start()
        reconnect(clients, server)
        drive(clients, 0.3, rng)
        check_violations(clients)
    drive(clients, 2.5, rng)  # past a funding instant with the server up
    check_violations(clients)
    status, state = server.http_get("/admin/state-hash")
    assert status == 200, state
    assert server.stop() == 0, server.log_tail()
    engine, counts, hashes = replay(journal, state["seq"])
    print(f"replayed risk events: {dict(counts)}")
    assert counts["Liquidated"] > 0, f"no liquidation happened: {counts}"
    assert counts["FundingApplied"] > 0, f"no funding happened: {counts}"
    conserved(engine)
    assert hashes.get(state["seq"]) == state["state_hash"], (
        f"live state hash at seq {state['seq']} != replay {hashes}")
