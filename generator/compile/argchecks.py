"""The server and router argument checks of resolve: every ServerArgs and router argument
against its catalog (aliases, owned arguments, types, choices), argv words that would read as
options, credentials only as ``{env: NAME}``, and the run-time environment names.

Diagnostics collect in a :class:`Ctx` (one per resolve), positioned at the offending value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from generator.compile.catalog import versions_with
from generator.compile.credentials import (
    CREDENTIAL_ARGS,
    is_credential_name,
    is_flag_shaped,
    url_has_credential,
)
from generator.compile.loader import PathT, SourceMap, format_path
from generator.compile.model import (
    RouterSpec,
)
from generator.compile.routers import VERSIONS as ROUTER_VERSIONS
from generator.compile.routers import EnvRef, load_router_catalog
from generator.compile.validate import describe, did_you_mean
from generator.errors import Diagnostic

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


class Ctx:
    def __init__(self, smap: SourceMap):
        self.smap = smap
        self.errors: list[Diagnostic] = []
        self._seen: set[Diagnostic] = set()
        self.warnings: list[Diagnostic] = []

    def err(self, path: PathT, message: str, hint: str = "", *, key: bool = False) -> None:
        d = self.smap.diag(path, message, hint=hint, key=key)
        if d not in self._seen:  # top-level router args are checked once per model
            self._seen.add(d)
            self.errors.append(d)

    def warn(self, path: PathT, message: str, hint: str = "") -> None:
        self.warnings.append(self.smap.diag(path, message, hint=hint, severity="warning"))

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


_FLAG_HINT = ("a list item or value is passed to the process as its own word, so this one would "
              "be read as an option; set each option under its own key")


def _argv_value_ok(ctx: Ctx, path: PathT, value: Any, what: str) -> bool:
    """Check one argument value that becomes argv words: no word that reads as a flag, no
    credential in a URL. Problems are positioned at the list item; True when there are none."""
    ok = True
    items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
    for i, item in items:
        where = path if i is None else path + (i,)
        token = repr(item) if isinstance(item, float) and i is not None else item
        if isinstance(token, str) and is_flag_shaped(token):
            if isinstance(item, str):
                ctx.err(where, f"{describe(item)} would be read as a command-line flag by {what}",
                        _FLAG_HINT)
            else:
                ctx.err(where, f"{item!r} (written {token!r}) would be read as a command-line "
                               f"flag by {what}",
                        "argparse before Python 3.13 reads a negative number in exponent form "
                        "as an option, and a list item cannot be written --flag=VALUE")
            ok = False
    for where, text in _strings(path, value):
        if url_has_credential(text):
            ctx.err(where, "a URL with a user name or password is a credential and must not be "
                           "written in the topology",
                    "write {env: NAME} for the whole argument and put NAME=... in "
                    "runtime.secrets_env_file on the hosts")
            ok = False
    return ok


def _strings(path: PathT, value: Any) -> Iterator[tuple[PathT, str]]:
    """Every string inside a value (list items, mapping values of a JSON argument)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(path + (i,), v)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(path + (k,), v)


def no_userinfo(ctx: Ctx, path: PathT, value: Any) -> bool:
    """A model path or image reaches argv, plan.json, README.md and endpoints.json: refuse a URL
    with a user name or password in it. True when there is none."""
    if isinstance(value, str) and url_has_credential(value):
        ctx.err(path, "a URL with a user name or password is a credential and must not be "
                      "written in the topology: this value is shown in argv, plan.json, "
                      "README.md and endpoints.json",
                "give the host access another way (a local path, HF_TOKEN=... in "
                "runtime.secrets_env_file)")
        return False
    return True


CASE_HINT = ("names become file and unit names, and macOS and Windows checkouts of the output "
              "ignore case: choose names that differ in more than case")


def env_refs(data: dict[str, Any]) -> dict[str, PathT]:
    """Every ``{env: NAME}`` of the document's server and router arguments: NAME -> where it
    is first used."""
    scopes: list[tuple[PathT, Any]] = [(("defaults",), data.get("defaults")),
                                       (("router", "args"), data.get("router", {}).get("args"))]
    for mi, m in enumerate(data.get("sglang", [])):
        scopes.append((("sglang", mi, "router", "args"), m.get("router", {}).get("args")))
        gkey = groups_key(m)
        for gi, g in enumerate(m.get(gkey, [])):
            scopes.append((("sglang", mi, gkey, gi, "overrides"), g.get("overrides")))
    refs: dict[str, PathT] = {}
    for base, args in scopes:
        for key, value in (args or {}).items():
            if isinstance(value, dict) and set(value) == {"env"} and isinstance(value["env"], str):
                refs.setdefault(value["env"], base + (key,))
    return refs


#: variables the rendered scripts set or read themselves (templates/bash, templates/slurm): a
#: runtime.env value would replace sgl-gen's (``SGLGEN_ROOT`` decides where the secrets file is
#: written, ``CUDA_VISIBLE_DEVICES`` which GPUs an engine uses, ``SUBMIT_DIR`` where the
#: sbatch writes endpoints, ``SLURM_*`` which nodes and rank a step has)
_RESERVED_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "SUBMIT_DIR", "SLURM_JOB_ID",
                           "SLURM_JOB_NODELIST", "SLURM_PROCID", "SLURM_SUBMIT_DIR"})
_RESERVED_ENV_PREFIXES = ("SGLGEN_", "SGL_ADDR_")
#: documented knobs under the reserved prefix: the rehearsal engine reads them, no script sets
#: them (README "Rehearsal engine")
_USER_SGLGEN_ENV = ("SGLGEN_REHEARSAL_",)


