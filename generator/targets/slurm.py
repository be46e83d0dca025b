"""The Slurm target: one sbatch file for the whole topology.

Logical node i is the i-th host of the allocation (``scontrol show hostnames``); its address is
resolved at run time. Every plan address in an argv (``--host``, worker URLs, ``--dist-init-addr``)
becomes that node's address variable, so the same argv the other targets run is started by
``srun`` steps pinned to their nodes (``--nodelist``, one task per node, the engine's GPUs as
gres: Slurm sets ``CUDA_VISIBLE_DEVICES``). Routers start once every engine's rank 0 is healthy;
then ``endpoints-<jobid>.json`` (the schema of endpoints.json, with real addresses) is written to
the submit directory and the job waits. A unit that exits ends the job with its log tail;
``scancel`` tears everything down.
"""

from __future__ import annotations

import inspect
import json
import re
import types
from collections.abc import Callable
from typing import Any

from generator import __version__
from generator.compile import credentials
from generator.compile.model import Plan, SlurmSpec
from generator.errors import Diagnostic
from generator.paths import ROOT
from generator.targets import common
from generator.targets.common import Unit, launch_secrets, shq
from generator.targets.plans import endpoints


def _func_name(unit: str) -> str:
    """The bash function of a unit: injective, so that units that differ only in ``-`` versus
    ``_`` (models ``a-b`` and ``a_b``) never share a function. Letters and digits stay, ``-``
    becomes ``__``, ``_`` becomes ``_u`` and any other character ``_x<hex>_``: after each ``_``
    the next character says which, so the name decodes back to exactly one unit."""
    out = []
    for ch in unit:
        if ch.isascii() and ch.isalnum():
            out.append(ch)
        elif ch == "-":
            out.append("__")
        elif ch == "_":
            out.append("_u")
        else:
            out.append(f"_x{ord(ch):x}_")
    return "sgl_" + "".join(out)


#: flags sgl-gen writes itself at the start of an argv, and how many values each takes (None: up
#: to the next flag). Routers and resolve reject these in user arguments, so the leading run of
#: these flags is sgl-gen's own; the first other flag starts the user's arguments.
_OWNED_ENGINE = {"--model-path": 1, "--host": 1, "--port": 1, "--tp-size": 1, "--nccl-port": 1,
                 "--engine-info-bootstrap-port": 1, "--nnodes": 1, "--node-rank": 1,
                 "--dist-init-addr": 1, "--disaggregation-mode": 1,
                 "--disaggregation-bootstrap-port": 1, "--encoder-only": 0,
                 "--language-only": 0, "--encoder-urls": None}
_OWNED_ROUTER = {"--host": 1, "--port": 1, "--prometheus-port": 1, "--pd-disaggregation": 0,
                 "--prefill": None, "--decode": 1, "--worker-urls": None}
#: the owned flags whose values are node addresses (or URLs / HOST:PORT of one), and which of
#: their values: all of them, or only the first (``--prefill URL BOOTSTRAP_PORT``)
_ADDRESS_FLAGS = {"--host": "all", "--dist-init-addr": "all", "--encoder-urls": "all",
                  "--worker-urls": "all", "--decode": "all", "--prefill": "first"}


