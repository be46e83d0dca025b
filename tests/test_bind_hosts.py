"""From a render to real hosts (issue "The first hour"): placeholder node names are said, and
hosts bind from the command line: ``--set`` YAML flow values and ``--inventory FILE``."""

from __future__ import annotations

import json

import pytest

from generator.compile.inventory import host_name, read_inventory
from generator.errors import TopologyError
from tests.helpers import EXAMPLES, run_cli, write_topo

SLIME = EXAMPLES / "from-slime-pd-basic.yaml"  # a bare slime file: no cluster.hosts
FACTS = ("--hf-checkpoint", "/models/Qwen3-8B", "--total-gpus", "16")
PLACEHOLDER = "are placeholders (engines bind --host to them, router URLs call them)"


@pytest.mark.parametrize("command", [["plan"], ["validate"], ["render", "-o", "{tmp}"],
                                     ["export", "slime-args"]])
def test_placeholder_node_names_are_warned(tmp_path, command):
    argv = [c.replace("{tmp}", str(tmp_path)) for c in command]
    r = run_cli(*argv[:1], *argv[1:2] if argv[0] == "export" else (), str(SLIME), *FACTS,
                *argv[1:] if argv[0] != "export" else ())
    assert r.exit_code == 0, r.output
    assert "warning: cluster.hosts: names none of the 2 node(s) this topology uses: node0, " \
           f"node1 {PLACEHOLDER}" in r.stderr
    assert "--inventory FILE" in r.stderr


def test_no_placeholder_warning_when_hosts_bind_every_node_or_local(tmp_path):
    hosts = "cluster.hosts=[{name: a, address: 10.0.0.1}, {name: b, address: 10.0.0.2}]"
    for extra in (["--set", hosts], ["--local"]):
        r = run_cli("plan", str(SLIME), *FACTS, *extra)
        assert r.exit_code == 0, r.output
        assert "placeholder" not in r.stderr


def test_a_slurm_topology_names_its_nodes_at_run_time():
    r = run_cli("plan", str(EXAMPLES / "slurm-pd-multinode.yaml"))
    assert r.exit_code == 0, r.output
    assert "placeholder" not in r.stderr


def test_set_takes_a_yaml_flow_list_of_hosts():
    r = run_cli("plan", str(SLIME), *FACTS, "--json", "--set",
                "cluster.hosts=[{name: gpu-a, address: 10.0.0.1, user: ubuntu}, "
                "{name: gpu-b, address: '10.0.0.2', port: 2222}]")
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert [(n["host"], n["address"]) for n in plan["nodes"]] == [("gpu-a", "10.0.0.1"),
                                                                   ("gpu-b", "10.0.0.2")]
    urls = {e["url"] for m in plan["models"] for e in m["engines"]}
    assert urls and all(u.startswith(("http://10.0.0.1:", "http://10.0.0.2:")) for u in urls)


def test_a_flow_value_is_checked_like_a_file_value():
    bad = run_cli("plan", str(SLIME), *FACTS, "--set",
                  "cluster.hosts=[{name: a, address: 10.0.0.1, port: 70000}]")
    assert bad.exit_code == 1
    assert "cluster.hosts[0].port: must be <= 65535, got 70000" in bad.stderr
    unclosed = run_cli("plan", str(SLIME), *FACTS, "--set", "cluster.hosts=[{name: a")
    assert unclosed.exit_code == 1
    assert "cluster.hosts: not a YAML flow list or mapping" in unclosed.stderr
    tagged = run_cli("plan", str(SLIME), *FACTS, "--set", "cluster.hosts=[!!python/object x]")
    assert "unsupported YAML tag" in tagged.stderr and tagged.exit_code == 1
    # a quoted value stays a string, as before
    quoted = run_cli("plan", str(SLIME), *FACTS, "--set", 'deployment.name="[x]"')
    assert "deployment.name" in quoted.stderr and quoted.exit_code == 1


def test_a_flow_mapping_naming_a_credential_is_never_echoed():
    r = run_cli("plan", str(SLIME), *FACTS, "--set", "runtime.env={HF_TOKEN: hf_secretvalue1}")
    assert r.exit_code == 1
    assert "hf_secretvalue1" not in r.output
    assert "--set runtime.env=***" in r.stderr


