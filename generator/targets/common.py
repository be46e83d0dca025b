"""What several targets share: the Artifact type, the one bash quoting filter (``shq``), the
Jinja environment (:func:`tmpl`), the supervised units of a plan (:class:`Unit`,
:func:`units_by_node`) and how their ``{env: NAME}`` values reach them (:func:`launch_secrets`).

Pure: no I/O but reading templates and the shipped files (the rehearsal engine, the catalog).
Targets (bash, systemd, slurm, docs, plans) import this module and the compile stage's model
types, never each other's private names.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2

from generator.compile.catalog import catalog_path
from generator.compile.model import Engine, ModelPlan, Node, Plan, Router
from generator.paths import ROOT, TEMPLATES

#: the stdlib-only rehearsal engine, shipped verbatim as ``lib/rehearsal.py`` (``--rehearse``)
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


def tmpl(name: str, **ctx: Any) -> str:
    """Render one template of ``templates/`` (targets call it as ``common.tmpl``, so a benchmark
    can capture every template render in one place)."""
    return _env().get_template(name).render(**ctx)


def argv_lines(tokens: tuple[Any, ...] | list[Any]) -> list[str]:
    """Quoted argv grouped one flag per line: ``--flag value...``."""
    lines: list[list[str]] = []
    quote = _shq_str  # (shq's str case, called directly: a large render quotes ~60,000 tokens)
    for t in tokens:
        if type(t) is str:
            if t.startswith("--") or not lines:
                lines.append([quote(t)])
            else:
                lines[-1].append(quote(t))
        elif not lines:
            lines.append([shq(EnvToken(t.name))])
        else:
            lines[-1].append(shq(EnvToken(t.name)))
    return [" ".join(parts) for parts in lines]


def gpu_ranges(gpus: tuple[int, ...] | list[int]) -> str:
    """``(0, 1, 2, 5)`` -> ``0-2,5``."""
    out: list[str] = []
    ids = sorted(gpus)
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        out.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(out)


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
    #: routers: the /health URL of every engine of the model (rank 0s, any host), which must
    #: answer 200 before the router starts under systemd (the unit's ExecStartPre=)
    await_urls: tuple[str, ...] = ()

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
                f"{r.url}/health", after, r.implementation,
                tuple(u.health_url for u in engine_units if u.health_url))

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
    if all(type(t) is str for t in u.argv):  # no {env: NAME} value: nothing moves
        return LaunchSecrets(tuple(u.argv))
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

def root_of(plan: Plan, node: Node) -> str:
    return f"{node.workdir.rstrip('/')}/{plan.name}"

def command_word(token: str) -> str:
    """Quote a command word; ``$SGLGEN_ROOT/...`` stays expandable (inside double quotes)."""
    if token.startswith("$SGLGEN_ROOT/") and "'" not in token and '"' not in token \
            and "\\" not in token and "`" not in token and "$" not in token[1:]:
        return f'"{token}"'
    return shq(token)


def rehearsal_lib(prefix: str, sglang_version: str) -> dict[str, Artifact]:
    """The rehearsal engine and the catalog it parses argv with, under ``prefix`` (``lib/``)."""
    return {
        f"{prefix}/rehearsal.py": Artifact(REHEARSAL_SOURCE.read_text(encoding="utf-8"), MODE_EXEC),
        f"{prefix}/sglang-{sglang_version}.json": Artifact(
            catalog_path(sglang_version).read_text(encoding="utf-8")),
    }
