"""Example FIX client (QuickFIX/Python): logs on as CLIENT1 (firm ACME), places a limit buy
order on BTC-PERP for account ACME-1 and prints every ExecutionReport it receives.

    python ops/example_client.py [--config ops/example_client.cfg] [--price 60000] [--seconds 5]
"""

from __future__ import annotations

import argparse
import datetime
import os
import queue
import sys
import time

import quickfix as fix

HERE = os.path.dirname(os.path.abspath(__file__))


class Client(fix.Application):
    """Pushes what QuickFIX hands it (on its own thread) into a queue; never raises."""

    def __init__(self, inbox: queue.Queue) -> None:
        super().__init__()
        self.inbox = inbox
        self.session_id = None

    def onCreate(self, sessionID):
        self.session_id = sessionID

    def onLogon(self, sessionID):
        self.inbox.put(("logon", None))

    def onLogout(self, sessionID):
        self.inbox.put(("logout", None))

    def toAdmin(self, message, sessionID):
        pass

    def fromAdmin(self, message, sessionID):
        pass

    def toApp(self, message, sessionID):
        pass

    def fromApp(self, message, sessionID):
        try:
            self.inbox.put(("app", message.toString().replace("\x01", "|")))
        except Exception as exc:  # never into QuickFIX's thread
            self.inbox.put(("error", repr(exc)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(HERE, "example_client.cfg"))
    parser.add_argument("--price", default="60000")
    parser.add_argument("--qty", default="0.001")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    os.chdir(os.path.dirname(os.path.abspath(args.config)))  # relative paths in the file
    inbox: queue.Queue = queue.Queue()
    app = Client(inbox)
    settings = fix.SessionSettings(os.path.basename(args.config))
    initiator = fix.SocketInitiator(app, fix.FileStoreFactory(settings), settings,
                                    fix.FileLogFactory(settings))
    initiator.start()
    try:
        kind, _ = inbox.get(timeout=15)
        if kind != "logon":
            print(f"no logon ({kind})", file=sys.stderr)
            return 1
        print("logged on")
        order = fix.Message()
        order.getHeader().setField(fix.MsgType(fix.MsgType_NewOrderSingle))
        cl_ord_id = f"EX-{int(time.time() * 1000)}"
        order.setField(fix.ClOrdID(cl_ord_id))
        order.setField(fix.Account("ACME-1"))
        order.setField(fix.Symbol("BTC-PERP"))
        order.setField(fix.Side(fix.Side_BUY))
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H:%M:%S")
        order.setField(fix.StringField(60, now))
        order.setField(fix.StringField(38, args.qty))
        order.setField(fix.OrdType(fix.OrdType_LIMIT))
        order.setField(fix.StringField(44, args.price))
        order.setField(fix.TimeInForce(fix.TimeInForce_GOOD_TILL_CANCEL))
        fix.Session.sendToTarget(order, app.session_id)
        print(f"sent NewOrderSingle {cl_ord_id}: buy {args.qty} BTC-PERP @ {args.price}")
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            try:
                kind, text = inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if kind == "app":
                print("received", text)
    finally:
        initiator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
