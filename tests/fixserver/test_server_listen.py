"""ListenBacklog reaches listen() of the FIX port, the TLS port and the WebSocket port
(default 1024, not Twisted's 50), checked on a fake reactor that records every listen."""

from __future__ import annotations

from typing import Any

from fixserver.config import parse_config
from fixserver.server import FixServer
from tests.fixserver.fake_reactor import FakeReactor
from tests.fixserver.test_server import _self_signed

PLAIN = """\
[DEFAULT]
BeginString=FIX.4.4
SenderCompID=EXCH
SocketAcceptPort=9878
HttpPort=9100
{extra}
[SESSION]
TargetCompID=CLIENT1
"""

EXCHANGE = """\
[DEFAULT]
BeginString=FIX.4.4
SenderCompID=EXCH
SocketAcceptPort=9878
SocketAcceptPortTLS=9879
ServerCertificateFile=server.crt
ServerCertificateKeyFile=server.key
JournalPath=journal
WebSocketPort=9443
ListenBacklog=4096
[FIRM]
Firm=ACME
Accounts=A1
[SESSION]
TargetCompID=ACME1
Firm=ACME
"""


def _start(text: str, tmp: Any) -> tuple[FixServer, FakeReactor]:
    reactor = FakeReactor()
    server = FixServer(parse_config(text, base_dir=str(tmp)), reactor)
    server.start()
    return server, reactor


def test_fix_port_listens_with_a_backlog_of_1024_by_default(tmp_path):
    """Without ListenBacklog the FIX port's backlog is 1024; the HTTP port keeps Twisted's."""
    server, reactor = _start(PLAIN.format(extra=""), tmp_path)
    assert server.config.listen_backlog == 1024
    assert reactor.backlog_of(server.host) == 1024
    (http_backlog,) = [b for port, _, b, _ in reactor.tcpServers if port == 9100]
    assert http_backlog == 50


def test_listen_backlog_reaches_the_fix_tls_and_websocket_ports(tmp_path):
    """ListenBacklog=4096: the plain and TLS FIX ports and the WebSocket port listen with it."""
    _self_signed(tmp_path)
    server, reactor = _start(EXCHANGE, tmp_path)
    try:
        assert sorted((port, backlog) for port, _, backlog, _ in reactor.tcpServers) == [
            (9443, 4096), (9878, 4096)]
        assert [(port, backlog) for port, _, _, backlog, _ in reactor.sslServers] == [
            (9879, 4096)]
        assert reactor.backlog_of(server.feeds.websocket_factory) == 4096
    finally:
        reactor.run_after_shutdown()  # the order pipeline's thread pools
