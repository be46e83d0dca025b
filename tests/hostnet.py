"""What tests/sshhosts.py and tests/systemdhosts.py share: test hosts in network namespaces on a
bridge of their own (one veth pair a host, ``SUBNET.1`` on the bridge, ``SUBNET.11``... in the
namespaces), a generated client key, each host's sshd host key, a known_hosts and ssh_configs for
them, a lock file (one set of each kind on a machine at a time) and the teardown of everything a
crashed run left behind (processes in the namespaces, the namespaces, veths and the bridge).

A subclass names its network (the class constants) and says how a host comes up (``_create``) and
goes down (``_stop``); ``_cleanup_leftovers`` may be extended for what else it makes.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

T = TypeVar("T")


def run(*argv: str, check: bool = True,
        timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def zombie(pid: int) -> bool:
    """A zombie (or gone): not a running process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def wait_for(what: str, probe: Callable[[], T], timeout: float = 30, interval: float = 0.1) -> T:
    """Call ``probe`` until it returns something true, and return that; AssertionError naming
    ``what`` after ``timeout`` seconds (for tests on these hosts)."""
    deadline = time.monotonic() + timeout
    while True:
        got = probe()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def keygen(path: Path, comment: str) -> None:
    """A new ed25519 key pair at ``path`` (and ``path``.pub), replacing any there."""
    for p in (path, Path(f"{path}.pub")):
        p.unlink(missing_ok=True)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))


