"""Integer ticks and lots rendered as decimal strings, without Decimal on the hot path.

The engine counts prices in ticks and quantities in lots; the WebSocket edge shows decimal
strings. ``Decimal(n) * Decimal(unit)`` costs a few microseconds and the feed formats every
level of every diff, so :class:`UnitFormatter` splits the unit once into an integer
coefficient and a number of decimal places and then formats with integer arithmetic. The
output has exactly the unit's number of decimal places (``"60000.0"`` for 600000 ticks of
0.1), which is what ``str(Decimal(n) * Decimal(unit))`` gives too.
"""

from __future__ import annotations

from decimal import Decimal


class UnitFormatter:
    """Formats an integer count of ``unit`` (a decimal string such as "0.001") as a string."""

    __slots__ = ("_scale", "coefficient", "places")

    def __init__(self, unit: str) -> None:
        sign, digits, exponent = Decimal(unit).as_tuple()
        if sign or not isinstance(exponent, int):
            raise ValueError(f"unit must be a positive finite decimal, not {unit!r}")
        coefficient = int("".join(map(str, digits)))
        if coefficient == 0:
            raise ValueError("unit must not be zero")
        if exponent >= 0:
            self.coefficient = coefficient * 10**exponent
            self.places = 0
        else:
            self.coefficient = coefficient
            self.places = -exponent
        self._scale = 10**self.places

    def __call__(self, count: int) -> str:
        """``count`` units as a decimal string with the unit's number of places."""
        value = count * self.coefficient
        if not self.places:
            return str(value)
        sign = ""
        if value < 0:
            sign, value = "-", -value
        whole, frac = divmod(value, self._scale)
        return f"{sign}{whole}.{frac:0{self.places}d}"
