"""Rolling deploys on real SSH hosts (tests/sshhosts.py: network namespaces with their own sshd),
the rehearsal engine and the real sglang-router, under a steady request loop through every router
(tests/loadloop.py: a client with no retries). examples/ssh-rollout.yaml: a PD model (2 prefill,
2 decode), a four-engine model with a group override and a two-engine model. Every generation
request takes 0.2 s (SGLGEN_REHEARSAL_REQUEST_DELAY), so an engine stopped before its requests
finish would fail them: draining is what keeps them."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from tests import test_deploy
from tests.helpers import EXAMPLES, reseal, run_cli
from tests.loadloop import Load
from tests.test_deploy import Deployment

pytestmark = pytest.mark.slow
hosts = test_deploy.hosts  # the SSH hosts fixture (module-scoped: this module's own set)

EXAMPLE = EXAMPLES / "ssh-rollout.yaml"
ROUTERS = {"chat": "http://10.207.6.11:30000", "judge": "http://10.207.6.12:30000",
           "big": "http://10.207.6.13:30000"}
DELAY = "runtime.env.SGLGEN_REHEARSAL_REQUEST_DELAY='0.2'"


@pytest.fixture
def rollout(hosts, tmp_path):
    """A fresh deployment of the example (one topology file per test, to edit)."""
    topo = tmp_path / "topo.yaml"
    topo.write_text(EXAMPLE.read_text())
    d = Deployment(hosts, tmp_path, topo, DELAY)
    first = d.deploy_json()
    assert first["ok"], first
    yield d
    run_cli(*d.args("down"))


def _routers(d: Deployment) -> dict[str, str]:
    """model -> router URL, from the plan (the example's addresses)."""
    plan = json.loads(run_cli("plan", d.topo, "--json",
                              *(x for s in d.sets for x in ("--set", s))).stdout)
    return {m["name"]: m["router"]["url"] for m in plan["models"]}


def _root(d: Deployment, i: int) -> Path:
    return d.tmp / f"w{i}" / "ssh-rollout"


def _pids(d: Deployment) -> dict[str, int]:
    return {u: row["pid"] for (_, u), row in d.status().items()}


def _edit(d: Deployment, old: str, new: str) -> None:
    p = Path(d.topo)
    text = p.read_text()
    assert old in text, old
    p.write_text(text.replace(old, new))


def _deploy_under_load(d: Deployment, *extra: str, code: int = 0):
    with Load(_routers(d), rate=20, threads_per_router=2) as load:
        load.wait_ok(2)
        t0 = time.monotonic()
        r = d.cli("deploy", "--format", "json", "--timeout", "90", "--drain", "5", *extra)
        took = time.monotonic() - t0
        time.sleep(1)  # requests sent just after the deploy returned count too
    assert r.exit_code == code, r.output
    return r, load, took


def test_defaults_change_rolls_out_without_a_failed_request(rollout):
    d = rollout
    assert _routers(d) == ROUTERS
    before = _pids(d)
    d.sets.append("defaults.max_running_requests=64")
    r = d.cli("diff")
    assert r.exit_code == 0, r.output
    plan = r.stdout
    assert "rollout: rolling, at most 1 engine of a role out at once, drain up to 30s" in plan
    # one engine per batch, per model and role; the judge engines keep their group override but
    # gain the default too
    steps = re.findall(r"^  \d+\. (\w+) (\w+): restart (\S+) \((.*)\)$", plan, re.M)
    assert [(m, role, e) for m, role, e, _ in steps] == [
        ("big", "regular", "big-regular-0"), ("big", "regular", "big-regular-1"),
        ("chat", "decode", "chat-decode-0"), ("chat", "decode", "chat-decode-1"),
        ("chat", "prefill", "chat-prefill-0"), ("chat", "prefill", "chat-prefill-1"),
        ("judge", "regular", "judge-regular-0"), ("judge", "regular", "judge-regular-1"),
        ("judge", "regular", "judge-regular-2"), ("judge", "regular", "judge-regular-3")]
    assert {s for *_, s in steps} == {"1/2 regular engines serving", "1/2 decode engines serving",
                                      "1/2 prefill engines serving",
                                      "3/4 regular engines serving"}
    r, load, took = _deploy_under_load(d)
    print(f"10 batches rolled in {took:.1f}s; {load.summary()['total']}")
    doc = json.loads(r.stdout)
    assert doc["rollout"]["mode"] == "rolling"
    assert len(doc["rollout"]["batches"]) == 10
    total = load.summary()["total"]
    assert total["failed"] == 0, load.report()
    assert all(load.summary()[m]["ok"] > 0 for m in ROUTERS), load.report()
    after = _pids(d)
    engines = {u for u in before if u.startswith("engine-")}
    assert {u for u in before if after[u] != before[u]} == engines  # every engine, no router
    # one at a time: no two engines of a role were out together
    err = r.stderr
    outs = re.findall(r"^  (out|in) +router-(\w+): (\S+)$", err, re.M)
    assert len(outs) == 20
    assert all(outs[k][0] == "out" and outs[k + 1][0] == "in" and outs[k][2] == outs[k + 1][2]
               for k in range(0, 20, 2))
    again = d.deploy_json()
    assert {u["action"] for u in again["units"]} == {"unchanged"}
    assert again["rollout"]["steps"] == []


def test_one_group_override_rolls_that_group_only(rollout):
    d = rollout
    before = _pids(d)
    _edit(d, "overrides: {mem_fraction_static: 0.8}", "overrides: {mem_fraction_static: 0.7}")
    r, load, _ = _deploy_under_load(d, "--max-unavailable", "2")
    assert load.summary()["total"]["failed"] == 0, load.report()
    doc = json.loads(r.stdout)
    assert doc["rollout"]["batches"] == [["judge-regular-0", "judge-regular-1"],
                                         ["judge-regular-2", "judge-regular-3"]]
    after = _pids(d)
    assert {u for u in before if after[u] != before[u]} == {
        f"engine-judge-regular-{k}" for k in range(4)}


def test_membership_changes_live_without_restarting_the_router(rollout):
    d = rollout
    before = _pids(d)
    judge = "num_gpus: 4\n        num_gpus_per_engine: 1"
    # one judge engine fewer: drained out of its router and stopped, the router stays
    _edit(d, judge, judge.replace("4", "3"))
    _edit(d, "total_gpus: 16", "total_gpus: 15")
    r = d.cli("diff", "--format", "json")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    acts = {u["unit"]: u["action"] for u in plan["units"]}
    assert acts["router-judge"] == "update" and acts["engine-judge-regular-3"] == "stop"
    assert plan["rollout"]["routers"] == {"update": ["router-judge"], "restart": [], "start": []}
    assert [s["step"] for s in plan["rollout"]["steps"]] == ["remove"]
    r, load, _ = _deploy_under_load(d)
    assert load.summary()["total"]["failed"] == 0, load.report()
    mid = _pids(d)
    assert "engine-judge-regular-3" not in mid
    assert {u for u in mid if mid[u] != before[u]} == set()  # nothing restarted
    # then, in one deploy: that engine back, and one of the two-engine model's gone
    _edit(d, judge.replace("4", "3"), judge)
    _edit(d, "{worker_type: regular, num_gpus: 8, num_gpus_per_engine: 4}",
          "{worker_type: regular, num_gpus: 4, num_gpus_per_engine: 4}")
    _edit(d, "total_gpus: 15", "total_gpus: 12")
    assert _routers(d) == ROUTERS
    r, load, _ = _deploy_under_load(d)
    assert load.summary()["total"]["failed"] == 0, load.report()
    doc = json.loads(r.stdout)
    acts = {u["unit"]: u["action"] for u in doc["units"]}
    assert acts["router-big"] == acts["router-judge"] == "updated"
    assert acts["engine-judge-regular-3"] == "started"
    assert acts["engine-big-regular-1"] == "stopped"
    after = _pids(d)
    assert "engine-big-regular-1" not in after
    assert {u for u in before if u in after and after[u] != before[u]} == {
        "engine-judge-regular-3"}
    st = d.status()
    assert st[("node-c", "router-big")]["healthy"] is True  # exactly its workers, healthy
    assert st[("node-b", "router-judge")]["healthy"] is True
    # the launch files have the new lists: a later restart starts with them
    def workers_line(i: int, router: str) -> str:
        text = (_root(d, i) / "bin" / f"{router}.sh").read_text()
        return next(ln.strip(" \\") for ln in text.splitlines() if "--worker-urls" in ln)
    assert workers_line(2, "router-big") == "--worker-urls http://10.207.6.13:31000"
    assert workers_line(1, "router-judge") == "--worker-urls " + " ".join(
        f"http://10.207.6.12:3100{k}" for k in range(4))
    assert {u["action"] for u in d.deploy_json()["units"]} == {"unchanged"}


def test_router_argument_restarts_that_router_once(rollout):
    d = rollout
    before = _pids(d)
    d.sets.append("sglang[1].router.policy=round_robin")
    r = d.cli("diff")
    assert "router-judge: restarts last, once" in r.stdout
    r, load, _ = _deploy_under_load(d)
    after = _pids(d)
    assert {u for u in before if after[u] != before[u]} == {"router-judge"}
    summary = load.summary()
    assert summary["chat"]["failed"] == summary["big"]["failed"] == 0, load.report()
    window = load.failure_window("judge")
    m = re.search(r"router-judge: restarted; without a router for ([0-9.]+)s", r.stderr)
    assert m, r.stderr
    down = float(m.group(1))
    # the only requests lost are judge's, while its router restarted
    if window is not None:
        assert window[1] - window[0] <= down + 1, (window, down, load.report())
    print(f"router restart: {down:.1f}s without a router; judge failed "
          f"{summary['judge']['failed']} of {summary['judge']['sent']} requests; "
          f"window {window}")


def test_allow_downtime_stops_everything_that_changes_at_once(rollout):
    d = rollout
    before = _pids(d)
    d.sets.append("defaults.max_running_requests=32")
    r, load, _ = _deploy_under_load(d, "--allow-downtime")
    doc = json.loads(r.stdout)
    assert doc["rollout"]["mode"] == "downtime"
    err = r.stderr
    stops = [m.start() for m in re.finditer(r"^  stop ", err, re.M)]
    starts = [m.start() for m in re.finditer(r"^  start ", err, re.M)]
    assert stops and starts and max(stops) < min(starts)  # every stop before any start
    assert "  out  " not in err  # no router membership dance
    after = _pids(d)
    assert {u for u in before if after[u] != before[u]} == {u for u in before
                                                             if u.startswith("engine-")}
    assert load.summary()["total"]["failed"] > 0  # the downtime it allows


def test_failed_batch_stops_the_rollout_and_a_rerun_converges(rollout, tmp_path):
    d = rollout
    before = _pids(d)
    _edit(d, "overrides: {mem_fraction_static: 0.8}", "overrides: {mem_fraction_static: 0.75}")
    out = tmp_path / "out"
    r = run_cli("render", d.topo, "--rehearse", "-o", str(out), "-q",
                *(x for s in d.sets for x in ("--set", s)))
    assert r.exit_code == 0, r.output
    rendered = out / "ssh-rollout"
    bad = rendered / "hosts" / "node-b" / "bin" / "engine-judge-regular-1.sh"
    good = bad.read_text()
    bad.write_text(good.replace("  --port 31001 \\\n", "  --port 31001 \\\n  --no-such-flag \\\n"))
    assert bad.read_text() != good
    reseal(rendered)
    with Load(_routers(d), rate=20, threads_per_router=2) as load:
        load.wait_ok(2)
        r = d.cli("deploy", "--timeout", "60", "--drain", "5", source=str(rendered))
        time.sleep(1)
    assert r.exit_code == 3, r.output
    assert "engine-judge-regular-1 exited with status 2 while waiting for judge-regular-1" \
        in r.stderr
    assert "unrecognized arguments: --no-such-flag" in r.stderr
    assert "the rollout stopped here: judge-regular-1 left out of router-judge" in r.stderr
    # the rest kept serving: no request failed, judge-regular-2 and -3 were not touched
    assert load.summary()["total"]["failed"] == 0, load.report()
    mid = d.status(exit_code=3)
    assert mid[("node-b", "engine-judge-regular-1")]["state"] == "dead"
    assert mid[("node-b", "engine-judge-regular-2")]["pid"] == before["engine-judge-regular-2"]
    # fixed: the rerun carries on where the rollout stopped
    bad.write_text(good)
    reseal(rendered)
    with Load(_routers(d), rate=20, threads_per_router=2) as load:
        load.wait_ok(2)
        doc = d.deploy_json(source=str(rendered))
        time.sleep(1)
    assert load.summary()["total"]["failed"] == 0, load.report()
    acts = {u["unit"]: u["action"] for u in doc["units"]}
    assert {u for u, a in acts.items() if a != "unchanged"} == {
        "engine-judge-regular-1", "engine-judge-regular-2", "engine-judge-regular-3"}
    after = d.status()
    assert all(row["healthy"] is not False and row["state"] == "running"
               for row in after.values())
    assert {u for (_, u), row in after.items() if row["pid"] != before[u]} == {
        f"engine-judge-regular-{k}" for k in range(4)}


def test_partial_fleet_rolls_its_hosts_through_a_router_elsewhere(rollout):
    """--hosts node-d: big-regular-1 rolls; its router runs on node-c, which is only called
    (its API), never changed."""
    d = rollout
    before = _pids(d)
    _edit(d, "{worker_type: regular, num_gpus: 8, num_gpus_per_engine: 4}",
          "{worker_type: regular, num_gpus: 8, num_gpus_per_engine: 4, "
          "overrides: {mem_fraction_static: 0.6}}")
    r, load, _ = _deploy_under_load(d, "--hosts", "node-d")
    assert load.summary()["total"]["failed"] == 0, load.report()
    assert "and 1 for their routers' APIs only" in r.stderr
    assert "out     router-big: http://10.207.6.14:31000" in r.stderr
    doc = json.loads(r.stdout)
    assert doc["rollout"]["batches"] == [["big-regular-1"]]
    assert doc["rollout"]["warnings"] == []  # the router's worker list did not change
    assert {u["unit"] for u in doc["units"] if u["action"] != "unchanged"} == {
        "engine-big-regular-1"}
    after = _pids(d)
    assert {u for u in before if after[u] != before[u]} == {"engine-big-regular-1"}
    # the rest of the fleet still has the change to roll
    r = d.cli("diff", "--format", "json")
    assert {u["unit"] for u in json.loads(r.stdout)["units"] if u["action"] != "none"} == {
        "engine-big-regular-0"}


MULTINODE = """\
deployment: {name: ssh-multinode-roll, hf_checkpoint: /models/big, total_gpus: 8}
cluster:
  gpus_per_node: 2
  hosts:
    - {name: node-a, address: 10.207.6.11, user: root}
    - {name: node-b, address: 10.207.6.12, user: root}
    - {name: node-c, address: 10.207.6.13, user: root}
    - {name: node-d, address: 10.207.6.14, user: root}
sglang:
  - name: big
    server_groups:
      - {worker_type: regular, num_gpus: 8, num_gpus_per_engine: 4}
"""


def test_multi_node_engines_roll_as_one(hosts, tmp_path):
    """Two engines, each spanning two hosts: a change rolls them one at a time, every rank of an
    engine stopped before any starts, and the router never loses a request."""
    topo = tmp_path / "multinode.yaml"
    topo.write_text(MULTINODE)
    d = Deployment(hosts, tmp_path, topo, DELAY)
    try:
        d.deploy_json()
        before = _pids(d)
        assert set(before) == {"engine-big-regular-0-r0", "engine-big-regular-0-r1",
                               "engine-big-regular-1-r0", "engine-big-regular-1-r1",
                               "router-big"}
        d.sets.append("defaults.max_running_requests=48")
        r, load, _ = _deploy_under_load(d)
        assert load.summary()["total"]["failed"] == 0, load.report()
        doc = json.loads(r.stdout)
        assert doc["rollout"]["batches"] == [["big-regular-0"], ["big-regular-1"]]
        after = _pids(d)
        assert {u for u in before if after[u] != before[u]} == set(before) - {"router-big"}
        # per batch: both ranks stop (rank 1 first), then both start
        lines = [ln.strip() for ln in r.stderr.splitlines()
                 if re.match(r"  (stop|start) +node-", ln)]
        first = [ln for ln in lines if "big-regular-0" in ln]
        assert [ln.split()[0] for ln in first] == ["stop", "stop", "start", "start"], lines
    finally:
        run_cli(*d.args("down"))
