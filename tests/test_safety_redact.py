"""Issue 13 (red-team F8, F12): log redaction is one implementation, and container settings are
rendered or reported, never dropped.

- generator/redact.py masks every credential form a log writes (list items, URL user info
  without a password, header and bytes forms), by the one credential rule of
  generator/compile/credentials.py; the Slurm job prints a failed unit's log tail through the same file,
  shipped in slurm/lib/ with the rule bundled, so the two cannot drift: one table of cases
  drives the module, the shipped file run on its own, and the sbatch's function.
- apptainer on Slurm gets every ``runtime.container.mounts`` entry as its own ``--bind``,
  byte-exact (the generated functions run with a stub ``apptainer`` that prints its argv).
- bash and systemd artifacts ignore ``runtime.container``: render, plan, up and deploy say so,
  positioned at the field.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from generator.compile.credentials import is_credential_name
from generator.redact import redact
from generator.targets.render import render
from generator.write import write_tree
from tests.helpers import plan_of, run_cli, write_topo
from tests.test_slurm import TOPO as SLURM_E2E
from tests.test_slurm import _jobs as _slurm_jobs
from tests.test_slurm import cluster

__all__ = ["cluster"]  # the real Slurm cluster fixture of tests/test_slurm.py

#: (log line, what sgl-gen may print of it): the one table for every redaction path
CASES = [
    # red-team F12
    ("control_plane_api_keys=['k1', 'k2']", "control_plane_api_keys=['***', '***']"),
    ("ServerArgs(control_plane_api_keys=[\"k1\", 'k2', b'k3'], port=3)",
     "ServerArgs(control_plane_api_keys=[\"***\", '***', b'***'], port=3)"),
    ("--control-plane-api-keys k1 k2 --port 3", "--control-plane-api-keys *** *** --port 3"),
    ("fetch https://tok@host/m failed", "fetch https://***@host/m failed"),
    ("mesh_tls_key='-----BEGIN KEY-----'", "mesh_tls_key='***'"),
    ("x-api-key: sk-abc", "x-api-key: ***"),
    ("api_key=b'sk'", "api_key=b'***'"),
    ("Authorization: Bearer sk", "Authorization: Bearer ***"),
    ("-H 'Authorization: Basic dXNlcjpwdw==' http://h/", "-H 'Authorization: Basic ***' http://h/"),
    ('{"Authorization": "Bearer sk"}', '{"Authorization": "***"}'),
    ("redis://:pw@cache", "redis://:***@cache"),
    ("HF_TOKEN=hf_5", "HF_TOKEN=***"),
    # credential names by the rule of generator/compile/credentials.py (not a list kept here)
    ('{"hfApiKey": "v1", "OPENAIAPIKEY": "v2"}', '{"hfApiKey": "***", "OPENAIAPIKEY": "***"}'),
    ("AUTH_TOKEN_2=v DB_PASS=v GITHUB_PAT=v", "AUTH_TOKEN_2=*** DB_PASS=*** GITHUB_PAT=***"),
    ("oracle_password: \"p w\"", "oracle_password: \"***\""),
    # the forms the sbatch's sed handled, and SGLang's server_args line
    ("server_args=ServerArgs(model_path='/m', api_key='sk-1 2', admin_api_key=None, port=3)",
     "server_args=ServerArgs(model_path='/m', api_key='***', admin_api_key=None, port=3)"),
    ("--api-key sk-abc --port 3", "--api-key *** --port 3"),
    ("  --api-key sk-abc \\", "  --api-key *** \\"),
    ('{"api_key": "sk-x", "x_password": "pw"}', '{"api_key": "***", "x_password": "***"}'),
    ("--ssl-keyfile-password=pw2 tail", "--ssl-keyfile-password=*** tail"),
    ("api_key='it\\'s' port=1", "api_key='***' port=1"),
    ("dsn postgres://u:pw@db:5432/x", "dsn postgres://u:***@db:5432/x"),
    ("redis://cache/0?password=pw3", "redis://cache/0?password=***"),
    ("api_key='cut off at the end", "api_key='***"),
    # nothing to hide
    ("api_key=None admin_api_key=None", "api_key=None admin_api_key=None"),
    ("max_new_tokens=16 skip_tokenizer_init=False PATH=/usr/bin tokenizer_path='/t'",
     "max_new_tokens=16 skip_tokenizer_init=False PATH=/usr/bin tokenizer_path='/t'"),
    ("GET http://10.0.0.1:31000/health -> 200 key value",
     "GET http://10.0.0.1:31000/health -> 200 key value"),
]
SECRETS = ("k1", "k2", "k3", "tok", "sk", "hf_5", "pw", "v1", "v2", "dXNlcjpwdw")

RT_SLURM = """
deployment: {name: rt, hf_checkpoint: /models/m, total_gpus: 2}
cluster: {gpus_per_node: 2, slurm: {partition: gpu}}
runtime: {python: PYTHON}
sglang:
  - name: actor
    server_groups:
      - {worker_type: regular, num_gpus: 2, num_gpus_per_engine: 1, port: 45100, overrides: {}}
