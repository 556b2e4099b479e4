"""FIX UTCTimestamp formatting and parsing, from and to integer nanoseconds since the epoch.

FIX 4.4 UTCTimestamp is ``YYYYMMDD-HH:MM:SS`` optionally followed by ``.sss`` (we also accept
the micro- and nanosecond forms FIX 5.0 later allowed). The session formats SendingTime on
every outbound message, so ``format_utc_timestamp`` caches the per-second prefix and the last
millisecond's text.
"""

from __future__ import annotations

import datetime

NS_PER_SECOND = 1_000_000_000
NS_PER_MS = 1_000_000

_EPOCH = datetime.datetime(1970, 1, 1)

_cached_second = -1
_cached_prefix = b""


def _second_prefix(second: int) -> bytes:
    global _cached_second, _cached_prefix
    if second != _cached_second:
        moment = _EPOCH + datetime.timedelta(seconds=second)
        _cached_prefix = moment.strftime("%Y%m%d-%H:%M:%S").encode("ascii")
        _cached_second = second
    return _cached_prefix


_cached_ms = -1
_cached_ms_text = b""


def format_utc_timestamp(now_ns: int, millis: bool = True) -> bytes:
    """``YYYYMMDD-HH:MM:SS.sss`` (or without milliseconds) for a time in ns since the epoch."""
    global _cached_ms, _cached_ms_text
    if not millis:
        return _second_prefix(now_ns // NS_PER_SECOND)
    # Every message released in one tick is stamped within the same millisecond or two
    # (SendingTime, TransactTime): the last one formatted is the one asked for again.
    ms = now_ns // NS_PER_MS
    if ms == _cached_ms:
        return _cached_ms_text
    second, rest = divmod(ms, 1000)
    text = b"%s.%03d" % (_second_prefix(second), rest)
    _cached_ms, _cached_ms_text = ms, text
    return text


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    year -= month <= 2
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def parse_utc_timestamp(value: bytes) -> int:
    """Nanoseconds since the epoch of a FIX UTCTimestamp; raises ValueError if malformed."""
    n = len(value)
    if n < 17 or value[8:9] != b"-" or value[11:12] != b":" or value[14:15] != b":":
        raise ValueError(f"not a UTCTimestamp: {value!r}")
    digits = value[0:8] + value[9:11] + value[12:14] + value[15:17]
    if not digits.isdigit():
        raise ValueError(f"not a UTCTimestamp: {value!r}")
    year = int(value[0:4])
    month = int(value[4:6])
    day = int(value[6:8])
    hour = int(value[9:11])
    minute = int(value[12:14])
    second = int(value[15:17])
    if not (1 <= month <= 12 and 1 <= day <= _DAYS_IN_MONTH[month - 1]):
        raise ValueError(f"bad date in UTCTimestamp: {value!r}")
    if month == 2 and day == 29 and not (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)):
        raise ValueError(f"bad date in UTCTimestamp: {value!r}")
    # FIX allows second 60 for leap seconds.
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError(f"bad time in UTCTimestamp: {value!r}")
    fraction_ns = 0
    if n > 17:
        frac = value[18:]
        if value[17:18] != b"." or len(frac) not in (3, 6, 9) or not frac.isdigit():
            raise ValueError(f"bad fraction in UTCTimestamp: {value!r}")
        fraction_ns = int(frac) * 10 ** (9 - len(frac))
    days = _days_from_civil(year, month, day)
    seconds = ((days * 24 + hour) * 60 + minute) * 60 + second
    return seconds * NS_PER_SECOND + fraction_ns