def reserved_env(name: str) -> bool:
    if name in _RESERVED_ENV:
        return True
    return name.startswith(_RESERVED_ENV_PREFIXES) and not name.startswith(_USER_SGLGEN_ENV)


def _secret_value(ctx: Ctx, path: PathT, spec: Any, value: Any) -> tuple[bool, Any]:
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
    if is_credential_name(spec.name) and spec.type == "str" and value is not None:
        ctx.err(path, f"{spec.flag} is a credential and must not be written in the topology",
                "write {env: NAME} and put NAME=... in runtime.secrets_env_file on the hosts")
        return True, None
    if spec.name in CREDENTIAL_ARGS and value is not None:
        ctx.err(path, f"{spec.flag} is a connection string, which can hold a password, and must "
                      "not be written in the topology",
                "write {env: NAME} and put NAME=... in runtime.secrets_env_file on the hosts")
        return True, None
    return False, value


def groups_key(model: dict[str, Any]) -> str:
    return "engine_groups" if "engine_groups" in model else "server_groups"


def check_server_args(ctx: Ctx, catalog: Any, args: dict[str, Any], base: PathT,
                       *, allow_model_path: bool) -> dict[str, Any]:
    """Validate ServerArgs keys/values against the catalog; return them in underscore form.

    Every rule applies to the argument a key names, not to its spelling: ``model`` and
    ``--model-path`` are ``model_path``, ``nccl_init_addr`` is ``dist_init_addr``, ``pp-size`` and
    ``pipeline_parallel_size`` are one argument (argparse would keep the last of two)."""
    out: dict[str, Any] = {}
    seen: dict[str, str] = {}  # argparse dest -> the key that set it
    for key, value in args.items():
        path = base + (key,)
        norm = key.replace("-", "_")
        spec = catalog.get(key)
        if spec is None:
            hint = did_you_mean(norm, list(catalog.names))
            elsewhere = versions_with(key, catalog.version)
            if elsewhere:
                ctx.err(path, f"sglang {catalog.version} has no server argument '{key}' (sglang "
                              f"{', '.join(elsewhere)} has it)",
                        hint=f"the topology's deployment.sglang_version is {catalog.version}",
                        key=True)
                continue
            ctx.err(path, f"unknown SGLang server argument '{key}' "
                          f"(sglang {catalog.version})", hint=hint, key=True)
            continue
        if spec.dest in seen:
            ctx.err(path, f"'{key}' and '{seen[spec.dest]}' are the same argument ({spec.flag})",
                    "keep one of them: SGLang would take the last one on the command line",
                    key=True)
            continue
        seen[spec.dest] = key
        if "model_path" in (spec.name, spec.dest):
            if not allow_model_path:
                ctx.err(path, f"'{key}' ({spec.flag}) is not a server default",
                        "set deployment.hf_checkpoint or the model's model_path", key=True)
            continue  # resolved by the model-path cascade, never emitted twice
        owned = OWNED_ARGS.get(spec.name) or OWNED_ARGS.get(spec.dest)
        if owned:
            alias = "" if key in (spec.name, spec.flag) else f" ({spec.flag})"
            ctx.err(path, f"'{key}'{alias} is set by sgl-gen: {owned}", key=True)
            continue
        handled, ref = _secret_value(ctx, path, spec, value)
        if handled:
            if ref is not None:
                out[spec.name] = ref
            continue
        if not _argv_value_ok(ctx, path, value, "SGLang"):
            continue
        problem = spec.check_value(value)
        if problem:
            ctx.err(path, problem)
            continue
        out[spec.name] = value
    return out


def is_model_path_key(catalog: Any, key: str) -> bool:
    """Whether an overrides key names SGLang's ``--model-path`` (``model_path``, ``model``...)."""
    spec = catalog.get(key)
    return spec is not None and "model_path" in (spec.name, spec.dest)


#: router arguments sgl-gen writes from the topology
_ROUTER_OWNED = frozenset({"host", "port", "prometheus_port", "policy", "worker_urls",
                           "pd_disaggregation", "prefill", "decode", "prefill_policy",
                           "decode_policy"})


def router_spec(ctx: Ctx, impl: str, top: dict[str, Any], model: dict[str, Any],
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
        seen: dict[str, str] = {}  # argparse dest -> the key of this scope that set it
        for key, value in scope_args.items():
            norm = key.replace("-", "_")
            spec = cat.get(key)
            if spec is None:
                ctx.err(base + (key,), f"unknown {impl} {version} argument '{key}'",
                        did_you_mean(norm, list(cat.names)), key=True)
                continue
            # the argument the key names decides, not its spelling (``--host``, an alias)
            if spec.name in _ROUTER_OWNED or spec.dest in _ROUTER_OWNED:
                ctx.err(base + (key,), f"'{key}' is set by sgl-gen from the topology",
                        "use router.host / router.port / router.prometheus_port / router.policy",
                        key=True)
                continue
            if spec.dest in seen:
                ctx.err(base + (key,), f"'{key}' and '{seen[spec.dest]}' are the same argument "
                                       f"({spec.flag})", "keep one of them", key=True)
                continue
            seen[spec.dest] = key
            handled, ref = _secret_value(ctx, base + (key,), spec, value)
            if handled:
                if ref is not None:
                    args[spec.name] = ref
                continue
            if not _argv_value_ok(ctx, base + (key,), value, f"the {impl} router"):
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