"""


def _shipped(tmp_path: Path) -> tuple[Path, str]:
    """Render a Slurm topology; the directory of its slurm/ and the sbatch text."""
    plan = plan_of(write_topo(tmp_path, RT_SLURM.replace("PYTHON", sys.executable)))
    out = tmp_path / "out"
    write_tree(out, render(plan, ("slurm",)))
    return out / "slurm", (out / "slurm" / "rt.sbatch").read_text()


@pytest.mark.parametrize(("line", "want"), CASES)
def test_redact_module(line, want):
    assert redact(line) == want


def test_the_table_hides_its_secrets():  # a wrong "want" would make the table pass a leak
    for _, want in CASES:
        for secret in SECRETS:
            assert not re.search(rf"(?<![\w-]){re.escape(secret)}(?![\w-])", want), (want, secret)


#: lines that made an earlier version loop forever (a stray ')' in a '{' value) or take
#: quadratic time (a long run of letters before no '://')
SLOW = ["api_key={) --api-key a b]", "api_key=[None ) 'k']", "https://" + "a" * 50_000,
        "api_key=" + "[" * 20_000, "--api-key " + "x " * 30_000, "a=" * 50_000]


def test_redact_ends_quickly_on_hostile_lines():
    code = ("import json, sys; from generator.redact import redact; "
            "print(json.dumps([redact(x) for x in json.load(sys.stdin)]))")
    started = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], input=json.dumps(SLOW), capture_output=True,
                       text=True, timeout=30, check=True, cwd=Path(__file__).parent.parent)
    assert time.monotonic() - started < 10
    out = json.loads(r.stdout)
    assert out[0] == "api_key={) *** *** ***]"  # an unclosed value: all of it is masked
    assert out[1] == "api_key=[None ) '***']"
    assert out[2] == SLOW[2] and out[5] == SLOW[5]


def test_shipped_redact_runs_alone_and_agrees_with_the_module(tmp_path):
    """slurm/lib/redact.py runs with a bare interpreter (-I, no sgl-gen importable, another
    directory) and prints exactly what generator/redact.py does for every case."""
    slurm, _ = _shipped(tmp_path)
    lib = slurm / "lib" / "redact.py"
    assert not re.search(r"^\s*(from generator|import generator)", lib.read_text(), re.M)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = subprocess.run([sys.executable, "-I", str(lib)], input="".join(x + "\n" for x, _ in CASES),
                       capture_output=True, text=True, cwd=elsewhere, check=True)
    assert r.stdout.splitlines() == [want for _, want in CASES]


def test_shipped_rule_is_the_resolve_rule(tmp_path):
    slurm, _ = _shipped(tmp_path)
    names = ["api_key", "admin_api_key", "ssl_keyfile_password", "control_plane_api_keys",
             "mesh_tls_key", "HF_TOKEN", "hfApiKey", "HfToken", "OPENAIAPIKEY", "AUTH_TOKEN_2",
             "DB_PASS", "DB_PWD", "CLIENT_SECRET_VALUE", "GITHUB_PAT", "HF_AUTH",
             "max_total_tokens", "tokenizer_path", "PWD", "hockey", "AWS_ACCESS_KEY_ID",
             "bucket_time_to_first_token", "x-api-key", "port"]
    code = ("import json, runpy, sys; g = runpy.run_path(sys.argv[1]); "
            "print(json.dumps([g['is_credential_name'](n) for n in sys.argv[2:]]))")
    r = subprocess.run([sys.executable, "-I", "-c", code, str(slurm / "lib" / "redact.py"),
                        *names], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == str([is_credential_name(n) for n in names]).replace(
        "True", "true").replace("False", "false")


def _tail(lib: Path, log: Path) -> subprocess.CompletedProcess[str]:
    """What a failed unit's tail goes through in the job: the shipped lib/sgljob.py."""
    return subprocess.run([sys.executable, str(lib / "sgljob.py"), "tail", str(log)],
                          capture_output=True, text=True, check=True)


