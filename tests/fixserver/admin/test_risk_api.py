"""The admin API's risk actions over loopback against an in-process exchange with margined
instruments: each needs the token, changes are journaled engine commands with the operator,
answers carry the engine's outcome (balance, settings, refusal reason and shortfall), the
account view follows released events, and bad input gets a clear JSON error."""

from __future__ import annotations

from decimal import Decimal

import pytest_twisted

from engine.commands import (
    AdjustIsolatedMargin,
    Deposit,
    SetIndexPrice,
    SetLeverage,
    SetMarginMode,
    Withdraw,
)
from engine.enums import MarginMode
from fixserver.journal_file import JournalDirectory

from .exchange import TOKEN, api, base_url, logged_on
from .risk_exchange import start_margined

#: one valid request per risk action (test_api.py covers the other actions)
RISK_VALID = {
    "deposit": ("POST", "/admin/accounts/deposit",
                {"account": "A1", "asset": "USDT", "amount": "2500.5", "ref": "wire-1"}),
    "withdraw": ("POST", "/admin/accounts/withdraw",
                 {"account": "A1", "asset": "USDT", "amount": "500"}),
    "leverage": ("POST", "/admin/accounts/leverage",
                 {"account": "A1", "symbol": "BTC-PERP", "leverage": 25}),
    "margin-mode": ("POST", "/admin/accounts/margin-mode",
                    {"account": "B1", "symbol": "ETH-PERP", "mode": "isolated"}),
    "isolated-margin": ("POST", "/admin/accounts/isolated-margin",
                        {"account": "B1", "symbol": "ETH-PERP", "amount": "100"}),
    "account": ("GET", "/admin/accounts/risk?account=A1", None),
    "index-price": ("POST", "/admin/index", {"symbol": "BTC-PERP", "price": "60123.4"}),
    "marks": ("GET", "/admin/index", None),
    "insurance-fund": ("GET", "/admin/insurance-fund", None),
}


def _journal(tmp_path) -> list:
    directory = JournalDirectory(str(tmp_path / "journal"))
    return [entry for rec in directory.read_records() for entry in rec.entries]


def _order(cl_ord_id: str, account: str, side: str, qty: str, price: str,
           symbol: str = "ETH-PERP") -> list:
    return [(11, cl_ord_id), (1, account), (55, symbol), (54, side),
            (60, "20240101-00:00:00"), (38, qty), (40, "2"), (44, price)]


def _report(client, cl_ord_id: str, exec_type: bytes):
    return client.wait_for(lambda m: m.msg_type == b"8" and m.get(11) == cl_ord_id.encode()
                           and m.get(150) == exec_type)


