"""Supervision benchmark (root; four real systemd hosts, tests/systemdhosts.py): examples/ssh-4hosts.yaml
with the rehearsal engine, deployed under systemd and under the bash launcher on the same hosts,
in one run. Prints: deploy and no-op redeploy time for each supervisor, the time from SIGKILL of
an engine's main process until its router lists it healthy again (systemd restarts it; under bash
nothing does), and the time from powering a host off until its router lists its workers healthy
again after boot.

    python tests/bench_supervise.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import systemdhosts  # noqa: E402
from tests.helpers import generate  # noqa: E402
from tests.systemdhosts import SystemdHosts, python_binds, wait_for  # noqa: E402
from tests.test_supervise_systemd import CACHE, DEP, ROUTERS, Fleet, all_healthy, example_text  # noqa: E402, E501


def _timed(fn) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def _deploy(fleet: Fleet, *extra: str) -> None:
    r = fleet.cli("deploy", "--timeout", "120", *extra)
    assert r.exit_code == 0, r.output


LOST: list[tuple[int, int]] = []  # (failed, sent) through the router, per SIGKILL
ENGINE = f"http://{systemdhosts.SUBNET}.{systemdhosts.FIRST_HOST + 3}:31000"


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _serves(url: str) -> bool:
    try:
        return bool(generate(url)["engine_id"] == "judge-regular-0")
    except OSError:
        return False


def _kill_to_serving(fleet: Fleet, pid: str, timeout: float) -> tuple[float | None, float | None]:
    """SIGKILL an engine's main process; seconds until a new one answers /health, and until it
    answers a /generate (None: not within ``timeout``)."""
    stop, seen = threading.Event(), {"ok": 0, "failed": 0}

    def loop() -> None:  # requests through the engine's router meanwhile
        while not stop.is_set():
            try:
                generate(ROUTERS["judge"])
                seen["ok"] += 1
            except Exception:  # noqa: BLE001 - every failure counts
                seen["failed"] += 1
            time.sleep(0.05)
    t = threading.Thread(target=loop)
    t.start()
    t0 = time.monotonic()
    fleet.sh("node-d", f"kill -KILL {pid}")
    wait_for("the engine to go", lambda: not _health(ENGINE), timeout=10, interval=0.02)
    got: list[float | None] = []
    for probe in (lambda: _health(ENGINE), lambda: _serves(ENGINE)):
        try:
            wait_for("serving again", probe, timeout=max(0.1, timeout - (time.monotonic() - t0)),
                     interval=0.05)
            got.append(time.monotonic() - t0)
        except AssertionError:
            got.append(None)
    time.sleep(2)
    stop.set()
    t.join()
    LOST.append((seen["failed"], seen["ok"] + seen["failed"]))
    return got[0], got[1]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3, help="SIGKILL and reboot samples")
    args = ap.parse_args()
    why = systemdhosts.available()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    rootfs = CACHE / f"systemd-rootfs-{systemdhosts.rootfs_cache_key()}"
    systemdhosts.build_rootfs(rootfs)
    with SystemdHosts(4, rootfs=rootfs, binds=python_binds()) as hosts, \
            tempfile.TemporaryDirectory() as tmp:
        topo = Path(tmp) / "topo.yaml"
        topo.write_text(example_text())
        sd = Fleet(hosts, topo)
        bash_root = "/var/lib/sgl-gen-bash"
        bash = Fleet(hosts, topo, "runtime.supervisor=bash", f"runtime.workdir={bash_root}")
        rows = []
        t_sd = _timed(lambda: _deploy(sd))
        t_sd_noop = _timed(lambda: _deploy(sd))
        kills = [_kill_to_serving(sd, sd.show("node-d", "engine-judge-regular-0", "MainPID"), 60)
                 for _ in range(args.runs)]
        reboots = []
        node = sd.host("node-d")
        for _ in range(args.runs):
            t0 = time.monotonic()
            hosts.poweroff(node)
            hosts.boot(node)
            wait_for("healthy after boot", lambda: all_healthy(ROUTERS["judge"], 2),
                     timeout=120, interval=0.05)
            reboots.append(time.monotonic() - t0)
        assert sd.cli("down").exit_code == 0
        t_bash = _timed(lambda: _deploy(bash))
        t_bash_noop = _timed(lambda: _deploy(bash))
        pid = bash.sh("node-d", f"cut -d' ' -f1 {bash_root}/{DEP}/run/engine-judge-regular-0.pid")
        bash_kill = _kill_to_serving(bash, pid.strip(), 15)
        assert bash.cli("deploy", "--timeout", "120").exit_code == 0  # the killed one again
        t0 = time.monotonic()
        hosts.poweroff(node)
        hosts.boot(node)
        try:
            wait_for("healthy after boot", lambda: all_healthy(ROUTERS["judge"], 2),
                     timeout=20, interval=0.2)
            bash_reboot: float | None = time.monotonic() - t0
        except AssertionError:
            bash_reboot = None
        assert bash.cli("down").exit_code == 0
        rows.append(("deploy, 4 hosts, 9 units", f"{t_sd:.1f} s", f"{t_bash:.1f} s"))
        rows.append(("no-op redeploy", f"{t_sd_noop:.1f} s", f"{t_bash_noop:.1f} s"))
        for i, what in ((0, "answers /health"), (1, "answers /generate")):
            good = [k[i] for k in kills if k[i] is not None]
            rows.append((f"SIGKILL engine -> {what} again (median of {len(kills)})",
                         f"{statistics.median(good):.1f} s" if len(good) == len(kills)
                         else f"{len(kills) - len(good)} never",
                         f"{bash_kill[i]:.1f} s" if bash_kill[i] is not None else "never (15 s)"))
        rows.append((f"poweroff -> its router lists workers healthy after boot (median of "
                     f"{len(reboots)})", f"{statistics.median(reboots):.1f} s",
                     f"{bash_reboot:.1f} s" if bash_reboot is not None else "never (20 s)"))
    rows.append(("requests failed through its router meanwhile (per SIGKILL)",
                 " ".join(f"{f}/{n}" for f, n in LOST[:-1]), f"{LOST[-1][0]}/{LOST[-1][1]}"))
    w = max(len(r[0]) for r in rows)
    print(f"{'':{w}}  {'systemd':>10}  {'bash':>14}")
    for name, a, b in rows:
        print(f"{name:{w}}  {a:>10}  {b:>14}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
