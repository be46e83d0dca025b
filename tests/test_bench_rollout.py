"""tests/bench_rollout.py without hosts: its options, the topology it deploys (validated and
rendered by sgl-gen), the deploy flags of each rollout, its batch arithmetic and its table."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from tests import bench_rollout as b
from tests.helpers import plan_of, run_cli


def test_defaults_and_quick() -> None:
    a = b.parse_args([])
    assert (a.hosts, a.engines_per_host, a.startup_delay, a.request_delay, a.drain, a.modes,
            a.threads, a.rate, a.timeout) == (4, 4, 5.0, 0.05, 1.0, ["1", "4", "50%", "downtime"],
                                              4, None, 120)
    q = b.parse_args(["--quick", "--modes", "2, 25%", "--drain", "0.5"])
    assert (q.hosts, q.engines_per_host, q.startup_delay, q.modes, q.drain) == (
        2, 4, 2.0, ["2", "25%"], 0.5)
    explicit = b.parse_args(["--quick", "--hosts", "3", "--startup-delay", "0"])
    assert (explicit.hosts, explicit.startup_delay) == (3, 0.0)


@pytest.mark.parametrize("argv, message", [
    (["--modes", "1,x"], "'x': a rollout is a positive number of engines, a percentage"),
    (["--modes", "0"], "'0': a rollout is a positive number"),
    (["--modes", "101%"], "'101%': a rollout is"),
    (["--modes", ","], "--modes needs at least one rollout"),
    (["--modes", "1,2,3,4,5,6,7,8,9"], "at most 8 rollouts"),
    (["--drain", "-1"], "'-1': seconds must be finite and >= 0"),
    (["--startup-delay", "soon"], "'soon' is not a number of seconds"),
    (["--hosts", "0"], "'0' is not a positive integer"),
    (["--rate", "0"], "--rate must be > 0"),
])
def test_bad_options(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        b.parse_args(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_topology_renders_16_engines_on_4_hosts(tmp_path: Path) -> None:
    topo = tmp_path / "bench.yaml"
    assert b.main(["--topology-only", str(topo)]) == 0
    doc = yaml.safe_load(topo.read_text())
    assert [h["address"] for h in doc["cluster"]["hosts"]] == [
        "10.207.6.11", "10.207.6.12", "10.207.6.13", "10.207.6.14"]
    assert doc["runtime"]["env"] == {"SGLGEN_REHEARSAL_STARTUP_DELAY": "5",
                                     "SGLGEN_REHEARSAL_REQUEST_DELAY": "0.05"}
    assert doc["defaults"] == {"mem_fraction_static": 0.8}
    plan = plan_of(topo)
    (model,) = plan.models
    assert len(model.engines) == 16 and {e.worker_type for e in model.engines} == {"regular"}
    per_node: dict[int, int] = {}
    for e in model.engines:
        (p,) = e.placements
        per_node[p.node] = per_node.get(p.node, 0) + 1
    assert per_node == {0: 4, 1: 4, 2: 4, 3: 4}

    out = tmp_path / "out"
    r = run_cli("render", str(topo), "--rehearse", "-o", str(out), "-q")
    assert r.exit_code == 0, r.output
    script = (out / "bench-rollout" / "hosts" / "node-d" / "bin" / "engine-bench-regular-15.sh"
              ).read_text()
    assert "--mem-fraction-static 0.8" in script
    assert "lib/rehearsal.py" in script  # --rehearse
    # the engines see the delays (runtime.env)
    assert "\nexport SGLGEN_REHEARSAL_STARTUP_DELAY=5\n" in script
    assert "\nexport SGLGEN_REHEARSAL_REQUEST_DELAY=0.05\n" in script


def test_deploy_flags_batches_and_ideal() -> None:
    assert b.deploy_flags("4", 1.0) == ["--max-unavailable", "4", "--drain", "1"]
    assert b.deploy_flags("50%", 0.5) == ["--max-unavailable", "50%", "--drain", "0.5"]
    assert b.deploy_flags("downtime", 1.0) == ["--allow-downtime", "--drain", "1"]
    assert [b.batch_size(m, 16) for m in ("1", "4", "50%", "30%", "1%", "downtime")] == [
        1, 4, 8, 4, 1, 16]
    # from deploy's JSON when it lists the batches, else computed (and said so)
    listed = {"rollout": {"mode": "rolling", "batches": [["e0", "e1"], ["e2"]]}}
    assert b.batches(listed, "2", 3) == (2, True)
    assert b.batches({}, "4", 16) == (4, False)
    assert b.batches({}, "30%", 16) == (4, False)
    assert b.batches({"rollout": {"mode": "downtime", "batches": []}}, "downtime", 16) == (1, True)
    assert b.ideal(16, 5, 1) == 96
    b.honoured(listed, "2", 3)
    with pytest.raises(SystemExit, match=r"--max-unavailable 1: batches of \[2, 1\] engine"):
        b.honoured(listed, "1", 3)
    with pytest.raises(SystemExit, match="--allow-downtime: rollout mode 'rolling', expected "
                                         "'downtime'"):
        b.honoured(listed, "downtime", 3)


def test_table() -> None:
    args = argparse.Namespace(startup_delay=5.0, drain=1.0)
    rows = [b.Row("1", 16, True, 110.25, 96.0, 2000, 0, None, None),
            b.Row("downtime", 1, True, 7.0, 6.0, 300, 42, (0.5, 6.25), "URLError('refused')"),
            b.Row("50%", 2, False, 14.0, 12.0, 400, 0, None, None)]
    assert b.table(rows, args).splitlines() == [
        "  rollout                batches  wall s  ideal s  wall/ideal  sent  failed  "
        "failures from..to s",
        "  --max-unavailable 1         16   110.2     96.0        1.15  2000       0  "
        "                  -",
        "  --allow-downtime             1     7.0      6.0        1.17   300      42  "
        "           0.5..6.2",
        "  --max-unavailable 50%       2*    14.0     12.0        1.17   400       0  "
        "                  -",
        "  ideal = batches x (startup delay 5 s + drain 1 s); --allow-downtime restarts "
        "everything at once: 1 batch",
        "  * deploy --format json has no rollout.batches: computed as ceil(engines / batch "
        "size), a percentage rounded down",
        "  first failure, --allow-downtime: URLError('refused')",
    ]
