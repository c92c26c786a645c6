"""The import graph of the package and of the benchmarks: no module imports, directly or through others, a
module that imports it back (a cycle works only as long as the names it reads were already bound, and breaks
when a module moves an import to the top or another entry point is imported first), and jaxmlp reads only
jax's public API (``jax._src`` changes without notice).

Read from the source with ``ast``, nothing imported: every import counts, at the top of a module or inside a
function (a function-level import closes a cycle as soon as the function runs).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"jaxmlp": ROOT / "src" / "jaxmlp", "benchmarks": ROOT / "benchmarks"}


def module_files() -> dict[str, Path]:
    """``{dotted module name: file}`` for every module of :data:`PACKAGES` (``__init__.py`` is the package)."""
    modules = {}
    for package, directory in PACKAGES.items():
        for path in sorted(directory.glob("*.py")):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


def imported_names(module: str, path: Path) -> list[tuple[str, int]]:
    """``(dotted name, line)`` of everything ``module`` imports, anywhere in its source: ``import a.b`` gives
    ``a.b``; ``from a import b`` gives ``a.b`` (``a.b`` may be a module or a name in ``a``); relative imports
    are resolved against the module's package."""
    is_package = path.stem == "__init__"
    package = module if is_package else module.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            names += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return names


def import_graph() -> dict[str, dict[str, int]]:
    """``{module: {imported module: line}}`` among the modules of :data:`PACKAGES`: each imported name resolved
    to the longest module it names (``from jaxmlp import fit`` is an import of ``jaxmlp``, the package;
    ``from jaxmlp import optim`` one of ``jaxmlp.optim``)."""
    files = module_files()
    graph = {}
    for module, path in files.items():
        edges = {}
        for name, line in imported_names(module, path):
            parts = name.split(".")
            target = next((".".join(parts[:n]) for n in range(len(parts), 0, -1) if ".".join(parts[:n]) in files),
                          None)
            if target is not None and target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm): each holds a cycle."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def describe(component: list[str], graph) -> str:
    members = set(component)
    return "; ".join(f"{a} imports {b} (line {line})" for a in component for b, line in graph[a].items()
                     if b in members)


@pytest.mark.parametrize("package", list(PACKAGES))
def test_no_import_cycle(package):
    graph = import_graph()
    assert any(m == package or m.startswith(package + ".") for m in graph), f"no module of {package} found"
    inside = [c for c in cycles(graph) if any(m == package or m.startswith(package + ".") for m in c)]
    assert not inside, "import cycles: " + " | ".join(describe(c, graph) for c in inside)


def test_the_cycle_finder_finds_a_cycle():
    """Guards the test above against a finder that finds nothing."""
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}, "e": {}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert describe(["a", "b", "c"], graph) == "a imports b (line 1); b imports c (line 2); c imports a (line 3)"
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_the_graph_sees_function_level_and_from_imports():
    """The graph has the edges it must: ``from jaxmlp import evaluation, loop`` at the top of train.py, a
    function-level ``from jaxmlp.report import format_table`` in cli.py, ``from jaxmlp import fit`` as the package."""
    graph = import_graph()
    assert {"jaxmlp.evaluation", "jaxmlp.loop"} <= set(graph["jaxmlp.train"])
    assert "jaxmlp.report" in graph["jaxmlp.cli"]
    assert "jaxmlp.train" in graph["jaxmlp"]


def test_jaxmlp_does_not_import_jax_private_modules():
    offenders = []
    for module, path in module_files().items():
        if not module.startswith("jaxmlp"):
            continue
        for name, line in imported_names(module, path):
            if name == "jax._src" or name.startswith("jax._src."):
                offenders.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not offenders, offenders