@pytest.mark.parametrize("value", [
    'runtime.env={"HF_TOK\\x45N": hf_abc1}',           # a YAML escape spells the name
    'runtime.env={"HF_TO\\u004bEN": hf_abc1}',
    'runtime.env={a: {"\\x48F_TOKEN": hf_abc1}}',       # nested
    'sglang[0].router.args={"api_\\x6bey": hf_abc1}',
    "runtime.env=HF_TOKEN: hf_abc1",                    # the block form of the same mapping
    "runtime.env=[HF_TOKEN, hf_abc1]",
    "runtime.env=- HF_TOKEN: hf_abc1",
])
def test_a_set_value_naming_a_credential_in_any_spelling_is_never_echoed(value):
    r = run_cli("plan", str(SLIME), *FACTS, "--set", value)
    assert r.exit_code in (1, 2), r.output
    assert "hf_abc1" not in r.output, r.output
    assert "=***" in r.stderr


def test_a_block_mapping_on_the_command_line_says_to_write_a_flow_one():
    r = run_cli("plan", str(SLIME), *FACTS, "--set", "runtime.env=HF_TOKEN: hf_abc1")
    assert r.exit_code == 1
    assert "--set runtime.env=***: runtime.env: reads as a YAML block mapping or list" in r.stderr
    assert "{KEY: VALUE}" in r.stderr


def test_a_flow_value_with_too_many_items_says_so():
    hosts = ", ".join(f"{{name: h{i}, address: 10.0.{i // 256}.{i % 256}}}" for i in range(5000))
    r = run_cli("plan", str(SLIME), *FACTS, "--set", f"cluster.hosts=[{hosts}]")
    assert r.exit_code == 1
    assert "cluster.hosts: list has more than 4,096 items" in r.stderr, r.stderr[:400]
    assert "_TooMany" not in r.stderr


def test_setting_an_item_of_a_missing_list_hints_at_the_whole_list():
    r = run_cli("plan", str(SLIME), *FACTS, "--set", "cluster.hosts[0].address=10.0.0.1")
    assert r.exit_code == 2
    assert "cluster.hosts: no such list (hint: set the whole list as a YAML flow list: " \
           "--set 'cluster.hosts=[...]', or --inventory FILE)" in r.stderr


# -- --inventory ---------------------------------------------------------------------------------

def test_a_plain_host_list(tmp_path):
    inv = tmp_path / "hosts"
    inv.write_text("# my GPU boxes\ngpu1.example.com\nubuntu@10.0.0.2:2222\n\n")
    assert read_inventory(str(inv)) == [
        {"name": "gpu1", "address": "gpu1.example.com"},
        {"name": "10-0-0-2", "address": "10.0.0.2", "user": "ubuntu", "port": 2222}]


def test_an_ansible_ini_inventory(tmp_path):
    inv = tmp_path / "inventory.ini"
    inv.write_text(
        "[gpu]\n"
        "a ansible_host=10.0.0.1 ansible_python_interpreter=/usr/bin/python3\n"
        "b ansible_host=10.0.0.2 ansible_port=2200 ansible_user=root  # the big one\n"
        "[gpu:vars]\nansible_user=ubuntu\n"
        "[login]\nc:2222 ansible_host=10.0.0.3 sgl_gen_workdir=/srv/sgl sgl_gen_supervisor=bash\n"
        "[all:vars]\nansible_port=22\n"
        "[cluster:children]\ngpu\nlogin\n")
    assert read_inventory(str(inv)) == [
        {"name": "a", "address": "10.0.0.1", "user": "ubuntu", "port": 22},
        {"name": "b", "address": "10.0.0.2", "user": "root", "port": 2200},
        {"name": "c", "address": "10.0.0.3", "port": 2222, "workdir": "/srv/sgl",
         "supervisor": "bash"}]


