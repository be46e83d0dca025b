"""A bare slime --sglang-config file plus CLI facts; --set; file/CLI disagreement."""

from __future__ import annotations

import json

from tests.helpers import errors_of, plan_of, run_cli, write_topo

SLIME_BASIC = """\
sglang:
  - name: default
    server_groups:
      - worker_type: regular
        num_gpus: 8
"""


def test_bare_slime_file_with_cli_facts(tmp_path):
    p = write_topo(tmp_path, SLIME_BASIC)
    plan = plan_of(p, hf_checkpoint="/m", total_gpus=8, num_gpus_per_engine=2)
    assert [e.tp_size for e in plan.models[0].engines] == [2, 2, 2, 2]
    assert plan.models[0].update_weights is True  # path == hf_checkpoint


def test_bare_slime_file_without_width_says_which_options(tmp_path):
    p = write_topo(tmp_path, SLIME_BASIC)
    assert errors_of(p, hf_checkpoint="/m") == [
        f"{p}:4:9: sglang[0].server_groups[0]: no GPUs per engine for this group (hint: set "
        "num_gpus_per_engine on the group or model, deployment.num_gpus_per_engine, or "
        "--num-gpus-per-engine)"]


def test_legacy_engine_groups_key(tmp_path):
    p = write_topo(tmp_path, SLIME_BASIC.replace("server_groups", "engine_groups"))
    plan = plan_of(p, hf_checkpoint="/m", num_gpus_per_engine=4)
    assert len(plan.models[0].engines) == 2


def test_both_group_keys_is_an_error(tmp_path):
    p = write_topo(tmp_path, SLIME_BASIC + "    engine_groups: []\n")
    (err,) = errors_of(p, hf_checkpoint="/m", num_gpus_per_engine=4)
    assert err.startswith(f"{p}:6:5: sglang[0].engine_groups: both server_groups and its legacy")


def test_total_gpus_from_cli_checked(tmp_path):
    p = write_topo(tmp_path, SLIME_BASIC)
    # the option, and where the file's groups that make the other number are (issue 13)
    assert errors_of(p, hf_checkpoint="/m", num_gpus_per_engine=2, total_gpus=16) == [
        "--total-gpus 16: deployment.total_gpus: server groups use 8 GPUs but total_gpus is 16; "
        f"the groups are at {p}:1:1 (8 at 5:19) "
        "(hint: the sum of every group's num_gpus (placeholders included) must equal it)"]


def test_file_and_cli_disagree(tmp_path):
    p = write_topo(tmp_path, "deployment:\n  total_gpus: 8\n" + SLIME_BASIC)
    assert errors_of(p, total_gpus=16) == [
        f"{p}:2:15: deployment.total_gpus: the file says 8 but --total-gpus 16 says 16 (hint: "
        "remove one of them: a CLI value never silently replaces a file value)"]
    # agreeing is fine
    plan_of(p, "deployment.hf_checkpoint=/m", total_gpus=8, num_gpus_per_engine=8)


def test_set_any_field_typed_like_yaml(tmp_path):
    p = write_topo(tmp_path, SLIME_BASIC)
    plan = plan_of(p, "runtime.python=/opt/venv/bin/python", "cluster.gpus_per_node=4",
                   "sglang[0].router.port=9100", hf_checkpoint="/m", num_gpus_per_engine=2)
    assert plan.topology.runtime.python == "/opt/venv/bin/python"
    assert len(plan.nodes) == 2  # 8 GPUs on 4-GPU nodes
    assert plan.models[0].router.port == 9100


def test_set_value_of_wrong_type_is_positioned_at_the_option(tmp_path):
    p = write_topo(tmp_path, SLIME_BASIC)
    assert errors_of(p, "cluster.gpus_per_node=eight", hf_checkpoint="/m",
                     num_gpus_per_engine=2) == [
        "--set cluster.gpus_per_node=eight: cluster.gpus_per_node: must be an integer, "
        "got string 'eight'"]


def test_set_bad_path_is_a_usage_error(tmp_path):
    p = write_topo(tmp_path, SLIME_BASIC)
    r = run_cli("validate", str(p), "--set", "sglang[x].name=1")
    assert r.exit_code == 2
    assert "bad path" in r.stderr


def test_plan_json_contract(tmp_path):
    p = write_topo(tmp_path, SLIME_BASIC)
    r = run_cli("plan", str(p), "--json", "--hf-checkpoint", "/m", "--num-gpus-per-engine", "2")
    assert r.exit_code == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["plan_version"] == 1
    assert plan["deployment"]["name"] == "topo"
    assert plan["nodes"][0] == {"index": 0, "host": "node0", "address": "node0",
                                "gpus": list(range(8)), "workdir": "/var/lib/sgl-gen",
                                "supervisor": "systemd"}
    (m,) = plan["models"]
    assert set(m) >= {"name", "model_path", "update_weights", "pd", "router", "engines",
                      "placeholders"}
    assert set(m["router"]) >= {"host", "address", "port", "url", "argv"}
    e = m["engines"][0]
    assert set(e) >= {"id", "worker_type", "gpus_per_engine", "tp_size", "pp_size", "nnodes",
                      "placements", "host", "port", "url", "argv"}
    assert e["placements"] == [{"node": 0, "host": "node0", "address": "node0", "gpus": [0, 1],
                                "node_rank": 0}]


