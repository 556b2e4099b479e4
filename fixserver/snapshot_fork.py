"""Engine snapshots serialised by a forked child: copy-on-write instead of a reactor stall.

Theory of operation
-------------------
Serialising the engine must see one consistent state, so it used to run on the reactor
thread and stall every session for as long as it took (about 1.4 us per resting order, and
packing holds the GIL, so a thread would not help). ``fork()`` gives a consistent copy for the
price of copying the page tables: the child serialises the engine it inherited (the same
``engine.snapshot()`` bytes, so the same state hash) into a temporary file and exits with
``os._exit`` (no atexit handlers, no shared buffers flushed, no reactor touched), while the
parent goes on matching at once. The snapshot thread later waits for the child and reads the
bytes (:meth:`ForkedDump.result`) before writing the snapshot file as before, once the tick is
durable.

The cost moves: the parent stalls only for the fork (page tables), and memory grows by the
pages the child touches while it reads the engine (CPython's reference counts dirty them), at
most the engine's size, until it exits. Where ``os.fork`` does not exist the server
serialises in-line as before.
"""

from __future__ import annotations

import gc
import os
import tempfile
from typing import Any, Callable

import msgpack
from twisted.logger import Logger

log = Logger()
_PREFIX, _SUFFIX = "engine-", ".dump.tmp"


class SnapshotChildFailed(Exception):
    """The forked child did not produce the engine's snapshot bytes."""


class ForkedDump:
    """An engine snapshot a child process is writing to ``path``."""

    def __init__(self, pid: int, path: str) -> None:
        self.pid = pid
        self.path = path
        self._bytes: bytes | None = None

    def result(self) -> bytes:
        """Wait for the child and return the bytes (blocking: the snapshot thread calls it).
        Raises SnapshotChildFailed if the child failed."""
        if self._bytes is not None:
            return self._bytes
        _pid, status = os.waitpid(self.pid, 0)
        try:
            if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0:
                raise SnapshotChildFailed(
                    f"snapshot child {self.pid} ended with wait status {status}")
            with open(self.path, "rb") as f:
                self._bytes = f.read()
        finally:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        return self._bytes


def remove_stale_dumps(directory: str) -> int:
    """Delete the temporary dumps of children a killed process left behind; how many."""
    removed = 0
    if not os.path.isdir(directory):
        return 0
    for name in os.listdir(directory):
        if name.startswith(_PREFIX) and name.endswith(_SUFFIX):
            try:
                os.unlink(os.path.join(directory, name))
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 65536


def can_fork() -> bool:
    """True where the server can serialise snapshots in a child."""
    return hasattr(os, "fork")


def fork_dump(engine: Any, directory: str) -> ForkedDump:
    """Fork a child that writes ``engine.snapshot()`` to a temporary file in ``directory``."""
    return fork_call(engine.snapshot, directory)


def fork_packed(gather: Callable[[], Any], directory: str) -> ForkedDump:
    """Fork a child that writes ``msgpack.packb(gather())`` (e.g. the FIX layer's snapshot
    state, gathered from the memory it inherited) to a temporary file."""
    return fork_call(lambda: msgpack.packb(gather(), use_bin_type=True), directory)


def fork_call(produce: Callable[[], bytes], directory: str) -> ForkedDump:
    """Fork a child that writes ``produce()`` to a temporary file in ``directory``."""
    fd, path = tempfile.mkstemp(dir=directory, prefix=_PREFIX, suffix=_SUFFIX)
    pid = os.fork()
    if pid == 0:  # the child: serialise, write, leave without running anything else
        status = 1
        try:
            # Hold no socket or file of the parent's: a connection the parent closes must
            # close now, not when this child exits.
            os.closerange(3, fd)
            os.closerange(fd + 1, _max_fd())
            gc.disable()  # a collection would only touch (and copy) more pages
            data = memoryview(produce())
            while data:
                data = data[os.write(fd, data):]
            status = 0
        finally:
            os._exit(status)
    os.close(fd)
    return ForkedDump(pid, path)
