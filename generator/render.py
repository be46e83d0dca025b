"""Stage 5 — render: ``Plan`` -> ``{relative path: Artifact}``. Pure: no I/O but reading templates.

Layout of ``<out>/<deployment>/``::

    plan.json  endpoints.json  README.md  MANIFEST.sha256  prometheus/targets.json
    hosts/<host>/sgl-gen-host.sh            start|stop|status|logs for that host
    hosts/<host>/bin/<unit>.sh              one launch script per engine rank and router
    hosts/<host>/systemd/<unit>.service     one unit per launch script, plus <deployment>.target
    hosts/<host>/lib/                       rehearsal engine + catalog (with --rehearse only)
    slurm/<deployment>.sbatch               with the slurm target

A host directory is copied verbatim to ``<workdir>/<deployment>/`` on that host (``SGLGEN_ROOT``).
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2

from generator import __version__
from generator.catalog import catalog_path
from generator.model import Engine, ModelPlan, Node, Placement, Plan, Router
from generator.paths import ROOT, TEMPLATES
from generator.planfile import plan_json, pretty_json
from generator.report import gpu_ranges

AVAILABLE_TARGETS = ("bash", "systemd", "slurm")
REHEARSAL_SOURCE = ROOT / "generator" / "rehearsal.py"
MODE_EXEC = 0o755
MODE_FILE = 0o644


@dataclass(frozen=True)
class Artifact:
    content: str
    mode: int = MODE_FILE


def shq(value: Any) -> str:
    """Quote one value for bash so that it arrives byte-exact (the one quoting filter)."""
    if isinstance(value, EnvToken):
        return f'"${{{value.name}}}"'
    return _shq_str(value if isinstance(value, str) else str(value))


_NEEDS_ANSI_C = re.compile(r"[$`\x00-\x1f\x7f]")
#: Unicode categories written as escapes: controls (Cc: NUL, ESC, U+0085), format characters
#: (Cf: U+202E right-to-left override, U+200B zero-width space), line and paragraph separators
#: (Zl U+2028, Zp U+2029) and spaces other than U+0020 (Zs: U+00A0 looks like a word break but
#: is not one). Written raw they reach the file byte-exact, yet a reviewer of the rendered text
#: sees something other than what runs (a reordered line, a line break, nothing at all).
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Zs"})


def _hidden(c: str) -> bool:
    return c != " " and unicodedata.category(c) in _HIDDEN_CATEGORIES


@lru_cache(maxsize=1 << 16)
def _shq_str(value: str) -> str:
    if _NEEDS_ANSI_C.search(value) or (not value.isascii() and any(map(_hidden, value))):
        # ANSI-C quoting: expansions stay literal and every hidden character is visible as an
        # escape. Non-ASCII ones are written as the \xHH bytes of their UTF-8 encoding: bash
        # converts $'\uXXXX' only in a UTF-8 locale (LC_ALL=C leaves the six characters as they
        # are), while \xHH is one byte in every locale.
        return "$'" + "".join(_ansi_c(c) for c in value) + "'"
    return shlex.quote(value)


def _ansi_c(c: str) -> str:
    got = _ANSI_C.get(c)
    if got is not None:
        return got
    if ord(c) < 32 or ord(c) == 127 or (ord(c) > 127 and _hidden(c)):
        return "".join(f"\\x{b:02x}" for b in c.encode("utf-8"))
    return c


_ANSI_C = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


@dataclass(frozen=True)
class EnvToken:
    """An argv token read from the environment when the script runs (never rendered)."""

    name: str


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
        auto_reload=False,  # templates never change during a run: no stat per file rendered
    )
    env.filters["shq"] = shq
    return env


def _tmpl(name: str, **ctx: Any) -> str:
    return _env().get_template(name).render(**ctx)


def argv_lines(tokens: tuple[Any, ...] | list[Any]) -> list[str]:
    """Quoted argv grouped one flag per line: ``--flag value...``."""
    lines: list[list[str]] = []
    for t in tokens:
        tok = t if isinstance(t, str) else EnvToken(t.name)
        if isinstance(tok, str) and tok.startswith("--") or not lines:
            lines.append([shq(tok)])
        else:
            lines[-1].append(shq(tok))
    return [" ".join(parts) for parts in lines]


@dataclass(frozen=True)
class Unit:
    """One supervised process on one host: an engine rank or a router."""

    name: str  # engine-<id>[-r<rank>] | router-<model>
    kind: str  # "engine" | "router"
    description: str
    node: int
    command: tuple[str, ...]
    argv: tuple[Any, ...]
    gpus: str  # CUDA_VISIBLE_DEVICES, empty for routers
    health_url: str | None  # rank 0 engines and routers
    after: tuple[str, ...] = ()  # units on the same host this one starts after
    program: str = "sglang"  # what runs: "sglang" (engines) or the router implementation


def _engine_units(plan: Plan, m: ModelPlan, e: Engine, rehearse: bool) -> list[Unit]:
    rt = plan.topology.runtime
    out = []
    for p in e.placements:
        name = f"engine-{e.id}" if e.nnodes == 1 else f"engine-{e.id}-r{p.node_rank}"
        if rehearse:
            command: tuple[str, ...] = (
                rt.python, "$SGLGEN_ROOT/lib/rehearsal.py",
                "--catalog", f"$SGLGEN_ROOT/lib/sglang-{plan.topology.sglang_version}.json",
                "--rehearsal-id", e.id, "--rehearsal-role", e.worker_type)
        else:
            command = (rt.python, "-m", "sglang.launch_server")
        rank = f" rank {p.node_rank}/{e.nnodes}" if e.nnodes > 1 else ""
        desc = (f"{m.name} {e.worker_type} engine {e.id}{rank}, tp {e.tp_size}"
                + (f" pp {e.pp_size}" if e.pp_size > 1 else "")
                + f", GPUs {gpu_ranges(p.gpus)}")
        out.append(Unit(name, "engine", desc, p.node, command, p.argv,
                        ",".join(str(g) for g in p.gpus),
                        f"{e.url}/health" if p.node_rank == 0 else None))
    return out


def _router_unit(plan: Plan, m: ModelPlan, engine_units: list[Unit]) -> Unit:
    r: Router = m.router
    after = tuple(u.name for u in engine_units if u.node == r.node)
    return Unit(f"router-{m.name}", "router",
                f"{r.implementation} router of model {m.name} ({r.url})", r.node,
                (plan.topology.runtime.python, "-m", r.module), r.argv, "",
                f"{r.url}/health", after, r.implementation)


#: Router flags whose value the router also reads from an environment variable (argparse
#: ``default=os.getenv(VAR)``): a ``{env: NAME}`` value for one of them is exported as VAR and
#: left out of argv. Sources: sglang-router 0.3.2 ``sglang_router/router_args.py`` lines 693-761
#: and smg 1.13.0 ``smg/router_args.py`` lines 2083-2160. Neither router reads ``--api-key``
#: from the environment or a file (sglang_router/router_args.py:827, smg/router_args.py:2254).
_ROUTER_ENV = {
    "--oracle-wallet-path": "ATP_WALLET_PATH",
    "--oracle-tns-alias": "ATP_TNS_ALIAS",
    "--oracle-connect-descriptor": "ATP_DSN",
    "--oracle-username": "ATP_USER",
    "--oracle-password": "ATP_PASSWORD",
    "--postgres-db-url": "POSTGRES_DB_URL",
    "--redis-url": "REDIS_URL",
}
ROUTER_ENV_FALLBACK: dict[str, dict[str, str]] = {"sglang-router": _ROUTER_ENV, "smg": _ROUTER_ENV}


@dataclass(frozen=True)
class LaunchSecrets:
    """How a unit's ``{env: NAME}`` values reach it without appearing in its argv (``ps``).

    ``config``: (flag without ``--``, NAME) pairs SGLang reads from the YAML file of
    ``launch_server --config`` (written from the environment at launch); ``env``: (VAR, NAME,
    flag) the router reads from VAR; ``argv``: (flag, NAME) the program reads only from argv."""

    argv_tokens: tuple[Any, ...]
    config: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str, str], ...] = ()
    argv: tuple[tuple[str, str], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """Every variable an ``{env: NAME}`` value of the unit reads, once each, in order."""
        return tuple(dict.fromkeys([n for _, n in self.config] + [n for _, n, _ in self.env]
                                   + [n for _, n in self.argv]))


def launch_secrets(u: Unit) -> LaunchSecrets:
    """Split a unit's argv into what stays on the command line and the values moved off it."""
    tokens = list(u.argv)
    keep: list[Any] = []
    config: list[tuple[str, str]] = []
    env: list[tuple[str, str, str]] = []
    argv: list[tuple[str, str]] = []
    # SGLang accepts a single --config file (server_args.py prepare_server_args): when the
    # topology passes its own, the values stay in argv
    own_config = "--config" in tokens
    fallback = ROUTER_ENV_FALLBACK.get(u.program, {})
    for i, tok in enumerate(tokens):
        if isinstance(tok, str):
            keep.append(tok)
            continue
        flag = tokens[i - 1] if i and isinstance(tokens[i - 1], str) else ""
        moved = bool(keep) and flag.startswith("--") and keep[-1] == flag
        if moved and u.kind == "engine" and not own_config:
            keep.pop()
            config.append((flag[2:], tok.name))
        elif moved and flag in fallback:
            keep.pop()
            env.append((fallback[flag], tok.name, flag))
        else:
            keep.append(tok)
            argv.append((flag, tok.name))
    return LaunchSecrets(tuple(keep), tuple(config), tuple(env), tuple(argv))


