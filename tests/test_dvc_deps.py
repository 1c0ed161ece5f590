"""Stage dependencies are complete by construction: every project file a stage's code can import is one of its deps.

For each stage of dvc.yaml (``foreach`` expanded), the ``nst <command>`` in its cmd runs pipeline/cli.py and the
command's module (pipeline.cli.COMMANDS). From those, ``ast`` follows every import of a project package (methods,
evaluation, pipeline) -- at module top and inside functions, ``from pkg import submodule``, relative imports,
literal ``importlib.import_module("...")`` -- plus each imported module's package ``__init__.py`` files, and the
files some calls read (``code_fingerprint`` hashes the methods package). A dep covers a file when it is the file or
a folder above it. No network, no stage module imported: this runs in well under a second.
"""

from __future__ import annotations

import ast
import posixpath
import re
import shlex
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("methods", "evaluation", "pipeline")
CLI_MODULE = "pipeline.cli"
# Calls that read project files other than by importing them: function name -> glob (relative to ROOT).
READS = {"code_fingerprint": "methods/**/*.py"}

_VAR = re.compile(r"\$\{\s*([^}\s]+)\s*\}")


# ------------------------------------------------------------------------------------------------ dvc.yaml


def _substitute(node: Any, env: dict[str, Any], stage: str) -> Any:
    if isinstance(node, str):

        def value(match: re.Match[str]) -> str:
            name, *attrs = match.group(1).split(".")
            if name not in env:
                raise KeyError(f"{stage}: cannot resolve ${{{match.group(1)}}} (only foreach's item/key are known)")
            found = env[name]
            for attr in attrs:
                found = found[attr]
            return str(found)

        return _VAR.sub(value, node)
    if isinstance(node, list):
        return [_substitute(x, env, stage) for x in node]
    if isinstance(node, dict):
        return {_substitute(k, env, stage): _substitute(v, env, stage) for k, v in node.items()}
    return node


