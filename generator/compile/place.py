"""Stage 4 — place: ``Topology`` -> ``Plan``.

Engines go onto logical nodes in file order (slime-compatible), first fit: an engine no wider than
a node takes the lowest free GPUs of the first node that has enough and never straddles nodes; a
wider one takes whole free nodes. Placeholders take the lowest free GPUs in node order and start
nothing. ``node_group`` restricts a group to the nodes of a label.

Every port an engine or router opens is assigned here, collision-free per host address (so that
``--local``, where every node is 127.0.0.1, gets machine-unique ports). All arithmetic lives here;
templates only print.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from generator.compile.argv import engine_argv, placement_argv, router_argv_for
from generator.compile.catalog import load_catalog
from generator.compile.containers import HOST_KINDS
from generator.compile.model import (
    ContainerSpec,
    Engine,
    GroupSpec,
    HostSpec,
    ModelPlan,
    Node,
    PlaceholderSlot,
    Placement,
    Plan,
    Router,
    Topology,
)
from generator.compile.routers import IMPLEMENTATIONS
from generator.errors import Diagnostic, SglGenError, TopologyError

#: First port tried for each kind of listener; the allocator walks up from there.
PORT_BASES = {
    "router": 30000,
    "router_prometheus": 29000,
    "engine": 31000,
    "nccl": 32000,
    "dist_init": 33000,
    "engine_info": 34000,
    "bootstrap": 8998,
}
# Attention data parallelism opens the dist-init port and the next six on rank 0.
DIST_INIT_SPAN_ATTN_DP = 7
LOCAL_ADDRESS = "127.0.0.1"


def url_of(address: str, port: int) -> str:
    """``http://address:port`` (IPv6 literals in brackets)."""
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}"


@dataclass
class _Ports:
    """Ports in use per host address, with who took each (for clash messages)."""

    used: dict[str, dict[int, str]] = field(default_factory=dict)

    def free(self, address: str, port: int, span: int) -> bool:
        taken = self.used.get(address, {})
        return port + span - 1 <= 65535 and all(p not in taken for p in range(port, port + span))

    def take(self, addresses: list[str], port: int, span: int, who: str) -> None:
        for a in addresses:
            for p in range(port, port + span):
                self.used.setdefault(a, {})[p] = who

    def alloc(self, addresses: list[str], base: str | int, who: str, span: int = 1) -> int:
        port = start = PORT_BASES[base] if isinstance(base, str) else base
        while not all(self.free(a, port, span) for a in addresses):
            port += 1
            if port > 65535:
                raise SglGenError(f"{who}: no free port left between {start} and 65535 "
                                  f"on {', '.join(addresses)}")
        self.take(addresses, port, span, who)
        return port

    def pin(self, addresses: list[str], port: int, who: str, span: int = 1) -> str | None:
        """Reserve a user-pinned port; return the clash message if it is taken."""
        for a in addresses:
            for p in range(port, port + span):
                other = self.used.get(a, {}).get(p)
                if other is not None:
                    return f"port {p} on {a} is already taken by {other}"
        self.take(addresses, port, span, who)
        return None


def _host_container(topo: Topology, h: HostSpec | None) -> ContainerSpec | None:
    """The docker/podman container a node's units run in: the host's own, else
    runtime.container (pyxis and apptainer are the Slurm target's)."""
    if h is not None and isinstance(h.container, ContainerSpec):
        return h.container
    c = topo.runtime.container
    if h is not None and h.container is False or c is None or c.kind not in HOST_KINDS:
        return None
    return c


def _node_list(topo: Topology, count: int) -> list[Node]:
    gpn = topo.gpus_per_node
    out = []
    for i in range(count):
        if i < len(topo.hosts):
            h = topo.hosts[i]
            address = LOCAL_ADDRESS if topo.local else h.address
            out.append(Node(i, h.name, address, h.gpus, h.user, h.port,
                            h.workdir or topo.runtime.workdir, h.labels,
                            h.supervisor or topo.runtime.supervisor,
                            _host_container(topo, h)))
        else:
            address = LOCAL_ADDRESS if topo.local else f"node{i}"
            out.append(Node(i, f"node{i}", address, tuple(range(gpn)),
                            workdir=topo.runtime.workdir, supervisor=topo.runtime.supervisor,
                            container=_host_container(topo, None)))
    return out


