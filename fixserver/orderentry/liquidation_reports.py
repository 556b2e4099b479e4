"""ExecutionReports of liquidations: the engine's liquidation orders and position transfers.

Theory of operation
-------------------
When an account (or an isolated position) falls under its maintenance margin, the engine
liquidates it inside a tick (engine.risk.liquidation): it cancels the account's orders
(``OrderCanceled`` with CancelReason.LIQUIDATION: reported by the ReportBuilder to the
orders' own sessions, like any unsolicited cancel), then per step places an IOC
*liquidation order* for the account (``OrderAccepted``, ``order_id >= LIQ_ID_BASE``, ClOrdID
``LIQ-<n>``), trades it through the book (the account is the taker) and cancels what the
book did not take (IOC remainder). That remainder is then taken over by the insurance fund
or auto-deleveraged against opposite positions, one ``PositionTransferred`` per counterparty.

No session entered a liquidation order, so its reports go to every order-entry session of
the account's firm (each stores them for resend like any ExecutionReport: a session that is
away gets them when it logs on and asks for the gap) and, once, to the firm's drop copies.
The recipients come from the configuration only, so the start-up redelivery
(fixserver.orderentry.redelivery) rebuilds exactly the reports the live path sent. The
order's state (CumQty, LeavesQty, AvgPx) is followed here from its own events: it lives only
inside the tick that placed it, the ledger (which holds orders of sessions) never sees it.

A transfer is reported to each side whose account belongs to a firm (the insurance fund
belongs to none): an ExecutionReport 150=F 39=2 with OrderID and ClOrdID ``TKO-<exec id>``
(takeover) or ``ADL-<exec id>``, ExecID ``<exec id>-L`` for the liquidated account and
``<exec id>-C`` for the counterparty, LastPx/Price/AvgPx the bankruptcy price, no commission;
the liquidated account's report names the step's liquidation order in SecondaryOrderID 198.

Every one of these reports carries LiquidationIndicator 7945: 1 liquidation order (and the
cancels of the account's orders), 2 taken over by the insurance fund, 3 auto-deleveraged.
spec/rules-of-engagement.md ("Liquidation") is the reference.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from engine.enums import CancelReason, Side, TransferKind
from engine.events import OrderAccepted, OrderCanceled, PositionTransferred, Trade
from engine.instruments import Instrument
from fixserver.orderentry.ownership import CANCELED, FILLED, NEW, PARTIAL, OrderView
from fixserver.orderentry.reports import (
    CANCEL_TEXT,
    LIQ_ADL,
    LIQ_ORDER,
    LIQ_TAKEOVER,
    LIQUIDATION_INDICATOR,
    Fields,
    Report,
    ReportBuilder,
    avg_px,
    fee_str,
    order_fields,
    price_str,
    qty_str,
)
from fixserver.pg.rows import exec_id_str, taker_exec_id
from fixserver.timeutil import format_utc_timestamp

#: ``recipients(account)``: the order-entry session ids of the account's firm, in
#: configuration order (may be empty), or None when the account belongs to no firm
Recipients = Callable[[str], Optional[tuple[str, ...]]]

_SIDE_CODE = {Side.BUY: "1", Side.SELL: "2"}


def liquidated_exec_id(exec_id: int) -> str:
    """ExecID of the liquidated account's report of a PositionTransferred."""
    return f"{exec_id}-L"


def counterparty_exec_id(exec_id: int) -> str:
    """ExecID of the counterparty's (deleveraged account's) report of a PositionTransferred."""
    return f"{exec_id}-C"


def transfer_order_id(e: PositionTransferred) -> str:
    """OrderID (and ClOrdID) of both reports of a transfer."""
    return f"{'TKO' if e.kind is TransferKind.TAKEOVER else 'ADL'}-{e.exec_id}"


