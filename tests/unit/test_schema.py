"""The JSON Schema (`balancer schema`) against `balancer check`: they must not drift apart.

Every valid example config in the repo passes both; a valid config with one unknown key added
or one value changed to another type gets the same verdict from both (hypothesis).
"""

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from balancer.config.parse import parse_config
from balancer.config.schema import SchemaGap, config_schema, mapping
from balancer.config.yamltree import ConfigError
from tests.unit.test_config import MINIMAL, ROUTING_EXAMPLE

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = config_schema()
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


def readme_configs() -> list[str]:
    """README's yaml blocks that are whole configs (they have listen and pools)."""
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", readme, re.S)
    return [b for b in blocks if re.search(r"^listen:", b, re.M) and re.search(r"^pools:", b, re.M)]


EXAMPLES = {
    **{f"config/{p.name}": p.read_text() for p in sorted((ROOT / "config").glob("*.yaml"))},
    **{f"README.md block {i}": text for i, text in enumerate(readme_configs())},
    "tests/unit/test_config.py MINIMAL": MINIMAL,
    "tests/unit/test_config.py ROUTING_EXAMPLE": ROUTING_EXAMPLE,
    "discovery": "listen: 127.0.0.1:0\nresolvers: 127.0.0.11\ndiscovery: {interval: 5s}\n"
                 "watch: false\npools:\n  default:\n    backends:\n"
                 "      - {discover: http://app:8000, weight: 2}\n      - http://10.0.0.9:80\n",
}


# Semantic problems the schema cannot express (cross-references, duplicates, ranges of ports):
# when check's only problems are these, the schema may accept.
SEMANTIC = ("no pool named", "listed twice", "is also a public listener", "cannot spill to",
            "has no pool in routing.classes", "map light_cpu to a pool", "is out of range")


def check_problems(text: str) -> list[str]:
    try:
        parse_config(text, "x.yaml")
    except ConfigError as exc:
        return [p.message for p in exc.problems]
    return []


def schema_errors(data: object) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in VALIDATOR.iter_errors(data)]


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_the_examples_are_found() -> None:
    assert len(EXAMPLES) >= 5 and any(name.startswith("README") for name in EXAMPLES)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_every_example_config_passes_check_and_the_schema(name: str) -> None:
    """README's reference names pools it does not define: there, only those problems."""
    text = EXAMPLES[name]
    problems = check_problems(text)
    if name.startswith("README"):
        problems = [p for p in problems if not any(s in p for s in SEMANTIC)]
    assert problems == []
    assert schema_errors(yaml.safe_load(text)) == []


def test_the_committed_schema_is_the_generated_one() -> None:
    """config/balancer.schema.json is what editors load (the yaml-language-server header)."""
    committed = json.loads((ROOT / "config" / "balancer.schema.json").read_text())
    assert committed == SCHEMA, "run: balancer schema > config/balancer.schema.json"




def test_a_key_without_a_schema_is_a_gap_not_a_silent_hole() -> None:
    with pytest.raises(SchemaGap, match="new_key"):
        mapping("pools.*", ("backends", "new_key"), {"backends": {}})
    with pytest.raises(SchemaGap, match="old_key"):
        mapping("pools.*", ("backends",), {"backends": {}, "old_key": {}})


# One value of each YAML type; a mutation swaps a value for one of a different type.
OTHER_TYPES: tuple[object, ...] = (True, 7, 0.25, "text", [1], {"a": 1}, None)


def _type_of(value: object) -> str:
    return type(value).__name__


def _locations(data: object, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in the tree (not the root)."""
    out: list[tuple[Any, ...]] = [path] if path else []
    if isinstance(data, dict):
        for key, value in data.items():
            out += _locations(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out += _locations(value, (*path, index))
    return out


def _mappings(data: object, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = [path] if isinstance(data, dict) else []
    if isinstance(data, dict):
        for key, value in data.items():
            out += _mappings(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out += _mappings(value, (*path, index))
    return out


def _at(data: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        data = data[step]
    return data


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, Any, str]:
    name = draw(st.sampled_from(sorted(EXAMPLES)))
    data = copy.deepcopy(yaml.safe_load(EXAMPLES[name]))
    if draw(st.booleans()):
        where = draw(st.sampled_from(_mappings(data)))
        key = draw(st.sampled_from(["zz_unknown", "timeout", "backend", "polcy", "Listen"]))
        target = _at(data, where)
        if key in target:
            key = "zz_unknown"
        target[key] = draw(st.sampled_from([1, "x", {"a": 1}]))
        what = f"{name}: unknown key {key!r} at {where}"
    else:
        where = draw(st.sampled_from(_locations(data)))
        old = _at(data, where)
        new = draw(st.sampled_from([v for v in OTHER_TYPES if _type_of(v) != _type_of(old)]))
        _at(data, where[:-1])[where[-1]] = new
        what = f"{name}: {where} {old!r} -> {new!r}"
    return yaml.safe_dump(data, sort_keys=False), data, what


@given(mutated())
def test_the_schema_and_check_agree_on_unknown_keys_and_wrong_types(
        case: tuple[str, Any, str]) -> None:
    text, data, what = case
    problems = check_problems(text)
    structural = [p for p in problems if not any(s in p for s in SEMANTIC)]
    errors = schema_errors(data)
    assert (errors == []) == (structural == []), (what, structural, errors)


def test_the_schema_takes_env_references_anywhere_a_value_goes() -> None:
    data = yaml.safe_load(MINIMAL)
    data["listen"] = "${LISTEN:-127.0.0.1:8080}"
    data["timeouts"] = {"connect": "${CONNECT}"}
    data["admin_token_file"] = "/run/secrets/admin_token"
    assert schema_errors(data) == []


def test_admin_token_and_its_file_together_are_refused_by_both() -> None:
    text = MINIMAL + "admin_token: 0123456789abcdef0\nadmin_token_file: /run/secrets/t\n"
    assert any("not both" in p for p in check_problems(text))
    assert schema_errors(yaml.safe_load(text)) != []
