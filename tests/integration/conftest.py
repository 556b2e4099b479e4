"""Fixtures for loopback integration tests: an in-process server, a subprocess server, and
QuickFIX clients."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Callable

import attr
import pytest
import pytest_twisted
from twisted.internet import reactor, task

from fixserver.config import parse_config
from fixserver.server import FixServer

from .qf_client import QuickFixClient

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TIMEOUT = 20.0

SERVER_CONFIG = """\
[DEFAULT]
BeginString=FIX.4.4
SenderCompID=EXCH
SocketAcceptAddress=127.0.0.1
SocketAcceptPort={port}
FileStorePath={store}
ShutdownTimeout=2
LogonTimeout=5
LogoutTimeout=2
{extra}
[SESSION]
TargetCompID=CLIENT1
"""


def server_config_text(port: int, store: str, extra: str = "") -> str:
    return SERVER_CONFIG.format(port=port, store=store, extra=extra)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server in another process)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(predicate: Callable[[], object], what: str, timeout: float = TIMEOUT):
    """In a reactor test: a Deferred firing with predicate()'s first truthy value; polls
    (without blocking the reactor) and fails naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout

    def check():
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        return task.deferLater(reactor, 0.02, check)

    return task.deferLater(reactor, 0, check)


@pytest_twisted.async_yield_fixture
async def inprocess_server(tmp_path):
    """Start FixServers on the test's reactor (port 0); each is stopped cleanly at teardown."""
    started: list[FixServer] = []

    def start(extra: str = "", settings_overrides: dict | None = None) -> FixServer:
        text = server_config_text(0, str(tmp_path / "server-store"), extra)
        config = parse_config(text, base_dir=str(tmp_path))
        if settings_overrides:
            config = attr.evolve(
                config,
                sessions=tuple(attr.evolve(s, **settings_overrides) for s in config.sessions),
            )
        server = FixServer(config, reactor)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


class ServerProcess:
    """``python -m fixserver.cli serve --config FILE`` as a child process."""

    def __init__(self, config_path: str, log_path: str) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, port: int) -> None:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fixserver.cli", "serve", "--config", self.config_path],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.log()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)  # polling for the port to open, not for correctness
        raise AssertionError(f"server did not listen on {port} within {TIMEOUT}s: {self.log()}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(TIMEOUT)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(TIMEOUT)

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as handle:
            return handle.read()[-4000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(TIMEOUT)


@pytest.fixture
def server_process(tmp_path) -> Iterator[Callable[[str], ServerProcess]]:
    processes: list[ServerProcess] = []

    def make(config_text: str) -> ServerProcess:
        path = tmp_path / "server.cfg"
        path.write_text(config_text)
        process = ServerProcess(str(path), str(tmp_path / "server.log"))
        processes.append(process)
        return process

    yield make
    for process in processes:
        process.stop()


@pytest.fixture
def quickfix_client(tmp_path) -> Iterator[Callable[..., QuickFixClient]]:
    clients: list[QuickFixClient] = []

    def make(port: int, **kwargs) -> QuickFixClient:
        client = QuickFixClient(str(tmp_path / f"client{len(clients)}"), port, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        try:
            client.stop(force=True)
        except Exception:  # teardown must not mask the test's own failure
            pass