class _Grid:
    """Free logical GPU indices per node; grows when the node count is not fixed."""

    def __init__(self, gpn: int, nodes: int | None):
        self.gpn = gpn
        self.fixed = nodes is not None
        self.free: list[list[int]] = [list(range(gpn)) for _ in range(nodes or 0)]
        #: width -> no node before this index has that many free GPUs (free counts only shrink,
        #: so first-fit can resume there instead of rescanning every node: linear placement)
        self.cursor: dict[int, int] = {}

    def ensure(self, n: int) -> bool:
        if n < len(self.free):
            return True
        if self.fixed:
            return False
        while len(self.free) <= n:
            self.free.append(list(range(self.gpn)))
        return True

    def candidates(self, allowed: tuple[int, ...] | None) -> list[int]:
        if allowed is not None:
            return [n for n in allowed if self.ensure(n)]
        if not self.fixed:
            self.ensure(len(self.free))  # one spare empty node to grow into
        return list(range(len(self.free)))

    def walk(self, allowed: tuple[int, ...] | None, start: int = 0) -> Iterator[int]:
        """Candidate nodes in order; a growable grid keeps adding empty nodes (never ends)."""
        if allowed is not None:
            yield from self.candidates(allowed)
            return
        if self.fixed:
            yield from range(start, len(self.free))
            return
        n = start
        while True:
            self.ensure(n)
            yield n
            n += 1

    def fitting(self, width: int, allowed: tuple[int, ...] | None) -> Iterator[int]:
        """Nodes with at least ``width`` free GPUs, in first-fit order."""
        for n in self.walk(allowed, self.cursor.get(width, 0) if allowed is None else 0):
            if len(self.free[n]) >= width:
                if allowed is None:
                    self.cursor[width] = n
                yield n

    def take(self, node: int, count: int) -> tuple[int, ...]:
        got, self.free[node] = self.free[node][:count], self.free[node][count:]
        return tuple(got)

    def summary(self, allowed: list[int]) -> str:
        parts = [f"node {n}: {len(self.free[n])}" for n in allowed if n < len(self.free)]
        total = sum(len(self.free[n]) for n in allowed if n < len(self.free))
        return f"{total} GPU(s) left ({', '.join(parts) or 'no nodes'})"


