"""Real systemd hosts for the deploy tests: a Debian rootfs booted with ``systemd-nspawn -b`` (systemd
as PID 1, dbus, journald, sshd) inside network namespaces on a bridge, each with its own address,
its own sshd host key and root login by a generated client key, reachable from the root namespace
and from each other. The sibling of sshhosts.py (which gives plain sshd processes, no systemd);
both can run at the same time: other subnet, bridge, names, veths and lock.

Each host boots an overlay of the shared, read-only rootfs (lower) and a writable directory of its
own (upper): what a host writes survives ``poweroff(host)`` + ``boot(host)`` (a reboot test) and
is gone with the hosts. The overlay is mounted inside a private mount namespace of the launcher,
so it vanishes with the machine; the launcher also moves itself into a cgroup of its own before
it execs nspawn (otherwise every machine lands in one ``payload`` cgroup); the calling process
(pytest) stays where it is.

The rootfs is built once by tests/systemd-rootfs.sh (mmdebstrap) into a cache directory; it holds no
key: each host's sshd host key, the client's authorized_keys and /etc/hosts are bind-mounted at
boot. ``binds`` are host paths bind-mounted read-only at the same path (``python_binds()``: this
interpreter and its site-packages, so ``python -m sglang_router.launch_router`` runs inside).

Needs root, ``ip`` (iproute2), ``unshare``/``mount`` (util-linux), ``systemd-nspawn``
(systemd-container) and ``ssh``/``ssh-keygen``. Only one set of these hosts exists on a machine at
a time (a lock file); everything is torn down afterwards, and leftovers of a crashed run before:
machines (their cgroups killed), namespaces, veth pairs, the bridge and the cgroups.

    with SystemdHosts(4, rootfs=cache) as hosts:
        hosts.addresses         # ["10.207.8.11", ...]
        hosts.ssh_config        # a file for `--ssh-config` (user root, the key, known_hosts)
        hosts.known_hosts       # every host's key, as ssh writes it
        hosts.ssh(hosts.hosts[0], "systemctl is-system-running")
        hosts.poweroff(hosts.hosts[1]); hosts.boot(hosts.hosts[1])
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.207.8"  # sshhosts.py has 10.207.6 (and 10.207.7 behind its bastion)
BRIDGE = "sglsdbr0"
NS_PREFIX = "sglgen-sysd"
VETH_PREFIX = "sglsv"  # root-namespace side; the peer is renamed eth0 inside the namespace
CGROUP_PREFIX = "sgl-gen-sysd"
FIRST_HOST = 11
LOCK = Path("/run/sgl-gen-systemdhosts.lock")
ROOTFS_MARK = ".sgl-gen-rootfs"  # written by tests/systemd-rootfs.sh: refuse any other tree (never "/")
BUILD_SCRIPT = Path(__file__).with_name("systemd-rootfs.sh")
IN_HOST_ETC = "/etc/sgl-gen-test"  # sshd_config.d/sgl-gen-test.conf in the rootfs reads it

# The launcher: into cgroups of its own, a private mount namespace, the overlay, then nspawn.
_LAUNCH = r"""
set -e
for cg in $SGL_CGROUPS; do mkdir -p "$cg"; echo $$ > "$cg/cgroup.procs"; done
[ -z "$SGL_MERGED" ] && exec "$@"  # --volatile=overlay: nspawn makes its own overlay
exec unshare --mount --propagation private /bin/sh -c '
  mount -t overlay sgl-gen-sysd -o "lowerdir=$SGL_LOWER,upperdir=$SGL_UPPER,workdir=$SGL_WORK" \
    "$SGL_MERGED"
  exec "$@"' sh "$@"
"""


def _run(*argv: str, check: bool = True,
         timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def _cgroup_roots() -> list[Path]:
    """Where a cgroup of our own is made: the v2 tree (unified, or the whole /sys/fs/cgroup) and,
    on a hybrid machine, the named v1 ``systemd`` hierarchy that systemd inside also uses."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        return [base]
    return [p for p in (base / "unified", base / "systemd") if (p / "cgroup.procs").exists()]