def test_plan_table(tmp_path):
    p = write_topo(tmp_path, SLIME_BASIC)
    r = run_cli("plan", str(p), "--hf-checkpoint", "/m", "--num-gpus-per-engine", "4")
    assert r.exit_code == 0, r.stderr
    assert "node 0  node0 (node0)" in r.stdout
    assert "GPU 0-3  default-regular-0" in r.stdout
    assert "router" in r.stdout and "default" in r.stdout


def test_schema_command_prints_the_schema():
    r = run_cli("schema")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_pp_size_override_derives_tp(tmp_path):
    p = write_topo(tmp_path, """\
deployment: {hf_checkpoint: /m}
sglang:
  - name: a
    server_groups:
      - worker_type: regular
        num_gpus: 8
        num_gpus_per_engine: 8
        overrides: {pp_size: 2}
""")
    (e,) = plan_of(p).models[0].engines
    assert (e.tp_size, e.pp_size) == (4, 2)
    assert e.argv[e.argv.index("--tp-size") + 1] == "4"
    assert e.argv[e.argv.index("--pp-size") + 1] == "2"


HOSTS = """\
deployment: {hf_checkpoint: /m}
cluster:
  gpus_per_node: 2
  hosts:
    - {name: a, address: 10.0.0.1}
    - {name: b, address: 10.0.0.2, supervisor: bash}
    - {name: c, address: 10.0.0.3}
sglang:
  - name: m
    server_groups:
      - {worker_type: regular, num_gpus: 6, num_gpus_per_engine: 2}
"""


def _supervisors(plan) -> list[str]:
    return [n.supervisor for n in plan.nodes]


def test_supervisor_defaults_to_systemd_and_a_host_overrides_it(tmp_path):
    p = write_topo(tmp_path, HOSTS)
    assert _supervisors(plan_of(p)) == ["systemd", "bash", "systemd"]
    r = run_cli("plan", str(p), "--json")
    assert r.exit_code == 0, r.stderr
    assert [n["supervisor"] for n in json.loads(r.stdout)["nodes"]] == ["systemd", "bash",
                                                                        "systemd"]
    # nodes that are not hosts of cluster.hosts get runtime.supervisor
    p2 = write_topo(tmp_path, SLIME_BASIC, name="bare.yaml")
    plan = plan_of(p2, "runtime.supervisor=bash", hf_checkpoint="/m", num_gpus_per_engine=4)
    assert _supervisors(plan) == ["bash"]


def test_supervisor_set_on_the_command_line(tmp_path):
    p = write_topo(tmp_path, HOSTS.replace(", supervisor: bash", ""))
    assert _supervisors(plan_of(p, "runtime.supervisor=bash")) == ["bash"] * 3
    assert _supervisors(plan_of(p, "cluster.hosts[1].supervisor=bash")) == [
        "systemd", "bash", "systemd"]
    assert _supervisors(plan_of(p, "runtime.supervisor=bash",
                                "cluster.hosts[2].supervisor=systemd")) == [
        "bash", "bash", "systemd"]
    # the file and the command line disagreeing is an error, as for every field
    p2 = write_topo(tmp_path, HOSTS, name="pinned.yaml")
    assert errors_of(p2, "cluster.hosts[1].supervisor=systemd") == [
        f"{p2}:6:48: cluster.hosts[1].supervisor: the file says 'bash' but --set "
        "cluster.hosts[1].supervisor=systemd says 'systemd' (hint: remove one of them: a CLI "
        "value never silently replaces a file value)"]


def test_a_bad_supervisor_is_positioned(tmp_path):
    p = write_topo(tmp_path, HOSTS.replace("supervisor: bash", "supervisor: sytemd")
                   + "runtime: {supervisor: upstart}\n")
    assert errors_of(p) == [
        f"{p}:6:48: cluster.hosts[1].supervisor: 'sytemd' is not one of: systemd, bash "
        "(hint: did you mean 'systemd'?)",
        f"{p}:12:23: runtime.supervisor: 'upstart' is not one of: systemd, bash"]
    p = write_topo(tmp_path, HOSTS, name="cli.yaml")
    assert errors_of(p, "runtime.supervisor=Bash") == [
        "--set runtime.supervisor=Bash: runtime.supervisor: 'Bash' is not one of: systemd, "
        "bash (hint: did you mean 'bash'?)"]


def test_plan_table_and_readme_name_each_hosts_supervisor(tmp_path):
    from generator.targets.render import render

    p = write_topo(tmp_path, HOSTS)
    r = run_cli("plan", str(p))
    assert r.exit_code == 0, r.stderr
    assert [line for line in r.stdout.splitlines() if line.startswith("node ")] == [
        "node 0  a (10.0.0.1)  supervisor systemd", "node 1  b (10.0.0.2)  supervisor bash",
        "node 2  c (10.0.0.3)  supervisor systemd"]
    readme = render(plan_of(p))["README.md"].content
    assert "| node | host | supervisor | GPU 0 | GPU 1 |\n|---|---|---|---|---|\n" in readme
    assert "| 1 | b | bash | m-regular-1 | m-regular-1 |\n" in readme