def test_an_ansible_yaml_inventory(tmp_path):
    inv = tmp_path / "inventory.yaml"
    inv.write_text(
        "all:\n"
        "  vars: {ansible_user: ops}\n"
        "  children:\n"
        "    gpu:\n"
        "      vars: {ansible_port: '2201'}\n"
        "      hosts:\n"
        "        a: {ansible_host: 10.0.0.1}\n"
        "        b: {ansible_host: 10.0.0.2, ansible_user: root, ansible_port: 2222}\n"
        "    login:\n"
        "      hosts:\n"
        "        c:\n")
    assert read_inventory(str(inv)) == [
        {"name": "a", "address": "10.0.0.1", "user": "ops", "port": 2201},
        {"name": "b", "address": "10.0.0.2", "user": "root", "port": 2222},
        {"name": "c", "address": "c", "user": "ops"}]


@pytest.mark.parametrize("text,where,message", [
    ("a\nweb[01:10]\n", ":2:1:", "host ranges ('web[01:10]') are not supported"),
    ("a ansible_port=99999\n", ":1:3:", "port '99999' is not a number from 1 to 65535"),
    # str.isdigit() is true for these, int() refuses (or reads) them: ASCII digits only
    ("a ansible_port=\u00b2\n", ":1:3:", "port '\u00b2' is not a number from 1 to 65535"),
    ("a:\u0662\u0662\n", ":1:1:", "port '\u0662\u0662' is not a number from 1 to 65535"),
    ("a ansible_host\n", ":1:3:", "expected key=value, got 'ansible_host'"),
    ("[g:weird]\na\n", ":1:1:", "unknown section kind 'weird'"),
    ("# nothing\n", ":1:1:", "no hosts in this inventory"),
    ("a.x.com\na.y.com\n", ":2:1:", "both get the sgl-gen host name 'a'"),
    ("a 'unclosed\n", ":1:1:", "cannot read this line"),
])
def test_inventory_errors_are_positioned(tmp_path, text, where, message):
    inv = tmp_path / "hosts"
    inv.write_text(text)
    with pytest.raises(TopologyError) as exc:
        read_inventory(str(inv))
    line = exc.value.lines()[0]
    assert line.startswith(f"{inv}{where}") and message in line, line


def test_host_names_follow_the_topology_rule():
    assert host_name("gpu-01") == "gpu-01"
    assert host_name("gpu1.example.com") == "gpu1"
    assert host_name("10.0.0.1") == "10-0-0-1"
    assert host_name("fe80::1") == "fe80-1"


def test_inventory_binds_a_slime_file_on_every_topology_command(tmp_path):
    inv = tmp_path / "hosts"
    inv.write_text("a ansible_host=10.0.0.1\nb ansible_host=10.0.0.2 ansible_user=ubuntu\n")
    r = run_cli("plan", str(SLIME), *FACTS, "--inventory", str(inv), "--json")
    assert r.exit_code == 0, r.output
    assert "placeholder" not in r.stderr
    nodes = json.loads(r.stdout)["nodes"]
    assert [(n["host"], n["address"], n.get("user")) for n in nodes] == [
        ("a", "10.0.0.1", None), ("b", "10.0.0.2", "ubuntu")]
    out = run_cli("export", "slime-args", str(SLIME), *FACTS, "--inventory", str(inv))
    assert out.exit_code == 0, out.output
    assert "10.0.0.1:" in out.stdout and "node0" not in out.stdout


def test_inventory_and_a_file_that_names_other_hosts_disagree(tmp_path):
    inv = tmp_path / "hosts"
    inv.write_text("z ansible_host=10.9.9.9\n")
    topo = write_topo(tmp_path, """
        cluster:
          hosts: [{name: a, address: 10.0.0.1}]
        sglang:
          - name: m
            model_path: /models/m
            update_weights: false
            server_groups: [{worker_type: regular, num_gpus: 1}]
        """)
    r = run_cli("plan", str(topo), "--inventory", str(inv))
    assert r.exit_code == 1
    assert f"but --inventory {inv} says" in r.stderr
    assert "a CLI value never silently replaces a file value" in r.stderr


# -- hostile inventories -------------------------------------------------------------------------

