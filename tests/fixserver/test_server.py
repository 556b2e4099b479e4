"""The composition root over loopback: plain and TLS ports, HTTP, clean shutdown, store syncing."""

from __future__ import annotations

import datetime
import json

import pytest_twisted
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import defer, endpoints, protocol, reactor, ssl
from twisted.web.client import Agent, readBody

from fixserver.codec import FixMessage, FrameDecoder, encode
from fixserver.config import parse_config
from fixserver.filestore import FileMessageStore
from fixserver.server import FixServer
from fixserver.timeutil import format_utc_timestamp

TIMEOUT = 20.0


def _self_signed(tmp_path):
    """A self-signed certificate for localhost/127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    import ipaddress

    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "server.crt").write_bytes(cert_pem)
    (tmp_path / "server.key").write_bytes(key_pem)
    return cert_pem


def _config(tmp_path, extra: str = ""):
    text = (
        "[DEFAULT]\nBeginString=FIX.4.4\nSenderCompID=EXCH\nSocketAcceptAddress=127.0.0.1\n"
        f"SocketAcceptPort=0\nHttpPort=0\nFileStorePath=store\nShutdownTimeout=2\n{extra}"
        "[SESSION]\nTargetCompID=CLIENT1\n[SESSION]\nTargetCompID=CLIENT2\n"
    )
    return parse_config(text, base_dir=str(tmp_path))


class _FixClient(protocol.Protocol):
    """Sends a Logon, collects the messages the server sends."""

    def __init__(self, sender: str) -> None:
        self.sender = sender
        self.decoder = FrameDecoder()
        self.messages: list[FixMessage] = []
        self.waiting: list[tuple[bytes, defer.Deferred]] = []
        self.closed: defer.Deferred = defer.Deferred()
        self.seq = 1

    def send(self, msg_type: str, body=()) -> None:
        now = reactor.seconds()
        fields = [
            (35, msg_type),
            (34, self.seq),
            (49, self.sender),
            (52, format_utc_timestamp(int(now * 1e9))),
            (56, "EXCH"),
            *body,
        ]
        self.seq += 1
        self.transport.write(encode(fields))

    def connectionMade(self) -> None:
        self.send("A", [(98, 0), (108, 30)])

    def dataReceived(self, data: bytes) -> None:
        self.decoder.feed(data)
        while (item := self.decoder.next_message()) is not None:
            self.messages.append(item)
            for msg_type, d in list(self.waiting):
                if item.msg_type == msg_type:
                    self.waiting.remove((msg_type, d))
                    d.callback(item)

    def connectionLost(self, reason=None) -> None:
        self.closed.callback(None)

    def wait_for(self, msg_type: bytes) -> defer.Deferred:
        for item in self.messages:
            if item.msg_type == msg_type:
                return defer.succeed(item)
        d: defer.Deferred = defer.Deferred()
        self.waiting.append((msg_type, d))
        return d.addTimeout(TIMEOUT, reactor)


def store_id(server) -> str:
    return server.sessions[0].settings.session_id


def _port(listening) -> int:
    return listening.getHost().port


@pytest_twisted.inlineCallbacks
def test_two_sessions_on_one_port_and_clean_shutdown(tmp_path):
    """Two clients log on through one port; stop() logs both out and syncs the stores."""
    server = FixServer(_config(tmp_path), reactor)
    server.start()
    try:
        clients = []
        for sender in ("CLIENT1", "CLIENT2"):
            endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", _port(server.fix_port))
            client = yield endpoints.connectProtocol(endpoint, _FixClient(sender))
            logon = yield client.wait_for(b"A")
            assert logon.get(56) == sender.encode()
            clients.append(client)
        agent = Agent(reactor)
        response = yield agent.request(
            b"GET", b"http://127.0.0.1:%d/health" % _port(server.http_port)
        )
        health = json.loads((yield readBody(response)))
        assert [s["logged_on"] for s in health["sessions"]] == [True, True]
        # Each client answers the shutdown Logout with its own Logout.
        for client in clients:
            client.wait_for(b"5").addCallback(lambda _, c=client: c.send("5"))
        stopped = server.stop()
        yield defer.DeferredList([c.closed for c in clients])
        yield stopped
    finally:
        if server.fix_port.connected:
            yield server.stop()
    for client in clients:
        assert [m.msg_type for m in client.messages] == [b"A", b"5"]
        assert client.messages[1].get(58) == b"server shutting down"
    store = FileMessageStore(str(tmp_path / "store"), "FIX.4.4:EXCH->CLIENT1")
    assert (store.next_sender_seq(), store.next_target_seq()) == (3, 3)


@pytest_twisted.inlineCallbacks
def test_tls_port_serves_the_same_sessions(tmp_path):
    """A client logs on over TLS (self-signed certificate made in the test) on the TLS port."""
    cert_pem = _self_signed(tmp_path)
    config = _config(
        tmp_path,
        "SocketAcceptPortTLS=0\nServerCertificateFile=server.crt\n"
        "ServerCertificateKeyFile=server.key\n",
    )
    server = FixServer(config, reactor)
    server.start()
    try:
        options = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(cert_pem))
        endpoint = endpoints.SSL4ClientEndpoint(
            reactor, "127.0.0.1", _port(server.tls_port), options
        )
        client = yield endpoints.connectProtocol(endpoint, _FixClient("CLIENT1"))
        logon = yield client.wait_for(b"A")
        assert logon.get(56) == b"CLIENT1" and logon.get(34) == b"1"
        client.transport.loseConnection()
        yield client.closed
    finally:
        yield server.stop()


@pytest_twisted.inlineCallbacks
def test_store_sync_runs_off_the_reactor(tmp_path):
    """sync_stores writes the gathered records, fsyncs in a worker thread, reports clean."""
    server = FixServer(_config(tmp_path), reactor)
    store = server.sessions[0].store
    store.set_next_target_seq(5)
    assert store in server.write_batch.pending  # gathered, not yet written
    yield server.sync_stores()
    assert not store.needs_sync and not server.write_batch.pending
    assert FileMessageStore(str(tmp_path / "store"), store_id(server)).next_target_seq() == 5
    assert server.sync_stores() is None  # nothing to do
