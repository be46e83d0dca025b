"""``sgl-gen plan FILE --against OLD``: the offline review of a change, judged by deploy's own
decision (decide.decide) against OLD as if it ran on its hosts.

Each test renders a topology into ``out/``, edits the same file (the path is part of the
render, as in a repository), and reviews the edit against the render: from a rendered directory
and from its plan.json. The Markdown form is the golden file tests/data/plan-against.md
(refresh: SGLGEN_REFRESH_GOLDEN=1 pytest tests/test_plan_against.py; never created by it).
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, run_cli

GOLDEN = REPO / "tests" / "data" / "plan-against.md"

BASE = """\
deployment: {name: rev, hf_checkpoint: /models/m}
cluster:
  gpus_per_node: 4
  hosts:
    - {name: a, address: 10.0.0.1, gpus: [0, 1, 2, 3]}
    - {name: b, address: 10.0.0.2, gpus: [0, 1, 2, 3]}
sglang:
  - name: actor
    server_groups:
      - {worker_type: prefill, num_gpus: 2, num_gpus_per_engine: 1}
      - {worker_type: decode, num_gpus: 2, num_gpus_per_engine: 2}
  - name: judge
    server_groups:
      - {worker_type: regular, num_gpus: 2, num_gpus_per_engine: 1}
