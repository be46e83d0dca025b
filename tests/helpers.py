"""Shared test helpers (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from generator.cli import main
from generator.compile.options import settings_from_cli
from generator.compile.pipeline import compile_plan
from generator.errors import TopologyError

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def write_topo(tmp_path: Path, text: str, name: str = "topo.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return p


def plan_of(path: Path, *sets: str, local: bool = False, **named: Any):
    return compile_plan(path, settings_from_cli(list(sets), **named), local=local)


def errors_of(path: Path, *sets: str, **named: Any) -> list[str]:
    """The formatted diagnostics compile_plan raises (fails the test if it does not raise)."""
    try:
        plan_of(path, *sets, **named)
    except TopologyError as exc:
        return exc.lines()
    raise AssertionError(f"{path} compiled without errors")


def run_cli(*args: str):
    """Invoke the CLI in-process; returns click's Result (stdout, stderr, exit_code)."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)
