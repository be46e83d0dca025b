"""CPU binding where a task plugin can bind on this machine (2 real cores): a one-node cluster
declaring exactly 2 CPUs and 2 GPUs with task/cgroup + task/affinity. Two 1-GPU engines share
the node, so each engine step gets 1 CPU, and each rehearsal engine reports the CPUs it may run
on (``os.sched_getaffinity``): one each, not the same one. Its own module: the test cluster is
one per machine (tests/slurmcluster.py holds a lock), so it cannot run next to the 3-node one
of tests/test_slurm_life.py."""

from __future__ import annotations

import os

import pytest

from tests.test_slurm_life import _generate, _model, _submit, _topo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bound_cluster(tmp_path_factory):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("binding two engines to distinct CPUs needs 2 CPUs")
    from tests.slurmcluster import running

    with running(tmp_path_factory.mktemp("slurm-bound"), nodes=1, cpus=2, gpus=2,
                 task_plugin="task/cgroup,task/affinity") as c:
        yield c


def test_each_engine_runs_on_its_own_cpu(bound_cluster, tmp_path):
    run = _submit(bound_cluster, tmp_path, _topo("life-bind", 1, _model("chat", ("regular", 2, 1)),
                                                 gpus_per_node=2))
    try:
        engines = run.wait_up()["chat"]["engines"]["regular"]
        steps = run.steps()
        cpus = {}
        for url in engines:
            reply = _generate(url)
            unit = f"engine-{reply['engine_id']}"
            step = run.show_step(steps[unit])
            assert (int(step["CPUs"]), step["TresPerNode"]) == (1, "gres:gpu:1"), step
            assert run.state()["units"][unit]["cpus"] == 1
            cpus[unit] = reply["cpus"]
        print(f"\nCPUs the engines may run on: {cpus}")
        assert all(len(c) == 1 for c in cpus.values()), cpus
        (a, b) = cpus.values()
        assert a != b, cpus
    finally:
        run.cancel()
