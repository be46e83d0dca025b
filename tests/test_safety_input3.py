"""Issue 13, red-team findings F5, F6 and F15 on input: a secret given on the command line or in
the file is never echoed in a message, surrogate escapes are characters or positioned errors
(never a traceback in render), and a huge list is refused while it is read, with at most
``errors.MAX_SHOWN`` errors listed. Each test failed on the code before the fix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from generator import errors
from generator.compile import loader
from generator.compile.loader import parse_text
from generator.errors import TopologyError
from tests.helpers import REPO, plan_of, run_cli, write_topo

# (getattr: so that this file also runs, and fails, on the code before the fix)
MAX_SHOWN = getattr(errors, "MAX_SHOWN", 100)
MAX_ITEMS = getattr(loader, "MAX_ITEMS", 4096)

BASE = """\
deployment: {name: rt, hf_checkpoint: /models/m, total_gpus: 2}
cluster: {gpus_per_node: 2}
sglang:
  - name: actor
    server_groups:
      - {worker_type: regular, num_gpus: 2, num_gpus_per_engine: 1, port: 45100, overrides: {}}
"""


def sgl_gen(*args: str | bytes, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
    """The real CLI in a subprocess: real argv bytes (not UTF-8 ones too), real stderr."""
    return subprocess.run([sys.executable, "-m", "generator.cli", *args], capture_output=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def assert_clean_failure(r: subprocess.CompletedProcess[bytes], *secrets: str) -> str:
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 1, err
    assert "Traceback" not in err, err
    for s in secrets:
        assert s not in err and s not in r.stdout.decode("utf-8", "replace"), err
    return err


# -- F5: secrets in messages ---------------------------------------------------------------------


def test_set_values_of_credentials_are_shown_as_stars(tmp_path):
    p = write_topo(tmp_path, BASE)
    r = sgl_gen("validate", str(p),
                "--set", "sglang[0].server_groups[0].overrides.api_key=sk-LIVE-SECRET-1",
                "--set", "runtime.env.HF_TOKEN=hf_SECRET2",
                "--set", "router.args.api_key=sk-SECRET3",
                "--set", "sglang[0].router.args.control_plane_api_keys=SECRET7")
    err = assert_clean_failure(r, "SECRET")
    for option in ("--set sglang[0].server_groups[0].overrides.api_key=***: ",
                   "--set runtime.env.HF_TOKEN=***: ", "--set router.args.api_key=***: "):
        assert option in err, err


def test_file_and_cli_disagreeing_names_neither_secret(tmp_path):
    p = write_topo(tmp_path, BASE.replace("cluster:", "runtime: {env: {HF_TOKEN: hf_FILESECRET}}\n"
                                                      "cluster:"))
    r = sgl_gen("validate", str(p), "--set", "runtime.env.HF_TOKEN=hf_CLISECRET",
                "--set", "deployment.hf_checkpoint=https://u:SECRET4@hub.example/m")
    err = assert_clean_failure(r, "SECRET")
    assert ("runtime.env.HF_TOKEN: the file says *** but --set runtime.env.HF_TOKEN=*** says ***"
            in err), err
    # a URL's user name and password are masked, its host is still named
    assert ("deployment.hf_checkpoint: the file says '/models/m' but --set "
            "deployment.hf_checkpoint=https://***@hub.example/m says 'https://***@hub.example/m'"
            in err), err
    r = sgl_gen("validate", str(p), "--hf-checkpoint", "https://u:SECRET5@hub.example/m")
    assert "--hf-checkpoint https://***@hub.example/m says" in assert_clean_failure(r, "SECRET")


def test_a_file_value_quoted_in_a_message_masks_userinfo_before_it_is_shortened(tmp_path):
    # describe() cuts a long value at 60 characters: the cut dropped the '@', so a
    # mask applied to the finished line no longer saw a URL and printed the password's start
    url = "https://user:SECRET" + "x" * 80 + "@hub.example/m\\n"
    p = write_topo(tmp_path, BASE.replace("hf_checkpoint: /models/m", f'hf_checkpoint: "{url}"'))
    err = assert_clean_failure(sgl_gen("validate", str(p)), "SECRET", "user:")
    assert "deployment.hf_checkpoint: 'https://***@hub.example/m\\n' is not allowed" in err, err


def test_a_set_without_equals_naming_a_credential_is_not_echoed(tmp_path):
    p = write_topo(tmp_path, BASE)
    r = sgl_gen("validate", str(p), "--set", "runtime.env.HF_TOKEN:hf_SECRET6")
    err = r.stderr.decode()
    assert r.returncode == 2 and "SECRET" not in err and "expected PATH=VALUE" in err, err


# -- F6: surrogates ------------------------------------------------------------------------------


def test_a_surrogate_pair_escape_is_the_character_and_renders(tmp_path):
    # what json.dumps(ensure_ascii=True) writes for an emoji; PyYAML keeps the two halves
    p = write_topo(tmp_path, BASE.replace("overrides: {}",
                                          'overrides: {served_model_name: "e\\ud83d\\ude00"}'))
    argv = plan_of(p).models[0].engines[0].argv
    assert argv[argv.index("--served-model-name") + 1] == "e\U0001f600"
    r = run_cli("render", str(p), "-o", str(tmp_path / "out"))
    assert r.exit_code == 0, r.output
    script = next((tmp_path / "out" / "rt" / "hosts").glob("*/bin/engine-*.sh")).read_bytes()
    assert "e\U0001f600".encode() in script
    plan = json.loads((tmp_path / "out" / "rt" / "plan.json").read_text(encoding="utf-8"))
    assert "e\U0001f600" in plan["models"][0]["engines"][0]["argv"]


def test_lone_surrogates_are_refused_at_their_escape(tmp_path):
    text = BASE.replace("hf_checkpoint: /models/m", 'hf_checkpoint: "/m\\udc00"').replace(
        "overrides: {}", 'overrides: {"k\\ud800x": 1, served_model_name: "a\\\\udc00\\udfff"}')
    p = write_topo(tmp_path, text)
    err = assert_clean_failure(sgl_gen("validate", str(p)))
    lines = err.splitlines()
    assert lines[0] == (
        f"{p}:1:42: deployment.hf_checkpoint: \\udc00 is a lone low surrogate, not a character: "
        "it cannot be written to a file or passed to a process (hint: a character beyond U+FFFF "
        "is written as its pair (\\ud83d\\ude00) or as \\U0001f600)"), err
    col = text.splitlines()[5].index("\\ud800") + 1
    assert lines[1].startswith(f"{p}:6:{col}: sglang[0].server_groups[0].overrides: \\ud800 is a "
                               "lone high surrogate"), err
    # "\\\\udc00" is a backslash and text, not an escape: the position is the \udfff escape
    col = text.splitlines()[5].index("\\udfff") + 1
    assert lines[2].startswith(f"{p}:6:{col}: sglang[0].server_groups[0].overrides."
                               "served_model_name: \\udfff is a lone low surrogate"), err
    assert len(lines) == 3, err
    # plan and render refuse it the same way (they used to raise UnicodeEncodeError)
    for cmd in ("plan", "render"):
        assert_clean_failure(sgl_gen(cmd, str(p), "-o", str(tmp_path / "o")) if cmd == "render"
                             else sgl_gen(cmd, str(p), "--json"))
    assert not (tmp_path / "o").exists()


def test_keys_are_compared_as_characters():
    try:
        parse_text('a: {"\\ud83d\\ude00": 1, "\U0001f600": 2}\n', "t.yaml")
    except TopologyError as exc:
        assert exc.lines() == ["t.yaml:1:24: a.\U0001f600: duplicate key '\U0001f600' (first "
                               "defined on line 1) (hint: YAML would silently keep only the "
                               "last one)"]
    else:
        raise AssertionError("a key written twice was accepted")


def test_set_values_with_surrogates_never_crash(tmp_path):
    p = write_topo(tmp_path, BASE)
    path = "sglang[0].server_groups[0].overrides.served_model_name"
    err = assert_clean_failure(sgl_gen("validate", str(p), "--set", f'{path}="\\udfff"'))
    assert f'--set {path}="\\udfff": {path}: \\udfff is a lone low surrogate' in err, err
    # a command-line byte that is not UTF-8 reaches Python as a lone surrogate (surrogateescape)
    for args in ((b"--set", b"deployment.name=a\xffb"), (b"--hf-checkpoint", b"/m\xff")):
        err = assert_clean_failure(sgl_gen("validate", str(p), *args))
        assert "byte 0xff is not valid UTF-8 (hint: give the value as UTF-8 text)" in err, err
    r = sgl_gen("validate", str(p), "--set", f'{path}="\\ud83d\\ude00"')
    assert r.returncode == 0, r.stderr
    r = sgl_gen("validate", os.fsencode(tmp_path) + b"/missing\xff.yaml")
    assert r.returncode == 1 and b"missing\\udcff.yaml: no such file" in r.stderr, r.stderr


# -- F15: large input ----------------------------------------------------------------------------


def test_a_huge_list_is_refused_while_it_is_read(tmp_path):
    # 300,000 items took 43 s and 480 MB (900,000: over a minute, 930 MB), one error per item
    p = tmp_path / "big.yaml"
    p.write_text("sglang: [" + ",".join(["1"] * 300_000) + "]\n")
    start = time.monotonic()
    r = sgl_gen("validate", str(p), timeout=60)
    took = time.monotonic() - start
    err = assert_clean_failure(r)
    assert err.splitlines() == [
        f"{p}:1:9: sglang: list has more than {MAX_ITEMS:,} items (item {MAX_ITEMS + 1:,} is at "
        f"1:{2 * MAX_ITEMS + 10}) (hint: no topology needs this many: the longest list is "
        f"cluster.hosts, at most {MAX_ITEMS:,})"], err
    assert took < 30, took  # generous on a shared machine: it takes about a second


def test_a_huge_mapping_is_refused_with_its_path(tmp_path):
    env = ", ".join(f"V{i}: x" for i in range(MAX_ITEMS + 5))
    p = write_topo(tmp_path, BASE + f"runtime:\n  env: {{{env}}}\n")
    err = assert_clean_failure(sgl_gen("validate", str(p)))
    assert err.startswith(f"{p}:8:8: runtime.env: mapping has more than {MAX_ITEMS:,} keys"), err


def test_errors_past_the_first_hundred_are_counted_not_listed(tmp_path):
    p = tmp_path / "many.yaml"
    p.write_text("sglang: [" + ",".join(["1"] * MAX_ITEMS) + "]\n")
    err = assert_clean_failure(sgl_gen("validate", str(p)))
    lines = err.splitlines()
    assert len(lines) == MAX_SHOWN + 1, err
    assert all(line.startswith(f"{p}:1:") for line in lines), err
    assert all(": must be a mapping, got integer 1" in line for line in lines[:-1]), err
    # the schema check stops after 1,000 problems; the last line says how many more there are
    assert lines[-1].endswith(": ... and 901 more errors from here on (only the first "
                              f"{MAX_SHOWN} are listed)"), lines[-1]