def units_by_node(plan: Plan, rehearse: bool = False) -> dict[int, list[Unit]]:
    """Units per logical node in start order: encoders, other engines, then routers."""
    per: dict[int, list[Unit]] = {n.index: [] for n in plan.nodes}
    routers: list[Unit] = []
    encoders: list[Unit] = []
    engines: list[Unit] = []
    for m in plan.models:
        mine: list[Unit] = []
        for e in m.engines:
            us = _engine_units(plan, m, e, rehearse)
            mine += us
            (encoders if e.worker_type == "encoder" else engines).extend(us)
        routers.append(_router_unit(plan, m, mine))
    for u in encoders + engines + routers:
        per[u.node].append(u)
    return per


def systemd_name(plan: Plan, unit: Unit) -> str:
    return f"sgl-{plan.name}-{unit.name}.service"


def _root(plan: Plan, node: Node) -> str:
    return f"{node.workdir.rstrip('/')}/{plan.name}"


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


def _prometheus(plan: Plan) -> list[dict[str, Any]]:
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


def _json(data: Any) -> str:
    return pretty_json(data)


def default_targets(plan: Plan) -> tuple[str, ...]:
    """bash and systemd, plus slurm when the topology has a ``cluster.slurm`` section."""
    return ("bash", "systemd", "slurm") if plan.topology.slurm is not None else ("bash", "systemd")


