"""Per-session settings, named after QuickFIX's settings so FIX engineers recognise them.

The config file parser (``fixserver.config``) builds these from a QuickFIX-style INI file;
tests build them directly.
"""

from __future__ import annotations

import datetime
import enum
import sys

import attr


class SessionRole(enum.Enum):
    """What a session may do: trade, receive drop copies, or receive market data."""

    ORDER_ENTRY = "order-entry"
    DROP_COPY = "drop-copy"
    MARKET_DATA = "market-data"


class LogonAuth(enum.Enum):
    """How a Logon is authenticated."""

    NONE = "none"
    PASSWORD = "password"  # Username (553) / Password (554)
    HMAC = "hmac"  # HMAC-SHA256 signature over SendingTime, MsgSeqNum, CompIDs, nonce (RawData)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class SessionSettings:
    """One configured acceptor session. Our side is SenderCompID; the client is TargetCompID."""

    begin_string: str
    sender_comp_id: str
    target_comp_id: str
    sender_sub_id: str | None = None
    target_sub_id: str | None = None
    session_qualifier: str | None = None
    role: SessionRole = SessionRole.ORDER_ENTRY
    #: firm the session belongs to (accounts it may trade; drop copies it receives)
    firm: str | None = None
    #: path of the QuickFIX-format XML data dictionary; None = the exchange's spec/ dictionary
    data_dictionary: str | None = None
    use_data_dictionary: bool = True
    validate_fields_out_of_order: bool = True
    validate_fields_have_values: bool = True
    validate_user_defined_fields: bool = True
    allow_unknown_msg_fields: bool = False
    #: HeartBtInt the acceptor requires; None accepts any positive value the client proposes
    heart_bt_int: int | None = None
    reset_on_logon: bool = False
    reset_on_logout: bool = False
    reset_on_disconnect: bool = False
    refresh_on_logon: bool = False
    #: daily session window in UTC (QuickFIX StartTime/EndTime); None = always open
    start_time: datetime.time | None = None
    end_time: datetime.time | None = None
    #: optional weekly window days (0=Monday), QuickFIX StartDay/EndDay
    start_day: int | None = None
    end_day: int | None = None
    check_latency: bool = True
    #: seconds; SendingTime further than this from our clock is rejected (373=10) and logged out
    max_latency: int = 120
    check_comp_id: bool = True
    #: seconds to wait for the Logon after TCP connect
    logon_timeout: int = 10
    #: seconds to wait for the Logout reply after we send Logout
    logout_timeout: int = 2
    #: TestRequest after HeartBtInt * test_request_delay_multiplier of peer silence
    test_request_delay_multiplier: float = 1.2
    #: disconnect after HeartBtInt * heartbeat_timeout_multiplier of silence after the TestRequest
    heartbeat_timeout_multiplier: float = 2.4
    #: a ResendRequest is answered a chunk per reactor turn: at most this many messages...
    resend_chunk_messages: int = 100
    #: ...and no more once they reach this many bytes
    resend_chunk_bytes: int = 64 * 1024
    #: messages per second one session's resend may take; 0 = as fast as the turns allow
    resend_rate: int = 50_000
    auth: LogonAuth = LogonAuth.NONE
    username: str | None = None
    password: str | None = None
    #: secret key for HMAC-signed logons
    hmac_key: bytes | None = None
    #: seconds a signed logon's SendingTime may differ from our clock, and nonce memory horizon
    hmac_window: int = 30
    #: failed Logons in a row (for this session, or from one address) before a lockout;
    #: 0 = no delays and no lockout (``fixserver.logon_throttle``)
    logon_lockout_failures: int = 5
    #: seconds a lockout lasts
    logon_lockout_seconds: int = 60
    #: application: cancel the session's open orders when it disconnects
    cancel_on_disconnect: bool = False
    #: application: messages per second before BusinessMessageReject (380=8)
    throttle_rate: int | None = None
    #: application: default self-trade prevention mode
    default_stp: str | None = None
    #: queued output bytes before a slow reader is disconnected
    max_output_buffer: int = 8 * 1024 * 1024
    #: garbled frames tolerated from a logged-on session within ``garbled_message_window``
    #: seconds; one more and it is logged out and disconnected. 0 = no limit
    max_garbled_messages: int = 50
    garbled_message_window: int = 10

    @property
    def session_id(self) -> str:
        """QuickFIX-style id: ``FIX.4.4:EXCH->CLIENT1`` (with ``:qualifier`` when set)."""
        sid = f"{self.begin_string}:{self.sender_comp_id}->{self.target_comp_id}"
        if self.session_qualifier:
            sid = f"{sid}:{self.session_qualifier}"
        # interned: the order ledger keeps the session id of every order it holds, and one
        # string object per session (not per order) is what makes that cheap
        return sys.intern(sid)
