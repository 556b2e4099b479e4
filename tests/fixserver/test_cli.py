"""The fixserver command: config errors go to stderr with exit code 2; check-config summarises."""

from __future__ import annotations

import os
import subprocess
import sys

from fixserver.cli import EXIT_CONFIG_ERROR, main

from .pg_fixtures import pg_dsn

__all__ = ["pg_dsn"]  # a fixture used below

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_config_error_exits_2_naming_the_setting(tmp_path, capsys):
    """A wrong setting prints one line naming it to stderr and exits 2."""
    cfg = tmp_path / "bad.cfg"
    cfg.write_text(
        "[DEFAULT]\nSocketAcceptPort=1\n[SESSION]\nBeginString=FIX.4.4\n"
        "SenderCompID=A\nTargetCompID=B\nHeartBtInt=often\n"
    )
    assert main(["serve", "--config", str(cfg)]) == EXIT_CONFIG_ERROR
    err = capsys.readouterr().err
    assert "HeartBtInt='often'" in err and ":7:" in err


def test_check_config_lists_sessions(capsys):
    """check-config prints the ports and every session of the demo config."""
    assert main(["check-config", "--config", os.path.join(REPO, "ops", "fixserver.cfg")]) == 0
    out = capsys.readouterr().out
    assert "FIX port 127.0.0.1:9878" in out
    assert "session FIX.4.4:EXCH->GAMMAHMAC role=order-entry auth=hmac" in out


def test_module_entry_point_runs(tmp_path):
    """``python -m fixserver.cli`` is the same command (used by the restart tests)."""
    proc = subprocess.run(
        [sys.executable, "-m", "fixserver.cli", "serve", "--config", str(tmp_path / "none.cfg")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == EXIT_CONFIG_ERROR
    assert "cannot read the config file" in proc.stderr


def test_unloadable_dictionary_is_a_config_error(tmp_path, capsys):
    """A DataDictionary file that is not a dictionary stops serve with exit 2, naming it."""
    (tmp_path / "bad.xml").write_text("<fix><fields>")
    cfg = tmp_path / "server.cfg"
    cfg.write_text(
        "[DEFAULT]\nSocketAcceptAddress=127.0.0.1\nSocketAcceptPort=0\n[SESSION]\n"
        "BeginString=FIX.4.4\nSenderCompID=A\nTargetCompID=B\nDataDictionary=bad.xml\n"
    )
    assert main(["serve", "--config", str(cfg)]) == EXIT_CONFIG_ERROR
    err = capsys.readouterr().err
    assert "DataDictionary" in err and "bad.xml" in err and "FIX.4.4:A->B" in err


def test_migrate_subcommand_applies_then_checks_the_schema(pg_dsn, capsys):
    """`fixserver migrate --check` fails on an empty database, `fixserver migrate` applies
    the migrations, and the check then passes."""
    assert main(["migrate", "--dsn", pg_dsn, "--check"]) == 1
    assert "missing migration" in capsys.readouterr().err
    assert main(["migrate", "--dsn", pg_dsn]) == 0
    assert main(["migrate", "--dsn", pg_dsn, "--check"]) == 0
    assert "schema up to date" in capsys.readouterr().out


def test_serve_gc_tuning_freezes_state_and_sweeps_every_minute():
    """The served process runs with the shipped GC thresholds, frozen start-up state, and a
    once-a-minute sweep that collects and freezes again."""
    import gc

    from twisted.internet import task

    from engine.gc_tuning import SERVER_THRESHOLDS, restore_defaults
    from fixserver.cli import GC_SWEEP_INTERVAL_S, _tune_gc

    clock = task.Clock()
    try:
        _tune_gc(clock)
        assert gc.get_threshold() == SERVER_THRESHOLDS
        assert gc.get_freeze_count() > 0
        gc.unfreeze()
        clock.advance(GC_SWEEP_INTERVAL_S)
        assert gc.get_freeze_count() > 0, "the sweep froze the survivors again"
    finally:
        for call in clock.getDelayedCalls():
            call.cancel()
        restore_defaults()