def render(plan: Plan, targets: tuple[str, ...] = ("bash", "systemd"),
           rehearse: bool = False) -> dict[str, Artifact]:
    """Every artifact of the plan, keyed by path relative to ``<out>/<deployment>/``."""
    t = plan.topology
    arts: dict[str, Artifact] = {
        "plan.json": Artifact(plan_json(plan)),
        "endpoints.json": Artifact(_json(endpoints(plan))),
        "prometheus/targets.json": Artifact(_json(_prometheus(plan))),
    }
    per_node = units_by_node(plan, rehearse)
    common = {"plan": plan, "t": t, "version": __version__, "rehearse": rehearse}
    for node in plan.nodes:
        units = per_node[node.index]
        base = f"hosts/{node.host}"
        root = _root(plan, node)
        for u in units:
            sec = launch_secrets(u)
            lines = argv_lines(sec.argv_tokens)
            if sec.config:
                lines.insert(0, f'--config "$SGLGEN_ROOT/run/{u.name}.secrets.yaml"')
            arts[f"{base}/bin/{u.name}.sh"] = Artifact(_tmpl(
                "bash/unit.sh.j2", u=u, node=node, root=root,
                command=" ".join(_cmd(c) for c in u.command),
                lines=lines, secrets=sec, **common), MODE_EXEC)
        arts[f"{base}/sgl-gen-host.sh"] = Artifact(_tmpl(
            "bash/sgl-gen-host.sh.j2", node=node, root=root, units=units, **common), MODE_EXEC)
        if "systemd" in targets:
            for u in units:
                arts[f"{base}/systemd/{systemd_name(plan, u)}"] = Artifact(_tmpl(
                    "systemd/unit.service.j2", u=u, node=node, root=root,
                    after=[systemd_name(plan, x) for x in units if x.name in u.after],
                    **common))
            arts[f"{base}/systemd/sgl-{plan.name}.target"] = Artifact(_tmpl(
                "systemd/deployment.target.j2", node=node,
                units=[systemd_name(plan, u) for u in units], **common))
        if rehearse:
            arts[f"{base}/lib/rehearsal.py"] = Artifact(
                REHEARSAL_SOURCE.read_text(encoding="utf-8"), MODE_EXEC)
            arts[f"{base}/lib/sglang-{t.sglang_version}.json"] = Artifact(
                catalog_path(t.sglang_version).read_text(encoding="utf-8"))
    if "slurm" in targets:
        from generator.slurm import redact_source, render_sbatch

        arts[f"slurm/{plan.name}.sbatch"] = Artifact(render_sbatch(plan, rehearse), MODE_EXEC)
        # a failed unit's log tail reaches the job output through it (credential values masked)
        arts["slurm/lib/redact.py"] = Artifact(redact_source(), MODE_EXEC)
        if rehearse:  # the sbatch runs them from lib/ beside itself
            arts["slurm/lib/rehearsal.py"] = Artifact(
                REHEARSAL_SOURCE.read_text(encoding="utf-8"), MODE_EXEC)
            arts[f"slurm/lib/sglang-{t.sglang_version}.json"] = Artifact(
                catalog_path(t.sglang_version).read_text(encoding="utf-8"))
    arts["README.md"] = Artifact(_tmpl("README.md.j2", gpu_map=_gpu_map(plan),
                                       mermaid=_mermaid(plan), gpu_ranges=gpu_ranges,
                                       targets=targets, **common))
    from generator.write import manifest_text  # (write imports this module)

    arts["MANIFEST.sha256"] = Artifact(manifest_text(arts))  # the one format: write.py's
    return dict(sorted(arts.items()))


