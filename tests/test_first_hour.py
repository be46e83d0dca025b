"""What a new user hits in the first hour (issue "The first hour"), one test per item fixed."""

from __future__ import annotations

import pytest

from generator.cli import main
from tests.helpers import EXAMPLES, run_cli

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
