"""Numbers in human units, for tables, plots and printed output.

    params(8_030_261_248) -> "8.03B"     tokens(131072) -> "128k"     bytes_(80 * 2**30) -> "80 GiB"
    count(1024) -> "1,024"               duration(5400) -> "1.5 h"    money(1.2e6) -> "$1.2M"
    si(989e12, "FLOP/s") -> "989 TFLOP/s"                             percent(0.853) -> "85.3%"

Every function keeps `digits` significant digits (3 by default) and drops trailing zeros, and
picks its prefix after rounding, so 999.6e6 parameters read "1B", not "1000M". Conventions:
parameters use B for 1e9 (the model-naming convention: "70B", never "70G"); bytes use the IEC
binary units (GiB = 2^30 bytes, as the rest of the project); a token count that is a whole
number of binary thousands reads in them, as context lengths are written (8k = 8192,
128k = 131072, 4M = 4,194,304), and in decimal prefixes otherwise (1M = 1,000,000,
15T = 1.5e13).
"""

from __future__ import annotations

import math

DIGITS = 3
DECIMAL = (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3))  # parameter and money prefixes
SI = (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3))
BINARY_BYTES = (("PiB", 2**50), ("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
BINARY_TOKENS = (("M", 2**20), ("k", 2**10))
TOKEN_DECIMAL = (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3))
MINUTE, HOUR, DAY, YEAR = 60.0, 3600.0, 86400.0, 365.25 * 86400.0
MONEY_PREFIX_FROM = 1e4  # below: whole dollars with separators ("$1,234")


def round_significant(value: float, digits: int = DIGITS) -> float:
    """`value` rounded to `digits` significant digits (0 stays 0)."""
    if value == 0 or not math.isfinite(value):
        return value
    return round(value, digits - 1 - math.floor(math.log10(abs(value))))


def significant(value: float, digits: int = DIGITS) -> str:
    """`value` to `digits` significant digits, trailing zeros dropped: 8.0303 -> '8.03',
    70.0 -> '70', 0.125 -> '0.125', 1234.5 -> '1,230' (thousands separated)."""
    rounded = round_significant(float(value), digits)
    if not math.isfinite(rounded):
        return str(rounded)
    if rounded == int(rounded) and abs(rounded) >= 1:
        return f"{int(rounded):,}"
    if rounded == 0:
        return "0"
    decimals = max(digits - 1 - math.floor(math.log10(abs(rounded))), 0)
    return f"{rounded:,.{decimals}f}".rstrip("0").rstrip(".")


def _prefixed(value: float, prefixes, digits: int, space: str = "", unit: str = "") -> str:
    """The largest prefix whose rounded mantissa is at least 1; none below the smallest."""
    for prefix, scale in prefixes:
        if abs(round_significant(value / scale, digits)) >= 1:
            return f"{significant(value / scale, digits)}{space}{prefix}{unit}"
    return f"{significant(value, digits)}{space}{unit}"


def params(n: float, digits: int = DIGITS) -> str:
    """A parameter count: 70e9 -> '70B', 8,030,261,248 -> '8.03B', 125e6 -> '125M',
    1.2e12 -> '1.2T', 950 -> '950'."""
    return _prefixed(float(n), DECIMAL, digits)


def tokens(n: float, digits: int = DIGITS) -> str:
    """A token count: binary thousands when the count is a whole number of them at `digits`
    digits (8192 -> '8k', 131072 -> '128k', 4,194,304 -> '4M', 1536 -> '1.5k'), decimal
    prefixes otherwise (1e6 -> '1M', 1.5e13 -> '15T', 8191 -> '8.19k')."""
    n = float(n)
    for prefix, scale in BINARY_TOKENS:
        mantissa = n / scale
        if abs(mantissa) >= 1 and round_significant(mantissa, digits) * scale == n:
            return f"{significant(mantissa, digits)}{prefix}"
    return _prefixed(n, TOKEN_DECIMAL, digits)


def bytes_(n: float, digits: int = DIGITS) -> str:
    """A byte count in IEC binary units: 80 * 2**30 -> '80 GiB', 1.2 * 2**40 -> '1.2 TiB',
    512 -> '512 B'."""
    return _prefixed(float(n), BINARY_BYTES, digits, space=" ") if abs(n) >= 2**10 \
        else f"{significant(float(n), digits)} B"


def gib(n_gib: float, digits: int = DIGITS) -> str:
    """A quantity given in GiB (the `*_gib` columns), in the best binary unit."""
    return bytes_(float(n_gib) * 2**30, digits)


def count(n: float, digits: int = DIGITS) -> str:
    """A count of things (GPUs, nodes, layers): whole numbers exactly, with thousands
    separators (1024 -> '1,024', 65536 -> '65,536'); fractions to `digits` digits
    (0.125 -> '0.125', 2.5 -> '2.5')."""
    n = float(n)
    if n == int(n):
        return f"{int(n):,}"
    return significant(n, digits)


def duration(seconds: float, digits: int = DIGITS) -> str:
    """A duration in the largest unit that reads at least 1: '350 ms', '42 s', '1.5 min',
    '3.4 h' (up to 48 h), '12 days', '1.5 years'."""
    s = float(seconds)
    if abs(s) < 1 and s != 0:
        return f"{significant(s * 1e3, digits)} ms"
    if abs(s) < MINUTE:
        return f"{significant(s, digits)} s"
    if abs(s) < HOUR:
        return f"{significant(s / MINUTE, digits)} min"
    if abs(s) < 2 * DAY:
        return f"{significant(s / HOUR, digits)} h"
    if abs(s) < YEAR:
        days = significant(s / DAY, digits)
        return f"{days} day" if days == "1" else f"{days} days"
    years = significant(s / YEAR, digits)
    return f"{years} year" if years == "1" else f"{years} years"


def days(n_days: float, digits: int = DIGITS) -> str:
    """A duration given in days (the `days_to_train` column), in the best unit: 0.5 -> '12 h'."""
    return duration(float(n_days) * DAY, digits)


def unit_price(amount: float, currency: str = "$", digits: int = DIGITS) -> str:
    """A small price to `digits` significant digits, where `money` would round to cents:
    0.0855 -> '$0.0855', 0.11 -> '$0.11'."""
    return f"{currency}{significant(float(amount), digits)}"


def money(amount: float, currency: str = "$", digits: int = DIGITS) -> str:
    """An amount of money: cents below 100 ('$3.50'), whole units below 10,000 ('$1,234'),
    prefixes above ('$12.3k', '$350k', '$1.2M', '$2.5B'); negative amounts get a leading
    minus ('-$1,200')."""
    a = float(amount)
    sign, a = ("-" if a < 0 else ""), abs(a)
    if a < 100:
        text = f"{a:.2f}" if a != int(a) else f"{int(a)}"
    elif a < MONEY_PREFIX_FROM:
        text = f"{round(a):,}"
    else:
        text = _prefixed(a, DECIMAL, digits)
    return f"{sign}{currency}{text}"


def si(value: float, unit: str, digits: int = DIGITS) -> str:
    """A quantity with a decimal SI prefix and a space: si(989e12, 'FLOP/s') -> '989 TFLOP/s',
    si(3.35e12, 'B/s') -> '3.35 TB/s', si(400, 'W') -> '400 W'."""
    return _prefixed(float(value), SI, digits, space=" ", unit=unit)


def percent(fraction: float, digits: int = DIGITS) -> str:
    """A fraction as a percentage: 0.853 -> '85.3%', 1 -> '100%', 0.0042 -> '0.42%'."""
    return f"{significant(float(fraction) * 100, digits)}%"
