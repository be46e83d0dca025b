"""The reviewer's documents: the rendered ``README.md`` (summary tables, node x GPU map, Mermaid
diagram) and ``sgl-gen plan``'s table."""

from __future__ import annotations

from typing import Any

from generator.compile.model import Plan
from generator.targets import common
from generator.targets.common import Artifact, gpu_ranges


def readme(plan: Plan, targets: tuple[str, ...], ctx: dict[str, Any]) -> Artifact:
    """``README.md`` of a render."""
    return Artifact(common.tmpl("README.md.j2", gpu_map=_gpu_map(plan), mermaid=_mermaid(plan),
                                gpu_ranges=gpu_ranges, targets=targets, by_hand=_by_hand(plan, targets),
                                containers=_containers(plan), **ctx))


def _by_hand(plan: Plan, targets: tuple[str, ...]) -> dict[str, Any]:
    """The exact commands that run a render's bash target by hand: per host, the copy of
    ``hosts/<host>/`` to its folder (made first; the systemd units and deploy name it), then
    each start phase on every host (encoders, engines, routers: each phase after the previous
    one is up everywhere). Every word is a host name, address, user, path or unit name, all of which
    the schema restricts to shell-safe characters; they are quoted anyway."""
    q = common.shq
    per = common.units_by_node(plan)
    copies: list[str] = []
    phases: dict[str, list[str]] = {"encoders": [], "engines": [], "routers": []}
    waits: dict[str, list[str]] = {"encoders": [], "engines": [], "routers": []}
    for node in plan.nodes:
        root = common.root_of(plan, node)
        target = f"{node.user}@{node.address}" if node.user else node.address
        ssh = f"ssh -p {node.ssh_port} " if node.ssh_port else "ssh "
        rsync = f"rsync -a -e 'ssh -p {node.ssh_port}' " if node.ssh_port else "rsync -a "
        # rsync reads HOST::X as its daemon protocol: an IPv6 address goes in brackets
        bracketed = f"[{node.address}]" if ":" in node.address else node.address
        dest = f"{node.user}@{bracketed}" if node.user else bracketed
        # (rsync makes only the last folder of its destination: a fresh host has none)
        copies.append(f"{ssh}{q(target)} mkdir -p {q(root)}")
        copies.append(f"{rsync}{q(f'hosts/{node.host}/')} {q(f'{dest}:{root}/')}")
        units = per.get(node.index, [])
        for phase, names in (
                ("encoders", [u.name for u in units if u.name.startswith("engine-")
                              and _is_encoder(plan, u.name)]),
                ("engines", [u.name for u in units if u.kind == "engine"
                             and not _is_encoder(plan, u.name)]),
                ("routers", [u.name for u in units if u.kind == "router"])):
            if names:
                phases[phase].append(f"{ssh}{q(target)} {q(root + '/sgl-gen-host.sh')} start "
                                     + " ".join(q(n) for n in names))
                urls = [u.health_url for u in units if u.name in names and u.health_url]
                if "systemd" in targets:  # the await script comes with the systemd target
                    waits[phase].append(f"{ssh}{q(target)} {q(root + '/bin/sgl-gen-await.sh')} "
                                        "1800 " + " ".join(q(x) for x in urls))
                else:
                    waits[phase] += [f"#   {x}" for x in urls]
    placeholders = [n.host for n in plan.nodes[len(plan.topology.hosts):]] \
        if not plan.topology.local else []
    return {"copies": copies, "phases": [(k, v, waits[k]) for k, v in phases.items() if v],
            "placeholders": placeholders}


def _is_encoder(plan: Plan, unit_name: str) -> bool:
    return any(unit_name.startswith(f"engine-{e.id}") and e.worker_type == "encoder"
               for m in plan.models for e in m.engines)