@pytest.mark.parametrize("ch", ["\u2028", "\u2029", "\x0c", "\x0b", "\x85", "\x1c", "\r"])
def test_a_hidden_line_break_in_an_ini_inventory_is_refused_not_a_second_host(tmp_path, ch):
    """Python's splitlines() breaks at U+2028, form feed, NEL...: `a ansible_host=10.0.0.1<LS>b`
    must not become hosts a and b (grep, wc -l and review see one line)."""
    inv = tmp_path / "hosts"
    inv.write_bytes(f"x\na ansible_host=10.0.0.1{ch}b\n".encode())
    with pytest.raises(TopologyError) as exc:
        read_inventory(str(inv))
    assert exc.value.lines()[0].startswith(f"{inv}:2:24: "), exc.value.lines()


def test_an_ini_inventory_with_a_bom_and_crlf_lines(tmp_path):
    inv = tmp_path / "hosts"
    inv.write_bytes(b"\xef\xbb\xbf[gpu]\r\na ansible_host=10.0.0.1\r\nb\r\n")
    assert read_inventory(str(inv)) == [{"name": "a", "address": "10.0.0.1"},
                                        {"name": "b", "address": "b"}]


def test_an_inventory_of_more_hosts_than_a_topology_may_list_is_refused_quickly(tmp_path):
    inv = tmp_path / "hosts"
    inv.write_text("".join(f"h{i}\n" for i in range(200_000)))
    r = run_cli("plan", str(SLIME), *FACTS, "--inventory", str(inv))
    assert r.exit_code == 1
    assert len(r.stderr) < 2000, r.stderr[:300]
    assert f"{inv}:4097:1: more than 4,096 hosts" in r.stderr


@pytest.mark.parametrize("text,where,message", [
    ("all:\n  hosts:\n    a: 5\n", ":3:8:", "a host's value is a mapping of its variables"),
    ("all:\n  vars: [1]\n  hosts: {a: }\n", ":2:9:", "vars is a mapping"),
    ("all:\n  children: [g]\n", ":2:13:", "children is a mapping"),
    ("- a\n- b\n", ":1:1:", "an Ansible YAML inventory is a mapping of groups"),
])
def test_a_yaml_inventory_of_the_wrong_shape_is_positioned(tmp_path, text, where, message):
    inv = tmp_path / "inventory.yml"
    inv.write_text(text)
    with pytest.raises(TopologyError) as exc:
        read_inventory(str(inv))
    line = exc.value.lines()[0]
    assert line.startswith(f"{inv}{where}") and message in line, line
    assert "sglang" not in line  # a topology's hint is no help for an inventory


@pytest.mark.parametrize("text,name,where", [
    ("a\nb ansible_host=\"$(id)\"\n", "hosts", ":2:3:"),
    ("a\nb ansible_user=-oProxyCommand=x\n", "hosts", ":2:3:"),
    ("[g:vars]\nansible_user=Root\n[g]\na\n", "hosts", ":2:1:"),
    ("all:\n  hosts:\n    a:\n      ansible_host: 'x y'\n", "inv.yaml", ":4:21:"),
])
def test_a_bad_inventory_value_is_positioned_in_the_inventory(tmp_path, text, name, where):
    inv = tmp_path / name
    inv.write_text(text)
    r = run_cli("plan", str(SLIME), *FACTS, "--inventory", str(inv))
    assert r.exit_code == 1
    assert r.stderr.startswith(f"{inv}{where} cluster.hosts["), r.stderr


def test_a_flow_value_that_differs_from_the_files_says_where(tmp_path):
    topo = write_topo(tmp_path, """
        deployment: {name: e, hf_checkpoint: /models/m, num_gpus_per_engine: 1}
        runtime: {env: {A: "1"}}
        cluster:
          hosts: [{name: a, address: 10.0.0.1}]
        sglang:
          - name: m
            server_groups: [{worker_type: regular, num_gpus: 1}]
        """)
    env = run_cli("plan", str(topo), "--set", 'runtime.env={A: "1", B: "2"}')
    assert env.exit_code == 1
    assert (f"{topo}:2:16: runtime.env: the file says a mapping but --set runtime.env="
            '{A: "1", B: "2"} says a mapping: runtime.env.B is not in the file\'s') in env.stderr
    hosts = run_cli("plan", str(topo), "--set", "cluster.hosts=[{name: a, address: 10.0.0.2}]")
    assert hosts.exit_code == 1
    assert ": cluster.hosts[0].address is '10.0.0.1' in the file's, '10.0.0.2' in " \
           "--set cluster.hosts=" in hosts.stderr
    secret = run_cli("plan", str(topo), "--set", 'runtime.env={A: "1", HF_TOKEN: "hf_abc9"}')
    assert secret.exit_code == 1
    assert "hf_abc9" not in secret.output
    assert "--set runtime.env=*** says a mapping: runtime.env.HF_TOKEN is not in the file's" \
        in secret.stderr


