"""``sgl-gen import rlinf``: RLinf's SGLang server + router launcher config -> a topology.

``cluster.num_nodes`` -> ``cluster.nodes``; ``cluster.component_placement.<component>`` (a string
``all`` / ``A-B`` of hardware ranks, or ``{node_group, placement}``) -> where the engines go, with
RLinf's rule that the hardware ranks are contiguous; ``cluster.node_groups`` (``label``,
``node_ranks``) -> ``cluster.node_groups``; the args block (``router_server_args`` by default):
``tensor_parallel_size`` x ``pipeline_parallel_size`` -> engine width, ``model_path`` ->
``hf_checkpoint``, ``server`` -> overrides, ``router`` -> router arguments (``policy`` ->
``router.policy``); the router runs on node 0, as RLinf starts it. RLinf configs carry no GPUs per
node: ``--gpus-per-node`` (default 8).
"""

from __future__ import annotations

import re
from typing import Any

from generator.bridges.importers.common import Report, deployment_name, emit, server_args
from generator.compile.loader import PathT, load_file
from generator.compile.options import Setting
from generator.compile.routers import load_router_catalog
from generator.compile.validate import did_you_mean

_RANGE = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")
_INTERP = re.compile(r"\$\{\.\.([A-Za-z_][A-Za-z0-9_]*)\}")
#: server keys the launcher fills in at run time, and those sgl-gen derives from the args block
_RUNTIME = {"host", "port", "dist_init_addr"}
_DERIVED = {"model_path", "tp_size", "pp_size", "tensor_parallel_size", "pipeline_parallel_size"}


def _ranks(value: Any) -> list[int] | None:
    """``3`` / ``"1-3"`` / ``[0, 2]`` -> a list of ranks; None if unreadable."""
    if type(value) is int and value >= 0:
        return [value]
    if isinstance(value, list) and all(type(v) is int and v >= 0 for v in value):
        return list(value)
    if isinstance(value, str):
        out: list[int] = []
        for part in value.split(","):
            m = _RANGE.fullmatch(part)
            if not m:
                return None
            a, b = int(m[1]), int(m[2] or m[1])
            if b < a:
                return None
            out += range(a, b + 1)
        return out
    return None


def _find_args(data: dict[str, Any], key: str | None) -> str | None:
    if key is not None:
        return key if isinstance(data.get(key), dict) else None
    if isinstance(data.get("router_server_args"), dict):
        return "router_server_args"
    found = [k for k, v in data.items() if isinstance(v, dict) and "server" in v
             and ("router" in v or "tensor_parallel_size" in v)]
    return found[0] if len(found) == 1 else None


