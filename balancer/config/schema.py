"""The JSON Schema of the config file, for editors (`balancer schema` prints it).

Pure. Built from the same key lists (balancer/config/model.py, routing.py) and parsers
(balancer/config/converters.py, routing.py) the config is read with, so the two cannot drift
apart quietly: each mapping's properties are its key tuple (TOP_KEYS, POOL_KEYS, ...), each
flat section's values are its parsers' own `Converter.schema`, and a key with no
schema, or a schema for a key that no longer exists, makes `config_schema()` raise SchemaGap
(tests/unit/test_schema.py builds it, and checks its verdict against `check` on mutated configs).
What the schema cannot say (a spill_to naming an undefined pool, an address listed twice, a
port over 65535) only `balancer check` reports.
"""

from collections.abc import Callable, Collection, Mapping
from typing import Any

from balancer.config.addresses import parse_backend, parse_listen
from balancer.config.converters import (
    ACCESS_LOG_PARSERS,
    DISCOVERY_PARSERS,
    HEALTH_PARSERS,
    LIMIT_PARSERS,
    TIMEOUT_PARSERS,
    as_host_name,
    as_path,
    as_resolver,
    as_token,
)
from balancer.config.model import (
    BACKEND_KEYS,
    POLICIES,
    POOL_KEYS,
    POOL_KINDS,
    SECRET_SUFFIX,
    TOP_KEYS,
)
from balancer.config.routing import (
    CLASSES,
    ENCODED_SLASHES,
    LEARNING_PARSERS,
    ROUTING_KEYS,
    RULE_KEYS,
)
from balancer.config.units import parse_duration, parse_rate, parse_size
from balancer.config.yamltree import Converter, as_bool, as_choice, as_int, as_ratio, as_str

Schema = dict[str, Any]
SCHEMA_ID = "https://echonext-balancer.invalid/balancer.schema.json"


class SchemaGap(Exception):
    """A config key without a schema, or a schema for a key the config does not read."""


ENV = {"type": "string", "pattern": r"\$\{", "description": "${VAR} or ${VAR:-default}"}
DURATION = {"anyOf": [{"type": "number", "minimum": 0},
                      {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"}],
            "description": "a duration: 250ms, 2s, 1m, 1h, or a number of seconds"}
SIZE = {"anyOf": [{"type": "number", "minimum": 0},
                  {"type": "string",
                   "pattern": r"^\s*\d+(\.\d+)?\s*([KkMmGgTt][Ii]?[Bb]|[Bb])?\s*$"}],
        "description": "a size: 16KiB, 10MiB, 512KB, or a number of bytes"}
RATE = {"anyOf": [{"type": "integer", "minimum": 0},
                  {"type": "string",
                   "pattern": r"^\s*\d+(\.\d+)?\s*([KkMmGgTt][Ii]?[Bb]|[Bb])?(/s)?\s*$"}],
        "description": "a rate: 500B/s, 10KiB/s, or a number of bytes a second"}
UNIX = r"^unix:(//)?/"
LISTEN = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 65535},
                    {"type": "string", "pattern": UNIX},
                    {"type": "string", "pattern": r"^(?!unix:).*[^:]:[0-9]+$"}],
          "description": "host:port (port 0 picks a free one), a bare port, or unix:/path"}
BACKEND = {"type": "string", "pattern": r"^(http://[^/]*[^/:]:[0-9]+/*|unix:(//)?/.*)$",
           "description": "http://host:port or unix:/path"}
NETWORK = {"type": "string", "pattern": r"^[0-9A-Fa-f:.%]+(/[0-9.]+)?$",
           "description": "an IP address or network, e.g. 10.0.0.0/8"}

