"""Read a composed YAML node tree into Python values, collecting located problems.

Pure. Every problem carries the file, the 1-based line and column of the offending node and
the dotted key path (`pools.heavy.backends[1]`), so an operator can jump straight to it.
A `Reader` never raises on bad input: it records a `Problem` and returns None, so that one
pass reports every error in the file, not only the first.
"""

import difflib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import yaml

T = TypeVar("T")
Parsers = Mapping[str, Callable[[object], object]]  # a section's keys and how each one reads


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return printable(f"{self.file}:{self.line}:{self.col}: {where}{self.message}")


def printable(text: str) -> str:
    """`text` on one line: characters that are not printable (newlines, U+2028, controls)
    quoted the way repr() does, so a value quoted from the file cannot split or forge a line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(Exception):
    """A config file that cannot be used; `problems` lists every located error found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(sorted(problems, key=lambda p: (p.file, p.line, p.col)))
        super().__init__("\n".join(str(p) for p in self.problems))


# libyaml's parser when PyYAML was built with it: ~20x faster on a 50-rule file (17 ms → under
# 1 ms), which is most of a reload. Both report the same node marks.
LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def decode(data: bytes, file: str) -> str:
    """A config file's bytes as text: UTF-8 (a leading BOM is dropped); anything else is a
    ConfigError located at the first byte that cannot be decoded."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start
        line_start = data.rfind(b"\n", 0, start) + 1
        line = data.count(b"\n", 0, start) + 1
        col = len(data[line_start:start].decode("utf-8", errors="replace")) + 1
        message = (f"the file is not UTF-8: byte 0x{data[start]:02x} cannot be decoded "
                   "(save it as UTF-8)")
        raise ConfigError([Problem(file, line, col, "", message)]) from None


def compose(text: str, file: str) -> yaml.Node | None:
    """Parse YAML text into a node tree; invalid YAML raises ConfigError located at the fault."""
    try:
        return yaml.compose(text, Loader=LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"invalid YAML: {_one_line(exc.problem or exc.context)}"
        raise ConfigError([Problem(file, line, col, "", message)]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL, ESC, ...)
        line, col = _position(text, exc.position)
        message = (f"invalid YAML: character {exc.character!r} is not allowed "
                   "(YAML takes printable characters, tab and newlines only)")
        raise ConfigError([Problem(file, line, col, "", message)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, 1, 1, "", f"invalid YAML: {_one_line(exc)}")]) from None
    except RecursionError:
        raise ConfigError([Problem(file, 1, 1, "", "invalid YAML: nested too deeply")]) from None


def _position(text: str, index: int) -> tuple[int, int]:
    """1-based line and column of a character index."""
    line_start = text.rfind("\n", 0, index) + 1
    return text.count("\n", 0, index) + 1, index - line_start + 1


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A YAML error's message on one line, without PyYAML's own position lines."""
    if isinstance(exc, yaml.MarkedYAMLError):
        return _one_line(exc.problem or exc.context)
    return _one_line(exc)


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Reader:
    """Converts nodes to values, recording a located Problem for each thing that is wrong."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []
        self._constructor = yaml.constructor.SafeConstructor()
        self._rejected: set[int] = set()

    def reject(self, node: yaml.Node, problem: Problem) -> None:
        """A problem found before reading (e.g. an unset ${VAR}): the node reads as absent."""
        self.problems.append(problem)
        self._rejected.add(id(node))

    def fail(self, node: yaml.Node, path: str, message: str) -> None:
        mark = node.start_mark
        self.problems.append(Problem(self.file, mark.line + 1, mark.column + 1, path, message))

    def mapping(
        self,
        node: yaml.Node,
        path: str,
        known: Collection[str] | None = None,
        required: Collection[str] = (),
    ) -> dict[str, yaml.Node] | None:
        """A mapping's entries by key; unknown keys (when `known` is given) are problems."""
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, path, f"expected a mapping, got {_describe(node)}")
            return None
        entries: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            try:
                key = self._construct(key_node)
            except _Unreadable as exc:  # e.g. a tag no safe constructor knows
                self.fail(key_node, path, f"invalid key: {exc}")
                continue
            if not isinstance(key, str):
                self.fail(key_node, path, f"keys must be strings, got {key!r}")
                continue
            if key in entries:
                self.fail(key_node, join(path, key), "duplicate key")
                continue
            if known is not None and key not in known:
                self.fail(key_node, join(path, key), _unknown_key(key, known))
                continue
            entries[key] = value_node
        for key in required:
            if key not in entries:
                self.fail(node, join(path, key), "missing required key")
        return entries

    def sequence(
        self, node: yaml.Node, path: str, *, allow_scalar: bool = False
    ) -> list[yaml.Node]:
        """A sequence's items; with allow_scalar a single scalar counts as a one-item list."""
        if isinstance(node, yaml.SequenceNode):
            return list(node.value)
        if allow_scalar and isinstance(node, yaml.ScalarNode):
            return [node]
        self.fail(node, path, f"expected a list, got {_describe(node)}")
        return []

    def each[T](self, node: yaml.Node, path: str, convert: Callable[[object], T], *,
                allow_scalar: bool = True) -> tuple[T, ...]:
        """A list (or, with allow_scalar, one scalar) of values, each converted; the bad ones
        are located problems and left out."""
        found = []
        for index, item in enumerate(self.sequence(node, path, allow_scalar=allow_scalar)):
            value = self.convert(item, join(path, index), convert)
            if value is not None:
                found.append(value)
        return tuple(found)

    def value(self, node: yaml.Node, path: str) -> object:
        if id(node) in self._rejected:
            return None
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, path, f"expected a single value, got {_describe(node)}")
            return None
        try:
            return self._construct(node)
        except _Unreadable as exc:
            self.fail(node, path, f"invalid value: {exc}")
            return None

    def _construct(self, node: yaml.Node) -> object:
        """The node's value; _Unreadable (with the reason) when its tag cannot read it.

        PyYAML's safe constructors raise YAMLError for an unknown tag, but plain ValueError,
        KeyError or AttributeError for a bad scalar under a known one (`!!int x`,
        `!!bool maybe`, `!!timestamp nope`): all of them are the file's fault."""
        try:
            return self._constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise _Unreadable(_yaml_problem(exc)) from None
        except (ValueError, KeyError, AttributeError, TypeError, OverflowError):
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            if isinstance(node, yaml.ScalarNode):
                raise _Unreadable(f"{node.value!r} cannot be read as {tag}") from None
            raise _Unreadable(f"{_describe(node)} holds a value its tag cannot read") from None

    def convert(self, node: yaml.Node, path: str, parse: Callable[[object], T]) -> T | None:
        """Apply a parser that raises ValueError with a message; record the message as a problem."""
        raw = self.value(node, path)
        if raw is None and isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            self.fail(node, path, "a value is required here")
            return None
        if raw is None:
            return None
        try:
            return parse(raw)
        except ValueError as exc:
            self.fail(node, path, str(exc))
            return None

    def fields(
        self, entries: Mapping[str, yaml.Node], path: str, parsers: Parsers
    ) -> dict[str, Any]:
        """The entries `parsers` names, each converted by its own parser; a bad one is recorded
        and left out, so the dataclass built from them keeps that field's default. The values
        are typed Any: each is what its parser returns, and a key of `parsers` is a field name
        (tests/unit/test_config_parsers.py checks every table against its dataclass)."""
        values: dict[str, Any] = {}
        for key, parse in parsers.items():
            if key in entries:
                value = self.convert(entries[key], join(path, key), parse)
                if value is not None:
                    values[key] = value
        return values

    def section[S](
        self, node: yaml.Node | None, path: str, cls: Callable[..., S], parsers: Parsers
    ) -> S:
        """A flat section: each key is a field of `cls`, read with its own parser; the keys of
        `parsers` are the only ones known. An absent section is `cls()`, all defaults."""
        if node is None:
            return cls()
        return cls(**self.fields(self.mapping(node, path, parsers) or {}, path, parsers))


