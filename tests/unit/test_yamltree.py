"""balancer/config/yamltree.py: a Reader never raises on bad input, records every problem
(located `file:line:col: path: message`) in one pass, hints at a misspelt key, and its
converters say what they accept."""

from dataclasses import dataclass

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from balancer.config.parse import parse_config
from balancer.config.yamltree import (
    ConfigError,
    Problem,
    Reader,
    as_bool,
    as_choice,
    as_int,
    as_number,
    as_ratio,
    as_str,
    compose,
    decode,
    join,
    printable,
)


def node(text: str) -> yaml.Node:
    root = compose(text, "t.yaml")
    assert root is not None
    return root


def located(reader: Reader) -> list[str]:
    return [str(p) for p in reader.problems]


# -- never raises, records every problem ----------------------------------------------------

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=8))
TREES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.one_of(st.text(max_size=6), st.integers(), st.booleans()), inner,
                    max_size=4)), max_leaves=12)
TAGGED = st.sampled_from([
    "a: !!int x", "!!int x: 1", "a: !!binary '%%'", "a: !!timestamp nope", "? [1, 2]\n: 3",
    "a: !!python/object:os.system x", "a: !custom 1", "{a: 1, a: 2}", "a: !!float x",
])
KNOWN = ("a", "b", "listen", "pools")
CONVERTERS = [as_int(minimum=1), as_ratio, as_number(0), as_bool, as_str,
              as_choice(("a", "b"))]


def read_everything(reader: Reader, at: yaml.Node, path: str) -> None:
    """Every Reader method on every node of the tree."""
    entries = reader.mapping(at, path, KNOWN, required=("a",)) or {}
    for key, child in entries.items():
        read_everything(reader, child, join(path, key))
    for index, item in enumerate(reader.sequence(at, path)):
        read_everything(reader, item, join(path, index))
    reader.sequence(at, path, allow_scalar=True)
    reader.value(at, path)
    for convert in CONVERTERS:
        reader.convert(at, path, convert)
    reader.section(at, path, Section, {"count": as_int(1), "name": as_str})


@dataclass(frozen=True)
class Section:
    count: int = 1
    name: str = "x"


@given(st.one_of(TREES.map(lambda tree: yaml.safe_dump(tree)), TAGGED))
def test_a_reader_never_raises_and_every_problem_is_located(text: str) -> None:
    root = compose(text, "t.yaml")
    reader = Reader("t.yaml")
    if root is not None:
        read_everything(reader, root, "")
    for problem in reader.problems:
        assert problem.file == "t.yaml" and problem.line >= 1 and problem.col >= 1
        assert str(problem).startswith(f"t.yaml:{problem.line}:{problem.col}: ")


def test_every_problem_is_recorded_in_one_pass() -> None:
    reader = Reader("t.yaml")
    root = node("a: 1\nc: 2\nd: 3\na: 4\n5: x\n")
    entries = reader.mapping(root, "top", KNOWN, required=("b",))
    assert entries is not None and set(entries) == {"a"}
    assert located(reader) == [
        "t.yaml:2:1: top.c: unknown key 'c' (expected one of: a, b, listen, pools)",
        "t.yaml:3:1: top.d: unknown key 'd' (expected one of: a, b, listen, pools)",
        "t.yaml:4:1: top.a: duplicate key",
        "t.yaml:5:1: top: keys must be strings, got 5",
        "t.yaml:1:1: top.b: missing required key",
    ]


def test_bad_values_are_recorded_and_read_as_absent() -> None:
    reader = Reader("t.yaml")
    items = reader.sequence(node("[x, 0, !!int y, [1], null, 2]"), "n")
    values = [reader.convert(item, join("n", i), as_int(minimum=1)) for i, item in enumerate(items)]
    assert values == [None, None, None, None, None, 2]
    assert located(reader) == [
        "t.yaml:1:2: n[0]: 'x' is not a whole number",
        "t.yaml:1:5: n[1]: 0 is too small (minimum 1)",
        "t.yaml:1:8: n[2]: invalid value: 'y' cannot be read as !!int",
        "t.yaml:1:17: n[3]: expected a single value, got a list",
        "t.yaml:1:22: n[4]: a value is required here",
    ]


