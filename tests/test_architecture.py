"""The house rules, read off the source: the import graph, and a method added without touching the config code.

- ``methods`` imports neither ``pipeline`` nor ``evaluation``; ``evaluation`` does not import ``pipeline``; the
  project's modules import each other without cycles; stage modules (``nst`` subcommands) never import each other; only
  ``pipeline/tracking.py`` imports mlflow and only ``pipeline/stages/tune.py`` optuna; no project import inside a
  function.
- The registry is the single list of methods: dvc.yaml's ``foreach`` lists equal its lists, and a toy method with its
  own params class is accepted by params.yaml validation, ``nst stylize`` and the derived lists.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from methods.registry import (
    MethodParams,
    MethodSpec,
    get_spec,
    list_methods,
    register,
    trained_methods,
    tuned_methods,
    unregister,
)
from methods.schemas.fields import Fraction
from pipeline import cli
from pipeline.code_deps import direct_imports, method_module
from pipeline.commands import MODULES as COMMAND_MODULES
from pipeline.config import ConfigError, read_yaml, validate
from pipeline.io import read_image

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("methods", "evaluation", "pipeline")


# ------------------------------------------------------------------------------------------------ the import graph


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for pkg in PACKAGES for p in sorted((REPO / pkg).rglob("*.py"))}


def imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported module, inside a function, line) for every import statement of ``path``; ``from a import b`` counts
    as ``a.b`` when that is a project module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                assert child.level == 0, f"{path}:{child.lineno}: relative import"
                base = child.module or ""
                for alias in child.names:
                    target = f"{base}.{alias.name}"
                    found.append((target if target in MODULES else base, in_function, child.lineno))
            visit(child, nested)

    visit(tree, False)
    return found


GRAPH = {name: imports(path) for name, path in MODULES.items()}


def project(target: str) -> bool:
    return target.split(".")[0] in PACKAGES


def test_the_graph_covers_the_packages():
    assert {"methods.registry", "methods.schemas.adain_params", "pipeline.stages.tune", "evaluation.metrics"} <= set(
        GRAPH
    )


def test_no_project_import_inside_a_function():
    inside = [
        f"{MODULES[m].relative_to(REPO)}:{line} imports {t}"
        for m, found in GRAPH.items()
        for t, in_function, line in found
        if in_function and project(t)
    ]
    assert not inside, inside


def test_layers_import_downwards_only():
    wrong = []
    for module, found in GRAPH.items():
        layer = module.split(".")[0]
        banned = {"methods": ("pipeline", "evaluation"), "evaluation": ("pipeline",)}.get(layer, ())
        wrong += [f"{module} imports {t}" for t, _, _ in found if t.split(".")[0] in banned]
    assert not wrong, wrong


@pytest.mark.parametrize(("package", "only"), [("mlflow", "pipeline.tracking"), ("optuna", "pipeline.stages.tune")])
def test_one_module_imports_each_tool(package, only):
    """DESIGN.md: only pipeline/tracking.py imports mlflow, only the tuning code imports optuna."""
    users = sorted({m for m, found in GRAPH.items() for t, _, _ in found if t.split(".")[0] == package})
    assert users == [only]


def by_name_imports() -> dict[str, set[str]]:
    """Imports by name, which a plain import statement does not show: literal ``importlib.import_module`` and a
    package's ``pkgutil.iter_modules`` discovery (pipeline/code_deps.py), the CLI importing each command's module
    (pipeline/commands.py), and the registry importing each method's implementation."""
    # a module's own enclosing packages are already importing when it runs: not an edge
    edges = {m: {t for t in direct_imports(m) if not m.startswith(t + ".")} for m in GRAPH}
    edges["pipeline.cli"] |= set(COMMAND_MODULES)
    edges["methods.registry"] |= {
        method_module(get_spec(n).implementation) for n in list_methods() if method_module(get_spec(n).implementation)
    }
    return edges


def test_the_by_name_imports_are_seen():
    edges = by_name_imports()
    assert {"methods.schemas.gatys_params", "methods.gatys"} <= edges["methods.registry"]
    assert "pipeline.stages.tune" in edges["pipeline.cli"]


def test_no_import_cycles():
    dynamic = by_name_imports()
    edges = {
        m: sorted(({t for t, _, _ in found} | dynamic.get(m, set())) & set(MODULES) - {m}) for m, found in GRAPH.items()
    }
    # A package's __init__ that merely re-exports a submodule is an edge like any other, so cycles through it count.
    state: dict[str, int] = {}
    cycle: list[str] = []

    def dfs(node: str, stack: list[str]) -> bool:
        state[node] = 1
        for nxt in edges[node]:
            if state.get(nxt) == 1:
                cycle.extend([*stack[stack.index(nxt) :], node, nxt] if nxt in stack else [node, nxt])
                return True
            if state.get(nxt) is None and dfs(nxt, [*stack, node]):
                return True
        state[node] = 2
        return False

    for start in edges:
        if state.get(start) is None and dfs(start, []):
            break
    assert not cycle, " -> ".join(cycle)


