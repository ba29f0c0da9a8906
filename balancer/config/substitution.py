"""`${VAR}` and `${VAR:-default}` in config values, from an environment given as a mapping.

Pure: `substitute(root, env, file)` rewrites the composed YAML node tree in place and returns
a located Problem (with its node) for each unset variable without a default and each
malformed `${`. Rules:
- Only values are substituted, never keys; each node once (YAML aliases share nodes), in one
  pass, so a variable's value that itself contains `${` is taken literally.
- `${VAR:-default}` uses the default when VAR is unset or empty (as the shell does); the
  default cannot contain `}`. `$${` stands for a literal `${`.
- A plain (unquoted) scalar is re-typed after substitution as YAML would type the result, so
  `max_connections: ${MAX:-64}` is a number; a quoted one stays a string.
"""

import re
from collections.abc import Mapping

import yaml

from balancer.config.yamltree import Problem, join

_REFERENCE = re.compile(r"\$\$\{|\$\{(?:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})?")
_RESOLVER = yaml.resolver.Resolver()


Failure = tuple[yaml.Node, Problem]


def substitute(root: yaml.Node, env: Mapping[str, str], file: str) -> list[Failure]:
    problems: list[Failure] = []
    seen: set[int] = set()
    _walk(root, "", env, file, problems, seen)
    return problems


def _walk(node: yaml.Node, path: str, env: Mapping[str, str], file: str,
          problems: list[Failure], seen: set[int]) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else "?"
            _walk(value, join(path, str(name)), env, file, problems, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, join(path, index), env, file, problems, seen)
    elif isinstance(node, yaml.ScalarNode) and "${" in node.value:
        _scalar(node, path, env, file, problems)


def _scalar(node: yaml.ScalarNode, path: str, env: Mapping[str, str], file: str,
            problems: list[Failure]) -> None:
    mark = node.start_mark

    def fail(message: str) -> str:
        problems.append((node, Problem(file, mark.line + 1, mark.column + 1, path, message)))
        return ""

    def replace(match: re.Match[str]) -> str:
        text, name, default = match.group(0), match.group(1), match.group(2)
        if text == "$${":
            return "${"
        if name is None:
            return fail("malformed '${': expected ${NAME} or ${NAME:-default} "
                        "(write $${ for a literal ${)")
        value = env.get(name)
        if default is not None and not value:
            return default
        if value is None:
            return fail(f"environment variable '{name}' is not set "
                        f"(set it, or give a default: ${{{name}:-value}})")
        return value

    plain = not node.style  # None from PyYAML, "" from libyaml
    implicit = plain and node.tag == _implicit_tag(node.value)
    node.value = _REFERENCE.sub(replace, node.value)
    if implicit:
        node.tag = _implicit_tag(node.value)


def _implicit_tag(value: str) -> str:
    return str(_RESOLVER.resolve(yaml.ScalarNode, value, (True, False)))  # type: ignore[no-untyped-call]
