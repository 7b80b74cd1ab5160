"""Every Python module that deployment files name still resolves: ``python -m M`` and
``celery -A M`` in the Dockerfiles, compose files, Kubernetes manifests and scripts, the
modules each Dockerfile checks for, the rank module the trainer's launches run, and the
console script."""
from __future__ import annotations

import importlib
import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
# `-m module` / `-A module`, in shell lines and in YAML or JSON argument lists.
MODULE_FLAG = re.compile(r"""(?:^|[\s"'\[,])-(?:m|A)["'\s,]+([A-Za-z_][\w.]*)""", re.MULTILINE)


def _files() -> list[Path]:
    return sorted([*REPO_ROOT.glob("docker/*.Dockerfile"), *REPO_ROOT.glob("docker-compose*.yml"),
                   *REPO_ROOT.glob("k8s/**/*.yaml"), *REPO_ROOT.glob("scripts/*.sh"),
                   REPO_ROOT / "trainer" / "ascendjob.yaml", REPO_ROOT / "trainer" / "ranks.py"])


def _docker_checked(text: str) -> list[str]:
    """The modules a Dockerfile's build step checks with find_spec: the argument lines
    after its ``python -c`` line, up to the next ``&&`` or the end of the RUN."""
    modules, lines = [], text.splitlines()
    for index, line in enumerate(lines):
        if "missing modules" in line:
            for argument in lines[index + 1:]:
                if argument.strip().startswith("&&"):
                    break
                modules += argument.replace("\\", " ").split()
                if not argument.rstrip().endswith("\\"):
                    break
    return modules


def named_modules() -> list[tuple[str, str]]:
    """``(file, module)`` for every module a deployment file names."""
    found = []
    for path in _files():
        text = path.read_text()
        modules = MODULE_FLAG.findall(text) + _docker_checked(text)
        found += [(path.relative_to(REPO_ROOT).as_posix(), module) for module in modules]
    return found


def test_the_search_finds_what_each_kind_of_file_names():
    found = set(named_modules())
    assert ("docker/converter.Dockerfile", "converter.worker") in found          # the build step's check
    assert ("docker/gateway.Dockerfile", "gateway.main") in found
    assert ("docker/gateway.Dockerfile", "gateway") in found                     # CMD python -m gateway
    assert ("k8s/base/trainer.yaml", "trainer.worker") in found                  # celery -A in args
    assert ("docker-compose.yml", "ssdstack.healthcheck") in found               # healthcheck test
    assert ("scripts/ascend-check.sh", "cli.main") in found
    assert ("trainer/ranks.py", "trainer.rank_main") in found                    # the msrun launch
    assert ("trainer/ascendjob.yaml", "trainer.rank_main") in found              # the AscendJob's ranks


@pytest.mark.parametrize("where, module", sorted(set(named_modules())))
def test_a_named_module_resolves(where, module):
    assert importlib.util.find_spec(module) is not None, f"{where} names {module}, which does not exist"


def test_the_console_script_resolves():
    scripts = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, target in scripts.items():
        module, _, attribute = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attribute)), f"{name} = {target}"
