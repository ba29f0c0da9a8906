"""The `routing` section of the config: thresholds, class → pool map, rules, learning.

Pure. Read with the same located Reader as the rest of the config, so every problem is
reported as `file:line:col: routing.rules[2].class: ...`, all at once.
"""

import re
from dataclasses import dataclass, field
from typing import Literal, cast

import yaml

from balancer.config.units import parse_duration, parse_size
from balancer.config.yamltree import (
    Parsers,
    Reader,
    as_bool,
    as_choice,
    as_int,
    as_number,
    as_ratio,
    as_str,
    join,
)

RequestClass = Literal["io", "light_cpu", "heavy_cpu"]
CLASSES: tuple[RequestClass, ...] = ("io", "light_cpu", "heavy_cpu")
EncodedSlashes = Literal["reject", "decode"]  # %2F, %5C and `\` in a path: 400, or matched
ENCODED_SLASHES: tuple[EncodedSlashes, ...] = ("reject", "decode")  # as the backends decode them
METHOD = re.compile(r"^[A-Z]+$")


@dataclass(frozen=True, slots=True)
class Rule:
    """One routing rule: what it matches, and the class or cost hint it gives."""

    index: int
    path: str | None = None
    path_regex: str | None = None
    methods: tuple[str, ...] = ()
    host: str | None = None
    headers: tuple[tuple[str, str | None], ...] = ()
    content_type: str | None = None
    body_min: int | None = None
    body_max: int | None = None
    request_class: RequestClass | None = None
    cpu_ms: float | None = None
    io_ratio: float | None = None
    pin: bool = False
    pool: str | None = None     # send matches to this pool (any defined pool), not the class's


@dataclass(frozen=True, slots=True)
class Learning:
    alpha: float = 0.2          # EWMA weight of each new sample
    min_samples: int = 5        # samples before a learned cost may decide
    max_routes: int = 1000      # route templates remembered (least recently used evicted)
    hysteresis: float = 0.2     # relative margin around thresholds before a class changes
    max_cv: float = 1.5         # accepted for old configs; unused (confidence: a stable class)


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    cpu_threshold_ms: float | None = None   # None: auto (derived from the traffic)
    io_threshold: float = 0.5
    classes: tuple[tuple[RequestClass, str], ...] = ()
    default_class: RequestClass = "light_cpu"
    explain: bool = False
    encoded_slashes: EncodedSlashes = "reject"
    rules: tuple[Rule, ...] = ()
    learning: Learning = field(default_factory=Learning)

    def pool_for(self, request_class: RequestClass) -> str:
        mapping = dict(self.classes)
        return mapping.get(request_class) or mapping[self.default_class]


ROUTING_KEYS = ("cpu_threshold", "io_threshold", "classes", "default_class", "explain",
                "encoded_slashes", "rules", "learning")
RULE_KEYS = ("path", "path_regex", "methods", "host", "headers", "content_type", "body_size",
             "class", "cpu_ms", "io_ratio", "pin", "pool")


def _milliseconds(raw: object) -> float:
    return parse_duration(raw if isinstance(raw, str) else f"{raw}ms") * 1000


def _threshold(raw: object) -> float | None:
    """`auto` (None) or a duration in milliseconds."""
    if raw == "auto":
        return None
    return parse_duration(raw) * 1000


def _regex(raw: object) -> str:
    text = as_str(raw)
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError(f"{text!r} is not a valid regular expression ({exc})") from None
    return text


def _method(raw: object) -> str:
    text = as_str(raw).upper()
    if not METHOD.match(text):
        raise ValueError(f"{raw!r} is not an HTTP method")
    return text


LEARNING_PARSERS: Parsers = {
    "alpha": as_ratio, "min_samples": as_int(minimum=1), "max_routes": as_int(minimum=1),
    "hysteresis": as_ratio, "max_cv": as_number(0),
}
ROUTING_PARSERS: Parsers = {
    "io_threshold": as_ratio,
    "explain": as_bool,
    "encoded_slashes": as_choice(ENCODED_SLASHES),
    "default_class": as_choice(CLASSES),
}
RULE_PARSERS: Parsers = {
    "path": as_str, "path_regex": _regex, "host": as_str, "content_type": as_str,
    "cpu_ms": _milliseconds, "io_ratio": as_ratio, "pin": as_bool,
}


def read_routing(reader: Reader, node: yaml.Node, pools: set[str]) -> RoutingConfig | None:
    entries = reader.mapping(node, "routing", ROUTING_KEYS, required=("classes",))
    if entries is None:
        return None
    cpu_threshold_ms = None
    if "cpu_threshold" in entries:
        cpu_threshold_ms = reader.convert(entries["cpu_threshold"], "routing.cpu_threshold",
                                          _threshold)
    values = reader.fields(entries, "routing", ROUTING_PARSERS)
    classes = _classes(reader, entries.get("classes"), pools)
    _check_default_class(reader, entries, values.get("default_class"), classes)
    rules: tuple[Rule, ...] = ()
    if "rules" in entries:
        rules = tuple(
            rule for index, item in enumerate(reader.sequence(entries["rules"], "routing.rules"))
            if (rule := _rule(reader, index, item, pools)) is not None)
    return RoutingConfig(
        cpu_threshold_ms=cpu_threshold_ms,
        classes=classes,
        rules=rules,
        learning=reader.section(entries.get("learning"), "routing.learning", Learning,
                                LEARNING_PARSERS),
        **values,
    )