class _Addr:
    """Rewrites plan addresses in the address-typed values sgl-gen wrote (``--host``, worker and
    encoder URLs, ``--dist-init-addr``) to the run-time address variable of their node. Every
    other token, and every user value, is quoted byte-exact: a ``served_model_name: node0``
    stays ``node0``."""

    def __init__(self, plan: Plan):
        self.by_addr = {n.address: n.index for n in plan.nodes}

    def address(self, tok: str) -> str:
        for addr, i in self.by_addr.items():
            var = f"${{SGL_ADDR_{i}}}"
            if tok == addr:
                return f'"{var}"'
            for prefix in (f"http://{addr}:", f"{addr}:", f"http://[{addr}]:", f"[{addr}]:"):
                if tok.startswith(prefix):
                    rest = tok[len(prefix):]
                    lead = prefix.replace(addr, var)
                    return f'"{lead}"' + (shq(rest) if rest else "")
        return shq(tok)

    def line(self, argv: tuple[Any, ...], owned: dict[str, int | None],
             special: dict[str, str] | None = None) -> list[str]:
        """One shell line per flag. ``special`` replaces the value of an owned flag with a
        shell expression (a multi-node rank's ``--node-rank`` and ``--host``)."""
        quoted: list[str] = []
        i = 0
        while i < len(argv) and isinstance(argv[i], str) and argv[i] in owned:
            flag = argv[i]
            arity = owned[flag]
            end = i + 1
            while end < len(argv) and (end - i - 1 < arity if arity is not None else
                                       not (isinstance(argv[end], str)
                                            and argv[end].startswith("--"))):
                end += 1
            quoted.append(shq(flag))
            for k, tok in enumerate(argv[i + 1:end]):
                if special and flag in special:
                    quoted.append(special[flag])
                elif not isinstance(tok, str):
                    quoted.append(self.user(tok))
                elif _ADDRESS_FLAGS.get(flag) == "all" or (
                        _ADDRESS_FLAGS.get(flag) == "first" and k == 0):
                    quoted.append(self.address(tok))
                else:
                    quoted.append(shq(tok))
            i = end
        if "--host" not in argv[:i]:  # the catalog spells a flag differently: never guess
            raise ValueError(f"sgl-gen's own flags not found at the start of {argv!r}")
        quoted += [self.user(t) for t in argv[i:]]
        lines: list[list[str]] = []
        for t, q in zip(argv, quoted, strict=True):
            if isinstance(t, str) and t.startswith("--") or not lines:
                lines.append([q])
            else:
                lines[-1].append(q)
        return [" ".join(parts) for parts in lines]

    @staticmethod
    def user(tok: Any) -> str:
        if not isinstance(tok, str):  # EnvRef: a secret from the environment
            return f'"${{{tok.name}}}"'
        return shq(tok)


