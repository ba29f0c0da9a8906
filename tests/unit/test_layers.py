"""The layering rule of `balancer/`, checked on the source (every import statement, including
those inside functions and under `if TYPE_CHECKING:`).

- The pure packages (`balancer.config`, `balancer.balancing`, `balancer.http`) import nothing
  from the I/O side (`balancer.proxy`, `balancer.upstream`, `balancer.ops`, `balancer.metrics`)
  and none of the modules that reach the clock, the network, the OS or randomness. Time and
  randomness come in as arguments (`now`, a random source), as the STYLE asks.
- `balancer.proxy` and `balancer.upstream` (the data path) never import `balancer.ops`, and
  `balancer.upstream` (the backend side) never imports `balancer.proxy` (the client side).
- No two modules of `balancer` import each other, directly or round a longer loop, at any level
  (a type-only import is a dependency too: it is what a reader must hold in mind).
- No function over 40 lines without a reason in its docstring.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "balancer"
PURE = ("balancer.config", "balancer.balancing", "balancer.http")
IO_SIDE = ("balancer.proxy", "balancer.upstream", "balancer.ops", "balancer.metrics",
           "balancer.cli")
FORBIDDEN_IN_PURE = ("asyncio", "aiohttp", "socket", "time", "random", "os", "subprocess",
                     "threading", "signal", "select", "selectors", "uvloop", "psutil",
                     "prometheus_client", "dns", "pathlib", "shutil", "tempfile", "io")
DATA_PATH = ("balancer.proxy", "balancer.upstream")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    name = module_name(path)
    return name if path.name == "__init__.py" else name.rsplit(".", 1)[0]


def imports(source: str, package: str) -> set[str]:
    """Every module an import statement in `source` names, relative ones resolved against
    `package`; imports inside functions and under `if TYPE_CHECKING:` count too."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = parts[: len(parts) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def imports_of(name: str) -> set[str]:
    return imports(MODULES[name].read_text(), package_of(MODULES[name]))


def under(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_the_layout_has_the_packages_the_rule_names() -> None:
    for package in (*PURE, *IO_SIDE):
        assert package in MODULES, package


@pytest.mark.parametrize("name", [n for n in MODULES if under(n, PURE)])
def test_pure_modules_import_no_io(name: str) -> None:
    bad = sorted(i for i in imports_of(name)
                 if under(i, IO_SIDE) or i.split(".")[0] in FORBIDDEN_IN_PURE)
    assert not bad, f"{name} (pure) imports {bad}"


@pytest.mark.parametrize("name", [n for n in MODULES if under(n, DATA_PATH)])
def test_the_data_path_never_imports_operations(name: str) -> None:
    bad = sorted(i for i in imports_of(name) if under(i, ("balancer.ops",)))
    assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("name", [n for n in MODULES if under(n, ("balancer.upstream",))])
def test_the_backend_side_never_imports_the_client_side(name: str) -> None:
    """`balancer.upstream` talks to backends; what a client sees is `balancer.proxy`'s."""
    bad = sorted(i for i in imports_of(name) if under(i, ("balancer.proxy",)))
    assert not bad, f"{name} imports {bad}"


def test_the_checker_sees_every_kind_of_import() -> None:
    """The rule is only as good as `imports`: deferred, TYPE_CHECKING and relative imports."""
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import os.path\n"
              "def f() -> None:\n    from ..ops import server\n    from . import costs\n")
    seen = imports(source, "balancer.balancing")
    assert {"os.path", "balancer.ops.server", "balancer.balancing.costs"} <= seen


def module_graph() -> dict[str, set[str]]:
    """Each module of `balancer` and the modules of `balancer` it imports."""
    return {name: {i for i in imports_of(name) if i in MODULES and i != name} for name in MODULES}


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted: every
    module in one reaches every other one through imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_the_cycle_finder_sees_a_long_loop_and_nothing_else() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert import_cycles(graph) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_modules() -> None:
    """Counting imports inside functions and under TYPE_CHECKING: a cycle there still means
    neither module can be read (or tested, or moved) without the other."""
    graph = module_graph()
    cycles = import_cycles(graph)
    edges = [f"{a} -> {b}" for cycle in cycles for a in cycle for b in sorted(graph[a])
             if b in cycle]
    assert not cycles, "modules that import each other:\n" + "\n".join(edges)


