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


@pytest.mark.integration
def test_sigusr2_dumps_a_tracemalloc_snapshot_when_tracing(tmp_path, monkeypatch):
    """With PYTHONTRACEMALLOC set, SIGUSR2 writes a loadable tracemalloc snapshot into
    FIXSERVER_TRACEMALLOC_DIR and logs it; the server keeps running."""
    import time
    import tracemalloc

    dumps = tmp_path / "dumps"
    dumps.mkdir()
    monkeypatch.setenv("PYTHONTRACEMALLOC", "1")
    monkeypatch.setenv("FIXSERVER_TRACEMALLOC_DIR", str(dumps))
    fix_port, http_port = free_port(), free_port()
    config = write_config(str(tmp_path), (("SIG2", "F1", "A1"),), fix_port=fix_port,
                          http_port=http_port)
    server = ServerProcess(config, fix_port, http_port, str(tmp_path / "server.log"))
    server.start()
    try:
        assert server.http_get("/health")[0] == 200  # the reactor runs: handlers are set
        assert server.proc is not None
        server.proc.send_signal(signal.SIGUSR2)
        deadline = time.monotonic() + 30
        while "tracemalloc.dump" not in server.log_text() and time.monotonic() < deadline:
            time.sleep(0.1)  # waiting for another process's log line, bounded
        (dump,) = list(dumps.iterdir())
        assert dump.name.startswith(f"tracemalloc-{server.proc.pid}-1")
        assert tracemalloc.Snapshot.load(str(dump)).traces, "a snapshot with traces"
        assert server.http_get("/health")[0] == 200
    finally:
        server.stop()