def test_sbatch_prints_a_log_tail_through_the_shipped_module(tmp_path):
    """The job's log tail (what a failed unit shows) masks every case as the module does,
    shows `***` (the README's word), and only the last 30 lines."""
    slurm, text = _shipped(tmp_path)
    assert "sed -E" not in text and "<redacted>" not in text
    log = tmp_path / "unit-0.log"
    lines = [f"early {i} api_key='old-secret'" for i in range(5)] + [x for x, _ in CASES]
    log.write_text("".join(x + "\n" for x in lines))
    r = _tail(slurm / "lib", log)
    assert r.stdout.splitlines() == [redact(x) for x in lines[-30:]]
    assert r.stdout.splitlines()[-len(CASES):] == [want for _, want in CASES]


def test_sbatch_withholds_a_tail_it_cannot_redact(tmp_path):
    slurm, _ = _shipped(tmp_path)
    log = tmp_path / "unit-0.log"
    log.write_text("api_key='sk-LIVE'\n")
    lib = tmp_path / "lib-without-redact"
    lib.mkdir()
    shutil.copy(slurm / "lib" / "sgljob.py", lib / "sgljob.py")  # redact.py is missing
    r = _tail(lib, log)
    assert "sk-LIVE" not in r.stdout + r.stderr
    assert r.stdout == f"sgl-gen: (log tail withheld: it could not be redacted; read {log} itself)\n"


