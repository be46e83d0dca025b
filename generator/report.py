"""Human-readable views of a Plan (``sgl-gen plan``)."""

from __future__ import annotations

from generator.model import Plan


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


def plan_table(plan: Plan) -> str:
    """Per node: which GPUs go to which engine, ports, routers; then per model."""
    t = plan.topology
    lines = [
        f"deployment {t.name}: sglang {t.sglang_version}, router {t.router_implementation}, "
        f"{len(plan.nodes)} node(s) x {t.gpus_per_node} GPUs",
        "",
    ]
    for n in plan.nodes:
        lines.append(f"node {n.index}  {n.host} ({n.address})")
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
