"""The Makefile's choice of interpreter (issue 18): the first supported Python on PATH, said once, a clear error when
there is none, ``make PYTHON=...`` overriding; and environment.yml installing requirements.lock's pins.

Fake interpreters (shell scripts that print a version, or fail as an unselected pyenv shim does) on a PATH that holds
nothing else but the few tools the recipes call, so these run in milliseconds on any machine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
REQUIRES_PYTHON_TEXT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
REQUIRES_PYTHON = SpecifierSet(REQUIRES_PYTHON_TEXT)
TOOLS = ("sed", "awk", "touch", "mkdir", "ln", "cat", "mktemp", "rm", "grep")

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


class FakePath:
    """A PATH of fake interpreters plus the tools the recipes use; every fake call is appended to ``log``."""

    def __init__(self, root: Path) -> None:
        self.bin, tools, self.log = root / "fakebin", root / "tools", root / "calls.log"
        self.bin.mkdir()
        tools.mkdir()
        for tool in TOOLS:
            if found := shutil.which(tool):
                (tools / tool).symlink_to(found)
        self.path = f"{self.bin}:{tools}"
        # what a fake interpreter's venv gets as bin/python: logs its arguments and succeeds (pip install, pip check)
        self.venv_python = _write(root / "venv_python", f'#!/bin/sh\necho "venv-python $*" >> "{self.log}"\n')

    def python(self, name: str, version: str | None) -> Path:
        """``name`` printing ``Python <version>`` (None: failing like a pyenv shim for an unselected version);
        ``-m venv DIR`` makes DIR/bin/python."""
        if version is None:
            return _write(self.bin / name, f'#!/bin/sh\necho "pyenv: {name}: command not found" >&2\nexit 127\n')
        return _write(
            self.bin / name,
            f"""#!/bin/sh
