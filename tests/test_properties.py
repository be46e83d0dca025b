"""Property tests over random valid topologies (hypothesis)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator.compile.loader import SourceMap
from generator.compile.place import place
from generator.compile.resolve import resolve
from generator.targets.plans import plan_json


@st.composite
def topologies(draw):
    gpn = draw(st.sampled_from([2, 4, 8]))
    widths = [w for w in (1, 2, 4, 8) if w <= gpn] + [gpn * 2]
    models = []
    for i in range(draw(st.integers(1, 4))):
        pd = draw(st.booleans())
        roles = ["prefill", "decode"] if pd else ["regular"]
        groups = []
        for role in roles:
            for _ in range(draw(st.integers(1, 2))):
                w = draw(st.sampled_from(widths))
                groups.append({"worker_type": role, "num_gpus": w * draw(st.integers(1, 3)),
                               "num_gpus_per_engine": w})
        if draw(st.booleans()):
            groups.insert(draw(st.integers(0, len(groups))),
                          {"worker_type": "placeholder", "num_gpus": draw(st.integers(1, 5))})
        models.append({"name": f"m{i}", "server_groups": groups})
    return {"deployment": {"name": "prop", "hf_checkpoint": "/m"},
            "cluster": {"gpus_per_node": gpn}, "sglang": models}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topologies())
def test_placement_invariants(data):
    plan = place(resolve(data, SourceMap("prop.yaml")))
    gpn = data["cluster"]["gpus_per_node"]
    taken: set[tuple[int, int]] = set()
    for m in plan.models:
        for e in m.engines:
            assert e.tp_size * e.pp_size == e.gpus_per_engine
            if e.gpus_per_engine <= gpn:
                assert len(e.placements) == 1, "an engine that fits a node never straddles"
            else:
                assert len(e.placements) == e.gpus_per_engine // gpn
                assert all(len(p.gpus) == gpn for p in e.placements)
                assert [p.node_rank for p in e.placements] == list(range(e.nnodes))
            for p in e.placements:
                for g in p.gpus:
                    assert (p.node, g) not in taken, "GPU sets never overlap on a node"
                    taken.add((p.node, g))
        for ph in m.placeholders:
            for g in ph.gpus:
                assert (ph.node, g) not in taken
                taken.add((ph.node, g))
    want = sum(g["num_gpus"] for m in data["sglang"] for g in m["server_groups"])
    assert len(taken) == want
    # ports unique per host address, over everything that listens
    per_host: dict[str, list[int]] = {}
    for m in plan.models:
        r = m.router
        per_host.setdefault(r.address, []).extend([r.port, r.prometheus_port])
        for e in m.engines:
            for p in e.placements:
                per_host.setdefault(p.address, []).extend([e.port, e.nccl_port])
            per_host.setdefault(e.address, []).append(e.engine_info_bootstrap_port)
            if e.bootstrap_port:
                per_host.setdefault(e.address, []).append(e.bootstrap_port)
            if e.dist_init_addr:
                per_host.setdefault(e.address, []).append(int(e.dist_init_addr.rsplit(":", 1)[1]))
    for host, ports in per_host.items():
        assert len(ports) == len(set(ports)), f"port clash on {host}"
    # deterministic: the same input gives the same plan
    assert plan_json(place(resolve(data, SourceMap("prop.yaml")))) == plan_json(plan)


@settings(max_examples=60, deadline=None)
@given(topologies())
def test_local_mode_ports_unique_on_one_machine(data):
    plan = place(resolve(data, SourceMap("prop.yaml"), local=True))
    ports = []
    for m in plan.models:
        ports += [m.router.port, m.router.prometheus_port]
        for e in m.engines:
            ports += [e.port, e.nccl_port, e.engine_info_bootstrap_port]
            ports += [e.bootstrap_port] if e.bootstrap_port else []
            ports += [int(e.dist_init_addr.rsplit(":", 1)[1])] if e.dist_init_addr else []
            ports += [p.port for p in e.placements if p.port is not None]
            # every rank of a multi-node engine binds a distinct --port on the one machine
            rank_ports = [p.port or e.port for p in e.placements]
            assert len(set(rank_ports)) == len(rank_ports)
    assert len(ports) == len(set(ports))
    assert {n.address for n in plan.nodes} == {"127.0.0.1"}


_json_leaves = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()


@given(st.recursive(_json_leaves, lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids),
                    max_leaves=40))
@settings(max_examples=300, deadline=None)
def test_pretty_json_is_byte_identical_to_the_stdlib(value):
    import json

    from generator.targets.plans import pretty_json

    assert pretty_json(value) == json.dumps(value, indent=2, sort_keys=True,
                                            ensure_ascii=False) + "\n"