def render_sbatch(plan: Plan, rehearse: bool = False) -> str:
    t = plan.topology
    s = t.slurm
    addr = _Addr(plan)
    explicit = s is not None
    s = s or SlurmSpec()
    header: list[tuple[str, Any]] = [
        ("job-name", s.job_name or f"sgl-{plan.name}"),
        ("nodes", len(plan.nodes)),
        ("gres", f"gpu:{t.gpus_per_node}"),
        ("output", s.output or f"sgl-{plan.name}-%j.out"),
    ]
    if s.exclusive:  # whole nodes: every CPU and all the memory, shared out per GPU in the job
        header += [("exclusive", True), ("mem", 0)]
    else:  # exactly what the busiest node's engines take (routers overlap them)
        cpus, mem = _node_needs(plan, s)
        header += [("ntasks-per-node", 1), ("cpus-per-task", cpus), ("mem", f"{mem}M")]
    # drain before the time limit: routers stop taking requests, engines finish theirs
    header.append(("signal", f"B:USR1@{s.stop_before_limit}"))
    if explicit:
        header += [(k, v) for k, v in (("partition", s.partition), ("account", s.account),
                                        ("time", s.time)) if v]
        header += sorted(s.extra)
    sbatch_lines = []
    for key, value in header:
        if value is True:
            sbatch_lines.append(f"#SBATCH --{key}")
        elif value is not False:
            sbatch_lines.append(f"#SBATCH --{key}={_sbatch_quote(str(value))}")
    container = t.runtime.container
    if container is not None and container.kind not in ("pyxis", "apptainer"):
        container = None  # docker/podman run the hosts' units (container_warning says so)
    engines: list[dict[str, Any]] = []
    routers: list[dict[str, Any]] = []
    units: list[dict[str, Any]] = []  # job.json: what lib/sgljob.py starts and supervises
    for m in plan.models:
        r = m.router
        runit = f"router-{m.name}"
        for e in m.engines:
            unit = f"engine-{e.id}"
            nodes = [p.node for p in e.placements]
            special = ({"--node-rank": '"$SLURM_PROCID"', "--host": '"${!own}"'}
                       if e.nnodes > 1 else None)  # each rank: its own rank and node address
            cmd = ([t.runtime.python, "$SGLGEN_LIB/rehearsal.py", "--catalog",
                    f"$SGLGEN_LIB/sglang-{t.sglang_version}.json", "--rehearsal-id", e.id,
                    "--rehearsal-role", e.worker_type] if rehearse
                   else [t.runtime.python, "-m", "sglang.launch_server"])
            # {env: NAME} values SGLang can read from its --config file go there, not argv
            sec = launch_secrets(Unit(unit, "engine", "", nodes[0], (), e.argv, "", None))
            lines = addr.line(sec.argv_tokens, _OWNED_ENGINE, special)
            if sec.config:
                lines.insert(0, f'--config "$SGLGEN_LOG_DIR/run/{unit}-$SLURM_PROCID.secrets.yaml"')
            engines.append({
                "secrets": sec, "unit": unit, "func": _func_name(unit), "nodes": nodes,
                "command": " ".join(_cmd(c) for c in cmd), "lines": lines,
            })
            encoder = e.worker_type == "encoder"
            units.append({
                "unit": unit, "kind": "engine", "model": m.name, "role": e.worker_type,
                "func": _func_name(unit), "nodes": nodes, "port": e.port,
                "gpus": e.gpus_per_engine // e.nnodes,  # per node: gres is per node
                "phase": 0 if encoder else 1, "router": None if encoder else runit,
                "bootstrap_port": e.bootstrap_port,
            })
        sec = launch_secrets(Unit(runit, "router", "", r.node, (), r.argv, "", None,
                                  program=r.implementation))
        routers.append({
            "unit": runit, "func": _func_name(runit), "secrets": sec,
            "command": " ".join(_cmd(c) for c in (t.runtime.python, "-m", r.module)),
            "lines": addr.line(sec.argv_tokens, _OWNED_ROUTER),
        })
        units.append({
            "unit": runit, "kind": "router", "model": m.name, "role": "router",
            "func": _func_name(runit), "nodes": [r.node], "port": r.port, "gpus": 0,
            "phase": 2, "expected": sum(1 for e in m.engines if e.worker_type != "encoder"),
            # a router started with --api-key refuses GET /workers without it
            "key_env": next((tok.name for flag, tok in zip(r.argv, r.argv[1:], strict=False)
                             if flag == "--api-key" and not isinstance(tok, str)), None),
        })
    srun_extra: list[str] = []
    container_args = ""
    if container and container.kind == "pyxis":
        srun_extra = [f"--container-image={container.image}"]
        if container.mounts:
            srun_extra.append(f"--container-mounts={','.join(container.mounts)}")
    elif container and container.kind == "apptainer":
        # one --bind per mount, each quoted: the value reaches apptainer byte-exact
        container_args = " ".join(f"--bind {shq(m)}" for m in container.mounts)
    job = {
        "format": 1, "deployment": plan.name, "gpus_per_node": t.gpus_per_node,
        "nodes": [n.host or f"node{n.index}" for n in plan.nodes],
        "resources": {"exclusive": s.exclusive, "cpus_per_gpu": s.cpus_per_gpu,
                      "cpus_per_engine": s.cpus_per_engine,
                      "mem_per_gpu_mb": s.mem_per_gpu_mb},
        "restart": {"policy": s.restart, "limit": s.restart_limit,
                    "backoff": s.restart_backoff},
        "drain": t.runtime.rollout.drain, "start_timeout": START_TIMEOUT,
        "srun_extra": srun_extra, "units": units, "endpoints": _endpoints_doc(plan, addr),
    }
    job_json = _json_lines(job)
    if any(line == _JOB_EOF for line in job_json.splitlines()):  # cannot be: JSON lines
        raise ValueError("job.json holds its heredoc's delimiter")
    uses_config = any(e["secrets"].config for e in engines)
    return common.tmpl("slurm/job.sbatch.j2", container_args=container_args, plan=plan, t=t,
                 version=__version__, uses_config=uses_config,
                 sbatch_lines=sbatch_lines, engines=engines, routers=routers,
                 n_nodes=len(plan.nodes), job_json=job_json, job_eof=_JOB_EOF,
                 rehearse=rehearse, container=container, env=t.runtime.env, slurm=s,
                 secrets=t.runtime.secrets_env_file)


#: seconds a unit may take to become healthy (weights load); SGLGEN_START_TIMEOUT overrides
START_TIMEOUT = 1800
#: the delimiter of job.json's heredoc in the sbatch
_JOB_EOF = "SGLGEN_JOB_JSON"


