"""Stage 3 — resolve: validated document -> ``Topology``.

slime's resolution cascade (seed 000, "Resolution Rules"), then the stricter checks of DESIGN.md:
every problem is collected and reported at once, positioned at the value that causes it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from generator.catalog import load_catalog
from generator.errors import Diagnostic, TopologyError
from generator.loader import PathT, SourceMap, format_path
from generator.model import (
    ContainerSpec,
    GroupSpec,
    HostSpec,
    ModelSpec,
    RouterSpec,
    RuntimeSpec,
    SlurmSpec,
    Topology,
)
from generator.routers import VERSIONS as ROUTER_VERSIONS
from generator.routers import EnvRef, load_router_catalog
from generator.validate import describe, did_you_mean, validate_shape

DEFAULT_SGLANG_VERSION = "0.5.23"
DEFAULT_GPUS_PER_NODE = 8
DEFAULT_ROUTER = "sglang-router"

#: Server arguments sgl-gen sets itself, and the topology field that controls each one.
OWNED_ARGS: dict[str, str] = {
    "tp_size": "derived: num_gpus_per_engine / pp_size (set num_gpus_per_engine)",
    "tensor_parallel_size": "derived: num_gpus_per_engine / pp_size (set num_gpus_per_engine)",
    "port": "assigned per host by sgl-gen (pin it with server_groups[i].port)",
    "host": "engines bind their node's address (cluster.hosts[].address)",
    "nnodes": "derived from num_gpus_per_engine and cluster.gpus_per_node",
    "node_rank": "derived from placement (one launch per node of a multi-node engine)",
    "dist_init_addr": "derived: the address of the engine's rank-0 node",
    "disaggregation_mode": "set by worker_type: prefill / decode",
    "disaggregation_bootstrap_port": "assigned by sgl-gen (pin it with server_groups[i].bootstrap_port)",
    "base_gpu_id": "GPUs are assigned by placement through CUDA_VISIBLE_DEVICES",
    "nccl_port": "assigned per host by sgl-gen",
    "engine_info_bootstrap_port": "assigned per host by sgl-gen",
    "encoder_only": "set by worker_type: encoder",
    "language_only": "set for prefill/regular groups of a model that has encoder groups",
    "encoder_urls": "derived from the model's encoder engines",
}


class _Ctx:
    def __init__(self, smap: SourceMap):
        self.smap = smap
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []

    def err(self, path: PathT, message: str, hint: str = "", *, key: bool = False) -> None:
        self.errors.append(self.smap.diag(path, message, hint=hint, key=key))

    def warn(self, path: PathT, message: str, hint: str = "") -> None:
        self.warnings.append(self.smap.diag(path, message, hint=hint, severity="warning"))


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: argument names ending so hold a credential: only ``{env: NAME}`` is accepted for them
#: (sglang: api_key, admin_api_key, ssl_keyfile_password; routers: api_key, tenant_api_key,
#: control_plane_api_keys, oracle_password). "token" is not one: most *_token(s) flags count tokens.
_SECRET_SUFFIXES = ("api_key", "api_keys", "password", "secret", "credential", "credentials")


def _is_secret(name: str) -> bool:
    return name.endswith(_SECRET_SUFFIXES)


def _secret_value(ctx: _Ctx, path: PathT, spec: Any, value: Any) -> tuple[bool, Any]:
    """(handled, value): ``{env: NAME}`` becomes an EnvRef; a literal credential is an error."""
    if isinstance(value, dict) and set(value) == {"env"}:
        name = value["env"]
        if spec.kind != "value" or spec.type != "str" or spec.nargs is not None:
            ctx.err(path, f"{spec.flag} cannot be read from the environment "
                          "({env: NAME} works for single string arguments)")
        elif not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            ctx.err(path + ("env",), f"{describe(name)} is not an environment variable name",
                    "use letters, digits and underscores, not starting with a digit")
        else:
            return True, EnvRef(name)
        return True, None
    if _is_secret(spec.name) and value is not None:
        ctx.err(path, f"{spec.flag} is a credential and must not be written in the topology",
                "write {env: NAME} and put NAME=... in runtime.secrets_env_file on the hosts")
        return True, None
    return False, value


def _groups_key(model: dict[str, Any]) -> str:
    return "engine_groups" if "engine_groups" in model else "server_groups"


def _check_server_args(ctx: _Ctx, catalog: Any, args: dict[str, Any], base: PathT,
                       *, allow_model_path: bool) -> dict[str, Any]:
    """Validate ServerArgs keys/values against the catalog; return them in underscore form."""
    out: dict[str, Any] = {}
    for key, value in args.items():
        path = base + (key,)
        norm = key.replace("-", "_")
        if norm == "model_path":
            if not allow_model_path:
                ctx.err(path, "model_path is not a server default",
                        "set deployment.hf_checkpoint or the model's model_path", key=True)
            continue  # resolved by the model-path cascade, never emitted twice
        if norm in OWNED_ARGS:
            ctx.err(path, f"'{key}' is set by sgl-gen: {OWNED_ARGS[norm]}", key=True)
            continue
        spec = catalog.get(key)
        if spec is None:
            hint = did_you_mean(norm, list(catalog.names))
            ctx.err(path, f"unknown SGLang server argument '{key}' "
                          f"(sglang {catalog.version})", hint=hint, key=True)
            continue
        handled, ref = _secret_value(ctx, path, spec, value)
        if handled:
            if ref is not None:
                out[spec.name] = ref
            continue
        problem = spec.check_value(value)
        if problem:
            ctx.err(path, problem)
            continue
        out[spec.name] = value
    return out


def _router_spec(ctx: _Ctx, impl: str, top: dict[str, Any], model: dict[str, Any],
                 mpath: PathT, pd: bool) -> RouterSpec:
    mr = model.get("router", {})
    rpath = mpath + ("router",)
    cat = load_router_catalog(impl)
    version = ROUTER_VERSIONS[impl]

    def pick(key: str) -> tuple[Any, PathT]:
        if key in mr:
            return mr[key], rpath + (key,)
        return top.get(key), ("router", key)

    policies: dict[str, str | None] = {}
    for key, choices in (("policy", cat.policies), ("prefill_policy", cat.prefill_policies),
                         ("decode_policy", cat.decode_policies)):
        value, vpath = pick(key)
        policies[key] = value
        if value is None:
            continue
        if value not in choices:
            other = "smg" if impl == "sglang-router" else "sglang-router"
            other_cat = load_router_catalog(other)
            other_has = value in getattr(other_cat, key.replace("policy", "policies")
                                         if key != "policy" else "policies")
            hint = (f"{other} has it: set router.implementation: {other}" if other_has
                    else did_you_mean(value, list(choices)))
            ctx.err(vpath, f"policy '{value}' is not available in {impl} {version} "
                           f"(choices: {', '.join(choices)})", hint=hint)
        if key != "policy" and not pd:
            ctx.err(vpath, f"{key} applies only to a prefill/decode (PD) model")
    args: dict[str, Any] = {}
    for scope_args, base in ((top.get("args", {}), ("router", "args")),
                             (mr.get("args", {}), rpath + ("args",))):
        for key, value in scope_args.items():
            norm = key.replace("-", "_")
            if norm in ("host", "port", "prometheus_port", "policy", "worker_urls",
                        "pd_disaggregation", "prefill", "decode", "prefill_policy",
                        "decode_policy"):
                ctx.err(base + (key,), f"'{key}' is set by sgl-gen from the topology",
                        "use router.host / router.port / router.prometheus_port / router.policy",
                        key=True)
                continue
            spec = cat.get(key)
            if spec is None:
                ctx.err(base + (key,), f"unknown {impl} {version} argument '{key}'",
                        did_you_mean(norm, list(cat.names)), key=True)
                continue
            handled, ref = _secret_value(ctx, base + (key,), spec, value)
            if handled:
                if ref is not None:
                    args[spec.name] = ref
                continue
            problem = cat.check_value(key, value)
            if problem:
                ctx.err(base + (key,), problem)
                continue
            args[spec.name] = value
    return RouterSpec(
        implementation=impl,
        policy=policies["policy"],
        prefill_policy=policies["prefill_policy"],
        decode_policy=policies["decode_policy"],
        host=mr.get("host"),
        port=mr.get("port"),
        prometheus_port=mr.get("prometheus_port"),
        node=mr.get("node"),
        args=tuple(sorted(args.items())),
        path=format_path(rpath),
    )


def resolve(data: dict[str, Any], smap: SourceMap, *, local: bool = False) -> Topology:
    """Validate ``data`` (shape, then rules) and build the Topology, or raise TopologyError."""
    shape = validate_shape(data, smap)
    if shape:
        raise TopologyError(shape)
    ctx = _Ctx(smap)
    dep = data.get("deployment", {})
    cluster = data.get("cluster", {})
    runtime = data.get("runtime", {})
    top_router = data.get("router", {})

    version = dep.get("sglang_version", DEFAULT_SGLANG_VERSION)
    catalog = load_catalog(version)
    impl = top_router.get("implementation", DEFAULT_ROUTER)
    gpn: int = cluster.get("gpus_per_node", DEFAULT_GPUS_PER_NODE)
    hf = dep.get("hf_checkpoint")
    default_width = dep.get("num_gpus_per_engine")
    total = dep.get("total_gpus")
    name = dep.get("name") or _default_name(smap.file)

    # -- hosts and node groups ----------------------------------------------------------------
    hosts: list[HostSpec] = []
    seen_hosts: dict[str, int] = {}
    for i, h in enumerate(cluster.get("hosts", [])):
        hp: PathT = ("cluster", "hosts", i)
        if h["name"] in seen_hosts:
            ctx.err(hp + ("name",), f"duplicate host name '{h['name']}' "
                                    f"(also cluster.hosts[{seen_hosts[h['name']]}])")
        seen_hosts.setdefault(h["name"], i)
        gpus = tuple(h.get("gpus", range(gpn)))
        if len(gpus) != gpn:
            ctx.err(hp + ("gpus",), f"lists {len(gpus)} GPU ids but gpus_per_node is {gpn}")
        hosts.append(HostSpec(h["name"], h["address"], h.get("user"), h.get("port"),
                              tuple(h.get("labels", ())), gpus, h.get("workdir")))
    nodes: int | None = cluster.get("nodes")
    if hosts and nodes is not None and nodes != len(hosts):
        ctx.err(("cluster", "nodes"), f"is {nodes} but cluster.hosts lists {len(hosts)} hosts")
    if hosts:
        nodes = len(hosts)
    groups_by_label: dict[str, set[int]] = {}
    for label, idxs in cluster.get("node_groups", {}).items():
        for j, n in enumerate(idxs):
            if nodes is not None and n >= nodes:
                ctx.err(("cluster", "node_groups", label, j),
                        f"node {n} does not exist (nodes are 0..{nodes - 1})")
        groups_by_label.setdefault(label, set()).update(idxs)
    for i, h in enumerate(hosts):
        for label in h.labels:
            groups_by_label.setdefault(label, set()).add(i)
    node_groups = tuple(sorted((k, tuple(sorted(v))) for k, v in groups_by_label.items()))

    # -- models --------------------------------------------------------------------------------
    defaults_raw = data.get("defaults", {})
    defaults = _check_server_args(ctx, catalog, defaults_raw, ("defaults",),
                                  allow_model_path=False)
    models: list[ModelSpec] = []
    first_name: dict[str, PathT] = {}
    gpu_sum = 0
    for mi, m in enumerate(data["sglang"]):
        mpath: PathT = ("sglang", mi)
        mname = m["name"]
        if mname in first_name:
            o = smap.at(first_name[mname])
            ctx.err(mpath + ("name",), f"duplicate model name '{mname}' "
                                       f"(first defined at line {o.line})")
        first_name.setdefault(mname, mpath + ("name",))
        gkey = _groups_key(m)
        raw_groups = m.get(gkey, [])
        if gkey not in m:
            ctx.err(mpath, f"model '{mname}' has no server_groups",
                    "write 'server_groups: []' for a router with no local engines")
        types = [g["worker_type"] for g in raw_groups]
        pd = "prefill" in types or "decode" in types
        if pd and "regular" in types:
            ctx.err(mpath + (gkey,), "mixes regular with prefill/decode groups",
                    "a model is either all regular or prefill+decode; split it into two models")
        if "prefill" in types and "decode" not in types:
            ctx.err(mpath + (gkey,), "has prefill groups but no decode group")
        if "decode" in types and "prefill" not in types:
            ctx.err(mpath + (gkey,), "has decode groups but no prefill group")
        has_encoder = "encoder" in types
        if has_encoder and not any(t in ("prefill", "regular") for t in types):
            ctx.err(mpath + (gkey,), "has encoder groups but no prefill or regular group to use them")
        model_node_group = m.get("node_group")

        # model path cascade: group overrides.model_path -> model model_path -> hf_checkpoint
        model_level_path = m.get("model_path") or hf
        group_paths: list[tuple[PathT, str]] = []
        for gi, g in enumerate(raw_groups):
            ov = g.get("overrides", {})
            for k in ("model_path", "model-path"):
                if k in ov:
                    group_paths.append((mpath + (gkey, gi, "overrides", k), ov[k]))
        effective = group_paths[0][1] if group_paths else model_level_path
        if effective is None:
            ctx.err(mpath, f"model '{mname}' has no model path",
                    "set model_path, deployment.hf_checkpoint or --hf-checkpoint")
            effective = ""
        for gp, value in group_paths:
            if not isinstance(value, str) or not value:
                ctx.err(gp, "must be a non-empty string")
            elif value != effective:
                ctx.err(gp, f"'{value}' differs from the model's path '{effective}'",
                        "all groups of a model share one model path; define another model")
        if m.get("model_path") and group_paths and group_paths[0][1] != m["model_path"]:
            ctx.err(group_paths[0][0], f"'{group_paths[0][1]}' differs from model_path "
                                       f"'{m['model_path']}'")
        if "update_weights" in m:
            update = bool(m["update_weights"])
        else:
            update = hf is not None and effective == hf
            if not update and types:
                ctx.warn(mpath, f"update_weights inferred false: the model path "
                                f"'{effective}' is not the hf_checkpoint",
                         "set update_weights explicitly to silence this")

        groups: list[GroupSpec] = []
        for gi, g in enumerate(raw_groups):
            gpath: PathT = mpath + (gkey, gi)
            wt = g["worker_type"]
            num = g["num_gpus"]
            gpu_sum += num
            if "num_gpus_per_engine" in g:
                width, wpath = g["num_gpus_per_engine"], gpath + ("num_gpus_per_engine",)
            elif "num_gpus_per_engine" in m:
                width, wpath = m["num_gpus_per_engine"], mpath + ("num_gpus_per_engine",)
            else:
                width, wpath = default_width, ("deployment", "num_gpus_per_engine")
            if wt == "placeholder":
                for k in ("overrides", "port", "bootstrap_port"):
                    if k in g:
                        ctx.err(gpath + (k,), f"a placeholder group starts no engine; "
                                              f"'{k}' has no effect", key=True)
                groups.append(GroupSpec(mname, gi, format_path(gpath), wt, num, 0, 0, 0, 0, (),
                                        g.get("node_group", model_node_group), None, None))
                continue
            if width is None:
                ctx.err(gpath, "no GPUs per engine for this group",
                        "set num_gpus_per_engine on the group or model, "
                        "deployment.num_gpus_per_engine, or --num-gpus-per-engine")
                continue
            if num % width:
                ctx.err(gpath + ("num_gpus",), f"{num} is not a multiple of the engine width "
                                               f"{width} (from {format_path(wpath)})")
                continue
            if width > gpn and width % gpn:
                ctx.err(wpath, f"an engine of {width} GPUs spans nodes but {width} is not a "
                               f"multiple of gpus_per_node {gpn}",
                        "use a width <= gpus_per_node or a multiple of it")
                continue
            overrides = _check_server_args(ctx, catalog, g.get("overrides", {}),
                                           gpath + ("overrides",), allow_model_path=True)
            merged = {**defaults, **overrides}
            pp = merged.get("pp_size", 1)
            if not isinstance(pp, int) or pp < 1 or width % pp:
                where = gpath + ("overrides", "pp_size") if "pp_size" in overrides \
                    else ("defaults", "pp_size")
                ctx.err(where, f"pp_size {describe(pp)} does not divide the engine width {width}")
                continue
            nnodes = width // gpn if width > gpn else 1
            if nnodes > 1 and isinstance(merged.get("dp_size"), int) and merged["dp_size"] > 1:
                where = gpath + ("overrides", "dp_size") if "dp_size" in overrides \
                    else ("defaults", "dp_size")
                ctx.err(where, f"dp_size > 1 is rejected by SGLang for an engine spanning "
                               f"{nnodes} nodes", "use attention data parallelism instead")
            if "bootstrap_port" in g and wt != "prefill":
                ctx.err(gpath + ("bootstrap_port",), "only prefill groups have a bootstrap port",
                        key=True)
            groups.append(GroupSpec(
                model=mname, index=gi, path=format_path(gpath), worker_type=wt, num_gpus=num,
                gpus_per_engine=width, tp_size=width // pp, pp_size=pp,
                num_engines=num // width, server_args=tuple(sorted(merged.items())),
                node_group=g.get("node_group", model_node_group), port=g.get("port"),
                bootstrap_port=g.get("bootstrap_port")))
        for gi, g in enumerate(raw_groups):
            label = g.get("node_group", model_node_group)
            where = mpath + (gkey, gi, "node_group") if "node_group" in g \
                else mpath + ("node_group",)
            if label is not None and label not in groups_by_label:
                hint = did_you_mean(label, list(groups_by_label)) or (
                    "define it under cluster.node_groups or as a host label")
                ctx.err(where, f"unknown node group '{label}'", hint)
        router = _router_spec(ctx, impl, top_router, m, mpath, pd)
        models.append(ModelSpec(mname, format_path(mpath), effective, update, pd, tuple(groups),
                                router))

    if total is not None and gpu_sum != total:
        ctx.err(("deployment", "total_gpus"),
                f"server groups use {gpu_sum} GPUs but total_gpus is {total}",
                "the sum of every group's num_gpus (placeholders included) must equal it")
    if nodes is not None and gpu_sum > nodes * gpn:
        ctx.err(("cluster", "nodes"), f"{nodes} node(s) of {gpn} GPUs have {nodes * gpn} GPUs "
                                      f"but the server groups need {gpu_sum}")
    slurm = None
    if "slurm" in cluster:
        s = cluster["slurm"]
        slurm = SlurmSpec(s.get("partition"), s.get("account"), s.get("time"),
                          s.get("job_name"), s.get("output"), bool(s.get("exclusive", False)),
                          tuple(sorted(s.get("extra", {}).items())))
    container = None
    if "container" in runtime:
        c = runtime["container"]
        container = ContainerSpec(c["kind"], c["image"], tuple(c.get("mounts", ())))
    env = tuple(sorted((k, _env_text(v)) for k, v in runtime.get("env", {}).items()))
    rt = RuntimeSpec(python=runtime.get("python", "python3"),
                     workdir=runtime.get("workdir", "/var/lib/sgl-gen"), env=env,
                     secrets_env_file=runtime.get("secrets_env_file"), container=container)
    if ctx.errors:
        raise TopologyError(ctx.errors + ctx.warnings)
    return Topology(
        file=smap.file, name=name, sglang_version=version, hf_checkpoint=hf, total_gpus=total,
        gpus_per_node=gpn, nodes=nodes, hosts=tuple(hosts), node_groups=node_groups,
        slurm=slurm, runtime=rt, router_implementation=impl, models=tuple(models), local=local,
        warnings=tuple(sorted(ctx.warnings)), smap=smap)


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _default_name(file: str) -> str:
    stem = Path(file).stem if file else "sglang"
    clean = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_") or "sglang"
    return clean[:63]