def import_rlinf(file: str, settings: list[Setting], *, component: str = "rollout",
                 args_key: str | None = None) -> tuple[str, list[str]]:
    data, smap = load_file(file)
    report = Report(smap)
    if not isinstance(data, dict) or not isinstance(data.get("cluster"), dict):
        report.error((), "no 'cluster' section: RLinf places components there")
        report.raise_if_errors()
    cluster = data["cluster"]
    akey = _find_args(data, args_key)
    if akey is None:
        report.error((), f"no args block{f' {args_key!r}' if args_key else ''}: the mapping with "
                         "tensor_parallel_size, server and router (router_server_args in RLinf's "
                         "guide)", "name it with --args-key")
        report.raise_if_errors()
    assert akey is not None
    args = data[akey]
    for key in data:
        if key not in ("cluster", akey):
            report.not_mapped((key,), f"not part of the SGLang launcher config ({akey})")

    # -- cluster --------------------------------------------------------------------------------
    nodes = cluster.get("num_nodes")
    if nodes is not None and (type(nodes) is not int or nodes < 1):
        report.error(("cluster", "num_nodes"), f"expected a positive integer, got {nodes!r}")
        nodes = None
    groups: dict[str, list[int]] = {}
    node_groups = cluster.get("node_groups") or []
    if not isinstance(node_groups, list):
        report.error(("cluster", "node_groups"), "expected a list of {label, node_ranks}")
        node_groups = []
    for i, g in enumerate(node_groups):
        gpath: PathT = ("cluster", "node_groups", i)
        if not isinstance(g, dict) or not isinstance(g.get("label"), str):
            report.error(gpath, "a node group needs a label")
            continue
        ranks = _ranks(g.get("node_ranks"))
        if ranks is None:
            report.error(gpath + ("node_ranks",), f"cannot read node_ranks {g.get('node_ranks')!r}",
                         "an integer, 'A-B' or a list")
            continue
        groups[g["label"]] = ranks
        for k in g:
            if k not in ("label", "node_ranks"):
                report.not_mapped(gpath + (k,), "node-group hardware/env settings are RLinf's")
    for k in cluster:
        if k not in ("num_nodes", "node_groups", "component_placement"):
            report.not_mapped(("cluster", k), "not a placement setting sgl-gen reads")

    placements = cluster.get("component_placement")
    ppath: PathT = ("cluster", "component_placement", component)
    if placements is not None and not isinstance(placements, dict):
        report.error(("cluster", "component_placement"), "expected a mapping of component "
                     "names to placements")
        report.raise_if_errors()
    if not isinstance(placements, dict) or component not in placements:
        report.error(("cluster", "component_placement") if isinstance(placements, dict)
                     else ("cluster",), f"no placement for component '{component}'",
                     did_you_mean(component, [str(k) for k in placements or {}]) or
                     "choose it with --component", key=True)
        report.raise_if_errors()
    assert isinstance(placements, dict)
    for other in placements:
        if other != component:
            report.not_mapped(("cluster", "component_placement", other),
                              f"another component (importing '{component}')")
    spec = placements[component]
    node_group: str | None = None
    where: Any = spec
    if isinstance(spec, dict):
        node_group = spec.get("node_group")
        where = spec.get("placement", "all")
        for k in spec:
            if k not in ("node_group", "placement"):
                report.not_mapped(ppath + (k,), "not a placement field RLinf's launcher reads")
        if isinstance(node_group, list):
            report.error(ppath + ("node_group",), "engines spanning several node groups are not "
                         "supported yet", "define one node group with all their node ranks")
            node_group = None
        elif node_group is not None and not isinstance(node_group, str):
            report.error(ppath + ("node_group",), f"expected a node-group label, got {node_group!r}")
            node_group = None
        elif node_group is not None and node_group not in groups:
            report.error(ppath + ("node_group",), f"unknown node group {node_group!r}",
                         did_you_mean(str(node_group), list(groups)))
            node_group = None
    wpath = ppath + ("placement",) if isinstance(spec, dict) else ppath
    hw: list[int] | None = None
    if where != "all":
        if isinstance(where, str) and ":" in where:
            report.error(wpath, f"placement {where!r} names node and accelerator ranks: RLinf "
                         "builds a FlexiblePlacementStrategy for it, which sgl-gen cannot "
                         "express", "use 'all' or a contiguous range of hardware ranks")
        else:
            hw = _ranks(where)
            if not hw:
                hw = None
                report.error(wpath, f"cannot read placement {where!r}", "'all' or 'A-B'")
            elif hw != list(range(hw[0], hw[0] + len(hw))):
                report.error(wpath, "hardware ranks are not contiguous (RLinf requires it for "
                                    "the flat-rank launcher)")

    # -- args block -----------------------------------------------------------------------------
    base: PathT = (akey,)
    tp = args.get("tensor_parallel_size", 1)
    pp = args.get("pipeline_parallel_size", 1)
    for key, value in (("tensor_parallel_size", tp), ("pipeline_parallel_size", pp)):
        if type(value) is not int or value < 1:
            report.error(base + (key,), f"expected a positive integer, got {value!r}")
    server = args.get("server") or {}
    plain: dict[str, Any] = {}
    if not isinstance(server, dict):
        report.error(base + ("server",), "expected a mapping of ServerArgs fields")
        server = {}
    for key, value in server.items():
        norm = str(key).replace("-", "_")
        if norm in _RUNTIME:
            report.error(base + ("server", key), f"'{key}' is filled in at run time (by RLinf, "
                         "and by sgl-gen)", "leave it unset, as RLinf's guide says", key=True)
        elif norm in _DERIVED:
            m = _INTERP.fullmatch(str(value))
            expected = {"model_path": "model_path", "tp_size": "tensor_parallel_size",
                        "tensor_parallel_size": "tensor_parallel_size",
                        "pp_size": "pipeline_parallel_size",
                        "pipeline_parallel_size": "pipeline_parallel_size"}[norm]
            if m is None and value != args.get(expected):
                report.error(base + ("server", key), f"{key}: {value!r} differs from the args "
                             f"block's {expected} {args.get(expected)!r}",
                             f"write ${{..{expected}}} as RLinf's guide does")
        else:
            plain[key] = value
    overrides = server_args(report, plain, base + ("server",))
    model_path = args.get("model_path")
    if model_path is not None and not isinstance(model_path, str):
        report.error(base + ("model_path",), f"expected a path, got {model_path!r}")
        model_path = None
    router_args: dict[str, Any] = {}
    policy = None
    rcat = load_router_catalog("sglang-router")
    router = args.get("router") or {}
    if not isinstance(router, dict):
        report.error(base + ("router",), "expected a mapping of launch_router arguments")
        router = {}
    for key, value in router.items():
        norm = str(key).replace("-", "_")
        rpath = base + ("router", key)
        if norm == "policy":
            policy = value
        elif norm in ("host", "port"):
            report.error(rpath, f"'{key}' is assigned by sgl-gen", key=True)
        elif rcat.get(norm) is None:
            report.error(rpath, f"unknown sglang-router {rcat.version} argument '{key}'",
                         did_you_mean(norm, list(rcat.names)), key=True)
        else:
            problem = rcat.check_value(norm, value)
            if problem:
                report.error(rpath, problem)
            else:
                router_args[norm] = value
    for key in args:
        if key in ("tensor_parallel_size", "pipeline_parallel_size", "server", "router",
                   "model_path"):
            continue
        why = {"group_name": "a Ray worker-group name", "router_group_name":
               "a Ray worker-group name", "launch_server": "sgl-gen always starts the engines",
               "launch_router": "sgl-gen always starts one router per model"}.get(
                   key, "not a launcher setting sgl-gen knows")
        if key in ("launch_server", "launch_router") and args[key] is True:
            continue  # what sgl-gen does anyway
        report.not_mapped(base + (key,), why)
    report.raise_if_errors()

    # -- topology -------------------------------------------------------------------------------
    width = tp * pp
    gpn = next((int(s.value) for s in settings if s.path == ("cluster", "gpus_per_node")
                and type(s.value) is int), 8)
    pool_nodes = groups[node_group] if node_group else list(range(nodes or 1))
    pool = len(pool_nodes) * gpn
    first, count = (0, pool) if hw is None else (hw[0], len(hw))
    if first + count > pool:
        report.error(wpath, f"hardware ranks {first}-{first + count - 1} exceed the "
                            f"{pool} GPUs of {len(pool_nodes)} node(s) x {gpn}")
    elif count % width:
        report.error(wpath, f"{count} GPUs are not a multiple of tensor_parallel_size x "
                            f"pipeline_parallel_size = {width}")
    report.raise_if_errors()
    sg: list[dict[str, Any]] = []
    if first:
        sg.append({"worker_type": "placeholder", "num_gpus": first})
    group: dict[str, Any] = {"worker_type": "regular", "num_gpus": count,
                             "num_gpus_per_engine": width}
    if pp > 1:
        overrides["pp_size"] = pp
    if overrides:
        group["overrides"] = dict(sorted(overrides.items()))
    sg.append(group)
    model: dict[str, Any] = {"name": component, "server_groups": sg}
    if node_group:
        model["node_group"] = node_group
    # RLinf launches its one router on node 0, wherever the engines are
    model["router"] = {**({"policy": policy} if policy is not None else {}), "node": 0,
                       **({"args": router_args} if router_args else {})}
    doc: dict[str, Any] = {"deployment": {"name": deployment_name(file, "rlinf")},
                           "cluster": {}, "sglang": [model]}
    if model_path:
        doc["deployment"]["hf_checkpoint"] = model_path
    if nodes is not None:
        doc["cluster"]["nodes"] = nodes
    if groups:
        doc["cluster"]["node_groups"] = groups
    if not doc["cluster"]:
        del doc["cluster"]
    notes = [f"{count // width} engine(s) of tp {tp} x pp {pp} on "
             f"{'node group ' + node_group if node_group else 'the cluster'}"
             f"{'' if hw is None else f', hardware ranks {first}-{first + count - 1}'}."]
    return emit(doc, f"RLinf {file}", "sgl-gen import rlinf", settings, notes, report)
