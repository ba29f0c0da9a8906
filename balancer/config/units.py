"""Durations ("250ms", "2s", "1m"), sizes ("10MiB", "512KB") and rates ("500B/s") as plain
numbers.

Pure: each parser takes the YAML scalar (str, int or float) and returns seconds or bytes,
or raises ValueError with a message that says what would have been accepted.
"""

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?\s*(?:[KMGT]i?B|B)?)(?:/s)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}


def parse_duration(value: object) -> float:
    """Seconds from `250ms`, `2s`, `1.5m`, `1h`, or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration (expected e.g. 250ms, 2s, 1m)")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(f"{value!r} is not a duration (expected e.g. 250ms, 2s, 1m)")
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]
    if not math.isfinite(seconds):  # YAML's .nan and .inf are floats
        raise ValueError(f"{value!r} is not a duration (expected e.g. 250ms, 2s, 1m)")
    if seconds < 0:
        raise ValueError(f"{value!r} is negative (a duration must be >= 0)")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from `10MiB`, `512KB`, `100B`, or a bare number of bytes."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size (expected e.g. 16KiB, 10MiB)")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(str(value))
        if match is None:
            raise ValueError(f"{value!r} is not a size (expected e.g. 16KiB, 10MiB)")
        size = int(float(match.group(1)) * _SIZE_UNITS[(match.group(2) or "B").lower()])
    if size < 0:
        raise ValueError(f"{value!r} is negative (a size must be >= 0)")
    return size



def parse_rate(value: object) -> int:
    """Bytes a second from `500B/s`, `10KiB/s`, a size (`500B`: a second is understood), or a
    bare number of bytes a second."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{value!r} is not a rate (expected e.g. 500B/s, 10KiB/s)")
    if isinstance(value, str):
        match = _RATE.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a rate (expected e.g. 500B/s, 10KiB/s)")
        value = match.group(1)
    return parse_size(value)
