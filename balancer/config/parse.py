"""Read the balancer's YAML config into a `Config` (balancer/config/model.py).

Pure: `parse_config(text, file)` returns a `Config` or raises `ConfigError` listing every
problem found, each as `file:line:col: key.path: message`. Unknown keys are errors (with a
did-you-mean hint). Durations read as `250ms`/`2s`/`1m`, sizes as `16KiB`/`10MiB`.
Values may use `${VAR}`/`${VAR:-default}` from the `env` given (balancer/config/substitution.py),
and a secret key `K` may instead be `K_file: path`, read with the `read_secret` given (the
file's content without its trailing newline), so a container's YAML holds no secret.
`balancer.ops.config_file.load_config` is the I/O shell: it passes the process environment
and reads secret files relative to the config file's directory. balancer/config/schema.py
derives the JSON Schema from the key lists in model.py and the parser tables in
converters.py: a key added without a schema fails its test.
"""

import hashlib
import re
from collections.abc import Callable, Mapping

import yaml

from balancer.config.addresses import Address
from balancer.config.converters import (
    ACCESS_LOG_PARSERS,
    DISCOVERY_PARSERS,
    HEALTH_PARSERS,
    LIMIT_PARSERS,
    POOL_PARSERS,
    TIMEOUT_PARSERS,
    as_discover,
    as_host_name,
    as_network,
    as_resolver,
    as_token,
    as_weight,
    backend_address,
    listen_address,
)
from balancer.config.model import (
    BACKEND_KEYS,
    POOL_KEYS,
    SECRET_SUFFIX,
    TOP_KEYS,
    AccessLogConfig,
    Config,
    Discover,
    DiscoveryConfig,
    HealthPolicy,
    IPNetwork,
    Limits,
    PoolConfig,
    Timeouts,
)
from balancer.config.routing import RoutingConfig, read_routing
from balancer.config.substitution import substitute
from balancer.config.yamltree import (
    ConfigError,
    Problem,
    Reader,
    as_bool,
    as_str,
    compose,
    join,
)

POOL_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # an RFC 9110 token: header-safe


def _no_secret_files(name: str) -> str:
    raise OSError(0, "secret files are not read here (load_config reads them)")


def parse_config(
    text: str, file: str = "<config>", *, env: Mapping[str, str] | None = None,
    read_secret: Callable[[str], str] = _no_secret_files,
) -> Config:
    """The Config `text` describes, or ConfigError with every problem in it."""
    reader = Reader(file)
    entries = _top_level(reader, compose(text, file), file, env or {})
    pools = _pools(reader, entries.get("pools"))
    config = Config(
        source=file,
        listen=_listen(reader, entries.get("listen")),
        admin=_admin(reader, entries.get("admin")),
        pools=pools,
        timeouts=reader.section(entries.get("timeouts"), "timeouts", Timeouts, TIMEOUT_PARSERS),
        limits=reader.section(entries.get("limits"), "limits", Limits, LIMIT_PARSERS),
        health=reader.section(entries.get("health"), "health", HealthPolicy, HEALTH_PARSERS),
        trusted_proxies=_trusted(reader, entries.get("trusted_proxies")),
        admin_token=_secret(reader, entries, "admin_token", as_token, read_secret),
        admin_allowed_hosts=_allowed_hosts(reader, entries.get("admin_allowed_hosts")),
        access_log=_access_log(reader, entries.get("access_log")),
        resolvers=_resolvers(reader, entries.get("resolvers")),
        discovery=reader.section(entries.get("discovery"), "discovery", DiscoveryConfig,
                                 DISCOVERY_PARSERS),
        watch=_watch(reader, entries.get("watch")),
        routing=_routing(reader, entries, pools),
        digest=hashlib.sha256(text.encode()).hexdigest()[:12],
    )
    _check_admin(reader, entries.get("admin"), config)
    if reader.problems:
        raise ConfigError(reader.problems)
    return config


def _top_level(
    reader: Reader, root: yaml.Node | None, file: str, env: Mapping[str, str]
) -> dict[str, yaml.Node]:
    """The top-level entries, `${VAR}`s substituted; raises when there is nothing to read."""
    if root is None:
        raise ConfigError([_empty_problem(file)])
    for node, problem in substitute(root, env, file):
        reader.reject(node, problem)
    entries = reader.mapping(root, "", TOP_KEYS, required=("listen", "pools"))
    if entries is None:
        raise ConfigError(reader.problems)
    return entries


