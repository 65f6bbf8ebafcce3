"""No import cycles among the core's modules.

A cycle is a design smell even when it works: two modules that import each other are one
module in two files, and which of them may be imported first depends on who calls. A
function-level import hides a cycle from the interpreter, not from the reader, so it counts
here too. The graph is read from the source with ``ast`` (nothing is imported), which also
keeps this test fast and independent of optional dependencies.

Rules for an edge ``A -> B``:

- every ``import`` and ``from ... import`` anywhere in ``A`` (module level, functions,
  classes), relative imports resolved against ``A``'s package;
- ``from fulmen.x import y`` points at ``fulmen.x.y`` when that is a module, else at
  ``fulmen.x``; ``import fulmen.x.y`` points at the deepest module of the dotted name;
- imports under ``if TYPE_CHECKING:`` are left out: they never run, and they are the
  standard way of naming a type without importing its module.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

SOURCE_ROOT = Path(__file__).resolve().parents[2] / "packages" / "core" / "src"
PACKAGE = "fulmen"

# Import edges known to close a cycle, each with why it is tolerated and who removes it.
# An entry that no longer exists fails ``test_allowed_cycle_edges_still_exist``: delete it.
ALLOWED_CYCLE_EDGES: Set[Tuple[str, str]] = {
    # (importer, imported): reason. Empty: the core has no known cycle.
}

# The cycles issue 11 cut; asserted on their own so a regression names the pair at once.
CUT_PAIRS = [
    ("fulmen.fabric.connector", "fulmen.plugins.config"),
    ("fulmen.fabric.connector", "fulmen.plugins.discovery"),
    ("fulmen.plugins.config", "fulmen.plugins.discovery"),
    ("fulmen.strategies.ddp", "fulmen.strategies.launchers.multiprocessing"),
    ("fulmen.strategies.ddp", "fulmen.strategies.launchers.subprocess_script"),
    ("fulmen.strategies.ddp", "fulmen.strategies.launchers.guards"),
    ("fulmen.strategies.ddp", "fulmen.strategies.launchers"),
]


# ---------------------------------------------------------------------------- the graph


def module_files(root: Path = SOURCE_ROOT) -> Dict[str, Path]:
    """``{"fulmen.plugins.config": path, ...}`` for every module of the package."""
    modules = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _type_checking_nodes(tree: ast.AST) -> Set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``) bodies."""
    skipped: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                for statement in node.body:
                    skipped.update(id(child) for child in ast.walk(statement))
    return skipped


def imported_names(module: str, path: Path) -> Iterator[Tuple[str, Optional[str]]]:
    """``(dotted module, imported attribute or None)`` for each import in ``module``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = _type_checking_nodes(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                yield base, alias.name


def build_graph(modules: Dict[str, Path]) -> Dict[str, Set[str]]:
    def deepest(name: str) -> Optional[str]:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: Dict[str, Set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for base, attr in imported_names(module, path):
            if base.split(".")[0] != PACKAGE:
                continue
            submodule = f"{base}.{attr}" if attr else None
            target = submodule if submodule in modules else deepest(base)
            if target is not None and target != module:
                targets.add(target)
        graph[module] = targets
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
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


def describe(component: List[str], graph: Dict[str, Set[str]]) -> str:
    members = set(component)
    edges = [f"    {a} -> {b}" for a in component for b in sorted(graph[a]) if b in members]
    return f"  cycle of {len(component)} modules:\n" + "\n".join(edges)


def _graph() -> Dict[str, Set[str]]:
    return build_graph(module_files())


# ---------------------------------------------------------------------------- the tests


def test_the_core_has_no_import_cycle_except_the_allowed_edges():
    graph = _graph()
    pruned = {a: {b for b in targets if (a, b) not in ALLOWED_CYCLE_EDGES} for a, targets in graph.items()}
    found = cycles(pruned)
    report = "\n".join(describe(component, pruned) for component in found)
    print(report or "no import cycles")
    assert not found, (
        "import cycles among fulmen's modules (function-level imports included):\n" + report
        + "\nMove the shared piece into a module both can import, or pass it in."
    )


def test_the_cycles_cut_in_issue_11_stay_cut():
    graph = _graph()
    for a, b in CUT_PAIRS:
        assert not (b in graph[a] and a in graph[b]), f"{a} and {b} import each other again"
    component_of = {m: tuple(c) for c in cycles(graph) for m in c}
    for a, b in CUT_PAIRS:
        assert component_of.get(a, (a,)) != component_of.get(b, (b,)), f"{a} and {b} are on one import cycle"


def test_allowed_cycle_edges_still_exist():
    graph = _graph()
    stale = sorted((a, b) for a, b in ALLOWED_CYCLE_EDGES if b not in graph.get(a, ()))
    assert not stale, f"these allowed edges are gone; delete them from ALLOWED_CYCLE_EDGES: {stale}"


# ---------------------------------------------------------------------------- the checker itself


def _write(root: Path, files: Dict[str, str]) -> Dict[str, Path]:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return module_files(root)


def test_checker_sees_function_level_relative_and_submodule_imports(tmp_path):
    modules = _write(tmp_path, {
        "fulmen/__init__.py": "",
        "fulmen/a.py": "def f():\n    from fulmen.pkg import b\n",
        "fulmen/pkg/__init__.py": "",
        "fulmen/pkg/b.py": "from . import c\n",
        "fulmen/pkg/c.py": "import fulmen.a\n",
    })
    graph = build_graph(modules)
    assert graph["fulmen.a"] == {"fulmen.pkg.b"}  # a submodule, not the package
    assert graph["fulmen.pkg.b"] == {"fulmen.pkg.c"}
    assert cycles(graph) == [["fulmen.a", "fulmen.pkg.b", "fulmen.pkg.c"]]


def test_checker_ignores_type_checking_imports_and_attributes(tmp_path):
    modules = _write(tmp_path, {
        "fulmen/__init__.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fulmen.a import X\n",
        "fulmen/a.py": "from fulmen import __version__\nX = 1\n",
    })
    graph = build_graph(modules)
    assert graph == {"fulmen": set(), "fulmen.a": {"fulmen"}}
    assert cycles(graph) == []
