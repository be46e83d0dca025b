"""Stage 3 — resolve: validated document -> ``Topology``.

slime's resolution cascade (seed 000, "Resolution Rules"), then the stricter checks of DESIGN.md:
every problem is collected and reported at once, positioned at the value that causes it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
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
#: the largest cluster a topology describes (the schema's maximums; a test keeps them equal):
#: 64 GPUs per node is 8x today's densest servers, 4,096 nodes a very large training cluster.
#: Beyond them a typo (``gpus_per_node: 2000000000``) would make placement allocate or loop
#: for minutes, not describe hardware.
MAX_GPUS_PER_NODE = 64
MAX_NODES = 4096
MAX_GPUS = MAX_GPUS_PER_NODE * MAX_NODES

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


#: the schema's pattern for model_path / hf_checkpoint, for ``overrides.model_path``
_MODEL_PATH = re.compile("[^-\x00-\x1f\x7f-\x9f\u2028\u2029][^\x00-\x1f\x7f-\x9f\u2028\u2029]*")


class _Ctx:
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
#: argument and variable names whose last word is one of these hold a credential: only
#: ``{env: NAME}`` is accepted for them (sglang: api_key, admin_api_key, ssl_keyfile_password;
#: routers: api_key, tenant_api_key, control_plane_api_keys, oracle_password, mesh_tls_key;
#: ``HF_TOKEN``, ``WANDB_API_KEY``, ``AWS_SECRET_ACCESS_KEY``, ``DB_PASSWD``). ``*_tokens`` and
#: ``tokenizer_*`` count or name tokens (``max_total_tokens``, ``tokenizer_path``): the last
#: word decides, and for arguments only a string can be a credential
#: (``bucket_time_to_first_token`` is a list of floats).
#: ``AWS_ACCESS_KEY_ID`` names a key (an identifier, shown in logs and ARNs), not a secret.
_SECRET_WORDS = frozenset({"key", "keys", "apikey", "apikeys", "token", "password", "passwd",
                           "passphrase", "secret", "credential", "credentials"})
#: abbreviations that are a credential only after a qualifier: ``DB_PASS``, ``DB_PWD``,
#: ``GITHUB_PAT`` (a personal access token), ``HF_AUTH``; alone they are other things (the
#: shell's ``PWD``)
_QUALIFIED_SECRET_WORDS = frozenset({"pass", "pwd", "pat", "auth"})
#: a last word that only says how the credential before it is written (``CLIENT_SECRET_VALUE``)
_VALUE_WORDS = frozenset({"value", "val", "str", "string", "raw", "plain", "b64", "base64"})
#: words run together (``OPENAIAPIKEY``, ``hftoken``): the last word ends in one of these. A bare
#: ``key`` is not enough there (``hockey``, ``monkey``); ``tokens`` does not end in ``token``.
_RUN_TOGETHER_SUFFIXES = ("apikey", "apikeys", "accesskey", "secretkey", "privatekey", "authkey",
                          "token", "password", "passwd", "passphrase", "secret", "credential",
                          "credentials")
#: camelCase and acronym boundaries: ``hfApiKey`` -> hf Api Key, ``HFToken`` -> HF Token
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
#: router arguments that hold a whole connection string, whose forms carry a password where no
#: URL check sees it (``redis://cache/0?password=x``, ``host=db user=u password=x``, Oracle's
#: ``user/password@host``): only ``{env: NAME}`` (the routers read them from the variables in
#: ``_CREDENTIAL_ENV``)
_CREDENTIAL_ARGS = frozenset({"redis_url", "postgres_db_url", "oracle_connect_descriptor"})
#: the variables sglang-router and smg read those arguments (and the Oracle password) from
#: (render._ROUTER_ENV): a value for one of them in runtime.env is a literal connection string
_CREDENTIAL_ENV = frozenset({"REDIS_URL", "POSTGRES_DB_URL", "ATP_DSN", "ATP_PASSWORD"})
#: a URL with userinfo (``postgres://user:pw@db``, ``redis://:pw@cache``, ``https://TOKEN@host``)
_URL_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#@\s]+@")
#: a URL query parameter (``?password=x``, ``&api_key=x``, ``?token=x``): a credential when its
#: name is one by :func:`is_credential_name`
_URL_QUERY_PARAM = re.compile(r"://[^?#\s]*\?([^#\s]*)")


def _url_has_credential(text: str) -> bool:
    """Whether a string holds a URL with userinfo or with a credential-named query parameter."""
    if _URL_USERINFO.search(text):
        return True
    for m in _URL_QUERY_PARAM.finditer(text):
        for param in re.split(r"[&;]", m.group(1)):
            name, eq, _ = param.partition("=")
            if eq and is_credential_name(name):
                return True
    return False


#: argv tokens every argparse version reads as a number, not as an option: Python 3.10-3.12's
#: ``_negative_number_matcher`` (3.13 also takes ``-1e3``; a host may run any of them)
_NEGATIVE_NUMBER = re.compile(r"-\d+|-\d*\.\d+")


def _name_words(name: str) -> list[str]:
    """Lower-case words of a name: split at ``_``, ``-`` and camelCase boundaries; trailing
    numbers (``AUTH_TOKEN_2``, ``TOKEN2``) and a last word saying how the value is written
    (``CLIENT_SECRET_VALUE``, ``BOT_TOKEN_B64``) dropped."""
    words = [w for w in _CAMEL.sub("_", name).lower().replace("-", "_").split("_") if w]
    while words and words[-1].isdigit():
        words.pop()
    if len(words) > 1 and words[-1] in _VALUE_WORDS:
        words.pop()
    while words and words[-1].isdigit():
        words.pop()
    if words:
        words[-1] = words[-1].rstrip("0123456789")
    return [w for w in words if w]


def _last_word(name: str) -> str:
    """The last word of a name as written (``HF_TOKEN`` -> ``TOKEN``, ``hfApiKey`` -> ``Key``)."""
    words = [w for w in re.split(r"[-_]+", _CAMEL.sub("_", name)) if w]
    while len(words) > 1 and (words[-1].isdigit() or words[-1].lower() in _VALUE_WORDS):
        words.pop()
    last = words[-1].rstrip("0123456789") if words else name
    for suffix in _RUN_TOGETHER_SUFFIXES:  # OPENAIAPIKEY -> APIKEY
        if last.lower() not in _SECRET_WORDS and last.lower().endswith(suffix):
            return last[-len(suffix):]
    return last


def is_credential_name(name: str) -> bool:
    """Whether an argument or environment variable of this name holds a credential: the one
    rule for server and router arguments and ``runtime.env`` (importers can reuse it)."""
    words = _name_words(name)
    if not words:
        return False
    last = words[-1]
    return (last in _SECRET_WORDS or (len(words) > 1 and last in _QUALIFIED_SECRET_WORDS)
            or last.endswith(_RUN_TOGETHER_SUFFIXES))


def is_flag_shaped(token: str) -> bool:
    """Whether argparse would read this argv token as an option rather than a value: it starts
    with ``-``, is not ``-`` alone and not a negative number (``-1``, ``-0.5``)."""
    return token.startswith("-") and token != "-" and _NEGATIVE_NUMBER.fullmatch(token) is None


def _is_secret(name: str) -> bool:
    return is_credential_name(name)


_FLAG_HINT = ("a list item or value is passed to the process as its own word, so this one would "
              "be read as an option; set each option under its own key")


def _argv_value_ok(ctx: _Ctx, path: PathT, value: Any, what: str) -> bool:
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
        if _url_has_credential(text):
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


def _no_userinfo(ctx: _Ctx, path: PathT, value: Any) -> bool:
    """A model path or image reaches argv, plan.json, README.md and endpoints.json: refuse a URL
    with a user name or password in it. True when there is none."""
    if isinstance(value, str) and _url_has_credential(value):
        ctx.err(path, "a URL with a user name or password is a credential and must not be "
                      "written in the topology: this value is shown in argv, plan.json, "
                      "README.md and endpoints.json",
                "give the host access another way (a local path, HF_TOKEN=... in "
                "runtime.secrets_env_file)")
        return False
    return True


_CASE_HINT = ("names become file and unit names, and macOS and Windows checkouts of the output "
              "ignore case: choose names that differ in more than case")


def _env_refs(data: dict[str, Any]) -> dict[str, PathT]:
    """Every ``{env: NAME}`` of the document's server and router arguments: NAME -> where it
    is first used."""
    scopes: list[tuple[PathT, Any]] = [(("defaults",), data.get("defaults")),
                                       (("router", "args"), data.get("router", {}).get("args"))]
    for mi, m in enumerate(data.get("sglang", [])):
        scopes.append((("sglang", mi, "router", "args"), m.get("router", {}).get("args")))
        gkey = _groups_key(m)
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


def _reserved_env(name: str) -> bool:
    if name in _RESERVED_ENV:
        return True
    return name.startswith(_RESERVED_ENV_PREFIXES) and not name.startswith(_USER_SGLGEN_ENV)


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
    if _is_secret(spec.name) and spec.type == "str" and value is not None:
        ctx.err(path, f"{spec.flag} is a credential and must not be written in the topology",
                "write {env: NAME} and put NAME=... in runtime.secrets_env_file on the hosts")
        return True, None
    if spec.name in _CREDENTIAL_ARGS and value is not None:
        ctx.err(path, f"{spec.flag} is a connection string, which can hold a password, and must "
                      "not be written in the topology",
                "write {env: NAME} and put NAME=... in runtime.secrets_env_file on the hosts")
        return True, None
    return False, value


def _groups_key(model: dict[str, Any]) -> str:
    return "engine_groups" if "engine_groups" in model else "server_groups"


def _check_server_args(ctx: _Ctx, catalog: Any, args: dict[str, Any], base: PathT,
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


def _is_model_path_key(catalog: Any, key: str) -> bool:
    """Whether an overrides key names SGLang's ``--model-path`` (``model_path``, ``model``...)."""
    spec = catalog.get(key)
    return spec is not None and "model_path" in (spec.name, spec.dest)


