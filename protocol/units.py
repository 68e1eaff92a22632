"""Units: pages, sizes and durations, and their parsing from config text.

Sizes are bytes and durations integer nanoseconds everywhere inside pagehint; people write
"32GiB" or "2s" in configs. ``Bytes`` and ``Nanos`` are int subclasses so that a config schema
can say which unit a field is in and the structuring hook can parse it.
"""

from __future__ import annotations

import re

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

# Binary units only, as QEMU's -m and the kernel's memparse() read "4G": 4 x 2^30 bytes.
_SIZE_UNITS = {
    "B": 1,
    "K": 1 << 10,
    "KIB": 1 << 10,
    "M": 1 << 20,
    "MIB": 1 << 20,
    "G": 1 << 30,
    "GIB": 1 << 30,
    "T": 1 << 40,
    "TIB": 1 << 40,
}
# Decimal-looking units: "4GB" is 4 x 10^9 bytes to some tools and 4 x 2^30 to others.
_AMBIGUOUS_SIZE_UNITS = {"KB": "KiB", "MB": "MiB", "GB": "GiB", "TB": "TiB"}
_TIME_UNITS = {
    "NS": 1,
    "US": 1_000,
    "MS": 1_000_000,
    "S": 1_000_000_000,
    "MIN": 60 * 1_000_000_000,
}
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")


class Bytes(int):
    """A size in bytes; parsed from text with a unit, such as "64MiB", "4 KiB" or "512B"."""


class Nanos(int):
    """A duration in ns; parsed from text with a unit, such as "2s", "500us" or "1.5ms"."""


def _parse(value: str | int, units: dict[str, int], what: str, example: str, names: str) -> int:
    """A quantity with its unit; a bare 0 (number or text) is zero in any unit, and anything
    else without one is refused rather than guessed (``duration = 5`` is not 5 ns)."""
    needs_unit = f'a {what} needs a unit, such as "{example}" (units: {names})'
    shown = f'"{value}"' if isinstance(value, str) else repr(value)
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{needs_unit}; got {shown}")
    if (isinstance(value, int) and value < 0) or str(value).strip().startswith("-"):
        raise ValueError(f"a {what} cannot be negative, got {shown}")
    match = _QUANTITY.match(value) if isinstance(value, str) else None
    if value == 0 or (match and not match.group(2) and float(match.group(1)) == 0):
        return 0
    if isinstance(value, int):
        raise ValueError(f"{needs_unit}; got the bare number {value}")
    if match is None:
        raise ValueError(f"{needs_unit}; got {shown}")
    unit = match.group(2).upper()
    if unit in _AMBIGUOUS_SIZE_UNITS and units is _SIZE_UNITS:
        binary = _AMBIGUOUS_SIZE_UNITS[unit]
        raise ValueError(
            f"{shown} is ambiguous ({unit[0]}B is 10^{3 * ' KMGT'.index(unit[0])} bytes to some "
            f"tools, 2^{10 * ' KMGT'.index(unit[0])} to others): write "
            f'"{match.group(1)}{binary}" for binary units, as QEMU\'s -m reads '
            f'"{match.group(1)}{unit[0]}"'
        )
    if unit not in units:
        raise ValueError(f"{needs_unit}; got {shown}")
    quantity = float(match.group(1)) * units[unit]
    if quantity != int(quantity):
        raise ValueError(f"{shown} is not a whole number of {'bytes' if what == 'size' else 'ns'}")
    return int(quantity)


def parse_size(value: str | int) -> Bytes:
    return Bytes(_parse(value, _SIZE_UNITS, "size", "64MiB", "B, KiB, MiB, GiB, TiB or K, M, G, T"))


def parse_duration(value: str | int) -> Nanos:
    return Nanos(_parse(value, _TIME_UNITS, "duration", "500us", "ns, us, ms, s, min"))


def format_size(size: int) -> str:
    """Human-readable bytes with binary units: 1536 -> '1.5KiB'."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(size) >= scale:
            return f"{size / scale:.4g}{unit}"
    return f"{size}B"


def format_duration(ns: int | float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if abs(ns) >= scale:
            return f"{ns / scale:.4g}{unit}"
    return f"{ns:.4g}ns"


def pages(size: int) -> int:
    """Whole 4 KiB pages in ``size`` bytes."""
    return size >> PAGE_SHIFT


def order_pages(order: int) -> int:
    return 1 << order
