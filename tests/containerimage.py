"""A local SGLang test image for podman, and podman set up on the SSH test hosts.

No registry is reachable, so the image is imported from a rootfs (``tar | podman import``):
the Debian rootfs the systemd test hosts boot (tests/systemd-rootfs.sh, built once and cached:
python3 and bash are what matter here), plus a layer with the real sglang-router 0.3.2
(``pip install --target``, cached beside it) and a stand-in ``sglang`` package that does nothing
but say its version (``python3 -c "import sglang; print(sglang.__version__)"``, what deploy's
preflight reads). The engines are the rehearsal engine from the deployment's own ``lib/``,
which the unit scripts mount read-only.

podman on this machine (../shared/DESIGN.md, "Test hosts that are real"):

* a ``containers.conf`` with ``default_ulimits`` under the sandbox's hard limits (podman's
  default nofile of 1048576 fails every ``run`` with "error setting rlimits") and runc (crun
  fails on this kernel's hybrid cgroups). The hosts' scripts run plain ``podman``, so it comes
  from the file, not from flags: ``ip netns exec`` bind-mounts /etc/netns/<ns>/X over /etc/X,
  so each test host gets /etc/netns/<ns>/containers/ (a copy of /etc/containers plus the conf)
  and its sshd is restarted to see it; the machine's own configuration is never changed.
* the cgroup hierarchies: ``ip netns exec`` mounts a fresh sysfs without them and runc
  refuses to create a container, so the hosts' sshd runs under tests/netns-cgroups.sh, which
  mounts them again.
* fake GPUs by CDI: /var/run/cdi/sgl-gen-test.yaml maps ``nvidia.com/gpu=N`` (N 0..7) to
  character devices made with mknod (/dev/null's numbers), which appear as /dev/nvidiaN in
  the container: the rehearsal engine lists them, so a test sees which GPUs a container got.

Storage is podman's default, shared by all test hosts (they share the filesystem): container
names are unique per deployment and unit, and every test removes what it labelled.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from tests import systemdhosts

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("SGLGEN_ROOTFS_CACHE", REPO / ".cache"))
ROUTER = "sglang-router==0.3.2"
REPOSITORY = "localhost/sglang-test"
SITE = "usr/lib/python3/dist-packages"  # Debian's python3 reads it
CONF = """\
# tests/containerimage.py: podman on the SSH test hosts
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
"""
CDI_SPEC = Path("/var/run/cdi/sgl-gen-test.yaml")
GPU_DIR = Path("/run/sgl-gen-test-gpus")
GPUS = 8


def unavailable() -> str | None:
    """Why the image or podman cannot be had here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("podman", "runc", "mmdebstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (run .ci/install-system.sh)"
    return None


def _run(*argv: str, timeout: float = 600, **kw: Any) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}: exit {r.returncode}: {r.stderr[-2000:]}")
    return r


def base_rootfs() -> Path:
    """The systemd test hosts' Debian rootfs (built once, cached)."""
    path = CACHE / f"systemd-rootfs-{systemdhosts.rootfs_cache_key()}"
    systemdhosts.build_rootfs(path)
    return path


