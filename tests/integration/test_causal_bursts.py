"""Loopback: requests sent back to back in one TCP write are answered exactly as if each had
been sent after the previous answer, in request order; QuickFIX's dictionary accepts every
message the server sends."""

from __future__ import annotations

import time
from typing import Any

import pytest
import pytest_twisted
import quickfix as fix
from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol

from bench.fixload import ClientSession
from fixserver.config import parse_config
from fixserver.dictionary import spec_path
from fixserver.server import FixServer

from .conftest import wait_until

pytestmark = pytest.mark.integration
TS = b"20240101-00:00:00"

CONFIG = """\
[DEFAULT]
BeginString=FIX.4.4
SenderCompID=EXCH
SocketAcceptAddress=127.0.0.1
SocketAcceptPort=0
FileStorePath={tmp}/store
JournalPath={tmp}/journal
ShutdownTimeout=2
LogonTimeout=5
[FIRM]
Firm=ACME
Accounts=A1
[FIRM]
Firm=BETA
Accounts=B1
[SESSION]
TargetCompID=ACME1
Firm=ACME
[SESSION]
TargetCompID=BETA1
Firm=BETA
"""


class RawClient(Protocol):
    """A FIX initiator whose messages the test writes to the socket itself, several in one
    write; every message it receives is validated with QuickFIX's data dictionary."""

    def __init__(self, comp_id: str, dictionary: Any) -> None:
        self.session = ClientSession(comp_id, "EXCH")
        self.dictionary = dictionary
        self.received: list[dict[int, str]] = []
        self.invalid: list[str] = []

    def connectionMade(self) -> None:
        self.session.logon(time.time_ns())
        self.transport.write(self.session.data_to_send())

    def dataReceived(self, data: bytes) -> None:
        for msg, _ in self.session.receive(data, time.time_ns()):
            fields = {t: v.decode("latin-1") for t, v in msg.fields}
            self.received.append(fields)
            self._validate(msg.raw)
        out = self.session.data_to_send()
        if out:
            self.transport.write(out)

    def _validate(self, raw: bytes) -> None:
        try:
            fix.Message(raw.decode("latin-1"), self.dictionary, True)
        except Exception as exc:  # QuickFIX raises its own exception types
            self.invalid.append(f"{exc!r}: {raw!r}")

    def burst(self, *messages: tuple[bytes, list]) -> None:
        """Write ``messages`` in one TCP write."""
        now = time.time_ns()
        self.transport.write(b"".join(self.session.build(t, body, now) for t, body in messages))

    def answers(self) -> list[tuple[str, str, str]]:
        """(MsgType, ClOrdID, ExecType) of every application message received."""
        return [(f.get(35, ""), f.get(11, ""), f.get(150, "")) for f in self.received]


def new_order(cl: str, side: str = "1", qty: str = "0.002", price: str = "59000",
              account: str = "A1", *extra: tuple[int, bytes]) -> tuple[bytes, list]:
    return b"D", [(11, cl.encode()), (1, account.encode()), (55, b"BTC-PERP"),
                  (54, side.encode()), (60, TS), (38, qty.encode()), (40, b"2"),
                  (44, price.encode()), *extra]


def keyed(msg_type: bytes, cl: str, orig: str, *extra: tuple[int, bytes]) -> tuple[bytes, list]:
    return msg_type, [(41, orig.encode()), (11, cl.encode()), (55, b"BTC-PERP"), (54, b"1"),
                      (60, TS), *extra]


@pytest_twisted.async_yield_fixture
async def started(tmp_path):
    server = FixServer(parse_config(CONFIG.format(tmp=tmp_path), base_dir=str(tmp_path)),
                       reactor)
    server.start()
    dictionary = fix.DataDictionary(spec_path())
    clients: list[RawClient] = []

    async def connect(comp_id: str) -> RawClient:
        client = RawClient(comp_id, dictionary)
        port = server.fix_port.getHost().port
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        await wait_until(lambda: client.session.logged_on, f"the logon of {comp_id}")
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.transport.loseConnection()
    await server.stop()


def done(client: RawClient, n: int):
    return wait_until(lambda: len(client.received) >= n,
                      f"{n} answers (got {client.answers()})")


@pytest_twisted.ensureDeferred
async def test_order_and_cancel_in_one_write(started) -> None:
    """D+F in one write: New, then Canceled (not 'unknown order' before the ack)."""
    acme = await started("ACME1")
    acme.burst(new_order("C1"), keyed(b"F", "X1", "C1"))
    await done(acme, 2)
    assert acme.answers() == [("8", "C1", "0"), ("8", "X1", "4")]
    assert not acme.invalid, acme.invalid


@pytest_twisted.ensureDeferred
async def test_order_and_replace_in_one_write(started) -> None:
    """D+G in one write: New, then Replaced."""
    acme = await started("ACME1")
    acme.burst(new_order("C1"), keyed(b"G", "C2", "C1", (1, b"A1"), (38, b"0.003"),
                                      (40, b"2"), (44, b"59000")))
    await done(acme, 2)
    assert acme.answers() == [("8", "C1", "0"), ("8", "C2", "5")]
    assert acme.received[1][151] == "0.003"
    assert not acme.invalid, acme.invalid


@pytest_twisted.ensureDeferred
async def test_order_and_status_in_one_write(started) -> None:
    """D+H in one write: New, then a status of the live order."""
    acme = await started("ACME1")
    acme.burst(new_order("C1"), (b"H", [(11, b"C1"), (55, b"BTC-PERP"), (54, b"1")]))
    await done(acme, 2)
    assert acme.answers() == [("8", "C1", "0"), ("8", "C1", "I")]
    assert acme.received[1][39] == "0"
    assert not acme.invalid, acme.invalid


@pytest_twisted.ensureDeferred
async def test_order_and_mass_cancel_in_one_write(started) -> None:
    """D+q in one write: New, Canceled, then the OrderMassCancelReport counting it."""
    acme = await started("ACME1")
    acme.burst(new_order("C1"), (b"q", [(11, b"M1"), (530, b"7"), (60, TS)]))
    await done(acme, 3)
    assert acme.answers() == [("8", "C1", "0"), ("8", "C1", "4"), ("r", "M1", "")]
    assert acme.received[2][533] == "1"
    assert not acme.invalid, acme.invalid


@pytest_twisted.ensureDeferred
async def test_fill_then_reduce_only_in_one_write(started) -> None:
    """A buy that fills and a reduce-only sell in one write: the sell is accepted and closes
    the position (it is not rejected as increasing it)."""
    beta = await started("BETA1")
    acme = await started("ACME1")
    beta.burst(new_order("S1", "2", "0.002", "60000", "B1"))
    await done(beta, 1)
    acme.burst(new_order("B1", "1", "0.002", "60000"),
               new_order("RO", "2", "0.002", "59000", "A1", (18, b"E")))
    await wait_until(lambda: ("8", "RO", "0") in acme.answers(), f"RO ({acme.answers()})")
    answers = acme.answers()
    assert answers[:2] == [("8", "B1", "0"), ("8", "B1", "F")], answers
    assert answers.index(("8", "RO", "0")) > 1
    assert not acme.invalid, acme.invalid
