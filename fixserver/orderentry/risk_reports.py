"""Positions, collateral and margin settings over FIX: message bodies and request parsing.

Pure: no I/O, no clock (times come in as arguments). The views come from
:class:`engine.risk.readmodel.RiskReadModel` (released, durable events only); money is
rendered in settlement-asset units with exactly the asset's decimals (integer minor units
inside), prices with the instrument's tick grid. spec/rules-of-engagement.md ("Positions,
collateral and margin") is the reference for every tag used here:

- PositionReport (AP): size as PositionQty (702/703 ``TOT``/704/705), mark in SettlPrice 730
  (731=2 theoretical), entry price in PriorSettlPrice 734, unrealised and realised PnL as
  PositionAmountData (753/707 ``TVAR``/``CASH``/708), custom 7930-7935 for leverage, margin
  mode, isolated/initial/maintenance margin and liquidation price;
- CollateralReport (BA): MarginExcess 899 (available), TotalNetValue 900 (equity), custom
  7932-7934 and 7936-7940; a margin call is an unsolicited BA with MarginCallLevel 7944;
- PositionMaintenanceRequest (AL) -> engine SetLeverage / SetMarginMode /
  AdjustIsolatedMargin, selected by MarginAction 7941; its report (AM).
"""

from __future__ import annotations

import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Union

import attr

from engine.commands import AdjustIsolatedMargin, SetLeverage, SetMarginMode
from engine.enums import MarginMode
from engine.events import MarginCall, RequestRejected, RiskSettingsChanged
from engine.instruments import Instrument
from engine.risk.views import AccountView, PositionView
from fixserver.codec import FixMessage
from fixserver.orderentry.reports import (
    REJECT_TEXT,
    avg_px,
    money,
    price_str,
    shortfall_text,
)
from fixserver.timeutil import format_utc_timestamp

Fields = list  # list[tuple[int, str | int]]

# PosReqResult (728)
POS_VALID, POS_INVALID, POS_NONE_FOUND, POS_NOT_AUTHORIZED, POS_NOT_SUPPORTED = 0, 1, 2, 3, 4
# PosReqStatus (729)
POS_COMPLETED, POS_REJECTED = 0, 2
# CollInquiryStatus (945) / CollInquiryResult (946)
COLL_COMPLETED, COLL_REJECTED = 2, 4
COLL_SUCCESSFUL, COLL_UNAUTHORIZED, COLL_OTHER = 0, 9, 99
# MarginAction (7941)
SET_LEVERAGE, SET_MARGIN_MODE, ADD_ISOLATED, REMOVE_ISOLATED = 1, 2, 3, 4
MARGIN_ACTIONS = (SET_LEVERAGE, SET_MARGIN_MODE, ADD_ISOLATED, REMOVE_ISOLATED)
#: PosTransType (709) of a margin setting: "position change submission / margin disposition"
MARGIN_DISPOSITION = 4
#: AccountType (581) of every exchange account: carried on the customer side of the books
ACCOUNT_TYPE = "1"
#: origin kind of a PositionMaintenanceRequest's engine command (lanes and AM at release)
MAINTENANCE = "AL"

_MODE_CODE = {MarginMode.CROSS: "1", MarginMode.ISOLATED: "2"}