def _containers(plan: Plan) -> list[tuple[str, str, str, str, str]]:
    """Per unit of a docker/podman node, in start order: unit, host, runtime, container name,
    image."""
    out = []
    for index, units in sorted(common.units_by_node(plan).items()):
        node = plan.nodes[index]
        if node.container is not None:
            out += [(u.name, node.host, node.container.kind, f"sgl-{plan.name}-{u.name}",
                     node.container.image) for u in units]
    return out


def _gpu_map(plan: Plan) -> list[tuple[int, str, str, list[str]]]:
    """Per node: host, supervisor and who holds each GPU (engine id, "(reserved)" or "-"), in
    GPU order."""
    owner: dict[tuple[int, int], str] = {}
    for m in plan.models:
        for e in m.engines:
            for p in e.placements:
                for g in p.gpus:
                    owner[(p.node, g)] = e.id
        for ph in m.placeholders:
            for g in ph.gpus:
                owner[(ph.node, g)] = "(reserved)"
    return [(n.index, n.host, n.supervisor, [owner.get((n.index, g), "-") for g in n.gpus])
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


def plan_table(plan: Plan) -> str:
    """Per node: which GPUs go to which engine, ports, routers; then per model."""
    t = plan.topology
    lines = [
        f"deployment {t.name}: sglang {t.sglang_version}, router {t.router_implementation}, "
        f"{len(plan.nodes)} node(s) x {t.gpus_per_node} GPUs",
        "",
    ]
    for n in plan.nodes:
        # which supervisor runs it matters where deploy goes: the hosts of cluster.hosts
        lines.append(f"node {n.index}  {n.host} ({n.address})"
                     + (f"  supervisor {n.supervisor}" if t.hosts else ""))
        rows: list[tuple[str, str, str]] = []
        for m in plan.models:
            for e in m.engines:
                for p in e.placements:
                    if p.node != n.index:
                        continue
                    ports = f":{e.port}"
                    if e.bootstrap_port is not None:
                        ports += f" bootstrap :{e.bootstrap_port}"
                    if e.dist_init_addr and p.node_rank == 0:
                        ports += f" dist-init {e.dist_init_addr}"
                    rank = f" rank {p.node_rank}/{e.nnodes}" if e.nnodes > 1 else ""
                    rows.append((f"GPU {gpu_ranges(p.gpus)}", e.id,
                                 f"tp{e.tp_size}" + (f" pp{e.pp_size}" if e.pp_size > 1 else "")
                                 + rank + "  " + ports))
            for ph in m.placeholders:
                if ph.node == n.index:
                    rows.append((f"GPU {gpu_ranges(ph.gpus)}", f"(placeholder {m.name})", ""))
            r = m.router
            if r.node == n.index:
                rows.append(("router", m.name, f"{r.implementation} :{r.port} "
                                               f"(prometheus :{r.prometheus_port})"
                                               + (f" policy {r.policy}" if r.policy else "")))
        w0 = max((len(a) for a, _, _ in rows), default=0)
        w1 = max((len(b) for _, b, _ in rows), default=0)
        for a, b, c in rows:
            lines.append(f"  {a:<{w0}}  {b:<{w1}}  {c}".rstrip())
        free = n.gpus
        used = {g for m in plan.models for e in m.engines for p in e.placements
                if p.node == n.index for g in p.gpus}
        used |= {g for m in plan.models for ph in m.placeholders if ph.node == n.index
                 for g in ph.gpus}
        idle = tuple(g for g in free if g not in used)
        if idle:
            lines.append(f"  GPU {gpu_ranges(idle)}  (unused)")
        lines.append("")
    lines.append("models:")
    for m in plan.models:
        roles: dict[str, int] = {}
        for e in m.engines:
            roles[e.worker_type] = roles.get(e.worker_type, 0) + 1
        summary = ", ".join(f"{c} {r}" for r, c in roles.items()) or "no local engines"
        lines.append(f"  {m.name}: {m.model_path}  update_weights={str(m.update_weights).lower()}"
                     f"  router {m.router.url}  engines: {summary}")
    return "\n".join(lines) + "\n"


__all__ = ["gpu_ranges", "plan_table", "readme"]