def _empty_problem(file: str) -> Problem:
    return Problem(file, 1, 1, "", "the file is empty (expected at least 'listen' and 'pools')")


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")


def _admin(reader: Reader, node: yaml.Node | None) -> Address | None:
    if node is None or _is_null(node):
        return None
    return reader.convert(node, "admin", listen_address)


def _check_admin(reader: Reader, node: yaml.Node | None, config: Config) -> None:
    """The admin listener is none of the public ones (a port 0 of each is two sockets)."""
    admin = config.admin
    if node is None or admin is None or admin not in config.listen:
        return
    if not (admin.kind == "tcp" and admin.port == 0):
        reader.fail(node, "admin", f"{admin} is also a public listener")


def _secret[T](
    reader: Reader, entries: dict[str, yaml.Node], key: str, parse: Callable[[object], T],
    read_secret: Callable[[str], str],
) -> T | None:
    """`key: value`, or `key_file: path` whose content is the value (never echoed in errors)."""
    file_key = key + SECRET_SUFFIX
    present = [k for k in (key, file_key) if k in entries and not _is_null(entries[k])]
    if present == [key]:
        return reader.convert(entries[key], key, parse)
    if not present:
        return None
    node = entries[file_key]
    if len(present) == 2:
        reader.fail(node, file_key, f"set {key} or {file_key}, not both")
        return None
    name = reader.convert(node, file_key, as_str)
    if name is None:
        return None
    try:
        value = read_secret(name).rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        reader.fail(node, file_key, f"cannot read {name}: {reason}")
        return None
    try:
        return parse(value)
    except ValueError as exc:
        reader.fail(node, file_key, f"the content of {name}: {exc}")
        return None


def _listen(reader: Reader, node: yaml.Node | None) -> tuple[Address, ...]:
    if node is None:
        return ()
    seen: dict[Address, int] = {}
    items = reader.sequence(node, "listen", allow_scalar=True)
    if not items:
        reader.fail(node, "listen", "at least one listen address is required")
    for index, item in enumerate(items):
        path = "listen" if isinstance(node, yaml.ScalarNode) else join("listen", index)
        address = reader.convert(item, path, listen_address)
        if address is None:
            continue
        if address in seen and not (address.kind == "tcp" and address.port == 0):
            reader.fail(item, path, f"{address} is listed twice")
        seen[address] = index
    return tuple(seen)


def _pools(reader: Reader, node: yaml.Node | None) -> tuple[PoolConfig, ...]:
    if node is None:
        return ()
    entries = reader.mapping(node, "pools")
    if entries is None:
        return ()
    if not entries:
        reader.fail(node, "pools", "at least one pool is required")
    pools = []
    for name, pool_node in entries.items():
        if not POOL_NAME.fullmatch(name):
            reader.fail(pool_node, join("pools", name), "a pool name must be letters, digits "
                        "and !#$%&'*+.^_`|~- only (it is sent in headers)")
            continue
        pool = _pool(reader, name, pool_node)
        if pool is not None:
            pools.append(pool)
    _check_spill(reader, node, pools)
    return tuple(pools)


def _pool(reader: Reader, name: str, node: yaml.Node) -> PoolConfig | None:
    path = join("pools", name)
    entries = reader.mapping(node, path, POOL_KEYS, required=("backends",))
    if entries is None:
        return None
    backends, weights, discover = _backends(reader, entries.get("backends"),
                                            join(path, "backends"))
    spill_to: tuple[str, ...] = ()
    if "spill_to" in entries:
        spill_to = reader.each(entries["spill_to"], join(path, "spill_to"), as_str)
    return PoolConfig(
        name=name,
        backends=tuple(backends),
        weights=tuple(weights) if any(weight != 1.0 for weight in weights) else (),
        discover=tuple(discover),
        spill_to=spill_to,
        **reader.fields(entries, path, POOL_PARSERS),
    )