def _json_lines(doc: dict[str, Any]) -> str:
    """A JSON object for review: a line per key, a line per item of a list (a unit each)."""
    def one(v: Any) -> str:
        return json.dumps(v, sort_keys=True, ensure_ascii=True)

    rows = []
    for k in sorted(doc):
        v = doc[k]
        if isinstance(v, list) and v:
            rows.append(f" {one(k)}: [\n" + ",\n".join(f"  {one(x)}" for x in v) + "\n ]")
        else:
            rows.append(f" {one(k)}: {one(v)}")
    return "{\n" + ",\n".join(rows) + "\n}"


def _node_needs(plan: Plan, s: SlurmSpec) -> tuple[int, int]:
    """(CPUs, MB) the busiest node's engines take when the job shares its nodes: the request
    of ``--cpus-per-task`` (one task per node) and ``--mem``. resolve requires both rules."""
    cpus = [0] * len(plan.nodes)
    mem = [0] * len(plan.nodes)
    for m in plan.models:
        for e in m.engines:
            g = e.gpus_per_engine // e.nnodes
            for p in e.placements:
                cpus[p.node] += s.cpus_per_engine or (s.cpus_per_gpu or 1) * max(g, 1)
                mem[p.node] += (s.mem_per_gpu_mb or 0) * max(g, 1)
    return max(1, *cpus), max(1, *mem)


def _endpoints_doc(plan: Plan, addr: _Addr) -> Any:
    """endpoints.json for the job to fill in: the document of :func:`endpoints`, with only its
    address fields (router URL and address, engine URLs) made ``{"$node": i, "prefix",
    "suffix"}``, which lib/sgljob.py replaces by node i's run-time address; every other string
    (a model named ``node0``) stays what it is."""
    def address(v: str) -> Any:
        for a, i in addr.by_addr.items():
            if v == a:
                return {"$node": i, "prefix": "", "suffix": ""}
            for prefix in (f"http://{a}:", f"http://[{a}]:"):
                if v.startswith(prefix):
                    return {"$node": i, "prefix": "http://", "suffix": ":" + v[len(prefix):]}
        return v

    def walk(value: Any, where: tuple[str, ...]) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, where + (str(k),)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, where) for v in value]
        if isinstance(value, str) and len(where) >= 3 and where[0] == "models" and (
                where[2] in ("router", "router_address", "engines")):
            return address(value)
        return value

    return walk(endpoints(plan), ())


def _cmd(token: str) -> str:
    if token.startswith("$SGLGEN_LIB/"):  # written by sgl-gen: a fixed file name
        return f'"{token}"'
    return shq(token)


#: the line of generator/redact.py that :func:`redact_source` replaces with the bundled rule
_RULE_IMPORT = "from generator.compile.credentials import is_credential_name  # sgl-gen: credential rule\n"
REDACT_SOURCE = ROOT / "generator" / "redact.py"
#: shipped as slurm/lib/sgljob.py: the supervisor the sbatch hands over to
JOB_SOURCE = ROOT / "generator" / "slurmjob.py"
#: names the bundled rule must judge as generator.compile.credentials does
_PROBE = ("api_key", "admin_api_key", "control_plane_api_keys", "mesh_tls_key", "HF_TOKEN",
          "hfApiKey", "OPENAIAPIKEY", "AUTH_TOKEN_2", "DB_PASS", "GITHUB_PAT", "PWD", "port",
          "max_total_tokens", "tokenizer_path", "AWS_ACCESS_KEY_ID", "x-api-key")


def redact_source() -> str:
    """generator/redact.py as the stand-alone file shipped next to the sbatch (slurm/lib/): the
    job prints a failed unit's log tail through it with its own python, where sgl-gen is not
    installed. The import of the credential rule becomes the rule's own source (the function,
    the functions it calls and the constants they read, from generator/compile/credentials.py),
    so the job redacts by exactly the rule sgl-gen validates with; no second copy is kept by hand."""
    text = REDACT_SOURCE.read_text(encoding="utf-8")
    if text.count(_RULE_IMPORT) != 1:
        raise ValueError(f"{REDACT_SOURCE}: the credential rule import line is missing")
    bundle = _bundle(credentials.is_credential_name)
    # getsource reads the file on disk: make sure it is the rule this process runs
    probe: dict[str, Any] = {}
    exec(compile(bundle, "<credential rule>", "exec"), probe)  # noqa: S102 - our own source
    if any(probe["is_credential_name"](n) != credentials.is_credential_name(n) for n in _PROBE):
        raise ValueError("generator/compile/credentials.py changed while sgl-gen ran: render again")
    return text.replace(_RULE_IMPORT, "# bundled from generator/compile/credentials.py by "
                        "generator/targets/slurm.py\n" + bundle)


