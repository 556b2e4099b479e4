"""``fixserver admin`` risk commands against a running in-process exchange with margined
instruments: deposit, withdraw, leverage, margin mode, index price, account and marks print
the server's answer; a refused withdrawal exits 1 with the reason and the shortfall."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest_twisted

from fixserver.admin.client import ENV_TOKEN, ENV_URL

from .exchange import TOKEN, base_url
from .risk_exchange import start_margined
from .test_cli import _run


@pytest_twisted.inlineCallbacks
def test_risk_commands_print_the_servers_answers(tmp_path, capsys, monkeypatch):
    """Each command's JSON answer; the account view after them shows their effect."""
    server = start_margined(tmp_path)
    monkeypatch.setenv(ENV_TOKEN, TOKEN)
    monkeypatch.setenv(ENV_URL, base_url(server))
    try:
        code, out, err = yield _run(capsys, ["admin", "deposit", "--account", "A1", "--asset",
                                             "USDT", "--amount", "0.000001", "--ref", "t-1"])
        assert code == 0, err
        assert json.loads(out)["balance"] == "1000000.000001"
        code, out, err = yield _run(capsys, ["admin", "withdraw", "--account", "A1",
                                             "--asset", "USDT", "--amount", "250000"])
        assert code == 0, err
        assert Decimal(json.loads(out)["balance"]) == Decimal("750000.000001")
        assert json.loads(out)["ref"] == "admin:ops"
        code, out, err = yield _run(capsys, ["admin", "leverage", "--account", "A1",
                                             "--symbol", "BTC-PERP", "--leverage", "50"])
        assert code == 0 and json.loads(out)["leverage"] == 50, err
        code, out, err = yield _run(capsys, ["admin", "margin-mode", "--account", "A1",
                                             "--symbol", "ETH-PERP", "--mode", "isolated"])
        assert code == 0 and json.loads(out)["margin_mode"] == "isolated", err
        code, out, err = yield _run(capsys, ["admin", "index-price", "--symbol", "ETH-PERP",
                                             "--price", "3012.34"])
        assert code == 0 and json.loads(out)["index"] == "3012.34", err
        code, out, err = yield _run(capsys, ["admin", "marks"])
        assert code == 0, err
        marks = {m["symbol"]: m for m in json.loads(out)["marks"]}
        assert marks["ETH-PERP"]["index"] == "3012.34"
        code, out, err = yield _run(capsys, ["admin", "account", "--account", "A1"])
        assert code == 0, err
        view = json.loads(out)
        assert Decimal(view["collateral"][0]["withdrawable"]) == Decimal("750000.000001")
        assert {(p["symbol"], p["leverage"], p["margin_mode"]) for p in view["positions"]} \
            == {("BTC-PERP", 50, "cross"), ("ETH-PERP", 10, "isolated")}
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_refused_withdrawal_and_isolated_margin_exit_1_with_the_reason(tmp_path, capsys,
                                                                      monkeypatch):
    """Too large a withdrawal: exit 1, stderr names insufficient margin and the shortfall;
    removing isolated margin without a position: exit 1 with the engine's reason."""
    server = start_margined(tmp_path)
    monkeypatch.setenv(ENV_TOKEN, TOKEN)
    monkeypatch.setenv(ENV_URL, base_url(server))
    try:
        code, out, err = yield _run(capsys, ["admin", "withdraw", "--account", "B1",
                                             "--asset", "USDT", "--amount", "1000001"])
        assert code == 1 and out == ""
        assert "refused (HTTP 409)" in err and "insufficient margin" in err
        assert "short by 1" in err
        code, out, err = yield _run(capsys, ["admin", "isolated-margin", "--account", "B1",
                                             "--symbol", "ETH-PERP", "--remove", "5"])
        assert code == 1 and "no isolated position" in err, err
    finally:
        yield server.stop()
