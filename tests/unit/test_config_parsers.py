"""Every parser table the config is read with names fields of the dataclass built from it.

`Reader.fields`/`Reader.section` build a dataclass from `{key: parser}` tables with the
values typed Any, so mypy cannot see a key that is not a field: this test does.
"""

import dataclasses
from collections.abc import Callable

import pytest

from balancer.config.converters import (
    ACCESS_LOG_PARSERS,
    DISCOVERY_PARSERS,
    HEALTH_PARSERS,
    LIMIT_PARSERS,
    POOL_PARSERS,
    TIMEOUT_PARSERS,
)
from balancer.config.model import (
    AccessLogConfig,
    DiscoveryConfig,
    HealthPolicy,
    Limits,
    PoolConfig,
    Timeouts,
)
from balancer.config.routing import (
    LEARNING_PARSERS,
    ROUTING_PARSERS,
    RULE_PARSERS,
    Learning,
    RoutingConfig,
    Rule,
)
from balancer.config.yamltree import Parsers

TABLES: list[tuple[str, Parsers, Callable[..., object]]] = [
    ("timeouts", TIMEOUT_PARSERS, Timeouts),
    ("limits", LIMIT_PARSERS, Limits),
    ("health", HEALTH_PARSERS, HealthPolicy),
    ("discovery", DISCOVERY_PARSERS, DiscoveryConfig),
    ("access_log", ACCESS_LOG_PARSERS, AccessLogConfig),
    ("pools.*", POOL_PARSERS, PoolConfig),
    ("routing", ROUTING_PARSERS, RoutingConfig),
    ("routing.rules[]", RULE_PARSERS, Rule),
    ("routing.learning", LEARNING_PARSERS, Learning),
]


@pytest.mark.parametrize(("where", "parsers", "cls"), TABLES, ids=[t[0] for t in TABLES])
def test_every_key_of_a_parser_table_is_a_field(
    where: str, parsers: Parsers, cls: Callable[..., object]
) -> None:
    fields = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    assert set(parsers) <= fields, f"{where}: {set(parsers) - fields} are not fields"
