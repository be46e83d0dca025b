"""Real SSH hosts for the deploy tests: network namespaces on a bridge, each with its own address
and its own sshd (own host keys, root login by a generated client key), reachable from the root
namespace and from each other. Namespaces share the filesystem, so every host gets its own
remote root directory from the test.

Needs root, `ip` (iproute2) and `sshd`/`ssh-keygen` (openssh-server, openssh-client):
`.ci/install-system.sh` installs them. Only one set of these hosts exists on a machine at a time
(a lock file serialises concurrent test runs); everything is torn down afterwards: sshd and every
process left in the namespaces are killed, the namespaces, veth pairs and the bridge deleted.

    with SshHosts(4) as hosts:
        hosts.addresses         # ["10.207.6.11", ...]
        hosts.ssh_config        # a file for `--ssh-config` (user root, the key, known_hosts)
        hosts.known_hosts       # every host's key, as ssh writes it
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SUBNET = "10.207.6"  # the examples/ssh-*.yaml inventories use these addresses
PRIVATE_SUBNET = "10.207.7"  # hosts reached only through a bastion (add_private_host)
BRIDGE = "sglgenbr0"
NS_PREFIX = "sglgen-ssh"
FIRST_HOST = 11
LOCK = Path("/run/sgl-gen-sshhosts.lock")
NETNS_ETC = Path("/etc/netns")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {r.returncode}: {r.stderr.strip()}")
    return r


def available() -> str | None:
    """Why these hosts cannot be created here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "sshd", "ssh-keygen"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            return f"{tool} not installed (run .ci/install-system.sh)"
    return None


def _sshd() -> str:
    return shutil.which("sshd") or "/usr/sbin/sshd"


@dataclass
class Host:
    name: str
    namespace: str
    address: str
    dir: Path
    host_key: Path
    sshd: subprocess.Popen[bytes] | None = None


