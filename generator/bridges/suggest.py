"""``sgl-gen suggest``: a service goal (model, GPUs, system, ISL/OSL, TTFT/TPOT targets) -> the
best layout by NVIDIA AIConfigurator's offline performance model, as a commented topology.

AIConfigurator (``pip install 'sgl-gen[suggest]'``, pinned to :data:`AIC_VERSION`) is imported
only inside :func:`run_model`, never at import time: without it, every other command works.
Its Python API (``aiconfigurator.cli.api.cli_default``) ranks aggregated against disaggregated
SGLang layouts; each ranked row becomes a :class:`Layout`:

* aggregated: ``total_gpus // gpus_per_replica`` replicas of one worker -> a regular group;
* disaggregated: per replica, ``(p)workers`` prefill and ``(d)workers`` decode workers -> a
  prefill and a decode group.

A worker of ``tp x pp x dp (x cp)`` GPUs: for a dense model ``dp`` data-parallel replicas are
``dp`` engines of ``tp x pp`` behind the router; for a MoE model (its MoE layers span the
attention DP group, ``moe_tp x moe_ep == tp x dp``) it is one engine with ``attn_dp_size`` and
``ep_size``; context parallelism (prefill) is written as ``attn_cp_size`` with a warning. The
batch the estimate assumed per engine becomes ``max_running_requests`` (and, for engines that
decode, ``cuda_graph_max_bs_decode``). Anything else the row says that sgl-gen does not write is
a warning, on stderr and in the header, never dropped silently.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from generator import __version__
from generator.bridges.importers.common import dump, topology_text
from generator.compile.catalog import load_catalog
from generator.compile.loader import parse_text
from generator.compile.place import place
from generator.compile.resolve import resolve
from generator.errors import SglGenError, TopologyError

#: the AIConfigurator release sgl-gen's [suggest] extra pins (its successor, aisimulate, is not
#: installable from PyPI alone: a stub that downloads from NVIDIA's own index)
AIC_VERSION = "0.12.0"
INSTALL_HINT = ("pip install 'sgl-gen[suggest]' (AIConfigurator "
                f"{AIC_VERSION}, Python 3.11+; about 600 MB with pandas, pyarrow, matplotlib)")
MODES = ("agg", "disagg", "auto")
DEFAULT_GPUS_PER_NODE = 8
_LOGGERS = ("aiconfigurator", "aiconfigurator_core")


@dataclass(frozen=True)
class Goal:
    model: str
    gpus: int
    system: str
    isl: int
    osl: int
    ttft: float
    tpot: float
    gpus_per_node: int | None = None
    mode: str = "auto"
    top: int = 1


@dataclass(frozen=True)
class Group:
    """One server group of a layout: ``engines`` engines of ``width`` GPUs."""

    role: str  # regular | prefill | decode
    engines: int
    tp: int
    pp: int
    attn_dp: int = 1
    attn_cp: int = 1
    ep: int = 1
    batch: int = 0  # running requests per engine the estimate assumed
    kv_cache: str = ""  # the KV cache dtype the estimate assumed

    @property
    def width(self) -> int:
        return self.tp * self.pp * self.attn_dp * self.attn_cp

    def describe(self) -> str:
        shape = f"TP{self.tp * self.attn_dp * self.attn_cp}" + f" PP{self.pp}" * (self.pp > 1)
        inner = [f"attention DP{self.attn_dp}"] * (self.attn_dp > 1)
        inner += [f"attention CP{self.attn_cp}"] * (self.attn_cp > 1)
        inner += [f"EP{self.ep}"] * (self.ep > 1)
        role = "" if self.role == "regular" else f"{self.role} "
        return f"{self.engines} {role}x {shape}" + (f" ({', '.join(inner)})" if inner else "")


@dataclass(frozen=True)
class Layout:
    """One ranked row of AIConfigurator's result, in sgl-gen's terms."""

    mode: str  # agg | disagg
    rank: int  # 1-based, within its mode, as the library ranked it
    tokens_per_gpu: float  # tokens/s/GPU over the whole cluster (unused GPUs count)
    tokens_per_user: float
    ttft: float
    tpot: float
    request_latency: float
    concurrency: int  # over all replicas
    replicas: int
    gpus_used: int
    groups: tuple[Group, ...]
    sglang_version: str
    notes: tuple[str, ...] = ()  # what sgl-gen cannot write as the row says

    def describe(self) -> str:
        return " + ".join(g.describe() for g in self.groups)

    def as_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "rank": self.rank, "tokens_per_s_per_gpu": self.tokens_per_gpu,
                "tokens_per_s_per_user": self.tokens_per_user, "ttft_ms": self.ttft,
                "tpot_ms": self.tpot, "request_latency_ms": self.request_latency,
                "concurrency": self.concurrency, "replicas": self.replicas,
                "gpus_used": self.gpus_used, "layout": self.describe(),
                "sglang_version": self.sglang_version, "warnings": list(self.notes),
                "groups": [{"role": g.role, "engines": g.engines, "num_gpus_per_engine": g.width,
                            "tp": g.tp, "pp": g.pp, "attn_dp_size": g.attn_dp,
                            "attn_cp_size": g.attn_cp, "ep_size": g.ep,
                            "max_running_requests": g.batch} for g in self.groups]}


@dataclass
class Suggestion:
    goal: Goal
    gpus_per_node: int
    chosen: str  # the library's pick: agg | disagg
    layouts: dict[str, list[Layout]] = field(default_factory=dict)

    def best(self) -> Layout:
        mode = self.chosen if self.goal.mode == "auto" else self.goal.mode
        rows = self.layouts.get(mode) or []
        if not rows:
            what = {"agg": "aggregated", "disagg": "disaggregated"}[mode]
            raise SglGenError(f"AIConfigurator found no {what} layout that meets TTFT "
                              f"{_num(self.goal.ttft)} ms and TPOT {_num(self.goal.tpot)} ms "
                              f"on {self.goal.gpus} GPUs (hint: relax --ttft/--tpot, give more "
                              f"--gpus, or try --mode auto)")
        return rows[0]

    def ranked(self) -> list[Layout]:
        """Every layout of both modes, best tokens/s/GPU first (ties: agg, then rank)."""
        rows = [r for mode in ("agg", "disagg") for r in self.layouts.get(mode, [])]
        return sorted(rows, key=lambda r: (-r.tokens_per_gpu, r.mode, r.rank))


def _num(x: float) -> str:
    return f"{x:g}"


def library() -> Any:
    """AIConfigurator's API module, or SglGenError (exit 2) saying how to install it."""
    try:
        from aiconfigurator.cli import api
    except ImportError as exc:
        raise SglGenError(f"sgl-gen suggest needs AIConfigurator, which is not installed "
                          f"({exc.name or exc}): {INSTALL_HINT}", exit_code=2) from None
    return api


