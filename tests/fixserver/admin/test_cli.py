"""``fixserver admin ...`` against a running in-process exchange: answers printed, refusals
exit 1 with the server's reason, the token from $FIXSERVER_ADMIN_TOKEN or --token."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import threads

from fixserver.admin.client import ENV_TOKEN, ENV_URL
from fixserver.cli import main

from .exchange import TOKEN, base_url, start


def _run(capsys, argv):
    """Deferred (exit code, stdout, stderr) of the CLI run in a thread (the reactor serves)."""
    capsys.readouterr()

    def run():
        code = main(argv)
        out, err = capsys.readouterr()
        return code, out, err

    return threads.deferToThread(run)


@pytest_twisted.inlineCallbacks
def test_cli_commands_against_a_running_server(tmp_path, capsys, monkeypatch):
    """Reads and changes print the server's JSON; the token comes from the environment."""
    server = start(tmp_path)
    monkeypatch.setenv(ENV_TOKEN, TOKEN)
    url = base_url(server)
    try:
        code, out, _ = yield _run(capsys, ["admin", "sessions", "--http", url])
        assert code == 0
        assert [s["target_comp_id"] for s in json.loads(out)["sessions"]] == ["ACME1", "BETA1"]
        code, out, _ = yield _run(capsys, ["admin", "kill-switch", "--firm", "ACME", "--on",
                                           "--http", url])
        assert code == 0 and json.loads(out)["killed"] == ["ACME"]
        assert json.loads(out)["by"] == "ops"
        code, out, _ = yield _run(capsys, ["admin", "instrument-status", "--symbol",
                                           "BTC-PERP", "--status", "cancel-only",
                                           "--http", url])
        assert code == 0 and json.loads(out)["status"] == "cancel-only"
        code, out, _ = yield _run(capsys, ["admin", "account-stp", "--account", "B1",
                                           "--mode", "decrement-and-cancel", "--http", url])
        assert code == 0 and json.loads(out)["mode"] == "decrement-and-cancel"
        code, out, _ = yield _run(capsys, ["admin", "set-seq", "--session", "BETA1",
                                           "--sender", "3", "--http", url])
        assert code == 0 and json.loads(out)["next_sender_seq"] == 3
        code, out, _ = yield _run(capsys, ["admin", "snapshot", "--http", url])
        assert code == 0 and json.loads(out)["snapshot"].startswith("snapshot-")
        code, out, _ = yield _run(capsys, ["admin", "list-instrument", "--symbol", "SOL-PERP",
                                           "--tick-size", "0.001", "--lot-size", "0.1",
                                           "--reference-price", "150", "--http", url])
        assert code == 0 and json.loads(out)["listed"] is True
        assert "SOL-PERP" in server.application.pipeline.engine.markets
        monkeypatch.setenv(ENV_URL, url)  # --http may come from the environment too
        code, out, _ = yield _run(capsys, ["admin", "state-hash"])
        assert code == 0 and len(json.loads(out)["state_hash"]) == 64
        engine = server.application.pipeline.engine
        assert engine.killed == {"ACME": ("A1",)} and engine.account_stp["B1"].name == \
            "DECREMENT_AND_CANCEL"
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_cli_refusals_exit_non_zero_with_the_servers_reason(tmp_path, capsys, monkeypatch):
    """An unknown firm, a logged-out session, a wrong token: exit 1 and the reason on
    stderr; no token at all: exit 2 before any request."""
    server = start(tmp_path)
    monkeypatch.delenv(ENV_TOKEN, raising=False)
    monkeypatch.delenv(ENV_URL, raising=False)
    url = base_url(server)
    try:
        code, out, err = yield _run(capsys, ["admin", "kill-switch", "--firm", "NOPE", "--on",
                                             "--http", url, "--token", TOKEN])
        assert code == 1 and not out
        assert "refused (HTTP 404): unknown firm NOPE" in err
        code, _, err = yield _run(capsys, ["admin", "logout", "--session", "ACME1", "--http",
                                           url, "--token", TOKEN])
        assert code == 1 and "HTTP 409" in err and "not logged on" in err
        code, _, err = yield _run(capsys, ["admin", "sessions", "--http", url, "--token",
                                           "wrong-token-0000000000"])
        assert code == 1 and "HTTP 403" in err and "not valid" in err
        code, _, err = yield _run(capsys, ["admin", "sessions", "--http", url])
        assert code == 2 and ENV_TOKEN in err
        code, _, err = yield _run(capsys, ["admin", "sessions", "--token", TOKEN])
        assert code == 2 and "--http" in err
        assert not server.application.app.killed
    finally:
        yield server.stop()
    code, _, err = yield _run(capsys, ["admin", "sessions", "--http", url, "--token", TOKEN])
    assert code == 1 and "cannot reach" in err