echo "$0 $*" >> "{self.log}"
if [ "$1" = --version ]; then echo "Python {version}"; exit 0; fi
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && ln -s "{self.venv_python}" "$3/bin/python"; fi
""",
        )

    def make(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTHON", "VENV"}}
        env["PATH"] = self.path
        return subprocess.run(
            [shutil.which("make") or "make", "--no-print-directory", "-C", str(ROOT), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def make_variable(name: str) -> list[str]:
    done = subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(ROOT), "--eval", "print-%: ; @echo $($*)", f"print-{name}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.split()


@pytest.fixture
def fake(tmp_path: Path) -> FakePath:
    return FakePath(tmp_path)


def test_the_first_supported_python_on_path_is_used_and_said_once(fake):
    fake.python("python3.11", None)  # on PATH, but does not run (a pyenv shim)
    p12 = fake.python("python3.12", "3.12.4")
    fake.python("python3.13", "3.13.1")
    done = fake.make("which-python")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(p12)
    assert done.stderr.strip() == f"using {p12} (Python 3.12.4)"


def test_a_candidate_outside_requires_python_is_passed_over(fake):
    fake.python("python3.11", "3.10.9")  # a misnamed interpreter: its version decides, not its name
    fake.python("python3.12", "3.12.0")
    fake.python("python3.14", "3.14.1")  # excluded by requires-python (torchvision 0.29.1 does not install there)
    assert fake.make("which-python").stdout.strip() == str(fake.bin / "python3.12")
    (fake.bin / "python3.12").unlink()
    p3 = fake.python("python3", "3.13.2")  # `python3` is the last resort
    done = fake.make("which-python")
    assert (done.returncode, done.stdout.strip()) == (0, str(p3)), done.stderr


def test_no_supported_python_fails_listing_what_it_looked_for(fake):
    fake.python("python3.11", None)
    fake.python("python3.13", "3.10.4")
    done = fake.make("which-python")
    assert done.returncode != 0
    assert done.stdout == ""
    err = done.stderr
    assert "no supported Python found" in err
    assert f'requires-python is "{REQUIRES_PYTHON_TEXT}"' in err
    for candidate in make_variable("PYTHON_CANDIDATES"):
        assert f"  {candidate}: " in err
    assert f"python3.11: {fake.bin}/python3.11 does not run" in err
    assert f"python3.13: {fake.bin}/python3.13 is Python 3.10.4, outside requires-python" in err
    assert "python3.12: not on PATH" in err
    assert "make PYTHON=" in err


def test_make_python_overrides_the_search_and_is_checked_too(fake):
    fake.python("python3.11", "3.11.7")
    mine = fake.python("my-python", "3.13.0")
    done = fake.make("which-python", f"PYTHON={mine}")
    assert (done.returncode, done.stdout.strip()) == (0, str(mine)), done.stderr
    assert done.stderr.strip() == f"using {mine} (Python 3.13.0)"
    old = fake.python("old-python", "3.10.13")
    done = fake.make("which-python", f"PYTHON={old}")
    assert done.returncode != 0
    assert "is Python 3.10.13, outside requires-python" in done.stderr


@pytest.mark.parametrize(
    "version", ["3.10.14", "3.11.0", "3.11.7", "3.12.9", "3.13.0", "3.14.0", "3.14.1", "3.14.2", "3.15.0", "4.0"]
)
def test_the_makefiles_version_check_agrees_with_pep_440(fake, version):
    python = fake.python("python-x", version)
    done = fake.make("which-python", f"PYTHON={python}")
    assert (done.returncode == 0) == (Version(version) in REQUIRES_PYTHON), done.stderr


def test_make_setup_creates_the_venv_with_the_chosen_python_and_installs_the_lock(fake, tmp_path):
    fake.python("python3.11", None)
    p13 = fake.python("python3.13", "3.13.1")
    venv = tmp_path / "venv"
    done = fake.make("setup", f"VENV={venv}")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr.count("using ") == 1
    assert f"using {p13} (Python 3.13.1)" in done.stderr
    calls = fake.log.read_text().splitlines()
    assert f"{p13} -m venv {venv}" in calls
    assert "venv-python -m pip install --quiet -r requirements.lock" in calls
    assert "venv-python -m pip install --quiet --no-deps -e ." in calls
    assert (venv / ".installed").is_file()
    calls_before = len(calls)
    again = fake.make("setup", f"VENV={venv}")  # up to date: nothing runs, nothing is said
    assert (again.returncode, again.stderr) == (0, "")
    assert len(fake.log.read_text().splitlines()) == calls_before


def test_the_candidates_and_lock_check_cover_exactly_the_supported_pythons():
    """PYTHON_CANDIDATES (python3.X), LOCK_PYTHONS and requires-python name the same minor versions."""
    supported = {f"3.{m}" for m in range(0, 30) if any(Version(f"3.{m}.{p}") in REQUIRES_PYTHON for p in range(30))}
    candidates = make_variable("PYTHON_CANDIDATES")
    assert candidates[-1] == "python3"
    assert [c.removeprefix("python") for c in candidates[:-1]] == sorted(supported, key=Version)  # oldest first
    assert set(make_variable("LOCK_PYTHONS")) == supported


def test_environment_yml_installs_the_lock_on_a_supported_python():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    conda = [d for d in deps if isinstance(d, str)]
    [pip] = [d["pip"] for d in deps if isinstance(d, dict)]
    [python] = [d for d in conda if re.match(r"python\b", d)]
    version = re.fullmatch(r"python\s*=?=\s*(3\.\d+)(\.\*)?", python)
    assert version, f"python not pinned to one minor version: {python!r}"
    assert Version(version[1] + ".0") in REQUIRES_PYTHON
    assert version[1] in make_variable("LOCK_PYTHONS")
    assert sorted(conda) == sorted([python, "pip"])  # everything else comes from the lock, through pip
    assert pip == ["-r requirements.lock", "-e ."]
    assert (ROOT / "requirements.lock").is_file()
