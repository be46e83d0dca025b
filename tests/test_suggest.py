"""`sgl-gen suggest` on the real AIConfigurator (the [suggest] extra), no mock: two goals, each
run once per module (the model takes ~10 s a run on two cores), a dense model that the library
ranks aggregated and one where disaggregation wins; what the command writes is checked against
the library's own result for the same goal (its ranked rows), then validated, rendered and, for
the disaggregated one, brought up behind the real router in rehearsal."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from generator.paths import SCHEMAS
from tests.helpers import REPO, generate, plan_of, run_cli
from tests.tools import STRICT

MODEL = "Qwen/Qwen3-8B"
SYSTEM = "h200_sxm"
GPUS = 8
#: (isl, osl, ttft, tpot): a relaxed goal AIConfigurator 0.12.0 ranks aggregated, and a long
#: prompt with a tight TTFT and TPOT where it ranks disaggregation best
AGG_GOAL = (4000, 500, 600, 30)
DISAGG_GOAL = (8000, 500, 300, 10)
TOP = 3


def need_extra() -> None:
    """A missing [suggest] extra skips by hand and fails in CI (CI=true, or SGLGEN_STRICT=1)."""
    try:
        import aiconfigurator  # noqa: F401
    except ImportError:
        pass
    else:
        return
    why = "the [suggest] extra is not installed: pip install 'sgl-gen[suggest]'"
    if os.environ.get("CI") == "true" or STRICT:
        pytest.fail(f"{why} (CI installs it: .ci/install.sh)")
    pytest.skip(why)


def goal_args(goal: tuple[int, int, int, int]) -> list[str]:
    isl, osl, ttft, tpot = goal
    return ["--model", MODEL, "--gpus", str(GPUS), "--system", SYSTEM, "--isl", str(isl),
            "--osl", str(osl), "--ttft", str(ttft), "--tpot", str(tpot)]


def library_result(goal: tuple[int, int, int, int]) -> Any:
    """The library's own answer for the goal, asked directly (the oracle)."""
    from aiconfigurator.cli.api import cli_default

    isl, osl, ttft, tpot = goal
    logging.getLogger("aiconfigurator").setLevel(logging.CRITICAL)
    logging.getLogger("aiconfigurator_core").setLevel(logging.CRITICAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cli_default(model_path=MODEL, total_gpus=GPUS, system=SYSTEM, backend="sglang",
                           isl=isl, osl=osl, ttft=float(ttft), tpot=float(tpot), top_n=TOP)


class Case:
    """One goal: the library's result, and one `suggest --top K --format json -o FILE` run."""

    def __init__(self, tmp: Path, goal: tuple[int, int, int, int]):
        need_extra()
        self.goal = goal
        self.lib = library_result(goal)
        self.file = tmp / "suggested.yaml"
        r = run_cli("suggest", *goal_args(goal), "--top", str(TOP), "--format", "json",
                    "-o", str(self.file))
        assert r.exit_code == 0, r.output
        self.stderr = r.stderr
        self.json = json.loads(r.stdout)
        self.text = self.file.read_text(encoding="utf-8")
        self.doc = yaml.safe_load(self.text)

    def best_row(self) -> dict[str, Any]:
        return self.lib.best_configs[self.lib.chosen_exp].to_dict("records")[0]

    def groups(self) -> dict[str, dict[str, Any]]:
        return {g["worker_type"]: g for g in self.doc["sglang"][0]["server_groups"]}


@pytest.fixture(scope="module")
def agg(tmp_path_factory) -> Case:
    return Case(tmp_path_factory.mktemp("agg"), AGG_GOAL)


@pytest.fixture(scope="module")
def disagg(tmp_path_factory) -> Case:
    return Case(tmp_path_factory.mktemp("disagg"), DISAGG_GOAL)


def _validates_and_renders(case: Case, tmp_path: Path) -> Any:
    r = run_cli("validate", str(case.file))
    assert r.exit_code == 0, r.output
    # a suggestion names no hosts: its nodes are placeholders, warned; nothing else is
    others = [line for line in r.stderr.splitlines() if "warning" in line
              and "cluster.hosts: names none of the" not in line]
    assert others == [], r.stderr
    r = run_cli("render", str(case.file), "-o", str(tmp_path / "out"))
    assert r.exit_code == 0, r.output
    deployment = case.doc["deployment"]["name"]
    assert (tmp_path / "out" / deployment / "plan.json").is_file()
    return plan_of(case.file)


def _engines(plan: Any, role: str) -> list[Any]:
    return [e for m in plan.models for e in m.engines if e.worker_type == role]


def test_dense_model_aggregated_topology_is_the_librarys_best(agg, tmp_path):
    assert agg.lib.chosen_exp == "agg"
    row = agg.best_row()
    assert row["dp"] == 1 and row["cp"] == 1  # a dense model: engines of tp x pp
    plan = _validates_and_renders(agg, tmp_path)
    engines = _engines(plan, "regular")
    assert len(engines) == GPUS // row["num_total_gpus"]
    assert {(e.tp_size, e.pp_size) for e in engines} == {(row["tp"], row["pp"])}
    assert not _engines(plan, "prefill") and not _engines(plan, "decode")
    overrides = agg.groups()["regular"]["overrides"]
    assert overrides["max_running_requests"] == row["bs"]
    assert overrides["cuda_graph_max_bs_decode"] == row["bs"]
    assert plan.models[0].model_path == MODEL


def test_disaggregated_topology_is_the_librarys_best(disagg, tmp_path):
    assert disagg.lib.chosen_exp == "disagg"
    row = disagg.best_row()
    assert row["(p)dp"] == 1 and row["(d)dp"] == 1 and row["(p)cp"] == 1
    replicas = GPUS // row["num_total_gpus"]
    plan = _validates_and_renders(disagg, tmp_path)
    for side, role in (("(p)", "prefill"), ("(d)", "decode")):
        engines = _engines(plan, role)
        assert len(engines) == row[f"{side}workers"] * replicas, role
        assert {(e.tp_size, e.pp_size) for e in engines} == {(row[f"{side}tp"], row[f"{side}pp"])}
        assert disagg.groups()[role]["overrides"]["max_running_requests"] == row[f"{side}bs"]
    assert plan.models[0].pd
    assert "cuda_graph_max_bs_decode" not in disagg.groups()["prefill"]["overrides"]


@pytest.mark.parametrize("which", ["agg", "disagg"])
def test_header_states_the_estimate_and_the_inputs(which, request):
    case: Case = request.getfixturevalue(which)
    row = case.best_row()
    header = [line for line in case.text.splitlines() if line.startswith("#")]
    text = "\n".join(header)
    isl, osl, ttft, tpot = case.goal
    assert f"{MODEL} on {GPUS} x {SYSTEM}" in text
    assert f"ISL {isl}, OSL {osl}, TTFT <= {ttft} ms, TPOT <= {tpot} ms" in text
    assert f"{row['tokens/s/gpu_cluster']:.1f} tokens/s/GPU" in text
    assert f"TTFT {row['ttft']:.1f} ms, TPOT {row['tpot']:.1f} ms" in text
    other = "disagg" if case.lib.chosen_exp == "agg" else "agg"
    rival = case.lib.best_configs[other].to_dict("records")[0]
    assert f"{rival['tokens/s/gpu_cluster']:.1f} tokens/s/GPU" in text
    # every line of the header is a comment: the rest parses as the topology alone
    assert yaml.safe_load(case.text) == case.doc and "deployment" in case.doc


@pytest.mark.parametrize("which", ["agg", "disagg"])
def test_top_k_json_ranks_both_modes_as_the_library_did(which, request):
    case: Case = request.getfixturevalue(which)
    doc = case.json
    assert doc["chosen"]["mode"] == case.lib.chosen_exp == doc["library_choice"]
    for mode in ("agg", "disagg"):
        lib_rows = case.lib.best_configs[mode].to_dict("records")[:TOP]
        ours = sorted((r for r in doc["layouts"] if r["mode"] == mode), key=lambda r: r["rank"])
        assert [r["tokens_per_s_per_gpu"] for r in ours] == [
            round(x["tokens/s/gpu_cluster"], 3) for x in lib_rows]
        assert [r["tpot_ms"] for r in ours] == [round(x["tpot"], 3) for x in lib_rows]
        assert all(r["gpus_used"] <= GPUS for r in ours)
    speeds = [r["tokens_per_s_per_gpu"] for r in doc["layouts"]]
    assert speeds == sorted(speeds, reverse=True)
    assert doc["layouts"][0]["mode"] == case.lib.chosen_exp


def test_top_k_text_table_and_stdout_topology_are_deterministic(agg, tmp_path):
    """The same goal again: the table as text, and the topology on stdout byte for byte what
    -o wrote the first time."""
    r = run_cli("suggest", *goal_args(AGG_GOAL))
    assert r.exit_code == 0, r.output
    # byte for byte but the schema line: a file URI on stdout, relative to the file with -o
    schema = (SCHEMAS / "topology.schema.json").resolve()
    first, _, rest = r.stdout.partition("\n")
    assert first == f"# yaml-language-server: $schema={schema.as_uri()}"
    assert agg.text.partition("\n")[2] == rest
    rel = Path(os.path.relpath(schema, agg.file.parent)).as_posix()
    assert agg.text.partition("\n")[0] == f"# yaml-language-server: $schema={rel}"
    r = run_cli("suggest", *goal_args(AGG_GOAL), "--top", str(TOP))
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["rank", "mode", "tokens/s/GPU"]
    best = agg.best_row()
    assert lines[1].split()[:3] == ["1*", "agg", f"{best['tokens/s/gpu_cluster']:.1f}"]
    assert len([ln for ln in lines[1:] if ln.split()[1:2] in (["agg"], ["disagg"])]) == len(
        agg.json["layouts"])


def test_mode_forces_the_other_kind(disagg, tmp_path):
    out = tmp_path / "agg.yaml"
    r = run_cli("suggest", *goal_args(DISAGG_GOAL), "--mode", "agg", "-o", str(out))
    assert r.exit_code == 0, r.output
    row = disagg.lib.best_configs["agg"].to_dict("records")[0]
    groups = yaml.safe_load(out.read_text())["sglang"][0]["server_groups"]
    assert [(g["worker_type"], g["num_gpus_per_engine"]) for g in groups] == [
        ("regular", row["tp"] * row["pp"] * row["dp"] * row["cp"])]
    assert groups[0]["num_gpus"] == GPUS // row["num_total_gpus"] * row["num_total_gpus"]


@pytest.mark.parametrize("args, code, says", [
    (["--system", "nope"], 2, "supported: "),
    (["--model", "no-such/model"], 2, "Qwen/Qwen3-32B"),
    (["--format", "json"], 2, "give --top K"),
])
def test_bad_goal_is_a_clear_error(args, code, says):
    need_extra()
    base = goal_args(AGG_GOAL)
    for flag in args[::2]:
        if flag in base:
            i = base.index(flag)
            del base[i:i + 2]
    r = run_cli("suggest", *base, *args)
    assert r.exit_code == code, r.output
    assert says in r.stderr and "Traceback" not in r.output


def test_unreachable_targets_exit_1(tmp_path):
    need_extra()
    out = tmp_path / "none.yaml"
    r = run_cli("suggest", *goal_args((8000, 500, 1, 1)), "-o", str(out))
    assert r.exit_code == 1, r.output
    assert "no layout" in r.stderr and "relax --ttft/--tpot" in r.stderr
    assert not out.exists()


BLOCKED = ("import sys; sys.modules['aiconfigurator'] = None\n"
           "from generator.cli import main\nmain()\n")


def test_without_the_extra_suggest_says_how_to_install_it():
    r = subprocess.run([sys.executable, "-c", BLOCKED, "suggest", *goal_args(AGG_GOAL)],
                       cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "pip install 'sgl-gen[suggest]'" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_the_cli_does_not_import_aiconfigurator():
    code = ("import sys\nimport generator.cli, generator.bridges.suggest\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('aiconfigurator', 'aiconfigurator_core', 'pandas')))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


@pytest.mark.slow
def test_suggested_disaggregated_topology_comes_up_in_rehearsal(disagg, tmp_path):
    out = str(tmp_path / "out")
    r = run_cli("up", str(disagg.file), "--local", "--rehearse", "-o", out, "--timeout", "60")
    try:
        assert r.exit_code == 0, r.output
        plan = plan_of(disagg.file, local=True)
        url = plan.models[0].router.url
        seen = generate(url)
        assert seen["role"] == "decode", seen
    finally:
        down = run_cli("down", str(disagg.file), "--local", "-o", out)
    assert down.exit_code == 0, down.output


@pytest.mark.parametrize("which", ["agg", "disagg"])
def test_every_ranked_row_is_a_placeable_topology_and_nothing_is_dropped(which, request):
    """Each row the library ranked (not only the best) as a topology: it validates, its GPUs
    add up to the row's, and what sgl-gen maps with a caveat (context parallelism) is a
    warning in the header and on stderr's list."""
    from generator.bridges import suggest as sg
    from generator.compile.loader import parse_text
    from generator.compile.place import place
    from generator.compile.resolve import resolve

    case: Case = request.getfixturevalue(which)
    goal = sg.Goal(MODEL, GPUS, SYSTEM, *case.goal, top=TOP)
    s = sg.Suggestion(goal=goal, gpus_per_node=8, chosen=case.lib.chosen_exp)
    s.layouts = {m: [sg.layout_of(m, i + 1, rec, GPUS, 8) for i, rec in enumerate(
        case.lib.best_configs[m].to_dict("records"))] for m in ("agg", "disagg")}
    cp_rows = 0
    for mode, layouts in s.layouts.items():
        for layout, rec in zip(layouts, case.lib.best_configs[mode].to_dict("records"),
                               strict=True):
            text, warned = sg.topology(s, layout)
            data, smap = parse_text(text, "<t>")
            plan = place(resolve(data, smap))
            replicas = GPUS // rec["num_total_gpus"]
            assert sum(e.gpus_per_engine for e in plan.models[0].engines) == (
                replicas * rec["num_total_gpus"])
            cp = max(int(rec.get("cp", rec.get("(p)cp", 1)) or 1), 1)
            if cp > 1:
                cp_rows += 1
                assert any("context parallelism" in w for w in warned)
                assert all(f"# {w}" in text for w in warned)
                role = "regular" if mode == "agg" else "prefill"
                group = next(g for g in data["sglang"][0]["server_groups"]
                             if g["worker_type"] == role)
                assert group["overrides"]["attn_cp_size"] == cp
    if which == "disagg":
        assert cp_rows, "the disaggregated goal's ranking has a context-parallel row"


def test_a_local_model_directory_is_read_and_written_as_the_model_path(agg, tmp_path):
    """--model DIR with the model's config.json (here the one AIConfigurator ships for the hub
    id): the same layout as for the hub id, and DIR, absolute, as the model path."""
    from aiconfigurator_core import __file__ as core

    model = tmp_path / "qwen3-8b"
    model.mkdir()
    shipped = Path(core).parent / "model_configs" / "Qwen--Qwen3-8B_config.json"
    (model / "config.json").write_bytes(shipped.read_bytes())
    out = tmp_path / "local.yaml"
    args = goal_args(AGG_GOAL)
    args[args.index("--model") + 1] = str(model)
    r = run_cli("suggest", *args, "-o", str(out))
    assert r.exit_code == 0, r.output
    doc = yaml.safe_load(out.read_text())
    assert doc["sglang"][0]["model_path"] == str(model.resolve())
    assert doc["sglang"][0]["server_groups"] == agg.doc["sglang"][0]["server_groups"]
    assert run_cli("validate", str(out)).exit_code == 0


CHECK_EXTRA = ("import sys; sys.modules['aiconfigurator'] = None\n"
               "import pytest\n"
               "sys.exit(pytest.main(['-q', '-p', 'no:cacheprovider', "
               "'tests/test_suggest.py::test_unreachable_targets_exit_1']))\n")


@pytest.mark.parametrize("ci, code, says", [("true", 1, "1 failed"), ("", 0, "1 skipped")])
def test_a_missing_extra_fails_in_ci_and_skips_by_hand(ci, code, says):
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "SGLGEN_STRICT")}
    if ci:
        env["CI"] = ci
    r = subprocess.run([sys.executable, "-c", CHECK_EXTRA], cwd=REPO, capture_output=True,
                       text=True, timeout=300, env=env)
    assert r.returncode == code, r.stdout + r.stderr
    assert says in r.stdout and "[suggest] extra is not installed" in r.stdout


@pytest.mark.slow  # a MoE sweep takes ~40 s on two cores
def test_moe_attention_dp_becomes_one_engine_with_attn_dp_size():
    """Qwen3-30B-A3B on 4 GPUs: the library ranks MoE workers with attention DP; each row
    becomes engines of tp x dp GPUs with attn_dp_size dp (and ep_size when the experts are
    split), never dp separate engines, and validates."""
    need_extra()
    from aiconfigurator.cli.api import cli_default

    from generator.bridges import suggest as sg
    from generator.compile.loader import parse_text
    from generator.compile.place import place
    from generator.compile.resolve import resolve

    model, gpus, goal = "Qwen/Qwen3-30B-A3B", 4, (4000, 500, 1000, 20)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lib = cli_default(model_path=model, total_gpus=gpus, system=SYSTEM, backend="sglang",
                          isl=goal[0], osl=goal[1], ttft=float(goal[2]), tpot=float(goal[3]),
                          top_n=TOP)
    s = sg.Suggestion(goal=sg.Goal(model, gpus, SYSTEM, *goal, top=TOP), gpus_per_node=8,
                      chosen=lib.chosen_exp)
    s.layouts = {m: [sg.layout_of(m, i + 1, rec, gpus, 8) for i, rec in enumerate(
        lib.best_configs[m].to_dict("records"))] for m in ("agg", "disagg")}
    attn_dp_rows = 0
    for rec, layout in zip(lib.best_configs["agg"].to_dict("records"), s.layouts["agg"],
                           strict=True):
        if rec["dp"] <= 1 or rec["cp"] > 1:
            continue
        attn_dp_rows += 1
        text, _ = sg.topology(s, layout)
        data, smap = parse_text(text, "<t>")
        plan = place(resolve(data, smap))
        engines = plan.models[0].engines
        assert len(engines) == gpus // rec["num_total_gpus"]
        assert {e.tp_size for e in engines} == {rec["tp"] * rec["dp"]}
        overrides = data["sglang"][0]["server_groups"][0]["overrides"]
        assert overrides["attn_dp_size"] == rec["dp"]
        assert overrides.get("ep_size", 1) == rec["moe_ep"]
        assert overrides["max_running_requests"] == rec["global_bs"]
    assert attn_dp_rows, "the MoE goal's aggregated ranking has an attention-DP row"
