"""Writing to a Twisted TCP transport straight to its socket when nothing is buffered.

Twisted's ``transport.write`` never sends at once: it appends to the transport's buffer and
registers for writability, and the next reactor iteration sends it (two ``epoll_ctl`` calls
and one more wake-up per connection per write). When the buffer is empty nothing can be
ahead of these bytes, so they may go to the socket now; whatever the kernel does not take
goes through ``transport.write`` as usual, so ordering, back-pressure (producers) and error
handling stay Twisted's. Used by the WebSocket feed (a frame per subscriber per batch) and
the FIX sessions (reports per session per released tick).

Only plain TCP connections qualify (:func:`direct_socket`); TLS and test transports always
use ``transport.write``.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp


def direct_socket(transport: Any) -> Any:
    """The transport's socket if the fast path applies to it, else None: a plain TCP
    connection (with ``listenSSL`` the protocol's transport is a TLS wrapper; a connection
    that started TLS itself has ``TLS`` set: bytes must go through its TLS layer)."""
    if (isinstance(transport, tcp.Connection) and hasattr(transport, "_tempDataLen")
            and not getattr(transport, "TLS", False)):
        return transport.socket
    return None


def write_now(transport: Any, sock: Any, data: bytes) -> None:
    """Write ``data``: to ``sock`` directly when ``transport`` holds nothing unsent, the rest
    (or all, otherwise) through ``transport.write``. ``sock`` from :func:`direct_socket`."""
    t = transport
    if (
        sock is not None
        and not t._tempDataLen
        and len(t.dataBuffer) == t.offset
        and t.connected
        and not t.disconnecting
    ):
        try:
            sent = sock.send(data)
        except OSError:
            sent = 0  # EAGAIN, or an error Twisted will meet and report on its own write
        if sent == len(data):
            return
        data = data[sent:]
    t.write(data)