LONG = 40  # lines, decorators and docstring included


def long_functions(source: str, where: str) -> list[str]:
    """Functions over LONG lines whose docstring does not say why (a line "Long because ...")."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1 if node.end_lineno else 0
            if length > LONG and "Long because" not in (ast.get_docstring(node) or ""):
                found.append(f"{where}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_the_length_rule_sees_a_long_function_and_accepts_a_reason() -> None:
    body = "".join(f"    x = {i}\n" for i in range(LONG))
    assert long_functions(f"def f() -> None:\n{body}", "m") == [f"m:1 f ({LONG + 1} lines)"]
    reason = '    """Long because it is a table."""\n'
    assert long_functions(f"async def f() -> None:\n{reason}{body}", "m") == []
    assert long_functions(f"def f() -> None:\n{body[:-10]}\n", "m") == []


def test_no_function_is_over_40_lines_without_a_reason() -> None:
    """The STYLE's rule: anything over 40 lines needs a reason, written where it is read."""
    found = [f for name, path in MODULES.items() for f in long_functions(path.read_text(), name)]
    assert not found, "split these, or say why in the docstring:\n" + "\n".join(found)


def package_of_module(name: str) -> str:
    """`balancer.config.model` -> `balancer.config`; a top-level module is its own unit."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or MODULES[name].name == "__init__.py" \
        else name


def test_no_import_cycle_between_packages() -> None:
    """The packages are layers: config and http at the bottom, balancing on them, upstream and
    proxy on those, ops on top. A cycle between two packages (each importing a module of the
    other) means neither layer can be read alone, even when no two modules form a cycle."""
    graph: dict[str, set[str]] = {}
    for name, imported in module_graph().items():
        mine = package_of_module(name)
        graph.setdefault(mine, set()).update(
            package_of_module(i) for i in imported if package_of_module(i) != mine)
    assert not import_cycles(graph), import_cycles(graph)


# -- the tests' own layers ------------------------------------------------------------------------

TESTS = PACKAGE.parent / "tests"
SOCKET_FIXTURES = {"backend_factory", "balancer_factory", "raw_backend_factory", "proxied",
                   "session", "start_backend", "servers", "balancer_process", "harness"}


def layer_offences(source: str, layer: str) -> list[str]:
    """What a test module does that its layer forbids: unit tests open no socket and start no
    process (no such import, no fixture that does); integration tests run the balancer in the
    test's own process (never `balancer_process` or `python -m balancer`)."""
    tree = ast.parse(source)
    imported = imports(source, "tests")
    fixtures = {arg.arg for node in ast.walk(tree)
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and node.name.startswith("test_") for arg in node.args.args}
    runs_balancer = any(isinstance(node, ast.Constant) and node.value == "balancer"
                        and isinstance(parent, ast.List | ast.Tuple)
                        and any(isinstance(e, ast.Constant) and e.value == "-m"
                                for e in parent.elts)
                        for parent in ast.walk(tree) for node in ast.iter_child_nodes(parent))
    found = []
    if layer == "unit":
        found += sorted(i for i in imported if i.split(".")[0] in ("subprocess", "socket"))
        found += sorted(fixtures & SOCKET_FIXTURES)
    if layer in ("unit", "integration"):
        found += ["balancer_process"] if "balancer_process" in fixtures else []
        found += ["python -m balancer"] if runs_balancer else []
    return found




def test_the_layer_check_sees_sockets_processes_and_fixtures() -> None:
    assert layer_offences("import subprocess\n", "unit") == ["subprocess"]
    assert layer_offences("async def test_x(session): pass\n", "unit") == ["session"]
    spawn = 'def test_x(balancer_process): run([sys.executable, "-m", "balancer"])\n'
    assert layer_offences(spawn, "integration") == ["balancer_process", "python -m balancer"]
    assert layer_offences(spawn, "e2e") == []


@pytest.mark.parametrize("path", sorted([*(TESTS / "unit").glob("test_*.py"),
                                         *(TESTS / "integration").glob("test_*.py")]),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_test_module_keeps_to_its_layer(path: Path) -> None:
    offences = layer_offences(path.read_text(), path.parent.name)
    assert not offences, f"{path.parent.name}/{path.name}: {offences} (move it to tests/e2e)"
