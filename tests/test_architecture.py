"""The module map of ARCHITECTURE.md, checked: imports point one way and in no circle, no module
imports another's private names, launchers use only prune_core's declared API, only the modules
that run trials import Ray, and no module grows past about 500 lines."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("prune_core", "prune_sweep")
RAY_MODULES = {"prune_sweep.trial", "prune_sweep.driver", "prune_sweep.bases", "prune_sweep.latency_pass",
               "prune_sweep.trackers", "prune_sweep.moasha", "prune_sweep.placement"}  # run trials on Ray; nothing else may import it
MAX_LINES = 520
# every module these tests read: the two packages, the benchmarks and the entry scripts
SOURCES = sorted([*(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")), *(ROOT / "bench").glob("*.py"),
                  ROOT / "launch.py", ROOT / "analyze.py"])
LAUNCHERS = sorted([*(ROOT / "prune_sweep").rglob("*.py"), ROOT / "launch.py", ROOT / "analyze.py"])


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules():
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def package_of(path: Path):
    name = module_name(path)
    return name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]


def imports(path: Path):
    """(module, names imported from it) of every import statement of a module, at any depth and
    under ``if TYPE_CHECKING`` too; ``import a.b`` gives (``a.b``, ())."""
    package = package_of(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from ((a.name, ()) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            module = ".".join(p for p in (base, node.module) if p)
            yield module, tuple(a.name for a in node.names)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def runtime_imports(path: Path, top_level_only: bool = False):
    """Absolute names a module imports when it runs, except under ``if TYPE_CHECKING``; at any
    depth, or only those run on import (not inside a function) with ``top_level_only``."""
    tree = ast.parse(path.read_text())
    package = package_of(path)
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


@pytest.mark.parametrize("package", PACKAGES)
def test_package_has_no_import_circle(package):
    graph = {k: v for k, v in internal_graph().items() if k.split(".")[0] == package}
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


def private_imports(path: Path):
    """Private names (``_x``) a module imports from another module, as ``module._x``; a private
    module may be imported from within its own package only."""
    importer = module_name(path)

    def inside(package: str) -> bool:
        return importer == package or importer.startswith(package + ".")

    for module, names in imports(path):
        parts = module.split(".")
        for i, part in enumerate(parts):  # a private module: only its package's modules may import it
            if is_private(part) and not inside(".".join(parts[:i])):
                yield module
        for name in filter(is_private, names):
            if (ROOT / module.replace(".", "/") / f"{name}.py").exists():  # from package import _module
                if not inside(module):
                    yield f"{module}.{name}"
            elif module != importer:
                yield f"{module}.{name}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_no_module_imports_another_modules_private_names(path):
    found = list(private_imports(path))
    assert not found, f"{module_name(path)} imports {', '.join(found)}: make the name public where it lives, or move it"


def undeclared_prune_core_imports(path: Path):
    """What a launcher module imports of prune_core beyond ``prune_core/__init__.py``'s
    declaration: the names of ``_PUBLIC``, and the public names of the ``LAUNCHER_MODULES``."""
    import prune_core

    allowed_modules = {f"prune_core.{m}" for m in prune_core.LAUNCHER_MODULES}
    for module, names in imports(path):
        if module == "prune_core":
            yield from (f"prune_core.{n}" for n in names
                        if n not in prune_core._PUBLIC and n not in prune_core.LAUNCHER_MODULES)
        elif module.startswith("prune_core."):
            if module not in allowed_modules:
                yield module
            yield from (f"{module}.{n}" for n in names if n.startswith("_"))


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: module_name(p))
def test_launchers_use_only_the_declared_prune_core_api(path):
    found = list(undeclared_prune_core_imports(path))
    assert not found, (f"{module_name(path)} imports {', '.join(found)}, past what prune_core/__init__.py "
                       "declares (_PUBLIC, LAUNCHER_MODULES): declare it there (and in ARCHITECTURE.md, "
                       "contract 2) or do without")
