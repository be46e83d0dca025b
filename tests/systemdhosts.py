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

Besides root, every host has the login user ``alice`` (USER, uid 1000; the same client key). Her
ssh sessions are logind sessions, so a plain ``ssh alice@host systemctl --user ...`` (no tty)
works: pam_systemd sets XDG_RUNTIME_DIR=/run/user/1000 and starts her user manager (no D-Bus
session bus is needed: systemctl reaches the manager on $XDG_RUNTIME_DIR/systemd/private).
Without a session and without lingering her manager (and her units) stop ~10 s after her last
logout; ``enable_linger`` keeps it running and starts it at every boot. ``journalctl --user -u X``
shows her the lines of her unit X (the journal is persistent: user-1000.journal); root reads them
with ``journalctl _SYSTEMD_USER_UNIT=X.service`` (``--user-unit`` as root adds _UID=0).

Needs root, ``ip`` (iproute2), ``unshare``/``mount`` (util-linux), ``systemd-nspawn``
(systemd-container) and ``ssh``/``ssh-keygen``. Only one set of these hosts exists on a machine at
a time (a lock file); everything is torn down afterwards, and leftovers of a crashed run before:
machines (their cgroups killed), namespaces, veth pairs, the bridge and the cgroups
(tests/hostnet.py has what this shares with sshhosts.py).

    with SystemdHosts(4, rootfs=cache, binds=python_binds()) as hosts:
        hosts.addresses         # ["10.207.8.11", ...]
        hosts.ssh_config        # a file for `--ssh-config` (user root, the key, known_hosts)
        hosts.ssh_config_for("alice")  # the same with User alice
        hosts.known_hosts       # every host's key, as ssh writes it (the same for both users)
        hosts.ssh(hosts.hosts[0], "systemctl is-system-running")
        hosts.enable_linger(hosts.hosts[0])  # alice's; disable_linger(host) undoes it
        hosts.ssh(hosts.hosts[0], "systemctl --user is-system-running", user="alice")
        hosts.poweroff(hosts.hosts[1]); hosts.boot(hosts.hosts[1])  # upper dir and lingering kept
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

if __package__:
    from . import hostnet
else:  # imported as a top-level module (tests/ on sys.path: a test's crashing subprocess)
    import hostnet  # type: ignore[no-redef]

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
USER = "alice"  # the rootfs's non-root login user (tests/systemd-rootfs.sh)
USER_UID = 1000
_run = hostnet.run
wait_for = hostnet.wait_for  # for the tests on these hosts

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
class Host(hostnet.NetHost):
    cgroup: str
    machine_id: str
    proc: subprocess.Popen[bytes] | None = None
    boots: int = 0
    started: float = 0.0  # time.monotonic() of the last launch

    @property
    def console_log(self) -> Path:
        return self.dir / "console.log"