# Parsers that are plain functions: their schema is stated here, next to their imports.
FUNCTION_SCHEMAS: dict[Callable[[object], object], Schema] = {
    parse_duration: DURATION,
    parse_size: SIZE,
    parse_rate: RATE,
    parse_listen: LISTEN,
    parse_backend: BACKEND,
    as_path: {"type": "string", "pattern": r"^/[^ \r\n]*$", "description": "a path, e.g. /x"},
    as_token: {"type": "string", "minLength": 16, "pattern": r"^\S+$"},
    as_resolver: {"type": "string", "pattern": r"^(\[[0-9A-Fa-f:.%]+\](:[0-9]+)?|[0-9.]+(:[0-9]+)?"
                r"|[0-9A-Fa-f:.%]*:[0-9A-Fa-f:.%]*:[0-9A-Fa-f:.%]*)$",
                "description": "a DNS server: ip, ip:port or [v6]:port (port 53 by default)"},
    as_host_name: {"type": "string", "pattern": r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]*"
                   r"[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$",
                   "description": "a host name or IPv4 address, without a port"},
}


def schema_of(parse: Callable[[object], object]) -> Schema:
    if isinstance(parse, Converter):
        return dict(parse.schema)
    if parse in FUNCTION_SCHEMAS:
        return dict(FUNCTION_SCHEMAS[parse])
    raise SchemaGap(f"no JSON Schema for the parser {getattr(parse, '__name__', parse)!r}: "
                    "make it a yamltree.Converter or add it to schema.FUNCTION_SCHEMAS")


def value(schema: Schema) -> Schema:
    """A scalar: the schema, or a `${VAR}` reference substituted before it is read."""
    return {"anyOf": [schema, {"$ref": "#/$defs/env"}]}


def one_or_list(item: Schema, *, min_items: int = 0) -> Schema:
    return {"anyOf": [item, {"type": "array", "items": item, "minItems": min_items}]}


def nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def mapping(where: str, keys: Collection[str], properties: Mapping[str, Schema],
            required: Collection[str] = ()) -> Schema:
    missing = [k for k in keys if k not in properties]
    extra = [k for k in properties if k not in keys]
    if missing or extra:
        raise SchemaGap(f"{where}: keys without a schema: {missing}; schemas without a key: "
                        f"{extra} (balancer/config/schema.py)")
    schema: Schema = {"type": "object", "properties": {k: properties[k] for k in keys},
                      "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema


def section(where: str, parsers: Mapping[str, Callable[[object], object]],
            stated: Mapping[str, Schema] | None = None) -> Schema:
    """A flat section: every key's schema is its parser's (or, for a parser that cannot say,
    e.g. a lambda, the one `stated` here)."""
    stated = stated or {}
    return mapping(where, parsers, {
        k: value(stated[k] if k in stated else schema_of(p)) for k, p in parsers.items()})


def at_least(seconds: float) -> Schema:
    """A duration with a minimum (exact for a number; a string's unit is not compared)."""
    return {"anyOf": [{"type": "number", "minimum": seconds}, DURATION["anyOf"][1]],
            "description": f"{DURATION['description']}; at least {seconds:g}s"}


def config_schema() -> Schema:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "echonext-balancer config",
        "description": "The YAML config of echonext-balancer (`balancer check -c FILE` "
                       "checks what a schema cannot, such as pool references).",
        **top(),
        "$defs": {"env": ENV, "pool": pool(), "backend": backend(), "rule": rule()},
    }


