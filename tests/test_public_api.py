"""The internal API is enforced, not hoped for (onnx/ir-py's public_api_test is the model).

(a) Every public package declares its public names in ``__all__``, and every object it declares
lives under a public module path (no ``._`` component), so ``repr``, pickling and docs never show a
private module. (b) No module imports another package's private ``_module`` (REFACTOR.md's rule).
(c) No import cycle between modules at import time, and every import inside a function says why in
a comment. The checks read the source with ``ast``; each lists all offenders at once.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

import quantdebug

SRC = Path(quantdebug.__file__).resolve().parent
ROOT = "quantdebug"


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name of the importing file
    target: str  # dotted module the statement loads (a submodule when ``from pkg import submodule``)
    line: int
    top_level: bool  # run at import time (module body, not a function, not TYPE_CHECKING)
    text: str


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _package_of(path: Path) -> str:
    """The package a file belongs to: itself for an ``__init__``, its parent otherwise."""
    name = _module_name(path)
    return name if _is_package(path) else name.rpartition(".")[0]


MODULES = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}


def _is_module(dotted: str) -> bool:
    return dotted in MODULES


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> list[Import]:
    source = path.read_text()
    lines = source.splitlines()
    tree = ast.parse(source)
    importer = _module_name(path)
    package = _package_of(path)
    found: list[Import] = []

    def visit(node: ast.AST, top_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and _is_type_checking(child):
                visit(child, False)
            elif isinstance(child, (ast.Import, ast.ImportFrom)):
                text = "\n".join(lines[child.lineno - 1 : (child.end_lineno or child.lineno)])
                for target in _targets(child, package):
                    found.append(Import(importer, target, child.lineno, top_level, text))
            else:
                visit(child, top_level)

    visit(tree, True)
    return found


def _targets(node: ast.Import | ast.ImportFrom, package: str) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == ROOT]
    base = node.module or ""
    if node.level:  # relative imports are not used, but resolve them anyway
        parent = package.split(".")
        base = ".".join(parent[: len(parent) - node.level + 1] + ([base] if base else []))
    if base.split(".")[0] != ROOT:
        return []
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append(sub if _is_module(sub) else base)
    return out


ALL_IMPORTS = [imp for path in MODULES.values() for imp in _imports(path)]


def _private_owner(target: str) -> str | None:
    """The package a private module belongs to (the path before its first ``_`` component)."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if part.startswith("_") and not part.startswith("__"):
            return ".".join(parts[:i])
    return None


def _allowed(imp: Import) -> bool:
    owner = _private_owner(imp.target)
    if owner is None:
        return True
    importer_package = _package_of(MODULES[imp.importer])
    if owner == ROOT:  # quantdebug._api, quantdebug._debugger: only for the top-level modules
        return importer_package == ROOT
    return importer_package == owner or importer_package.startswith(owner + ".")


def _public_packages() -> list[types.ModuleType]:
    packages = [quantdebug]
    for info in pkgutil.walk_packages(quantdebug.__path__, prefix=f"{ROOT}."):
        if info.ispkg and _private_owner(info.name) is None:
            packages.append(importlib.import_module(info.name))
    return packages


PUBLIC_PACKAGES = _public_packages()


@pytest.mark.parametrize("package", PUBLIC_PACKAGES, ids=lambda m: m.__name__)
def test_public_names_are_declared_in_all(package: types.ModuleType) -> None:
    declared = set(getattr(package, "__all__", ()))
    undeclared = sorted(
        name
        for name, value in vars(package).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)  # submodules are reached by their path
        and name != "annotations"  # from __future__ import annotations
        and name not in declared
    )
    assert not undeclared, f"{package.__name__} has public names missing from __all__: {undeclared}"
    missing = sorted(name for name in declared if not hasattr(package, name))
    assert not missing, f"{package.__name__}.__all__ names what it does not define: {missing}"


@pytest.mark.parametrize("package", PUBLIC_PACKAGES, ids=lambda m: m.__name__)
def test_declared_objects_live_under_public_modules(package: types.ModuleType) -> None:
    private = {
        name: module
        for name in getattr(package, "__all__", ())
        if isinstance(module := getattr(getattr(package, name), "__module__", None), str)
        and _private_owner(module) is not None
    }
    assert not private, f"{package.__name__} declares objects whose __module__ is private: {private}"


def test_no_import_reaches_another_packages_private_module() -> None:
    offenders = sorted(f"{imp.importer}:{imp.line} imports {imp.target}" for imp in ALL_IMPORTS if not _allowed(imp))
    assert not offenders, "imports of another package's private module:\n" + "\n".join(offenders)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                strong(w)
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
            if len(component) > 1 or v in edges.get(v, ()):
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def test_no_import_cycle_between_modules() -> None:
    # The edges are the modules an import statement names; the parent packages Python also runs
    # on the way are left out, or every module would close a cycle through quantdebug/__init__.
    edges: dict[str, set[str]] = {}
    for imp in ALL_IMPORTS:
        if imp.top_level and imp.target != imp.importer:
            edges.setdefault(imp.importer, set()).add(imp.target)
    cycles = _cycles(edges)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def _node(module: str) -> str:
    """A module's package, or the module itself at the top level (errors, config, cli, ...)."""
    package = _package_of(MODULES[module])
    return module if package == ROOT else package


def test_no_import_cycle_between_packages() -> None:
    # Subpackages of one parent count as different packages (pipeline.plan and pipeline.prepare);
    # a package's own __init__ importing its children is no edge between packages.
    edges: dict[str, set[str]] = {}
    for imp in ALL_IMPORTS:
        a, b = _node(imp.importer), _node(imp.target)
        if imp.top_level and a != b and not b.startswith(a + ".") and not a.startswith(b + "."):
            edges.setdefault(a, set()).add(b)
    cycles = _cycles(edges)
    assert not cycles, "import cycles between packages:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_imports_inside_functions_say_why() -> None:
    offenders = []
    for path in MODULES.values():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, (ast.Import, ast.ImportFrom)):
                    span = lines[inner.lineno - 2 : (inner.end_lineno or inner.lineno)]  # the line above too
                    if not any("#" in line for line in span):
                        offenders.append(f"{_module_name(path)}:{inner.lineno}: {lines[inner.lineno - 1].strip()}")
    offenders = sorted(set(offenders))
    assert not offenders, "imports inside functions without a comment saying why:\n" + "\n".join(offenders)


def test_the_checks_can_fail() -> None:
    """The rule itself, on made-up imports: a check that cannot fail proves nothing."""
    inside = Import("quantdebug.pipeline.plan._quantize", "quantdebug.pipeline.plan._units", 1, True, "")
    across = Import("quantdebug.fix._strategy", "quantdebug.pipeline.plan._units", 1, True, "")
    top_private = Import("quantdebug.fix._strategy", "quantdebug._api", 1, True, "")
    top_ok = Import("quantdebug", "quantdebug._api", 1, True, "")
    sibling = Import("quantdebug.pipeline.plan._quantize", "quantdebug.pipeline.transform._fold", 1, True, "")
    assert _allowed(inside) and _allowed(top_ok)
    assert not _allowed(across) and not _allowed(top_private) and not _allowed(sibling)
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
