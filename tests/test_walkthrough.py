"""The README's walkthrough is a test: its shell commands, read from README.md (every ```bash
block before "## Commands"), run as written, in order, in a fresh directory that has the
repository's ``examples/``: install and render, up/curl/status/down on this machine, validate/
plan/render of a slime file, then that file bound to two SSH test hosts by ``--inventory hosts``
and deployed (rehearsal engine), its status read, and brought down.

What the harness adds is what a user's machine has and a README cannot know: the ``hosts`` file
names two of the SSH test hosts (tests/sshhosts.py; each with its own workdir, as namespaces
share one filesystem, and the bash supervisor, as they run no systemd), ``~/.ssh/config`` reaches
them (HOME is the test's), and the hosts' interpreter is the one running the tests (a
``--set runtime.python=...`` that the ``sgl-gen`` on PATH adds for a command given
``--inventory``). ``pip install -e .`` is not run (the suite runs against the installed
project) and neither is ``make test`` (this is it).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.helpers import REPO
from tests.sshhosts import SshHosts, available
from tests.tools import missing

pytestmark = pytest.mark.slow


def walkthrough() -> list[str]:
    """The commands of the README's opening ```bash blocks, continuation lines joined, comments
    and blank lines dropped."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    head = text[:text.index("\n## Commands")]
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", head, re.S):
        joined = re.sub(r"\\\n\s*", "", block)
        for line in joined.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()  # a trailing comment
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_the_walkthrough_is_read_from_the_readme():
    """The extraction itself: the README's steps, in order (not a copy: read from the file)."""
    cmds = walkthrough()
    assert cmds[0].startswith("pip install -e . && sgl-gen render examples/pd.yaml")
    assert "make test" in cmds
    verbs = [c.split()[1] for c in cmds if c.startswith("sgl-gen ")]
    assert verbs[:3] == ["up", "status", "down"]
    assert verbs[-4:] == ["plan", "deploy", "status", "down"]
    assert all("--inventory hosts" in c for c in cmds[-4:])


_WRAPPER = """#!{python}
import os, sys
real, python = {real!r}, {python!r}
args = sys.argv[1:]
if "--inventory" in args and args[:1] != ["--help"]:
    args += ["--set", "runtime.python=" + python]
os.execv(real, [real, *args])
"""


@pytest.fixture(scope="module")
def ssh_hosts():
    why = available()
    if why:
        missing(f"SSH test hosts: {why}")
    with SshHosts(2) as h:
        yield h


def test_the_readme_walkthrough_runs_as_written(tmp_path, ssh_hosts):
    real = shutil.which("sgl-gen")
    if real is None:
        missing("sgl-gen is not on PATH (install the project)")
    work = tmp_path / "work"
    work.mkdir()
    (work / "examples").symlink_to(REPO / "examples")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(ssh_hosts.ssh_config, home / ".ssh" / "config")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "sgl-gen"
    wrapper.write_text(_WRAPPER.format(python=sys.executable, real=real))
    wrapper.chmod(0o755)
    (work / "hosts").write_text("".join(
        f"gpu-{'ab'[i]} ansible_host={h.address} sgl_gen_workdir={tmp_path}/w{i} "
        "sgl_gen_supervisor=bash\n" for i, h in enumerate(ssh_hosts.hosts)))
    env = dict(os.environ, HOME=str(home), PATH=f"{bindir}:{os.environ['PATH']}")
    seen: list[tuple[str, subprocess.CompletedProcess[str]]] = []
    for cmd in walkthrough():
        if cmd == "make test":
            continue
        cmd = re.sub(r"^pip install -e \. && ", "", cmd)
        r = subprocess.run(["bash", "-c", cmd], cwd=work, env=env, capture_output=True,
                           text=True, timeout=300)
        seen.append((cmd, r))
        assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    out = dict(seen)
    first = next(r for c, r in seen if c.startswith("sgl-gen render examples/pd.yaml"))
    assert "# Deployment `pd`" in first.stdout  # the rendered README was printed
    curl = next(r for c, r in seen if c.startswith("curl "))
    assert json.loads(curl.stdout)["meta_info"]["finish_reason"]
    local_status = next(r for c, r in seen if c == "sgl-gen status examples/pd.yaml --local")
    assert local_status.stdout.count(" running ") == 6, local_status.stdout  # 5 engines, router
    render = next(r for c, r in seen if c.startswith("sgl-gen render   sglang_pd.yaml"))
    assert "are placeholders" in render.stderr
    plan = next(r for c, r in seen if c.startswith("sgl-gen plan   sglang_pd.yaml"))
    assert "placeholder" not in plan.stderr
    assert ssh_hosts.hosts[0].address in plan.stdout and ssh_hosts.hosts[1].address in plan.stdout
    deploy = next(r for c, r in seen if c.startswith("sgl-gen deploy sglang_pd.yaml"))
    assert f"http://{ssh_hosts.hosts[0].address}:30000" in deploy.stdout, deploy.stdout
    status = next(r for c, r in seen if c.startswith("sgl-gen status sglang_pd.yaml"))
    rows = [line.split() for line in status.stdout.splitlines()[1:]]
    assert len(rows) == 6 and all("running" in row for row in rows), status.stdout
    down = [r for c, r in seen if c.startswith("sgl-gen down   sglang_pd.yaml")][0]
    assert "stopped 6 unit(s)" in down.stdout
    assert len(out) == len(seen)
