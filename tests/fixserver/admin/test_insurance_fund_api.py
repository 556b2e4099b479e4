"""The insurance fund over the admin API and CLI, against an in-process exchange with margined
instruments: the operator funds ``~INSURANCE`` with the ordinary deposit, a liquidation by an
index move hands the fund a position and a fee, ``GET /admin/insurance-fund`` (and
``fixserver admin insurance-fund``) shows balance, positions and recent ledger entries, the
liquidation metrics count it, and the server's Postgres writer stores it."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import psycopg
import pytest_twisted
from prometheus_client import REGISTRY
from twisted.internet import reactor, task

from engine.risk.accounts import INSURANCE
from fixserver.admin.client import ENV_TOKEN, ENV_URL
from tests.fixserver.pg_fixtures import pg_dsn

from .exchange import TIMEOUT, TOKEN, api, base_url, logged_on
from .risk_exchange import start_margined
from .test_cli import _run
from .test_risk_api import _order, _report

__all__ = ["pg_dsn"]  # fixture used below
FUND = "/admin/insurance-fund"


def _counter(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"symbol": "BTC-PERP"}) or 0.0


@pytest_twisted.inlineCallbacks
def _ok(url: str, method: str, path: str, body: Any = None) -> Any:
    status, answer, _ = yield api(url, method, path, TOKEN, body)
    assert status == 200, (method, path, answer)
    return answer


@pytest_twisted.inlineCallbacks
def _fund_with_a_position(url: str) -> Any:
    """The fund's answer once it holds a position (released ticks run on the real reactor:
    polled, with the admin tests' generous timeout)."""
    waited = 0.0
    while True:
        answer = yield _ok(url, "GET", FUND)
        if answer["positions"]:
            return answer
        assert waited < TIMEOUT, f"the fund never took the position over: {answer}"
        yield task.deferLater(reactor, 0.1, lambda: None)
        waited += 0.1


