"""A real multi-node Slurm cluster on this machine (root): munge, slurmctld in the root network
namespace, and one ``slurmd -N nX`` per node, each in its own network namespace with its own
address, GPUs as gres backed by mknod'ed character devices. Everything lives under one directory
and is torn down by :meth:`SlurmCluster.stop`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SUBNET = "10.77.0"
BRIDGE = "sglbr0"
HOSTS_MARK = "# sgl-gen test slurm cluster"
# Only one cluster can run on the machine at a time (bridge, netns names, ports are fixed):
# start() holds an exclusive flock on this file until stop().
LOCK_FILE = Path("/run/lock/sgl-gen-slurm.lock")


def _run(*cmd: str, check: bool = True,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, env=env)


class SlurmCluster:
    def __init__(self, root: Path, nodes: int = 3, gpus: int = 8, cpus: int = 16,
                 mem_mb: int = 16000, task_plugin: str = "task/none",
                 proctrack: str = "proctrack/cgroup", extra_conf: str = ""):
        """``cpus``/``mem_mb``/``gpus`` are what each node declares (bookkeeping only: the
        machine has 2 real cores and 24 GB). ``task_plugin`` "task/affinity" or
        "task/cgroup,task/affinity" binds steps to CPUs; with more declared CPUs than real ones
        the binding folds onto the real CPUs, so use ``cpus=2`` to see distinct masks.
        proctrack/cgroup (cgroup v1) kills a step's orphans when its task dies, as at real sites;
        proctrack/linuxproc leaves them and srun hangs 60 s on their open stdout.
        ``extra_conf`` is appended to slurm.conf."""
        self.root, self.n, self.gpus, self.cpus = root, nodes, gpus, cpus
        self.mem_mb, self.task_plugin, self.proctrack = mem_mb, task_plugin, proctrack
        self.extra_conf = extra_conf
        self._lock: int | None = None
        self.names = [f"sgn{i + 1}" for i in range(nodes)]
        self.addrs = [f"{SUBNET}.{11 + i}" for i in range(nodes)]
        self.ctl_addr = f"{SUBNET}.1"
        self.conf = root / "slurm.conf"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    # -- network -------------------------------------------------------------------------------
    def _net_up(self) -> None:
        _run("ip", "link", "add", BRIDGE, "type", "bridge", check=False)
        _run("ip", "addr", "add", f"{self.ctl_addr}/24", "dev", BRIDGE, check=False)
        _run("ip", "link", "set", BRIDGE, "up")
        for i, (name, addr) in enumerate(zip(self.names, self.addrs, strict=True)):
            ns = f"sgl-{name}"
            _run("ip", "netns", "add", ns, check=False)
            host_if, ns_if = f"sglv{i}h", f"sglv{i}n"
            _run("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, check=False)
            _run("ip", "link", "set", host_if, "master", BRIDGE)
            _run("ip", "link", "set", host_if, "up")
            _run("ip", "link", "set", ns_if, "netns", ns, check=False)
            _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{addr}/24", "dev", ns_if,
                 check=False)
            _run("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
            _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            _run("ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", self.ctl_addr,
                 check=False)
        hosts = Path("/etc/hosts").read_text()
        lines = [f"{a} {n} {HOSTS_MARK}" for n, a in zip(self.names, self.addrs, strict=True)]
        lines.append(f"{self.ctl_addr} sgl-slurmctl {HOSTS_MARK}")
        kept = [line for line in hosts.splitlines() if HOSTS_MARK not in line]
        Path("/etc/hosts").write_text("\n".join(kept + lines) + "\n")

    def _net_down(self) -> None:
        for i, name in enumerate(self.names):
            _run("ip", "netns", "del", f"sgl-{name}", check=False)
            _run("ip", "link", "del", f"sglv{i}h", check=False)
        _run("ip", "link", "del", BRIDGE, check=False)
        hosts = Path("/etc/hosts").read_text()
        Path("/etc/hosts").write_text(
            "".join(line + "\n" for line in hosts.splitlines() if HOSTS_MARK not in line))

    # -- daemons -------------------------------------------------------------------------------
    def _write_conf(self) -> None:
        r = self.root
        for d in ("state", "log", "dev", *(f"spool/{n}" for n in self.names)):
            (r / d).mkdir(parents=True, exist_ok=True)
        for g in range(self.gpus):
            dev = r / "dev" / f"nvidia{g}"
            if not dev.exists():
                os.mknod(dev, 0o666 | 0o020000, os.makedev(195, g))
        nodes = ",".join(self.names)
        node_hw = f"CPUs={self.cpus} RealMemory={self.mem_mb} Gres=gpu:{self.gpus}"
        self.conf.write_text(f"""\
