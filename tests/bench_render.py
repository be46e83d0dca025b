"""Render benchmark: 64, 512 and 8,192 GPUs (8 per node, up to 40 models: regular, PD, multi-node,
placeholders). Prints, measured in this one run:

* `sgl-gen render` wall time per size (a fresh process each time, best of --repeat), and the
  8192/512 ratio (linear cost keeps it near 16);
* sgl-gen's in-process render time against the floor — the same files rendered by bare Jinja from
  contexts precomputed by one render (target: at most 1.3x);
* peak memory (max RSS) of the `sgl-gen render` process (target: under 300 MB at 8,192 GPUs);
* start-up: `sgl-gen --help` and `sgl-gen validate` of the 64-GPU topology against
  `python -c pass`, best of --startup-repeat fresh processes each, as ratios (targets: 2x and 3x).

Figures are printed, never asserted: `make bench` (or `python tests/bench_render.py`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jinja2
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from generator.compile.pipeline import compile_plan  # noqa: E402
from generator.paths import TEMPLATES  # noqa: E402
from generator.targets import common as common_mod  # noqa: E402
from generator.targets import plans as plans_mod  # noqa: E402
from generator.targets import render as render_mod  # noqa: E402
from generator.targets.plans import plan_dict  # noqa: E402

GPN = 8
#: (worker groups of one model, GPUs it takes): a repeating mix of model shapes
SHAPES: list[tuple[list[dict[str, Any]], int]] = [
    ([{"worker_type": "regular", "num_gpus": 8, "num_gpus_per_engine": 2}], 8),
    ([{"worker_type": "prefill", "num_gpus": 4, "num_gpus_per_engine": 2},
      {"worker_type": "decode", "num_gpus": 4, "num_gpus_per_engine": 4}], 8),
    ([{"worker_type": "regular", "num_gpus": 16, "num_gpus_per_engine": 16}], 16),
    ([{"worker_type": "placeholder", "num_gpus": 4},
      {"worker_type": "regular", "num_gpus": 4, "num_gpus_per_engine": 1,
       "overrides": {"mem_fraction_static": 0.8, "chat_template": "tmpl's \"x\""}}], 8),
]


def topology(total_gpus: int, max_models: int = 40) -> dict[str, Any]:
    """A topology of exactly ``total_gpus``: models scaled so every group fills whole nodes."""
    unit = sum(g for _, g in SHAPES)  # GPUs of one round of shapes
    rounds = total_gpus // unit
    models: list[dict[str, Any]] = []
    if rounds == 0:  # small sizes: regular models of one node each
        for i in range(total_gpus // GPN):
            models.append({"name": f"m{i}", "server_groups": [SHAPES[0][0][0]]})
        return _wrap(models, total_gpus)
    scale = max(1, -(-rounds * len(SHAPES) // max_models))  # groups grow instead of model count
    used = 0
    i = 0
    while used + scale * SHAPES[i % len(SHAPES)][1] <= total_gpus:
        groups, gpus = SHAPES[i % len(SHAPES)]
        models.append({"name": f"m{i}", "server_groups": [
            {**g, "num_gpus": g["num_gpus"] * scale} for g in groups]})
        used += gpus * scale
        i += 1
    if used < total_gpus:
        models.append({"name": f"m{i}", "server_groups": [
            {"worker_type": "placeholder", "num_gpus": total_gpus - used}]})
    return _wrap(models, total_gpus)


def _wrap(models: list[dict[str, Any]], total: int) -> dict[str, Any]:
    return {"deployment": {"name": f"bench{total}", "hf_checkpoint": "/models/m",
                           "total_gpus": total},
            "cluster": {"gpus_per_node": GPN, "nodes": total // GPN},
            "sglang": models}


def cli_render(path: Path, out: Path) -> tuple[float, int]:
    """Wall seconds and max RSS (KB) of one `sgl-gen render` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "generator.cli", "render", str(path), "-o", str(out),
                    "-q"], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return wall, max(before, after)


