"""The systemd test hosts themselves: systemd as PID 1 over SSH, Restart=on-failure after SIGKILL,
journalctl, a reboot that keeps an enabled unit (and alice's lingering user unit), hosts reaching
each other, this machine's Python (with sglang_router) bind-mounted into a host and run by root and
by alice; alice's `systemctl --user` over plain ssh, her units dying with her last session without
lingering and outliving it with, her journal. Run with ``-s`` to see the timings."""

from __future__ import annotations

import fcntl
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests import systemdhosts
from tests.systemdhosts import SystemdHosts
from tests.tools import missing

pytestmark = pytest.mark.slow

# CI keeps the rootfs outside its fresh clone (.ci/run sets it); by hand: the repo's .cache/
CACHE = Path(os.environ.get("SGLGEN_ROOTFS_CACHE", Path(__file__).resolve().parent.parent / ".cache"))
PY = sys.executable  # bind-mounted read-only at the same path (python_binds)


_wait = systemdhosts.wait_for


@pytest.fixture(scope="module")
def rootfs():
    why = systemdhosts.available()
    if why:  # under SGLGEN_STRICT=1 (CI) a missing tool fails instead of skipping
        missing(f"systemd test hosts: {why}")
    path = CACHE / f"systemd-rootfs-{systemdhosts.rootfs_cache_key()}"
    if not (path / systemdhosts.ROOTFS_MARK).exists():
        if shutil.which("mmdebstrap") is None and shutil.which("apt-get") is None:
            missing("no cached rootfs and neither mmdebstrap nor apt-get to build one")
        t0 = time.monotonic()
        systemdhosts.build_rootfs(path)
        print(f"\nrootfs built in {time.monotonic() - t0:.1f} s")
    return path


def _ours() -> list[str]:
    """Everything of these hosts visible on the machine: namespaces, links, cgroups, dirs."""
    found = [line.split()[0] for line in systemdhosts._run("ip", "netns", "list").stdout
             .splitlines() if line.startswith(systemdhosts.NS_PREFIX)]
    for line in systemdhosts._run("ip", "-o", "link", "show").stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(systemdhosts.VETH_PREFIX) or name == systemdhosts.BRIDGE:
            found.append(name)
    for root in systemdhosts._cgroup_roots():
        found += [str(p) for p in root.glob(systemdhosts.CGROUP_PREFIX + "-*")]
    found += [str(p) for p in Path(tempfile.gettempdir()).glob("sgl-gen-sysdhosts-*")]
    return found