def router_layer() -> Path:
    """sglang-router and its dependencies for the image's python3 (cached, built atomically)."""
    key = hashlib.sha256(f"{ROUTER} {sys.version_info[:2]}".encode()).hexdigest()[:16]
    dest = CACHE / f"container-router-{key}"
    if (dest / ".done").exists():
        return dest
    tmp = dest.with_name(dest.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.monotonic()
    _run(sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "--no-compile", "--target", str(tmp / SITE), ROUTER, timeout=900)
    (tmp / ".done").touch()
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    print(f"container router layer: built in {time.monotonic() - started:.1f} s", file=sys.stderr)
    return dest


def tag_of(version: str, variant: str = "") -> str:
    return f"{REPOSITORY}:{version}{'-' + variant if variant else ''}"


def image(version: str = "0.5.23", variant: str = "") -> str:
    """The image's tag in podman's storage, imported unless it is there already. ``variant``
    gives another image (another id) with the same SGLang version."""
    tag = tag_of(version, variant)
    if subprocess.run(["podman", "image", "exists", tag], timeout=60).returncode == 0:
        return tag
    base, router = base_rootfs(), router_layer()
    started = time.monotonic()
    errors = CACHE / f"podman-import-{os.getpid()}.err"
    with open(errors, "wb") as err_file:
        proc = subprocess.Popen(["podman", "import", "-", tag], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=err_file)
    assert proc.stdin is not None
    with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
        tar.add(str(base), arcname=".", filter=_not_mark)
        for path in sorted((router / "usr").rglob("*")):
            rel = path.relative_to(router).as_posix()
            if path.is_dir() and not path.is_symlink() and (base / rel).is_dir():
                continue  # the base has it: a second entry would be a duplicate
            tar.add(str(path), arcname=f"./{rel}", recursive=False)
        _add_text(tar, f"./{SITE}/sglang/__init__.py",
                  f'"""A stand-in: only the version of SGLang this test image claims."""\n'
                  f"__version__ = {version!r}\n")
        _add_text(tar, "./etc/sgl-gen-test-image", f"{version} {variant}\n")
    proc.stdin.close()
    rc = proc.wait(timeout=600)
    err = errors.read_text(errors="replace")
    errors.unlink()
    if rc != 0:
        raise RuntimeError(f"podman import {tag}: {err[-2000:]}")
    print(f"container image {tag}: imported in {time.monotonic() - started:.1f} s",
          file=sys.stderr)
    return tag


def _not_mark(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if info.name.endswith(systemdhosts.ROOTFS_MARK) else info


def _add_text(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def fake_gpus() -> None:
    """CDI devices nvidia.com/gpu=0..7 backed by mknod'ed character devices."""
    GPU_DIR.mkdir(parents=True, exist_ok=True)
    devices = []
    for g in range(GPUS):
        node = GPU_DIR / f"nvidia{g}"
        if not node.exists():
            # /dev/null's numbers: podman looks each device up in /dev (and warns on stderr
            # when it finds none); the container sees it as /dev/nvidiaN all the same
            os.mknod(node, 0o666 | 0o020000, os.makedev(1, 3))
        devices.append({"name": str(g), "containerEdits": {
            "deviceNodes": [{"path": f"/dev/nvidia{g}", "hostPath": str(node)}],
            "env": [f"NVIDIA_VISIBLE_DEVICES={g}"]}})
    CDI_SPEC.parent.mkdir(parents=True, exist_ok=True)
    CDI_SPEC.write_text(json.dumps({"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu",
                                    "devices": devices}, indent=1) + "\n")


CGROUPS = Path(__file__).with_name("netns-cgroups.sh")


def configure(hosts: Any) -> None:
    """podman's configuration in each SSH test host's namespace (its sshd restarted to see
    it): /etc/netns/<ns>/containers/ is the machine's /etc/containers plus CONF, and sshd runs
    under tests/netns-cgroups.sh (`ip netns exec` hides the cgroup hierarchies runc needs)."""
    for h in hosts.hosts:
        h.wrap = ("bash", str(CGROUPS))
        etc = Path("/etc/netns") / h.namespace / "containers"
        shutil.rmtree(etc, ignore_errors=True)
        if Path("/etc/containers").is_dir():
            shutil.copytree("/etc/containers", etc, symlinks=True)
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "containers.conf").write_text(CONF)
        hosts.restart_sshd(h)


def prepare(hosts: Any) -> str:
    """podman usable on every SSH test host, fake GPUs, and the image: its tag."""
    fake_gpus()
    configure(hosts)
    return image()


def containers(deployment: str) -> list[dict[str, str]]:
    """Every container labelled ``sgl-gen.deployment=<deployment>`` (any state): name, id,
    state."""
    out = _run("podman", "ps", "-a", "--no-trunc", "--filter",
               f"label=sgl-gen.deployment={deployment}", "--format",
               "{{.Names}}\t{{.ID}}\t{{.State}}", timeout=60).stdout
    rows = []
    for line in out.splitlines():
        name, full, state = (line.split("\t") + ["", "", ""])[:3]
        rows.append({"name": name, "id": full, "state": state})
    return sorted(rows, key=lambda r: r["name"])


def remove(deployment: str) -> None:
    """Remove every container labelled with ``deployment`` (a test's leftovers)."""
    for c in containers(deployment):
        subprocess.run(["podman", "rm", "-f", "-t", "0", c["name"]], capture_output=True,
                       timeout=120)