def _bundle(func: Callable[..., Any]) -> str:
    """The source of ``func`` and of every function and constant of its module it reaches."""
    module = inspect.getmodule(func)
    imports: set[str] = set()
    constants: dict[str, str] = {}
    functions: dict[str, str] = {}

    def names(code: types.CodeType) -> set[str]:
        found = set(code.co_names)
        for c in code.co_consts:
            if isinstance(c, types.CodeType):
                found |= names(c)
        return found

    def visit(f: Callable[..., Any]) -> None:
        functions[f.__name__] = inspect.getsource(f)
        for name in sorted(names(f.__code__)):
            if name in functions or name in constants or not hasattr(module, name):
                continue
            value = getattr(module, name)
            if isinstance(value, types.FunctionType) and value.__module__ == func.__module__:
                visit(value)
            elif isinstance(value, types.ModuleType):
                imports.add(f"import {value.__name__}\n")
            else:
                constants[name] = f"{name} = {_literal(value)}\n"
                if "re.compile(" in constants[name]:
                    imports.add("import re\n")

    visit(func)
    return ("".join(sorted(imports)) + "".join(constants[k] for k in sorted(constants))
            + "\n\n" + "\n\n".join(functions[k] for k in sorted(functions)) + "\n\n")


def _literal(value: Any) -> str:
    """Python source for a constant of the credential rule; stable from run to run (a
    frozenset's repr follows string hashing, which changes per process)."""
    if isinstance(value, frozenset):
        return "frozenset({" + ", ".join(_literal(v) for v in sorted(value)) + "})"
    if isinstance(value, tuple):
        return "(" + "".join(_literal(v) + ", " for v in value) + ")"
    if isinstance(value, re.Pattern):
        return f"re.compile({value.pattern!r}, {value.flags})"
    if isinstance(value, str | int | bool) or value is None:
        return repr(value)
    raise ValueError(f"cannot ship a {type(value).__name__} of the credential rule")


def container_warning(plan: Plan, targets: tuple[str, ...]) -> str | None:
    """The warning for a ``runtime.container`` that some of ``targets`` would ignore: pyxis and
    apptainer run the Slurm target's steps only (the host scripts and units start
    ``runtime.python`` on the host), docker and podman the host scripts and units only."""
    c = plan.topology.runtime.container
    if c is None:
        return None
    if c.kind in ("docker", "podman"):
        ignored = [x for x in ("slurm",) if x in targets]
        if not ignored:
            return None
        message = (f"the Slurm job does not run the {c.kind} container: its steps start "
                   f"runtime.python ({plan.topology.runtime.python}) on the nodes; {c.kind} "
                   "runs the units of the bash and systemd targets (deploy over SSH)")
        hint = "for Slurm, use kind: pyxis or kind: apptainer"
    else:
        ignored = [x for x in ("bash", "systemd") if x in targets]
        if not ignored:
            return None
        message = (f"the {' and '.join(ignored)} artifacts do not run the {c.kind} container: "
                   f"they start runtime.python ({plan.topology.runtime.python}) on the host "
                   "itself; only the Slurm target runs the container")
        hint = ("use kind: docker or kind: podman for the hosts' units, or use only --target "
                "slurm")
    if plan.topology.smap is None:
        return Diagnostic(plan.topology.file, 0, 0, "runtime.container", message, hint,
                          "warning").format()
    return plan.topology.smap.diag(("runtime", "container"), message, hint=hint,
                                   severity="warning").format()


def _sbatch_quote(value: str) -> str:
    """#SBATCH lines are read by sbatch, not a shell: double quotes keep spaces together."""
    if re.fullmatch(r"[A-Za-z0-9_.,:%@+=/-]+", value):
        return value
    return f'"{value}"'  # the schema rejects '"' and control characters here
