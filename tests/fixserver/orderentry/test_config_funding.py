"""[FUNDING] at start-up: each configured account without a collateral record gets one
journaled config-funding Deposit, once: restarts (from a snapshot or by replay) fund nobody
again, and an account the operator funded first is left alone."""

from __future__ import annotations

import pytest_twisted

from engine.commands import Deposit
from fixserver.journal_file import JournalDirectory
from tests.fixserver.admin.exchange import TOKEN, api, base_url, start
from tests.fixserver.admin.risk_exchange import RISK_CONFIG

INSTRUMENTS, FUNDING = RISK_CONFIG.split("[FUNDING]")
MILLION = 1_000_000 * 10**6


def _start(tmp_path, funding: bool):
    text = INSTRUMENTS.format(stale=30) + ("[FUNDING]" + FUNDING if funding else "")
    return start(tmp_path, extra=text)


def _settled(pipeline):
    """Fires once the start-up commands (queued, not matched yet) are matched and released."""
    pipeline.tick()
    return pipeline.when_idle()


def _config_deposits(tmp_path) -> list:
    directory = JournalDirectory(str(tmp_path / "journal"))
    return [(c.account, c.amount, c.ref) for rec in directory.read_records()
            for o, c in rec.entries if type(c) is Deposit and o[2:] == ("config", "funding")]


@pytest_twisted.inlineCallbacks
def test_funding_is_journaled_once_across_restarts(tmp_path):
    """First start: A1 and B1 get 1,000,000 USDT each (journaled, ref config-funding);
    a restart from the shutdown snapshot and one by journal replay change nothing."""
    balances = []
    for snapshot_on_shutdown in (False, True, False):
        server = _start(tmp_path, funding=True)
        try:
            pipeline = server.application.pipeline
            yield _settled(pipeline)
            model = server.application.risk.model
            balances.append({a: model.view(a, "USDT")[0].balance for a in ("A1", "B1")})
            assert pipeline.engine.risk.deposited == {"USDT": 2 * MILLION}
        finally:
            server.application.pipeline.snapshot_on_shutdown = snapshot_on_shutdown
            yield server.stop()
        if len(balances) == 1:  # before any snapshot: the journal still holds every record
            assert _config_deposits(tmp_path) == [("A1", MILLION, "config-funding"),
                                                  ("B1", MILLION, "config-funding")]
    assert balances == [{"A1": MILLION, "B1": MILLION}] * 3


@pytest_twisted.inlineCallbacks
def test_an_account_funded_by_the_operator_first_is_not_funded_by_config(tmp_path):
    """A1 deposited through the admin API before [FUNDING] existed keeps its balance; B1,
    never funded, gets the configured amount."""
    server = _start(tmp_path, funding=False)
    try:
        status, answer, _ = yield api(base_url(server), "POST", "/admin/accounts/deposit",
                                      TOKEN, {"account": "A1", "asset": "USDT",
                                              "amount": "5"})
        assert status == 200, answer
    finally:
        server.application.pipeline.snapshot_on_shutdown = False
        yield server.stop()
    server = _start(tmp_path, funding=True)
    try:
        pipeline = server.application.pipeline
        yield _settled(pipeline)
        model = server.application.risk.model
        assert model.view("A1", "USDT")[0].balance == 5 * 10**6
        assert model.view("B1", "USDT")[0].balance == MILLION
    finally:
        server.application.pipeline.snapshot_on_shutdown = False
        yield server.stop()
    assert _config_deposits(tmp_path) == [("B1", MILLION, "config-funding")]
