"""Rolling-deploy benchmark on real SSH hosts (tests/sshhosts.py: network namespaces, each with its
own address and sshd), the rehearsal engine and the real sglang-router.

The deployment: one model, ``bench``, of 16 regular 1-GPU engines (4 on each of 4 hosts) behind
one router, so that every max-unavailable setting is a different number of batches of one role.
Every engine takes ``SGLGEN_REHEARSAL_STARTUP_DELAY`` (5 s, standing for weight loading) to become
healthy and ``SGLGEN_REHEARSAL_REQUEST_DELAY`` (0.05 s, decoding time) to answer each request,
both set in ``runtime.env``. It is deployed once; then ``defaults.mem_fraction_static`` changes
(a new value each time, so that every engine must restart) and ``sgl-gen deploy --drain D`` rolls
it out with ``--max-unavailable 1``, ``4`` and ``50%``, and with ``--allow-downtime``, each under a
constant load through the router (tests/loadloop.py: threads sending one request after another,
no retries, each request with its own prompt so that the cache-aware router spreads them). After
each rollout every engine must serve the new value and the router must list all of them healthy.
Prints, per rollout: the number of batches (``rollout.batches`` of ``deploy --format json``;
computed as ceil(engines / batch size) and marked so when the output has none), the wall time of
the deploy, the ideal time batches x (startup delay + drain), their ratio, and the requests sent /
failed meanwhile with the window in which they failed. Then takes the deployment down.

Figures are printed, never asserted. Needs root and sshd: `make bench-rollout`, or

    python tests/bench_rollout.py [--quick] [--modes 1,4,50%,downtime] [--drain 1]
    python tests/bench_rollout.py --topology-only FILE   # write the topology, start nothing
"""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.loadloop import Load  # noqa: E402
from tests.sshhosts import FIRST_HOST, SUBNET, SshHosts, available  # noqa: E402

NAME = "bench-rollout"
MODEL = "bench"
DOWNTIME = "downtime"
DEFAULT_MODES = ("1", "4", "50%", DOWNTIME)
#: defaults.mem_fraction_static of the first deploy, then of each rollout in turn
MEM_FRACTIONS = (0.80, 0.81, 0.82, 0.83, 0.84, 0.85, 0.86, 0.87, 0.88)
_PERCENT = re.compile(r"([1-9][0-9]?|100)%")


# -- the benchmark's parameters -------------------------------------------------------------------


def mode(value: str) -> str:
    """One rollout of --modes: N (engines), P% or ``downtime`` (--allow-downtime)."""
    if value == DOWNTIME or _PERCENT.fullmatch(value) or (value.isdigit() and int(value) > 0):
        return value
    raise argparse.ArgumentTypeError(
        f"{value!r}: a rollout is a positive number of engines, a percentage 1%..100% or "
        f"{DOWNTIME!r} (--allow-downtime)")


def modes(value: str) -> list[str]:
    out = [mode(v.strip()) for v in value.split(",") if v.strip()]
    if not out:
        raise argparse.ArgumentTypeError("--modes needs at least one rollout")
    if len(out) > len(MEM_FRACTIONS) - 1:
        raise argparse.ArgumentTypeError(f"at most {len(MEM_FRACTIONS) - 1} rollouts")
    return out