def available() -> str | None:
    """Why these hosts cannot be created here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces, cgroups, systemd-nspawn)"
    for tool, pkg in (("ip", "iproute2"), ("ssh", "openssh-client"),
                      ("ssh-keygen", "openssh-client"), ("unshare", "util-linux"),
                      ("systemd-nspawn", "systemd-container")):
        if shutil.which(tool) is None:
            return f"{tool} not installed (apt-get install {pkg})"
    if not _cgroup_roots():
        return "no writable cgroup tree under /sys/fs/cgroup"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "no overlay file system in this kernel"
    return None


def rootfs_cache_key() -> str:
    """What CI puts in the cache directory's name: the build script (its package list included)."""
    return hashlib.sha256(BUILD_SCRIPT.read_bytes()).hexdigest()[:16]


def build_rootfs(dest: Path) -> Path:
    """Build the rootfs into ``dest`` unless it is there already (atomic: temp dir, rename)."""
    _run("bash", str(BUILD_SCRIPT), str(dest), timeout=1200)
    return dest


def python_binds() -> list[Path]:
    """This interpreter's installation (and its venv, if any), to bind read-only at the same
    path: the rootfs is the same Debian release, so the shared libraries it links are there."""
    seen: list[Path] = []
    for p in (sys.base_prefix, sys.prefix):
        rp = Path(p).resolve()
        if rp != Path("/usr") and rp not in seen:  # /usr is the rootfs's own
            seen.append(rp)
    return seen


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    dir: Path
    host_key: Path
    cgroup: str
    machine_id: str
    proc: subprocess.Popen[bytes] | None = None
    boots: int = 0
    started: float = 0.0  # time.monotonic() of the last launch

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"


