"""Real external tools the tests drive. Missing ones skip a test when run by hand, and fail it
under ``SGLGEN_STRICT=1`` (what ``make test`` and CI set), so CI can never pass by skipping."""

from __future__ import annotations

import os
import shutil

import pytest

STRICT = os.environ.get("SGLGEN_STRICT") == "1"


def missing(what: str) -> None:
    if STRICT:
        pytest.fail(f"{what} (SGLGEN_STRICT=1: .ci/install.sh installs it)")
    pytest.skip(what)


def need_tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/sbin/{name}") if os.access(p, os.X_OK)), None)
    if path is None:
        missing(f"{name} is not installed")
    assert path is not None
    return path


def need_python(var: str, package: str) -> str:
    py = os.environ.get(var, "")
    if not py or not os.access(py, os.X_OK):
        missing(f"{package}: set {var} to a venv python that has it")
    return py


def need_path(path: os.PathLike[str] | str, what: str) -> None:
    if not os.path.exists(path):
        missing(f"{what} not found at {path}")