def library_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aiconfigurator")
    except PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The library logs each skipped candidate and warns of its own deprecation; sgl-gen's
    stdout is the topology. Both are held back while it runs."""
    levels = {name: logging.getLogger(name).level for name in _LOGGERS}
    for name in _LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def supported_systems() -> list[str]:
    """The systems whose AIConfigurator database has SGLang data (offline, from the wheel)."""
    library()
    from aiconfigurator.sdk.perf_database import get_supported_databases

    with _quiet():
        dbs = get_supported_databases()
    return sorted(s for s, backends in dbs.items() if (backends or {}).get("sglang"))


def known_models() -> list[str]:
    library()
    from aiconfigurator.sdk.common import get_default_models

    with _quiet():
        return sorted(get_default_models())


def system_gpus_per_node(system: str) -> int | None:
    """``node.num_gpus_per_node`` of the system's spec in AIConfigurator's data, if it says."""
    import yaml
    from aiconfigurator.sdk.perf_database import get_systems_paths

    for root in get_systems_paths():
        path = os.path.join(root, f"{system}.yaml")
        try:
            with open(path, encoding="utf-8") as f:
                spec = yaml.safe_load(f)
        except (OSError, yaml.YAMLError):
            continue
        node = spec.get("node") if isinstance(spec, dict) else None
        n = node.get("num_gpus_per_node") if isinstance(node, dict) else None
        if isinstance(n, int) and not isinstance(n, bool) and n > 0:
            return n
    return None


def check_goal(goal: Goal) -> None:
    """Refuse (exit 2) what the library would fail on without saying which values it knows."""
    if goal.mode not in MODES:
        raise SglGenError(f"--mode {goal.mode!r}: choose from {', '.join(MODES)}", exit_code=2)
    systems = supported_systems()
    if goal.system not in systems:
        raise SglGenError(f"--system {goal.system!r}: AIConfigurator {library_version()} has no "
                          f"SGLang performance data for it (supported: {', '.join(systems)})",
                          exit_code=2)
    if os.path.isfile(os.path.join(goal.model, "config.json")):
        return  # a local checkout: the library reads its config.json
    models = known_models()
    if goal.model not in models:
        raise SglGenError(
            f"--model {goal.model!r}: not a model AIConfigurator {library_version()} ships the "
            f"config of, nor a directory with a config.json (it would download it, and this "
            f"runs offline); supported: {', '.join(models)}", exit_code=2)


def run_model(goal: Goal) -> Suggestion:
    """Run AIConfigurator's default sweep (agg against disagg, backend sglang) for ``goal``."""
    api = library()
    check_goal(goal)
    gpn = goal.gpus_per_node or system_gpus_per_node(goal.system) or DEFAULT_GPUS_PER_NODE
    try:
        with _quiet():
            result = api.cli_default(model_path=goal.model, total_gpus=goal.gpus,
                                     system=goal.system, backend="sglang", isl=goal.isl,
                                     osl=goal.osl, ttft=float(goal.ttft), tpot=float(goal.tpot),
                                     top_n=max(goal.top, 1))
    except SystemExit as exc:
        raise SglGenError(f"AIConfigurator refused the goal (exit {exc.code}); check --model, "
                          f"--system and --gpus") from None
    except Exception as exc:  # the library's own errors: no feasible layout, bad inputs
        name = type(exc).__name__
        if name in ("NoFeasibleConfigError", "NoResultsError"):
            raise SglGenError(f"AIConfigurator found no layout of {goal.model} on {goal.gpus} "
                              f"{goal.system} GPUs that meets TTFT {_num(goal.ttft)} ms and TPOT "
                              f"{_num(goal.tpot)} ms (hint: relax --ttft/--tpot or give more "
                              f"--gpus)") from None
        raise SglGenError(f"AIConfigurator failed: {name}: {exc}") from None
    out = Suggestion(goal=goal, gpus_per_node=gpn, chosen=str(result.chosen_exp))
    if out.chosen not in ("agg", "disagg"):
        raise SglGenError(f"AIConfigurator chose {out.chosen!r}, which sgl-gen does not know "
                          f"(it reads AIConfigurator {AIC_VERSION}'s agg and disagg)")
    for mode in ("agg", "disagg"):
        df = result.best_configs.get(mode)
        records = [] if df is None else df.to_dict("records")
        out.layouts[mode] = [layout_of(mode, i + 1, rec, goal.gpus, gpn)
                             for i, rec in enumerate(records[:max(goal.top, 1)])]
    return out