def seconds(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not math.isfinite(x) or x < 0:
        raise argparse.ArgumentTypeError(f"{value!r}: seconds must be finite and >= 0")
    return x


def positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return int(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="2 hosts x 4 engines and a 2 s startup delay (unless given below)")
    ap.add_argument("--hosts", type=positive, help="SSH hosts (default 4, --quick 2)")
    ap.add_argument("--engines-per-host", type=positive,
                    help="1-GPU engines per host (default 4)")
    ap.add_argument("--startup-delay", type=seconds,
                    help="SGLGEN_REHEARSAL_STARTUP_DELAY, seconds (default 5, --quick 2)")
    ap.add_argument("--request-delay", type=seconds, default=0.05,
                    help="SGLGEN_REHEARSAL_REQUEST_DELAY, seconds (default 0.05)")
    ap.add_argument("--drain", type=seconds, default=1.0,
                    help="deploy --drain, seconds (default 1)")
    ap.add_argument("--modes", type=modes, default=list(DEFAULT_MODES),
                    help="rollouts in order: --max-unavailable values and/or 'downtime' "
                         "(--allow-downtime); default 1,4,50%%,downtime")
    ap.add_argument("--threads", type=positive, default=4,
                    help="load threads through the router (default 4)")
    ap.add_argument("--rate", type=float, default=None,
                    help="pace the load at this many requests/s in all (default: unpaced)")
    ap.add_argument("--timeout", type=positive, default=120, help="deploy --timeout (default 120)")
    ap.add_argument("--topology-only", type=Path, metavar="FILE",
                    help="write the first deploy's topology to FILE and exit (no hosts needed)")
    args = ap.parse_args(argv)
    if args.hosts is None:
        args.hosts = 2 if args.quick else 4
    if args.engines_per_host is None:
        args.engines_per_host = 4
    if args.startup_delay is None:
        args.startup_delay = 2.0 if args.quick else 5.0
    if args.rate is not None and not args.rate > 0:
        ap.error("--rate must be > 0")
    return args


# -- the deployment ---------------------------------------------------------------------------


def addresses(n: int) -> list[str]:
    """The addresses SshHosts(n) gives its hosts."""
    return [f"{SUBNET}.{FIRST_HOST + i}" for i in range(n)]


def topology(args: argparse.Namespace, hosts: list[str], workdir: Path, mem: float
             ) -> dict[str, Any]:
    """``hosts`` x engines_per_host regular 1-GPU engines of one model, one router."""
    engines = len(hosts) * args.engines_per_host
    return {
        "deployment": {"name": NAME, "hf_checkpoint": "/models/bench", "total_gpus": engines},
        "cluster": {"gpus_per_node": args.engines_per_host, "hosts": [
            {"name": f"node-{chr(ord('a') + i)}", "address": a, "user": "root",
             "workdir": str(workdir / f"w{i}")} for i, a in enumerate(hosts)]},
        # the SSH test hosts (tests/sshhosts.py) have no systemd: the bash launcher; runtime.env
        # reaches every engine (the rehearsal engine reads its delays from there)
        "runtime": {"python": sys.executable, "supervisor": "bash", "env": {
            "SGLGEN_REHEARSAL_STARTUP_DELAY": f"{args.startup_delay:g}",
            "SGLGEN_REHEARSAL_REQUEST_DELAY": f"{args.request_delay:g}"}},
        "defaults": {"mem_fraction_static": mem},
        "sglang": [{"name": MODEL, "model_path": "/models/bench", "update_weights": False,
                    "server_groups": [{"worker_type": "regular", "num_gpus": engines,
                                       "num_gpus_per_engine": 1}]}],
    }


def write_topology(path: Path, doc: dict[str, Any]) -> None:
    path.write_text("# tests/bench_rollout.py: the rolling-deploy benchmark's deployment\n"
                    + yaml.safe_dump(doc, sort_keys=False))


def label(m: str) -> str:
    return "--allow-downtime" if m == DOWNTIME else f"--max-unavailable {m}"


def deploy_flags(m: str, drain: float) -> list[str]:
    """The deploy options of one rollout."""
    if m == DOWNTIME:
        return ["--allow-downtime", "--drain", f"{drain:g}"]
    return ["--max-unavailable", m, "--drain", f"{drain:g}"]


def batch_size(m: str, engines: int) -> int:
    """Engines of the role restarted at once: N, or P% of the role's engines rounded down (at
    least 1); all of them with --allow-downtime."""
    if m == DOWNTIME:
        return engines
    pct = _PERCENT.fullmatch(m)
    return max(1, engines * int(pct.group(1)) // 100) if pct else int(m)


def batches(doc: dict[str, Any], m: str, engines: int) -> tuple[int, bool]:
    """(number of batches, whether deploy's JSON said so) for one rollout. --allow-downtime
    stops and starts everything at once: one batch (its JSON lists no rolling batches)."""
    if m == DOWNTIME:
        return 1, True
    rollout = doc.get("rollout")
    listed = rollout.get("batches") if isinstance(rollout, dict) else None
    if isinstance(listed, list):
        return len(listed), True
    return math.ceil(engines / batch_size(m, engines)), False


def honoured(doc: dict[str, Any], m: str, engines: int) -> None:
    """SystemExit unless deploy's JSON (where it says) rolled as asked: its mode, and no batch
    larger than the batch size."""
    rollout = doc.get("rollout")
    if not isinstance(rollout, dict):
        return
    want = "downtime" if m == DOWNTIME else "rolling"
    if rollout.get("mode", want) != want:
        raise SystemExit(f"deploy {label(m)}: rollout mode "
                         f"{rollout.get('mode')!r}, expected {want!r}")
    listed = rollout.get("batches")
    if m != DOWNTIME and isinstance(listed, list):
        sizes = [len(b) for b in listed]
        if sum(sizes) != engines or max(sizes, default=0) > batch_size(m, engines):
            raise SystemExit(f"deploy {label(m)}: batches of {sizes} engine(s) for "
                             f"{engines} engines, at most {batch_size(m, engines)} each")


def ideal(n_batches: int, startup: float, drain: float) -> float:
    return n_batches * (startup + drain)


# -- running it ------------------------------------------------------------------------------


def sgl_gen(*argv: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "generator.cli", *argv], cwd=REPO,
                       capture_output=True, text=True)
    secs = time.perf_counter() - t
    print(f"  {secs:6.2f}s  sgl-gen {' '.join(a for a in argv if not a.startswith('/'))}",
          file=sys.stderr, flush=True)
    return secs, r


def check(r: subprocess.CompletedProcess[str], what: str) -> None:
    if r.returncode != 0:
        raise SystemExit(f"{what} failed (exit {r.returncode}):\n{r.stdout[-3000:]}\n"
                         f"{r.stderr[-3000:]}")


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


@dataclass
class Row:
    mode: str
    batches: int
    from_json: bool
    wall: float
    ideal: float
    sent: int  # by the load, from before the deploy started until 0.5 s after it returned
    failed: int
    window: tuple[float, float] | None  # of the failures, seconds since the deploy started
    first_error: str | None


class Bench:
    def __init__(self, args: argparse.Namespace, hosts: SshHosts, tmp: Path) -> None:
        self.args, self.hosts, self.tmp = args, hosts, tmp
        self.topo = tmp / "topology.yaml"
        self.engines = args.hosts * args.engines_per_host

    def common(self) -> list[str]:
        return [str(self.topo), "--rehearse", "--ssh-config", str(self.hosts.ssh_config)]

    def write(self, mem: float) -> None:
        write_topology(self.topo, topology(self.args, self.hosts.addresses, self.tmp, mem))

    def plan(self) -> dict[str, Any]:
        _, r = sgl_gen("plan", str(self.topo), "--json")
        check(r, "sgl-gen plan")
        return dict(json.loads(r.stdout))

    def deploy(self, *flags: str) -> tuple[float, dict[str, Any]]:
        secs, r = sgl_gen("deploy", *self.common(), "--format", "json",
                          "--timeout", str(self.args.timeout), *flags)
        check(r, f"sgl-gen deploy {' '.join(flags)}")
        return secs, dict(json.loads(r.stdout))

    def converged(self, mem: float) -> None:
        """Every engine serves ``mem`` and the router lists all of them healthy."""
        plan = self.plan()
        (model,) = plan["models"]
        stale = [e["id"] for e in model["engines"]
                 if get_json(f"{e['url']}/server_info")["mem_fraction_static"] != mem]
        if stale:
            raise SystemExit(f"after the rollout, engines still without mem_fraction_static "
                             f"{mem}: {', '.join(stale)}")
        workers = get_json(f"{model['router']['url']}/workers").get("workers", [])
        healthy = sum(1 for w in workers if w.get("is_healthy"))
        if len(workers) != self.engines or healthy != self.engines:
            raise SystemExit(f"after the rollout the router lists {len(workers)} worker(s), "
                             f"{healthy} healthy; expected {self.engines}")

    def router(self) -> str:
        return str(self.plan()["models"][0]["router"]["url"])

    def rollout(self, m: str, mem: float) -> Row:
        self.write(mem)
        # (spread: distinct texts, so that the cache-aware router uses every engine)
        with Load({MODEL: self.router()}, rate=self.args.rate,
                  threads_per_router=self.args.threads, spread=True) as load:
            load.wait_ok(self.args.threads, timeout=30)
            t0 = time.monotonic()
            wall, doc = self.deploy(*deploy_flags(m, self.args.drain))
            time.sleep(0.5)  # the requests sent just after the deploy returned count too
        # (every request of the load counts: those before the deploy too, which all succeeded
        # unless something else is wrong)
        summary, fails = load.summary()[MODEL], load.failures(MODEL)
        self.converged(mem)
        honoured(doc, m, self.engines)
        n, from_json = batches(doc, m, self.engines)
        return Row(m, n, from_json, wall, ideal(n, self.args.startup_delay, self.args.drain),
                   summary["sent"], summary["failed"],
                   (fails[0].at - t0, fails[-1].at - t0) if fails else None,
                   fails[0].error if fails else None)

    def down(self, strict: bool = True) -> None:
        """Take the deployment down; ``strict=False`` (already failing): only report a
        failure, so that the first error is the one shown."""
        _, r = sgl_gen("down", *self.common())
        if not strict:
            if r.returncode != 0:
                print(f"sgl-gen down failed too (exit {r.returncode}): {r.stderr[-1000:]}",
                      file=sys.stderr)
            return
        check(r, "sgl-gen down")
        for h in self.hosts.hosts:  # nothing may be left behind
            listening = [line.split()[3] for line in self.hosts.listening(h)]
            if listening != [f"{h.address}:22"]:
                raise SystemExit(f"{h.address}: still listening after down: {listening}")


def describe(args: argparse.Namespace) -> str:
    engines = args.hosts * args.engines_per_host
    return (f"rollout benchmark: {engines} engines (one model, {args.engines_per_host} regular "
            f"1-GPU engines on each of {args.hosts} sshd hosts in network namespaces, one "
            f"sglang-router), rehearsal engines ready {args.startup_delay:g} s after a start and "
            f"answering each request in {args.request_delay:g} s; change: "
            f"defaults.mem_fraction_static (every engine restarts); deploy --drain "
            f"{args.drain:g}; load: {args.threads} thread(s) through the router, no retries, "
            "distinct prompts, "
            + (f"{args.rate:g} requests/s" if args.rate else "unpaced"))


def table(rows: list[Row], args: argparse.Namespace) -> str:
    head = ("rollout", "batches", "wall s", "ideal s", "wall/ideal", "sent", "failed",
            "failures from..to s")
    lines = [head]
    for r in rows:
        lines.append((label(r.mode), f"{r.batches}{'' if r.from_json else '*'}", f"{r.wall:.1f}",
                      f"{r.ideal:.1f}", f"{r.wall / r.ideal:.2f}" if r.ideal else "-",
                      str(r.sent), str(r.failed),
                      f"{r.window[0]:.1f}..{r.window[1]:.1f}" if r.window else "-"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    out = ["  " + "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                            for i, (c, w) in enumerate(zip(line, widths, strict=True)))
           for line in lines]
    out.append(f"  ideal = batches x (startup delay {args.startup_delay:g} s + drain "
               f"{args.drain:g} s); --allow-downtime restarts everything at once: 1 batch")
    if any(not r.from_json for r in rows):
        out.append("  * deploy --format json has no rollout.batches: computed as ceil(engines / "
                   "batch size), a percentage rounded down")
    for r in rows:
        if r.first_error:
            out.append(f"  first failure, {label(r.mode)}: {r.first_error}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.topology_only is not None:
        write_topology(args.topology_only, topology(args, addresses(args.hosts),
                                                    Path("/var/tmp/sgl-gen-bench-rollout"),
                                                    MEM_FRACTIONS[0]))
        print(f"wrote {args.topology_only}: {describe(args)}")
        return 0
    why = available()
    if why:
        print(f"cannot create the SSH test hosts: {why}", file=sys.stderr)
        return 2
    rows: list[Row] = []
    with SshHosts(args.hosts) as hosts, tempfile.TemporaryDirectory(
            prefix="sgl-gen-bench-rollout-") as tmp:
        b = Bench(args, hosts, Path(tmp))
        b.write(MEM_FRACTIONS[0])
        try:
            first, _ = b.deploy()
            b.converged(MEM_FRACTIONS[0])
            print(f"  first deploy: {first:.1f}s", file=sys.stderr)
            for i, m in enumerate(args.modes, 1):
                rows.append(b.rollout(m, MEM_FRACTIONS[i]))
        except BaseException:
            b.down(strict=False)
            raise
        b.down()
    print(describe(args))
    print(table(rows, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
