"""What code a stage runs: the project files a module can import, read off the source without importing anything.

Stages fingerprint exactly this code (:func:`fingerprint`: a resumed stylize folder, a training checkpoint or an Optuna
study made by other code starts afresh), and tests/test_dvc_deps.py checks that every stage's dvc.yaml ``deps`` are
exactly these files, so a stage reruns when, and only when, code it runs changes.

The walk follows, with ``ast``: ``import a.b`` and ``from a import b`` (``b`` a module or a name), relative imports,
imports inside functions, literal ``importlib.import_module("a.b")``, and a package that imports every module of its
folder by ``pkgutil.iter_modules`` (methods/registry.py finding methods/schemas/). Importing a module runs its
packages' ``__init__.py`` first, so those count too. A method's implementation, imported by name from its spec, is
a root of its own (:func:`method_module`). ``if TYPE_CHECKING:`` bodies never run and are skipped.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("methods", "evaluation", "pipeline")


def module_file(name: str) -> Path | None:
    """The project file of module ``name`` (a .py file or a package's __init__.py); None if not a project module."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def with_packages(name: str) -> list[str]:
    """``a.b.c`` -> [a, a.b, a.b.c]: importing a module runs every enclosing package's __init__.py first."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


def _type_checking_only(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return isinstance(test, ast.Name | ast.Attribute) and ast.unparse(test).endswith("TYPE_CHECKING")


def _walk(tree: ast.AST) -> Iterator[ast.AST]:
    """ast.walk, skipping ``if TYPE_CHECKING:`` bodies (they never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                todo.extend(child.orelse)  # type: ignore[attr-defined]
            else:
                todo.append(child)


def _from_base(node: ast.ImportFrom, name: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    package = name.split(".") if is_package else name.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def _discovered(package: str) -> set[str]:
    """Every module of ``package``'s folder (what a ``pkgutil.iter_modules`` loop over it can import)."""
    path = module_file(package)
    if path is None or path.name != "__init__.py":
        return set()
    return {f"{package}.{p.stem}" for p in path.parent.glob("*.py") if p.name != "__init__.py"}


@cache
def direct_imports(name: str) -> frozenset[str]:
    """The project modules module ``name`` imports anywhere in its file (see the module docstring)."""
    path = module_file(name)
    if path is None:
        raise ValueError(f"{name}: not a project module")
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in _walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(with_packages(alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, name, is_package)
            found.update(with_packages(base))
            found.update(f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}") is not None)
        elif isinstance(node, ast.Call):
            called = ast.unparse(node.func)
            arg = node.args[0] if node.args else None
            if called.endswith("import_module") and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.update(with_packages(arg.value))
            elif called.endswith("iter_modules") and isinstance(arg, ast.Attribute) and arg.attr == "__path__":
                found.update(_discovered(ast.unparse(arg.value)))
    return frozenset(m for m in found if module_file(m) is not None and m != name)


def closure(roots: Iterable[str]) -> dict[str, str]:
    """Every project file the modules ``roots`` can import (repo-relative path) -> the module that brings it in."""
    why: dict[str, str] = {}
    seen: set[str] = set()
    todo = [(m, "run" if m == root else f"package of {root}") for root in roots for m in with_packages(root)]
    while todo:
        name, parent = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        why.setdefault(module_file(name).relative_to(ROOT).as_posix(), parent)  # type: ignore[union-attr]
        todo.extend((m, name) for m in sorted(direct_imports(name)))
    return why


def method_module(implementation: str | type) -> str:
    """The module of a spec's implementation (``"module:Class"`` or the class)."""
    return implementation.partition(":")[0] if isinstance(implementation, str) else implementation.__module__


def fingerprint(roots: Iterable[str]) -> str:
    """sha256 over the source of every project file :func:`closure` of ``roots`` reaches (file names included)."""
    digest = hashlib.sha256()
    for rel in sorted(closure(roots)):
        digest.update(rel.encode())
        digest.update((ROOT / rel).read_bytes())
    return digest.hexdigest()