class LiquidationReports:
    """fixserver.orderentry.reports.EngineOrderReports for liquidations (module docstring)."""

    def __init__(self, builder: ReportBuilder, recipients: Recipients) -> None:
        self.builder = builder
        self.instruments: dict[str, Instrument] = builder.instruments
        self.recipients = recipients
        #: liquidation orders being reported (each lives inside one command; dropped when it
        #: ends, so this holds at most the one working step)
        self.orders: dict[int, OrderView] = {}
        #: (account, symbol) -> the account's latest liquidation order there (a transfer
        #: belongs to the step whose order came last); one entry per liquidated position
        self.steps: dict[tuple[str, str], int] = {}

    # -- EngineOrderReports -----------------------------------------------------------------

    def order_event(self, e: Any, out: list[Report]) -> None:
        kind = type(e)
        inst = self.instruments.get(e.symbol)
        if inst is None:
            return
        if kind is OrderAccepted:
            view = OrderView(e.order_id, "", e.account, e.symbol, e.side, e.ord_type, e.tif,
                             e.price, e.stop_price, e.qty, e.cl_ord_id)
            self.orders[e.order_id] = view
            self.steps[(e.account, e.symbol)] = e.order_id
            exec_type = status = NEW
            text = (f"liquidation order: the account's equity fell below its maintenance "
                    f"margin; closing {qty_str(inst, e.qty)} at the bankruptcy price "
                    f"{price_str(inst, e.price)} or better")
        elif kind is OrderCanceled:
            found = self.orders.pop(e.order_id, None)
            if found is None:
                return
            view = found
            view.qty, view.filled, view.leaves, view.notional = (e.qty, e.filled, e.leaves,
                                                                 e.notional)
            view.status = CANCELED
            exec_type = status = CANCELED
            if e.reason is CancelReason.IOC_REMAINDER:
                text = ("liquidation order: what the book did not take is taken over by the "
                        "insurance fund or auto-deleveraged at the bankruptcy price")
            else:
                text = "liquidation order: " + CANCEL_TEXT.get(e.reason, e.reason.name)
        else:
            return  # a liquidation order is neither replaced, triggered nor restated
        exec_id = exec_id_str(e.exec_id)
        recipients = self.recipients(view.account)
        if recipients is None or self._delivered(recipients, view.account, exec_id):
            return
        fields = order_fields(view, inst, exec_id=exec_id, exec_type=exec_type,
                              ord_status=status, ts=e.ts)
        fields += [(LIQUIDATION_INDICATOR, LIQ_ORDER), (58, text)]
        self._emit(recipients, view.account, fields, out)

    def taker_fill(self, t: Trade, out: list[Report]) -> None:
        view = self.orders.get(t.taker_order_id)
        inst = self.instruments.get(t.symbol)
        if view is None or inst is None:
            return
        view.filled, view.leaves, view.notional = (t.taker_filled, t.taker_leaves,
                                                   t.taker_notional)
        view.status = FILLED if view.leaves == 0 else PARTIAL
        if view.leaves == 0:
            self.orders.pop(t.taker_order_id, None)
        exec_id = taker_exec_id(t.exec_id)
        recipients = self.recipients(view.account)
        if recipients is None or self._delivered(recipients, view.account, exec_id):
            return
        fields = order_fields(view, inst, exec_id=exec_id, exec_type="F",
                              ord_status=view.status, ts=t.ts)
        fields += [(32, qty_str(inst, t.qty)), (31, price_str(inst, t.price)),
                   (12, fee_str(inst, t.taker_fee)), (13, "3"), (851, "2"),
                   (LIQUIDATION_INDICATOR, LIQ_ORDER)]
        self._emit(recipients, view.account, fields, out)

    def transferred(self, e: PositionTransferred, out: list[Report]) -> None:
        inst = self.instruments.get(e.symbol)
        if inst is None:
            return
        takeover = e.kind is TransferKind.TAKEOVER
        px = price_str(inst, e.price)
        qty = qty_str(inst, e.qty)
        if takeover:
            mine = (f"liquidation: {qty} taken over by the insurance fund at the bankruptcy "
                    f"price {px}")
            theirs = f"insurance fund: took over {qty} of a liquidated position at {px}"
        else:
            mine = (f"liquidation: {qty} auto-deleveraged against an opposite position at the "
                    f"bankruptcy price {px} (the insurance fund could not take it over)")
            theirs = (f"auto-deleveraged: your position was reduced by {qty} against a "
                      f"liquidated account at its bankruptcy price {px}")
        other = Side.SELL if e.side is Side.BUY else Side.BUY
        step = self.steps.get((e.from_account, e.symbol))
        for account, side, exec_id, text, liquidated in (
            (e.from_account, e.side, liquidated_exec_id(e.exec_id), mine, True),
            (e.to_account, other, counterparty_exec_id(e.exec_id), theirs, False),
        ):
            recipients = self.recipients(account)
            if recipients is None or self._delivered(recipients, account, exec_id):
                continue
            fields = transfer_fields(e, inst, account, side, exec_id, text,
                                     step if liquidated else None, self._indicator(e))
            self._emit(recipients, account, fields, out)

    # -- helpers ----------------------------------------------------------------------------

    @staticmethod
    def _indicator(e: PositionTransferred) -> int:
        return LIQ_TAKEOVER if e.kind is TransferKind.TAKEOVER else LIQ_ADL

    def _delivered(self, recipients: tuple[str, ...], account: str, exec_id: str) -> bool:
        """Start-up redelivery: True if every recipient already stored this report (then
        it is not even built). The first call names the account, so the drop copies are
        checked once; the other sessions are checked without it."""
        delivered = self.builder.delivered
        if delivered is None:
            return False
        if not recipients:
            return delivered("", account, exec_id)
        return all(delivered(sid, account if i == 0 else "", exec_id)
                   for i, sid in enumerate(recipients))

    @staticmethod
    def _emit(recipients: tuple[str, ...], account: str, fields: Fields,
              out: list[Report]) -> None:
        """One Report per order-entry session of the firm; the drop copies once (with the
        first), or alone when the firm has no order-entry session."""
        if not recipients:
            out.append(Report("", account, "8", fields))
            return
        for i, sid in enumerate(recipients):
            out.append(Report(sid, account, "8", fields, copy=i == 0))


def transfer_fields(e: PositionTransferred, inst: Instrument, account: str, side: Side,
                    exec_id: str, text: str, liquidation_order: int | None,
                    indicator: int) -> Fields:
    """The ExecutionReport (150=F, 39=2) of one side of a PositionTransferred."""
    order_id = transfer_order_id(e)
    qty = qty_str(inst, e.qty)
    px = price_str(inst, e.price)
    fields: Fields = [(37, order_id), (11, order_id)]
    if liquidation_order is not None:
        fields.append((198, str(liquidation_order)))
    fields += [(17, exec_id), (150, "F"), (39, FILLED), (1, account), (55, e.symbol),
               (54, _SIDE_CODE[side]), (38, qty), (40, "2"), (44, px), (59, "3"),
               (151, qty_str(inst, 0)), (14, qty),
               (6, avg_px(inst, e.price * e.qty, e.qty)), (60, format_utc_timestamp(e.ts)),
               (32, qty), (31, px), (12, "0"), (13, "3"), (LIQUIDATION_INDICATOR, indicator),
               (58, text)]
    return fields