@dataclass
class SystemdHosts(hostnet.NetHosts[Host]):
    SUBNET = SUBNET
    BRIDGE = BRIDGE
    NS_PREFIX = NS_PREFIX
    VETH_PREFIX = VETH_PREFIX
    PEER_PREFIX = "sglsp"
    NAME_PREFIX = "sd"
    LOCK = LOCK
    DIR_PREFIX = "sgl-gen-sysdhosts-"
    FIRST_HOST = FIRST_HOST

    rootfs: Path | str = ""
    binds: Sequence[Path | str] = ()
    boot_timeout: float = 60
    persistent: bool = True  # False: nspawn's --volatile=overlay (no reboot test possible)
    boot_seconds: dict[str, float] = field(default_factory=dict)  # last boot-to-ssh, by host

    # -- lifecycle --
    def unavailable(self) -> str | None:
        return available()

    def _check(self) -> None:
        self.rootfs = Path(self.rootfs).resolve()
        if self.rootfs == Path("/") or not (self.rootfs / ROOTFS_MARK).exists():
            # booting systemd on the machine's own root would clean the shared /tmp
            raise RuntimeError(f"{self.rootfs} is not a rootfs made by tests/systemd-rootfs.sh")

    def _create(self) -> None:
        self._make_network()
        (self.dir / "hosts").write_text(self._hosts_file())
        for i in range(self.count):
            self.hosts.append(self._add_host(i))
        self._write_client_files()
        for h in self.hosts:  # all boot in parallel
            self._start(h)
        self._wait_ssh(*self.hosts)

    def _add_host(self, i: int) -> Host:
        hdir = self.dir / f"host{i}"
        # etc: bind-mounted read-only at IN_HOST_ETC; sshd reads authorized_keys there as the
        # user logging in (alice too), so the directory is not 0700 (the host key file is)
        etc = hdir / "etc"
        for d, mode in ((hdir, 0o700), (etc, 0o755), (hdir / "work", 0o700), (hdir / "root", 0o700)):
            d.mkdir()
            d.chmod(mode)
        # the overlay's / takes the upper directory's mode: 0700 would lock every non-root
        # daemon (dbus as messagebus) out of the whole tree
        (hdir / "upper").mkdir()
        assert isinstance(self.rootfs, Path)
        (hdir / "upper").chmod(self.rootfs.stat().st_mode & 0o7777)
        ns, addr = self._add_namespace(i)
        host = Host(f"{self.NAME_PREFIX}{i}", ns, addr, hdir, etc / "ssh_host_ed25519_key",
                    f"{CGROUP_PREFIX}-{i}", uuid.uuid4().hex)
        hostnet.keygen(host.host_key, host.name)
        self._authorize(etc / "authorized_keys")
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

    def enable_linger(self, host: Host, user: str = USER) -> None:
        """``loginctl enable-linger user`` (as root) and wait until the user's manager runs: from
        then on ``systemctl --user`` units of the user run without a session, and come back at
        boot (/var/lib/systemd/linger/<user> is in the upper directory)."""
        self.ssh(host, f"loginctl enable-linger {user} && "
                       f"systemctl start user@$(id -u {user}).service")

    def disable_linger(self, host: Host, user: str = USER) -> None:
        """``loginctl disable-linger user`` and stop the user's manager (and with it the user's
        units), as logind does once the user has no session left and UserStopDelaySec passed."""
        self.ssh(host, f"loginctl disable-linger {user} && "
                       f"systemctl stop user@$(id -u {user}).service")

    def _wait_ssh(self, *hosts: Host) -> float:
        """Probe every pending host at once until its sshd lets the client in (so each host's
        boot time is its own, not the wait for the ones before it); the last one's seconds
        since launch."""
        pending, took = list(hosts), 0.0
        while pending:
            probes = [(h, subprocess.Popen(self._probe_argv(h, "ConnectTimeout=2"),
                                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                           stderr=subprocess.PIPE, text=True))
                      for h in pending]
            for host, probe in probes:
                try:
                    _, err = probe.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    probe.kill()
                    _, err = probe.communicate()
                now = time.monotonic()
                if probe.returncode == 0:
                    took = self.boot_seconds[host.name] = now - host.started
                    pending.remove(host)
                    continue
                dead = host.proc is not None and host.proc.poll() is not None
                if dead or now > host.started + self.boot_timeout:
                    for _h, p in probes:
                        p.kill()
                        p.wait()
                    log = host.console_log.read_text(errors="replace")[-4000:]
                    why = "exited" if dead else f"not reachable in {self.boot_timeout} s"
                    raise RuntimeError(f"{host.name} ({host.address}) {why}: {err}\n{log}")
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

    def _stop(self, host: Host) -> None:
        self._kill(host)

    def _cleanup_leftovers(self) -> list[str]:
        """Our machines first (their cgroups killed), then what hostnet removes."""
        for root in _cgroup_roots():
            for cg in root.glob(CGROUP_PREFIX + "-*"):
                _kill_cgroup(cg.name)
                _remove_cgroup(cg.name)
        return super()._cleanup_leftovers()


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
            pids = [p for p in _cgroup_pids(top) if not hostnet.zombie(p)]
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

