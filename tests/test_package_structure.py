"""The shape of the package, checked from source alone (issue #10).

Every check parses ``fedsynth/**/*.py`` with :mod:`ast` and imports no
fedsynth module, so the whole file runs in well under a second. Imports made
through strings (``importlib.import_module("fedsynth.x")``) are out of scope.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "fedsynth"

#: The layers each layer may import besides itself.
LAYERS = {
    "root": set(),
    "errors": set(),
    "data": {"errors"},
    "federation": {"errors", "data"},
    "privacy": {"errors", "data", "federation"},
    "generators": {"errors", "data", "federation", "privacy"},
    "evaluation": {"errors", "data"},
    "workflows": {"errors", "data", "federation", "privacy", "generators", "evaluation"},
    "cli": {"workflows"},
}
#: What only ``generators/protocol.py`` may touch.
NOISE_MODULES = {"federation.secure_sum", "federation.session"}
NOISE_CALL, NOISE_KEYWORD = "csprng_normal", "noise_std"


@cache
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def modules(root: Path, package: str) -> dict[str, Path]:
    """Map each module of a package to its file.

    Parameters
    ----------
    root
        The directory that holds the package directory.
    package
        The package's name (and its directory's).

    Returns
    -------
    Dotted module names (a package is its ``__init__.py``) to paths.
    """
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def layer_of(module: str) -> str:
    """The layer of a dotted module name: its first component under the package."""
    parts = module.split(".")
    if len(parts) == 1:
        return "root"
    return "cli" if parts[1] == "__main__" else parts[1]


@cache
def imports(root: Path, package: str) -> tuple[tuple[str, int, str, str], ...]:
    """Every import of a package module by a package module, functions' included.

    Returns
    -------
    (path relative to root, line, importing module, imported module), the imported
    module resolved to a module of ``modules(root, package)`` where one fits
    (``from p import a`` is ``p.a`` if that is a module, else ``p``); an import
    of a module that does not exist is cut back no further than ``package.layer``,
    so it keeps its layer.
    """
    known, found = modules(root, package), []

    def resolve(name: str) -> str:
        while name not in known and name.count(".") > 1:
            name = name.rsplit(".", 1)[0]
        return name

    for importer, path in known.items():
        here = importer.split(".") if path.name == "__init__.py" else importer.split(".")[:-1]
        for node in ast.walk(_parse(path)):
            if isinstance(node, ast.Import):
                targets = [resolve(alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1] if node.level else [])
                base = ".".join(filter(None, [base, node.module]))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else resolve(base) for a in node.names]
            else:
                continue
            for target in dict.fromkeys(targets):
                if target == package or target.startswith(package + "."):
                    found.append((str(path.relative_to(root)), node.lineno, importer, target))
    return tuple(sorted(found))


def layer_violations(root: Path, package: str) -> list[str]:
    """Imports that cross the layers the wrong way, one line each (see ``LAYERS``)."""
    found = []
    for where, line, importer, target in imports(root, package):
        mine, theirs = layer_of(importer), layer_of(target)
        if theirs != mine and theirs not in LAYERS.get(mine, set()):
            found.append(f"{where}:{line} imports {target} (layer {mine} may not import layer {theirs})")
    return found


def import_cycles(root: Path, package: str) -> list[tuple[list[str], list[str]]]:
    """Cycles of the module import graph, one per strongly connected component.

    Returns
    -------
    Per component, its modules (sorted) and a shortest cycle through the first of
    them, as a path that starts and ends at that module.
    """
    graph: dict[str, set[str]] = {m: set() for m in modules(root, package)}
    for _, _, importer, target in imports(root, package):
        if target in graph and target != importer:
            graph[importer].add(target)
    # Tarjan's strongly connected components
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
            if len(component) > 1:
                components.append(set(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    cycles = []
    for component in components:  # breadth first from the first module back round to it
        start = min(component)
        queue, seen = [[start]], {start}
        while start not in graph[(path := queue.pop(0))[-1]]:
            fresh = sorted(graph[path[-1]] & component - seen)
            seen.update(fresh)
            queue += [path + [w] for w in fresh]
        cycles.append((sorted(component), path + [start]))
    return sorted(cycles)


def noise_touches(root: Path, package: str) -> list[str]:
    """Generator modules, ``protocol`` aside, that reach for the noise or the session."""
    found = []
    noise = {f"{package}.{m}" for m in NOISE_MODULES}
    protocol = f"{package}.generators.protocol"
    for where, line, importer, target in imports(root, package):
        if layer_of(importer) == "generators" and importer != protocol and target in noise:
            found.append(f"{where}:{line} imports {target}")
    for module, path in modules(root, package).items():
        if layer_of(module) != "generators" or module == protocol:
            continue
        where = path.relative_to(root)
        for node in ast.walk(_parse(path)):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", getattr(node.func, "attr", None))
                if name == NOISE_CALL:
                    found.append(f"{where}:{node.lineno} calls {NOISE_CALL}")
            elif isinstance(node, ast.keyword) and node.arg == NOISE_KEYWORD:
                found.append(f"{where}:{node.lineno} passes {NOISE_KEYWORD}=")
    return found


def public_definitions(root: Path, package: str) -> list[tuple[str, str]]:
    """(module, name) of every top-level public function and class."""
    return [
        (module, node.name)
        for module, path in modules(root, package).items()
        for node in _parse(path).body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_")
    ]


def _fail_listing(what: str, found: list) -> None:
    if found:
        pytest.fail(f"{len(found)} {what}:\n" + "\n".join(map(str, found)), pytrace=False)


PUBLIC = public_definitions(ROOT, PACKAGE)


def test_every_module_is_in_a_layer():
    _fail_listing("modules outside the layers", [m for m in modules(ROOT, PACKAGE) if layer_of(m) not in LAYERS])


def test_layers():
    _fail_listing("imports across layers", layer_violations(ROOT, PACKAGE))


def test_no_import_cycles():
    cycles = import_cycles(ROOT, PACKAGE)
    _fail_listing("import cycles", [f"{', '.join(ms)} (e.g. {' -> '.join(cycle)})" for ms, cycle in cycles])


def test_generators_leave_noise_to_protocol():
    _fail_listing("noise or session uses outside generators/protocol.py", noise_touches(ROOT, PACKAGE))


@pytest.mark.parametrize(("module", "name"), PUBLIC, ids=[f"{m}:{n}" for m, n in PUBLIC])
def test_public_definition_has_docstring(module, name):
    node = next(n for n in _parse(modules(ROOT, PACKAGE)[module]).body if getattr(n, "name", None) == name)
    assert ast.get_docstring(node), f"{module}.{name} has no docstring"


def test_checker_catches_a_bad_package(tmp_path):
    files = {
        "__init__.py": "",
        "errors.py": "import pkg.data.io\n",
        "data/__init__.py": "",
        "data/io.py": "from ..errors import Error\nfrom ..gone.x import y\n",
        "data/a.py": "def f():\n    from . import b\n",
        "data/b.py": "def g():\n    from .a import f\n",
        "generators/__init__.py": "from . import cvae\n",
        "generators/cvae.py": "from ..federation import session\nx = csprng_normal(3, noise_std=1)\n",
        "generators/protocol.py": "from pkg.federation.secure_sum import csprng_normal\n",
        "federation/__init__.py": "",
        "federation/session.py": "",
        "federation/secure_sum.py": "",
    }
    for name, text in files.items():
        (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "pkg" / name).write_text(text)
    assert layer_violations(tmp_path, "pkg") == [
        "pkg/data/io.py:2 imports pkg.gone (layer data may not import layer gone)",
        "pkg/errors.py:1 imports pkg.data.io (layer errors may not import layer data)",
    ]
    assert import_cycles(tmp_path, "pkg") == [
        (["pkg.data.a", "pkg.data.b"], ["pkg.data.a", "pkg.data.b", "pkg.data.a"]),
        (["pkg.data.io", "pkg.errors"], ["pkg.data.io", "pkg.errors", "pkg.data.io"]),
    ]
    assert noise_touches(tmp_path, "pkg") == [
        "pkg/generators/cvae.py:1 imports pkg.federation.session",
        "pkg/generators/cvae.py:2 calls csprng_normal",
        "pkg/generators/cvae.py:2 passes noise_std=",
    ]
