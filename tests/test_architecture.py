"""The module map of ARCHITECTURE.md, checked: imports point one way, only the modules that run
trials import Ray, and no module grows past about 500 lines."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("prune_core", "prune_sweep")
RAY_MODULES = {"prune_sweep.trial", "prune_sweep.driver", "prune_sweep.bases", "prune_sweep.latency_pass",
               "prune_sweep.trackers", "prune_sweep.moasha"}  # run trials on Ray; nothing else may import it
MAX_LINES = 520


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules():
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def runtime_imports(path: Path, top_level_only: bool = False):
    """Absolute names a module imports when it runs, except under ``if TYPE_CHECKING``; at any
    depth, or only those run on import (not inside a function) with ``top_level_only``."""
    tree = ast.parse(path.read_text())
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
               for n in ast.walk(node)}
    if top_level_only:
        skipped |= {id(n) for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                    for n in ast.walk(node)}
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1])
                yield f"{base}.{node.module}" if node.module else base
                if not node.module:  # from . import a, b: each is a module
                    yield from (f"{base}.{a.name}" for a in node.names)
            else:
                yield node.module


def internal_graph():
    mods = modules()
    graph = {}
    for name, path in mods.items():
        graph[name] = {dep for dep in runtime_imports(path) if dep in mods and dep != name}
    return graph


def test_prune_core_has_no_import_circle():
    graph = {k: v for k, v in internal_graph().items() if k.startswith("prune_core")}
    state = {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_imports_point_one_way():
    for name, path in modules().items():
        deps = set(runtime_imports(path))
        if name.startswith("prune_core"):
            assert not {d for d in deps if d.split(".")[0] in ("prune_sweep", "ray", "launch", "analyze")}, name
        on_import = set(runtime_imports(path, top_level_only=True))
        if name not in RAY_MODULES:  # launch_cli imports Ray inside the function that starts a sweep
            assert not {d for d in on_import if d.split(".")[0] == "ray"}, f"{name} imports ray"


@pytest.mark.parametrize("path", sorted([*(ROOT / "prune_core").rglob("*.py"), *(ROOT / "prune_sweep").rglob("*.py"),
                                         ROOT / "launch.py", ROOT / "analyze.py"]), ids=lambda p: p.name)
def test_no_module_is_too_long_to_read(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{path.name}: split it by concern"