def test_a_failed_slurm_job_shows_its_tail_redacted(cluster, tmp_path):
    """On a real cluster: an engine that logs credentials and exits ends the job; the job output
    shows its tail through slurm/lib/redact.py (found beside the submitted file), masked."""
    never = SLURM_E2E.replace('time: "00:30:00"}', 'time: "00:30:00", restart: never}')
    assert never != SLURM_E2E
    topo = write_topo(tmp_path, never)
    plan = plan_of(topo)
    out = tmp_path / "out"
    write_tree(out / plan.name, render(plan, ("slurm",), rehearse=True))
    sbatch = out / plan.name / "slurm" / f"{plan.name}.sbatch"
    text = sbatch.read_text()
    func = text.index("sgl_engine__judge__regular__1() {")
    leak = ("echo \"server_args=ServerArgs(api_key='sk-LIVE-1', control_plane_api_keys=['k-A',"
            " 'k-B']) Authorization: Bearer sk-LIVE-2 redis://:pw-LIVE-3@cache HF_TOKEN=hf_LIVE4\""
            "; exit 3\n  exec")
    broken = text[:func] + text[func:].replace("  exec", "  " + leak, 1)
    assert broken != text
    sbatch.write_text(broken)
    submit = tmp_path / "submit"
    submit.mkdir()
    r = subprocess.run(["sbatch", "--parsable", str(sbatch)], cwd=submit, env=cluster.env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 90
    while any(line.split()[0] == job for line in _slurm_jobs(cluster)):
        assert time.monotonic() < deadline
        time.sleep(1)
    log = (submit / f"sgl-slurm-e2e-{job}.out").read_text()
    assert ("sgl-gen: engine-judge-regular-1 exited (exit 3; restart: never); last lines of its "
            "log:") in log
    assert ("server_args=ServerArgs(api_key='***', control_plane_api_keys=['***', '***']) "
            "Authorization: Bearer *** redis://:***@cache HF_TOKEN=***") in log
    for secret in ("sk-LIVE-1", "k-A", "k-B", "sk-LIVE-2", "pw-LIVE-3", "hf_LIVE4"):
        assert secret not in log
    assert "withheld" not in log


# ---------------------------------------------------------------------------------------------
# runtime.container

APPTAINER = """
deployment: {name: rt, hf_checkpoint: /models/m, total_gpus: 2}
cluster: {gpus_per_node: 2, slurm: {partition: gpu}}
runtime:
  container: {kind: apptainer, image: "/img/sglang $(id) it's.sif",
              mounts: ["/data dir/it's $(x):/m", "/etc/x:/y:ro", "/a\\\\b:/c"]}
sglang:
  - name: actor
    server_groups:
      - {worker_type: regular, num_gpus: 2, num_gpus_per_engine: 1, port: 45100, overrides: {}}
"""
MOUNTS = ["/data dir/it's $(x):/m", "/etc/x:/y:ro", "/a\\b:/c"]
IMAGE = "/img/sglang $(id) it's.sif"


def _run_func(text: str, func: str, tmp_path: Path) -> list[str]:
    """Run one generated function as its srun task does, with a stub apptainer that prints
    its argv (NUL-separated)."""
    stub = tmp_path / "bin"
    stub.mkdir(exist_ok=True)
    (stub / "apptainer").write_text('#!/bin/sh\nprintf "%s\\0" "$@"\n')
    (stub / "apptainer").chmod(0o755)
    start = text.index(f"{func}() {{")
    body = text[start:text.index("\n}\n", start) + 3]
    env = {**os.environ, "PATH": f"{stub}:{os.environ['PATH']}", "SGL_ADDR_0": "10.1.2.3",
           "SGLGEN_LOG_DIR": str(tmp_path / "logs"), "SLURM_PROCID": "0"}
    r = subprocess.run(["bash", "-c", f"{body}\n{func}"], capture_output=True, env=env,
                       check=True)
    return r.stdout.decode().split("\0")[:-1]


def test_apptainer_binds_every_mount_byte_exact(tmp_path):
    plan = plan_of(write_topo(tmp_path, APPTAINER))
    assert plan.topology.runtime.container.mounts == tuple(MOUNTS)
    text = render(plan, ("slurm",))["slurm/rt.sbatch"].content
    binds = [x for m in MOUNTS for x in ("--bind", m)]
    engine = _run_func(text, "sgl_engine__actor__regular__0", tmp_path)
    assert engine[:len(binds) + 5] == ["exec", "--nv", *binds, IMAGE, "python3", "-m"]
    assert engine[len(binds) + 5:len(binds) + 8] == ["sglang.launch_server", "--model-path",
                                                     "/models/m"]
    router = _run_func(text, "sgl_router__actor", tmp_path)
    assert router[:len(binds) + 5] == ["exec", *binds, IMAGE, "python3", "-m",
                                       "sglang_router.launch_router"]


def test_apptainer_without_mounts_has_no_bind(tmp_path):
    plan = plan_of(write_topo(tmp_path, APPTAINER.replace(
        """,
              mounts: ["/data dir/it's $(x):/m", "/etc/x:/y:ro", "/a\\\\b:/c"]}""", "}")))
    text = render(plan, ("slurm",))["slurm/rt.sbatch"].content
    assert "--bind" not in text
    assert _run_func(text, "sgl_engine__actor__regular__0", tmp_path)[:5] == [
        "exec", "--nv", IMAGE, "python3", "-m"]


@pytest.mark.parametrize("kind", ["pyxis", "apptainer"])
@pytest.mark.parametrize(("args", "ignored"), [
    ((), "bash and systemd"), (("--target", "bash"), "bash"),
    (("--target", "systemd,slurm"), "systemd"), (("--target", "slurm"), None)])
def test_render_says_bash_and_systemd_ignore_the_container(tmp_path, kind, args, ignored):
    topo = write_topo(tmp_path, APPTAINER.replace("apptainer", kind).replace(
        """,
              mounts: ["/data dir/it's $(x):/m", "/etc/x:/y:ro", "/a\\\\b:/c"]}""", "}"))
    r = run_cli("render", str(topo), "-o", str(tmp_path / "out"), *args)
    assert r.exit_code == 0, r.stderr
    warning = (f"{topo}:4:14: warning: runtime.container: the {ignored} artifacts do not run the "
               f"{kind} container: they start runtime.python (python3) on the host itself; only "
               "the Slurm target runs the container (hint: use kind: docker or kind: podman for "
               "the hosts' units, or use only --target slurm)")
    if ignored is None:
        assert "runtime.container" not in r.stderr
    else:
        assert warning in r.stderr.splitlines()


@pytest.mark.parametrize("kind", ["docker", "podman"])
@pytest.mark.parametrize(("args", "warned"), [
    ((), True), (("--target", "slurm"), True), (("--target", "bash,slurm"), True),
    (("--target", "bash,systemd"), False)])
def test_render_says_slurm_ignores_a_host_container(tmp_path, kind, args, warned):
    topo = write_topo(tmp_path, APPTAINER.replace("apptainer", kind).replace(
        """,
              mounts: ["/data dir/it's $(x):/m", "/etc/x:/y:ro", "/a\\b:/c"]}""", "}"))
    r = run_cli("render", str(topo), "-o", str(tmp_path / "out"), *args)
    assert r.exit_code == 0, r.stderr
    warning = (f"{topo}:4:14: warning: runtime.container: the Slurm job does not run the {kind} "
               "container: its steps start runtime.python (python3) on the nodes; "
               f"{kind} runs the units of the bash and systemd targets (deploy over SSH) (hint: "
               "for Slurm, use kind: pyxis or kind: apptainer)")
    if warned:
        assert warning in r.stderr.splitlines()
        sbatch = next((tmp_path / "out").rglob("*.sbatch")).read_text()
        assert f"{kind} run" not in sbatch and "--container-image" not in sbatch
    else:
        assert "the Slurm job does not run" not in r.stderr, r.stderr


def test_plan_and_deploy_say_it_too(tmp_path):
    topo = write_topo(tmp_path, APPTAINER.replace(
        "cluster: {gpus_per_node: 2, slurm: {partition: gpu}}",
        "cluster: {gpus_per_node: 2, hosts: [{name: n0, address: 192.0.2.1}]}"))
    want = "warning: runtime.container: the bash and systemd artifacts do not run the apptainer"
    r = run_cli("plan", str(topo))
    assert r.exit_code == 0 and want in r.stderr, r.stderr
    r = run_cli("deploy", str(topo), "--dry-run", "--connect-timeout", "0.2",
                "--known-hosts", str(tmp_path / "known_hosts"))
    assert want in r.stderr, r.stderr


def test_no_container_no_warning(tmp_path):
    topo = write_topo(tmp_path, RT_SLURM.replace("PYTHON", "python3"))
    for args in (("plan", str(topo)), ("render", str(topo), "-o", str(tmp_path / "o"))):
        r = run_cli(*args)
        assert r.exit_code == 0 and "warning" not in r.stderr, r.stderr
