"""What a new user hits in the first hour (issue "The first hour"), one test per item fixed."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from generator.cli import main
from tests.helpers import EXAMPLES, REPO, run_cli

SLIME = EXAMPLES / "from-slime-pd-basic.yaml"


@pytest.mark.parametrize("command", ["validate", "plan", "render"])
def test_slimes_flag_names_work_on_every_topology_command(tmp_path, command):
    extra = ["-o", str(tmp_path)] if command == "render" else []
    ours = run_cli(command, str(SLIME), "--total-gpus", "16", *extra)
    theirs = run_cli(command, str(SLIME), "--rollout-num-gpus", "16", *extra)
    assert ours.exit_code == theirs.exit_code == 0, theirs.output
    if command != "render":
        assert ours.stdout == theirs.stdout
    both = run_cli(command, str(SLIME), "--total-gpus", "8", "--rollout-num-gpus", "16", *extra)
    assert both.exit_code == 2
    assert "--total-gpus 8 and its slime name --rollout-num-gpus 16 disagree" in both.output
    width = run_cli(command, str(SLIME), "--rollout-num-gpus-per-engine", "4", *extra)
    assert width.exit_code == run_cli(command, str(SLIME), "--num-gpus-per-engine", "4",
                                      *extra).exit_code


def test_every_command_has_help_for_every_option():
    """No option without help text (logs -n had none)."""
    missing = []

    def walk(cmd, path):
        for p in cmd.params:
            if getattr(p, "help", None) == "" or (hasattr(p, "help") and p.help is None
                                                  and not getattr(p, "hidden", False)):
                missing.append(f"{path} {p.opts[0]}")
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, f"{path} {name}")

    walk(main, "sgl-gen")
    assert missing == []


def test_every_commands_help_states_the_exit_codes():
    import click

    def walk(cmd, path):
        # click's API for a group's commands (main loads each command's module on first use)
        if isinstance(cmd, click.Group):
            ctx = click.Context(cmd)
            for name in cmd.list_commands(ctx):
                yield from walk(cmd.get_command(ctx, name), [*path, name])
        else:
            yield path

    paths = list(walk(main, []))
    assert len(paths) >= 15
    for path in paths:
        r = run_cli(*path, "--help")
        assert r.exit_code == 0, path
        assert "Exit codes:" in r.output, path


def test_no_warning_follows_from_an_error_already_reported(tmp_path):
    from tests.helpers import write_topo

    t = write_topo(tmp_path, """
        sglang:
          - name: m
            server_groups: [{worker_type: regular, num_gpus: 2, num_gpus_per_engine: 1}]
        """)
    r = run_cli("validate", str(t))
    assert r.exit_code == 1
    assert r.output.count("\n") == 1, r.output
    assert "model 'm' has no model path" in r.output and "update_weights" not in r.output


@pytest.mark.parametrize(("expr", "code"), [
    ("a..b=1", 2),                      # malformed
    ("sglang[9].model_path=x", 2),      # no such list item
    ("deployment.name.x=1", 2),         # not a mapping
    ("runtime.env[0]=x", 2),            # no such list
    ("sglang=1", 1),                    # a value the file contradicts: invalid input
    ("bogus.key=1", 1),                 # an unknown key: the schema's error, as in a file
])
def test_a_set_path_that_names_nothing_is_a_usage_error(expr, code):
    r = run_cli("validate", str(EXAMPLES / "basic.yaml"), "--set", expr)
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output


# -- from a render to real hosts: deploy's messages ----------------------------------------------

def test_deploy_without_hosts_says_so_and_how_to_bind_them(tmp_path):
    for extra in ((), ("--target", "bash")):
        r = run_cli("deploy", str(SLIME), "--total-gpus", "16", *extra)
        assert r.exit_code == 2, r.output
        assert (f"{SLIME}: the topology has no hosts (cluster.hosts): its 2 node(s) node0, node1 "
                "are placeholders, nothing to reach over SSH (hint: bind hosts with --inventory "
                "FILE") in r.stderr
        assert "gaierror" not in r.output


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_ssh_connection_is_one_plain_sentence(tmp_path):
    port = _free_port()  # closed again: nothing listens there
    hosts = f"cluster.hosts=[{{name: a, address: 127.0.0.1, port: {port}}}]"
    r = run_cli("deploy", str(EXAMPLES / "basic.yaml"), "--set", hosts, "--rehearse",
                "--connect-timeout", "5")
    assert r.exit_code == 3, r.output
    assert (f"a: cannot connect to 127.0.0.1:{port}: the connection to port {port} was refused: "
            "no SSH server listens there (is sshd running? is the port right?) "
            "(NoValidConnectionsError: ") in r.stderr


def test_a_placeholder_name_in_a_render_is_named_as_such(tmp_path):
    out = tmp_path / "out"
    assert run_cli("render", str(EXAMPLES / "basic.yaml"), "-o", str(out)).exit_code == 0
    r = run_cli("deploy", str(out / "basic"), "--connect-timeout", "5")
    assert r.exit_code == 3, r.output
    assert "node0: cannot connect to node0: the name 'node0' does not resolve to an address " \
           "(a placeholder node name of a topology without cluster.hosts? a typo?) (gaierror: " \
           in r.stderr


@pytest.mark.parametrize("exc,sentence", [
    ("timeout", "no answer within 10 s: the host is down, a firewall drops the connection"),
    ("unreach", "there is no route to the host"),
    ("auth", "authentication failed for ubuntu: the host accepted none of the keys"),
    ("eof", "the SSH handshake failed (is it an SSH server on that port?)"),
])
def test_every_ssh_failure_cause_has_its_sentence(exc, sentence):
    import errno

    import paramiko

    from generator.deploy.spec import HostSpec
    from generator.deploy.transport import connect_failure

    made = {"timeout": TimeoutError("timed out"),
            "unreach": OSError(errno.EHOSTUNREACH, "No route to host"),
            "auth": paramiko.AuthenticationException("Authentication failed."),
            "eof": EOFError()}[exc]
    spec = HostSpec(index=0, host="a", address="10.0.0.1", user="ubuntu", port=2222,
                    root="/srv/x", units=(), files={}, ports=())
    assert connect_failure(made, spec, 10).startswith(sentence)


def test_a_port_that_is_no_ssh_server_is_said_without_paramikos_traceback():
    """A listener that accepts and hangs up (not sshd): one sentence, and none of the
    tracebacks paramiko's transport thread would log."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        hosts = f"cluster.hosts=[{{name: a, address: 127.0.0.1, port: {port}}}]"
        # a process of its own: pytest's log capture would hide what paramiko prints
        r = subprocess.run([sys.executable, "-m", "generator.cli", "status",
                            str(EXAMPLES / "basic.yaml"), "--set", hosts, "--format", "json",
                            "--connect-timeout", "5"], capture_output=True, text=True,
                           cwd=REPO, timeout=60)
    finally:
        srv.close()
    assert r.returncode == 3, r.stderr
    assert "the SSH handshake failed (is it an SSH server on that port?)" in r.stderr
    assert "Traceback" not in r.stderr and "Exception (client)" not in r.stderr
    assert json.loads(r.stdout)["ok"] is False