def test_two_set_options_that_disagree_do_not_blame_the_file(tmp_path):
    r = run_cli("plan", str(SLIME), *FACTS, "--set", 'runtime.env.B="2"',
                "--set", 'runtime.env={A: "2"}')
    assert r.exit_code == 1
    assert "the file says" not in r.stderr
    assert "runtime.env: --set runtime.env.B=\"2\" says a mapping but --set runtime.env=" \
           '{A: "2"} says a mapping' in r.stderr


def test_a_semicolon_inside_an_ini_line_is_part_of_the_value_as_for_ansible(tmp_path):
    """Ansible's INI reader takes `;` as a comment only at the start of a line: in
    `ansible_user=ops;rm -rf x` it is part of the value, which is then refused, never cut to
    `ops` with the rest of the line dropped."""
    inv = tmp_path / "hosts"
    inv.write_text("; a comment\na ansible_user=ops;rm\n")
    assert read_inventory(str(inv)) == [{"name": "a", "address": "a", "user": "ops;rm"}]
    r = run_cli("plan", str(SLIME), *FACTS, "--inventory", str(inv))
    assert r.exit_code == 1
    assert r.stderr.startswith(f"{inv}:2:3: cluster.hosts[0].user: 'ops;rm' is not allowed"), \
        r.stderr


def test_an_ini_parent_groups_vars_reach_the_hosts_of_its_children(tmp_path):
    """[cluster:vars] applies to the hosts of every group [cluster:children] names (and their
    children), as in Ansible (and as in a YAML inventory); a child's own vars win."""
    inv = tmp_path / "hosts"
    inv.write_text("[gpu]\na\n[login]\nb ansible_port=2200\n"
                   "[cluster:children]\ngpu\nlogin\n"
                   "[cluster:vars]\nansible_user=ubuntu\nansible_port=2222\n"
                   "[top:children]\ncluster\n[top:vars]\nsgl_gen_workdir=/srv/sgl\n"
                   "[login:vars]\nansible_user=ops\n")
    assert read_inventory(str(inv)) == [
        {"name": "a", "address": "a", "user": "ubuntu", "port": 2222, "workdir": "/srv/sgl"},
        {"name": "b", "address": "b", "user": "ops", "port": 2200, "workdir": "/srv/sgl"}]


def _diamonds(levels: int) -> list[str]:
    """Host a in g0; each g<i> has children g<i>a and g<i>b, each with child g<i-1>: 2**levels
    paths from g<levels> down to a."""
    lines = ["[g0]", "a"]
    for i in range(1, levels + 1):
        lines += [f"[g{i}a:children]", f"g{i - 1}", f"[g{i}b:children]", f"g{i - 1}",
                  f"[g{i}:children]", f"g{i}a", f"g{i}b"]
    return lines


def test_ini_groups_nested_as_diamonds_are_read_quickly(tmp_path):
    inv = tmp_path / "hosts"
    inv.write_text("\n".join([*_diamonds(200), "[g200:vars]", "ansible_user=ubuntu"]) + "\n")
    assert read_inventory(str(inv)) == [{"name": "a", "address": "a", "user": "ubuntu"}]


def test_ini_groups_that_are_each_others_children_are_refused(tmp_path):
    inv = tmp_path / "hosts"
    inv.write_text("\n".join([*_diamonds(3), "[g0:children]", "g3"]) + "\n")
    with pytest.raises(TopologyError) as exc:
        read_inventory(str(inv))
    line = exc.value.lines()[0]
    assert line.startswith(f"{inv}:") and "is its own child" in line, line