def test_a_rejected_node_reads_as_absent_without_a_second_problem() -> None:
    reader = Reader("t.yaml")
    root = node("a: ${NOPE}")
    value_node = root.value[0][1]
    reader.reject(value_node, Problem("t.yaml", 1, 4, "a", "NOPE is not set"))
    assert reader.convert(value_node, "a", as_str) is None
    assert located(reader) == ["t.yaml:1:4: a: NOPE is not set"]


def test_shapes_are_named_when_wrong() -> None:
    reader = Reader("t.yaml")
    assert reader.mapping(node("[1]"), "m") is None
    assert reader.sequence(node("{a: 1}"), "s") == []
    assert reader.sequence(node("x"), "s") == []
    assert reader.sequence(node("x"), "s", allow_scalar=True) != []
    assert reader.value(node("{}"), "v") is None
    assert located(reader) == [
        "t.yaml:1:1: m: expected a mapping, got a list",
        "t.yaml:1:1: s: expected a list, got a mapping",
        "t.yaml:1:1: s: expected a list, got 'x'",
        "t.yaml:1:1: v: expected a single value, got a mapping",
    ]


@pytest.mark.parametrize(("text", "problem"), [
    ("connect: !!int y",
     "t.yaml:3:21: timeouts.connect: invalid value: 'y' cannot be read as !!int"),
    ("connect: !!float y",
     "t.yaml:3:21: timeouts.connect: invalid value: 'y' cannot be read as !!float"),
    ("connect: !!bool maybe",
     "t.yaml:3:21: timeouts.connect: invalid value: 'maybe' cannot be read as !!bool"),
    ("connect: !!timestamp x",
     "t.yaml:3:21: timeouts.connect: invalid value: 'x' cannot be read as !!timestamp"),
    ("!!int x: 1", "t.yaml:3:12: timeouts: invalid key: 'x' cannot be read as !!int"),
    ("? [!!int x]\n  : 1", "t.yaml:3:14: timeouts: invalid key: a list holds a value its tag "
                           "cannot read"),
])
def test_a_value_its_tag_cannot_read_is_a_located_problem_not_a_crash(
    text: str, problem: str
) -> None:
    """PyYAML raises ValueError/KeyError/AttributeError for these, not YAMLError: once a
    traceback out of `balancer check` (and of a reload)."""
    config = "listen: 127.0.0.1:0\npools: {a: {backends: [http://a:1]}}\ntimeouts: {%s}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(config % text, "t.yaml")
    assert [str(p) for p in info.value.problems] == [problem]


# -- did you mean ----------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "hint"), [
    ("listne", "did you mean 'listen'? "),
    ("pool", "did you mean 'pools'? "),
    ("Listen", "did you mean 'listen'? "),
    ("timeouts", ""),   # nothing close: no guess
])
def test_an_unknown_key_gets_the_closest_known_one(key: str, hint: str) -> None:
    reader = Reader("t.yaml")
    reader.mapping(node(f"{key}: 1"), "", KNOWN)
    assert located(reader) == [
        f"t.yaml:1:1: {key}: unknown key '{key}' ({hint}expected one of: a, b, listen, pools)"]


# -- sections --------------------------------------------------------------------------------

def test_a_section_keeps_the_default_of_each_bad_or_absent_field() -> None:
    reader = Reader("t.yaml")
    parsers = {"count": as_int(1), "name": as_str}
    assert reader.section(None, "s", Section, parsers) == Section()
    assert reader.section(node("{count: 0, name: y}"), "s", Section, parsers) == Section(name="y")
    assert reader.section(node("[1]"), "s", Section, parsers) == Section()
    assert reader.section(node("{cont: 3}"), "s", Section, parsers) == Section()
    assert located(reader) == [
        "t.yaml:1:9: s.count: 0 is too small (minimum 1)",
        "t.yaml:1:1: s: expected a mapping, got a list",
        "t.yaml:1:2: s.cont: unknown key 'cont' (did you mean 'count'? expected one of: count, "
        "name)",
    ]


def test_fields_converts_only_the_keys_it_is_given() -> None:
    reader = Reader("t.yaml")
    entries = reader.mapping(node("{count: 2, other: z}"), "s")
    assert entries is not None
    assert reader.fields(entries, "s", {"count": as_int(1), "name": as_str}) == {"count": 2}
    assert reader.problems == []