def top() -> Schema:
    token = value(schema_of(as_token))
    schema = mapping("top level", TOP_KEYS, {
        "listen": one_or_list(value(LISTEN), min_items=1),
        "admin": nullable(value(LISTEN)),
        "pools": {"type": "object", "minProperties": 1,
                  "propertyNames": {"pattern": r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"},
                  "additionalProperties": {"$ref": "#/$defs/pool"}},
        "timeouts": section("timeouts", TIMEOUT_PARSERS),
        "limits": section("limits", LIMIT_PARSERS),
        "health": section("health", HEALTH_PARSERS),
        "access_log": nullable(section("access_log", ACCESS_LOG_PARSERS)),
        "trusted_proxies": one_or_list(value(NETWORK)),
        "routing": routing(),
        "admin_token": nullable(token),
        "admin_token_file": nullable(value(schema_of(as_str))),
        "admin_allowed_hosts": {"type": "array", "items": value(schema_of(as_host_name))},
        "resolvers": nullable(one_or_list(value(schema_of(as_resolver)))),
        "discovery": section("discovery", DISCOVERY_PARSERS,
                             {"interval": at_least(1.0), "timeout": at_least(0.1)}),
        "watch": value(schema_of(as_bool)),
    }, required=("listen", "pools"))
    schema["not"] = {"required": ["admin_token", "admin_token" + SECRET_SUFFIX]}
    return schema


def pool() -> Schema:
    count = value(schema_of(as_int(minimum=1)))
    return mapping("pools.*", POOL_KEYS, {
        "backends": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/backend"}},
        "kind": value(schema_of(as_choice(POOL_KINDS))),
        "max_connections": count,
        "max_idle": count,
        "max_inflight": count,
        "max_tunnels": count,
        "spill_to": one_or_list(value(schema_of(as_str))),
        "policy": value(schema_of(as_choice(POLICIES))),
        "max_queue": value(schema_of(as_int(minimum=0))),
        "queue_timeout": value(DURATION),
    }, required=("backends",))


def backend() -> Schema:
    """An address, or `{address | discover, weight}` (exactly one of address and discover)."""
    entry = mapping("pools.*.backends[]", BACKEND_KEYS, {
        "address": value(BACKEND),
        "discover": value({"type": "string", "pattern": r"^http://[^/]*[^/:]:[0-9]+/*$",
                           "description": "http://name:port: the backends are the addresses "
                                          "DNS gives for the name"}),
        "weight": value({"type": "number", "exclusiveMinimum": 0, "maximum": 1000}),
    })
    entry["oneOf"] = [{"required": ["address"]}, {"required": ["discover"]}]
    return {"anyOf": [value(BACKEND), entry]}


def routing() -> Schema:
    classes = mapping("routing.classes", CLASSES, {c: value(schema_of(as_str)) for c in CLASSES})
    return mapping("routing", ROUTING_KEYS, {
        "cpu_threshold": value({"anyOf": [{"const": "auto"}, DURATION]}),
        "io_threshold": value(schema_of(as_ratio)),
        "classes": classes,
        "default_class": value(schema_of(as_choice(CLASSES))),
        "explain": value(schema_of(as_bool)),
        "encoded_slashes": value(schema_of(as_choice(ENCODED_SLASHES))),
        "rules": {"type": "array", "items": {"$ref": "#/$defs/rule"}},
        "learning": section("routing.learning", LEARNING_PARSERS),
    }, required=("classes",))


def rule() -> Schema:
    text = value(schema_of(as_str))
    schema = mapping("routing.rules[]", RULE_KEYS, {
        "path": text,
        "path_regex": text,
        "methods": one_or_list(value({"type": "string", "pattern": "^[A-Za-z]+$"})),
        "host": text,
        "headers": {"type": "object", "additionalProperties": value(
            {"anyOf": [{"type": ["string", "number"]}, {"const": True}]})},
        "content_type": text,
        "body_size": mapping("routing.rules[].body_size", ("min", "max"),
                             {"min": value(SIZE), "max": value(SIZE)}),
        "class": value(schema_of(as_choice(CLASSES))),
        "cpu_ms": value(DURATION),
        "io_ratio": value(schema_of(as_ratio)),
        "pin": value(schema_of(as_bool)),
        "pool": text,
    })
    schema["anyOf"] = [{"required": [k]} for k in ("class", "cpu_ms", "io_ratio", "pool")]
    schema["allOf"] = [
        {"not": {"required": ["path", "path_regex"]}},
        {"not": {"anyOf": [{"required": ["class", k]} for k in ("cpu_ms", "io_ratio")]}},
    ]
    return schema
