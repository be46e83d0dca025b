"""Shared test helpers (plain functions; fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
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


def not_warnings(stderr: str) -> list[str]:
    """The lines of ``stderr`` that are not warnings (``FILE:L:C: warning: ...``)."""
    return [line for line in stderr.splitlines() if ": warning: " not in line]


def run_cli(*args: str):
    """Invoke the CLI in-process; returns click's Result (stdout, stderr, exit_code)."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def reseal(rendered: Path) -> None:
    """Rewrite MANIFEST.sha256 for the files now in a rendered directory (a hand-edited render
    is deployed only with its manifest updated)."""
    import hashlib

    from generator.write import MANIFEST_HEADER

    files = sorted(p for p in rendered.rglob("*") if p.is_file() and p.name != "MANIFEST.sha256")
    (rendered / "MANIFEST.sha256").write_text(MANIFEST_HEADER + "\n" + "".join(
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(rendered).as_posix()}\n"
        for p in files))


def generate(router: str) -> dict[str, Any]:
    """One ``/generate`` through a router (or an engine) to the rehearsal engine: its
    ``sgl_gen`` identity block (engine_id, role, ...)."""
    import json
    import urllib.request

    req = urllib.request.Request(
        f"{router}/generate", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"text": "hello", "sampling_params": {"max_new_tokens": 1}}).encode())
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
        return dict(json.loads(r.read())["sgl_gen"])


def sbatch_job(text: str) -> dict[str, Any]:
    """The job description at the end of a rendered sbatch (the heredoc lib/sgljob.py reads)."""
    start = text.index("<<'SGLGEN_JOB_JSON'\n") + len("<<'SGLGEN_JOB_JSON'\n")
    return json.loads(text[start:text.index("\nSGLGEN_JOB_JSON\n", start)])


def sbatch_steps(text: str) -> list[tuple[str, str]]:
    """(unit, bash function) of every unit the sbatch's job starts, in start order."""
    units = sbatch_job(text)["units"]
    return [(u["unit"], u["func"]) for u in sorted(units, key=lambda u: u["phase"])]


def run_all(commands: list[list[str]], **kw: Any) -> list[subprocess.CompletedProcess[str]]:
    """Run ``commands`` (each a subprocess.run argv, output captured as text) as many at a
    time as the machine has cores; results in order."""
    from concurrent.futures import ThreadPoolExecutor

    def one(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, capture_output=True, text=True, **kw)

    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        return list(pool.map(one, commands))
