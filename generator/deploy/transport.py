"""The connection to the hosts: SSH over Fabric (host keys checked, ProxyJump hops too), remote
commands, atomic uploads, and the host agent (generator/hostagent.py) run on the host. The only
SSH code in sgl-gen."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shlex
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from generator import hostagent
from generator.deploy.spec import Echo, HostSpec
from generator.errors import DeployError, SglGenError

T = TypeVar("T")
TMP_SUFFIX = ".sgl-gen-tmp"

# All of it is generator/hostagent.py, one stdlib-only module with a subcommand per program
# (probe, poll, wait, start, http): each call sends its source, so nothing is uploaded for it
# (its ``if __name__ == "__main__"`` runs main: ``python -c`` names its code __main__)
AGENT_SOURCE = Path(hostagent.__file__).read_text(encoding="utf-8")


def agent_command(python: str, command: str, args: dict[str, Any]) -> str:
    """``python -c <hostagent> COMMAND JSON``: hostagent's subcommand ``command`` on the host
    (one of ``hostagent.COMMANDS``; another one exits 2 there, with its usage)."""
    return (f"{shlex.quote(python)} -c {shlex.quote(AGENT_SOURCE)} {shlex.quote(command)} "
            f"{shlex.quote(json.dumps(args))}")


# ---------------------------------------------------------------------------------------------
# Connections


@dataclass(frozen=True)
class SshOptions:
    ssh_config: str | None = None  # default: ~/.ssh/config (and /etc/ssh/ssh_config)
    known_hosts: str | None = None  # default: the ssh config's UserKnownHostsFile, ~/.ssh/known_hosts
    accept_new_host_keys: bool = False
    connect_timeout: float = 10.0


def _fingerprint(key: Any) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


_KNOWN_HOSTS_LOCK = threading.Lock()


class _HostKeyPolicy:
    """Unknown host key: refuse, or (opt-in) accept and append it to the known-hosts file."""

    def __init__(self, known_hosts: Path, accept_new: bool, echo: Echo, label: str = ""):
        self.known_hosts, self.accept_new, self.echo = known_hosts, accept_new, echo
        self.label = label  # "ProxyJump host X: " for a hop of the gateway chain

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        from paramiko import SSHException

        if not self.accept_new:
            raise SSHException(
                f"{self.label}host key {key.get_name()} {_fingerprint(key)} is not in "
                f"{self.known_hosts}; "
                f"check it and add it (ssh-keyscan), or pass --accept-new-host-keys")
        with _KNOWN_HOSTS_LOCK:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with open(self.known_hosts, "a", encoding="utf-8") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            client.get_host_keys().add(hostname, key.get_name(), key)
        self.echo(f"  {hostname}: added host key {key.get_name()} {_fingerprint(key)} "
                  f"to {self.known_hosts}")


def connect_failure(exc: BaseException, spec: HostSpec, timeout: float) -> str:
    """One plain sentence for why an SSH connection failed (the raw error follows it)."""
    import errno
    import socket

    import paramiko

    port = spec.port or 22
    user = spec.user or "the default user (your login name, or the ssh config's User)"
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError) and exc.errors:
        exc = next(iter(exc.errors.values()))
    if isinstance(exc, socket.gaierror):
        return (f"the name {spec.address!r} does not resolve to an address (a placeholder "
                "node name of a topology without cluster.hosts? a typo?)")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return (f"no answer within {timeout:g} s: the host is down, a firewall drops the "
                "connection, or the address is wrong (--connect-timeout waits longer)")
    if isinstance(exc, paramiko.AuthenticationException):
        return (f"authentication failed for {user}: the host accepted none of the keys or "
                "agent identities offered (check the user, ~/.ssh and ssh-agent)")
    if isinstance(exc, paramiko.SSHException) and "host key" in str(exc):
        return "a host key is not trusted yet"
    code = getattr(exc, "errno", None)
    if code == errno.ECONNREFUSED:
        return (f"the connection to port {port} was refused: no SSH server listens there "
                "(is sshd running? is the port right?)")
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "there is no route to the host (wrong address or network down?)"
    if isinstance(exc, (EOFError, paramiko.SSHException)):
        return "the SSH handshake failed (is it an SSH server on that port?)"
    return "the connection failed"


class Host:
    """One open SSH connection to one host of the target."""

    def __init__(self, spec: HostSpec, python: str, opts: SshOptions, echo: Echo):
        self.spec, self.python, self.opts, self.echo = spec, python, opts, echo
        self.conn: Any = None
        self.gateways: list[Any] = []  # ProxyJump hops, closed with the connection

    @property
    def name(self) -> str:
        return self.spec.host

    def where(self) -> str:
        s = self.spec
        return f"{s.user + '@' if s.user else ''}{s.address}{':' + str(s.port) if s.port else ''}"

    def _known_hosts(self, conn: Any) -> Path:
        return Path(os.path.expanduser(self.opts.known_hosts or str(
            conn.ssh_config.get("userknownhostsfile", "~/.ssh/known_hosts")).split()[0]))

    def _check_keys(self, conn: Any, label: str) -> Path:
        """Load the known-hosts file into ``conn``'s client and set the policy for unknown keys
        (Fabric's default, AutoAddPolicy, would accept any key)."""
        known = self._known_hosts(conn)
        client = conn.client
        if known.exists():
            client.load_host_keys(str(known))
        client.set_missing_host_key_policy(
            _HostKeyPolicy(known, self.opts.accept_new_host_keys, self.echo, label))
        return known

    def connect(self) -> None:
        import logging

        import paramiko
        from fabric import Config, Connection

        # paramiko's transport thread logs a failed handshake with its traceback; with no
        # handler configured Python prints that on stderr. The failure is reported once, as a
        # sentence (connect_failure), instead.
        quiet = logging.getLogger("paramiko")
        if not any(isinstance(h, logging.NullHandler) for h in quiet.handlers):
            quiet.addHandler(logging.NullHandler())

        cfg = Config(runtime_ssh_path=os.path.expanduser(self.opts.ssh_config)) \
            if self.opts.ssh_config else Config()
        conn = Connection(self.spec.address, user=self.spec.user, port=self.spec.port,
                          config=cfg, connect_timeout=self.opts.connect_timeout)
        known = self._check_keys(conn, "")
        # Every hop of a ProxyJump chain gets the target's known-hosts policy. A ProxyCommand
        # (a string) is an external command: its own ssh checks its hop's keys.
        hops: dict[str, str] = {}
        gw = conn.gateway
        while gw is not None and not isinstance(gw, (str, bool)):
            where = f"{gw.user + '@' if gw.user else ''}{gw.host}" + (
                f":{gw.port}" if gw.port != 22 else "")
            hop_known = self._check_keys(gw, f"ProxyJump host {where}: ")
            if gw.connect_timeout is None:
                gw.connect_timeout = self.opts.connect_timeout
            hops[gw.host if gw.port == 22 else f"[{gw.host}]:{gw.port}"] = f"{where}|{hop_known}"
            self.gateways.append(gw)
            gw = gw.gateway
        try:
            conn.open()
        except paramiko.BadHostKeyException as exc:
            where, file = self.where(), known
            if exc.hostname in hops:
                w, f = hops[exc.hostname].split("|", 1)
                where, file = f"ProxyJump host {w}", Path(f)
            raise DeployError(
                f"{self.name}: host key of {where} CHANGED: it offered "
                f"{exc.key.get_name()} {_fingerprint(exc.key)}, {file} has "
                f"{_fingerprint(exc.expected_key)}. Someone may be intercepting the connection; "
                f"if the host was reinstalled, remove the old key (ssh-keygen -f {file} -R "
                f"{exc.hostname}) and deploy again") from None
        except Exception as exc:  # noqa: BLE001 - every connect failure is reported the same way
            raise DeployError(f"{self.name}: cannot connect to {self.where()}: "
                              f"{connect_failure(exc, self.spec, self.opts.connect_timeout)} "
                              f"({type(exc).__name__}: {exc})") from None
        self.conn = conn

    def close(self) -> None:
        for c in [self.conn, *self.gateways]:  # Fabric leaves a gateway open
            if c is not None:
                try:
                    c.close()
                except Exception:  # noqa: BLE001
                    pass

    def run(self, cmd: str, what: str, check: bool = True) -> Any:
        try:
            r = self.conn.run(cmd, hide=True, warn=True, in_stream=False)
        except Exception as exc:  # noqa: BLE001 - a dropped connection, a closed channel...
            raise DeployError(f"{self.name}: {what}: connection failed: "
                              f"{type(exc).__name__}: {exc}") from None
        if check and r.exited != 0:
            err = (r.stderr.strip() or r.stdout.strip())[-2000:]
            if r.exited == 127 and "cannot run it here" not in err:  # (the agent's own 127)
                err = f"{self.python!r} not found on the host ({err})"
            raise DeployError(f"{self.name}: {what} failed (exit {r.exited}): {err}")
        return r

    def py(self, command: str, args: dict[str, Any], what: str) -> Any:
        r = self.run(agent_command(self.python, command, args), what)
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise DeployError(f"{self.name}: {what}: unexpected output: {r.stdout[-500:]!r} "
                              f"{r.stderr[-500:]!r}") from None

    def host_script(self, *args: str, what: str) -> str:
        root = self.spec.root
        r = self.run(f"SGLGEN_ROOT={shlex.quote(root)} bash {shlex.quote(root + '/sgl-gen-host.sh')} "
                     + " ".join(shlex.quote(a) for a in args), what)
        return str(r.stdout)

    # -- file transfer --
    def put(self, rel: str, data: bytes, mode: int) -> None:
        """Upload to a temporary name, set the mode, rename over the old file. ``rel``: a path
        under the host's root, or an absolute one (the systemd unit directory)."""
        dest = rel if rel.startswith("/") else f"{self.spec.root}/{rel}"
        tmp = f"{dest}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
        try:
            sftp = self.conn.sftp()
            sftp.putfo(io.BytesIO(data), tmp, file_size=len(data), confirm=True)
            sftp.chmod(tmp, mode)
            sftp.posix_rename(tmp, dest)
        except Exception as exc:  # noqa: BLE001
            raise DeployError(f"{self.name}: uploading {dest}: {type(exc).__name__}: {exc}") \
                from None


def parallel(items: Iterable[T], fn: Callable[[T], Any], workers: int = 32) -> list[Any]:
    """fn over items in threads; every failure collected, raised together as one DeployError."""
    items = list(items)
    if not items:
        return []
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        futures = [pool.submit(fn, it) for it in items]
        results, errors = [], []
        for f in futures:
            try:
                results.append(f.result())
            except SglGenError as exc:
                errors.append(exc.message)
                results.append(None)
    if errors:
        raise DeployError("\n".join(errors))
    return results