def _int(rec: dict[str, Any], key: str, default: int = 1) -> int:
    v = rec.get(key)
    try:
        n = int(v) if v is not None and v == v else default  # (NaN != NaN)
    except (TypeError, ValueError):
        n = default
    return n


def _group(rec: dict[str, Any], p: str, role: str, workers: int, batch_key: str,
           notes: list[str]) -> Group:
    """The engines of ``workers`` workers of one side (``p``: "" agg, "(p)", "(d)")."""
    tp, pp, dp = _int(rec, p + "tp"), _int(rec, p + "pp"), _int(rec, p + "dp")
    moe_tp, moe_ep, cp = _int(rec, p + "moe_tp"), _int(rec, p + "moe_ep"), _int(rec, p + "cp")
    bs, global_bs = _int(rec, p + batch_key, 0), _int(rec, p + "global_" + batch_key, 0)
    kv = str(rec.get(p + "kvcache") or "")
    moe = moe_tp * moe_ep > 1
    what = "" if role == "regular" else f"{role} "
    if moe and moe_tp * moe_ep != tp * dp * cp:
        # SGLang runs the MoE layers over the engine's tp_size GPUs (ep_size of them as experts)
        notes.append(f"{what}MoE layers: AIConfigurator modeled MoE TP{moe_tp} x EP{moe_ep} on "
                     f"a worker of tp{tp} dp{dp} cp{cp}; SGLang splits them over the engine's "
                     f"{tp * dp * cp} GPUs (written: ep_size {moe_ep})")
    if cp > 1:
        notes.append(f"{what}context parallelism {cp}: AIConfigurator modeled SGLang prefill CP, "
                     f"which its own SGLang launch arguments do not carry either; written as "
                     f"attn_cp_size: {cp} and enable_prefill_cp: true, unverified against "
                     f"the estimate (check it with your SGLang version)")
    if moe and dp > 1:
        # attention DP inside one engine whose MoE layers span it (ep over the same GPUs)
        return Group(role, workers, tp, pp, attn_dp=dp, attn_cp=cp, ep=moe_ep,
                     batch=global_bs or bs * dp, kv_cache=kv)
    # a dense model's data-parallel replicas are separate engines behind the router
    return Group(role, workers * dp, tp, pp, attn_cp=cp, ep=moe_ep, batch=bs, kv_cache=kv)