#: router arguments sgl-gen writes from the topology
_ROUTER_OWNED = frozenset({"host", "port", "prometheus_port", "policy", "worker_urls",
                           "pd_disaggregation", "prefill", "decode", "prefill_policy",
                           "decode_policy"})


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
    _no_userinfo(ctx, ("deployment", "hf_checkpoint"), hf)

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
                                    "in case", _CASE_HINT)
        seen_hosts.setdefault(h["name"].lower(), i)
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
                        _CASE_HINT)
        first_name.setdefault(mname.lower(), (mname, mpath + ("name",)))
        _no_userinfo(ctx, mpath + ("model_path",), m.get("model_path"))
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
            for k in ov:
                if _is_model_path_key(catalog, k):
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
            elif not _no_userinfo(ctx, gp, value):
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
        slurm = SlurmSpec(s.get("partition"), s.get("account"), s.get("time"),
                          s.get("job_name"), s.get("output"), bool(s.get("exclusive", False)),
                          tuple(sorted(s.get("extra", {}).items())))
    container = None
    if "container" in runtime:
        c = runtime["container"]
        _no_userinfo(ctx, ("runtime", "container", "image"), c["image"])
        for j, mount in enumerate(c.get("mounts", ())):
            if "," in mount:  # pyxis --container-mounts and apptainer --bind split at ','
                ctx.err(("runtime", "container", "mounts", j),
                        f"{describe(mount)} holds ',', which separates mounts: it would add "
                        "another mount", "write each mount as its own list item")
        container = ContainerSpec(c["kind"], c["image"], tuple(c.get("mounts", ())))
    refs = _env_refs(data)
    for key, value in runtime.get("env", {}).items():
        epath: PathT = ("runtime", "env", key)
        if _reserved_env(key):
            ctx.err(epath, f"{key} is set by sgl-gen's scripts: a value here would replace "
                           "theirs", "remove it from runtime.env", key=True)
        elif key in refs:
            # exported after the secrets file is sourced: even "" would replace the secret
            # (an empty --api-key turns authentication off)
            ctx.err(epath, f"{key} carries the credential of {format_path(refs[key])} "
                           f"({{env: {key}}}): a value here would replace the one from "
                           "runtime.secrets_env_file", f"remove it from runtime.env and put "
                           f"{key}=... in runtime.secrets_env_file on the hosts", key=True)
        elif key in _CREDENTIAL_ENV and not isinstance(value, bool):
            ctx.err(epath, f"{key} is a connection string or password the routers read: a "
                           "value written here is rendered into every script and unit",
                    f"put {key}=... in runtime.secrets_env_file on the hosts")
        elif is_credential_name(key) and value != "" and not isinstance(value, bool):
            ctx.err(epath, f"{key} looks like a credential (its name ends in "
                           f"{_last_word(key)!r}): a value written here is "
                           "rendered into every script and unit",
                    f"put {key}=... in runtime.secrets_env_file on the hosts (the scripts source "
                    "it, the systemd units load it)")
        elif isinstance(value, str) and _url_has_credential(value):
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
                     secrets_env_file=runtime.get("secrets_env_file"), container=container)
    if ctx.errors:
        raise TopologyError(ctx.errors + ctx.warnings)
    return Topology(
        file=smap.file, name=name, sglang_version=version, hf_checkpoint=hf, total_gpus=total,
        gpus_per_node=gpn, nodes=nodes, hosts=tuple(hosts), node_groups=node_groups,
        slurm=slurm, runtime=rt, router_implementation=impl, models=tuple(models), local=local,
        warnings=tuple(sorted(ctx.warnings)), smap=smap)


#: ``#SBATCH`` options sgl-gen writes itself (generator/slurm.py render_sbatch) and the
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
        gkey = _groups_key(m)
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


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _default_name(file: str) -> str:
    stem = Path(file).stem if file else "sglang"
    clean = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_") or "sglang"
    return clean[:63]