# -- one meaning per option name -----------------------------------------------------------------

def test_out_is_where_files_go_and_format_is_how_reports_print(tmp_path):
    """-o/--out: where a command writes (render/up/down/status --local: a directory; import:
    a file); --format: text|json. --output, the old name of both, still works, with a note."""
    new = run_cli("render", str(EXAMPLES / "basic.yaml"), "--out", str(tmp_path / "a"))
    assert new.exit_code == 0 and (tmp_path / "a" / "basic" / "plan.json").is_file()
    assert "note:" not in new.stderr
    old = run_cli("render", str(EXAMPLES / "basic.yaml"), "--output", str(tmp_path / "b"))
    assert old.exit_code == 0 and (tmp_path / "b" / "basic" / "plan.json").is_file()
    assert "note: --output is now -o/--out for `sgl-gen render`; --output still works" \
        in old.stderr
    both = run_cli("render", str(EXAMPLES / "basic.yaml"), "-o", str(tmp_path / "a"),
                   "--output", str(tmp_path / "b"))
    assert both.exit_code == 2 and "disagree (they are one option)" in both.output
    src = EXAMPLES / "sources" / "slime_sglang_pd.yaml"
    imp = run_cli("import", "slime", str(src), "--hf-checkpoint", "/m", "--total-gpus", "16",
                  "--output", str(tmp_path / "t.yaml"))
    assert imp.exit_code == 0 and (tmp_path / "t.yaml").is_file()
    assert "note: --output is now -o/--out for `sgl-gen import slime`" in imp.stderr
    for spelling in ("--format", "--output"):
        r = run_cli("deploy", str(SLIME), "--total-gpus", "16", spelling, "json")
        assert r.exit_code == 2
        assert json.loads(r.stdout)["ok"] is False  # the JSON form, whichever the spelling
        assert ("note: --output is now --format" in r.stderr) == (spelling == "--output")
    bad = run_cli("status", str(SLIME), "--format", "yaml")
    assert bad.exit_code == 2 and "'yaml' is not one of 'text', 'json'" in bad.output


