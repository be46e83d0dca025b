"""Container start overhead (root; podman): the same rehearsal engine started N times by the
host's python3 and by ``podman run`` of the local test image with the flags sgl-gen's unit scripts
give it (--rm --init --network host --ipc host), timed from the launch to its first 200 on
/health; then stopped (SIGTERM to the host process, ``podman stop`` to the container).
Prints each launcher's median and the difference::

    python tests/bench_containers.py [--runs 5]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.compile.catalog import catalog_path  # noqa: E402
from tests import containerimage  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_health(port: int, deadline: float) -> float:
    started = time.monotonic()
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return time.monotonic() - started
        except OSError:
            time.sleep(0.01)
    raise TimeoutError(f"no /health on {port}")


def engine_argv(lib: Path, port: int) -> list[str]:
    return [str(lib / "rehearsal.py"), "--catalog", str(lib / "sglang-0.5.23.json"),
            "--model-path", "/models/bench", "--host", "127.0.0.1", "--port", str(port)]


def run_host(lib: Path) -> float:
    port = _free_port()
    t0 = time.monotonic()
    p = subprocess.Popen(["python3", *engine_argv(lib, port)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        _wait_health(port, t0 + 60)
        return time.monotonic() - t0
    finally:
        p.terminate()
        p.wait(timeout=30)


def _ulimits() -> list[str]:
    """The limits the unit scripts pass (templates/bash/container-run.sh.j2): the hard limits,
    processes capped at pid_max."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    nproc = pid_max if nproc == resource.RLIM_INFINITY or nproc > pid_max else nproc
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


def run_container(lib: Path, image: str, name: str) -> float:
    port = _free_port()
    t0 = time.monotonic()
    p = subprocess.Popen(["podman", "run", "--rm", "--init", "--name", name, "--network", "host",
                          "--ipc", "host", *_ulimits(), "-v", f"{lib}:{lib}:ro", image, "python3",
                          *engine_argv(lib, port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_health(port, t0 + 120)
        return time.monotonic() - t0
    finally:
        subprocess.run(["podman", "stop", "-t", "10", name], capture_output=True, timeout=60)
        p.wait(timeout=60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    why = containerimage.unavailable()
    if why:
        print(f"bench_containers: {why}", file=sys.stderr)
        return 2
    image = containerimage.image()
    with tempfile.TemporaryDirectory(prefix="sgl-gen-bench-") as tmp:
        lib = Path(tmp)
        shutil.copy(REPO / "generator" / "rehearsal.py", lib / "rehearsal.py")
        shutil.copy(catalog_path("0.5.23"), lib / "sglang-0.5.23.json")
        run_host(lib)  # warm the page cache for both
        host = [run_host(lib) for _ in range(args.runs)]
        cont = [run_container(lib, image, f"sgl-gen-bench-{i}") for i in range(args.runs)]
    mh, mc = statistics.median(host), statistics.median(cont)
    print(f"host python3 -> /health: median {mh:.3f} s over {args.runs} "
          f"(min {min(host):.3f}, max {max(host):.3f})")
    print(f"podman run   -> /health: median {mc:.3f} s over {args.runs} "
          f"(min {min(cont):.3f}, max {max(cont):.3f})")
    print(f"container start overhead: {mc - mh:+.3f} s per unit ({mc / mh:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
