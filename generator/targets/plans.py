"""The plan as data: ``plan.json``, the machine-readable plan (documented in the README;
``plan_version`` bumps on any incompatible change), ``endpoints.json`` (what a trainer needs, also
written by the Slurm job with real addresses) and ``prometheus/targets.json``."""

from __future__ import annotations

import json
from typing import Any

from generator.compile.model import PLAN_VERSION, ContainerSpec, Engine, Plan, Router, SlurmSpec


def argv_json(argv: tuple[Any, ...]) -> list[Any]:
    """argv tokens as JSON: plain strings, and ``{"env": NAME}`` for values read from the
    environment at launch (secrets)."""
    return [t if isinstance(t, str) else {"env": t.name} for t in argv]


def _router(r: Router) -> dict[str, Any]:
    return {
        "implementation": r.implementation,
        "module": r.module,
        "node": r.node,
        "host": r.host,
        "address": r.address,
        "bind_host": r.bind_host,
        "port": r.port,
        "prometheus_port": r.prometheus_port,
        "url": r.url,
        "policy": r.policy,
        "prefill_policy": r.prefill_policy,
        "decode_policy": r.decode_policy,
        "argv": argv_json(r.argv),
    }


def _container(c: ContainerSpec) -> dict[str, Any]:
    return {"kind": c.kind, "image": c.image, "mounts": list(c.mounts),
            "options": list(c.options)}


def _runs_in(plan: Plan, node: int, unit: str) -> dict[str, Any]:
    """``container`` (its name) and ``image`` of a unit on a docker/podman node, else nothing."""
    c = plan.nodes[node].container
    return {"container": f"sgl-{plan.name}-{unit}", "image": c.image} if c else {}


def _engine(plan: Plan, e: Engine) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": e.id,
        "group": e.group,
        "worker_type": e.worker_type,
        "gpus_per_engine": e.gpus_per_engine,
        "tp_size": e.tp_size,
        "pp_size": e.pp_size,
        "nnodes": e.nnodes,
        "placements": [
            {"node": p.node, "host": p.host, "address": p.address, "gpus": list(p.gpus),
             "node_rank": p.node_rank, **({"argv": argv_json(p.argv)} if e.nnodes > 1 else {}),
             **({"port": p.port} if p.port is not None else {}),
             **_runs_in(plan, p.node, f"engine-{e.id}" if e.nnodes == 1
                        else f"engine-{e.id}-r{p.node_rank}")}
            for p in e.placements
        ],
        "host": e.host,
        "address": e.address,
        "port": e.port,
        "url": e.url,
        "nccl_port": e.nccl_port,
        "engine_info_bootstrap_port": e.engine_info_bootstrap_port,
        "argv": argv_json(e.argv),
    }
    if e.bootstrap_port is not None:
        d["bootstrap_port"] = e.bootstrap_port
    if e.dist_init_addr is not None:
        d["dist_init_addr"] = e.dist_init_addr
    if e.encoder_urls:
        d["encoder_urls"] = list(e.encoder_urls)
    return d


def _slurm(s: SlurmSpec, name: str) -> dict[str, Any]:
    return {"exclusive": s.exclusive, "cpus_per_gpu": s.cpus_per_gpu,
            "cpus_per_engine": s.cpus_per_engine, "mem_per_gpu_mb": s.mem_per_gpu_mb,
            "restart": s.restart, "restart_limit": s.restart_limit,
            "restart_backoff": s.restart_backoff, "stop_before_limit": s.stop_before_limit,
            "job_name": s.job_name or f"sgl-{name}", "time": s.time}