@dataclass
class SystemdHosts:
    count: int = 4
    rootfs: Path | str = ""
    binds: Sequence[Path | str] = ()
    boot_timeout: float = 60
    persistent: bool = True  # False: nspawn's --volatile=overlay (no reboot test possible)
    hosts: list[Host] = field(default_factory=list)
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sgl-gen-sysdhosts-")))
    boot_seconds: dict[str, float] = field(default_factory=dict)  # last boot-to-ssh, by host
    _lock: int | None = None

    # -- paths a test hands to the deploy commands --
    @property
    def addresses(self) -> list[str]:
        return [h.address for h in self.hosts]

    @property
    def client_key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    @property
    def ssh_config(self) -> Path:
        return self.dir / "ssh_config"

    # -- lifecycle --
    def __enter__(self) -> SystemdHosts:
        why = available()
        if why:
            raise RuntimeError(why)
        self.rootfs = Path(self.rootfs).resolve()
        if self.rootfs == Path("/") or not (self.rootfs / ROOTFS_MARK).exists():
            # booting systemd on the machine's own root would clean the shared /tmp
            raise RuntimeError(f"{self.rootfs} is not a rootfs made by tests/systemd-rootfs.sh")
        self._lock = os.open(LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        try:
            self._cleanup_leftovers()
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create(self) -> None:
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sgl-gen-tests",
             "-f", str(self.client_key))
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        if Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
            # bridged traffic between namespaces must not be sent through iptables (br_netfilter)
            _run("ip", "link", "set", BRIDGE, "type", "bridge", "nf_call_iptables", "0",
                 check=False)
        (self.dir / "hosts").write_text(
            "127.0.0.1 localhost\n::1 localhost\n" + "".join(
                f"{SUBNET}.{FIRST_HOST + j} sd{j}\n" for j in range(self.count)))
        for i in range(self.count):
            self.hosts.append(self._add_host(i))
        lines = []
        for h in self.hosts:
            pub = Path(f"{h.host_key}.pub").read_text().split()
            lines.append(f"{h.address} {pub[0]} {pub[1]}\n")
        self.known_hosts.write_text("".join(lines))
        self.ssh_config.write_text(
            f"Host {SUBNET}.*\n"
            "  User root\n"
            f"  IdentityFile {self.client_key}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n"
            "  StrictHostKeyChecking yes\n"
            "  ConnectTimeout 5\n")
        for h in self.hosts:  # all boot in parallel
            self._start(h)
        self._wait_ssh(*self.hosts)

    def _add_host(self, i: int) -> Host:
        ns = f"{NS_PREFIX}-{i}"
        addr = f"{SUBNET}.{FIRST_HOST + i}"
        hdir = self.dir / f"host{i}"
        etc = hdir / "etc"  # bind-mounted read-only at IN_HOST_ETC
        for d in (hdir, etc, hdir / "work", hdir / "root"):
            d.mkdir(mode=0o700)
        # the overlay's / takes the upper directory's mode: 0700 would lock every non-root
        # daemon (dbus as messagebus) out of the whole tree
        (hdir / "upper").mkdir()
        (hdir / "upper").chmod(self.rootfs.stat().st_mode & 0o7777)
        host = Host(f"sd{i}", ns, addr, hdir, etc / "ssh_host_ed25519_key",
                    f"{CGROUP_PREFIX}-{i}", uuid.uuid4().hex)
        _run("ip", "netns", "add", ns)
        veth, peer = f"{VETH_PREFIX}{i}", f"sglsp{i}"
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", peer, "netns", ns)
        _run("ip", "link", "set", veth, "master", BRIDGE)
        _run("ip", "link", "set", veth, "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "link", "set", peer, "name", "eth0")
        _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "route", "add", "default", "via", f"{SUBNET}.1")
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name,
             "-f", str(host.host_key))
        (etc / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        return host

    def _start(self, host: Host) -> None:
        """Launch the machine (returns at once; _wait_ssh waits for it)."""
        root = ["-D", str(host.dir / "root")] if self.persistent else [
            "-D", str(self.rootfs), "--volatile=overlay"]
        argv = ["systemd-nspawn", "--quiet", *root, "-b",
                f"--network-namespace-path=/run/netns/{host.namespace}",
                "--register=no", "--keep-unit", "--console=passive", "--resolv-conf=off",
                "--timezone=off", "--link-journal=no", f"--machine={host.name}",
                f"--hostname={host.name}",
                f"--uuid={host.machine_id}",
                f"--bind-ro={host.dir / 'etc'}:{IN_HOST_ETC}",
                f"--bind-ro={self.dir / 'hosts'}:/etc/hosts"]
        argv += [f"--bind-ro={Path(b)}" for b in self.binds]
        env = dict(os.environ,
                   SGL_CGROUPS=" ".join(str(r / host.cgroup) for r in _cgroup_roots()),
                   SGL_LOWER=str(self.rootfs), SGL_UPPER=str(host.dir / "upper"),
                   SGL_WORK=str(host.dir / "work"),
                   SGL_MERGED=str(host.dir / "root") if self.persistent else "")
        with open(host.console_log, "ab") as log:
            host.proc = subprocess.Popen(["/bin/sh", "-c", _LAUNCH, "sh", *argv], env=env,
                                         stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        host.boots += 1
        host.started = time.monotonic()

    def boot(self, host: Host) -> float:
        """Boot a powered-off host on what its upper directory kept; seconds until ssh answers."""
        if host.proc is not None and host.proc.poll() is None:
            raise RuntimeError(f"{host.name} is running")
        self._start(host)
        return self._wait_ssh(host)

    def poweroff(self, host: Host, timeout: float = 60) -> float:
        """``systemctl poweroff`` inside and wait until the machine is gone; seconds it took."""
        t0 = time.monotonic()
        # the connection may drop as sshd stops: the exit code says nothing
        self.ssh(host, "systemctl poweroff", check=False, timeout=30)
        assert host.proc is not None
        try:
            host.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill(host)
            raise RuntimeError(f"{host.name} did not power off in {timeout} s") from None
        self._kill(host)  # nothing left; removes the cgroups
        return time.monotonic() - t0

    def ssh(self, host: Host, command: str, check: bool = True,
            timeout: float | None = 120) -> subprocess.CompletedProcess[str]:
        """Run a shell command on the host as root, over SSH."""
        return _run("ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", "-o",
                    "LogLevel=ERROR", host.address, command, check=check, timeout=timeout)

    def _wait_ssh(self, *hosts: Host) -> float:
        """Poll every host in turn until its sshd lets the client in (so each host's boot time
        is its own, not the wait for the ones before it); the last one's seconds since launch."""
        pending, took = list(hosts), 0.0
        while pending:
            for host in list(pending):
                r = _run("ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes",
                         "-o", "ConnectTimeout=2", "-o", "LogLevel=ERROR", host.address, "true",
                         check=False, timeout=10)
                now = time.monotonic()
                if r.returncode == 0:
                    took = self.boot_seconds[host.name] = now - host.started
                    pending.remove(host)
                    continue
                dead = host.proc is not None and host.proc.poll() is not None
                if dead or now > host.started + self.boot_timeout:
                    log = host.console_log.read_text(errors="replace")[-4000:]
                    why = "exited" if dead else f"not reachable in {self.boot_timeout} s"
                    raise RuntimeError(f"{host.name} ({host.address}) {why}: {r.stderr}\n{log}")
            if pending:
                time.sleep(0.1)
        return took

    def _kill(self, host: Host) -> None:
        _kill_cgroup(host.cgroup)
        if host.proc is not None:
            try:
                os.killpg(host.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            host.proc.wait(10)
        host.proc = None
        _remove_cgroup(host.cgroup)

    def close(self) -> None:
        for h in self.hosts:
            try:
                self._kill(h)
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
        self._cleanup_leftovers()
        self.hosts.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = None

    def _cleanup_leftovers(self) -> None:
        """Kill our machines (their cgroups) and every process in our namespaces; delete the
        namespaces, veths, bridge, cgroups and the directories of a crashed run (the lock says
        no other set of these hosts is alive)."""
        for root in _cgroup_roots():
            for cg in root.glob(CGROUP_PREFIX + "-*"):
                _kill_cgroup(cg.name)
                _remove_cgroup(cg.name)
        names = [line.split()[0] for line in _run("ip", "netns", "list").stdout.splitlines()
                 if line.startswith(NS_PREFIX + "-")]
        for ns in names:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                pids = [int(p) for p in _run("ip", "netns", "pids", ns, check=False).stdout.split()]
                for pid in pids:
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + 5
                while pids and time.monotonic() < deadline:
                    pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
                    time.sleep(0.05)
            _run("ip", "netns", "delete", ns, check=False)
        for link in _run("ip", "-o", "link", "show").stdout.splitlines():
            name = link.split(":")[1].strip().split("@")[0]
            if name.startswith(VETH_PREFIX):
                _run("ip", "link", "delete", name, check=False)
        _run("ip", "link", "delete", BRIDGE, check=False)
        for d in Path(tempfile.gettempdir()).glob("sgl-gen-sysdhosts-*"):
            if d != self.dir and not any(os.path.ismount(r) for r in d.glob("host*/root")):
                shutil.rmtree(d, ignore_errors=True)


def _cgroup_pids(top: Path) -> list[int]:
    pids: list[int] = []
    for procs in top.rglob("cgroup.procs"):
        try:
            pids += [int(p) for p in procs.read_text().split()]
        except OSError:
            pass
    return pids


def _kill_cgroup(name: str, timeout: float = 10) -> None:
    """SIGKILL everything in the cgroup ``name`` (the machine's PID 1 and all below it)."""
    for root in _cgroup_roots():
        top = root / name
        if not top.exists():
            continue
        kill = top / "cgroup.kill"  # v2, Linux >= 5.14: the whole subtree at once
        if kill.exists():
            try:
                kill.write_text("1")
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        while True:
            pids = [p for p in _cgroup_pids(top) if not _zombie(p)]
            if not pids or time.monotonic() > deadline:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)


def _remove_cgroup(name: str) -> None:
    for root in _cgroup_roots():
        top = root / name
        if not top.exists():
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda w: -len(w[0])):
            deadline = time.monotonic() + 5
            while True:  # a killed process leaves its cgroup a moment after it is reaped
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.05)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
