"""Issue 13, hostile and careless input: smuggled flags, patterns that let a newline through,
hidden line breaks and control characters in the raw text, --set values, inputs that crashed or
hung, runtime.python, literal credentials, and the --total-gpus message. Each test failed on the
code before the fix."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from generator.compile.validate import topology_schema
from tests.helpers import REPO, errors_of, plan_of, run_cli, write_topo

HEAD = """\
deployment:
  hf_checkpoint: /m
  num_gpus_per_engine: 2
"""
ONE = """\
sglang:
  - name: actor
    server_groups: [{worker_type: regular, num_gpus: 2}]
"""


# -- 1. smuggled flags ---------------------------------------------------------------------------


def test_list_items_shaped_like_flags_are_refused_at_the_item(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
router:
  args: {cors_allowed_origins: [https://a.example, --worker-urls, "http://evil:1"]}
sglang:
  - name: actor
    router: {args: {request_id_headers: [x-id, --api-key, k]}}
    server_groups:
      - worker_type: regular
        num_gpus: 2
        overrides: {lora_paths: [adapter, --host, 0.0.0.0, --api-key, x]}
defaults:
  lora_target_modules: [q_proj, "-x"]
""")
    hint = ("(hint: a list item or value is passed to the process as its own word, so this one "
            "would be read as an option; set each option under its own key)")
    assert errors_of(p) == [
        f"{p}:5:52: router.args.cors_allowed_origins[1]: '--worker-urls' would be read as a "
        f"command-line flag by the sglang-router router {hint}",
        f"{p}:8:48: sglang[0].router.args.request_id_headers[1]: '--api-key' would be read as a "
        f"command-line flag by the sglang-router router {hint}",
        f"{p}:12:43: sglang[0].server_groups[0].overrides.lora_paths[1]: '--host' would be read "
        f"as a command-line flag by SGLang {hint}",
        f"{p}:12:60: sglang[0].server_groups[0].overrides.lora_paths[3]: '--api-key' would be "
        f"read as a command-line flag by SGLang {hint}",
        f"{p}:14:33: defaults.lora_target_modules[1]: '-x' would be read as a command-line flag "
        f"by SGLang {hint}",
    ]