"""

ALL_UNITS = {"engine-actor-prefill-0", "engine-actor-prefill-1", "engine-actor-decode-0",
             "router-actor", "engine-judge-regular-0", "engine-judge-regular-1", "router-judge"}


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "topo.yaml").write_text(BASE, encoding="utf-8")
    r = run_cli("render", "topo.yaml", "-o", "out", "-q")
    assert r.exit_code == 0, r.output
    return tmp_path


def review(new_text: str, against: str = "out/rev", *extra: str) -> dict[str, Any]:
    Path("topo.yaml").write_text(new_text, encoding="utf-8")
    r = run_cli("plan", "topo.yaml", "--against", against, "--format", "json", *extra)
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def changes(doc: dict[str, Any]) -> dict[str, str]:
    """unit -> its change, for every unit of every model."""
    return {u["unit"]: u["change"] for m in doc["models"] for u in m["units"]}


def unit(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(u for m in doc["models"] for u in m["units"] if u["unit"] == name)


def test_an_unchanged_render_has_an_empty_summary(work: Path) -> None:
    for against in ("out/rev", "out/rev/plan.json"):
        doc = review(BASE, against)
        assert doc["changed"] is False
        assert doc["summary"] == {"added": 0, "removed": 0, "moved": 0, "restarted": 0,
                                  "updated": 0, "unchanged": len(ALL_UNITS)}
        assert changes(doc) == dict.fromkeys(ALL_UNITS, "unchanged")
    r = run_cli("plan", "topo.yaml", "--against", "out/rev", "--format", "markdown")
    assert r.exit_code == 0
    assert r.stdout == ("### sgl-gen plan `rev` against `out/rev`\n\n**0 added, 0 removed, 0 "
                        "moved, 0 restarted, 0 updated, 7 unchanged**\n\nNo changes: a deploy "
                        "would restart nothing.\n")


@pytest.mark.parametrize("against", ["out/rev", "out/rev/plan.json"])
def test_a_changed_override_restarts_exactly_that_group(work: Path, against: str) -> None:
    new = BASE.replace("{worker_type: decode, num_gpus: 2, num_gpus_per_engine: 2}",
                       "{worker_type: decode, num_gpus: 2, num_gpus_per_engine: 2, "
                       "overrides: {mem_fraction_static: 0.7}}")
    doc = review(new, against)
    assert changes(doc) == {**dict.fromkeys(ALL_UNITS, "unchanged"),
                            "engine-actor-decode-0": "restarted"}
    u = unit(doc, "engine-actor-decode-0")
    assert u["flags"] == {"added": {"--mem-fraction-static": "0.7"}, "removed": {},
                          "changed": {}}
    assert u["reason"] == "its files changed"
    if against == "out/rev":
        assert doc["basis"] == "files"
        assert u["files"] == ["bin/engine-actor-decode-0.sh"]
    else:
        assert doc["basis"] == "plan.json"
    assert doc["summary"]["restarted"] == 1 and doc["changed"] is True


def test_an_added_model_adds_its_engines_and_router_only(work: Path) -> None:
    new = BASE + ("  - name: reward\n    server_groups:\n"
                  "      - {worker_type: regular, num_gpus: 2, num_gpus_per_engine: 1}\n")
    doc = review(new)
    assert changes(doc) == {**dict.fromkeys(ALL_UNITS, "unchanged"),
                            "engine-reward-regular-0": "added",
                            "engine-reward-regular-1": "added", "router-reward": "added"}
    reward = next(m for m in doc["models"] if m["name"] == "reward")
    assert reward["capacity"] == {"regular": {"before": {"engines": 0, "gpus": 0},
                                              "after": {"engines": 2, "gpus": 2}}}
    assert [u["gpus"] for u in reward["units"]] == [[2], [3], []]


def test_a_removed_engine_goes_and_its_router_is_updated_live(work: Path) -> None:
    new = BASE.replace("{worker_type: regular, num_gpus: 2, num_gpus_per_engine: 1}",
                       "{worker_type: regular, num_gpus: 1, num_gpus_per_engine: 1}")
    doc = review(new)
    assert changes(doc) == {**dict.fromkeys(ALL_UNITS, "unchanged"),
                            "engine-judge-regular-1": "removed", "router-judge": "updated"}
    assert unit(doc, "engine-judge-regular-1")["host"] == "b"
    router = unit(doc, "router-judge")
    assert router["reason"] == "only its workers changed: updated live, not restarted"
    assert list(router["flags"]["changed"]) == ["--worker-urls"]
    judge = next(m for m in doc["models"] if m["name"] == "judge")
    assert judge["capacity"] == {"regular": {"before": {"engines": 2, "gpus": 2},
                                             "after": {"engines": 1, "gpus": 1}}}


def test_a_gpu_move_is_a_move_with_both_gpu_sets(work: Path) -> None:
    new = BASE.replace("address: 10.0.0.2, gpus: [0, 1, 2, 3]", "address: 10.0.0.2, "
                       "gpus: [2, 3, 0, 1]")
    doc = review(new)
    assert changes(doc) == {**dict.fromkeys(ALL_UNITS, "unchanged"),
                            "engine-judge-regular-0": "moved", "engine-judge-regular-1": "moved"}
    u = unit(doc, "engine-judge-regular-0")
    assert (u["host"], u["host_before"], u["gpus_before"], u["gpus"]) == ("b", "b", [0], [2])
    assert doc["summary"]["moved"] == 2


def test_an_engine_on_another_host_is_a_host_move(work: Path) -> None:
    """Host b replaced by c (a new machine): judge's engines and its router, which ran on b,
    move there; nothing on host a changes."""
    new = BASE.replace("{name: b, address: 10.0.0.2", "{name: c, address: 10.0.0.3")
    doc = review(new)
    assert changes(doc) == {**dict.fromkeys(ALL_UNITS, "unchanged"),
                            "engine-judge-regular-0": "moved", "engine-judge-regular-1": "moved",
                            "router-judge": "moved"}
    for name in ("engine-judge-regular-1", "router-judge"):
        u = unit(doc, name)
        assert (u["host_before"], u["host"]) == ("b", "c")
    assert "host b -> c" in run_cli("plan", "topo.yaml", "--against", "out/rev").stdout


def test_the_markdown_form_is_the_golden_file(work: Path) -> None:
    new = BASE.replace("{worker_type: decode, num_gpus: 2, num_gpus_per_engine: 2}",
                       "{worker_type: decode, num_gpus: 2, num_gpus_per_engine: 2, "
                       "overrides: {mem_fraction_static: 0.7}}").replace(
        "{worker_type: regular, num_gpus: 2, num_gpus_per_engine: 1}",
        "{worker_type: regular, num_gpus: 1, num_gpus_per_engine: 1}") + (
        "  - name: reward\n    server_groups:\n"
        "      - {worker_type: regular, num_gpus: 2, num_gpus_per_engine: 1}\n")
    Path("topo.yaml").write_text(new, encoding="utf-8")
    r = run_cli("plan", "topo.yaml", "--against", "out/rev", "--format", "markdown")
    assert r.exit_code == 0, r.output
    if os.environ.get("SGLGEN_REFRESH_GOLDEN") and GOLDEN.exists():
        GOLDEN.write_text(r.stdout, encoding="utf-8")
    want = GOLDEN.read_text(encoding="utf-8")
    assert r.stdout == want, "".join(difflib.unified_diff(
        want.splitlines(True), r.stdout.splitlines(True), str(GOLDEN), "plan --format markdown"))


def test_options_of_against_alone_and_bad_old_are_clear_errors(work: Path) -> None:
    r = run_cli("plan", "topo.yaml", "--format", "json")
    assert r.exit_code == 2 and "--format: applies only with --against OLD" in r.stderr
    r = run_cli("plan", "topo.yaml", "--against", "out/rev", "--json")
    assert r.exit_code == 2 and "with --against use --format json" in r.stderr
    r = run_cli("plan", "topo.yaml", "--against", "nowhere")
    assert r.exit_code == 1 and "nowhere: no such rendered directory or plan.json" in r.stderr
    r = run_cli("plan", "topo.yaml", "--against", "nowhere", "--format", "json")
    assert r.exit_code == 1 and json.loads(r.stdout) == {
        "deployment": "rev", "ok": False, "exit_code": 1,
        "error": "nowhere: no such rendered directory or plan.json"}
    Path("bad.json").write_text("{", encoding="utf-8")
    r = run_cli("plan", "topo.yaml", "--against", "bad.json")
    assert r.exit_code == 1 and r.stderr.startswith("bad.json: not a plan.json: ")
    Path("out/rev/plan.json").write_text("{}", encoding="utf-8")
    r = run_cli("plan", "topo.yaml", "--against", "out/rev")
    assert r.exit_code == 1 and "out/rev/plan.json: changed since it was rendered" in r.stderr