def kill_namespace(ns: str) -> None:
    """SIGTERM, then SIGKILL, every process in the network namespace; then delete it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p) for p in run("ip", "netns", "pids", ns, check=False).stdout.split()]
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and not zombie(p)]
            time.sleep(0.05)
    run("ip", "netns", "delete", ns, check=False)


def namespaces(prefix: str) -> list[str]:
    return [line.split()[0] for line in run("ip", "netns", "list").stdout.splitlines()
            if line.startswith(prefix + "-")]


def links(prefix: str) -> list[str]:
    """Network interfaces of the root namespace whose name starts with ``prefix``."""
    names = [line.split(":")[1].strip().split("@")[0]
             for line in run("ip", "-o", "link", "show").stdout.splitlines()]
    return [n for n in names if n.startswith(prefix)]


@dataclass
class NetHost:
    name: str
    namespace: str
    address: str
    dir: Path
    host_key: Path


H = TypeVar("H", bound=NetHost)
S = TypeVar("S", bound="NetHosts[Any]")
NO_DIR = Path()  # dir until __enter__ holds the lock and makes a fresh temporary directory


@dataclass
class NetHosts(Generic[H]):
    SUBNET: ClassVar[str]
    BRIDGE: ClassVar[str]
    NS_PREFIX: ClassVar[str]  # namespaces NS_PREFIX-0, NS_PREFIX-1, ...
    VETH_PREFIX: ClassVar[str]  # root-namespace side of the veth pairs
    PEER_PREFIX: ClassVar[str]  # the namespace side, renamed eth0 in there
    NAME_PREFIX: ClassVar[str]  # host names: NAME_PREFIX0, ...
    LOCK: ClassVar[Path]
    DIR_PREFIX: ClassVar[str]  # the temporary directory's name
    FIRST_HOST: ClassVar[int] = 11

    count: int = 4
    hosts: list[H] = field(default_factory=list)
    dir: Path = NO_DIR
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
        """For ``--ssh-config``: user root, the client key, known_hosts, strict checking."""
        return self.dir / "ssh_config"

    def ssh_config_for(self, user: str) -> Path:
        """The same ssh config for another login user (same key, same known_hosts)."""
        if user == "root":
            return self.ssh_config
        path = self.dir / f"ssh_config.{user}"
        if not path.exists():
            self._write_ssh_config(path, user)
        return path

    def ssh(self, host: NetHost, command: str, check: bool = True, timeout: float | None = 120,
            user: str = "root") -> subprocess.CompletedProcess[str]:
        """Run a shell command on the host as ``user``, over SSH (no tty)."""
        return run("ssh", "-F", str(self.ssh_config_for(user)), "-o", "BatchMode=yes",
                   "-o", "LogLevel=ERROR", host.address, command, check=check, timeout=timeout)

    # -- lifecycle --
    def unavailable(self) -> str | None:
        """Why these hosts cannot be created here, or None."""
        raise NotImplementedError

    def _create(self) -> None:
        raise NotImplementedError

    def _stop(self, host: H) -> None:
        """Stop what runs for the host (close() goes on if this fails)."""

    def _check(self) -> None:
        """Refuse bad arguments before anything is made."""

    def __enter__(self: S) -> S:
        why = self.unavailable()
        if why:
            raise RuntimeError(why)
        self._check()
        self._lock = os.open(self.LOCK, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        # only now: the holder of the lock removes the directories a crashed run left (DIR_PREFIX*)
        self.dir = Path(tempfile.mkdtemp(prefix=self.DIR_PREFIX))
        try:
            self._cleanup_leftovers()
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for h in self.hosts:
            try:
                self._stop(h)
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
        self._cleanup_leftovers()
        self.hosts.clear()
        if self.dir != NO_DIR:
            shutil.rmtree(self.dir, ignore_errors=True)
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = None

    def _cleanup_leftovers(self) -> list[str]:
        """Kill every process in our namespaces, delete them, our veths, the bridge and the
        directories of crashed runs (the lock says no other set of these hosts is alive); the
        namespaces it deleted."""
        names = namespaces(self.NS_PREFIX)
        for ns in names:
            kill_namespace(ns)
        for name in links(self.VETH_PREFIX):
            run("ip", "link", "delete", name, check=False)
        run("ip", "link", "delete", self.BRIDGE, check=False)
        for d in Path(tempfile.gettempdir()).glob(self.DIR_PREFIX + "*"):
            # never through a mount that is still there (a machine's overlay root)
            if d != self.dir and not any(os.path.ismount(r) for r in d.glob("*/root")):
                shutil.rmtree(d, ignore_errors=True)
        return names

    # -- building blocks of _create --
    def _make_network(self) -> None:
        """The client key and the bridge (SUBNET.1, the hosts' default route)."""
        keygen(self.client_key, "sgl-gen-tests")
        run("ip", "link", "add", self.BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{self.SUBNET}.1/24", "dev", self.BRIDGE)
        run("ip", "link", "set", self.BRIDGE, "up")
        if Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists():
            # bridged traffic between namespaces must not be sent through iptables (br_netfilter)
            run("ip", "link", "set", self.BRIDGE, "type", "bridge", "nf_call_iptables", "0",
                check=False)

    def _address(self, i: int) -> str:
        return f"{self.SUBNET}.{self.FIRST_HOST + i}"

    def _hosts_file(self) -> str:
        """/etc/hosts for the hosts: localhost and every host's name."""
        return "127.0.0.1 localhost\n::1 localhost\n" + "".join(
            f"{self._address(j)} {self.NAME_PREFIX}{j}\n" for j in range(self.count))

    def _add_namespace(self, i: int) -> tuple[str, str]:
        """Namespace ``i`` on the bridge (its eth0 at ``_address(i)``): (namespace, address)."""
        ns, addr = f"{self.NS_PREFIX}-{i}", self._address(i)
        veth, peer = f"{self.VETH_PREFIX}{i}", f"{self.PEER_PREFIX}{i}"
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        run("ip", "link", "set", peer, "netns", ns)
        run("ip", "link", "set", veth, "master", self.BRIDGE)
        run("ip", "link", "set", veth, "up")
        run("ip", "-n", ns, "link", "set", "lo", "up")
        run("ip", "-n", ns, "link", "set", peer, "name", "eth0")
        run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        run("ip", "-n", ns, "link", "set", "eth0", "up")
        run("ip", "-n", ns, "route", "add", "default", "via", f"{self.SUBNET}.1")
        return ns, addr

    def _authorize(self, path: Path) -> None:
        """The client key as the only authorized key, readable by every login user (sshd reads
        AuthorizedKeysFile as the user logging in)."""
        path.write_text(Path(f"{self.client_key}.pub").read_text())
        path.chmod(0o644)

    @staticmethod
    def _known_line(host: NetHost) -> str:
        pub = Path(f"{host.host_key}.pub").read_text().split()
        return f"{host.address} {pub[0]} {pub[1]}\n"

    def _write_client_files(self) -> None:
        """known_hosts with every host's key, and ssh_config (user root)."""
        self.known_hosts.write_text("".join(self._known_line(h) for h in self.hosts))
        self._write_ssh_config(self.ssh_config, "root")

    def _write_ssh_config(self, path: Path, user: str) -> None:
        path.write_text(
            f"Host {self.SUBNET}.*\n"
            f"  User {user}\n"
            f"  IdentityFile {self.client_key}\n"
            "  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {self.known_hosts}\n"
            "  StrictHostKeyChecking yes\n"
            "  ConnectTimeout 5\n")

    def _probe_argv(self, host: NetHost, *options: str) -> list[str]:
        """``ssh host true`` as root, with extra ``-o`` options."""
        opts = [a for o in options for a in ("-o", o)]
        return ["ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", *opts,
                "-o", "LogLevel=ERROR", host.address, "true"]

    def _probe_ssh(self, host: NetHost, *options: str,
                   timeout: float = 10) -> subprocess.CompletedProcess[str]:
        return run(*self._probe_argv(host, *options), check=False, timeout=timeout)
