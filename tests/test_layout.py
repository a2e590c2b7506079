"""The package layout keeps its promises: no import cycles among the project's modules, and the
web blueprints never import the app factory that registers them.

Every import statement that runs counts, deferred ones inside functions included: a cycle hidden
behind a function-level import is still a cycle (it only moves the failure from import time to
call time), and the point of the layout is that each folder can be read without the ones above
it. Imports under `if TYPE_CHECKING:` never run and name types only; they are left out.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("embedder", "trainer", "identify", "workers")
FACTORY = "identify.app"
# What each folder must not import, as its __init__.py docstring says: lower layers never
# reach up to the ones that serve them.
SERVERS = ("identify.web", "identify.cli", "workers")
FORBIDDEN = {
    "embedder": ("trainer", "identify", "workers"),
    "trainer": ("identify", "workers"),
    # The database is the source of truth and the index is derived from it: search reads the
    # gallery, the gallery never reaches into search (enrolment takes its encoder as a given).
    "identify.gallery": (*SERVERS, "identify.services", "identify.search"),
    "identify.search": (*SERVERS, "identify.services"),
    "identify.services": (*SERVERS, FACTORY),
    "identify.settings": ("identify", "trainer", "workers"),
    # The web app hands jobs to the workers through the Celery app it is given, by task name.
    "identify.web": ("identify.cli", "workers"),
    "workers": ("identify.cli",),
}


def _modules() -> dict[str, Path]:
    """Every module of the project's packages, by dotted name (a package by its __init__)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of ``tree`` except the bodies of `if TYPE_CHECKING:` blocks."""
    for node in ast.iter_child_nodes(tree):
        test = node.test if isinstance(node, ast.If) else None
        if isinstance(test, ast.Name | ast.Attribute) and ast.unparse(test).endswith(
            "TYPE_CHECKING"
        ):
            yield from (n for child in node.orelse for n in [child, *_runtime_nodes(child)])
            continue
        yield node
        yield from _runtime_nodes(node)


def _imported(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The project modules that ``name`` imports, wherever the import statement is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from x import y` imports the submodule x.y when there is one, else x itself.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a non-module attribute
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: set(_imported(name, path, modules)) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
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
    return found


def test_the_checker_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_the_graph_sees_deferred_and_submodule_imports(tmp_path: Path) -> None:
    imported = _graph()["workers.cli"]
    assert "workers.celery_app" in imported  # `from workers.celery_app import` in a function
    assert "workers.enrolment" in imported  # `from workers import enrolment`, a submodule
    deferred = tmp_path / "deferred.py"
    deferred.write_text("def run():\n    import workers.tasks\n")
    assert set(_imported("workers.deferred", deferred, _modules())) == {"workers.tasks"}


def test_no_import_cycles() -> None:
    cycles = _cycles(_graph())
    assert not cycles, "modules that import each other in a circle: " + "; ".join(
        " <-> ".join(c) for c in cycles
    )


def test_web_modules_do_not_import_the_app_factory() -> None:
    graph = _graph()
    offenders = sorted(
        name
        for name, imported in graph.items()
        if name.startswith("identify.web.") and name != FACTORY and FACTORY in imported
    )
    assert not offenders, f"{offenders} import {FACTORY}: take services from the app instead"


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_folders_import_only_what_their_docstrings_allow() -> None:
    offenders = sorted(
        f"{name} -> {target}"
        for name, imported in _graph().items()
        for folder, forbidden in FORBIDDEN.items()
        if _within(name, folder)
        for target in imported
        if any(_within(target, prefix) for prefix in forbidden)
    )
    assert not offenders, f"imports across the layers: {offenders}"