def _check_default_class(
    reader: Reader, entries: dict[str, yaml.Node], default: RequestClass | None,
    classes: tuple[tuple[RequestClass, str], ...],
) -> None:
    """The default class (light_cpu unless set) has a pool."""
    if "default_class" in entries:
        if default is not None and classes and default not in dict(classes):
            reader.fail(entries["default_class"], "routing.default_class",
                        f"class '{default}' has no pool in routing.classes")
    elif classes and "light_cpu" not in dict(classes):
        reader.fail(entries["classes"], "routing.classes",
                    "map light_cpu to a pool, or set routing.default_class")


def _classes(reader: Reader, node: yaml.Node | None,
             pools: set[str]) -> tuple[tuple[RequestClass, str], ...]:
    if node is None:
        return ()
    out: list[tuple[RequestClass, str]] = []
    for name, value_node in (reader.mapping(node, "routing.classes", CLASSES) or {}).items():
        path = join("routing.classes", name)
        pool = reader.convert(value_node, path, as_str)
        if pool is None:
            continue
        if pool not in pools:
            reader.fail(value_node, path, f"no pool named '{pool}' "
                                          f"(defined: {', '.join(sorted(pools))})")
            continue
        out.append((cast(RequestClass, name), pool))
    return tuple(out)


def _rule(reader: Reader, index: int, node: yaml.Node, pools: set[str]) -> Rule | None:
    path = join("routing.rules", index)
    entries = reader.mapping(node, path, RULE_KEYS)
    if entries is None:
        return None
    request_class = None
    if "class" in entries:
        request_class = reader.convert(entries["class"], join(path, "class"), as_choice(CLASSES))
    body_min, body_max = _body_size(reader, entries.get("body_size"), join(path, "body_size"))
    rule = Rule(
        index=index,
        request_class=request_class,
        pool=_rule_pool(reader, entries.get("pool"), join(path, "pool"), pools),
        methods=(() if entries.get("methods") is None
                 else reader.each(entries["methods"], join(path, "methods"), _method)),
        headers=_headers(reader, entries.get("headers"), join(path, "headers")),
        body_min=body_min,
        body_max=body_max,
        **reader.fields(entries, path, RULE_PARSERS),
    )
    _check_rule(reader, node, path, entries)
    return rule


def _check_rule(reader: Reader, node: yaml.Node, path: str, entries: dict[str, yaml.Node]) -> None:
    """A rule matches on path or path_regex, and gives a class, a cost hint, or a pool."""
    if "path" in entries and "path_regex" in entries:
        reader.fail(entries["path_regex"], join(path, "path_regex"),
                    "a rule has path or path_regex, not both")
    gives = [k for k in ("class", "cpu_ms", "io_ratio") if k in entries]
    if "class" in entries and len(gives) > 1:
        reader.fail(node, path, "a rule gives a class or a cost hint (cpu_ms, io_ratio), not both")
    elif not gives and "pool" not in entries:
        reader.fail(node, path,
                    "a rule needs a class, a cost hint (cpu_ms and/or io_ratio), or a pool")


def _rule_pool(reader: Reader, node: yaml.Node | None, path: str, pools: set[str]) -> str | None:
    if node is None:
        return None
    pool = reader.convert(node, path, as_str)
    if pool is not None and pool not in pools:
        reader.fail(node, path, f"no pool named '{pool}' (defined: {', '.join(sorted(pools))})")
    return pool


def _body_size(
    reader: Reader, node: yaml.Node | None, path: str
) -> tuple[int | None, int | None]:
    """`body_size: {min: 1KiB, max: 1MiB}`: the rule's body_min and body_max."""
    if node is None:
        return None, None
    sizes = reader.mapping(node, path, ("min", "max")) or {}
    found = [reader.convert(sizes[key], join(path, key), parse_size) if key in sizes else None
             for key in ("min", "max")]
    return found[0], found[1]


def _headers(
    reader: Reader, node: yaml.Node | None, path: str
) -> tuple[tuple[str, str | None], ...]:
    """`{Name: value}` matches that value; `{Name: true}` matches the header's presence."""
    if node is None:
        return ()
    out: list[tuple[str, str | None]] = []
    for name, value_node in (reader.mapping(node, path) or {}).items():
        raw = reader.value(value_node, join(path, name))
        if raw is True:
            out.append((name.lower(), None))
        elif isinstance(raw, str | int | float) and not isinstance(raw, bool):
            out.append((name.lower(), str(raw)))
        else:
            reader.fail(value_node, join(path, name), "expected a value to match, or true")
    return tuple(out)
