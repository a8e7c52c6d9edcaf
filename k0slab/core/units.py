"""Parsing and validating the small values users type: sizes, names, CPU counts."""
from __future__ import annotations

import re

from k0slab.core.errors import K0slabError

# No surrounding whitespace: a value with a newline in it is a typo, not a size.
_SIZE_RE = re.compile(r"(\d{1,15}(?:\.\d{1,6})?) ?([KMGT]?)(i?B?)?", re.IGNORECASE)
_FACTORS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_HOSTNAME_RE = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")


def parse_size(value: str | int, what: str = "size") -> int:
    """Bytes from '2G', '512M', '1.5GiB' or a plain byte count (binary units, like multipass)."""
    if isinstance(value, int):
        if value <= 0:
            raise K0slabError(f"{what} {value!r} must be positive", "use e.g. 2G or 512M")
        return value
    match = _SIZE_RE.fullmatch(str(value))
    if not match:
        raise K0slabError(
            f"{what} {value!r} is not a size", "use a number with K, M, G or T, e.g. 2G or 512M"
        )
    number, unit, _ = match.groups()
    size = int(float(number) * _FACTORS[unit.upper()])
    if size <= 0:
        raise K0slabError(f"{what} {value!r} must be positive", "use e.g. 2G or 512M")
    return size


def format_size(size: int) -> str:
    """'2G' for whole units, else one decimal in the largest unit that fits ('1.5G', '300.0T')."""
    for unit in ("T", "G", "M", "K"):
        if size >= _FACTORS[unit]:
            whole, rest = divmod(size, _FACTORS[unit])
            return f"{whole}{unit}" if rest == 0 else f"{size / _FACTORS[unit]:.1f}{unit}"
    return f"{size}B"


def mib(size: int) -> int:
    return size // (1 << 20)


def validate_hostname(name: str, what: str = "VM name") -> str:
    """Names become guest hostnames and libvirt names, so they follow RFC 1123 labels."""
    if not _HOSTNAME_RE.fullmatch(name or ""):
        raise K0slabError(
            f"{what} {name!r} is not a valid hostname",
            "use lowercase letters, digits and '-', starting with a letter, at most 63 characters",
        )
    return name


def validate_cpus(cpus: int) -> int:
    if not isinstance(cpus, int) or cpus < 1 or cpus > 64:
        raise K0slabError(f"--cpus {cpus!r} is out of range", "use a whole number from 1 to 64")
    return cpus


def parse_whole(value: str | int, flag: str) -> int:
    """A whole number typed on the command line; the option's owner checks its range."""
    if isinstance(value, int):
        return value
    # int() would accept ' 2\n', '+2' and '1_000'; a typed count is plain digits.
    if not re.fullmatch(r"-?[0-9]{1,9}", value):
        raise K0slabError(f"{flag} {value!r} is not a whole number", "use digits only, e.g. 2")
    return int(value)


def parse_seconds(value: str | float, flag: str, maximum: float) -> float:
    """A positive, finite number of seconds typed on the command line, at most `maximum`."""
    try:
        seconds = float(value)
    except ValueError:
        raise K0slabError(f"{flag} {value!r} is not a number of seconds", "use e.g. 180") from None
    if not 0 < seconds <= maximum:
        raise K0slabError(f"{flag} {value!r} is out of range", f"use a number of seconds from 1 to {maximum:.0f}")
    return seconds