@pytest.mark.parametrize("value", ["runtime.env.A=x #y", "deployment.name=abc #x",
                                   'runtime.env.A="x" # y', "runtime.env={A: x} #y",
                                   "cluster.hosts=[{name: a, address: 10.0.0.1}] # hosts"])
def test_a_set_value_yaml_would_cut_at_a_comment_is_refused(value):
    """`x #y` is `x` to YAML: what arrives must be what was typed, or an error."""
    r = run_cli("plan", str(SLIME), *FACTS, "--set", value)
    assert r.exit_code == 1, r.output
    assert "YAML reads the rest as a comment" in r.stderr, r.stderr


def test_a_hash_inside_a_set_value_is_kept():
    from generator.compile.options import parse_set

    assert parse_set("runtime.env.A=x#y").value == "x#y"
    assert parse_set('runtime.env.A="x #y"').value == "x #y"
    assert parse_set("runtime.env={A: 'x #y'}").value == {"A": "x #y"}
    assert parse_set("runtime.env.A=x  ").value == "x"


def test_an_inventory_that_is_not_one_text_file_says_so_in_its_words(tmp_path):
    folder = tmp_path / "inventory"
    folder.mkdir()
    with pytest.raises(TopologyError) as exc:
        read_inventory(str(folder))
    assert exc.value.lines()[0] == (
        f"{folder}: is a directory, not an inventory file (hint: an Ansible inventory "
        "directory: pass its hosts file)")
    latin = tmp_path / "hosts"
    latin.write_bytes(b"a\nb ansible_user=j\xf6rg\n")
    with pytest.raises(TopologyError) as exc:
        read_inventory(str(latin))
    assert exc.value.lines()[0].startswith(f"{latin}:2:17: not UTF-8 text"), exc.value.lines()


def test_a_yaml_inventory_port_in_other_digits_is_refused_without_a_traceback(tmp_path):
    inv = tmp_path / "inventory.yaml"
    inv.write_text("all:\n  hosts:\n    a: {ansible_port: \"\u00b2\"}\n", encoding="utf-8")
    r = run_cli("plan", str(SLIME), *FACTS, "--inventory", str(inv))
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith(f"{inv}:3:23: cluster.hosts[0].port: must be an integer"), r.stderr


def test_an_inventorys_ssh_settings_sgl_gen_does_not_use_are_warned(tmp_path):
    """A bastion or key Ansible would use (ansible_ssh_common_args='-o ProxyJump=...',
    ansible_ssh_private_key_file) is not silently dropped: sgl-gen's SSH reads ssh's own
    config, and says so once per variable; a password's value is never shown."""
    inv = tmp_path / "hosts"
    inv.write_text("[gpu]\na ansible_host=10.0.0.1 ansible_ssh_private_key_file=~/.ssh/gpu\n"
                   "b ansible_host=10.0.0.2 ansible_ssh_private_key_file=~/.ssh/gpu\n"
                   "[gpu:vars]\nansible_ssh_common_args='-o ProxyJump=bastion'\n"
                   "ansible_password=hunter2pw\n")
    r = run_cli("plan", str(SLIME), *FACTS, "--inventory", str(inv))
    assert r.exit_code == 0, r.output
    warned = [line for line in r.stderr.splitlines() if "is not used" in line]
    assert warned == [
        f"{inv}:2:25: warning: ansible_ssh_private_key_file is not used: sgl-gen connects as "
        "ssh does, with ~/.ssh/config (or --ssh-config) (hint: put IdentityFile, ProxyJump, "
        "... in a Host block for these hosts)",
        f"{inv}:5:1: warning: ansible_ssh_common_args is not used: sgl-gen connects as ssh "
        "does, with ~/.ssh/config (or --ssh-config) (hint: put IdentityFile, ProxyJump, ... in "
        "a Host block for these hosts)",
        f"{inv}:6:1: warning: ansible_password is not used: sgl-gen connects as ssh does, with "
        "~/.ssh/config (or --ssh-config) (hint: put IdentityFile, ProxyJump, ... in a Host "
        "block for these hosts)"], r.stderr
    assert "hunter2pw" not in r.output