def test_flag_shaped_scalars_are_refused_and_numbers_are_not(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
defaults: {served_model_name: --host, chat_template: "-1e3"}
router: {args: {request_id_headers: ["-", "-1", "-0.5", "-.5"]}}
sglang:
  - name: actor
    server_groups:
      - {worker_type: regular, num_gpus: 2, overrides: {model_path: --api-key}}
""")
    errs = [e for e in errors_of(p) if ": warning: " not in e]
    assert [e.split(": ")[1] for e in errs] == [
        "defaults.served_model_name", "defaults.chat_template",
        "sglang[0].server_groups[0].overrides.model_path"], errs
    assert errs[2].startswith(f"{p}:9:69: sglang[0].server_groups[0].overrides.model_path: "
                              "'--api-key' is not a model path: one line, not starting with '-'")
    # "-", negative numbers: argparse reads them as values; they arrive byte-exact
    p = write_topo(tmp_path, HEAD + """\
router: {args: {request_id_headers: ["-", "-1", "-0.5", "-.5"]}}
""" + ONE)
    argv = plan_of(p).models[0].router.argv
    i = argv.index("--request-id-headers")
    assert argv[i + 1:i + 5] == ("-", "-1", "-0.5", "-.5")


def _consumed_as_value(parser: argparse.ArgumentParser, flag: str, token: str) -> bool:
    """Does the real parser take ``token`` as the value of the list flag ``flag``?"""
    parser.exit_on_error = False
    try:
        ns, rest = parser.parse_known_args([flag, token])
    except (argparse.ArgumentError, SystemExit):
        return False
    dest = flag.lstrip("-").replace("-", "_")
    return getattr(ns, dest) == [token] and not rest


TOKENS = ["--host", "-x", "--", "-1e3", "-1", "-0.5", "-.5", "-", "x", "--api-key=x", "-1.5e3",
          "-0x10", "- x", "-1 2"]


def test_is_flag_shaped_agrees_with_the_real_router_parser_and_argparse():
    """The rule is argparse's: checked against the real sglang-router parser and a bare
    argparse parser of the Python running the tests (the strictest versions, 3.10-3.12, read
    ``-1e3`` as an option; is_flag_shaped refuses what any version could)."""
    from sglang_router.router_args import RouterArgs

    from generator.compile.credentials import is_flag_shaped

    router = argparse.ArgumentParser()
    RouterArgs.add_cli_args(router)
    bare = argparse.ArgumentParser()
    bare.add_argument("--items", nargs="*")
    for token in TOKENS:
        for parser, flag in ((router, "--cors-allowed-origins"), (bare, "--items")):
            if not _consumed_as_value(parser, flag, token):
                assert is_flag_shaped(token), (token, flag)
    # and what it lets through, the real parsers take as a value
    for token in ("-1", "-0.5", "-.5", "-", "x"):
        assert not is_flag_shaped(token)
        assert _consumed_as_value(router, "--cors-allowed-origins", token), token


# -- 2. patterns match the whole string ----------------------------------------------------------


@pytest.mark.parametrize("where, text, path", [
    ("name", 'sglang:\n  - name: "actor\\n"\n    server_groups: []\n', "sglang[0].name"),
    ("workdir", 'runtime: {workdir: "/usr/bin/id\\n"}\n' + ONE, "runtime.workdir"),
    ("env key", 'runtime: {env: {"FOO\\n": "1"}}\n' + ONE, "runtime.env"),
    ("partition", 'cluster: {slurm: {partition: "gpu\\n"}}\n' + ONE, "cluster.slurm.partition"),
    ("host address", 'cluster: {hosts: [{name: h, address: "10.0.0.1\\n"}]}\n' + ONE,
     "cluster.hosts[0].address"),
    ("secrets file", 'runtime: {secrets_env_file: "/etc/s.env\\n"}\n' + ONE,
     "runtime.secrets_env_file"),
    ("deployment name", 'deployment: {name: "x\\n"}\n' + ONE.replace("sglang:", "sglang:"),
     "deployment.name"),
])
def test_a_trailing_newline_does_not_pass_a_pattern(tmp_path, where, text, path):
    p = write_topo(tmp_path, text if text.startswith("deployment") else HEAD + text)
    errs = [e for e in errors_of(p) if f": {path}: " in e]
    assert len(errs) == 1, (where, errors_of(p))
    assert "is not allowed here" in errs[0] and "\\n" in errs[0]


def test_every_schema_pattern_is_anchored_and_refuses_line_breaks():
    """Anchored ^...$ both ends, so Python's full match is what ECMA-262 (editors) does."""
    import re

    patterns: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                patterns.append(node["pattern"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(topology_schema())
    assert len(patterns) >= 20
    for pat in patterns:
        assert pat.startswith("^") and pat.endswith("$"), pat
        for sample in ("a", "/a", "x"):
            for br in ("\n", "\r", "\u2028", "\u0085"):
                assert not re.fullmatch(pat, sample + br), (pat, sample + br)
                assert not re.fullmatch(pat, br + sample), (pat, br + sample)


# -- 3. raw text: hidden line breaks, control characters -----------------------------------------


def test_hidden_line_breaks_in_the_raw_text_are_refused_where_an_editor_shows_them(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text(HEAD + "# reviewed\u2028runtime: {python: /tmp/evil}\n" + ONE
                 + "# a\u2029b \u0085c\n# d\re\n", encoding="utf-8")
    r = run_cli("validate", str(p))
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        f"{p}:4:11: raw line separator U+2028: YAML reads it as a line break, grep, wc -l and "
        "code review tools do not (hint: remove it; inside a double-quoted string write it as "
        "the escape \\u2028)",
        f"{p}:8:4: raw paragraph separator U+2029: YAML reads it as a line break, grep, wc -l "
        "and code review tools do not (hint: remove it; inside a double-quoted string write it "
        "as the escape \\u2029)",
        f"{p}:8:7: raw next-line character U+0085: YAML reads it as a line break, grep, wc -l "
        "and code review tools do not (hint: remove it; inside a double-quoted string write it "
        "as the escape \\u0085)",
        f"{p}:9:4: a carriage return that does not end a CRLF line: YAML reads it as a line "
        "break, grep, wc -l and code review tools do not (hint: use LF or CRLF line endings)",
    ]


@pytest.mark.parametrize("char, shown", [
    ("\x00", "raw NUL character (U+0000): a NUL cannot be passed to a process"),
    ("\x01", "raw control character U+0001 cannot be written in a topology"),
    ("\x1b", "raw control character U+001B cannot be written in a topology"),
    ("\x7f", "raw control character U+007F cannot be written in a topology"),
    ("\x80", "raw control character U+0080 cannot be written in a topology"),
    ("\ufffe", "raw control character U+FFFE cannot be written in a topology"),
    ("\u202e", "raw bidirectional control character U+202E: it reorders how the line is "
               "displayed, so a review does not see the text that runs"),
])
def test_raw_control_characters_are_positioned_errors_in_every_command(tmp_path, char, shown):
    p = tmp_path / "t.yaml"
    p.write_text(HEAD + ONE.replace("actor", f"ac{char}tor"), encoding="utf-8")
    for args in (["validate", str(p)], ["plan", str(p)], ["render", str(p), "-o",
                                                          str(tmp_path / "o")],
                 ["import", "slime", str(p)], ["import", "skyrl", str(p)]):
        r = run_cli(*args)  # catch_exceptions=False: a traceback fails the test
        assert r.exit_code == 1, (args, r.output)
        (line,) = r.stderr.splitlines()
        assert line.startswith(f"{p}:5:13: {shown}"), (args, line)
    assert not (tmp_path / "o").exists()


def test_tabs_crlf_and_a_bom_keep_working(tmp_path):
    text = (HEAD + 'runtime: {env: {X: "a\tb"}}  # a\ttab\n' + ONE).replace("\n", "\r\n")
    p = tmp_path / "t.yaml"
    p.write_bytes(b"\xef\xbb\xbf" + text.encode())
    plan = plan_of(p)
    assert dict(plan.topology.runtime.env) == {"X": "a\tb"}
    # positions after a BOM and CR LF are still what an editor shows
    p.write_bytes(b"\xef\xbb\xbf" + text.replace("name: actor", "name: act\x01or").encode())
    (e,) = errors_of(p)
    assert e.startswith(f"{p}:6:14: raw control character U+0001")


# -- 4. --set values get the loader's checks -----------------------------------------------------


def test_set_values_get_the_same_checks_as_file_values(tmp_path):
    p = write_topo(tmp_path, HEAD + ONE)
    r = run_cli("validate", str(p), "--set", 'deployment.name="a\\0b"',
                "--set", "runtime.workdir=/srv\x01", "--set", "runtime.python=/a\u2028b",
                "--set", "runtime.env.X=a\nb", "--set", "runtime.env.Y=!!binary aGVsbG8=",
                "--set", "cluster.nodes=" + "9" * 5000, "--set", "defaults.context_length=.nan")
    assert r.exit_code == 1
    assert r.stderr.splitlines() == [
        "--set cluster.nodes=9999999999999999999999999999999999999999...(5,020 characters): "
        "cluster.nodes: integer of 5,000 characters is out of range (hint: integers are at "
        "most 9,223,372,036,854,775,807)",
        "--set defaults.context_length=.nan: defaults.context_length: NaN is not a valid value",
        '--set deployment.name="a\\0b": deployment.name: a NUL character cannot be passed to a '
        "process (hint: remove the \\0 escape)",
        "--set runtime.env.X=a\\nb: runtime.env.X: a raw line break or tab in a --set value "
        "(hint: write it as an escape inside double quotes: --set 'PATH=\"a\\nb\"')",
        "--set runtime.env.Y=!!binary aGVsbG8=: runtime.env.Y: unsupported YAML tag "
        "'tag:yaml.org,2002:binary' (hint: only plain strings, numbers, booleans and null are "
        "allowed)",
        "--set runtime.python=/a\\u2028b: runtime.python: raw line separator U+2028: YAML reads "
        "it as a line break, grep, wc -l and code review tools do not (hint: remove it; inside a "
        "double-quoted string write it as the escape \\u2028)",
        "--set runtime.workdir=/srv\\x01: runtime.workdir: raw control character U+0001 cannot "
        "be written in a topology (hint: remove it; inside a double-quoted string write it as "
        "the escape \\x01)",
    ]


def test_set_values_get_the_rules_too_positioned_at_the_option(tmp_path):
    p = write_topo(tmp_path, HEAD.replace("  hf_checkpoint: /m\n", "") + ONE)
    assert errors_of(p, "defaults.lora_paths=--host", "runtime.env.HF_TOKEN=hf_x",
                     "defaults.served_model_name=--api-key", hf_checkpoint="--x") == [
        "--hf-checkpoint --x: deployment.hf_checkpoint: '--x' is not allowed here: Model path "
        "or Hugging Face id: one line, not starting with '-'. (hint: a value starting with '-' "
        "would be read as a command-line flag)"]
    assert errors_of(p, "defaults.served_model_name=--api-key", "runtime.env.HF_TOKEN=hf_x",
                     hf_checkpoint="/m") == [
        "--set defaults.served_model_name=--api-key: defaults.served_model_name: '--api-key' "
        "would be read as a command-line flag by SGLang (hint: a list item or value is passed to "
        "the process as its own word, so this one would be read as an option; set each option "
        "under its own key)",
        "--set runtime.env.HF_TOKEN=***: runtime.env.HF_TOKEN: HF_TOKEN looks like a credential "
        "(its name ends in 'TOKEN'): a value written here is rendered into every script and "
        "unit (hint: put HF_TOKEN=... in runtime.secrets_env_file on the hosts (the scripts "
        "source it, the systemd units load it))"]


def test_set_keeps_yaml_scalars_and_dates_as_text(tmp_path):
    p = write_topo(tmp_path, HEAD + ONE)
    plan = plan_of(p, "runtime.env.A=2024-01-01", "runtime.env.B=0x10", "runtime.env.C=",
                   'runtime.env.D="a\\tb"', "cluster.gpus_per_node=4")
    assert dict(plan.topology.runtime.env) == {"A": "2024-01-01", "B": "16", "C": "",
                                               "D": "a\tb"}
    assert plan.topology.gpus_per_node == 4


# -- 5. crashes and hangs --------------------------------------------------------------------------


@pytest.mark.parametrize("old, new, want", [
    ("num_gpus: 2}", "num_gpus: " + "9" * 5000 + "}",
     "sglang[0].server_groups[0].num_gpus: integer of 5,000 characters is out of range"),
    ("num_gpus: 2}", "num_gpus: 2.0}",
     "sglang[0].server_groups[0].num_gpus: must be an integer, got number 2.0 (hint: write 2 "
     "without a decimal point)"),
    ("num_gpus: 2}", "num_gpus: 2, port: 40000.0}",
     "sglang[0].server_groups[0].port: must be an integer, got number 40000.0"),
    ("num_gpus_per_engine: 2", "num_gpus_per_engine: true",
     "deployment.num_gpus_per_engine: must be an integer, got boolean true"),
    ("num_gpus: 2}", "num_gpus: 1.0e+12}",
     "sglang[0].server_groups[0].num_gpus: must be an integer, got number 1000000000000.0"),
    ("num_gpus: 2}", "num_gpus: 1000000000000}",
     "sglang[0].server_groups[0].num_gpus: must be <= 262144, got 1000000000000"),
    ("num_gpus: 2}", "num_gpus: 1.0e+999}",
     "sglang[0].server_groups[0].num_gpus: infinity is not a valid value"),
])
def test_numbers_that_crashed_or_hung(tmp_path, old, new, want):
    p = write_topo(tmp_path, HEAD + ONE.replace(old, new) if "num_gpus_per_engine" not in old
                   else HEAD.replace(old, new) + ONE)
    errs = errors_of(p)
    assert all(e.startswith(f"{p}:") for e in errs) and any(want in e for e in errs), errs


@pytest.mark.parametrize("cluster, want", [
    ("gpus_per_node: 8.0", "cluster.gpus_per_node: must be an integer, got number 8.0"),
    ("gpus_per_node: 2000000000", "cluster.gpus_per_node: must be <= 64, got 2000000000"),
    ("nodes: 1.0e+9", "cluster.nodes: must be an integer, got number 1000000000.0"),
    ("nodes: 1000000000", "cluster.nodes: must be <= 4096, got 1000000000"),
])
def test_cluster_sizes_are_bounded(tmp_path, cluster, want):
    p = write_topo(tmp_path, HEAD + f"cluster: {{{cluster}}}\n" + ONE)
    errs = errors_of(p)  # a float also fails the maximum: both are said
    assert all(e.startswith(f"{p}:4:") for e in errs) and any(want in e for e in errs), errs


def test_bounds_in_the_schema_are_the_resolver_limits():
    from generator.compile.resolve import MAX_GPUS, MAX_GPUS_PER_NODE, MAX_NODES

    s = topology_schema()
    c = s["properties"]["cluster"]["properties"]
    assert c["gpus_per_node"]["maximum"] == MAX_GPUS_PER_NODE
    assert c["nodes"]["maximum"] == MAX_NODES == c["hosts"]["maxItems"]
    assert s["$defs"]["group"]["properties"]["num_gpus"]["maximum"] == MAX_GPUS
    assert s["properties"]["deployment"]["properties"]["total_gpus"]["maximum"] == MAX_GPUS


def test_the_sum_of_groups_is_bounded_too(tmp_path):
    p = write_topo(tmp_path, HEAD + "sglang:\n  - name: a\n    server_groups:\n"
                   + "      - {worker_type: regular, num_gpus: 262144}\n" * 3)
    (e,) = errors_of(p)
    assert e == (f"{p}:4:1: sglang: server groups use 786,432 GPUs; a topology describes at "
                 "most 262,144 (4,096 nodes of 64)")


def _cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, with a time limit and 1 GiB of address space (the old
    code read /dev/zero until MemoryError)."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    return subprocess.run([sys.executable, "-m", "generator.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, preexec_fn=limit)


def test_special_files_are_refused_not_waited_on_or_read_forever(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    loop = tmp_path / "loop.yaml"
    loop.symlink_to(tmp_path / "loop2.yaml")
    (tmp_path / "loop2.yaml").symlink_to(loop)
    cases = [(fifo, "is a FIFO (named pipe), not a regular file"),
             (Path("/dev/zero"), "is a character device, not a regular file"),
             (tmp_path, "is a directory, not a topology file"),
             (loop, "cannot read: Too many levels of symbolic links")]
    for path, want in cases:
        for cmd in (["validate"], ["import", "rlinf"], ["import", "skyrl"]):
            r = _cli(*cmd, str(path))
            assert r.returncode == (2 if path == tmp_path and cmd[0] == "import" else 1), \
                (path, cmd, r.stderr)
            if r.returncode == 1:
                assert r.stderr == f"{path}: {want}\n", (path, cmd)


def test_a_file_over_the_size_limit_is_refused_without_reading_it(tmp_path):
    from generator.compile.loader import MAX_BYTES, read_regular_file
    from generator.errors import TopologyError

    big = tmp_path / "big.yaml"
    with big.open("wb") as f:
        f.truncate(MAX_BYTES + 1)
    with pytest.raises(TopologyError) as exc:
        read_regular_file(big)
    assert exc.value.lines() == [f"{big}: file is 16,777,217 bytes; the limit is 16,777,216"]
    # a file that reports size 0 but has more (/proc) is cut at the limit, not read to the end
    with pytest.raises(TopologyError) as exc:
        read_regular_file("/proc/self/maps", limit=16)
    assert exc.value.lines() == ["/proc/self/maps: file is more than 16 bytes (the limit)"]


# -- 6. runtime.python: no shell expansion anywhere ----------------------------------------------


@pytest.mark.parametrize("python", ["$SGLGEN_ROOT/venv/bin/python", "~/venv/bin/python",
                                    "`which python3`", "venv/bin/python", "/opt/my venv/python",
                                    "-c", "python3 -u"])
def test_runtime_python_is_an_absolute_path_or_a_command_name(tmp_path, python):
    p = write_topo(tmp_path, HEAD + f"runtime: {{python: {json.dumps(python)}}}\n" + ONE)
    (e,) = errors_of(p)
    assert e.startswith(f"{p}:4:19: runtime.python: {python!r} is not allowed here: The "
                        "interpreter on the hosts: an absolute path (/opt/venv/bin/python) or a "
                        "command name on PATH (python3)."), e
    if "$" in python or "~" in python:
        assert e.endswith("(hint: sgl-gen expands no variables here: the scripts, the units and "
                          "deploy's probe run exactly this word; write the absolute path)")


def test_scripts_and_the_deploy_probe_run_the_same_interpreter_word(tmp_path):
    import shlex

    from generator.deploy.transport import agent_command as _py_cmd
    from generator.targets.render import render

    for python in ("/opt/venv-3.11/bin/python3.11", "python3", "/srv/sgl+gen/@x/bin/python"):
        p = write_topo(tmp_path, HEAD + f"runtime: {{python: {python}}}\n" + ONE)
        arts = render(plan_of(p), ("bash", "systemd"))
        script = arts["hosts/node0/bin/engine-actor-regular-0.sh"].content
        assert f"exec {shlex.quote(python)} -m sglang.launch_server" in script
        assert _py_cmd(python, "pass", {}).startswith(f"{shlex.quote(python)} -c ")


# -- 7. credentials written as literals ----------------------------------------------------------


def test_credential_environment_variables_are_refused(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
runtime:
  env:
    HF_TOKEN: hf_abc
    WANDB_API_KEY: w
    AWS_SECRET_ACCESS_KEY: a
    DB_PASSWORD: p
    my_secret: s
    PROXY: "http://u:pw@proxy:3128"
    SGLANG_MAX_TOKENS: "4096"
    TOKENIZERS_PARALLELISM: "false"
    AWS_ACCESS_KEY_ID: AKIA
    HF_TOKEN_EMPTY_KEY: ""
""" + ONE)
    errs = errors_of(p)
    assert [e.split(": ")[1] for e in errs] == [
        "runtime.env.HF_TOKEN", "runtime.env.WANDB_API_KEY", "runtime.env.AWS_SECRET_ACCESS_KEY",
        "runtime.env.DB_PASSWORD", "runtime.env.my_secret", "runtime.env.PROXY"]
    assert errs[0] == (
        f"{p}:6:15: runtime.env.HF_TOKEN: HF_TOKEN looks like a credential (its name ends in "
        "'TOKEN'): a value written here is rendered into every script and unit (hint: put "
        "HF_TOKEN=... in runtime.secrets_env_file on the hosts (the scripts source it, the "
        "systemd units load it))")
    assert errs[5] == (
        f"{p}:11:12: runtime.env.PROXY: a URL with a user name or password is a credential: a "
        "value written here is rendered into every script and unit (hint: put PROXY=... in "
        "runtime.secrets_env_file on the hosts)")


def test_urls_with_userinfo_are_refused_in_arguments(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
router:
  args: {jwt_jwks_uri: "https://:pw@idp/jwks", otlp_traces_endpoint: "http://u:pw@otel:4317"}
defaults:
  json_model_override_args: {"url": "https://TOKEN@host/x"}
sglang:
  - name: actor
    server_groups:
      - worker_type: regular
        num_gpus: 2
        overrides: {served_model_name: "s3://key:secret@bucket/m", max_total_tokens: 4096}
""")
    hint = ("(hint: write {env: NAME} for the whole argument and put NAME=... in "
            "runtime.secrets_env_file on the hosts)")
    msg = "a URL with a user name or password is a credential and must not be written in the " \
          "topology"
    assert errors_of(p) == [
        f"{p}:5:24: router.args.jwt_jwks_uri: {msg} {hint}",
        f"{p}:5:70: router.args.otlp_traces_endpoint: {msg} {hint}",
        f"{p}:7:37: defaults.json_model_override_args.url: {msg} {hint}",
        f"{p}:13:40: sglang[0].server_groups[0].overrides.served_model_name: {msg} {hint}",
    ]
    # {env: NAME} is the way, and a URL without userinfo is fine
    p = write_topo(tmp_path, HEAD + """\
router: {args: {redis_url: {env: REDIS_URL}, jwt_jwks_uri: "https://idp.example/jwks"}}
""" + ONE)
    argv = plan_of(p).models[0].router.argv
    assert argv[argv.index("--jwt-jwks-uri") + 1] == "https://idp.example/jwks"


def test_one_credential_rule_for_arguments_and_environment():
    from generator.compile.credentials import is_credential_name

    for name in ("HF_TOKEN", "SOME_TOKEN", "WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "api_key",
                 "admin_api_key", "ssl_keyfile_password", "tenant_api_key", "oracle_password",
                 "control_plane_api_keys", "mesh_tls_key", "client-secret", "DB_PASSWD"):
        assert is_credential_name(name), name
    for name in ("max_total_tokens", "max_prefill_tokens", "tokenizer_path", "tokenizer_mode",
                 "speculative_num_draft_tokens", "ssl_keyfile", "tls_key_path",
                 "TOKENIZERS_PARALLELISM", "AWS_ACCESS_KEY_ID", "NCCL_SOCKET_IFNAME"):
        assert not is_credential_name(name), name


def test_a_credential_argument_is_only_one_taking_a_string(tmp_path):
    """bucket_time_to_first_token ends in 'token' but is a list of floats: not a credential."""
    p = write_topo(tmp_path, HEAD + """\
defaults: {bucket_time_to_first_token: [0.1, 0.5], kt_max_deferred_experts_per_token: 2}
""" + ONE)
    argv = plan_of(p).models[0].engines[0].argv
    assert argv[argv.index("--bucket-time-to-first-token") + 1:][:2] == ("0.1", "0.5")


# -- 8. --total-gpus names the option and the groups ---------------------------------------------


def test_total_gpus_from_the_cli_names_the_option_and_the_groups(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: actor
    server_groups:
      - {worker_type: prefill, num_gpus: 8}
      - {worker_type: decode, num_gpus: 8}
""")
    r = run_cli("validate", str(p), "--total-gpus", "12")
    assert r.exit_code == 1
    assert r.stderr == (
        f"--total-gpus 12: deployment.total_gpus: server groups use 16 GPUs but total_gpus is "
        f"12; the groups are at {p}:4:1 (8 at 7:42 + 8 at 8:41) (hint: the sum of every "
        "group's num_gpus (placeholders included) must equal it)\n")
    r = run_cli("validate", str(p), "--nodes", "1")
    assert r.stderr == (f"--nodes 1: cluster.nodes: 1 node(s) of 8 GPUs have 8 GPUs but the "
                        f"server groups need 16; the groups are at {p}:4:1 (8 at 7:42 + 8 at "
                        "8:41)\n")


# -- messages stay one line --------------------------------------------------------------------


def test_a_value_echoed_in_a_message_cannot_break_the_line_or_drive_the_terminal(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: actor
    server_groups:
      - worker_type: regular
        num_gpus: 2
        overrides: {"mem_fraction\\nstatic\\u2028\\e[31m": 1}
""")
    r = run_cli("validate", str(p))
    assert r.exit_code == 1
    (line,) = r.stderr.splitlines()
    assert "\x1b" not in line and "\u2028" not in line
    assert "mem_fraction\\nstatic\\u2028\\x1b[31m" in line


def test_a_negative_float_in_exponent_form_is_passed_so_argparse_reads_it(tmp_path):
    """repr(-0.00001) is '-1e-05', which argparse before 3.13 reads as an option: the single
    value goes as --flag=-1e-05; in a list (no '=' possible) it is refused."""
    from generator.compile.catalog import load_catalog

    spec = load_catalog().get("mem_fraction_static")
    assert spec is not None and spec.to_argv(-0.00001) == ["--mem-fraction-static=-1e-05"]
    assert spec.to_argv(-0.5) == ["--mem-fraction-static", "-0.5"]
    parser = argparse.ArgumentParser()
    parser.add_argument("--mem-fraction-static", type=float)
    assert parser.parse_args(spec.to_argv(-0.00001)).mem_fraction_static == -0.00001
    p = write_topo(tmp_path, HEAD + "defaults: {bucket_time_to_first_token: [0.5, -0.00001]}\n"
                   + ONE)
    (e,) = errors_of(p)
    assert e.startswith(f"{p}:4:46: defaults.bucket_time_to_first_token[1]: -1e-05 (written "
                        "'-1e-05') would be read as a command-line flag by SGLang"), e


def test_a_cli_value_of_another_type_does_not_agree_with_the_file(tmp_path):
    """8.0 == 8 and True == 1 in Python: a --set 8.0 used to "agree" with the file's 8 and skip
    the integer check."""
    p = write_topo(tmp_path, HEAD + "cluster: {gpus_per_node: 8, nodes: 1}\n" + ONE)
    assert errors_of(p, "cluster.gpus_per_node=8.0", "cluster.nodes=true") == [
        f"{p}:4:26: cluster.gpus_per_node: the file says 8 but --set cluster.gpus_per_node=8.0 "
        "says 8.0 (hint: remove one of them: a CLI value never silently replaces a file value)",
        f"{p}:4:36: cluster.nodes: the file says 1 but --set cluster.nodes=true says true (hint: "
        "remove one of them: a CLI value never silently replaces a file value)"]
    plan_of(p, "cluster.gpus_per_node=8", nodes=1)  # the same value and type agree