def _backends(
    reader: Reader, node: yaml.Node | None, path: str
) -> tuple[list[Address], list[float], list[Discover]]:
    """A pool's backend addresses, their weights, and the names to discover; an address or
    a name listed twice is a problem."""
    backends: list[Address] = []
    weights: list[float] = []
    discover: list[Discover] = []
    if node is None:
        return backends, weights, discover
    items = reader.sequence(node, path)
    if not items and isinstance(node, yaml.SequenceNode):
        reader.fail(node, path, "a pool needs a backend")
    for index, item in enumerate(items):
        item_path = join(path, index)
        address, weight = _backend(reader, item, item_path)
        if address is None:
            continue
        if isinstance(address, Discover):
            if any(d.key == address.key for d in discover):
                reader.fail(item, item_path, f"{address.key} is discovered twice in this pool")
            else:
                discover.append(address)
        elif address in backends:
            reader.fail(item, item_path, f"{address} is listed twice in this pool")
        else:
            backends.append(address)
            weights.append(weight)
    return backends, weights, discover


def _backend(
    reader: Reader, node: yaml.Node, path: str
) -> tuple[Address | Discover | None, float]:
    """`http://host:port`, `{address: http://host:port, weight: 2}` or
    `{discover: http://name:port, weight: 2}` (the weight then goes in the Discover)."""
    if not isinstance(node, yaml.MappingNode):
        return reader.convert(node, path, backend_address), 1.0
    entries = reader.mapping(node, path, BACKEND_KEYS) or {}
    weight = 1.0
    if "weight" in entries:
        weight = reader.convert(entries["weight"], join(path, "weight"), as_weight) or 1.0
    if "address" in entries and "discover" in entries:
        reader.fail(node, path, "a backend has either 'address' or 'discover', not both")
        return None, weight
    if "discover" in entries:
        discover = reader.convert(entries["discover"], join(path, "discover"), as_discover)
        return (Discover(discover.name, discover.port, weight) if discover else None), weight
    if "address" not in entries:
        reader.fail(node, path, "missing required key 'address' (or 'discover': a DNS name "
                                "whose addresses are the backends)")
        return None, weight
    return reader.convert(entries["address"], join(path, "address"), backend_address), weight


def _check_spill(reader: Reader, node: yaml.Node, pools: list[PoolConfig]) -> None:
    """Every spill_to names another defined pool (located at the offending item)."""
    if not isinstance(node, yaml.MappingNode):
        return
    names = {pool.name for pool in pools}
    nodes = {key.value: value for key, value in node.value}
    for pool in pools:
        pool_node = nodes.get(pool.name)
        if not isinstance(pool_node, yaml.MappingNode):
            continue
        spill_node = next((v for k, v in pool_node.value if k.value == "spill_to"), None)
        if spill_node is None:
            continue
        items = spill_node.value if isinstance(spill_node, yaml.SequenceNode) else [spill_node]
        for index, target in enumerate(pool.spill_to):
            path = join(join(join("pools", pool.name), "spill_to"), index)
            if target == pool.name:
                reader.fail(items[index], path, "a pool cannot spill to itself")
            elif target not in names:
                reader.fail(items[index], path, f"no pool named '{target}' "
                                                f"(defined: {', '.join(sorted(names))})")


def _routing(
    reader: Reader, entries: dict[str, yaml.Node], pools: tuple[PoolConfig, ...]
) -> RoutingConfig | None:
    if "routing" not in entries:
        return None
    return read_routing(reader, entries["routing"], {pool.name for pool in pools})


def _trusted(reader: Reader, node: yaml.Node | None) -> tuple[IPNetwork, ...]:
    return () if node is None else reader.each(node, "trusted_proxies", as_network)


def _allowed_hosts(reader: Reader, node: yaml.Node | None) -> tuple[str, ...]:
    if node is None:
        return ()
    return reader.each(node, "admin_allowed_hosts", as_host_name, allow_scalar=False)


def _access_log(reader: Reader, node: yaml.Node | None) -> AccessLogConfig | None:
    if node is None or _is_null(node):
        return None
    return reader.section(node, "access_log", AccessLogConfig, ACCESS_LOG_PARSERS)


def _resolvers(reader: Reader, node: yaml.Node | None) -> tuple[tuple[str, int], ...]:
    if node is None or _is_null(node):
        return ()
    return reader.each(node, "resolvers", as_resolver)


def _watch(reader: Reader, node: yaml.Node | None) -> bool:
    """Reload when the file changes; only an explicit `false` turns it off."""
    return node is None or reader.convert(node, "watch", as_bool) is not False
