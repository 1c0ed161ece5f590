"""Stage dependencies are exactly the code each stage runs: no file its command can import is missing from its deps,
and no code dep is a file it cannot import.

Stages come from DVC's own resolver (``foreach`` over params.yaml's ``method_stages`` included). For each, the
``nst <command>`` in its cmd runs pipeline/cli.py and the command's module (pipeline.cli.COMMANDS), and a per-method
stage runs its method's implementation (methods.registry); pipeline/code_deps.py walks their imports. A dep that is a
folder stands for the .py files in it. The one allowance: a per-method stage may also list the method modules another
method of the same ``foreach`` imports, because DVC cannot splice a per-item list into deps (the test names them).
"""

from __future__ import annotations

import posixpath
import re
import shlex
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from dvc.repo import Repo

from methods.registry import get_spec
from pipeline.cli import COMMANDS
from pipeline.code_deps import PACKAGES, closure, method_module

ROOT = Path(__file__).resolve().parents[1]
CLI_MODULE = "pipeline.cli"


@cache
def stages() -> dict[str, Any]:
    """dvc.yaml's stages as DVC resolves them, by address (``tune@adain``)."""
    return {stage.addressing: stage for stage in Repo(str(ROOT)).index.stages}


def resolved(repo: Path = ROOT) -> dict[str, dict[str, Any]]:
    """dvc.yaml's stages of ``repo`` as DVC resolves them, as plain data: cmd, deps and outs paths, always_changed."""
    return {
        stage.addressing: {
            "cmd": stage.cmd,
            "deps": [d.def_path for d in stage.deps if getattr(d, "params", None) is None],
            "outs": [o.def_path for o in stage.outs],
            "always_changed": stage.always_changed,
        }
        for stage in Repo(str(repo)).index.stages
    }


def nst_commands(cmd: str | list[str]) -> Iterator[str]:
    """The ``nst`` subcommands a stage's cmd runs."""
    for line in [cmd] if isinstance(cmd, str) else cmd:
        for part in re.split(r"&&|\|\||;|\|", line):
            words = shlex.split(part)
            if words and posixpath.basename(words[0]) == "nst":
                yield next((w for w in words[1:] if not w.startswith("-")), "")


def method_of(label: str) -> str | None:
    return label.partition("@")[2] or None


def code(label: str) -> set[str]:
    """The project files stage ``label`` runs."""
    stage = stages()[label]
    commands = list(nst_commands(stage.cmd))
    unknown = [c for c in commands if c not in COMMANDS]
    assert not unknown, f"{label}: `nst {unknown[0]}` is not in pipeline.cli.COMMANDS"
    roots = [CLI_MODULE, *(COMMANDS[c][0] for c in commands)]
    if method_of(label):
        roots.append(method_module(get_spec(method_of(label)).implementation))
    return set(closure(roots))


def code_deps(label: str) -> set[str]:
    """The stage's deps inside the project's packages, folders expanded to their .py files."""
    found: set[str] = set()
    for dep in stages()[label].deps:
        if getattr(dep, "params", None) is not None:  # a params dependency
            continue
        rel = Path(dep.def_path).as_posix()
        if rel.split("/")[0] not in PACKAGES:
            continue
        path = ROOT / rel
        found |= {p.relative_to(ROOT).as_posix() for p in path.rglob("*.py")} if path.is_dir() else {rel}
    return found


def siblings(label: str) -> set[str]:
    """The method modules the other methods of the same foreach stage import (the one allowance)."""
    name, method = label.partition("@")[::2]
    if not method:
        return set()
    others = [lab for lab in stages() if lab.startswith(f"{name}@") and lab != label]
    return {p for other in others for p in code(other) if p.startswith("methods/")} - code(label)


@pytest.mark.parametrize("label", sorted(stages()))
def test_stage_deps_are_the_code_it_runs(label):
    runs, listed = code(label), code_deps(label)
    missing, extra = sorted(runs - listed), sorted(listed - runs - siblings(label))
    expected = "\n".join(f"  - {p}" for p in sorted(runs))
    assert not missing, f"stage {label}: deps miss {missing}; its code is:\n{expected}"
    assert not extra, f"stage {label}: deps list {extra}, which it does not import; its code is:\n{expected}"


def test_no_stage_of_another_method_depends_on_a_methods_module():
    """Editing methods/contrastive.py can rerun only contrastive stages and those of every method (evaluate, report)."""
    for label in stages():
        method = method_of(label)
        if method and method != "contrastive":
            assert "methods/contrastive.py" not in code_deps(label), label
    assert "methods/contrastive.py" not in code_deps("fetch") | code_deps("prepare")


def test_metric_descriptions_reach_only_evaluate_and_report():
    users = sorted(label for label in stages() if "evaluation/metric_info.py" in code_deps(label))
    assert users == ["evaluate", "report"]


def test_the_check_can_fail(monkeypatch):
    """A stage that stops importing a module it lists, or starts importing one it does not list, fails the check."""
    import pipeline.code_deps as cd

    real = cd.direct_imports
    monkeypatch.setattr(cd, "direct_imports", lambda name: real(name) - {"pipeline.download"})
    with pytest.raises(AssertionError, match=r"pipeline/download\.py"):
        test_stage_deps_are_the_code_it_runs("fetch")
    monkeypatch.setattr(
        cd,
        "direct_imports",
        lambda name: real(name) | ({"methods.gatys"} if name == "pipeline.stages.fetch" else set()),
    )
    with pytest.raises(AssertionError, match=r"methods/gatys\.py"):
        test_stage_deps_are_the_code_it_runs("fetch")


def test_every_stage_runs_an_nst_command():
    assert all(list(nst_commands(stage.cmd)) for stage in stages().values())


def test_foreach_expansion():
    names = set(stages())
    assert {"fetch", "tune@gatys", "train@adain", "stylize@gatys", "stylize@contrastive", "stylize@ghiasi"} <= names
    assert not {"tune@ghiasi", "train@ghiasi"} & names  # pretrained by its authors: never tuned or trained here
    assert "--tuned" not in stages()["stylize@ghiasi"].cmd
    assert "--model models/adain" in stages()["stylize@adain"].cmd
    assert "models/adain" in [d.def_path for d in stages()["stylize@adain"].deps]