@dataclass
class SshHosts:
    count: int = 4
    hosts: list[Host] = field(default_factory=list)
    private: list[Host] = field(default_factory=list)  # add_private_host: behind a bastion
    dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sgl-gen-sshhosts-")))
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
    def __enter__(self) -> SshHosts:
        why = available()
        if why:
            raise RuntimeError(why)
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
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sgl-gen-tests",
             "-f", str(self.client_key))
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "addr", "add", f"{SUBNET}.1/24", "dev", BRIDGE)
        _run("ip", "link", "set", BRIDGE, "up")
        # bridged traffic between namespaces must not be sent through iptables (br_netfilter)
        for knob in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
            p = Path(f"/proc/sys/net/bridge/{knob}")
            if p.exists():
                _run("ip", "link", "set", BRIDGE, "type", "bridge", "nf_call_iptables", "0",
                     check=False)
                break
        for i in range(self.count):
            self.hosts.append(self._add_host(i))
        lines = []
        for h in self.hosts:
            pub = (Path(f"{h.host_key}.pub").read_text().split())
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
        for h in self.hosts:
            self._wait_ssh(h)

    def _add_host(self, i: int) -> Host:
        ns = f"{NS_PREFIX}-{i}"
        addr = f"{SUBNET}.{FIRST_HOST + i}"
        hdir = self.dir / f"host{i}"
        hdir.mkdir()
        host = Host(f"h{i}", ns, addr, hdir, hdir / "ssh_host_ed25519_key")
        _run("ip", "netns", "add", ns)
        # `ip netns exec` bind-mounts /etc/netns/<ns>/* over /etc: a resolver that fails at once
        # (the machine's nameserver is not reachable from the bridge; http.server's getfqdn()
        # would wait for its timeouts) and the test hosts' names
        etc = NETNS_ETC / ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        (etc / "hosts").write_text("127.0.0.1 localhost\n" + "".join(
            f"{SUBNET}.{FIRST_HOST + j} h{j}\n" for j in range(self.count)))
        veth, peer = f"sglgv{i}", f"sglgp{i}"
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", peer, "netns", ns)
        _run("ip", "link", "set", veth, "master", BRIDGE)
        _run("ip", "link", "set", veth, "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "link", "set", peer, "name", "eth0")
        _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "route", "add", "default", "via", f"{SUBNET}.1")
        self.new_host_key(host)
        (hdir / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        self.start_sshd(host)
        return host

    def add_private_host(self, via: Host) -> Host:
        """A host on a network of its own that only ``via`` (its bastion) reaches: a veth pair
        between the two namespaces, PRIVATE_SUBNET.1 on the bastion, .11 on the new host. The
        root namespace has no route to it, so SSH gets there only through ``ProxyJump via``.
        Its key goes into known_hosts; the ssh config has no entry for it (the test writes one)."""
        i = len(self.private)
        ns = f"{NS_PREFIX}-p{i}"
        addr = f"{PRIVATE_SUBNET}.{FIRST_HOST + i}"
        hdir = self.dir / f"private{i}"
        hdir.mkdir()
        host = Host(f"p{i}", ns, addr, hdir, hdir / "ssh_host_ed25519_key")
        _run("ip", "netns", "add", ns)
        etc = NETNS_ETC / ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        (etc / "hosts").write_text("127.0.0.1 localhost\n")
        outer, inner = f"sglgq{i}", f"sglgr{i}"
        _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        _run("ip", "link", "set", outer, "netns", via.namespace)
        _run("ip", "link", "set", inner, "netns", ns)
        if i == 0:
            _run("ip", "-n", via.namespace, "addr", "add", f"{PRIVATE_SUBNET}.1/24", "dev", outer)
        _run("ip", "-n", via.namespace, "link", "set", outer, "up")
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", inner)
        _run("ip", "-n", ns, "link", "set", inner, "up")
        self.new_host_key(host)
        (hdir / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        self.start_sshd(host)
        pub = Path(f"{host.host_key}.pub").read_text().split()
        with open(self.known_hosts, "a") as f:
            f.write(f"{addr} {pub[0]} {pub[1]}\n")
        self.private.append(host)
        deadline = time.monotonic() + 20
        while True:  # from the bastion's namespace, the only place that reaches it
            r = _run("ip", "netns", "exec", via.namespace, "ssh", "-i", str(self.client_key),
                     "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                     "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                     f"root@{addr}", "true", check=False)
            if r.returncode == 0:
                return host
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd on {addr} not reachable from {via.address}: "
                                   f"{r.stderr}")
            time.sleep(0.1)

    def new_host_key(self, host: Host) -> None:
        """(Re)generate the host's key; a running sshd keeps the old one until restarted."""
        for p in (host.host_key, Path(f"{host.host_key}.pub")):
            p.unlink(missing_ok=True)
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host.name,
             "-f", str(host.host_key))

    def start_sshd(self, host: Host) -> None:
        cfg = host.dir / "sshd_config"
        cfg.write_text(
            f"ListenAddress {host.address}\n"
            "Port 22\n"
            f"HostKey {host.host_key}\n"
            f"PidFile {host.dir / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {host.dir / 'authorized_keys'}\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "MaxSessions 64\n"
            "MaxStartups 64:30:128\n"
            "Subsystem sftp internal-sftp\n")
        host.sshd = subprocess.Popen(
            ["ip", "netns", "exec", host.namespace, _sshd(), "-D", "-e", "-f", str(cfg)],
            stdout=subprocess.DEVNULL, stderr=open(host.dir / "sshd.log", "ab"),  # noqa: SIM115
            start_new_session=True)

    def stop_sshd(self, host: Host) -> None:
        if host.sshd is not None and host.sshd.poll() is None:
            os.killpg(host.sshd.pid, signal.SIGTERM)
            host.sshd.wait(10)
        host.sshd = None

    def restart_sshd(self, host: Host) -> None:
        self.stop_sshd(host)
        self.start_sshd(host)
        self._wait_ssh(host)

    def _wait_ssh(self, host: Host, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while True:
            r = _run("ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes",
                     "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                     "-o", "LogLevel=ERROR", host.address, "true", check=False)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                log = (host.dir / "sshd.log").read_text(errors="replace")
                raise RuntimeError(f"sshd on {host.address} not reachable: {r.stderr}\n{log}")
            time.sleep(0.1)

    def ns_pids(self, host: Host) -> list[int]:
        out = _run("ip", "netns", "pids", host.namespace, check=False).stdout
        return [int(p) for p in out.split()]

    def listening(self, host: Host) -> list[str]:
        """``ss -Hltn`` lines inside the host's namespace (sshd's :22 included)."""
        out = _run("ip", "netns", "exec", host.namespace, "ss", "-Hltn").stdout
        return [line for line in out.splitlines() if line.strip()]

    def close(self) -> None:
        for h in self.hosts + self.private:
            try:
                self.stop_sshd(h)
            except Exception:  # noqa: BLE001 - teardown goes on
                pass
        self._cleanup_leftovers()
        self.hosts.clear()
        self.private.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            os.close(self._lock)
            self._lock = None

    @staticmethod
    def _cleanup_leftovers() -> None:
        """Kill every process in our namespaces, delete them, their veths and the bridge."""
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
                    pids = [p for p in pids if Path(f"/proc/{p}").exists()
                            and not _zombie(p)]
                    time.sleep(0.05)
            _run("ip", "netns", "delete", ns, check=False)
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        for link in _run("ip", "-o", "link", "show").stdout.splitlines():
            name = link.split(":")[1].strip().split("@")[0]
            if name.startswith("sglgv"):
                _run("ip", "link", "delete", name, check=False)
        _run("ip", "link", "delete", BRIDGE, check=False)
        try:
            NETNS_ETC.rmdir()  # only when empty: other namespaces may use it
        except OSError:
            pass


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True