# -- converters ------------------------------------------------------------------------------

@pytest.mark.parametrize(("convert", "raw", "value"), [
    (as_int(minimum=0), 0, 0), (as_int(minimum=1), 7, 7),
    (as_ratio, 0, 0.0), (as_ratio, 1, 1.0), (as_ratio, 0.25, 0.25),
    (as_number(1), 1, 1.0), (as_number(1), 2.5, 2.5),
    (as_bool, True, True), (as_bool, False, False),
    (as_str, "x", "x"),
    (as_choice(("io", "light_cpu")), "io", "io"),
])
def test_converters_accept_their_values(convert: object, raw: object, value: object) -> None:
    assert callable(convert)
    result = convert(raw)
    assert result == value and type(result) is type(value)


@pytest.mark.parametrize(("convert", "raw", "message"), [
    (as_int(minimum=0), True, "True is not a whole number"),   # a bool is not 1
    (as_int(minimum=0), 1.5, "1.5 is not a whole number"),
    (as_int(minimum=2), 1, "1 is too small (minimum 2)"),
    (as_ratio, 1.5, "1.5 is not a number from 0 to 1"),
    (as_ratio, -0.1, "-0.1 is not a number from 0 to 1"),
    (as_ratio, True, "True is not a number from 0 to 1"),
    (as_number(1), 0.5, "0.5 is not a number >= 1"),
    (as_number(0), "3", "'3' is not a number >= 0"),
    (as_bool, "yes please", "'yes please' is not true or false"),
    (as_bool, 1, "1 is not true or false"),
    (as_str, "", "'' is not a non-empty string"),
    (as_str, 3, "3 is not a non-empty string"),
    (as_choice(("io", "light_cpu")), "IO", "unknown value 'IO' (expected one of: io, light_cpu)"),
])
def test_converters_say_what_they_accept(convert: object, raw: object, message: str) -> None:
    assert callable(convert)
    with pytest.raises(ValueError) as info:
        convert(raw)
    assert str(info.value) == message


def test_each_converter_states_its_json_schema() -> None:
    assert as_int(minimum=3).schema == {"type": "integer", "minimum": 3}
    assert as_ratio.schema == {"type": "number", "minimum": 0, "maximum": 1}
    assert as_bool.schema == {"type": "boolean"}
    assert as_choice(("a", "b")).schema == {"enum": ["a", "b"]}


# -- problems, errors, decoding --------------------------------------------------------------

def test_a_problem_is_one_line_whatever_it_quotes() -> None:
    assert str(Problem("f", 1, 2, "", "msg")) == "f:1:2: msg"
    assert str(Problem("f", 1, 2, "a.b", "bad 'x\ny'")) == "f:1:2: a.b: bad 'x\\ny'"
    assert printable("a\u2028b\x1b") == "a\\u2028b\\x1b"


def test_a_config_error_lists_its_problems_in_file_order() -> None:
    error = ConfigError([Problem("f", 3, 1, "c", "m3"), Problem("f", 1, 5, "a", "m1"),
                         Problem("f", 1, 2, "b", "m2")])
    assert str(error) == "f:1:2: b: m2\nf:1:5: a: m1\nf:3:1: c: m3"


def test_compose_locates_invalid_yaml_and_reads_empty_as_none() -> None:
    assert compose("", "f") is None
    with pytest.raises(ConfigError) as info:
        compose("a: [1, 2\nb: 3\n", "f")
    assert str(info.value).startswith("f:2:2: invalid YAML: ")
    with pytest.raises(ConfigError, match=r"^f:1:4: invalid YAML: character .* is not allowed"):
        compose("a: \x00", "f")


def test_decode_drops_a_bom_and_locates_bytes_that_are_not_utf8() -> None:
    assert decode(b"\xef\xbb\xbfa: 1", "f") == "a: 1"
    with pytest.raises(ConfigError) as info:
        decode(b"a: 1\nb: \xe9t\xe9\n", "f")
    assert str(info.value) == ("f:2:4: the file is not UTF-8: byte 0xe9 cannot be decoded "
                               "(save it as UTF-8)")