def place(topo: Topology) -> Plan:
    # SGLang versions before --engine-info-bootstrap-port get no such port
    has_info_port = load_catalog(topo.sglang_version).get("engine_info_bootstrap_port") is not None
    """Lay out every engine, placeholder and router; assign ports; build argv."""
    gpn = topo.gpus_per_node
    grid = _Grid(gpn, topo.nodes)
    labels = dict(topo.node_groups)
    errors: list[Diagnostic] = []

    def fail(g: GroupSpec, message: str) -> None:
        errors.append(topo.diag(g.path, message))

    # -- GPUs ------------------------------------------------------------------------------------
    # (model index, group) -> list of (node, logical gpus) per engine / placeholder slot
    engine_slots: dict[tuple[str, int], list[list[tuple[int, tuple[int, ...]]]]] = {}
    placeholder_slots: dict[str, list[PlaceholderSlot]] = {}
    for m in topo.models:
        placeholder_slots[m.name] = []
        for g in m.groups:
            allowed = labels.get(g.node_group) if g.node_group else None
            what = f"{m.name}/{g.worker_type}"
            if g.worker_type == "placeholder":
                need = g.num_gpus
                for n in grid.fitting(1, allowed):
                    if need == 0:
                        break
                    got = grid.take(n, min(need, len(grid.free[n])))
                    need -= len(got)
                    placeholder_slots[m.name].append(PlaceholderSlot(m.name, g.index, n, got))
                if need:
                    fail(g, f"{what} reserves {g.num_gpus} GPUs but only "
                            f"{g.num_gpus - need} were free; "
                            f"{grid.summary(grid.candidates(allowed))}")
                continue
            slots: list[list[tuple[int, tuple[int, ...]]]] = []
            width = g.gpus_per_engine
            for k in range(g.num_engines):
                if width <= gpn:
                    node = next(grid.fitting(width, allowed), None)
                    if node is None:
                        cands = grid.candidates(allowed)
                        fail(g, f"{what} needs {g.num_engines} engine(s) of {width} GPUs; "
                                f"{k} fit, then no node had {width} free GPUs: "
                                f"{grid.summary(cands)}")
                        break
                    slots.append([(node, grid.take(node, width))])
                else:
                    span = width // gpn
                    chosen: list[int] = []
                    for n in grid.fitting(gpn, allowed):
                        chosen.append(n)
                        if len(chosen) == span:
                            break
                    if len(chosen) < span:
                        fail(g, f"{what} needs {g.num_engines} engine(s) of {width} GPUs "
                                f"({span} whole nodes each); {k} fit, then only {len(chosen)} "
                                f"fully free node(s) remained: "
                                f"{grid.summary(grid.candidates(allowed))}")
                        break
                    slots.append([(n, grid.take(n, gpn)) for n in chosen])
            engine_slots[(m.name, g.index)] = slots
    if errors:
        raise TopologyError(errors)

    used_nodes = len(grid.free)
    if not grid.fixed:
        # drop the trailing empty node the growing grid kept in reserve
        while used_nodes > 1 and len(grid.free[used_nodes - 1]) == gpn and not any(
            n == used_nodes - 1 for slots in engine_slots.values() for s in slots for n, _ in s
        ) and not any(p.node == used_nodes - 1 for ps in placeholder_slots.values() for p in ps):
            used_nodes -= 1
    nodes = _node_list(topo, used_nodes)

    # -- ports -------------------------------------------------------------------------------------
    ports = _Ports()
    pin_errors: list[Diagnostic] = []

    def addr(n: int) -> str:
        return nodes[n].address

    # pins first, so automatic ports flow around them
    engine_pins: dict[tuple[str, int, int], tuple[int | None, int | None]] = {}
    for m in topo.models:
        for g in m.groups:
            for k, slot in enumerate(engine_slots.get((m.name, g.index), [])):
                addrs = [addr(n) for n, _ in slot]
                who = f"{m.name}-{g.worker_type} (group {g.index}) engine {k}"
                http = bp = None
                if g.port is not None:
                    http = g.port + k
                    clash = ports.pin(addrs, http, who)
                    if clash:
                        pin_errors.append(topo.diag(g.path + ".port", clash))
                if g.bootstrap_port is not None:
                    bp = g.bootstrap_port + k
                    clash = ports.pin(addrs[:1], bp, who + " bootstrap")
                    if clash:
                        pin_errors.append(topo.diag(g.path + ".bootstrap_port", clash))
                engine_pins[(m.name, g.index, k)] = (http, bp)
    router_nodes: dict[str, int] = {}
    for m in topo.models:
        first = next((s[0][0] for g in m.groups for s in engine_slots.get((m.name, g.index), [])),
                     0)
        rnode = m.router.node if m.router.node is not None else first
        if rnode >= len(nodes):
            pin_errors.append(topo.diag(m.router.path + ".node", f"node {rnode} does not exist "
                                         f"(nodes are 0..{len(nodes) - 1})"))
            rnode = 0
        router_nodes[m.name] = rnode
        for key, value in (("port", m.router.port), ("prometheus_port", m.router.prometheus_port)):
            if value is not None:
                clash = ports.pin([addr(rnode)], value, f"router of {m.name} ({key})")
                if clash:
                    pin_errors.append(topo.diag(f"{m.router.path}.{key}", clash))
    if pin_errors:
        raise TopologyError(pin_errors)

    # automatic ports, in file order: router, then its engines
    model_plans: list[ModelPlan] = []
    for m in topo.models:
        rnode = router_nodes[m.name]
        raddr = addr(rnode)
        rport = m.router.port or ports.alloc([raddr], "router", f"router of {m.name}")
        rprom = m.router.prometheus_port or ports.alloc([raddr], "router_prometheus",
                                                         f"router of {m.name} (prometheus)")
        engines: list[Engine] = []
        counters: dict[str, int] = {}
        for g in m.groups:
            for k, slot in enumerate(engine_slots.get((m.name, g.index), [])):
                n_of_role = counters.get(g.worker_type, 0)
                counters[g.worker_type] = n_of_role + 1
                eid = f"{m.name}-{g.worker_type}-{n_of_role}"
                addrs = [addr(n) for n, _ in slot]
                http, bp = engine_pins[(m.name, g.index, k)]
                http = http or ports.alloc(addrs, "engine", eid)
                nccl = ports.alloc(addrs, "nccl", f"{eid} (nccl)")
                info = ports.alloc(addrs[:1], "engine_info", f"{eid} (engine info bootstrap)") \
                    if has_info_port else None
                dist = None
                if len(slot) > 1:
                    sargs = dict(g.server_args)
                    attn_dp = sargs.get("enable_dp_attention") is True or (
                        isinstance(sargs.get("attn_dp_size"), int) and sargs["attn_dp_size"] > 1)
                    span = DIST_INIT_SPAN_ATTN_DP if attn_dp else 1
                    dport = ports.alloc(addrs, "dist_init", f"{eid} (dist init)", span=span)
                    dist = f"{addrs[0]}:{dport}" if ":" not in addrs[0] \
                        else f"[{addrs[0]}]:{dport}"
                if g.worker_type == "prefill" and bp is None:
                    bp = ports.alloc(addrs[:1], "bootstrap", f"{eid} (PD bootstrap)")
                placements_l: list[Placement] = []
                for rank, (n, gpus) in enumerate(slot):
                    rank_port = None
                    if rank and addr(n) in addrs[:rank]:
                        rank_port = ports.alloc([addr(n)], "engine", f"{eid} (rank {rank} health)")
                    placements_l.append(Placement(n, nodes[n].host, addr(n),
                                                  tuple(nodes[n].gpus[i] for i in gpus), rank,
                                                  port=rank_port))
                placements = tuple(placements_l)
                bind = placements[0].address
                engines.append(Engine(
                    id=eid, model=m.name, group=g.index, worker_type=g.worker_type,
                    gpus_per_engine=g.gpus_per_engine, tp_size=g.tp_size, pp_size=g.pp_size,
                    nnodes=len(slot), placements=placements, host=placements[0].host,
                    address=placements[0].address, bind_host=bind, port=http,
                    url=url_of(placements[0].address, http), nccl_port=nccl,
                    engine_info_bootstrap_port=info,
                    bootstrap_port=bp if g.worker_type == "prefill" else None,
                    dist_init_addr=dist, encoder_urls=(), server_args=g.server_args))
        encoder_urls = tuple(e.url for e in engines if e.worker_type == "encoder")
        finished: list[Engine] = []
        for e in engines:
            if encoder_urls and e.worker_type in ("prefill", "regular"):
                e = replace(e, encoder_urls=encoder_urls)
            argv = engine_argv(topo, m, e)
            e = replace(e, argv=argv, placements=tuple(
                replace(p, argv=placement_argv(argv, e, p)) for p in e.placements))
            finished.append(e)
        router = Router(
            model=m.name, implementation=m.router.implementation,
            module=IMPLEMENTATIONS[m.router.implementation], node=rnode,
            host=nodes[rnode].host, address=raddr,
            bind_host=m.router.host or (LOCAL_ADDRESS if topo.local else "0.0.0.0"),
            port=rport, prometheus_port=rprom, url=url_of(raddr, rport),
            policy=m.router.policy, prefill_policy=m.router.prefill_policy,
            decode_policy=m.router.decode_policy, args=m.router.args)
        router = replace(router, argv=router_argv_for(router, m.pd, finished))
        model_plans.append(ModelPlan(m.name, m.model_path, m.update_weights, m.pd, router,
                                     tuple(finished), tuple(placeholder_slots[m.name])))
    return Plan(topology=topo, nodes=tuple(nodes), models=tuple(model_plans),
                warnings=tuple(d.format() for d in (*topo.warnings,
                                                    *_placeholder_hosts(topo, nodes))))


def _placeholder_hosts(topo: Topology, nodes: list[Node]) -> list[Diagnostic]:
    """A warning when nodes have no host of ``cluster.hosts``: their names (``node0``) are what
    engines bind and routers call, and no real machine answers to them. Not for ``--local``
    (every node is this machine) nor for Slurm, which names the nodes at run time."""
    unnamed = [n.host for n in nodes[len(topo.hosts):]]
    if topo.local or topo.slurm is not None or not unnamed:
        return []  # (validation makes a hosts list name every node: it fixes the node count)
    shown = ", ".join(unnamed[:4]) + (f" and {len(unnamed) - 4} more" if len(unnamed) > 4 else "")
    d = topo.diag("cluster.hosts", (
        f"names none of the {len(nodes)} node(s) this topology uses: {shown} "
        f"{'is a placeholder' if len(unnamed) == 1 else 'are placeholders'} (engines bind "
        "--host to them, router URLs call them), not real machines"),
        "bind real hosts with --inventory FILE or --set 'cluster.hosts=[{name: a, address: "
        "10.0.0.1}, ...]'; rehearse on this machine with --local")
    return [replace(d, severity="warning")]