@pytest_twisted.inlineCallbacks
def test_risk_actions_need_the_token_are_journaled_and_answer_the_engines_outcome(tmp_path):
    """401/403 without or with a wrong token, 200 with the right one; deposits answer the new
    balance, settings the position's, the index its price; all journaled with ``ops``."""
    server = start_margined(tmp_path)
    try:
        url = base_url(server)
        routes = {r.name for r in server.application.admin_resource.router.routes()}
        assert set(RISK_VALID) <= routes
        acme = yield logged_on(server, "ACME1")
        beta = yield logged_on(server, "BETA1")
        # B1 isolated in ETH-PERP, then a trade gives it a position to add margin to
        status, answer, _ = yield api(url, *RISK_VALID["margin-mode"][:2], TOKEN,
                                      RISK_VALID["margin-mode"][2])
        assert status == 200 and answer["margin_mode"] == "isolated", answer
        beta.send("D", _order("S1", "B1", "2", "1", "3000"))
        yield _report(beta, "S1", b"0")
        acme.send("D", _order("B1", "A1", "1", "1", "3000"))
        yield _report(acme, "B1", b"F")
        answers = {}
        for name, (method, path, body) in RISK_VALID.items():
            status, answer, _ = yield api(url, method, path, None, body)
            assert status == 401, (name, answer)
            status, answer, _ = yield api(url, method, path, "not-a-valid-token-xxxx", body)
            assert status == 403, (name, answer)
            status, answers[name], _ = yield api(url, method, path, TOKEN, body)
            assert status == 200, (name, answers[name])
        assert answers["deposit"]["ref"] == "wire-1" and answers["deposit"]["by"] == "ops"
        assert Decimal(answers["deposit"]["balance"]) == Decimal("1002500.5")
        assert Decimal(answers["withdraw"]["balance"]) == Decimal("1002000.5")
        assert answers["leverage"]["leverage"] == 25
        assert answers["leverage"]["margin_mode"] == "cross"
        iso = answers["isolated-margin"]
        assert iso["margin_mode"] == "isolated" and iso["leverage"] == 10
        # 1 ETH at 3000 with 10x: 300 USDT initial margin moved in by the fill, +100
        assert Decimal(iso["isolated_margin"]) == Decimal("400")
        assert answers["index-price"]["index"] == "60123.4"
        view = answers["account"]
        assert view["account"] == "A1"
        (usdt,) = view["collateral"]
        assert usdt["asset"] == "USDT"
        # funding + deposit - withdrawal (no fees: the instruments charge none)
        assert Decimal(usdt["balance"]) == Decimal("1002000.5")
        (eth,) = [p for p in view["positions"] if p["symbol"] == "ETH-PERP"]
        assert Decimal(eth["size"]) == 1 and Decimal(eth["entry_price"]) == 3000
        assert eth["margin_mode"] == "cross" and eth["leverage"] == 10
        assert Decimal(eth["initial_margin"]) == Decimal("300")
        marks = {m["symbol"]: m for m in answers["marks"]["marks"]}
        assert set(marks) == {"BTC-PERP", "ETH-PERP"}
        assert marks["BTC-PERP"]["index"] == "60123.4" and not marks["BTC-PERP"]["stale"]
        # B1's isolated margin is part of its balance and shows in its view
        status, b1, _ = yield api(url, "GET", "/admin/accounts/risk?account=B1", TOKEN)
        assert status == 200
        assert Decimal(b1["collateral"][0]["isolated_margin"]) == Decimal("400")
        (short,) = b1["positions"]
        assert Decimal(short["size"]) == -1 and short["margin_mode"] == "isolated"
        assert short["liquidation_price"] is not None
    finally:
        server.application.pipeline.snapshot_on_shutdown = False
        yield server.stop()
    journaled = _journal(tmp_path)
    by_type = {}
    for o, c in journaled:
        by_type.setdefault(type(c), []).append((o, c))
    funding = [(c.account, c.amount, c.ref) for o, c in by_type[Deposit]
               if o == ("", "A", "config", "funding")]
    assert funding == [("A1", 1_000_000_000_000, "config-funding"),
                       ("B1", 1_000_000_000_000, "config-funding")]
    assert (("", "A", "ops", "deposit"),
            Deposit(by_type[Deposit][-1][1].seq, by_type[Deposit][-1][1].ts, "A1", "USDT",
                    2_500_500_000, "wire-1")) == by_type[Deposit][-1]
    assert [(o[2:], c.amount) for o, c in by_type[Withdraw]] == [(("ops", "withdraw"),
                                                                   500_000_000)]
    assert [c.leverage for _, c in by_type[SetLeverage]] == [25]
    assert {c.mode for _, c in by_type[SetMarginMode]} == {MarginMode.ISOLATED}
    assert [c.amount for _, c in by_type[AdjustIsolatedMargin]] == [100_000_000]
    assert [(c.symbol, c.price) for _, c in by_type[SetIndexPrice]] == [("BTC-PERP", 601234)]