def best_wall(argv: list[str], repeat: int, cwd: Path = REPO,
              env: dict[str, str] | None = None) -> float:
    """The best wall seconds of ``repeat`` fresh processes running ``argv`` (output dropped)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL, env=env)
        best = min(best, time.perf_counter() - t0)
    return best


def startup(topo: Path, repeat: int, cwd: Path = REPO, pycache: Path | None = None) -> str:
    """One line: `python -c pass`, `sgl-gen --help` and `sgl-gen validate TOPO` (as
    ``python -m generator.cli`` run from ``cwd``), measured interleaved in this run. With
    ``pycache``: bytecode cached there (as a pip install has it; warmed first), else every
    module compiled from source each run (PYTHONDONTWRITEBYTECODE=1)."""
    import os

    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    if pycache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    cli = [sys.executable, "-m", "generator.cli"]
    runs = {"pass": [sys.executable, "-c", "pass"], "help": [*cli, "--help"],
            "validate": [*cli, "validate", str(topo)]}
    best = {k: float("inf") for k in runs}
    for argv in runs.values():  # (writes the bytecode cache, if any)
        best_wall(argv, 1, cwd, env)
    for _ in range(repeat):  # interleaved, so a busy moment weighs on all three alike
        for k, argv in runs.items():
            best[k] = min(best[k], best_wall(argv, 1, cwd, env))
    how = "bytecode cached" if pycache is not None else "no bytecode cache"
    return (f"start-up, {how} (best of {repeat}): python -c pass {best['pass']:.3f} s | "
            f"sgl-gen --help "
            f"{best['help']:.3f} s = {best['help'] / best['pass']:.2f}x (target 2x) | sgl-gen "
            f"validate {topo.name} {best['validate']:.3f} s = "
            f"{best['validate'] / best['pass']:.2f}x (target 3x)")


def inprocess_and_floor(path: Path, repeat: int) -> tuple[float, float, float, float, int]:
    """Best-of in-process seconds — compile+render, the render stage alone, the floor, the
    floor's template part alone — and the file count.

    The floor produces the same files with nothing but the bare tools, from inputs computed
    beforehand: every template file by bare Jinja from its captured context, every JSON file by
    ``json.dumps(indent=2, sort_keys=True)`` from its data, MANIFEST.sha256 by hashlib over the
    files. Its output is checked byte for byte against sgl-gen's before anything is timed."""
    captured: list[tuple[str, dict[str, Any]]] = []
    real = common_mod.tmpl

    def spy(name: str, **ctx: Any) -> str:
        captured.append((name, ctx))
        return real(name, **ctx)

    common_mod.tmpl = spy  # type: ignore[assignment]
    try:
        plan = compile_plan(path)
        arts = render_mod.render(plan)
    finally:
        common_mod.tmpl = real  # type: ignore[assignment]
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["shq"] = common_mod.shq
    templates = [(env.get_template(name), ctx) for name, ctx in captured]
    data = {"plan.json": plan_dict(plan), "endpoints.json": plans_mod.endpoints(plan),
            "prometheus/targets.json": plans_mod.prometheus_targets(plan)}

    def floor() -> tuple[dict[str, str], list[str]]:
        files = {rel: json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
                 for rel, obj in data.items()}
        rendered = [t.render(**ctx) for t, ctx in templates]
        return files, rendered

    files, rendered = floor()
    mismatch = [rel for rel in files if files[rel] != arts[rel].content]
    by_content: dict[str, list[str]] = {}
    for rel in sorted(set(arts) - set(files) - {"MANIFEST.sha256"}):
        by_content.setdefault(arts[rel].content, []).append(rel)
    try:  # the path of each template render, in render order
        paths = [by_content[text].pop() for text in rendered]
    except (KeyError, IndexError):
        mismatch.append("a template file")
    if mismatch or any(by_content.values()):
        raise SystemExit(f"the floor does not produce sgl-gen's files: {mismatch or 'some'}")
    contents = {**files, **dict(zip(paths, rendered, strict=True))}
    from generator.write import MANIFEST_HEADER

    manifest = MANIFEST_HEADER + "\n" + "".join(
        f"{hashlib.sha256(contents[rel].encode()).hexdigest()}  {rel}\n"
        for rel in sorted(contents))
    if manifest != arts["MANIFEST.sha256"].content:
        raise SystemExit("the floor's MANIFEST.sha256 differs from sgl-gen's")

    best_full = best_stage = best_floor = best_tmpl = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        plan = compile_plan(path)
        t1 = time.perf_counter()
        render_mod.render(plan)
        t2 = time.perf_counter()
        best_full, best_stage = min(best_full, t2 - t0), min(best_stage, t2 - t1)
        t0 = time.perf_counter()
        files, rendered = floor()
        t1 = time.perf_counter()
        contents = {**files, **dict(zip(paths, rendered, strict=True))}
        "".join(f"{hashlib.sha256(contents[rel].encode()).hexdigest()}  {rel}\n"
                for rel in sorted(contents))
        t2 = time.perf_counter()
        best_floor = min(best_floor, t2 - t0)
        t0 = time.perf_counter()
        for t, ctx in templates:
            t.render(**ctx)
        best_tmpl = min(best_tmpl, time.perf_counter() - t0)
    return best_full, best_stage, best_floor, best_tmpl, len(arts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64,512,8192")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--startup-repeat", type=int, default=10)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        topo64 = Path(tmp) / "bench64.yaml"
        topo64.write_text(yaml.safe_dump(topology(64), sort_keys=False), encoding="utf-8")
        print(startup(topo64, args.startup_repeat, pycache=Path(tmp) / "pycache"), flush=True)
        print(startup(topo64, args.startup_repeat), flush=True)
        for n in sizes:
            path = Path(tmp) / f"bench{n}.yaml"
            path.write_text(yaml.safe_dump(topology(n), sort_keys=False), encoding="utf-8")
            plan = compile_plan(path)
            engines = sum(len(m.engines) for m in plan.models)
            walls, again, rss = [], [], 0
            for i in range(args.repeat):
                out = Path(tmp) / f"out{n}-{i}"  # a fresh directory: every file is created
                wall, rss = cli_render(path, out)
                walls.append(wall)
                again.append(cli_render(path, out)[0])  # the same render again: all identical
            full, stage, floor, tmpl, files = inprocess_and_floor(path, args.repeat)
            rows[n] = (min(walls), rss, full, floor)
            print(f"{n:>6} GPUs: {len(plan.models):>3} models, {engines:>5} engines, "
                  f"{files:>6} files | sgl-gen render {min(walls):6.3f} s into a fresh "
                  f"directory, {min(again):6.3f} s again over it (best of {args.repeat}; the "
                  f"disk's share {max(0.0, min(walls) - min(again)):5.3f} s), "
                  f"peak RSS {rss / 1024:6.1f} MB | in-process: compile+render "
                  f"{full:6.3f} s, render stage {stage:6.3f} s, floor {floor:6.3f} s (its "
                  f"templates {tmpl:6.3f} s); render/floor {stage / floor:4.2f}x, "
                  f"compile+render/floor {full / floor:4.2f}x")
    if 512 in rows and 8192 in rows:
        print(f"8192/512 wall-time ratio: {rows[8192][0] / rows[512][0]:.2f} (linear: 16); "
              f"in-process ratio: {rows[8192][2] / rows[512][2]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