def test_stages_never_import_each_other():
    stages = set(cli.STAGES)
    crossing = [f"{m} imports {t}" for m in stages for t, _, _ in GRAPH[m] if t in stages and t != m]
    assert not crossing, crossing


def test_the_cycle_check_can_fail():
    """The checker itself: a two-module loop is found."""
    saved = {k: GRAPH[k] for k in ("pipeline.io", "pipeline.config")}
    try:
        GRAPH["pipeline.io"] = [*GRAPH["pipeline.io"], ("pipeline.config", False, 1)]
        GRAPH["pipeline.config"] = [*GRAPH["pipeline.config"], ("pipeline.io", False, 1)]
        with pytest.raises(AssertionError, match="pipeline"):
            test_no_import_cycles()
    finally:
        GRAPH.update(saved)


# ------------------------------------------------------------------------------------------------ the registry


def test_dvc_foreach_lists_are_the_registry_lists():
    """dvc.yaml's per-method stages iterate over params.yaml's method_stages, which equal the registry's lists."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert (stages["tune"]["foreach"], stages["train"]["foreach"], stages["stylize"]["foreach"]) == (
        "${method_stages.tune}",
        "${method_stages.train}",
        "${method_stages.stylize}",
    )
    lists = read_yaml(REPO / "params.yaml")["method_stages"]
    assert list(lists["tune"]) == tuned_methods()
    assert lists["train"] == trained_methods()
    assert list(lists["stylize"]) == list_methods()


def test_a_method_missing_from_method_stages_is_one_clear_error():
    data = read_yaml(REPO / "params.yaml")
    del data["method_stages"]["stylize"]["ghiasi"]
    data["method_stages"]["train"] = ["adain"]
    with pytest.raises(ConfigError, match=r"train must be \['adain', 'contrastive'\].*stylize must list"):
        validate(data, "params.yaml")


class ToyParams(MethodParams):
    """A test method's own schema: no edit of pipeline/config.py makes params.yaml accept it."""

    strength: Fraction = 0.5  # share of the style's mean colour in the output


class Toy:
    """Blends the content towards the style's mean colour by ``strength``."""

    name = "toy"

    def __init__(self, params: ToyParams | None = None, *, encoder: Any = None) -> None:
        self.params = params or ToyParams()

    def stylize(
        self, content: torch.Tensor, style: torch.Tensor, callback: Callable[..., Any] | None = None, **overrides: Any
    ) -> torch.Tensor:
        p = self.params.replace(**overrides) if overrides else self.params
        mean = style.mean(dim=(2, 3), keepdim=True)
        if callback is not None:
            callback(0, {"total": 0.0})
        return (1 - p.strength) * content + p.strength * mean.expand_as(content)


@pytest.fixture
def toy():
    register(MethodSpec(name="toy", params=ToyParams, implementation=Toy, uses_encoder=False))
    try:
        yield
    finally:
        unregister("toy")


def test_a_toy_method_needs_no_config_code_edit(toy, tmp_path, monkeypatch):
    assert "toy" in list_methods()
    assert "toy" not in trained_methods()
    assert "toy" not in tuned_methods()
    data = read_yaml(REPO / "params.yaml")
    data["method_stages"]["stylize"]["toy"] = {
        "model_dep": "methods/toy.py",
        "model_arg": "",
        "tuned_dep": "x",
        "tuned_arg": "",
    }
    with pytest.raises(ConfigError, match=r"missing key 'methods\.toy'"):
        validate(data, "params.yaml")
    data["methods"]["toy"] = {"strength": 0.25}
    assert validate(data, "params.yaml").methods.toy == ToyParams(strength=0.25)
    data["methods"]["toy"] = {"strength": 2.0}
    with pytest.raises(ConfigError, match=r"methods\.toy\.strength = 2\.0"):
        validate(data, "params.yaml")

    data["methods"]["toy"] = {"strength": 0.25}
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(data), encoding="utf-8")
    rng = np.random.default_rng(0)
    content, style, out = tmp_path / "c.png", tmp_path / "s.png", tmp_path / "o.png"
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(content)
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(style)
    argv = ["stylize", "--method", "toy", str(content), str(style), "-o", str(out), "--params", str(params_path)]
    assert cli.main(argv) == 0
    c, s = read_image(content), read_image(style)
    expected = 0.75 * c + 0.25 * s.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(read_image(out), expected, atol=1 / 255 + 1e-6)  # through an 8-bit PNG
    monkeypatch.chdir(tmp_path / "..")  # no params.yaml here: the class defaults + --set
    assert cli.main([*argv[:-2], "--set", "strength=1.0"]) == 0
    assert torch.allclose(read_image(out), s.mean(dim=(2, 3), keepdim=True).expand_as(c), atol=1 / 255 + 1e-6)
    stage_argv = ["stylize-stage", "--method", "toy", "--out", str(tmp_path / "outputs")]
    assert (
        cli.parser("stylize-stage").parse_args(stage_argv).method == "toy"
    )  # the stage's choices come from the registry