def _ours_now() -> list[str]:
    """_ours() while holding the hosts' lock: another run of these hosts (another pytest on the
    machine) may be waiting for it, and would make its own things the moment we let it go."""
    fd = os.open(systemdhosts.LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return _ours()
    finally:
        os.close(fd)


def test_a_killed_run_is_cleaned_up_by_the_next(rootfs):
    """Runs before the module's hosts exist (it needs the lock): a process that boots a host and
    dies by SIGKILL leaves machines, namespaces and cgroups behind; the next run removes them."""
    crash = ("import os, signal, sys; sys.path.insert(0, sys.argv[1]); import systemdhosts as s\n"
             "h = s.SystemdHosts(2, rootfs=sys.argv[2]); h.__enter__()\n"
             "os.kill(os.getpid(), signal.SIGKILL)\n")
    r = subprocess.run([sys.executable, "-c", crash, str(Path(__file__).parent), str(rootfs)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr
    assert len(_ours()) >= 2 + 2 + 1 + 2, _ours()  # namespaces, veths, bridge, cgroups, dir
    with SystemdHosts(1, rootfs=rootfs) as hs:
        assert hs.ssh(hs.hosts[0], "systemctl is-system-running --wait").stdout.strip() \
            == "running"
        left = _ours()
        assert not any("sglgen-sysd-1" in x or x.endswith("sglsv1") for x in left), left
    assert _ours_now() == []


@pytest.fixture(scope="module")
def hosts(rootfs):
    t0 = time.monotonic()
    with SystemdHosts(3, rootfs=rootfs, binds=systemdhosts.python_binds()) as hs:
        print(f"\n3 hosts up in {time.monotonic() - t0:.2f} s; boot-to-ssh: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in hs.boot_seconds.items()))
        yield hs
        t0 = time.monotonic()
    print(f"torn down in {time.monotonic() - t0:.2f} s")
    assert _ours_now() == []


def _show(hs: SystemdHosts, host, unit: str, *props: str) -> dict[str, str]:
    out = hs.ssh(host, f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_system_is_running(hosts):
    for h in hosts.hosts:
        r = hosts.ssh(h, "systemctl is-system-running --wait", check=False)
        state = r.stdout.strip()
        failed = hosts.ssh(h, "systemctl --failed --no-legend --plain").stdout.strip()
        print(f"{h.name}: {state}; failed units: {failed or 'none'}")
        assert state in ("running", "degraded"), (state, failed)
        assert hosts.ssh(h, "cat /proc/1/comm; hostname").stdout.split() == ["systemd", h.name]


def test_hosts_reach_each_other(hosts):
    probe = ("import socket,sys\n"
             "for a in sys.argv[1:]: socket.create_connection((a, 22), timeout=3).close()\n")
    for h in hosts.hosts:
        others = [o.address for o in hosts.hosts if o is not h]
        hosts.ssh(h, f"python3 -c {shlex.quote(probe)} " + " ".join(others))
        # names from the bind-mounted /etc/hosts, resolving without a resolver
        assert hosts.ssh(h, "getent hosts sd0").stdout.split() == [hosts.hosts[0].address, "sd0"]


UNIT = """[Unit]
Description=sgl-gen test server
[Service]
ExecStart=/bin/sh -c 'echo sglgen-demo-started; exec {py} -m http.server 8000 --bind {addr}'
Restart=on-failure
RestartSec=0.2
[Install]
WantedBy=multi-user.target
"""


def _install_unit(hs: SystemdHosts, host, name: str) -> None:
    text = UNIT.format(py=PY, addr=host.address)
    hs.ssh(host, f"cat > /etc/systemd/system/{name}.service <<'EOF'\n{text}EOF\n"
                 "systemctl daemon-reload")


def _serves(hs: SystemdHosts, client, addr: str) -> bool:
    get = f"import urllib.request as u; u.urlopen('http://{addr}:8000/', timeout=2).read()"
    return hs.ssh(client, f"python3 -c {shlex.quote(get)}", check=False).returncode == 0


def test_restart_on_failure_after_sigkill(hosts):
    h, other = hosts.hosts[0], hosts.hosts[1]
    _install_unit(hosts, h, "sglgen-demo")
    hosts.ssh(h, "systemctl start sglgen-demo")
    first = _show(hosts, h, "sglgen-demo", "MainPID", "NRestarts", "ActiveState")
    assert first["ActiveState"] == "active" and first["NRestarts"] == "0", first
    _wait("the server to answer", lambda: _serves(hosts, other, h.address))
    t0 = time.monotonic()
    hosts.ssh(h, f"kill -9 {first['MainPID']}")

    def restarted():
        s = _show(hosts, h, "sglgen-demo", "MainPID", "NRestarts", "ActiveState")
        return s if s["NRestarts"] == "1" and s["ActiveState"] == "active" else None

    now = _wait("NRestarts=1", restarted)
    assert now["MainPID"] != first["MainPID"]
    _wait("the restarted server to answer", lambda: _serves(hosts, other, h.address))
    print(f"SIGKILL to serving again: {time.monotonic() - t0:.2f} s")
    log = hosts.ssh(h, "journalctl -u sglgen-demo --no-pager -o cat").stdout
    assert log.count("sglgen-demo-started") == 2, log
    assert "status=9/KILL" in log or "signal=KILL" in log, log


def test_transient_unit(hosts):
    h = hosts.hosts[2]
    hosts.ssh(h, "systemd-run --unit=sglgen-transient -p Restart=on-failure -p RestartSec=0.2 "
                 "/bin/sh -c 'echo transient-up; exec sleep infinity'")
    pid = _wait("the transient unit", lambda: _show(hosts, h, "sglgen-transient",
                                                    "MainPID")["MainPID"] not in ("", "0")
                and _show(hosts, h, "sglgen-transient", "MainPID")["MainPID"])
    hosts.ssh(h, f"kill -9 {pid}")
    _wait("NRestarts=1", lambda: _show(hosts, h, "sglgen-transient", "NRestarts",
                                       "ActiveState") == {"NRestarts": "1",
                                                          "ActiveState": "active"})
    assert "transient-up" in hosts.ssh(h, "journalctl -u sglgen-transient -o cat").stdout
    hosts.ssh(h, "systemctl stop sglgen-transient")


def test_reboot_brings_enabled_unit_back(hosts):
    h, other = hosts.hosts[1], hosts.hosts[0]
    _install_unit(hosts, h, "sglgen-boot")
    hosts.ssh(h, "systemctl enable --now sglgen-boot && echo kept > /root/kept")
    hosts.enable_linger(h)
    _user_unit(hosts, h, "alice-boot", enable=True)
    _wait("the server to answer", lambda: _serves(hosts, other, h.address))
    off = hosts.poweroff(h)
    assert not _serves(hosts, other, h.address)
    t0 = time.monotonic()
    to_ssh = hosts.boot(h)
    _wait("sglgen-boot active", lambda: hosts.ssh(h, "systemctl is-active sglgen-boot",
                                                 check=False).stdout.strip() == "active")
    to_active = time.monotonic() - t0
    _wait("the server to answer", lambda: _serves(hosts, other, h.address))
    print(f"poweroff {off:.2f} s; boot-to-ssh {to_ssh:.2f} s; boot-to-unit-active "
          f"{to_active:.2f} s")
    assert hosts.ssh(h, "cat /root/kept").stdout.strip() == "kept"
    # lingering survives the reboot: alice's manager and her enabled unit (WantedBy=default.target)
    # are up before she logs in (asked as root: a login of hers would start them anyway)
    assert hosts.ssh(h, "ls /var/lib/systemd/linger").stdout.split() == [systemdhosts.USER]
    _wait("alice's unit after the boot", lambda: _alice_pids(hosts, h, "alice-boot"))
    assert _ushow(hosts, h, "alice-boot", "ActiveState")["ActiveState"] == "active"
    # the journal is persistent (/var/log/journal in the upper directory): both boots are there
    boots = hosts.ssh(h, "journalctl --list-boots --no-pager | wc -l").stdout.strip()
    assert int(boots) >= 2, boots


def test_bind_mounted_python_runs_the_router(hosts):
    h = hosts.hosts[2]
    r = hosts.ssh(h, f"{PY} -m sglang_router.launch_router --help")
    assert "--worker-urls" in r.stdout
    # the rootfs's own python3 is untouched
    assert hosts.ssh(h, "/usr/bin/python3 -c 'import sys; print(sys.prefix)'").stdout.strip() \
        == "/usr"


# -- alice: the non-root login user --

USER_UNIT = """[Unit]
Description=sgl-gen test user unit
[Service]
ExecStart=%h/bin/marker {name}
[Install]
WantedBy=default.target
"""
# prints "<name>-up", then sleeps as "sgl-marker-<name>" (what _alice_pids looks for)
MARKER = '#!/bin/bash\necho "$1-up"\nexec -a "sgl-marker-$1" sleep infinity\n'


def _user_unit(hs: SystemdHosts, host, name: str, enable: bool) -> None:
    """As alice: ~/bin/marker and ~/.config/systemd/user/<name>.service, started (and enabled)."""
    hs.ssh(host, "mkdir -p ~/bin ~/.config/systemd/user && "
                 f"printf %s {shlex.quote(MARKER)} > ~/bin/marker && chmod +x ~/bin/marker && "
                 f"printf %s {shlex.quote(USER_UNIT.format(name=name))} "
                 f"> ~/.config/systemd/user/{name}.service && systemctl --user daemon-reload && "
                 f"systemctl --user {'enable --now' if enable else 'start'} {name}",
           user=systemdhosts.USER)


def _ushow(hs: SystemdHosts, host, unit: str, *props: str) -> dict[str, str]:
    out = hs.ssh(host, f"systemctl --user show {unit} " + " ".join(f"-p {p}" for p in props),
                 user=systemdhosts.USER).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def _alice_pids(hs: SystemdHosts, host, name: str) -> list[str]:
    """As root (no session of alice's): the pids of alice's ``marker name``."""
    return hs.ssh(host, f"pgrep -u {systemdhosts.USER} -f '^sgl-marker-{name}( |$)'",
                  check=False).stdout.split()


def _alice_procs(hs: SystemdHosts, host) -> str:
    return hs.ssh(host, f"pgrep -a -u {systemdhosts.USER}", check=False).stdout


def _sessions(hs: SystemdHosts, host) -> list[str]:
    out = hs.ssh(host, "loginctl list-sessions --no-legend").stdout
    return [line for line in out.splitlines() if f" {systemdhosts.USER} " in f" {line} "]


def test_alice_gets_systemctl_user_over_plain_ssh(hosts):
    h = hosts.hosts[0]
    cfg = hosts.ssh_config_for(systemdhosts.USER).read_text()
    assert f"User {systemdhosts.USER}\n" in cfg and str(hosts.known_hosts) in cfg
    # no tty, no login shell: pam_systemd still makes it a logind session with a runtime dir
    env = hosts.ssh(h, "id -un; id -u; echo $XDG_RUNTIME_DIR; echo ${DBUS_SESSION_BUS_ADDRESS:-none}",
                    user=systemdhosts.USER).stdout.split()
    assert env == [systemdhosts.USER, str(systemdhosts.USER_UID),
                   f"/run/user/{systemdhosts.USER_UID}", "none"], env
    state = hosts.ssh(h, "systemctl --user is-system-running --wait", user=systemdhosts.USER,
                      check=False).stdout.strip()
    assert state in ("running", "degraded"), state
    # XDG_RUNTIME_DIR is what systemctl --user needs (there is no session bus to fall back to)
    r = hosts.ssh(h, "env -u XDG_RUNTIME_DIR systemctl --user is-system-running",
                  user=systemdhosts.USER, check=False)
    assert r.returncode != 0 and "Failed to connect to bus" in r.stderr, r


def test_without_lingering_alice_units_end_with_her_session(hosts):
    h = hosts.hosts[0]
    linger = hosts.ssh(h, "loginctl show-user alice -p Linger", user=systemdhosts.USER).stdout
    assert linger.strip() == "Linger=no"
    assert hosts.ssh(h, "test -e /var/lib/systemd/linger/alice", check=False).returncode == 1
    _user_unit(hosts, h, "alice-nolinger", enable=False)
    assert _alice_pids(hosts, h, "alice-nolinger")
    t0 = time.monotonic()
    # her last session gone, logind stops her manager (UserStopDelaySec=10 s) and every unit in it
    _wait("alice's manager to stop", lambda: hosts.ssh(
        h, f"systemctl is-active user@{systemdhosts.USER_UID}.service",
        check=False).stdout.strip() == "inactive", timeout=40, interval=0.5)
    print(f"no lingering: alice's units stopped {time.monotonic() - t0:.1f} s after her logout")
    assert not _alice_pids(hosts, h, "alice-nolinger")
    assert _alice_procs(hosts, h) == ""


def test_lingering_alice_units_outlive_her_session(hosts):
    h = hosts.hosts[2]
    hosts.enable_linger(h)
    assert hosts.ssh(h, "loginctl show-user alice -p Linger", user=systemdhosts.USER).stdout \
        .strip() == "Linger=yes"
    _user_unit(hosts, h, "alice-demo", enable=True)
    hosts.ssh(h, "systemd-run --user --unit=alice-transient -p Restart=on-failure "
                 "~/bin/marker alice-transient", user=systemdhosts.USER)
    pid = _ushow(hosts, h, "alice-demo", "MainPID")["MainPID"]
    tpid = _ushow(hosts, h, "alice-transient", "MainPID")["MainPID"]
    assert pid not in ("", "0") and tpid not in ("", "0")
    # no session of hers is left, and logind says so: the manager stays
    _wait("alice's sessions to end", lambda: not _sessions(hosts, h), timeout=20)
    assert hosts.ssh(h, "loginctl show-user alice -p State").stdout.strip() == "State=lingering"
    assert _alice_pids(hosts, h, "alice-demo") == [pid]
    assert _alice_pids(hosts, h, "alice-transient") == [tpid]
    now = _ushow(hosts, h, "alice-demo", "MainPID", "ActiveState")
    assert now == {"MainPID": pid, "ActiveState": "active"}, now
    assert _ushow(hosts, h, "alice-transient", "MainPID")["MainPID"] == tpid
    # her journal: she reads her unit's lines; root reads them by the user-unit field
    mine = hosts.ssh(h, "journalctl --user -u alice-demo -o cat --no-pager",
                     user=systemdhosts.USER).stdout
    assert "alice-demo-up" in mine, mine
    root = hosts.ssh(h, "journalctl _SYSTEMD_USER_UNIT=alice-demo.service -o cat --no-pager").stdout
    assert "alice-demo-up" in root, root
    assert "alice-transient-up" in hosts.ssh(
        h, "journalctl --user -u alice-transient -o cat --no-pager", user=systemdhosts.USER).stdout
    # the system's journal is not hers to read (she is in no systemd-journal/adm group)
    hosts.ssh(h, "logger -t sglgen-rootonly root-only-line")
    assert "root-only-line" in hosts.ssh(h, "journalctl -t sglgen-rootonly -o cat").stdout
    assert "root-only-line" not in hosts.ssh(h, "journalctl -t sglgen-rootonly -o cat -q",
                                             user=systemdhosts.USER).stdout
    hosts.disable_linger(h)
    _wait("alice's processes to end", lambda: not _alice_procs(hosts, h), timeout=20)
    assert hosts.ssh(h, "loginctl show-user alice -p Linger", user=systemdhosts.USER).stdout \
        .strip() == "Linger=no"


def test_alice_runs_the_bind_mounted_python(hosts):
    h = hosts.hosts[1]
    assert hosts.ssh(h, "stat -c %a /root").stdout.strip() == "711"
    assert hosts.ssh(h, f"{PY} -c 'import sglang_router, jinja2; print(sglang_router.__name__)'",
                     user=systemdhosts.USER).stdout.strip() == "sglang_router"
    r = hosts.ssh(h, f"{PY} -m sglang_router.launch_router --help", user=systemdhosts.USER)
    assert "--worker-urls" in r.stdout