@pytest_twisted.inlineCallbacks
def test_refusals_are_clear_json_with_the_engines_reason_and_shortfall(tmp_path):
    """A withdrawal beyond the free balance is 409 INSUFFICIENT_MARGIN with the shortfall;
    unknown names 404; inexact or malformed amounts and off-grid prices 400."""
    server = start_margined(tmp_path)
    try:
        url = base_url(server)
        status, answer, _ = yield api(url, "POST", "/admin/accounts/withdraw", TOKEN,
                                      {"account": "B1", "asset": "USDT",
                                       "amount": "1000000.25"})
        assert status == 409, answer
        assert answer["reason"] == "insufficient_margin"
        assert Decimal(answer["shortfall"]) == Decimal("0.25")
        assert "short by 0.25" in answer["error"] and answer["status"] == 409
        status, answer, _ = yield api(url, "POST", "/admin/accounts/leverage", TOKEN,
                                      {"account": "A1", "symbol": "ETH-PERP", "leverage": 51})
        assert status == 400 and "above ETH-PERP's maximum 50" in answer["error"], answer
        cases = [
            ("/admin/accounts/deposit", {"account": "NOPE", "asset": "USDT", "amount": "1"},
             404, "unknown account NOPE"),
            ("/admin/accounts/deposit", {"account": "A1", "asset": "BTC", "amount": "1"},
             404, "unknown asset BTC"),
            ("/admin/accounts/deposit", {"account": "A1", "asset": "USDT",
                                         "amount": "0.0000001"}, 400, "USDT has 6 decimals"),
            ("/admin/accounts/deposit", {"account": "A1", "asset": "USDT", "amount": 1.5},
             400, "amount must be"),
            ("/admin/accounts/deposit", {"account": "A1", "asset": "USDT", "amount": "-5"},
             400, "amount must be positive"),
            ("/admin/accounts/deposit", {"account": "A1", "asset": "USDT", "amount": "lots"},
             400, "decimal number"),
            ("/admin/accounts/isolated-margin", {"account": "A1", "symbol": "BTC-PERP",
                                                 "amount": "10"}, 409, "no isolated position"),
            ("/admin/accounts/margin-mode", {"account": "A1", "symbol": "BTC-PERP",
                                             "mode": "partial"}, 400, "cross, isolated"),
            ("/admin/index", {"symbol": "BTC-PERP", "price": "60000.05"}, 400,
             "not a multiple of BTC-PERP's tick size 0.1"),
            ("/admin/index", {"symbol": "DOGE-PERP", "price": "1"}, 404,
             "unknown instrument DOGE-PERP"),
            ("/admin/index", {"symbol": "BTC-PERP", "price": "0"}, 400, "positive"),
        ]
        for path, body, code, words in cases:
            status, answer, _ = yield api(url, "POST", path, TOKEN, body)
            assert status == code and words in answer["error"], (path, body, answer)
        status, answer, _ = yield api(url, "GET", "/admin/accounts/risk", TOKEN)
        assert status == 400 and "missing parameter account" in answer["error"]
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_an_instrument_listed_while_running_can_be_margined(tmp_path):
    """POST /admin/instruments takes the risk keys (same checks as [INSTRUMENT]): the new
    instrument is margined at once (leverage can be set); bad tiers are 400 naming them."""
    server = start_margined(tmp_path)
    try:
        url = base_url(server)
        body = {"symbol": "SOL-PERP", "tick_size": "0.001", "lot_size": "0.1",
                "reference_price": "150", "max_leverage": 20,
                "risk_tiers": "10000:1%:20, 100000:2.5%:10"}
        status, answer, _ = yield api(url, "POST", "/admin/instruments", TOKEN,
                                      {**body, "risk_tiers": "10000:1%:50"})
        assert status == 400 and answer["error"].startswith("risk_tiers="), answer
        assert "above MaxLeverage 20" in answer["error"]
        status, answer, _ = yield api(url, "POST", "/admin/instruments", TOKEN, body)
        assert status == 200 and answer["listed"], answer
        inst = server.application.pipeline.engine.markets["SOL-PERP"].instrument
        assert inst.risk_tiers == ((10_000_000_000, 10_000, 20), (100_000_000_000, 25_000, 10))
        status, answer, _ = yield api(url, "POST", "/admin/accounts/leverage", TOKEN,
                                      {"account": "A1", "symbol": "SOL-PERP", "leverage": 10})
        assert status == 200 and answer["leverage"] == 10, answer
        status, answer, _ = yield api(url, "GET", "/admin/instruments", TOKEN)
        sol = [i for i in answer["instruments"] if i["symbol"] == "SOL-PERP"]
        assert sol[0]["max_leverage"] == 20 and sol[0]["settlement_asset"] == "USDT"
    finally:
        yield server.stop()
