"""Units: pages, sizes and durations, and their parsing from config text.

Sizes are bytes and durations integer nanoseconds everywhere inside pagehint; people write
"32GiB" or "2s" in configs. ``Bytes`` and ``Nanos`` are int subclasses so that a config schema
can say which unit a field is in and the structuring hook can parse it.
"""

from __future__ import annotations

import re

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT

_SIZE_UNITS = {
    "": 1,
    "B": 1,
    "K": 1 << 10,
    "KB": 1000,
    "KIB": 1 << 10,
    "M": 1 << 20,
    "MB": 1000**2,
    "MIB": 1 << 20,
    "G": 1 << 30,
    "GB": 1000**3,
    "GIB": 1 << 30,
    "T": 1 << 40,
    "TB": 1000**4,
    "TIB": 1 << 40,
}
_TIME_UNITS = {
    "NS": 1,
    "US": 1_000,
    "MS": 1_000_000,
    "S": 1_000_000_000,
    "MIN": 60 * 1_000_000_000,
}
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")


class Bytes(int):
    """A size in bytes; parsed from an int or text such as "64MiB" or "4 KiB"."""


class Nanos(int):
    """A duration in ns; parsed from an int (ns) or text such as "2s", "500us" or "1.5ms"."""


def _parse(text: str, units: dict[str, int], what: str, example: str) -> int:
    match = _QUANTITY.match(text)
    if match is None or match.group(2).upper() not in units:
        names = ", ".join(sorted({unit for unit in units if unit}, key=units.__getitem__))
        raise ValueError(f"expected a {what} such as {example!r} (units: {names}), got {text!r}")
    value = float(match.group(1)) * units[match.group(2).upper()]
    if value != int(value):
        raise ValueError(f"{text!r} is not a whole number of {'bytes' if what == 'size' else 'ns'}")
    return int(value)


def parse_size(value: str | int) -> Bytes:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a size such as '64MiB' or a number of bytes, got {value!r}")
    size = value if isinstance(value, int) else _parse(value, _SIZE_UNITS, "size", "64MiB")
    if size < 0:
        raise ValueError(f"a size cannot be negative, got {value!r}")
    return Bytes(size)


def parse_duration(value: str | int) -> Nanos:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a duration such as '2s' or a number of ns, got {value!r}")
    ns = value if isinstance(value, int) else _parse(value, _TIME_UNITS, "duration", "500us")
    if ns < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return Nanos(ns)


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
