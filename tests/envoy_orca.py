"""A Python port of Envoy's ORCA header parser (TEXT form), to test what our backends emit.

Ported from envoyproxy/envoy source/common/orca/orca_parser.cc (commit 977c287b70c9;
`parseOrcaLoadReportHeaders`, `tryParseNativeHttpEncoded`, `tryCopyMetricToOrcaLoadReport`,
`tryCopyNamedMetricToOrcaLoadReport`), with the constants of source/common/orca/orca_parser.h
and the helpers it calls: Envoy's `HeaderUtility::parseCommaDelimitedHeader` (split on `,`,
strip ASCII whitespace, drop empty tokens), `absl::StrSplit(item, MaxSplits(':', 1),
SkipWhitespace())` into a pair, and `absl::SimpleAtod` (optional surrounding ASCII whitespace,
an optional `+` not followed by `-`, then `absl::from_chars` in general format: decimal with
optional exponent, or inf/infinity/nan; out of range becomes +/-inf). Error messages are
Envoy's. Only the first `endpoint-load-metrics` value is read, as Envoy does (`header[0]`).
The JSON and BIN forms are not ported: our backends do not send them.
"""

import math
import re

ENDPOINT_LOAD_METRICS = "endpoint-load-metrics"
PREFIX_BIN, PREFIX_JSON, PREFIX_TEXT = "BIN ", "JSON ", "TEXT "
FIELDS = ("cpu_utilization", "mem_utilization", "application_utilization", "eps",
          "rps_fractional")
NAMED_PREFIX = "named_metrics."
ASCII_WHITESPACE = " \t\n\v\f\r"
_FROM_CHARS = re.compile(
    r"-?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|inf(?:inity)?|nan(?:\([0-9A-Za-z_]*\))?)",
    re.IGNORECASE)


class OrcaError(ValueError):
    """Envoy's absl::Status error: the whole report is dropped."""


def parse_orca_headers(headers: list[tuple[str, str]]) -> dict[str, object]:
    """The OrcaLoadReport Envoy builds: top-level fields and a `named_metrics` dict."""
    values = [v for n, v in headers if n.lower() == ENDPOINT_LOAD_METRICS]
    if not values:
        raise OrcaError("no ORCA data sent from the backend")
    value = values[0]
    if value.startswith(PREFIX_TEXT):
        return _native_http_encoded(value[len(PREFIX_TEXT):])
    if value.startswith((PREFIX_BIN, PREFIX_JSON)):
        raise NotImplementedError("BIN and JSON forms are not ported")
    prefix = value[:5]
    prefix = prefix[:prefix.find(" ")] if " " in prefix else prefix
    raise OrcaError(f"unsupported ORCA header format: {prefix}")


def _native_http_encoded(header: str) -> dict[str, object]:
    report: dict[str, object] = {"named_metrics": {}}
    seen: set[str] = set()
    for token in _comma_delimited(header):
        name, value = _split_pair(token)
        if name in seen:
            raise OrcaError(f"{ENDPOINT_LOAD_METRICS} contains duplicate metric: {name}")
        _copy_metric(name, value, report)
        seen.add(name)
    return report


def _comma_delimited(header: str) -> list[str]:
    tokens = (s.strip(ASCII_WHITESPACE) for s in header.split(","))
    return [t for t in tokens if t]


def _split_pair(token: str) -> tuple[str, str]:
    pieces = [p for p in token.split(":", 1) if p.strip(ASCII_WHITESPACE)]  # SkipWhitespace
    pieces += ["", ""]
    return pieces[0], pieces[1]


def _copy_metric(name: str, value: str, report: dict[str, object]) -> None:
    if not name:
        raise OrcaError("metric names cannot be empty strings")
    if not value:
        raise OrcaError("metric values cannot be empty strings")
    number = simple_atod(value)
    if number is None:
        raise OrcaError(f"unable to parse custom backend load metric value({name}): {value}")
    if math.isnan(number):
        raise OrcaError(f"custom backend load metric value({name}) cannot be NaN.")
    if math.isinf(number):
        raise OrcaError(f"custom backend load metric value({name}) cannot be infinity.")
    if name.startswith(NAMED_PREFIX):
        key = name[len(NAMED_PREFIX):]
        if not key:
            raise OrcaError("named metric key is empty.")
        named = report["named_metrics"]
        assert isinstance(named, dict)
        named.setdefault(key, number)  # protobuf Map::insert keeps the first
        return
    if name not in FIELDS:
        raise OrcaError(f"unsupported metric name: {name}")
    report[name] = number


def simple_atod(text: str) -> float | None:
    text = text.strip(ASCII_WHITESPACE)
    if text.startswith("+"):
        text = text[1:]
        if text.startswith("-"):
            return None
    if not _FROM_CHARS.fullmatch(text):
        return None
    try:
        return float(text.split("(")[0])
    except (ValueError, OverflowError):  # pragma: no cover - the pattern admits floats only
        return None