def expand_stages(dvc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """dvc.yaml's stages by name, ``foreach`` stages expanded to ``name@item`` / ``name@key``."""
    out: dict[str, dict[str, Any]] = {}
    for name, stage in (dvc.get("stages") or {}).items():
        if "foreach" not in stage:
            out[name] = stage
            continue
        items = stage["foreach"]
        pairs = items.items() if isinstance(items, dict) else ((None, item) for item in items)
        for key, item in pairs:
            label = f"{name}@{key if key is not None else item}"
            env = {"item": item} if key is None else {"item": item, "key": key}
            out[label] = _substitute(stage["do"], env, label)
    return out


def nst_commands(cmd: str | list[str]) -> Iterator[str]:
    """The ``nst`` subcommands a stage's cmd runs."""
    for line in [cmd] if isinstance(cmd, str) else cmd:
        for part in re.split(r"&&|\|\||;|\|", line):
            words = shlex.split(part)
            if words and posixpath.basename(words[0]) == "nst":
                yield next((w for w in words[1:] if not w.startswith("-")), "")


# ------------------------------------------------------------------------------------------------ imports


def module_file(name: str) -> Path | None:
    """The project file of module ``name`` (a .py file or a package's __init__.py), None if not a project module."""
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


@cache
def direct_imports(name: str) -> tuple[frozenset[str], frozenset[str]]:
    """(project modules module ``name`` imports anywhere in its file, names of the functions it calls)."""
    path = module_file(name)
    assert path is not None, name
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    calls: set[str] = set()
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.update(with_packages(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.update(with_packages(base))
            for alias in node.names:
                if module_file(f"{base}.{alias.name}") is not None:  # `from pkg import submodule`
                    found.add(f"{base}.{alias.name}")
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            calls.add(called)
            if called in ("import_module", "__import__") and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.update(with_packages(arg.value))
    return frozenset(m for m in found if module_file(m) is not None), frozenset(calls)


def closure(roots: list[str]) -> dict[str, str]:
    """Every project file the modules ``roots`` can import or read (repo-relative) -> the module that brings it in."""
    why: dict[str, str] = {}
    seen: set[str] = set()
    todo = [
        (m, f"package of {root}" if m != root else "run by the command") for root in roots for m in with_packages(root)
    ]
    while todo:
        name, parent = todo.pop(0)
        if name in seen:
            continue
        seen.add(name)
        why.setdefault(module_file(name).relative_to(ROOT).as_posix(), parent)  # type: ignore[union-attr]
        imports, calls = direct_imports(name)
        todo.extend((m, name) for m in sorted(imports))
        for func, pattern in READS.items():
            if func in calls:
                for path in sorted(ROOT.glob(pattern)):
                    why.setdefault(path.relative_to(ROOT).as_posix(), f"{name} ({func})")
    return why


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep + "/") for dep in deps)


# ------------------------------------------------------------------------------------------------ tests


@cache
def stages() -> dict[str, dict[str, Any]]:
    return expand_stages(yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8")))


def uncovered(label: str) -> dict[str, str]:
    """Project files stage ``label``'s code imports or reads that none of its deps cover -> why it is needed."""
    stage = stages()[label]
    wdir = posixpath.normpath(stage.get("wdir", "."))
    deps = [posixpath.normpath(posixpath.join(wdir, str(dep))) for dep in stage.get("deps") or []]
    commands = list(nst_commands(stage["cmd"]))
    unknown = [c for c in commands if c not in COMMANDS]
    assert not unknown, f"{label}: `nst {unknown[0]}` is not in pipeline.cli.COMMANDS"
    why = closure([CLI_MODULE, *(COMMANDS[c][0] for c in commands)]) if commands else {}
    return {path: reason for path, reason in sorted(why.items()) if not covered(path, deps)}


@pytest.mark.parametrize("label", sorted(stages()))
def test_stage_deps_cover_the_code_it_runs(label):
    missing = uncovered(label)
    assert not missing, f"stage {label}: deps miss {len(missing)} file(s) its code imports or reads:\n" + "\n".join(
        f"  {path}   <- {reason}" for path, reason in missing.items()
    )


def test_foreach_expansion():
    names = set(stages())
    assert {"fetch", "tune@gatys", "train@adain", "stylize@gatys", "stylize@contrastive", "stylize@ghiasi"} <= names
    assert not {"tune@ghiasi", "train@ghiasi"} & names  # pretrained by its authors: never tuned or trained here
    assert "--tuned" not in stages()["stylize@ghiasi"]["cmd"]
    assert "--model models/adain" in stages()["stylize@adain"]["cmd"]
    assert "models/adain" in stages()["stylize@adain"]["deps"]
    assert not any("${" in repr(stage) for stage in stages().values())


def test_every_stage_runs_an_nst_command():
    assert all(list(nst_commands(stage["cmd"])) for stage in stages().values())


def _registered(module: str) -> dict[str, str | None]:
    """Subcommand -> literal help of every ``sub.add_parser(...)`` in the module's ``add_parser`` function."""
    tree = ast.parse(module_file(module).read_text(encoding="utf-8"))  # type: ignore[union-attr]
    func = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "add_parser")
    sub = func.args.args[0].arg
    found: dict[str, str | None] = {}
    for node in ast.walk(func):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "add_parser"
            and ast.unparse(node.func.value) == sub
        ):
            name = ast.literal_eval(node.args[0])
            helps = [kw.value for kw in node.keywords if kw.arg == "help"]
            found[name] = helps[0].value if helps and isinstance(helps[0], ast.Constant) else None
    return found


def test_cli_table_matches_what_the_modules_register():
    """COMMANDS (what `nst --help` lists and the dispatch imports) agrees with each module's add_parser."""
    modules = sorted({module for module, _ in COMMANDS.values()})
    actual = {name: (module, help_) for module in modules for name, help_ in _registered(module).items()}
    assert actual == COMMANDS