ClusterName=sglgen
SlurmctldPort=6917
SlurmdPort=6918
SlurmctldHost={os.uname().nodename.split(".")[0]}({self.ctl_addr})
MailProg=/bin/true
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd-%n.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType={self.proctrack}
TaskPlugin={self.task_plugin}
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
GresTypes=gpu
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=5
NodeName={nodes} NodeAddr={",".join(self.addrs)} {node_hw} State=UNKNOWN
PartitionName=gpu Nodes={nodes} Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
{self.extra_conf}""")
        # cgroup v1 is what this machine mounts; slurmd (built for multiple slurmd) uses
        # /sys/fs/cgroup/<ctrl>/slurm_<node>/..., so the three nodes do not collide.
        constrain = "yes" if "task/cgroup" in self.task_plugin else "no"
        (r / "cgroup.conf").write_text(
            f"CgroupPlugin=cgroup/v1\nConstrainCores={constrain}\nConstrainRAMSpace=no\n"
            "ConstrainDevices=no\n")
        (r / "gres.conf").write_text(
            f"AutoDetect=off\nNodeName={nodes} Name=gpu File={r}/dev/nvidia[0-{self.gpus - 1}]\n")

    def _take_lock(self) -> None:
        if self._lock is not None:
            return
        LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # blocks while another process runs a cluster
        except BaseException:
            os.close(fd)
            raise
        self._lock = fd

    def _release_lock(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = None

    def start(self, timeout: float = 60) -> None:
        self._take_lock()
        self.stop_daemons()
        self._net_up()
        self._write_conf()
        Path("/run/munge").mkdir(exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        if _run("munge", "-n", check=False).returncode != 0:
            _run("runuser", "-u", "munge", "--", "munged", "--force")
        self.procs.append(subprocess.Popen(
            ["slurmctld", "-D", "-i", "-f", str(self.conf)], env=self.env,
            stdout=subprocess.DEVNULL, stderr=open(self.root / "log/ctld.err", "wb")))
        for name in self.names:
            self.procs.append(subprocess.Popen(
                ["nsenter", f"--net=/var/run/netns/sgl-{name}", "slurmd", "-D", "-N", name,
                 "-f", str(self.conf)], env=self.env, stdout=subprocess.DEVNULL,
                stderr=open(self.root / f"log/{name}.err", "wb")))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = _run("sinfo", "-h", "-N", "-o", "%N %T", check=False, env=self.env)
            states = dict(line.split() for line in r.stdout.splitlines() if line.strip()) \
                if r.returncode == 0 else {}
            if len(states) == self.n and all(s in ("idle", "mixed") for s in states.values()):
                return
            time.sleep(0.5)
        raise RuntimeError(f"slurm nodes not idle: {r.stdout}{r.stderr}\n"
                           + (self.root / "log/slurmctld.log").read_text()[-3000:])

    def stop_daemons(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        self.procs.clear()

    def stop(self) -> None:
        if self._lock is None:  # never started (or already stopped): nothing of ours runs
            return
        try:
            _run("scancel", "--full", "-u", "root", check=False, env=self.env)
            self.stop_daemons()
            self._net_down()
        finally:
            self._release_lock()


@contextlib.contextmanager
def running(root: Path, **options: Any) -> Iterator[SlurmCluster]:
    """A started cluster for a test module's fixture (skips where one cannot run), stopped
    after."""
    import pytest

    from tests.tools import need_tool

    for tool in ("slurmctld", "slurmd", "sbatch", "munged", "nsenter", "ip"):
        need_tool(tool)
    if os.geteuid() != 0:
        pytest.skip("a Slurm cluster on this machine needs root")
    c = SlurmCluster(root, **options)
    try:
        c.start()
        yield c
    finally:
        c.stop()
