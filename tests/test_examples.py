"""Every usage pattern of seed 000 is an example that validates, with the layout slime makes."""

from __future__ import annotations

import pytest

from tests.helpers import EXAMPLES, plan_of, run_cli

ALL_EXAMPLES = sorted(p.name for p in EXAMPLES.glob("*.yaml"))


def layout(plan):
    """model -> [(engine id, width, [(node, gpus, rank)])]"""
    return {m.name: [(e.id, e.gpus_per_engine,
                      [(p.node, p.gpus, p.node_rank) for p in e.placements])
                     for e in m.engines] for m in plan.models}


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_example_validates(name):
    r = run_cli("validate", str(EXAMPLES / name))
    assert r.exit_code == 0, r.stderr
    assert "valid:" in r.stdout


def test_basic_four_engines_of_two():
    plan = plan_of(EXAMPLES / "basic.yaml")
    assert layout(plan) == {"default": [
        ("default-regular-0", 2, [(0, (0, 1), 0)]),
        ("default-regular-1", 2, [(0, (2, 3), 0)]),
        ("default-regular-2", 2, [(0, (4, 5), 0)]),
        ("default-regular-3", 2, [(0, (6, 7), 0)]),
    ]}
    assert len(plan.nodes) == 1
    assert all(e.tp_size == 2 for e in plan.models[0].engines)


def test_pd_two_prefill_tp2_three_decode_tp4():
    plan = plan_of(EXAMPLES / "pd.yaml")
    (m,) = plan.models
    assert m.pd
    assert layout(plan)["actor"] == [
        ("actor-prefill-0", 2, [(0, (0, 1), 0)]),
        ("actor-prefill-1", 2, [(0, (2, 3), 0)]),
        ("actor-decode-0", 4, [(0, (4, 5, 6, 7), 0)]),
        ("actor-decode-1", 4, [(1, (0, 1, 2, 3), 0)]),
        ("actor-decode-2", 4, [(1, (4, 5, 6, 7), 0)]),
    ]
    prefill = [e for e in m.engines if e.worker_type == "prefill"]
    assert [e.bootstrap_port for e in prefill] == [8998, 8999]
    assert all(e.bootstrap_port is None for e in m.engines if e.worker_type == "decode")


def test_multi_model_each_behind_its_own_router():
    plan = plan_of(EXAMPLES / "multi-model.yaml")
    lay = layout(plan)
    assert [len(lay[m]) for m in ("actor", "ref", "reward")] == [2, 2, 2]
    assert lay["ref"][0][2] == [(1, (0, 1), 0)]
    assert lay["reward"][1][2] == [(1, (6, 7), 0)]
    ports = {(m.router.address, m.router.port) for m in plan.models}
    assert len(ports) == 3
    by = {m.name: m for m in plan.models}
    assert by["actor"].update_weights is True and by["ref"].update_weights is False
    assert by["ref"].model_path == "/models/ref"


def test_multi_model_pd():
    plan = plan_of(EXAMPLES / "multi-model-pd.yaml")
    by = {m.name: m for m in plan.models}
    assert by["actor"].pd and not by["ref"].pd
    assert [e.worker_type for e in by["actor"].engines] == ["prefill"] * 2 + ["decode"] * 2


def test_placeholder_reserves_gpus_and_starts_nothing():
    plan = plan_of(EXAMPLES / "placeholder.yaml")
    (m,) = plan.models
    assert [p.gpus for e in m.engines for p in e.placements] == [(0, 1), (2, 3), (4, 5)]
    assert [(p.node, p.gpus) for p in m.placeholders] == [(0, (6, 7))]


def test_overrides_reach_the_argv_over_defaults():
    plan = plan_of(EXAMPLES / "overrides.yaml")
    argv = plan.models[0].engines[0].argv
    i = argv.index("--mem-fraction-static")
    assert argv[i + 1] == "0.85"  # group override beats defaults' 0.8
    assert argv.count("--mem-fraction-static") == 1
    assert "--enable-torch-compile" in argv
    assert argv[argv.index("--context-length") + 1] == "32768"
    assert argv[argv.index("--log-level") + 1] == "warning"