def layout_of(mode: str, rank: int, rec: dict[str, Any], total_gpus: int, gpn: int) -> Layout:
    """One best-configs row -> a Layout; the GPU count must add up to the row's own."""
    per_replica = _int(rec, "num_total_gpus", 0)
    if per_replica < 1:
        raise SglGenError("AIConfigurator's result has no num_total_gpus; sgl-gen cannot read "
                          f"AIConfigurator {library_version()} (it reads {AIC_VERSION})")
    replicas = total_gpus // per_replica
    notes: list[str] = []
    if mode == "agg":
        g = _group(rec, "", "regular", 1, "bs", notes)
        groups: tuple[Group, ...] = (replace(g, engines=g.engines * replicas),)
        dtypes = [("", "")]
    else:
        pre = _group(rec, "(p)", "prefill", _int(rec, "(p)workers"), "bs", notes)
        dec = _group(rec, "(d)", "decode", _int(rec, "(d)workers"), "bs", notes)
        groups = tuple(replace(g, engines=g.engines * replicas) for g in (pre, dec))
        dtypes = [("(p)", "prefill "), ("(d)", "decode ")]
        if _int(rec, "(e)workers", 0) > 0:
            notes.append(f"{_int(rec, '(e)workers', 0)} encoder workers per replica: not "
                         f"written (sgl-gen suggest does not model encoder groups)")
    used = sum(g.engines * g.width for g in groups)
    if used != per_replica * replicas:
        raise SglGenError(f"AIConfigurator's {mode} row {rank} uses {per_replica} GPUs per "
                          f"replica but its workers add up to {used // max(replicas, 1)}; "
                          f"sgl-gen cannot read it (please report this)")
    for p, what in dtypes:
        for key in ("gemm", "fmha", "moe"):
            dtype = str(rec.get(p + key) or "")
            if dtype and dtype not in ("bfloat16", "float16"):
                notes.append(f"{what}{key} {dtype}: the estimate assumes {dtype} weights or "
                             f"kernels; use a checkpoint quantized that way (sgl-gen writes no "
                             f"quantization flag)")
    for g in groups:
        if g.ep > 1 and g.width > gpn:
            notes.append(f"{g.role} engines: expert parallelism {g.ep} across "
                         f"{g.width // gpn} nodes (wide EP): written as ep_size only; "
                         f"AIConfigurator's all-to-all model (moe_a2a_backend) is not")
    if total_gpus > used:
        notes.append(f"{total_gpus - used} of the {total_gpus} GPUs stay unused "
                     f"({replicas} replica(s) of {per_replica} GPUs)")
    return Layout(
        mode=mode, rank=rank, tokens_per_gpu=round(float(rec.get("tokens/s/gpu_cluster") or
                                                          rec.get("tokens/s/gpu") or 0), 3),
        tokens_per_user=round(float(rec.get("tokens/s/user") or 0), 3),
        ttft=round(float(rec.get("ttft") or 0), 3), tpot=round(float(rec.get("tpot") or 0), 3),
        request_latency=round(float(rec.get("request_latency") or 0), 3),
        concurrency=_int(rec, "concurrency", 0) * replicas, replicas=replicas, gpus_used=used,
        groups=groups,
        sglang_version=str(rec.get("version") or rec.get("(d)version") or "?"),
        notes=tuple(dict.fromkeys(notes)))


