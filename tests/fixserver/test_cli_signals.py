"""The server process stops once on SIGTERM: a second signal during the shutdown is logged,
not a traceback, and the exit status is 0."""

from __future__ import annotations

import signal

import pytest

from tests.crash.harness import ServerProcess, free_port, write_config


@pytest.mark.integration
def test_a_repeated_sigterm_during_shutdown_is_harmless(tmp_path):
    fix_port, http_port = free_port(), free_port()
    config = write_config(str(tmp_path), (("SIG1", "F1", "A1"),), fix_port=fix_port,
                          http_port=http_port)
    server = ServerProcess(config, fix_port, http_port, str(tmp_path / "server.log"))
    server.start()
    # an answer from the HTTP side means the reactor runs: its signal handlers are set
    status, _ = server.http_get("/health")
    assert status == 200
    proc = server.proc
    assert proc is not None
    proc.send_signal(signal.SIGTERM)
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(30)
    finally:
        server.proc = None
    log = server.log_text()
    assert code == 0, log[-2000:]
    assert "Traceback" not in log and "ReactorNotRunning" not in log, log[-2000:]
    assert "shutdown.signal signal=SIGTERM" in log
