"""Real SSH hosts for the deploy tests: network namespaces on a bridge, each with its own address
and its own sshd (own host keys, root login by a generated client key), reachable from the root
namespace and from each other. Namespaces share the filesystem, so every host gets its own
remote root directory from the test.

Needs root, `ip` (iproute2) and `sshd`/`ssh-keygen` (openssh-server, openssh-client):
`.ci/install-system.sh` installs them. Only one set of these hosts exists on a machine at a time
(a lock file serialises concurrent test runs); everything is torn down afterwards: sshd and every
process left in the namespaces are killed, the namespaces, veth pairs and the bridge deleted
(tests/hostnet.py has what this shares with systemdhosts.py).

    with SshHosts(4) as hosts:
        hosts.addresses         # ["10.207.6.11", ...]
        hosts.ssh_config        # a file for `--ssh-config` (user root, the key, known_hosts)
        hosts.known_hosts       # every host's key, as ssh writes it
        hosts.ssh(hosts.hosts[0], "hostname -I")  # as root
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__:
    from . import hostnet
else:  # imported as a top-level module (tests/ on sys.path)
    import hostnet  # type: ignore[no-redef]

SUBNET = "10.207.6"  # the examples/ssh-*.yaml inventories use these addresses
PRIVATE_SUBNET = "10.207.7"  # hosts reached only through a bastion (add_private_host)
BRIDGE = "sglgenbr0"
NS_PREFIX = "sglgen-ssh"
FIRST_HOST = 11
LOCK = Path("/run/sgl-gen-sshhosts.lock")
NETNS_ETC = Path("/etc/netns")
_run = hostnet.run


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
class Host(hostnet.NetHost):
    sshd: subprocess.Popen[bytes] | None = None
    #: a command sshd is started under inside the namespace (tests/containerimage.py: one that
    #: mounts the cgroup hierarchies podman's runtime needs); the next restart_sshd applies it
    wrap: tuple[str, ...] = ()


@dataclass
class SshHosts(hostnet.NetHosts[Host]):
    SUBNET = SUBNET
    BRIDGE = BRIDGE
    NS_PREFIX = NS_PREFIX
    VETH_PREFIX = "sglgv"
    PEER_PREFIX = "sglgp"
    NAME_PREFIX = "h"
    LOCK = LOCK
    DIR_PREFIX = "sgl-gen-sshhosts-"
    FIRST_HOST = FIRST_HOST

    private: list[Host] = field(default_factory=list)  # add_private_host: behind a bastion

    def unavailable(self) -> str | None:
        return available()

    def _create(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        self._make_network()
        for i in range(self.count):
            self.hosts.append(self._add_host(i))
        self._write_client_files()
        for h in self.hosts:
            self._wait_ssh(h)

    def _netns_etc(self, ns: str, hosts: str) -> None:
        """`ip netns exec` bind-mounts /etc/netns/<ns>/* over /etc: a resolver that fails at once
        (the machine's nameserver is not reachable from the bridge; http.server's getfqdn() would
        wait for its timeouts) and the test hosts' names."""
        etc = NETNS_ETC / ns
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        (etc / "hosts").write_text(hosts)

    def _add_host(self, i: int) -> Host:
        hdir = self.dir / f"host{i}"
        hdir.mkdir()
        ns, addr = self._add_namespace(i)
        host = Host(f"{self.NAME_PREFIX}{i}", ns, addr, hdir, hdir / "ssh_host_ed25519_key")
        self._netns_etc(ns, self._hosts_file())
        self.new_host_key(host)
        self._authorize(hdir / "authorized_keys")
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
        self._netns_etc(ns, "127.0.0.1 localhost\n")
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
        self._authorize(hdir / "authorized_keys")
        self.start_sshd(host)
        with open(self.known_hosts, "a") as f:
            f.write(self._known_line(host))
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
        hostnet.keygen(host.host_key, host.name)

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
            ["ip", "netns", "exec", host.namespace, *host.wrap, _sshd(), "-D", "-e", "-f",
             str(cfg)],
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
        while True:  # the key may be new (restart_sshd after new_host_key): not checked here
            r = self._probe_ssh(host, "StrictHostKeyChecking=no", "UserKnownHostsFile=/dev/null")
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
        self.hosts += self.private  # stopped and forgotten with the others
        self.private.clear()
        super().close()

    def _stop(self, host: Host) -> None:
        self.stop_sshd(host)

    def _cleanup_leftovers(self) -> list[str]:
        """Also each namespace's /etc/netns directory (and /etc/netns when it is left empty)."""
        names = super()._cleanup_leftovers()
        for ns in names:
            shutil.rmtree(NETNS_ETC / ns, ignore_errors=True)
        try:
            NETNS_ETC.rmdir()  # only when empty: other namespaces may use it
        except OSError:
            pass
        return names