def plan_dict(plan: Plan) -> dict[str, Any]:
    """The plan as plain JSON-able data."""
    t = plan.topology
    return {
        "plan_version": PLAN_VERSION,
        "deployment": {
            "name": t.name,
            "sglang_version": t.sglang_version,
            "hf_checkpoint": t.hf_checkpoint,
            "total_gpus": sum(g.num_gpus for m in t.models for g in m.groups),
            "gpus_per_node": t.gpus_per_node,
            "router_implementation": t.router_implementation,
            "local": t.local,
        },
        # what `deploy OUT_DIR` runs on the hosts, so it never has to guess from a script
        "runtime": {"python": t.runtime.python, "secrets_env_file": t.runtime.secrets_env_file},
        # how deploy rolls a change out (runtime.rollout, defaults filled in)
        "rollout": {"max_unavailable": t.runtime.rollout.max_unavailable,
                    "drain": t.runtime.rollout.drain},
        # the Slurm job's resources and supervision (cluster.slurm, defaults filled in)
        **({"slurm": _slurm(t.slurm, t.name)} if t.slurm is not None else {}),
        "nodes": [
            {"index": n.index, "host": n.host, "address": n.address, "gpus": list(n.gpus),
             "workdir": n.workdir, "supervisor": n.supervisor,
             **({"user": n.user} if n.user else {}),
             **({"ssh_port": n.ssh_port} if n.ssh_port else {}),
             **({"labels": list(n.labels)} if n.labels else {}),
             **({"container": _container(n.container)} if n.container else {})}
            for n in plan.nodes
        ],
        "models": [
            {
                "name": m.name,
                "model_path": m.model_path,
                "update_weights": m.update_weights,
                "pd": m.pd,
                "router": {**_router(m.router),
                           **_runs_in(plan, m.router.node, f"router-{m.name}")},
                "engines": [_engine(plan, e) for e in m.engines],
                "placeholders": [{"node": p.node, "gpus": list(p.gpus)} for p in m.placeholders],
            }
            for m in plan.models
        ],
    }


_scalar = json.JSONEncoder(ensure_ascii=False).encode  # floats, big ints: the stdlib's rules
_string = json.encoder.encode_basestring  # the C escaper json.dumps(ensure_ascii=False) uses


def _pretty(value: Any, indent: str) -> str:
    # Byte-identical to json.dumps(indent=2, sort_keys=True, ensure_ascii=False), several times
    # faster: with an indent the stdlib falls back to its pure-Python encoder.
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = indent + "  "
        return "{\n" + ",\n".join([f"{inner}{_string(str(k))}: {_pretty(value[k], inner)}"
                                   for k in sorted(value)]) + f"\n{indent}}}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        inner = indent + "  "
        sep = ",\n" + inner
        if all(type(v) is str for v in value):  # argv lists, the bulk of a plan: no recursion
            return "[\n" + inner + sep.join(map(_string, value)) + f"\n{indent}]"
        return "[\n" + inner + sep.join([_pretty(v, inner) for v in value]) + f"\n{indent}]"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if type(value) is int:
        return int.__repr__(value)
    return _scalar(value)


def pretty_json(data: Any) -> str:
    """JSON text: sorted keys, two-space indent, UTF-8 as is, trailing newline."""
    return _pretty(data, "") + "\n"


def plan_json(plan: Plan) -> str:
    """``plan.json`` text: stable key order, two-space indent, trailing newline."""
    return pretty_json(plan_dict(plan))


def endpoints(plan: Plan) -> dict[str, Any]:
    """What a trainer or client needs: per model, the router URL and engine URLs by role."""
    models: dict[str, Any] = {}
    for m in plan.models:
        roles: dict[str, list[str]] = {}
        for e in m.engines:
            roles.setdefault(e.worker_type, []).append(e.url)
        models[m.name] = {
            "router": m.router.url,
            "router_address": m.router.address,
            "router_port": m.router.port,
            "model_path": m.model_path,
            "update_weights": m.update_weights,
            "pd": m.pd,
            "engines": roles,
        }
    return {"deployment": plan.name, "models": models}


def prometheus_targets(plan: Plan) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in plan.models:
        for e in m.engines:
            out.append({"targets": [e.url.removeprefix("http://")],
                        "labels": {"job": "sglang-engine", "deployment": plan.name,
                                   "model": m.name, "engine": e.id, "role": e.worker_type}})
        r = m.router
        host = f"[{r.address}]" if ":" in r.address else r.address
        out.append({"targets": [f"{host}:{r.prometheus_port}"],
                    "labels": {"job": "sglang-router", "deployment": plan.name,
                               "model": m.name, "implementation": r.implementation}})
    return out

