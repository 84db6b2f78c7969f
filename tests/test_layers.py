"""The code's layers import downward only: front ends (``side_audit``) over the app (``side_gui``)
over the engine (``side_engine``), and no module of the three in an import circle with another —
lazy imports inside functions included (they hide a circle from Python, not from a reader), imports
under ``TYPE_CHECKING`` aside (they never run). ``docs/architecture.md`` draws the layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("side_audit", "side_engine", "side_gui")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _type_checking_only(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        test = getattr(node, "test", None) if isinstance(node, ast.If) else None
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
                (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"):
            skipped.update(id(n) for n in ast.walk(node))
    return skipped


def imported_names(name: str) -> set[str]:
    """Every module name ``name`` imports, absolute, third-party ones included."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = _type_checking_only(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            out.update(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names)
    return out


def project_imports(name: str) -> set[str]:
    """The project's modules ``name`` imports (a name inside a module counts as that module)."""
    found = set()
    for target in imported_names(name):
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


GRAPH = {name: project_imports(name) for name in MODULES}


def test_the_reader_finds_a_circle_where_there_is_one():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
    assert "side_engine.stages.sampling" in GRAPH["side_engine.pipeline"]  # relative imports resolved


def test_no_module_is_in_an_import_circle():
    assert circles(GRAPH) == []


@pytest.mark.parametrize(("lower", "never"), [
    ("side_engine", ("side_gui", "side_audit", "PySide6", "pyqtgraph", "superqt")),  # usable without Qt
    ("side_gui", ("side_audit",)),  # the app never drives the CLI's code
])
def test_a_layer_never_imports_the_layers_above_it(lower, never):
    for name in MODULES:
        if name.split(".")[0] == lower:
            above = sorted(n for n in imported_names(name) if n.split(".")[0] in never)
            assert not above, (name, above)


def _stage_modules() -> list[str]:
    return [n for n in MODULES if n.startswith("side_engine.stages.")]


def test_no_stage_touches_the_database_except_through_the_store():
    """Stages write through ``ctx.store`` (``side_engine.run_store``): no database module, no SQL."""
    sql = ("select ", "insert ", "update ", "delete ", "create table")
    for name in _stage_modules():
        assert not {"side_engine.storage", "sqlite3", "sqlite_utils"} & imported_names(name), name
        tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert node.attr != "db", (name, node.lineno)
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert not any(word in node.value.lower() for word in sql if node.value.lower().startswith(word)), \
                    (name, node.lineno)


def test_nothing_outside_the_sampler_sets_an_attribute_of_it():
    """A sampler takes its guidance plan with each ``sample`` call and returns its output: no
    caller configures it by setting attributes (nor reads its results back from them)."""
    for name, path in MODULES.items():
        if name == "side_engine.sampler":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
                if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else []
            for target in targets:
                if isinstance(target, ast.Attribute):
                    owner = ast.unparse(target.value)
                    assert "sampler" not in owner.split(".")[-1], (name, node.lineno, ast.unparse(target))