def parse_money(text: str, decimals: int) -> int:
    """Asset units (a decimal string) as minor units; ValueError if not a plain decimal or
    finer than the asset's minor unit."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"{text!r} is not a number") from None
    if not value.is_finite() or "e" in text.lower():
        raise ValueError(f"{text!r} is not a plain decimal")
    minor = value.scaleb(decimals)
    if minor != minor.to_integral_value():
        raise ValueError(f"{text} has more than {decimals} decimals")
    return int(minor)


def business_date(ts_ns: int) -> str:
    """ClearingBusinessDate (715): the UTC date of ``ts_ns`` as YYYYMMDD."""
    day = datetime.datetime.fromtimestamp(ts_ns // 1_000_000_000, datetime.timezone.utc)
    return day.strftime("%Y%m%d")


def position_report_fields(
    v: PositionView, inst: Instrument, rpt_id: str, ts_ns: int, *, req_id: str | None = None,
    sub_type: str | None = None, total: int | None = None, copy: bool = False,
) -> Fields:
    """PositionReport (AP) body for one position (a flat one reports zeros)."""
    dec = inst.settlement_decimals
    fields: Fields = [(721, rpt_id)]
    if req_id is not None:
        fields += [(710, req_id), (724, "0")]
    if sub_type is not None:
        fields.append((263, sub_type))
    if total is not None:
        fields.append((727, total))
    fields += [(325, "Y" if copy else "N"), (728, POS_VALID), (715, business_date(ts_ns)),
               (1, v.account), (581, ACCOUNT_TYPE), (55, v.symbol), (15, v.asset),
               (730, price_str(inst, v.mark)), (731, "2"),
               (734, avg_px(inst, v.entry_cost, abs(v.size))),
               (702, 1), (703, "TOT"), (704, inst.lots_to_qty(max(v.size, 0))),
               (705, inst.lots_to_qty(max(-v.size, 0))),
               (753, 2), (707, "TVAR"), (708, money(v.unrealised_pnl, dec)),
               (707, "CASH"), (708, money(v.realised_pnl, dec)),
               (7930, v.leverage), (7931, _MODE_CODE[v.mode]),
               (7932, money(v.isolated_margin, dec)), (7933, money(v.initial_margin, dec)),
               (7934, money(v.maintenance_margin, dec))]
    if v.liquidation_price:
        fields.append((7935, price_str(inst, v.liquidation_price)))
    if copy:
        fields.append((797, "Y"))
    return fields


def collateral_report_fields(
    a: AccountView, decimals: int, rpt_id: str, *, inquiry_id: str | None = None,
    total: int | None = None, last: bool | None = None, copy: bool = False,
) -> Fields:
    """CollateralReport (BA) body for one account in one settlement asset."""
    fields: Fields = [(908, rpt_id)]
    if inquiry_id is not None:
        fields.append((909, inquiry_id))
    fields.append((910, "3"))  # CollStatus: assigned (the account's own collateral)
    if total is not None:
        fields.append((911, total))
    if last is not None:
        fields.append((912, "Y" if last else "N"))
    fields += [(1, a.account), (15, a.asset),
               (899, money(a.available, decimals)), (900, money(a.equity, decimals)),
               (7932, money(a.isolated_margin, decimals)),
               (7933, money(a.initial_margin, decimals)),
               (7934, money(a.maintenance_margin, decimals)),
               (7936, money(a.unrealised_pnl, decimals)), (7937, money(a.balance, decimals)),
               (7938, money(a.order_margin, decimals)),
               (7939, money(a.withdrawable, decimals)),
               (7940, format(Decimal(a.margin_ratio_ppm).scaleb(-6).normalize(), "f"))]
    if copy:
        fields.append((797, "Y"))
    return fields


#: MarginCallLevel (7944, custom): on a CollateralReport that is a margin call
MARGIN_CALL_LEVEL = 7944


def _fraction(ppm: int) -> str:
    """Parts per million as a plain fraction (800_000 -> ``0.8``)."""
    return format(Decimal(ppm).scaleb(-6).normalize(), "f")


def _percent(ppm: int) -> str:
    """Parts per million as a percentage (846_153 -> ``84.6``)."""
    return format(Decimal(ppm).scaleb(-4).quantize(Decimal("0.1")), "f")


def margin_call_fields(a: AccountView, decimals: int, rpt_id: str, call: MarginCall,
                       *, copy: bool = False) -> Fields:
    """An unsolicited CollateralReport (BA) warning of a MarginCall: the account's collateral
    now, with MarginCallLevel 7944 (the warning level crossed), MaintMarginRatio 7940 the
    ratio that crossed it (the cross account's, or with Symbol 55 the isolated position's),
    ClearingBusinessDate and a Text with the numbers."""
    fields = collateral_report_fields(a, decimals, rpt_id)
    fields = [(t, v) for t, v in fields if t != 7940]
    what = (f"the isolated {call.symbol} position's" if call.symbol
            else f"the cross {call.asset} account's")
    text = (f"margin call: {what} maintenance margin "
            f"{money(call.maintenance, decimals)} {call.asset} is {_percent(call.ratio_ppm)}% "
            f"of its equity {money(call.equity, decimals)} {call.asset} (warning level "
            f"{_percent(call.level_ppm)}%); liquidation starts at 100%")
    if call.symbol:
        fields.append((55, call.symbol))
    fields += [(715, business_date(call.ts)), (7940, _fraction(call.ratio_ppm)),
               (MARGIN_CALL_LEVEL, _fraction(call.level_ppm)), (58, text)]
    if copy:
        fields.append((797, "Y"))
    return fields


def positions_ack_fields(rpt_id: str, req_id: str, result: int, status: int, account: str,
                         *, total: int | None = None, symbol: str | None = None,
                         text: str | None = None) -> Fields:
    """RequestForPositionsAck (AO) body."""
    fields: Fields = [(721, rpt_id), (710, req_id)]
    if total is not None:
        fields.append((727, total))
    fields += [(728, result), (729, status), (1, account or "NONE"), (581, ACCOUNT_TYPE)]
    if symbol:
        fields.append((55, symbol))
    if text:
        fields.append((58, text))
    return fields


def collateral_ack_fields(inquiry_id: str, status: int, result: int, *,
                          account: str | None = None, total: int | None = None,
                          text: str | None = None) -> Fields:
    """CollateralInquiryAck (BG) body."""
    fields: Fields = [(909, inquiry_id or "NONE"), (945, status), (946, result)]
    if total is not None:
        fields.append((911, total))
    if account:
        fields.append((1, account))
    if text:
        fields.append((58, text))
    return fields


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Maintenance:
    """A PositionMaintenanceRequest as sent (what its AM echoes)."""

    req_id: str
    trans_type: str
    action: str  # PosMaintAction (712)
    account: str
    symbol: str
    margin_action: int  # 7941 (0: absent or not a number)
    amount: str = ""  # 7942 as sent

    def origin_extra(self) -> tuple:
        """What the journaled origin carries (the AM at release is built from it)."""
        return (self.symbol, self.margin_action, self.trans_type, self.action, self.amount)

    @classmethod
    def from_origin(cls, o: Any, account: str, req_id: str) -> Maintenance:
        return cls(req_id, str(o[4]), str(o[5]), account, str(o[2]), int(o[3]), str(o[6]))


@attr.s(frozen=True, slots=True, auto_attribs=True)
class MaintenanceRefused:
    """A PositionMaintenanceRequest refused before the engine (AM 722=2, Text)."""

    request: Maintenance
    text: str


def _text(msg: FixMessage, tag: int) -> str:
    value = msg.get(tag)
    return value.decode("latin-1") if value else ""


def read_maintenance(msg: FixMessage) -> Maintenance:
    """The fields of an AL that its AM echoes (no checks)."""
    raw_action = _text(msg, 7941)
    return Maintenance(_text(msg, 710), _text(msg, 709), _text(msg, 712), _text(msg, 1),
                       _text(msg, 55), int(raw_action) if raw_action.isdigit() else 0,
                       _text(msg, 7942))


RiskCommand = Union[SetLeverage, SetMarginMode, AdjustIsolatedMargin]


def translate_maintenance(
    msg: FixMessage, accounts: tuple[str, ...], firm: str | None,
    instruments: dict[str, Instrument],
) -> tuple[Maintenance, RiskCommand | MaintenanceRefused]:
    """AL -> (what its AM echoes, the engine command or why it is refused at once)."""
    m = read_maintenance(msg)

    def refuse(text: str) -> tuple[Maintenance, MaintenanceRefused]:
        return m, MaintenanceRefused(m, text)

    if m.trans_type != str(MARGIN_DISPOSITION):
        return refuse("PosTransType (709) must be 4 (margin disposition)")
    if m.action not in ("1", "2"):
        return refuse("PosMaintAction (712) must be 1 (new) or 2 (replace): margin settings "
                      "take effect at once, there is nothing to cancel")
    if m.account not in accounts:
        return refuse(f"account {m.account} is not an account of firm {firm}")
    inst = instruments.get(m.symbol)
    if inst is None:
        return refuse(f"unknown symbol {m.symbol}")
    if not inst.margined:
        return refuse(f"{m.symbol} is not a margined instrument")
    if m.margin_action not in MARGIN_ACTIONS:
        return refuse("MarginAction (7941) is required: 1 set leverage, 2 set margin mode, "
                      "3 add isolated margin, 4 remove isolated margin")
    if m.margin_action == SET_LEVERAGE:
        raw = _text(msg, 7930)
        if not raw.isdigit() or int(raw) < 1:
            return refuse("Leverage (7930) must be a positive integer for MarginAction 1")
        return m, SetLeverage(0, 0, m.account, inst.symbol, int(raw), m.req_id)
    if m.margin_action == SET_MARGIN_MODE:
        raw = _text(msg, 7931)
        if raw not in ("1", "2"):
            return refuse("MarginMode (7931) must be 1 (cross) or 2 (isolated) for "
                          "MarginAction 2")
        return m, SetMarginMode(0, 0, m.account, inst.symbol, MarginMode(int(raw)), m.req_id)
    try:
        amount = parse_money(m.amount, inst.settlement_decimals) if m.amount else 0
    except ValueError as exc:
        return refuse(f"MarginTransferAmt (7942): {exc}")
    if amount <= 0:
        return refuse(f"MarginTransferAmt (7942) must be a positive amount of "
                      f"{inst.settlement_asset} for MarginAction {m.margin_action}")
    signed = amount if m.margin_action == ADD_ISOLATED else -amount
    return m, AdjustIsolatedMargin(0, 0, m.account, inst.symbol, signed, m.req_id)


def maintenance_report_fields(
    m: Maintenance, rpt_id: str, ts_ns: int, *, accepted: bool,
    leverage: int | None = None, mode: MarginMode | None = None, isolated: str | None = None,
    text: str | None = None,
) -> Fields:
    """PositionMaintenanceReport (AM) body."""
    fields: Fields = [(721, rpt_id), (709, m.trans_type or str(MARGIN_DISPOSITION)),
                      (710, m.req_id or "NONE"), (712, m.action or "1"),
                      (713, m.req_id or "NONE"), (722, 0 if accepted else 2),
                      (723, 0 if accepted else 1), (715, business_date(ts_ns)),
                      (1, m.account or "NONE"), (581, ACCOUNT_TYPE), (55, m.symbol or "[N/A]"),
                      (60, format_utc_timestamp(ts_ns))]
    if leverage is not None:
        fields.append((7930, leverage))
    if mode is not None:
        fields.append((7931, _MODE_CODE[mode]))
    if isolated is not None:
        fields.append((7932, isolated))
    if m.margin_action in MARGIN_ACTIONS:
        fields.append((7941, m.margin_action))
    if m.amount:
        fields.append((7942, m.amount))
    if text:
        fields.append((58, text))
    return fields


def maintenance_outcome(o: Any, e: Any, instruments: dict[str, Instrument]) -> Fields | None:
    """The AM of a released RiskSettingsChanged or RequestRejected answering an AL whose
    origin is ``o``; None for any other event."""
    kind = type(e)
    if kind is RiskSettingsChanged:
        m = Maintenance.from_origin(o, e.account, e.request_id)
        inst = instruments.get(e.symbol)
        iso = money(e.isolated_margin, inst.settlement_decimals) if inst is not None else None
        return maintenance_report_fields(m, f"PM-{e.seq}", e.ts, accepted=True,
                                         leverage=e.leverage, mode=MarginMode(e.mode),
                                         isolated=iso)
    if kind is RequestRejected:
        m = Maintenance.from_origin(o, e.account, e.cl_ord_id)
        text = shortfall_text(REJECT_TEXT.get(e.reason, e.reason.name), e.shortfall,
                              instruments.get(m.symbol))
        return maintenance_report_fields(m, f"PM-{e.seq}", e.ts, accepted=False, text=text)
    return None