class _Unreadable(Exception):
    """A node its tag's constructor cannot read; the message says why."""


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return f"{node.value!r}" if node.value else "nothing"


def _unknown_key(key: str, known: Collection[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown key '{key}' ({hint}expected one of: {', '.join(sorted(known))})"


# Converters shared by config sections; each raises ValueError with the accepted form, and says
# as a JSON Schema fragment which YAML values it accepts (balancer/config/schema.py builds on them).

class Converter[V]:
    """A parser together with the JSON Schema of the values it accepts: one source for both."""

    __slots__ = ("_parse", "schema")

    def __init__(self, parse: Callable[[object], V], schema: dict[str, Any]) -> None:
        self._parse = parse
        self.schema = schema

    def __call__(self, raw: object) -> V:
        return self._parse(raw)


def as_int(minimum: int = 0) -> Converter[int]:
    def parse(raw: object) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError(f"{raw!r} is not a whole number")
        if raw < minimum:
            raise ValueError(f"{raw} is too small (minimum {minimum})")
        return raw
    return Converter(parse, {"type": "integer", "minimum": minimum})


def _ratio(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw <= 1:
        raise ValueError(f"{raw!r} is not a number from 0 to 1")
    return float(raw)


as_ratio = Converter(_ratio, {"type": "number", "minimum": 0, "maximum": 1})


def as_number(minimum: float) -> Converter[float]:
    def parse(raw: object) -> float:
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < minimum:
            raise ValueError(f"{raw!r} is not a number >= {minimum:g}")
        return float(raw)
    return Converter(parse, {"type": "number", "minimum": minimum})


def _bool(raw: object) -> bool:
    if not isinstance(raw, bool):
        raise ValueError(f"{raw!r} is not true or false")
    return raw


as_bool = Converter(_bool, {"type": "boolean"})


def _str(raw: object) -> str:
    if not isinstance(raw, str) or not raw:
        raise ValueError(f"{raw!r} is not a non-empty string")
    return raw


as_str = Converter(_str, {"type": "string", "minLength": 1})


def as_choice[C: str](choices: Collection[C]) -> Converter[C]:
    """One of `choices` (typed as they are, e.g. a Literal)."""
    def parse(raw: object) -> C:
        for choice in choices:
            if raw == choice:
                return choice
        raise ValueError(f"unknown value {raw!r} (expected one of: {', '.join(choices)})")
    return Converter(parse, {"enum": list(choices)})
