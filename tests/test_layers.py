"""The layering in pyproject.toml's import-linter contracts holds, and each contract is
not vacuous: on a copy of the packages, one forbidden import breaks it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cli", "gateway", "trainer", "converter", "inferencer", "ssdstack")
LINT = str(Path(sys.executable).with_name("lint-imports"))
LAYERS = "Tooling on top, gateway and services side by side"
NO_RUNTIME = "The core and the gateway load no model runtime"
ONLY_TRAINER = "Only the trainer imports MindSpore"


def lint(root: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(root))  # the packages under root, not the installed ones
    return subprocess.run([LINT, "--no-cache", "--config", str(root / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_contracts_hold():
    done = lint(REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layers")
    shutil.copyfile(REPO_ROOT / "pyproject.toml", root / "pyproject.toml")
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.mark.parametrize("module, statement, contract", [
    ("ssdstack/probe.py", "import trainer.service", LAYERS),            # the core reaching up into a service
    ("ssdstack/probe.py", "from cli import main", LAYERS),              # the core reaching up into the tooling
    ("gateway/probe.py", "from converter.backends import BACKENDS", LAYERS),  # the gateway importing a service
    ("converter/probe.py", "from inferencer import detector", LAYERS),  # one service importing another
    ("ssdstack/probe.py", "import onnx", NO_RUNTIME),
    ("gateway/probe.py", "import mindspore", NO_RUNTIME),
    ("inferencer/probe.py", "import mindspore", ONLY_TRAINER),
])
def test_one_forbidden_import_breaks_its_contract(copy, module, statement, contract):
    probe = copy / module
    probe.write_text(statement + "\n")
    try:
        done = lint(copy)
    finally:
        probe.unlink()
    assert done.returncode == 1, done.stdout
    # An import that reaches a runtime through other packages breaks that contract too.
    broken = [line for line in done.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), done.stdout
    assert module.replace("/", ".").removesuffix(".py") in done.stdout
