"""What a test needs from the machine. Where it is missing, the test is skipped on a
developer's machine but fails under ``CI=true``: CI installs everything the tests use,
so a skip there would hide a broken install."""
from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType

import pytest


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what}, and CI runs every test", pytrace=False)
    pytest.skip(what, allow_module_level=True)


def module(name: str) -> ModuleType:
    """The imported module ``name``."""
    try:
        return importlib.import_module(name)
    except ImportError:
        _missing(f"python module {name!r} is not installed")


def program(name: str, path: str | None = None) -> str:
    """The path of program ``name`` on PATH (or on ``path``)."""
    found = shutil.which(name, path=path)
    if found is None:
        _missing(f"program {name!r} is not on {'PATH' if path is None else path}")
    return found
