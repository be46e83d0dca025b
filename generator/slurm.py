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

import json
import re
from typing import Any

from generator import __version__
from generator.model import Plan
from generator.render import _tmpl, endpoints, shq, units_by_node


def _func_name(unit: str) -> str:
    return "sgl_" + re.sub(r"[^A-Za-z0-9_]", "_", unit)


class _Addr:
    """Rewrites plan addresses in argv tokens to the run-time address variable of their node."""

    def __init__(self, plan: Plan):
        self.by_addr = {n.address: n.index for n in plan.nodes}

    def token(self, tok: Any) -> str:
        if not isinstance(tok, str):  # EnvRef: a secret from the environment
            return f'"${{{tok.name}}}"'
        for addr, i in self.by_addr.items():
            var = f"${{SGL_ADDR_{i}}}"
            if tok == addr:
                return f'"{var}"'
            for prefix in (f"http://{addr}:", f"{addr}:"):
                if tok.startswith(prefix):
                    rest = tok[len(prefix):]
                    lead = prefix.replace(addr, var)
                    return f'"{lead}"' + (shq(rest) if rest else "")
        return shq(tok)

    def line(self, argv: tuple[Any, ...]) -> list[str]:
        lines: list[list[str]] = []
        for t in argv:
            q = self.token(t)
            if isinstance(t, str) and t.startswith("--") or not lines:
                lines.append([q])
            else:
                lines[-1].append(q)
        return [" ".join(parts) for parts in lines]


def render_sbatch(plan: Plan, rehearse: bool = False) -> str:
    t = plan.topology
    s = t.slurm
    addr = _Addr(plan)
    per_node = units_by_node(plan, rehearse)
    header: list[tuple[str, Any]] = [
        ("job-name", (s.job_name if s and s.job_name else f"sgl-{plan.name}")),
        ("nodes", len(plan.nodes)),
        ("gres", f"gpu:{t.gpus_per_node}"),
        # one core per step on the busiest node, plus the batch script's own
        ("ntasks-per-node", max(len(u) for u in per_node.values()) + 1),
        ("output", s.output if s and s.output else f"sgl-{plan.name}-%j.out"),
    ]
    if s:
        header += [(k, v) for k, v in (("partition", s.partition), ("account", s.account),
                                        ("time", s.time)) if v]
        if s.exclusive:
            header.append(("exclusive", True))
        header += sorted(s.extra)
    sbatch_lines = []
    for key, value in header:
        if value is True:
            sbatch_lines.append(f"#SBATCH --{key}")
        elif value is not False:
            sbatch_lines.append(f"#SBATCH --{key}={_sbatch_quote(str(value))}")
    container = t.runtime.container
    steps = []
    for node in plan.nodes:
        for u in per_node[node.index]:
            steps.append(u)
    engines: list[dict[str, Any]] = []
    routers: list[dict[str, Any]] = []
    for m in plan.models:
        for e in m.engines:
            unit = f"engine-{e.id}"
            nodes = [p.node for p in e.placements]
            rank_argv = list(e.argv)
            if e.nnodes > 1:
                i = rank_argv.index("--node-rank")
                rank_argv[i + 1] = "\0RANK"
                rank_argv[rank_argv.index("--host") + 1] = "\0HOST"  # each rank: its own node
            cmd = ([t.runtime.python, "$SGLGEN_LIB/rehearsal.py", "--catalog",
                    f"$SGLGEN_LIB/sglang-{t.sglang_version}.json", "--rehearsal-id", e.id,
                    "--rehearsal-role", e.worker_type] if rehearse
                   else [t.runtime.python, "-m", "sglang.launch_server"])
            lines = []
            for ln in addr.line(tuple(rank_argv)):
                lines.append(ln.replace(shq("\0RANK"), '"$SLURM_PROCID"')
                             .replace(shq("\0HOST"), '"${!own}"'))
            engines.append({
                "unit": unit, "func": _func_name(unit), "nodes": nodes,
                "gpus": e.gpus_per_engine // e.nnodes,  # per node: gres is per node
                "command": " ".join(_cmd(c) for c in cmd), "lines": lines, "own_host": True,
                "health": f"http://${{SGL_ADDR_{nodes[0]}}}:{e.port}/health",
                "encoder": e.worker_type == "encoder",
            })
        r = m.router
        unit = f"router-{m.name}"
        routers.append({
            "unit": unit, "func": _func_name(unit), "node": r.node,
            "command": " ".join(_cmd(c) for c in (t.runtime.python, "-m", r.module)),
            "lines": addr.line(r.argv),
            "workers": f"http://${{SGL_ADDR_{r.node}}}:{r.port}/workers",
            "expected": sum(1 for e in m.engines if e.worker_type != "encoder"),
        })
    ep = json.dumps(endpoints(plan), indent=2, sort_keys=True, ensure_ascii=False)
    ep = ep.replace("\\", "\\\\").replace("$", "\\$").replace("`", "\\`")
    for a, i in sorted(addr.by_addr.items(), key=lambda kv: -len(kv[0])):
        ep = ep.replace(f'"http://{a}:', f'"http://${{SGL_ADDR_{i}}}:')
        ep = ep.replace(f'"{a}"', f'"${{SGL_ADDR_{i}}}"')
    container_args = ""
    if container and container.kind == "pyxis":
        toks = [f"--container-image={container.image}"]
        if container.mounts:
            toks.append(f"--container-mounts={','.join(container.mounts)}")
        container_args = " ".join(_always_quoted(x) for x in toks)
    return _tmpl("slurm/job.sbatch.j2", container_args=container_args, plan=plan, t=t, version=__version__,
                 sbatch_lines=sbatch_lines, engines=engines, routers=routers,
                 n_nodes=len(plan.nodes), endpoints_json=ep, rehearse=rehearse,
                 container=container, env=t.runtime.env,
                 secrets=t.runtime.secrets_env_file)


def _cmd(token: str) -> str:
    if token.startswith("$SGLGEN_LIB/"):  # written by sgl-gen: a fixed file name
        return f'"{token}"'
    return shq(token)


def _always_quoted(value: str) -> str:
    q = shq(value)
    return q if q[0] in "'$" else f"'{q}'"


def _sbatch_quote(value: str) -> str:
    """#SBATCH lines are read by sbatch, not a shell: double quotes keep spaces together."""
    if re.fullmatch(r"[A-Za-z0-9_.,:%@+=/-]+", value):
        return value
    return f'"{value}"'  # the schema rejects '"' and control characters here