def test_agentic_32_gpus_on_four_nodes():
    plan = plan_of(EXAMPLES / "agentic-32gpu.yaml")
    lay = layout(plan)
    assert len(plan.nodes) == 4
    assert [n for _, _, pl in lay["ref"] for n, _, _ in pl] == [2, 2]
    assert [n for _, _, pl in lay["reward"] for n, _, _ in pl] == [3, 3]
    assert sum(len(v) for v in lay.values()) == 2 + 3 + 2 + 2


def test_sixteen_gpu_engine_spans_two_nodes():
    plan = plan_of(EXAMPLES / "multinode-16gpu.yaml")
    (m,) = plan.models
    assert len(m.engines) == 2
    e0, e1 = m.engines
    assert e0.nnodes == 2 and e0.tp_size == 16
    assert [(p.host, p.node_rank, p.gpus) for p in e0.placements] == [
        ("gpu-a", 0, tuple(range(8))), ("gpu-b", 1, tuple(range(8)))]
    assert [p.host for p in e1.placements] == ["gpu-c", "gpu-d"]
    assert e0.dist_init_addr.startswith("10.0.0.11:")
    assert e1.dist_init_addr.startswith("10.0.0.13:")
    # every rank runs the same argv but its own --node-rank; rank 0 is the engine's argv
    r0, r1 = (p.argv for p in e0.placements)
    assert r0 == e0.argv
    assert r1[r1.index("--node-rank") + 1] == "1" and r0[r0.index("--node-rank") + 1] == "0"
    assert r1[r1.index("--dist-init-addr") + 1] == e0.dist_init_addr
    assert r0[r0.index("--nnodes") + 1] == "2"
    assert e0.url.startswith("http://10.0.0.11:")


def test_encoder_urls_go_to_prefill_engines():
    plan = plan_of(EXAMPLES / "epd-encoder.yaml")
    (m,) = plan.models
    enc = [e for e in m.engines if e.worker_type == "encoder"]
    assert len(enc) == 2 and all(e.gpus_per_engine == 1 for e in enc)
    (pre,) = [e for e in m.engines if e.worker_type == "prefill"]
    (dec,) = [e for e in m.engines if e.worker_type == "decode"]
    assert pre.encoder_urls == tuple(e.url for e in enc)
    i = pre.argv.index("--encoder-urls")
    assert list(pre.argv[i + 1:i + 3]) == [e.url for e in enc]
    assert "--language-only" in pre.argv and "--language-only" not in dec.argv
    assert all("--encoder-only" in e.argv for e in enc)
    # encoders start first
    assert [e.worker_type for e in plan.engines()][:2] == ["encoder", "encoder"]


def test_router_only_model():
    plan = plan_of(EXAMPLES / "router-only.yaml")
    by = {m.name: m for m in plan.models}
    assert by["external"].engines == ()
    assert by["external"].router.port != by["actor"].router.port


def test_hosts_node_groups_pin_models():
    plan = plan_of(EXAMPLES / "hosts-node-groups.yaml")
    by = {m.name: m for m in plan.models}
    assert {p.host for e in by["actor"].engines for p in e.placements} == {"infer-0"}
    assert {p.host for e in by["judge"].engines for p in e.placements} == {"infer-1"}
    assert by["judge"].router.port == 8100
    assert by["actor"].router.policy == "consistent_hashing"
    assert by["judge"].router.policy == "round_robin"
    assert plan.nodes[0].workdir == "/srv/sgl-gen"


def test_every_rank_binds_its_own_address():
    plan = plan_of(EXAMPLES / "multinode-16gpu.yaml")
    for m in plan.models:
        for e in m.engines:
            for p in e.placements:
                argv = list(p.argv)
                assert argv[argv.index("--host") + 1] == p.address
                assert argv[argv.index("--dist-init-addr") + 1].startswith(
                    e.placements[0].address + ":")
