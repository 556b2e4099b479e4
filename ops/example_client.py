"""Example FIX client (QuickFIX/Python): logs on as CLIENT1 (firm ACME), places a limit buy
order on BTC-PERP for account ACME-1 and prints every ExecutionReport it receives.

    python ops/example_client.py [--config ops/example_client.cfg] [--price 60000] [--seconds 5]

``--order ACCOUNT:SIDE:QTY@PRICE`` (repeatable) places those GTC limit orders instead, in
the order given, in one logon (so one session's cancel-on-disconnect cannot cancel one
before the next arrives): ``--order ACME-MM:sell:0.15@60000 --order ACME-LIQ:buy:0.15@60000``.
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
    parser.add_argument("--symbol", default="BTC-PERP")
    parser.add_argument("--order", action="append", default=[],
                        metavar="ACCOUNT:SIDE:QTY@PRICE",
                        help="a limit order to place (repeatable); default one buy for ACME-1")
    args = parser.parse_args()
    orders = []
    for text in args.order or [f"ACME-1:buy:{args.qty}@{args.price}"]:
        try:
            account, side, rest = text.split(":")
            qty, price = rest.split("@")
            if side not in ("buy", "sell"):
                raise ValueError(side)
        except ValueError:
            parser.error(f"--order {text!r}: expected ACCOUNT:buy|sell:QTY@PRICE")
        orders.append((account, side, qty, price))
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
        for n, (account, side, qty, price) in enumerate(orders):
            order = fix.Message()
            order.getHeader().setField(fix.MsgType(fix.MsgType_NewOrderSingle))
            cl_ord_id = f"EX-{int(time.time() * 1000)}-{n}"
            order.setField(fix.ClOrdID(cl_ord_id))
            order.setField(fix.Account(account))
            order.setField(fix.Symbol(args.symbol))
            order.setField(fix.Side(fix.Side_BUY if side == "buy" else fix.Side_SELL))
            now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H:%M:%S")
            order.setField(fix.StringField(60, now))
            order.setField(fix.StringField(38, qty))
            order.setField(fix.OrdType(fix.OrdType_LIMIT))
            order.setField(fix.StringField(44, price))
            order.setField(fix.TimeInForce(fix.TimeInForce_GOOD_TILL_CANCEL))
            fix.Session.sendToTarget(order, app.session_id)
            print(f"sent NewOrderSingle {cl_ord_id}: {account} {side} {qty} {args.symbol} "
                  f"@ {price}")
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