def test_every_exit_code_of_the_readme_table_happens(tmp_path):
    """Each code the README's "Exit codes" table lists, produced here by a command of its row
    (130, Ctrl-C, by test_up_local.py::test_ctrl_c_during_up_stops_what_started_and_exits_130)."""
    import re

    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("### Exit codes"):readme.index("No input ever produces")]
    codes = {int(c) for c in re.findall(r"^\| (\d+) \|", table, re.M)}
    bad = tmp_path / "bad.yaml"
    bad.write_text("sglang:\n  - name: m\n    server_groups: [{worker_type: regular, num_gpus: 0}]\n")
    port = _free_port()
    cases = {
        0: ["validate", str(EXAMPLES / "pd.yaml")],
        1: ["validate", str(bad)],
        2: ["validate", str(EXAMPLES / "pd.yaml"), "--no-such-option"],
        3: ["status", str(EXAMPLES / "basic.yaml"), "--set",
            f"cluster.hosts=[{{name: a, address: 127.0.0.1, port: {port}}}]"],
    }
    assert codes == set(cases) | {130}
    for code, argv in cases.items():
        assert run_cli(*argv).exit_code == code, argv


@pytest.mark.skipif(shutil.which("rsync") is None, reason="needs rsync")
def test_the_readmes_copy_command_reaches_an_ipv6_host_over_ssh(tmp_path):
    """rsync reads HOST::PATH as its daemon protocol: an IPv6 address must be bracketed
    (user@[fd00::1]:/path) for the README's copy command to go over ssh at all."""
    out = tmp_path / "out"
    r = run_cli("render", str(EXAMPLES / "basic.yaml"), "-o", str(out), "--set",
                "cluster.hosts=[{name: v6, address: 'fd00::1', user: ubuntu, port: 2222}]")
    assert r.exit_code == 0, r.output
    readme = (out / "basic" / "README.md").read_text()
    copy = next(line for line in readme.splitlines() if line.startswith("rsync "))
    assert copy == ("rsync -a -e 'ssh -p 2222' hosts/v6/ "
                    "'ubuntu@[fd00::1]:/var/lib/sgl-gen/basic/'"), copy
    # run it with a stand-in for ssh that records how rsync called it
    log = tmp_path / "ssh.log"
    fake = tmp_path / "fake-ssh"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {log}\nexit 1\n')
    fake.chmod(0o755)
    argv = shlex.split(copy)
    argv[argv.index("-e") + 1] = f"{fake} -p 2222"
    subprocess.run(argv, cwd=out / "basic", capture_output=True, timeout=30)
    called = log.read_text().split("\n")
    assert called[:4] == ["-p", "2222", "-l", "ubuntu"] and called[4] == "fd00::1", called
    assert "--daemon" not in called


@pytest.mark.skipif(shutil.which("rsync") is None, reason="needs rsync")
def test_the_readmes_copy_commands_work_on_a_fresh_host(tmp_path):
    """The README's `# copy` block, run as written (ssh stood in for by one that runs the
    command here), puts hosts/<host>/ in a workdir that does not exist yet: rsync makes only
    the last folder of its destination."""
    remote = tmp_path / "remote" / "srv" / "sgl"
    out = tmp_path / "out"
    r = run_cli("render", str(EXAMPLES / "basic.yaml"), "-o", str(out), "--set",
                f"cluster.hosts=[{{name: a, address: 127.0.0.1, workdir: '{remote}'}}]")
    assert r.exit_code == 0, r.output
    readme = (out / "basic" / "README.md").read_text()
    block = readme.split("```bash\n# copy\n", 1)[1].split("\n# start", 1)[0]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "ssh").write_text('#!/bin/sh\n'
                                'while [ "${1#-}" != "$1" ]; do\n'
                                '  case "$1" in -p|-l|-o) shift 2 ;; *) shift ;; esac\n'
                                'done\nshift\nexec sh -c "$*"\n')
    (bindir / "ssh").chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    done = subprocess.run(["bash", "-euc", block], cwd=out / "basic", env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (remote / "basic" / "sgl-gen-host.sh").is_file()
    assert (remote / "basic" / "bin" / "engine-default-regular-0.sh").is_file()


@pytest.mark.parametrize("command", ["down", "status"])
def test_down_or_status_without_hosts_points_at_what_up_started(command):
    """After `sgl-gen up FILE` (no --local needed), `sgl-gen down FILE` of a topology without
    hosts is told the command that stops what up started, not to run `up`."""
    r = run_cli(command, str(SLIME), "--total-gpus", "16")
    assert r.exit_code == 2, r.output
    assert "the topology has no hosts (cluster.hosts)" in r.stderr
    assert f"what `sgl-gen up` started on this machine: sgl-gen {command} FILE --local" \
        in r.stderr
    assert "`sgl-gen up` runs it on this machine" not in r.stderr
