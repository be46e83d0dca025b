"""Stage 3 — resolve: validated document -> ``Topology``.

slime's resolution cascade (seed 000, "Resolution Rules"), then the stricter checks of DESIGN.md:
every problem is collected and reported at once, positioned at the value that causes it.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from generator.compile.argchecks import (
    CASE_HINT,
    Ctx,
    check_server_args,
    env_refs,
    groups_key,
    is_model_path_key,
    no_userinfo,
    reserved_env,
    router_spec,
)
from generator.compile.catalog import SUPPORTED_VERSIONS, load_catalog, versions_with
from generator.compile.containers import HOST_KINDS, container_spec, covered
from generator.compile.credentials import CREDENTIAL_ENV, is_credential_name, last_word, url_has_credential
from generator.compile.loader import PathT, SourceMap, format_path
from generator.compile.model import (
    DEFAULT_DRAIN,
    DEFAULT_MAX_UNAVAILABLE,
    DEFAULT_SUPERVISOR,
    ContainerSpec,
    GroupSpec,
    HostSpec,
    ModelSpec,
    RolloutSpec,
    RuntimeSpec,
    SlurmSpec,
    Topology,
)
from generator.compile.validate import describe, did_you_mean, validate_shape
from generator.errors import TopologyError

DEFAULT_SGLANG_VERSION = "0.5.23"
DEFAULT_GPUS_PER_NODE = 8
DEFAULT_ROUTER = "sglang-router"
#: the largest cluster a topology describes (the schema's maximums; a test keeps them equal):
#: 64 GPUs per node is 8x today's densest servers, 4,096 nodes a very large training cluster.
#: Beyond them a typo (``gpus_per_node: 2000000000``) would make placement allocate or loop
#: for minutes, not describe hardware.
MAX_GPUS_PER_NODE = 64
MAX_NODES = 4096
MAX_GPUS = MAX_GPUS_PER_NODE * MAX_NODES


#: the schema's pattern for model_path / hf_checkpoint, for ``overrides.model_path``
_MODEL_PATH = re.compile("[^-\x00-\x1f\x7f-\x9f\u2028\u2029][^\x00-\x1f\x7f-\x9f\u2028\u2029]*")


def resolve(data: dict[str, Any], smap: SourceMap, *, local: bool = False) -> Topology:
    """Validate ``data`` (shape, then rules) and build the Topology, or raise TopologyError."""
    shape = validate_shape(data, smap)
    if shape:
        raise TopologyError(shape)
    ctx = Ctx(smap)
    dep = data.get("deployment", {})
    cluster = data.get("cluster", {})
    runtime = data.get("runtime", {})
    top_router = data.get("router", {})

    version = dep.get("sglang_version", DEFAULT_SGLANG_VERSION)
    if version not in SUPPORTED_VERSIONS:
        ctx.err(("deployment", "sglang_version"),
                f"sgl-gen has no catalog of SGLang {version}'s server arguments (it has: "
                f"{', '.join(SUPPORTED_VERSIONS)})",
                did_you_mean(str(version), SUPPORTED_VERSIONS) or
                f"`make sglang-catalog VERSION={version}` adds one (README: Adding an SGLang "
                "version)")
        raise TopologyError(ctx.errors)
    catalog = load_catalog(version)
    impl = top_router.get("implementation", DEFAULT_ROUTER)
    gpn: int = cluster.get("gpus_per_node", DEFAULT_GPUS_PER_NODE)
    hf = dep.get("hf_checkpoint")
    default_width = dep.get("num_gpus_per_engine")
    total = dep.get("total_gpus")
    name = dep.get("name") or _default_name(smap.file)
    no_userinfo(ctx, ("deployment", "hf_checkpoint"), hf)

    # -- hosts and node groups ----------------------------------------------------------------
    hosts: list[HostSpec] = []
    # names become directories (hosts/<name>/): unique also where file names ignore case
    seen_hosts: dict[str, int] = {}
    raw_hosts = cluster.get("hosts", [])
    for i, h in enumerate(raw_hosts):
        hp: PathT = ("cluster", "hosts", i)
        first = seen_hosts.get(h["name"].lower())
        if first is not None and raw_hosts[first]["name"] == h["name"]:
            ctx.err(hp + ("name",), f"duplicate host name '{h['name']}' "
                                    f"(also cluster.hosts[{first}])")
        elif first is not None:
            ctx.err(hp + ("name",), f"host name '{h['name']}' differs from "
                                    f"'{raw_hosts[first]['name']}' (cluster.hosts[{first}]) only "
                                    "in case", CASE_HINT)
        seen_hosts.setdefault(h["name"].lower(), i)
        gpus = tuple(h.get("gpus", range(gpn)))
        if len(gpus) != gpn:
            ctx.err(hp + ("gpus",), f"lists {len(gpus)} GPU ids but gpus_per_node is {gpn}")
        hc = h.get("container")
        hcontainer = container_spec(ctx, hp + ("container",), hc, host=True) \
            if isinstance(hc, dict) else (False if hc is False else None)
        hosts.append(HostSpec(h["name"], h["address"], h.get("user"), h.get("port"),
                              tuple(h.get("labels", ())), gpus, h.get("workdir"),
                              h.get("supervisor"), hcontainer))
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
    defaults = check_server_args(ctx, catalog, defaults_raw, ("defaults",),
                                  allow_model_path=False)
    models: list[ModelSpec] = []
    first_name: dict[str, tuple[str, PathT]] = {}  # lower-case name -> (name, where)
    gpu_sum = 0
    for mi, m in enumerate(data["sglang"]):
        mpath: PathT = ("sglang", mi)
        mname = m["name"]
        first_model = first_name.get(mname.lower())
        if first_model is not None:
            o = smap.at(first_model[1])
            if first_model[0] == mname:
                ctx.err(mpath + ("name",), f"duplicate model name '{mname}' "
                                           f"(first defined at line {o.line})")
            else:  # its units (engine-<model>-..., router-<model>) would share file names
                ctx.err(mpath + ("name",), f"model name '{mname}' differs from "
                                           f"'{first_model[0]}' (line {o.line}) only in case",
                        CASE_HINT)
        first_name.setdefault(mname.lower(), (mname, mpath + ("name",)))
        no_userinfo(ctx, mpath + ("model_path",), m.get("model_path"))
        gkey = groups_key(m)
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
        if has_encoder and catalog.get("encoder_only") is None:
            gi = types.index("encoder")
            ctx.err(mpath + (gkey, gi, "worker_type"),
                    f"encoder groups need SGLang's --encoder-only, which sglang {version} does "
                    "not have", _versions_with(catalog, "encoder_only"))
        if has_encoder and not any(t in ("prefill", "regular") for t in types):
            ctx.err(mpath + (gkey,), "has encoder groups but no prefill or regular group to use them")
        model_node_group = m.get("node_group")

        # model path cascade: group overrides.model_path -> model model_path -> hf_checkpoint
        model_level_path = m.get("model_path") or hf
        group_paths: list[tuple[PathT, str]] = []
        for gi, g in enumerate(raw_groups):
            ov = g.get("overrides", {})
            for k in ov:
                if is_model_path_key(catalog, k):
                    group_paths.append((mpath + (gkey, gi, "overrides", k), ov[k]))
        effective = group_paths[0][1] if group_paths else model_level_path
        if effective is None:
            ctx.err(mpath, f"model '{mname}' has no model path",
                    "set model_path, deployment.hf_checkpoint or --hf-checkpoint")
            effective = ""
        for gp, value in group_paths:
            if not isinstance(value, str) or not value:
                ctx.err(gp, "must be a non-empty string")
            elif _MODEL_PATH.fullmatch(value) is None:
                ctx.err(gp, f"{describe(value)} is not a model path: one line, not starting "
                            "with '-'", "a value starting with '-' would be read as a "
                            "command-line flag" if value.startswith("-") else "")
            elif not no_userinfo(ctx, gp, value):
                pass
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
            # (no warning for a model whose path is already an error: it follows from it)
            if not update and types and effective:
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
            overrides = check_server_args(ctx, catalog, g.get("overrides", {}),
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
        router = router_spec(ctx, impl, top_router, m, mpath, pd)
        models.append(ModelSpec(mname, format_path(mpath), effective, update, pd, tuple(groups),
                                router, _model_config(smap, mpath, m.get("model_config"))))

    if gpu_sum > MAX_GPUS:
        ctx.err(("sglang",), f"server groups use {gpu_sum:,} GPUs; a topology describes at most "
                             f"{MAX_GPUS:,} ({MAX_NODES:,} nodes of {MAX_GPUS_PER_NODE})", key=True)
    if total is not None and gpu_sum != total:
        hint = "the sum of every group's num_gpus (placeholders included) must equal it"
        option = _cli_option(smap, ("deployment", "total_gpus"))
        if option is None:
            ctx.err(("deployment", "total_gpus"),
                    f"server groups use {gpu_sum} GPUs but total_gpus is {total}", hint)
        else:  # the number is on the command line, the groups are in the file: name both
            ctx.err(("deployment", "total_gpus"),
                    f"server groups use {gpu_sum} GPUs but total_gpus is {total}; the groups "
                    f"are at {_group_sites(smap, data)}", hint)
    if nodes is not None and gpu_sum > nodes * gpn:
        message = (f"{nodes} node(s) of {gpn} GPUs have {nodes * gpn} GPUs but the server groups "
                   f"need {gpu_sum}")
        if _cli_option(smap, ("cluster", "nodes")) is not None:
            message += f"; the groups are at {_group_sites(smap, data)}"
        ctx.err(("cluster", "nodes"), message)
    slurm = None
    if "slurm" in cluster:
        s = cluster["slurm"]
        for key in s.get("extra", {}):
            owned = _sbatch_owned(key)
            if owned:
                ctx.err(("cluster", "slurm", "extra", key), owned[1],
                        _SBATCH_HINT.get(owned[0], ""), key=True)
        slurm = _slurm_spec(ctx, s)
    container = container_spec(ctx, ("runtime", "container"), runtime["container"]) \
        if "container" in runtime else None
    _model_mounts(ctx, models, container, hosts)
    refs = env_refs(data)
    for key, value in runtime.get("env", {}).items():
        epath: PathT = ("runtime", "env", key)
        if reserved_env(key):
            ctx.err(epath, f"{key} is set by sgl-gen's scripts: a value here would replace "
                           "theirs", "remove it from runtime.env", key=True)
        elif key in refs:
            # exported after the secrets file is sourced: even "" would replace the secret
            # (an empty --api-key turns authentication off)
            ctx.err(epath, f"{key} carries the credential of {format_path(refs[key])} "
                           f"({{env: {key}}}): a value here would replace the one from "
                           "runtime.secrets_env_file", f"remove it from runtime.env and put "
                           f"{key}=... in runtime.secrets_env_file on the hosts", key=True)
        elif key in CREDENTIAL_ENV and not isinstance(value, bool):
            ctx.err(epath, f"{key} is a connection string or password the routers read: a "
                           "value written here is rendered into every script and unit",
                    f"put {key}=... in runtime.secrets_env_file on the hosts")
        elif is_credential_name(key) and value != "" and not isinstance(value, bool):
            ctx.err(epath, f"{key} looks like a credential (its name ends in "
                           f"{last_word(key)!r}): a value written here is "
                           "rendered into every script and unit",
                    f"put {key}=... in runtime.secrets_env_file on the hosts (the scripts source "
                    "it, the systemd units load it)")
        elif isinstance(value, str) and url_has_credential(value):
            ctx.err(epath, "a URL with a user name or password is a credential: a value written "
                           "here is rendered into every script and unit",
                    f"put {key}=... in runtime.secrets_env_file on the hosts")
    env = tuple(sorted((k, _env_text(v)) for k, v in runtime.get("env", {}).items()))
    # --local runs on this machine: by default with the interpreter running sgl-gen, which has
    # the router (python3 from PATH may not: a pipx install, a venv that is not activated);
    # inside a container, the image's python3
    default_python = (sys.executable or "python3") if local and container is None \
        else "python3"
    rt = RuntimeSpec(python=runtime.get("python", default_python),
                     workdir=runtime.get("workdir", "/var/lib/sgl-gen"), env=env,
                     secrets_env_file=runtime.get("secrets_env_file"), container=container,
                     supervisor=runtime.get("supervisor", DEFAULT_SUPERVISOR),
                     rollout=_rollout(runtime.get("rollout", {})))
    if ctx.errors:
        raise TopologyError(ctx.errors + ctx.warnings)
    return Topology(
        file=smap.file, name=name, sglang_version=version, hf_checkpoint=hf, total_gpus=total,
        gpus_per_node=gpn, nodes=nodes, hosts=tuple(hosts), node_groups=node_groups,
        slurm=slurm, runtime=rt, router_implementation=impl, models=tuple(models), local=local,
        gpu=cluster.get("gpu"), warnings=tuple(sorted(ctx.warnings)), smap=smap)


#: ``#SBATCH`` options sgl-gen writes itself (generator/targets/slurm.py render_sbatch) and the
#: topology field for each; a later line would override them
_SBATCH_HINT = {
    "job-name": "use cluster.slurm.job_name",
    "nodes": "set cluster.nodes (or cluster.hosts)",
    "gres": "sgl-gen requests gpu:<cluster.gpus_per_node> per node",
    "ntasks-per-node": "sgl-gen sizes it for the steps on the busiest node",
    "output": "use cluster.slurm.output",
    "partition": "use cluster.slurm.partition",
    "account": "use cluster.slurm.account",
    "time": "use cluster.slurm.time",
    "exclusive": "use cluster.slurm.exclusive",
    "mem": "sgl-gen asks --mem=0 (exclusive) or the engines' memory: use "
           "cluster.slurm.mem_per_gpu",
    "mem-per-cpu": "use cluster.slurm.mem_per_gpu",
    "mem-per-gpu": "use cluster.slurm.mem_per_gpu",
    "cpus-per-task": "use cluster.slurm.cpus_per_gpu or cpus_per_engine",
    "cpus-per-gpu": "use cluster.slurm.cpus_per_gpu",
    "signal": "use cluster.slurm.stop_before_limit",
}
#: options that change what the job runs, where, or with which environment, or that
#: contradict the options above: the steps depend on the submit directory (lib/, endpoints),
#: the exported environment (PATH, the secrets) and the one task layout sgl-gen computes
_SBATCH_REFUSED = {
    "error": "sends the job's error output away from cluster.slurm.output",
    "wrap": "replaces the job script",
    "chdir": "changes the directory the job script and its steps run in",
    "export": "changes the environment the steps get",
    "export-file": "changes the environment the steps get",
    "ntasks": "contradicts the task layout sgl-gen computes",
    "ntasks-per-gpu": "contradicts the task layout sgl-gen computes",
    "gpus": "contradicts the GPUs sgl-gen requests",
    "gpus-per-node": "contradicts the GPUs sgl-gen requests",
    "gpus-per-task": "contradicts the GPUs sgl-gen requests",
}
#: sbatch's short options, by the long one
_SBATCH_ALIASES = {"J": "job-name", "N": "nodes", "n": "ntasks", "o": "output", "e": "error",
                   "p": "partition", "A": "account", "t": "time", "D": "chdir", "G": "gpus"}


#: Slurm's memory units (1024-based), as multiples of a megabyte
_MEM_UNITS = {"": 1, "M": 1, "G": 1024, "T": 1024 * 1024}


def _slurm_spec(ctx: Ctx, s: dict[str, Any]) -> SlurmSpec:
    """``cluster.slurm`` -> SlurmSpec, with the checks the schema cannot make: one CPU rule at a
    time, and a job that shares its nodes says what it needs (sgl-gen cannot know the size of a
    node it does not have to itself)."""
    where: PathT = ("cluster", "slurm")
    if "cpus_per_gpu" in s and "cpus_per_engine" in s:
        ctx.err(where + ("cpus_per_engine",), "cpus_per_gpu and cpus_per_engine both say how "
                "many CPUs an engine step gets", "keep one of them", key=True)
    mem = s.get("mem_per_gpu")
    mem_mb = None
    if mem is not None:
        text = str(mem)
        mem_mb = int(text.rstrip("MGT")) * _MEM_UNITS[text[len(text.rstrip("MGT")):]]
    exclusive = bool(s.get("exclusive", True))
    if not exclusive:
        missing = [k for k, ok in (("cpus_per_gpu (or cpus_per_engine)",
                                    "cpus_per_gpu" in s or "cpus_per_engine" in s),
                                   ("mem_per_gpu", mem is not None)) if not ok]
        if missing:
            ctx.err(where + ("exclusive",), "a job that shares its nodes (exclusive: false) "
                    f"asks Slurm for exactly what its engines need, so it needs "
                    f"{' and '.join(missing)}: the size of a node it does not have to itself "
                    "is not known when the job is submitted",
                    "set them (e.g. cpus_per_gpu: 8, mem_per_gpu: 64G), or leave exclusive at "
                    "its default (true: whole nodes, each engine gets its GPU share)")
    return SlurmSpec(s.get("partition"), s.get("account"), s.get("time"), s.get("job_name"),
                     s.get("output"), exclusive, tuple(sorted(s.get("extra", {}).items())),
                     cpus_per_gpu=s.get("cpus_per_gpu"), cpus_per_engine=s.get("cpus_per_engine"),
                     mem_per_gpu_mb=mem_mb, restart=s.get("restart", "on-failure"),
                     restart_limit=s.get("restart_limit", 3),
                     restart_backoff=s.get("restart_backoff", 5),
                     stop_before_limit=s.get("stop_before_limit", 120))


def _sbatch_owned(key: str) -> tuple[str, str] | None:
    """(option, why) when ``cluster.slurm.extra.KEY`` is refused, else None. sbatch also takes
    an unambiguous prefix of a long option (``--part`` is ``--partition``): a prefix of one
    counts as it."""
    long = _SBATCH_ALIASES.get(key, key)
    names = (*_SBATCH_HINT, *_SBATCH_REFUSED)
    for name in [n for n in names if n == long] + [n for n in names if n.startswith(long)]:
            alias = "" if name == key else f" (--{name})"
            why = ("is written by sgl-gen itself" if name in _SBATCH_HINT
                   else _SBATCH_REFUSED[name])
            return name, f"'{key}'{alias} {why}"
    return None


def _cli_option(smap: SourceMap, path: PathT) -> str | None:
    """The CLI option that set ``path`` (its origin has no line), or None if the file did."""
    o = smap.values.get(path)
    return o.file if o is not None and o.line == 0 else None


#: groups listed in a "the groups use N GPUs" message (a big topology would print hundreds)
_MAX_LISTED_GROUPS = 12


def _groups(data: dict[str, Any]) -> list[tuple[PathT, Any]]:
    out: list[tuple[PathT, Any]] = []
    for mi, m in enumerate(data.get("sglang", [])):
        gkey = groups_key(m)
        for gi, g in enumerate(m.get(gkey, [])):
            out.append((("sglang", mi, gkey, gi, "num_gpus"), g.get("num_gpus")))
    return out


def _group_sums(smap: SourceMap, data: dict[str, Any]) -> str:
    """``8 at 6:19 + 8 at 7:19``: the num_gpus of every group and where the file says it."""
    groups = _groups(data)
    parts = [f"{n} at {smap.at(p).line}:{smap.at(p).col}" for p, n in groups[:_MAX_LISTED_GROUPS]]
    more = len(groups) - _MAX_LISTED_GROUPS
    return " + ".join(parts) + (f" + {more} more group(s)" if more > 0 else "")


def _group_sites(smap: SourceMap, data: dict[str, Any]) -> str:
    o = smap.at(("sglang",), key=True)
    return f"{o.file}:{o.line}:{o.col} ({_group_sums(smap, data)})"


def _rollout(raw: dict[str, Any]) -> RolloutSpec:
    """``runtime.rollout`` with its defaults (the schema checked the values)."""
    return RolloutSpec(max_unavailable=raw.get("max_unavailable", DEFAULT_MAX_UNAVAILABLE),
                       drain=raw.get("drain", DEFAULT_DRAIN))


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _model_config(smap: SourceMap, mpath: PathT, value: Any) -> str | None:
    """A model's ``model_config`` made absolute: relative to the topology file's directory when
    the file says it, to the working directory when a command-line option does."""
    if not isinstance(value, str):
        return None
    origin = smap.at(mpath + ("model_config",))
    base = os.path.dirname(os.path.abspath(origin.file)) if origin.line else os.getcwd()
    return os.path.normpath(os.path.join(base, os.path.expanduser(value)))


def _versions_with(catalog: Any, name: str) -> str:
    """A hint naming the supported SGLang versions that have a server argument."""
    have = versions_with(name, catalog.version)
    return f"sglang {', '.join(have)} has it (deployment.sglang_version)" if have else ""


def _default_name(file: str) -> str:
    stem = Path(file).stem if file else "sglang"
    clean = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_") or "sglang"
    return clean[:63]


def _model_mounts(ctx: Ctx, models: list[ModelSpec], container: ContainerSpec | None,
                  hosts: list[HostSpec]) -> None:
    """Warn when a docker/podman container would not see a model's absolute path: no mount of
    its covers it, so SGLang inside fails to find the weights (or downloads a repo of that name)."""
    sources: list[tuple[PathT, ContainerSpec]] = []
    if container is not None and container.kind in HOST_KINDS:
        sources.append((("runtime", "container", "mounts"), container))
    for i, h in enumerate(hosts):
        if isinstance(h.container, ContainerSpec) and h.container.kind in HOST_KINDS:
            sources.append((("cluster", "hosts", i, "container", "mounts"), h.container))
    for path, c in sources:
        for m in models:
            if m.model_path.startswith("/") and not covered(c.mounts, m.model_path):
                where = path if c.mounts else path[:-1]
                ctx.warn(where, f"no mount covers {m.model_path} (the model path of {m.name}): "
                         f"the {c.kind} container does not see it",
                         f"add a mount such as {_parent(m.model_path)}:{_parent(m.model_path)}:ro")


def _parent(path: str) -> str:
    head = path.rstrip("/").rsplit("/", 1)[0]
    return head or "/"