def _overrides(g: Group, notes: list[str]) -> dict[str, Any]:
    """The group's SGLang overrides for what the estimate assumed, each checked against the
    catalog; one it refuses is a note, not a silent drop."""
    want: dict[str, Any] = {}
    if g.pp > 1:
        want["pp_size"] = g.pp
    if g.attn_dp > 1:
        want["attn_dp_size"] = g.attn_dp
    if g.attn_cp > 1:
        want["attn_cp_size"] = g.attn_cp
        want["enable_prefill_cp"] = True
    if g.ep > 1:
        want["ep_size"] = g.ep
    if g.batch > 0:
        want["max_running_requests"] = g.batch
        if g.role != "prefill":  # a decode batch per (attention DP) rank, as captured
            want["cuda_graph_max_bs_decode"] = max(1, g.batch // g.attn_dp)
    if g.kv_cache and g.kv_cache not in ("bfloat16", "float16"):
        want["kv_cache_dtype"] = {"fp8": "fp8_e4m3"}.get(g.kv_cache, g.kv_cache)
    cat = load_catalog()
    out: dict[str, Any] = {}
    for key, value in want.items():
        spec = cat.get(key)
        problem = f"SGLang {cat.version} has no {key}" if spec is None else spec.check_value(value)
        if problem:
            notes.append(f"{g.role} engines: {key}: {value} not written ({problem})")
        else:
            out[key] = value
    return out


def _name(model: str) -> str:
    """A model or deployment name from a hub id or a path: its last part, lowercase."""
    tail = model.rstrip("/").rsplit("/", 1)[-1].lower()
    name = re.sub(r"[^a-z0-9_-]+", "-", tail).strip("-_")[:63]
    return name if name and name[0].isalnum() else f"m{name}"[:63]


def _model_path(model: str) -> str:
    return os.path.abspath(model) if os.path.isdir(model) else model


def topology(s: Suggestion, layout: Layout) -> tuple[str, list[str]]:
    """The layout as a commented, validated topology; and its warnings (for stderr)."""
    goal = s.goal
    notes = list(layout.notes)
    if library_version() != AIC_VERSION:
        notes.append(f"AIConfigurator {library_version()} is installed; sgl-gen reads the results "
                     f"of {AIC_VERSION} ({INSTALL_HINT.split(' (')[0]} installs it)")
    system_gpn = system_gpus_per_node(goal.system)
    if system_gpn is not None and system_gpn != s.gpus_per_node:
        notes.append(f"--gpus-per-node {s.gpus_per_node}: the estimate assumed {goal.system}'s "
                     f"{system_gpn} GPUs per node (its NVLink domain)")
    groups = []
    for g in layout.groups:
        group: dict[str, Any] = {"worker_type": g.role, "num_gpus": g.engines * g.width,
                                 "num_gpus_per_engine": g.width}
        ov = _overrides(g, notes)
        if ov:
            group["overrides"] = ov
        groups.append(group)
    name = _name(goal.model)
    data: dict[str, Any] = {
        "deployment": {"name": name, "total_gpus": layout.gpus_used},
        "cluster": {"gpus_per_node": s.gpus_per_node},
        "sglang": [{"name": name, "model_path": _model_path(goal.model), "update_weights": False,
                    "server_groups": groups}],
    }
    text = dump(data)
    try:
        parsed, smap = parse_text(text, "<suggest>")
        place(resolve(parsed, smap))
    except TopologyError as exc:
        raise SglGenError("AIConfigurator's best layout is not a topology sgl-gen can place:\n"
                          + "\n".join(exc.lines()) + "\n(hint: try --gpus-per-node, or "
                          "--top K to see the other layouts)") from None
    other = "disagg" if layout.mode == "agg" else "agg"
    rivals = s.layouts.get(other) or []
    mode_name = {"agg": "aggregated", "disagg": "disaggregated"}
    lines = [
        f"Suggested by sgl-gen {__version__} (`sgl-gen suggest`) from NVIDIA AIConfigurator "
        f"{library_version()}'s offline performance model: an estimate, not a measurement.",
        f"Goal: {goal.model} on {goal.gpus} x {goal.system} ({s.gpus_per_node} per node), "
        f"ISL {goal.isl}, OSL {goal.osl}, TTFT <= {_num(goal.ttft)} ms, TPOT <= "
        f"{_num(goal.tpot)} ms, mode {goal.mode}.",
        f"Layout: {mode_name[layout.mode]}, {layout.describe()} ({layout.gpus_used} GPUs); "
        + (f"best {mode_name[other]}: {rivals[0].tokens_per_gpu:.1f} tokens/s/GPU "
           f"({rivals[0].describe()})." if rivals else f"no {mode_name[other]} layout met the "
                                                        f"targets."),
        f"Estimate: {layout.tokens_per_gpu:.1f} tokens/s/GPU, {layout.tokens_per_user:.1f} "
        f"tokens/s/user, TTFT {layout.ttft:.1f} ms, TPOT {layout.tpot:.1f} ms, "
        f"concurrency {layout.concurrency}, on AIConfigurator's SGLang "
        f"{layout.sglang_version} data.",
        "max_running_requests / cuda_graph_max_bs_decode: the batch per engine the estimate "
        "assumed.",
        f"model_path is the --model value ({goal.model}): point it at the checkpoint the hosts "
        "have (--set sglang[0].model_path=...).",
    ]
    warnings_ = [f"warning: {n}" for n in dict.fromkeys(notes)]
    return topology_text(lines + warnings_, data), warnings_


def table(s: Suggestion) -> str:
    """The ranked layouts of both modes as a text table (best tokens/s/GPU first)."""
    head = ("rank", "mode", "tokens/s/GPU", "tokens/s/user", "TTFT ms", "TPOT ms",
            "concurrency", "GPUs", "layout")
    best = s.best()
    rows = [head] + [
        (f"{i}{'*' if r is best else ''}", r.mode, f"{r.tokens_per_gpu:.1f}",
         f"{r.tokens_per_user:.1f}", f"{r.ttft:.1f}", f"{r.tpot:.1f}", str(r.concurrency),
         str(r.gpus_used), r.describe()) for i, r in enumerate(s.ranked(), 1)]
    widths = [max(len(row[c]) for row in rows) for c in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    return "\n".join(lines) + "\n* written as the topology\n"


def as_json(s: Suggestion) -> dict[str, Any]:
    g = s.goal
    best = s.best()
    return {"sgl_gen_version": __version__, "aiconfigurator_version": library_version(),
            "goal": {"model": g.model, "gpus": g.gpus, "system": g.system, "isl": g.isl,
                     "osl": g.osl, "ttft_ms": g.ttft, "tpot_ms": g.tpot,
                     "gpus_per_node": s.gpus_per_node, "mode": g.mode, "top": g.top},
            "chosen": {"mode": best.mode, "rank": best.rank},
            "library_choice": s.chosen,
            "layouts": [r.as_json() for r in s.ranked()]}
