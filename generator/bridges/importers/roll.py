"""``sgl-gen import roll``: ROLL's ``actor_infer`` SGLang strategy -> a topology.

``strategy_args.strategy_config`` becomes the group's overrides (``load_format: dummy`` is kept:
ROLL updates the weights right after start-up), ``num_gpus_per_worker`` the engine width, and
``device_mapping`` (a list, or ROLL's ``list(range(a,b))`` string) the GPUs: engines =
len(device_mapping) // num_gpus_per_worker, laid out from the first id (GPUs before it are reserved
by a placeholder group). ROLL configs carry no GPUs-per-node (``--gpus-per-node``, default 8) and
often no model path (``--hf-checkpoint``).
"""

from __future__ import annotations

import re
from typing import Any

from generator.bridges.importers.common import Report, deployment_name, emit, server_args
from generator.compile.loader import load_file
from generator.compile.options import Setting

_RANGE = re.compile(r"\s*list\(\s*range\(\s*(\d+)\s*,\s*(\d+)\s*(?:,\s*(\d+)\s*)?\)\s*\)\s*")
COMPONENT = "actor_infer"


def parse_device_mapping(value: Any) -> list[int] | None:
    if isinstance(value, str):
        m = _RANGE.fullmatch(value)
        if not m:
            return None
        start, stop, step = int(m[1]), int(m[2]), int(m[3] or 1)
        return list(range(start, stop, step)) if step > 0 else None
    if isinstance(value, list) and all(type(v) is int and v >= 0 for v in value):
        return list(value)
    return None


def import_roll(file: str, settings: list[Setting]) -> tuple[str, list[str]]:
    data, smap = load_file(file)
    report = Report(smap)
    if not isinstance(data, dict) or not isinstance(data.get(COMPONENT), dict):
        report.error((), f"no '{COMPONENT}' section: sgl-gen imports ROLL's inference component")
        report.raise_if_errors()
    comp = data[COMPONENT]
    base = (COMPONENT,)
    for key in data:
        if key not in (COMPONENT, "pretrain"):
            report.not_mapped((key,), f"'{key}' is not the SGLang inference component")
    sa = comp.get("strategy_args")
    if not isinstance(sa, dict):
        report.error(base, "no strategy_args: nothing says this component runs SGLang")
        report.raise_if_errors()
    sbase = base + ("strategy_args",)
    if sa.get("strategy_name") != "sglang":
        report.error(sbase + ("strategy_name",) if "strategy_name" in sa else sbase,
                     f"strategy_name is {sa.get('strategy_name')!r}, not 'sglang'",
                     "sgl-gen deploys SGLang engines only")
    overrides = server_args(report, sa.get("strategy_config", {}),
                            sbase + ("strategy_config",))
    for key in sa:
        if key not in ("strategy_name", "strategy_config"):
            report.not_mapped(sbase + (key,), "not a ROLL SGLang strategy field sgl-gen knows")
    width = comp.get("num_gpus_per_worker", 1)
    if type(width) is not int or width < 1:
        report.error(base + ("num_gpus_per_worker",), f"expected a positive integer, got {width!r}")
        width = 1
    raw = comp.get("device_mapping")
    gpus = parse_device_mapping(raw) if raw is not None else None
    if raw is None:
        report.error(base, "no device_mapping: ROLL places the engines on those GPUs")
    elif gpus is None or not gpus:
        report.error(base + ("device_mapping",), f"cannot read device_mapping {raw!r}",
                     "a list of GPU ids or 'list(range(START, STOP))'")
    elif gpus != list(range(gpus[0], gpus[0] + len(gpus))):
        report.error(base + ("device_mapping",), "device_mapping is not a contiguous range of "
                     "GPU ids", "sgl-gen lays engines out on consecutive GPUs")
    elif len(gpus) % width:
        report.error(base + ("device_mapping",), f"{len(gpus)} GPUs are not a multiple of "
                     f"num_gpus_per_worker {width}")
    for key in comp:
        if key not in ("strategy_args", "num_gpus_per_worker", "device_mapping"):
            report.not_mapped(base + (key,), {
                "generating_args": "sampling parameters travel with each request",
                "model_args": "training-side model settings",
                "infer_batch_size": "SGLang batches continuously",
            }.get(key, "not an SGLang serving setting"))
    report.raise_if_errors()
    assert gpus is not None
    groups: list[dict[str, Any]] = []
    if gpus[0]:
        groups.append({"worker_type": "placeholder", "num_gpus": gpus[0]})
    group: dict[str, Any] = {"worker_type": "regular", "num_gpus": len(gpus),
                             "num_gpus_per_engine": width}
    if overrides:
        group["overrides"] = overrides
    groups.append(group)
    doc: dict[str, Any] = {"deployment": {"name": deployment_name(file, "roll")},
                           "sglang": [{"name": COMPONENT.replace("_", "-"),
                                       "server_groups": groups}]}
    if isinstance(data.get("pretrain"), str):
        doc["deployment"]["hf_checkpoint"] = data["pretrain"]
    notes = [f"{len(gpus) // width} engine(s) of {width} GPU(s) on GPUs {gpus[0]}-{gpus[-1]} "
             f"(device_mapping)."]
    return emit(doc, f"ROLL {file}", "sgl-gen import roll", settings, notes, report)