@pytest_twisted.inlineCallbacks
def test_deposit_into_the_fund_then_a_takeover_shows_in_the_fund_view(tmp_path, capsys,
                                                                      monkeypatch, pg_dsn):
    """~INSURANCE takes deposits (API and CLI) but no leverage; A1, left with 1,000 USDT at
    100x long 0.7 BTC, is liquidated by an index drop through its bankruptcy price with no
    bids: the fund takes the 0.7 over; its view and ledger show it, newest first, and so do
    the Postgres tables the running server writes."""
    server = start_margined(tmp_path, extra=f"PostgresDSN={pg_dsn}")
    monkeypatch.setenv(ENV_TOKEN, TOKEN)
    monkeypatch.setenv(ENV_URL, base_url(server))
    liquidations, takeovers = _counter("liquidations_total"), _counter(
        "liquidation_takeovers_total")
    try:
        url = base_url(server)
        empty = yield _ok(url, "GET", FUND)
        assert empty == {"account": INSURANCE, "positions": [], "funds": [
            {"asset": "USDT", "balance": "0.000000", "equity": "0.000000",
             "unrealised_pnl": "0.000000", "withdrawable": "0.000000", "ledger": []}]}
        dep = yield _ok(url, "POST", "/admin/accounts/deposit",
                        {"account": INSURANCE, "asset": "USDT", "amount": "600",
                         "ref": "seed-fund"})
        assert (dep["account"], dep["balance"]) == (INSURANCE, "600.000000")
        code, out, err = yield _run(capsys, ["admin", "deposit", "--account", INSURANCE,
                                             "--asset", "USDT", "--amount", "400"])
        assert code == 0, err
        assert json.loads(out)["balance"] == "1000.000000"
        status, answer, _ = yield api(url, "POST", "/admin/accounts/leverage", TOKEN,
                                      {"account": INSURANCE, "symbol": "BTC-PERP",
                                       "leverage": 5})
        assert status == 409 and answer["reason"] == "insurance_fund", answer
        assert "insurance fund" in answer["error"]

        yield _ok(url, "POST", "/admin/accounts/withdraw",
                  {"account": "A1", "asset": "USDT", "amount": "999000"})
        yield _ok(url, "POST", "/admin/accounts/leverage",
                  {"account": "A1", "symbol": "BTC-PERP", "leverage": 100})
        acme = yield logged_on(server, "ACME1")
        beta = yield logged_on(server, "BETA1")
        beta.send("D", _order("S1", "B1", "2", "0.7", "60000", "BTC-PERP"))
        yield _report(beta, "S1", b"0")
        acme.send("D", _order("L1", "A1", "1", "0.7", "60000", "BTC-PERP"))
        yield _report(acme, "L1", b"F")
        # bankruptcy: 60,000 - 1,000 / 0.7 = 58,571.43 -> 58,571.5 (up for a long)
        yield _ok(url, "POST", "/admin/index", {"symbol": "BTC-PERP", "price": "58000"})
        fund = yield _fund_with_a_position(url)
        (pos,) = fund["positions"]
        assert (pos["symbol"], Decimal(pos["size"]), Decimal(pos["entry_price"])) == (
            "BTC-PERP", Decimal("0.7"), Decimal("58571.5"))
        (usdt,) = fund["funds"]
        ledger = usdt["ledger"]
        assert [(e["cause"], e["amount"], e["ref"]) for e in ledger[-2:]] == [
            ("DEPOSIT", "400.000000", "admin:ops"), ("DEPOSIT", "600.000000", "seed-fund")]
        assert ledger[0]["balance"] == usdt["balance"], "the newest entry is the balance"
        assert Decimal(usdt["balance"]) == 1000 + sum(
            Decimal(e["amount"]) for e in ledger[:-2])
        assert {e["cause"] for e in ledger[:-2]} <= {"LIQUIDATION", "INSURANCE"}
        assert ledger[0]["seq"] > ledger[-1]["seq"]
        # the fund's taken-over long is under water at 58,000: equity below the balance
        assert Decimal(usdt["equity"]) < Decimal(usdt["balance"])
        assert _counter("liquidations_total") - liquidations == 1
        assert _counter("liquidation_takeovers_total") - takeovers == 1

        one = yield _ok(url, "GET", FUND + "?asset=USDT&limit=1")
        assert one["funds"][0]["ledger"] == ledger[:1]
        code, out, err = yield _run(capsys, ["admin", "insurance-fund", "--limit", "2"])
        assert code == 0, err
        assert json.loads(out)["funds"][0]["ledger"] == ledger[:2]
        for query, code_, words in (
                ("?limit=0", 400, "limit must be a whole number >= 1"),
                ("?limit=5000", 400, "limit must be at most 1000"),
                ("?asset=BTC", 404, "unknown asset BTC"),
                ("?account=A1", 400, "unknown parameter(s) account")):
            status, answer, _ = yield api(url, "GET", FUND + query, TOKEN)
            assert status == code_ and words in answer["error"], (query, answer)
        view = yield _ok(url, "GET", f"/admin/accounts/risk?account={INSURANCE}")
        assert view["collateral"][0]["balance"] == usdt["balance"]

        yield server.application.pg_writer.flush().addTimeout(TIMEOUT, reactor)
        with psycopg.connect(pg_dsn) as conn:
            steps = conn.execute("SELECT account, side, qty, filled, taken_over, deleveraged, "
                                 "bankruptcy_price FROM liquidations").fetchall()
            transfers = conn.execute("SELECT kind, from_account, to_account, qty, price "
                                     "FROM position_transfers").fetchall()
            stored = conn.execute("SELECT asset, balance FROM insurance_fund").fetchall()
            causes = conn.execute("SELECT cause FROM insurance_fund_ledger "
                                  "ORDER BY seq DESC, entry DESC").fetchall()
        assert steps == [("A1", "SELL", Decimal("0.700"), Decimal("0.000"), Decimal("0.700"),
                          Decimal("0.000"), Decimal("58571.5"))]
        assert transfers == [("TAKEOVER", "A1", INSURANCE, Decimal("0.700"),
                              Decimal("58571.5"))]
        assert stored == [("USDT", Decimal(usdt["balance"]))]
        assert [c for (c,) in causes] == [e["cause"] for e in ledger]
    finally:
        yield server.stop()
