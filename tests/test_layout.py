"""The shape of the code: the core's modules import each other top-down (no circle at run time,
function-local imports included), and every pack's own code uses only the public API (``adapt``
names and ``adapt.testing``), never another pack."""

from __future__ import annotations

import ast
from pathlib import Path

import adapt
import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "core" / "adapt"
PACKS = {p.name: p for p in [*sorted((ROOT / "plugins").glob("*/adapt_*")),
                              ROOT / "examples" / "adapt-example-pack" / "adapt_example_pack"] if p.is_dir()}


def _runtime_imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement, at any depth, except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _module_name(path: Path) -> str:
    parts = path.relative_to(CORE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_graph() -> dict[str, set[str]]:
    """Core module -> the core modules it imports when it runs."""
    modules = {_module_name(p): p for p in CORE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in _runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in modules)
            elif node.module == "adapt":  # `from adapt import x`: a submodule, else a name of the package
                deps.update(f"adapt.{a.name}" if f"adapt.{a.name}" in modules else "adapt" for a in node.names)
            elif node.module in modules:
                deps.add(node.module)
        graph[name] = deps - {name}
    return graph


def test_the_core_has_no_import_circle() -> None:
    graph = core_graph()
    done: set[str] = set()

    def walk(node: str, path: list[str]) -> None:
        if node in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(node):], node]))
        if node in done:
            return
        for dep in sorted(graph[node]):
            walk(dep, [*path, node])
        done.add(node)

    for module in sorted(graph):
        walk(module, [])
    inside = [m for m, deps in graph.items() if "adapt" in deps and m != "adapt"]
    assert not inside, f"core modules importing the package's public names (adapt/__init__) instead of modules: {inside}"


def test_the_core_reads_top_down() -> None:
    """cli -> run lifecycle -> resolution -> registry -> api / errors: lower layers never import higher ones."""
    graph = core_graph()
    layers = [["adapt.cli"], ["adapt.lifecycle", "adapt.plan", "adapt.confdoc", "adapt.migrate"], ["adapt.resolve"],
              ["adapt.run"], ["adapt.models", "adapt.folder", "adapt.logs", "adapt.report"], ["adapt.config"],
              ["adapt.plugins"], ["adapt.hookspecs", "adapt.api", "adapt.data"], ["adapt.errors"]]
    level = {module: i for i, names in enumerate(layers) for module in names}
    upward = [(m, d) for m, deps in graph.items() if m in level for d in deps if d in level and level[d] < level[m]]
    assert not upward, f"lower modules importing higher ones: {upward}"
    assert set(level) <= set(graph), sorted(set(level) - set(graph))


@pytest.mark.parametrize("pack", sorted(PACKS))
def test_each_pack_uses_only_the_public_api(pack: str) -> None:
    public = set(adapt.__all__)
    sources = {p: p.read_text(encoding="utf-8") for p in PACKS[pack].rglob("*.py")}
    wrong = []
    for path, text in sources.items():
        for node in _runtime_imports(ast.parse(text)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for module in names:
                top = module.split(".")[0]
                if module.startswith("adapt.") and module != "adapt.testing" and not module.startswith("adapt.testing."):
                    wrong.append(f"{path.name}:{node.lineno} imports {module} (core internals)")
                elif top.startswith("adapt_") and top != pack:
                    wrong.append(f"{path.name}:{node.lineno} imports {module} (another pack)")
            if isinstance(node, ast.ImportFrom) and node.module == "adapt":
                wrong += [f"{path.name}:{node.lineno} imports adapt.{a.name} (not a public name)"
                          for a in node.names if a.name not in public]
    assert not wrong, wrong
