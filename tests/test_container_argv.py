"""The `docker run` / `podman run` argv of the golden container examples, as each real client's
own `run --help` says it parses: the rendered scripts run by bash against a recording client
(tests/test_containers_render.py), each argv then checked option by option (tests/dockerargs.py).
docker's GPU flags cannot run here (no NVIDIA runtime): this is what proves them well-formed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests import dockerargs
from tests.helpers import EXAMPLES, plan_of
from tests.test_containers_render import FAKE
from tests.tools import need_tool

REPO = Path(__file__).resolve().parent.parent


def _argvs(tmp_path: Path, example: str, kind: str) -> dict[str, list[str]]:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / kind).write_text(FAKE)
    (fake / kind).chmod(0o755)
    state = tmp_path / "state"
    state.mkdir()
    out: dict[str, list[str]] = {}
    for script in sorted((REPO / "out" / example / "hosts").glob("*/bin/*.sh")):
        if f"RUNTIME={kind}\n" not in script.read_text():
            continue  # sgl-gen-await.sh, a unit of a host without a container
        (state / "calls").unlink(missing_ok=True)
        env = {"PATH": f"{fake}:{os.environ['PATH']}", "FAKE_STATE": str(state),
               "SGLGEN_ROOT": str(tmp_path / script.parent.parent.name),
               "SGLGEN_SUPERVISOR": "systemd", "JUDGE_API_KEY": "k"}
        r = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, (script, r.stderr)
        calls = [json.loads(x) for x in (state / "calls").read_text().splitlines()]
        runs = [c for c in calls if c[1:2] == ["run"]]
        if runs:
            out[f"{script.parent.parent.name}/{script.stem}"] = runs[0]
    return out


@pytest.mark.parametrize(("example", "kind"), [("ssh-docker", "docker"),
                                               ("ssh-podman", "podman")])
def test_every_unit_argv_parses_as_meant(tmp_path, example, kind):
    need_tool(kind)
    plan = plan_of(EXAMPLES / f"{example}.yaml")
    argvs = _argvs(tmp_path, example, kind)
    gpus = {f"{p.host}/engine-{e.id}": p.gpus for m in plan.models for e in m.engines
            for p in e.placements}
    containerized = {f"{n.host}/{u}" for n in plan.nodes if n.container
                     for u in [k.split("/", 1)[1] for k in gpus if k.startswith(n.host + "/")]
                     + [f"router-{m.name}" for m in plan.models if m.router.host == n.host]}
    assert set(argvs) == containerized
    for unit, argv in argvs.items():
        opts, image, command = dockerargs.check(kind, argv)
        node = next(n for n in plan.nodes if n.host == unit.split("/")[0])
        assert node.container is not None and image == node.container.image
        assert command[:2] in (["python3", "-m"], ["inside", "python3"]), command
        got = dict(opts)
        assert got["--name"] == f"sgl-{plan.name}-{unit.split('/')[1]}"
        assert got["--network"] == "host" and got["--ipc"] == "host"
        assert ("--rm", None) in opts and ("--init", None) in opts
        want = gpus.get(unit, ())
        if kind == "docker":
            given = [v for k, v in opts if k == "--gpus"]
            assert given == ([f'"device={",".join(map(str, want))}"'] if want else [])
        else:
            given = [v for k, v in opts if k == "--device"]
            assert given == [f"nvidia.com/gpu={g}" for g in want]
        assert [v for k, v in opts if k in ("-e", "--env")] == []


def test_the_parser_refuses_what_the_client_would(tmp_path):
    need_tool("docker")
    with pytest.raises(ValueError, match="unknown option '--no-such-flag'"):
        dockerargs.check("docker", ["docker", "run", "--no-such-flag", "img"])
    with pytest.raises(ValueError, match="--name needs a value"):
        dockerargs.check("docker", ["docker", "run", "--name"])
    opts, image, cmd = dockerargs.check("docker", ["docker", "run", "--rm", "-v", "/a:/b",
                                                   "--gpus=all", "img", "python3", "-V"])
    assert opts == [("--rm", None), ("-v", "/a:/b"), ("--gpus", "all")]
    assert (image, cmd) == ("img", ["python3", "-V"])
