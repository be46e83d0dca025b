"""The pre-commit hooks of .pre-commit-hooks.yaml, run for real: ``pre-commit try-repo`` of this
repository in a temporary git repository holding a valid and an invalid topology. The hooks
are ``script`` hooks that run the ``sgl-gen`` on PATH (here: this tree's, through a wrapper),
so pre-commit installs nothing and works offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import EXAMPLES, REPO

GOOD = (EXAMPLES / "pd.yaml").read_text(encoding="utf-8")
BAD = GOOD.replace("num_gpus_per_engine: 4", "num_gpus_per_engine: four")


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A git repository with topologies/good.yaml and topologies/bad.yaml, good's render
    committed under out/; the environment to run pre-commit in."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "sgl-gen"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m generator.cli \"$@\"\n",
                       encoding="utf-8")
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(REPO), "PRE_COMMIT_HOME": str(tmp_path / "cache"),
           "GIT_CONFIG_GLOBAL": os.devnull}
    # the hooks as this tree has them, in a repository of their own (try-repo takes a
    # repository's commits; this tree's may be uncommitted)
    hooks = tmp_path / "hooks-repo"
    (hooks / "hooks").mkdir(parents=True)
    for rel in (".pre-commit-hooks.yaml", "hooks/sgl-gen-hook.sh"):
        shutil.copy2(REPO / rel, hooks / rel)
    _git(hooks, "init", "-q")
    _git(hooks, "add", "-A")
    _git(hooks, "commit", "-q", "-m", "hooks")
    env["SGLGEN_TEST_HOOKS_REPO"] = str(hooks)
    work = tmp_path / "work"
    (work / "topologies").mkdir(parents=True)
    (work / "topologies" / "good.yaml").write_text(GOOD, encoding="utf-8")
    (work / "topologies" / "bad.yaml").write_text(BAD, encoding="utf-8")
    _git(work, "init", "-q")
    subprocess.run(["sgl-gen", "render", "topologies/good.yaml", "-q"], cwd=work, env=env,
                   check=True, capture_output=True)
    _git(work, "add", "-A")
    _git(work, "commit", "-q", "-m", "topologies")
    return work, env


def try_repo(work: Path, env: dict[str, str], hook: str, *files: str
             ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pre_commit", "try-repo",
                           env["SGLGEN_TEST_HOOKS_REPO"], hook,
                           "--verbose", "--files", *files], cwd=work, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_hook_definitions_are_what_pre_commit_reads() -> None:
    from pre_commit.clientlib import load_manifest

    hooks = load_manifest(str(REPO / ".pre-commit-hooks.yaml"))
    assert [h["id"] for h in hooks] == ["sgl-gen-validate", "sgl-gen-render-check"]
    # no environment to build: nothing is downloaded when the hooks first run
    assert {h["language"] for h in hooks} <= {"script", "unsupported_script"}
    doc = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    for h in doc:
        assert (REPO / h["entry"].split()[0]).stat().st_mode & 0o111


def test_validate_hook_passes_a_valid_topology_and_fails_an_invalid_one(repo) -> None:
    work, env = repo
    ok = try_repo(work, env, "sgl-gen-validate", "topologies/good.yaml")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "topologies/good.yaml: valid: 1 model(s), 5 engine(s), 2 node(s)" in ok.stdout
    bad = try_repo(work, env, "sgl-gen-validate", "topologies/good.yaml", "topologies/bad.yaml")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "topologies/bad.yaml:16:30: sglang[0].server_groups[1].num_gpus_per_engine: must " \
           "be an integer, got string 'four'" in bad.stdout
    assert "topologies/good.yaml: valid" in bad.stdout  # every file is checked


def test_render_check_hook_names_the_stale_files_and_writes_nothing(repo) -> None:
    work, env = repo
    ok = try_repo(work, env, "sgl-gen-render-check", "topologies/good.yaml")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "out/pd: up to date" in ok.stdout
    before = {p: p.read_bytes() for p in (work / "out").rglob("*") if p.is_file()}
    edited = GOOD.replace("num_gpus: 12\n", "num_gpus: 12\n        overrides: "
                          "{mem_fraction_static: 0.7}\n")
    assert edited != GOOD
    (work / "topologies" / "good.yaml").write_text(edited, encoding="utf-8")
    stale = try_repo(work, env, "sgl-gen-render-check", "topologies/good.yaml")
    assert stale.returncode == 1, stale.stdout + stale.stderr
    assert "update    out/pd/hosts/node0/bin/engine-actor-decode-0.sh" in stale.stdout
    assert "out/pd: out of date" in stale.stdout
    assert {p: p.read_bytes() for p in (work / "out").rglob("*") if p.is_file()} == before