def _cmd(token: str) -> str:
    """Quote a command word; ``$SGLGEN_ROOT/...`` stays expandable (inside double quotes)."""
    if token.startswith("$SGLGEN_ROOT/") and "'" not in token and '"' not in token \
            and "\\" not in token and "`" not in token and "$" not in token[1:]:
        return f'"{token}"'
    return shq(token)


def _gpu_map(plan: Plan) -> list[tuple[int, str, list[str]]]:
    """Per node: who holds each GPU (engine id, "(reserved)" or "-"), in GPU order."""
    owner: dict[tuple[int, int], str] = {}
    for m in plan.models:
        for e in m.engines:
            for p in e.placements:
                for g in p.gpus:
                    owner[(p.node, g)] = e.id
        for ph in m.placeholders:
            for g in ph.gpus:
                owner[(ph.node, g)] = "(reserved)"
    return [(n.index, n.host, [owner.get((n.index, g), "-") for g in n.gpus])
            for n in plan.nodes]


def _mermaid_id(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text)


def _mermaid(plan: Plan) -> str:
    lines = ["flowchart LR"]
    for n in plan.nodes:
        lines.append(f'  N{n.index}[("node {n.index}: {n.host}")]')
    for m in plan.models:
        mid = _mermaid_id(m.name)
        lines.append(f'  M_{mid}(["model {m.name}"]) --> R_{mid}["router :{m.router.port}"]')
        lines.append(f"  R_{mid} -.-> N{m.router.node}")
        for e in m.engines:
            eid = _mermaid_id(e.id)
            lines.append(f'  R_{mid} --> E_{eid}["{e.id}<br/>tp{e.tp_size} :{e.port}"]')
            for p in e.placements:
                lines.append(f"  E_{eid} --- N{p.node}")
    return "\n".join(lines)


__all__ = ["Artifact", "render", "units_by_node", "endpoints", "shq", "argv_lines", "Placement"]
