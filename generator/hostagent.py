"""The code sgl-gen runs on the deployment's hosts: one stdlib-only module, one subcommand each.

``sgl-gen deploy`` (generator/deploy/) runs it on a host with the deployment's own interpreter
as ``python -c <this file's source> SUBCOMMAND JSON`` (its ``__main__`` block calls main): nothing
is uploaded for it, and each call carries the code it runs. The subcommands, each reading its
arguments from one JSON object and printing JSON on stdout:

* ``probe``: what a deploy needs to know about a host (Python modules, GPUs, free disk, listening
  ports, the files under the root with their hashes, the manifest, the units' states; on a
  container host the runtime, the image's id, pulled first with ``pull``, and its SGLang);
* ``poll``: the units' states, HTTP checks of their endpoints and the tails of their logs (and
  with ``container``, each unit's container as ``<kind> container inspect`` reports it);
* ``wait``: watches units come up, one JSON event a line (``ready``, ``dead``, ``timeout``,
  ``tick``) until all are ready, one dies, the abort file appears or time runs out;
* ``start``: started detached; runs ``sgl-gen-host.sh start`` for the units as a child
  subreaper, so their exit statuses are recorded (run/<unit>.exit) while the deploy waits;
* ``http``: one call to a router's API;
* ``states``: the units' states alone;
* ``sd-start``: ``systemctl start|restart --no-block`` of units, returning once their jobs were
  dispatched (a new InvocationID), with the NRestarts a ``wait`` compares with;
* ``systemctl`` / ``journal``: systemctl or journalctl with the flags and environment of the
  SSH user's manager (``--user`` and ``XDG_RUNTIME_DIR`` for a non-root user).

Under the systemd supervisor (``"supervisor": {"kind": "systemd", ...}`` in the arguments) the
units' states come from ``systemctl show`` (ActiveState, SubState, MainPID, NRestarts...) and
their output from the journal; under bash from pidfiles and logs/.

It also holds the ``Authorization`` header of sgl-gen's own calls to a router started with
``--api-key`` (generator/routerauth.py re-exports it for the generator's side): a router whose
argv has ``--api-key {env: NAME}`` answers ``GET /workers`` (and every other non-health path)
with 401 without ``Authorization: Bearer <key>`` (sglang-router 0.3.2, smg 1.13). The key is read
where the router runs, the way its unit script reads it: the environment, then
``runtime.secrets_env_file`` sourced by bash (``set -a; . FILE``), so a value in that file wins.
The value travels only through a pipe from that bash into this process: never in argv, a file, a
log or an SSH command line.

Hence: it imports nothing but the standard library (tests/test_layout.py), has no top-level
effects, and stays compatible with the hosts' Python (3.9+).
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import json
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

# ---------------------------------------------------------------------------------------------
# The router's API key

# bash does the reading so that quoting, `export`, comments and `$OTHER` references in the file
# mean what they mean to the unit scripts; the file is sourced only when readable, as they do
_READ = ('if [[ -n "$1" && -r "$1" ]]; then set -a; . "$1" >/dev/null 2>&1 </dev/null; set +a; fi; '
         'printf %s "${!2-}"')
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def api_key_env(argv: Any) -> str | None:
    """The variable a router reads ``--api-key`` from: the plan's router argv holds it as
    ``{"env": NAME}`` (plan.json) or an object with ``.name`` (an EnvRef); None without one."""
    tokens = list(argv or ())
    for i, flag in enumerate(tokens[:-1]):
        if flag == "--api-key":
            value = tokens[i + 1]
            name = value.get("env") if isinstance(value, dict) else getattr(value, "name", None)
            return name if isinstance(name, str) and _ENV_NAME.fullmatch(name) else None
    return None


def router_api_key(env: str | None, secrets_env_file: str | None) -> str:
    """The value of the router's ``--api-key`` here ("" when it has none or it is unset)."""
    if not env or not _ENV_NAME.fullmatch(env):
        return ""
    try:
        r = subprocess.run(["bash", "-c", _READ, "sgl-gen-router-auth", secrets_env_file or "",
                            env], capture_output=True, stdin=subprocess.DEVNULL, timeout=30,
                           check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    # latin-1 maps each byte to one character, which http.client sends back as that byte
    return r.stdout.decode("latin-1")


def router_auth(env: str | None, secrets_env_file: str | None) -> dict[str, str]:
    """The headers that authenticate sgl-gen to the router: ``{}`` when the router has no
    ``--api-key`` or its variable is empty here (the router then answers 401, and the caller
    reports that)."""
    value = router_api_key(env, secrets_env_file)
    return {"Authorization": "Bearer " + value} if value else {}


# ---------------------------------------------------------------------------------------------
# Units' states (the same rules as sgl-gen-host.sh)


def _alive(pid: int, start: int | None, pidfile: str) -> bool:
    # the same identity rule as sgl-gen-host.sh's unit_proc: the process must lead its own
    # session and group (setsid) and have the start time the pidfile records (field 22 of
    # /proc/PID/stat, counted after the last ")": comm may hold spaces and parentheses); an
    # old one-number pidfile only names a session leader that started before it was written
    if pid <= 1:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            x = f.read().rsplit(b")", 1)[1].split()
        state, pgrp, sid, began = x[0], int(x[2]), int(x[3]), int(x[19])
    except (OSError, IndexError, ValueError):
        return False
    if state in (b"Z", b"X") or pgrp != pid or sid != pid:
        return False
    if start is not None:
        return began == start
    try:
        with open("/proc/stat") as f:
            btime = next(int(ln.split()[1]) for ln in f if ln.startswith("btime "))
        return btime + began // os.sysconf("SC_CLK_TCK") <= int(os.stat(pidfile).st_mtime) + 1
    except (OSError, StopIteration, ValueError, IndexError):
        return False


def _left(pid: int, start: int | None) -> int:
    # the host script's group_left: live processes left in the group the unit's leader created
    # once it exited (a pid stays allocated while it is a group id, so while the group lives no
    # other process gets it; a live process with that pid and another start time means the pid
    # was reused); every member started after the leader, zombies are not counted
    if pid <= 1 or start is None:
        return 0
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            x = f.read().rsplit(b")", 1)[1].split()
        if x[0] not in (b"Z", b"X") and int(x[19]) != start:
            return 0
    except (OSError, IndexError, ValueError):
        pass
    n = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                x = f.read().rsplit(b")", 1)[1].split()
            if x[0] not in (b"Z", b"X") and int(x[2]) == pid and int(x[19]) >= start:
                n += 1
        except (OSError, IndexError, ValueError):
            pass
    return n


def unit_state(root: str, u: str) -> dict[str, Any]:
    """``{"state": "running"|"stopped"|"dead", "pid", "exit"[, "left"]}`` of unit ``u``."""
    run = os.path.join(root, "run")
    ex = None
    try:
        with open(os.path.join(run, u + ".exit")) as f:
            ex = int(f.read().strip())
    except (OSError, ValueError):
        pass
    pidfile = os.path.join(run, u + ".pid")
    try:
        with open(pidfile) as f:
            x = f.read().split()
        # "PID STARTTIME", or "PID" from an older sgl-gen
        if not 1 <= len(x) <= 2 or not all(v.isdigit() and v.isascii() for v in x):
            raise ValueError(x)
        pid, start = int(x[0]), (int(x[1]) if len(x) == 2 else None)
    except FileNotFoundError:
        return {"state": "stopped", "pid": None, "exit": ex}
    except (OSError, ValueError):
        return {"state": "dead", "pid": None, "exit": ex}
    if _alive(pid, start, pidfile):
        return {"state": "running", "pid": pid, "exit": ex}
    left = _left(pid, start)
    # "dead (N processes left in its group)" in the host script's status
    return {"state": "dead", "pid": pid, "exit": ex, **({"left": left} if left else {})}


def unit_states(root: str, names: Any) -> dict[str, dict[str, Any]]:
    """The states of ``names`` and of every unit with a pidfile under ``root``/run."""
    names = list(names)
    try:
        names += [f[:-4] for f in os.listdir(os.path.join(root, "run")) if f.endswith(".pid")]
    except OSError:
        pass
    return {u: unit_state(root, u) for u in dict.fromkeys(names)}


def log_tail(root: str, u: str, n: int) -> list[str] | None:
    """The last ``n`` lines of ``u``'s log (of its last 64 KiB), None without one."""
    try:
        with open(os.path.join(root, "logs", u + ".log"), "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 65536))
            return f.read().decode("utf-8", "replace").splitlines()[-n:]
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------
# systemd: root drives the system manager, any other user its own user manager (systemctl --user)

_SHOW = ("ActiveState", "SubState", "MainPID", "NRestarts", "ExecMainCode", "ExecMainStatus",
         "Result", "UnitFileState", "LoadState", "InvocationID", "NeedDaemonReload")
# the names of sgl-gen's unit files: plain file names, never a path
UNIT_FILE = re.compile(r"sgl-[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.(service|target)")
_MAX_UNIT_FILE = 1 << 20
# systemd's "process exited" journal message (EXIT_CODE=exited|killed|dumped, EXIT_STATUS)
_EXIT_MESSAGE = "98e322203f7a4ed290d09fe03c09fe15"
_CLD = {"1": "exited", "2": "killed", "3": "dumped"}  # ExecMainCode: si_code of the exit


def user_mode() -> bool:
    return os.geteuid() != 0


def sd_env() -> dict[str, str]:
    """The environment systemctl/journalctl need: ``systemctl --user`` reaches the user manager
    through ``$XDG_RUNTIME_DIR/systemd/private``; pam_systemd sets the variable for an SSH
    session, a host without it does not."""
    env = dict(os.environ)
    if user_mode():
        env.setdefault("XDG_RUNTIME_DIR", f"/run/user/{os.geteuid()}")
    return env


def sd_argv(tool: str, *args: str) -> list[str]:
    return [tool, *(["--user"] if user_mode() else []), *args]


def _sd(*args: str, timeout: float = 120) -> tuple[int, str, str]:
    try:
        r = subprocess.run(sd_argv("systemctl", *args), capture_output=True, text=True,
                           stdin=subprocess.DEVNULL, env=sd_env(), timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return -1, "", str(e)
    return r.returncode, r.stdout, r.stderr.strip()


def sd_show(services: list[str]) -> dict[str, dict[str, str]]:
    """``systemctl show`` of each service: one block per unit, in the order asked."""
    if not services:
        return {}
    rc, out, err = _sd("show", "-p", ",".join(_SHOW), "--", *services)
    if rc != 0:  # not "stopped": nothing is known (the caller reports it)
        return {name: {"ShowError": (err or f"exit {rc}")[-300:]} for name in services}
    blocks = out.strip("\n").split("\n\n")
    got: dict[str, dict[str, str]] = {}
    for i, name in enumerate(services[:len(blocks)]):  # (zip's strict= needs Python 3.10)
        got[name] = dict(ln.split("=", 1) for ln in blocks[i].splitlines() if "=" in ln)
    return got


def sd_state(p: dict[str, str]) -> dict[str, Any]:
    """A unit's state in the bash launcher's words (running / dead / stopped) plus systemd's."""
    if "ShowError" in p:
        return {"state": "unknown", "pid": None, "exit": None, "restarts": 0, "enabled": None,
                "invocation": "", "active": f"unknown (systemctl show failed: {p['ShowError']})"}
    a, s = p.get("ActiveState", ""), p.get("SubState", "")
    code = p.get("ExecMainCode", "0")
    status = int(p.get("ExecMainStatus") or 0)
    # like a waitstatus: an exit code, or minus the signal that killed it
    ex = None if code in ("", "0") else (status if code == "1" else -status)
    if p.get("LoadState") in ("not-found", ""):
        state = "stopped"
    elif s.startswith("auto-restart") or a == "failed":  # (252: auto-restart; 254+: -queued)
        state = "dead"
    elif a in ("active", "activating", "reloading"):
        state = "running"
    else:
        state = "stopped"
    pid = int(p.get("MainPID") or 0)
    return {"state": state, "pid": pid if pid and state == "running" else None, "exit": ex,
            "active": f"{a} ({s})" if s else a, "restarts": int(p.get("NRestarts") or 0),
            "enabled": p.get("UnitFileState") or None, "invocation": p.get("InvocationID", "")}


def sd_units(A: dict[str, Any], names: list[str]) -> dict[str, dict[str, Any]]:
    """The states of units ``names`` (and of those the manifest's systemd files name)."""
    prefix = f"sgl-{A['deployment']}-"
    services = {u: s for u, s in dict(A.get("services") or {}).items()
                if isinstance(s, str) and UNIT_FILE.fullmatch(s)}
    for f in A.get("installed") or ():
        if isinstance(f, str) and UNIT_FILE.fullmatch(f) and f.startswith(prefix) \
                and f.endswith(".service"):
            services.setdefault(f[len(prefix):-len(".service")], f)
    want = [u for u in dict.fromkeys(list(names) + list(services)) if u in services]
    shown = sd_show([services[u] for u in want])
    return {u: sd_state(shown.get(services[u], {})) for u in want}


def last_exit(service: str) -> str | None:
    """How the unit's main process last ended, from systemd's own journal record ("killed 9",
    "exited 2"; the same record of an ExecStartPre/Post command is not the main process), None
    when it never did (a clean exit is logged at debug level only) or the journal cannot tell."""
    try:
        r = subprocess.run(sd_argv("journalctl", "-u", service, f"MESSAGE_ID={_EXIT_MESSAGE}",
                                   "-n", "50", "-o", "json", "--no-pager", "-q"),
                           capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           env=sd_env(), timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in reversed(r.stdout.strip().splitlines()):
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        # COMMAND=ExecStart (systemd 252: "<unit>: Main process exited, code=killed, ...")
        if isinstance(ev, dict) and (ev.get("COMMAND") == "ExecStart" or (
                "COMMAND" not in ev and "Main process exited" in str(ev.get("MESSAGE", "")))):
            code, status = ev.get("EXIT_CODE"), ev.get("EXIT_STATUS")
            return f"{code} {status}" if code else None
    return None


def journal_tail(service: str, n: int) -> list[str] | None:
    try:
        r = subprocess.run(sd_argv("journalctl", "-u", service, "-n", str(n), "-o", "cat",
                                   "--no-pager", "-q"), capture_output=True, stdin=subprocess.DEVNULL,
                           env=sd_env(), timeout=30, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.decode("utf-8", "replace").splitlines()[-n:] if r.returncode == 0 else None


def systemd_info(A: dict[str, Any]) -> dict[str, Any]:
    """What deploy must know to drive systemd here: is it PID 1, which manager (system for
    root, the user's own otherwise), its unit directory and the unit files there, lingering."""
    uid = os.geteuid()
    try:
        pw = pwd.getpwuid(uid)
        user, home = pw.pw_name, pw.pw_dir
    except KeyError:
        user, home = str(uid), os.path.expanduser("~")
    mode = "user" if uid else "system"
    unit_dir = os.path.join(home, ".config/systemd/user") if uid else "/etc/systemd/system"
    out: dict[str, Any] = {"booted": os.path.isdir("/run/systemd/system"), "mode": mode,
                           "user": user, "uid": uid, "unit_dir": unit_dir, "installed": {},
                           "enabled": {}, "error": None,
                           "linger": os.path.exists(f"/var/lib/systemd/linger/{user}")
                           if uid else None}
    out["unit_dir_link"] = os.path.islink(unit_dir)
    asked = [n for n in A.get("unit_files") or () if isinstance(n, str) and UNIT_FILE.fullmatch(n)]
    for name in asked:
        p = os.path.join(unit_dir, name)
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
            out["installed"][name] = ["", st.st_mode & 0o777, "link" if stat.S_ISLNK(
                st.st_mode) else "special"]
            continue
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as f:
                data = f.read(_MAX_UNIT_FILE + 1)
            out["installed"][name] = [hashlib.sha256(data).hexdigest() if len(data) <= _MAX_UNIT_FILE
                                      else "", st.st_mode & 0o777]
        except OSError:
            out["installed"][name] = ["", st.st_mode & 0o777]
    if not out["booted"]:
        return out
    if uid:
        rc, text, err = _sd("is-system-running", timeout=30)
        if rc != 0 and not text.strip():
            out["error"] = err or f"exit {rc}"
            return out
    names = sorted(n for n in asked if n in out["installed"])
    out["need_reload"] = []
    shown = sd_show(names + ["-.slice"])
    # systemd 255+ says NeedDaemonReload=yes for every unit while any unit file anywhere changed
    # without a reload: trusted only when the root slice, which no one edits, says no
    global_flag = shown.get("-.slice", {}).get("NeedDaemonReload") == "yes"
    for name in names:
        props = shown.get(name, {})
        out["enabled"][name] = props.get("UnitFileState", "")
        if props.get("NeedDaemonReload") == "yes" and not global_flag:
            out["need_reload"].append(name)
    if A.get("target"):  # the deployment's target: enabled? active (started at boot)?
        out["target"] = sd_state(sd_show([A["target"]]).get(A["target"], {}))
    return out


def sd_start(A: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``systemctl start|restart --no-block`` the services, then wait (briefly) until each has a
    new invocation (its job was dispatched): a unit then reads "stopped" only once it stopped.
    Returns their states (the NRestarts a watch compares with)."""
    services = list(A["services"])
    before = {s: p.get("InvocationID", "") for s, p in sd_show(services).items()}
    _sd("reset-failed", "--", *services)
    rc, out, err = _sd(A.get("verb", "start"), "--no-block", "--", *services)
    if rc != 0:
        return {"error": {"rc": rc, "text": (err or out).strip()[-2000:]}}
    deadline = time.monotonic() + float(A.get("dispatch", 10))
    while True:
        shown = sd_show(services)
        fresh = [s for s in services if shown.get(s, {}).get("InvocationID", "") not in
                 ("", before.get(s, "")) or shown.get(s, {}).get("ActiveState") == "failed"]
        if len(fresh) == len(services) or time.monotonic() > deadline:
            # "before": the invocation a start job has not replaced yet (it may wait for
            # network-online.target, or for a stop to finish): not started, not dead either
            return {s: dict(sd_state(shown.get(s, {})), before=before.get(s, ""))
                    for s in services}
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Subcommands


def supervised_states(A: dict[str, Any], names: list[str], manifest: Any = None
                      ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The units' states under the host's supervisor (``A["supervisor"]``: kind bash|systemd,
    deployment, services), and the units of this deployment running under the other one."""
    sup = dict(A.get("supervisor") or {"kind": "bash"})
    root = A["root"]
    sd_files = []
    if isinstance(manifest, dict) and isinstance(manifest.get("systemd"), dict):
        sd_files = sorted(manifest["systemd"].get("files") or {})
    sup["installed"] = sd_files
    booted = os.path.isdir("/run/systemd/system")
    if sup["kind"] == "systemd":
        units = sd_units(sup, names) if booted else {}
        other = {u: st for u, st in unit_states(root, []).items() if st["state"] == "running"}
        return units, other
    units = unit_states(root, names)
    other = {}
    if sd_files and booted and "deployment" in sup:
        # running, or about to be restarted by systemd (auto-restart): both must be stopped
        # only the units whose files the manifest lists (not every name the plan has)
        other = {u: st for u, st in sd_units(dict(sup, services={}), []).items()
                 if st["state"] in ("running", "dead") or st.get("enabled") == "enabled"}
    return units, other


# ---------------------------------------------------------------------------------------------
# Containers (runtime.container kind docker|podman): the runtime, the image, the units' containers

#: what the image's interpreter prints: its SGLang version (the catalog's must match)
_VERSION_CODE = "import sglang; print(sglang.__version__)"


def _ctr(argv: list[str], timeout: float) -> tuple[int, str, str]:
    """One call of the runtime's client: (exit status, stdout, stderr); 127 when it is missing,
    124 when it timed out."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        return r.returncode, r.stdout, r.stderr
    except FileNotFoundError:
        return 127, "", f"{argv[0]}: not found on PATH"
    except subprocess.TimeoutExpired:
        return 124, "", f"{' '.join(argv[:3])}: no answer within {timeout:g} s"
    except OSError as e:
        return 126, "", f"{argv[0]}: {e.strerror or e}"


def _last_line(text: str) -> str:
    lines = [x.strip() for x in text.strip().splitlines() if x.strip()]
    return lines[-1][:400] if lines else ""


def container_probe(c: dict[str, Any]) -> dict[str, Any]:
    """The runtime (usable by this user?), the image (pulled first with ``pull``; its id) and
    the SGLang version inside it."""
    kind, image = c["kind"], c["image"]
    out: dict[str, Any] = {"kind": kind, "image": {"id": None}, "runtime": {"ok": False},
                           "sglang": None}
    # docker version also asks the daemon: a missing daemon or socket permission fails here
    rc, so, se = _ctr([kind, "version"], 30)
    if rc != 0:
        out["runtime"] = {"ok": False, "error": _last_line(se or so) or f"exit {rc}",
                          "missing": rc == 127}
        return out
    out["runtime"] = {"ok": True}
    if c.get("pull"):
        rc, so, se = _ctr([kind, "pull", image], 3600)
        out["pull"] = {"ok": rc == 0, **({"error": _last_line(se or so)} if rc else {})}
    rc, so, se = _ctr([kind, "image", "inspect", "--format", "{{.Id}}", image], 60)
    if rc != 0 or not so.strip():
        out["image"] = {"id": None, "error": _last_line(se or so) or f"exit {rc}"}
        return out
    out["image"] = {"id": so.strip().splitlines()[0]}
    rc, so, se = _ctr([kind, "run", "--rm", "--network", "none", "--entrypoint",
                       c.get("python") or "python3", image, "-c", _VERSION_CODE], 300)
    version = so.strip().splitlines()[-1].strip() if rc == 0 and so.strip() else None
    out["sglang"] = {"version": version, **({} if version else {
        "error": _last_line(se or so) or f"exit {rc}"})}
    return out


def container_states(c: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Per unit, its container ``sgl-<deployment>-<unit>`` as the runtime reports it: id,
    status (running, exited...), exit code, start time; None where there is none."""
    kind, dep = c["kind"], c["deployment"]
    want = {f"sgl-{dep}-{u}": u for u in names}
    out: dict[str, Any] = {u: None for u in names}
    if not want:
        return out
    fmt = ("{{.Name}}\t{{.Id}}\t{{.State.Status}}\t{{.State.ExitCode}}\t{{.State.StartedAt}}"
           "\t{{index .Config.Labels \"sgl-gen.deployment\"}}")
    # an absent name makes the exit status non-zero; the others are still printed
    _, so, _ = _ctr([kind, "container", "inspect", "--format", fmt, *sorted(want)], 60)
    for line in so.splitlines():
        f = line.split("\t")
        if len(f) != 6 or f[0].lstrip("/") not in want or f[5] != dep:
            continue
        out[want[f[0].lstrip("/")]] = {"id": f[1], "status": f[2],
                                        "exit": int(f[3]) if f[3].lstrip("-").isdigit() else None,
                                        "started": f[4]}
    return out


# ---------------------------------------------------------------------------------------------
# What the engines will meet on the host (deploy without --rehearse, and `sgl-gen check`): the
# SGLang version, the model directories, the GPUs and who computes on them, network devices

#: NVIDIA's CSV queries (nvidia-smi --help-query-gpu / --help-query-compute-apps)
GPU_QUERY = ["--query-gpu=index,uuid,name,memory.total,memory.used",
             "--format=csv,noheader,nounits"]
APPS_QUERY = ["--query-compute-apps=pid,process_name,used_memory,gpu_uuid",
              "--format=csv,noheader,nounits"]


def _csv_rows(text: str, width: int, merge_at: int) -> list[list[str]]:
    """Rows of ``width`` cells; a row with more (a process name holding commas) has the cells
    from ``merge_at`` joined back into one."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) < width or not line.strip():
            continue
        extra = len(cells) - width
        rows.append(cells[:merge_at] + [",".join(cells[merge_at:merge_at + extra + 1])]
                    + cells[merge_at + extra + 1:])
    return rows


def _mib(cell: str) -> int | None:
    v = cell.split()[0] if cell.split() else ""
    return int(v) if v.isdigit() else None


def parse_gpus(text: str) -> list[dict[str, Any]]:
    """``index, uuid, name, memory.total, memory.used`` rows (noheader, nounits)."""
    out = []
    for c in _csv_rows(text, 5, 2):
        if c[0].isdigit():
            out.append({"index": int(c[0]), "uuid": c[1], "name": c[2],
                        "memory_total": _mib(c[3]), "memory_used": _mib(c[4])})
    return out


def parse_apps(text: str) -> list[dict[str, Any]]:
    """``pid, process_name, used_memory, gpu_uuid`` rows (noheader, nounits)."""
    out = []
    for c in _csv_rows(text, 4, 1):
        if c[0].isdigit():
            out.append({"pid": int(c[0]), "name": c[1], "used": _mib(c[2]), "gpu_uuid": c[3]})
    return out


def _proc_parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
        return int(text.rsplit(")", 1)[1].split()[1])  # after the (comm): state, ppid
    except (OSError, ValueError, IndexError):
        return None


def _proc_text(pid: int, name: str) -> str:
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read(65536).replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def owned_by(pid: int, own_pids: set[int], mark: str) -> bool:
    """Whether process ``pid`` belongs to one of this deployment's units: it or an ancestor is
    a unit's main process (bash launcher, systemd MainPID), its cgroup is a unit's
    (``sgl-<deployment>-*.service``), or an ancestor's command line names one of its containers
    (podman's conmon, docker's shim: ``sgl-<deployment>-<unit>``)."""
    if mark in _proc_text(pid, "cgroup"):
        return True
    seen = 0
    p: int | None = pid
    while p and p > 1 and seen < 64:
        if p in own_pids or mark in _proc_text(p, "cmdline"):
            return True
        p, seen = _proc_parent(p), seen + 1
    return False


def gpu_facts(own_pids: set[int] | None = None, mark: str = "") -> dict[str, Any]:
    rc, so, se = _ctr(["nvidia-smi", *GPU_QUERY], 60)
    if rc != 0:
        return {"error": _last_line(se or so) or f"exit {rc}", "missing": rc == 127}
    gpus = parse_gpus(so)
    rc, so, se = _ctr(["nvidia-smi", *APPS_QUERY], 60)
    apps = parse_apps(so) if rc == 0 else []
    by_uuid = {g["uuid"]: g["index"] for g in gpus}
    for a in apps:
        a["gpu"] = by_uuid.get(a["gpu_uuid"])
        a["ours"] = bool(mark) and owned_by(a["pid"], own_pids or set(), mark)
    return {"gpus": gpus, "apps": apps,
            **({} if rc == 0 else {"apps_error": _last_line(se or so) or f"exit {rc}"})}


def _hub_cache(env: dict[str, str]) -> str:
    get = {**os.environ, **env}.get
    if get("HF_HUB_CACHE"):
        return str(get("HF_HUB_CACHE"))
    home = get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    return os.path.join(home, "hub")


def _online(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """Whether the hub's name resolves within ``timeout`` (no request is sent)."""
    result: list[bool] = []

    def look() -> None:
        try:
            socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
            result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=look, daemon=True)
    t.start()
    t.join(timeout)
    return bool(result and result[0])


def model_facts(paths: list[str], env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    hub = [p for p in paths if not os.path.isabs(p)]
    offline = any(({**os.environ, **env}.get(v) or "").strip().lower() in ("1", "true", "yes",
                                                                            "on")
                  for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    online = (not offline and _online()) if hub else None
    cache = _hub_cache(env)
    for p in paths:
        if os.path.isabs(p):
            out[p] = {"kind": "dir", "exists": os.path.isdir(p),
                      "config": os.path.isfile(os.path.join(p, "config.json")),
                      "readable": os.access(p, os.R_OK | os.X_OK)}
        else:
            d = os.path.join(cache, "models--" + p.replace("/", "--"))
            out[p] = {"kind": "hub", "cached": os.path.isdir(os.path.join(d, "snapshots")),
                      "cache": cache, "online": online, "offline_env": offline}
    return out


def _names(path: str) -> list[str] | None:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return None


def host_checks(A: dict[str, Any], own_pids: set[int]) -> dict[str, Any]:
    """What the engines of this host need, as found (``A["needs"]``: spec.HostSpec.needs);
    ``own_pids``: the main processes of this deployment's running units."""
    needs = A["needs"]
    out: dict[str, Any] = {"sglang": None}
    if A.get("sglang"):
        rc, so, se = _ctr([sys.executable, "-c", _VERSION_CODE], 300)
        version = so.strip().splitlines()[-1].strip() if rc == 0 and so.strip() else None
        out["sglang"] = {"version": version, "python": sys.executable,
                         **({} if version else {"error": _last_line(se or so) or f"exit {rc}"})}
    out["models"] = model_facts(list(needs.get("models") or ()), dict(needs.get("env") or {}))
    mark = f"sgl-{A.get('deployment') or ''}-" if A.get("deployment") else ""
    out["gpu"] = gpu_facts(own_pids, mark) if needs.get("gpus") else None
    out["net"] = _names("/sys/class/net")
    out["ib"] = _names("/sys/class/infiniband") if needs.get("ib") else None
    return out


def probe(A: dict[str, Any]) -> dict[str, Any]:
    root = A["root"]
    out: dict[str, Any] = {"python": sys.version.split()[0], "modules": {}, "gpus": None,
                           "disk_free": None, "listen": [], "files": {}, "manifest": None,
                           "units": {}}
    for m in A["modules"]:
        out["modules"][m] = importlib.util.find_spec(m) is not None
    if A["gpus"]:
        try:
            r = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60)
            out["gpus"] = {"rc": r.returncode, "err": (r.stderr or r.stdout).strip()[-300:],
                           "lines": [x for x in r.stdout.splitlines() if x.startswith("GPU ")]}
        except (OSError, subprocess.SubprocessError) as e:
            out["gpus"] = {"rc": -1, "err": str(e), "lines": []}
    d = root
    while not os.path.isdir(d):
        d = os.path.dirname(d) or "/"
    out["disk_free"] = shutil.disk_usage(d).free
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                for line in f.read().splitlines()[1:]:
                    x = line.split()
                    if len(x) > 3 and x[3] == "0A":
                        out["listen"].append(int(x[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    try:
        with open(os.path.join(root, A["manifest"])) as f:
            out["manifest"] = json.load(f)
    except (OSError, ValueError):
        pass
    # Without a manifest nothing here is sgl-gen's: run/ and logs/ are listed like any other file.
    own = ("run", "logs", ".sgl-gen") if isinstance(out["manifest"], dict) else (".sgl-gen",)
    out["links"], out["more"] = [], 0
    want = set(A["want"])
    mine = set((out["manifest"] or {}).get("files") or ()) if own != (".sgl-gen",) else set()
    if os.path.isdir(root):
        for dp, dns, fns in os.walk(root):
            rel = os.path.relpath(dp, root)
            if rel == ".":
                dns[:] = [x for x in dns if x not in own]
            for dn in dns:
                if os.path.islink(os.path.join(dp, dn)):
                    out["links"].append(dn if rel == "." else rel + "/" + dn)
            for fn in fns:
                p = os.path.join(dp, fn)
                r = fn if rel == "." else rel + "/" + fn
                st = os.lstat(p)
                h = ""
                if os.path.islink(p):
                    out["links"].append(r)
                elif r not in want and r not in mine:  # not sgl-gen's: listed, never read
                    if len(out["files"]) >= A["max_files"]:
                        out["more"] += 1
                        continue
                elif os.path.isfile(p):
                    try:
                        with open(p, "rb") as fh:
                            h = hashlib.sha256(fh.read()).hexdigest()
                    except OSError:
                        pass
                out["files"][r] = [h, st.st_mode & 0o777]
    sec = A.get("secrets")
    if sec:
        try:
            st = os.stat(sec)
            out["secrets"] = {"exists": True, "regular": os.path.isfile(sec),
                              "mode": st.st_mode & 0o777, "readable": os.access(sec, os.R_OK)}
        except OSError as e:
            out["secrets"] = {"exists": False, "error": e.strerror or str(e)}
    sup = A.get("supervisor") or {}
    if sup.get("kind") == "systemd" or out["manifest"] is not None:
        names = [f for f in A.get("unit_files") or ()]
        man = out["manifest"] if isinstance(out["manifest"], dict) else {}
        if isinstance(man.get("systemd"), dict):
            names += list(man["systemd"].get("files") or {})
        if sup.get("kind") == "systemd" or names:
            target = f"sgl-{sup['deployment']}.target" if sup.get("deployment") else None
            out["systemd"] = systemd_info({"unit_files": sorted(set(names)), "target": target})
    out["units"], out["other_units"] = supervised_states(A, A["units"], out["manifest"])
    if A.get("container"):
        out["container"] = container_probe(A["container"])
    if A.get("needs") is not None:
        states = [*out["units"].values(), *out["other_units"].values()]
        own_pids = {int(st["pid"]) for st in states if isinstance(st, dict)
                    and st.get("state") == "running" and st.get("pid")}
        out["checks"] = host_checks(A, own_pids)
    return out


def poll(A: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"http": {}, "tails": {}}
    out["units"], out["other_units"] = supervised_states(A, A["units"], _manifest(A))
    if (A.get("supervisor") or {}).get("kind") == "systemd" and A.get("last_exit"):
        for st in out["units"].values():
            st["last_exit"] = None
        services = (A.get("supervisor") or {}).get("services") or {}
        for u, st in out["units"].items():
            if u in services:
                st["last_exit"] = last_exit(services[u])
    auth = {name: router_auth(name, A["secrets"]) for name in set(A["auth"].values())}
    for key, url in A["urls"].items():
        req = urllib.request.Request(url, headers=auth.get(A["auth"].get(key), {}))
        body: bytes
        try:
            with urllib.request.urlopen(req, timeout=3) as r:
                body = r.read(1 << 20)
                status = r.status
        except urllib.error.HTTPError as e:
            status, body = e.code, b""
        except Exception as e:
            status, body = 0, str(e).encode()
        try:
            parsed = json.loads(body) if key.endswith("/workers") and status == 200 else None
        except ValueError:
            parsed = None
        out["http"][key] = [status, parsed if parsed is not None
                            else body[:200].decode("utf-8", "replace")]
    for u in A["tails"]:
        out["tails"][u] = tail(A, u)
    if A.get("container"):
        out["containers"] = container_states(A["container"], A["units"])
    return out


def _manifest(A: dict[str, Any]) -> Any:
    try:
        with open(os.path.join(A["root"], A.get("manifest") or ".sgl-gen/manifest.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def tail(A: dict[str, Any], u: str) -> list[str] | None:
    """The end of unit ``u``'s output: its journal under systemd, else its log file."""
    sup = A.get("supervisor") or {}
    service = (sup.get("services") or {}).get(u)
    if sup.get("kind") == "systemd" and service:
        return journal_tail(service, A["lines"])
    return log_tail(A["root"], u, A["lines"])


def _get(url: str, headers: dict[str, str]) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=3) as r:
            body, status = r.read(1 << 20), r.status
    except urllib.error.HTTPError as e:
        return e.code, ""
    except Exception as e:
        return 0, str(e)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body[:200].decode("utf-8", "replace")


def _say(ev: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(ev) + "\n")
    sys.stdout.flush()


def watch_dead(st: dict[str, Any], base: Any) -> bool:
    if st.get("state") == "running":
        return isinstance(base, dict) and st.get("restarts", 0) > int(base.get("restarts", 0))
    if isinstance(base, dict) and st.get("state") == "stopped" and \
            st.get("invocation", "") == base.get("before", ""):
        return False  # its start job is still queued
    return True


def wait(A: dict[str, Any], say: Callable[[dict[str, Any]], None] = _say) -> None:
    root = A["root"]
    auth = {u: router_auth(name, A["secrets"]) for u, name in A["auth"].items()}

    def ok(u: str, got: tuple[int, Any]) -> bool:
        status, body = got
        if u not in A["expected"]:
            return status == 200
        if status != 200 or not isinstance(body, dict):
            return False
        ws = [w for w in body.get("workers", []) if isinstance(w, dict)]
        return sorted(str(w.get("url")) for w in ws) == sorted(A["expected"][u]) and all(
            w.get("is_healthy") for w in ws)

    pending = dict(A["checks"])
    last: dict[str, tuple[int, Any]] = {}
    deadline = time.monotonic() + A["timeout"]
    tick = 0
    while True:
        for u, url in list(pending.items()):
            last[u] = _get(url, auth.get(u, {}))
            if ok(u, last[u]):
                pending.pop(u)
                say({"ready": u})
        states, _ = supervised_states(A, A["watch"])
        base = A.get("restarts") or {}
        # under systemd a unit that died is restarted at once: a restart counts as an exit; a
        # start job not dispatched yet (its invocation is still the one before it) is pending
        dead = [u for u in A["watch"] if watch_dead(states.get(u, {}), base.get(u))]
        if dead:
            st = states.get(dead[0], {"state": "stopped", "exit": None})
            say({"dead": dead[0], "state": st["state"], "exit": st["exit"],
                 "active": st.get("active"), "tail": tail(A, dead[0])})
            break
        if not pending or os.path.exists(A["abort"]):
            break
        if time.monotonic() > deadline:
            first = sorted(pending)[0]
            say({"timeout": {u: [url, last.get(u, [0, "not checked"])]
                             for u, url in pending.items()},
                 "tail": tail(A, first)})
            break
        tick += 1
        if tick % 4 == 0:
            say({"tick": sorted(pending)})
        time.sleep(0.25)
    if A["finish"]:  # the deploy's last wait: its files go (the start helpers see the watch go)
        run = os.path.join(root, "run")
        for f in os.listdir(run) if os.path.isdir(run) else ():
            if f.startswith(A["finish"]):
                try:
                    os.unlink(os.path.join(run, f))
                except OSError:
                    pass


def start(A: dict[str, Any]) -> None:
    """Started detached with the units it starts: a child subreaper, so the units' exit statuses
    can be recorded (run/<unit>.exit) while the deploy waits; exits when the watch file goes or at
    timeout."""
    root, run = A["root"], os.path.join(A["root"], "run")
    os.makedirs(run, exist_ok=True)
    if A.get("manifest") is not None:  # what is deployed, recorded before the units start
        path = os.path.join(root, A["manifest_path"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            f.write(A["manifest"])
        os.replace(path + ".tmp", path)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass
    for u in A["units"]:
        try:
            os.unlink(os.path.join(run, u + ".exit"))
        except FileNotFoundError:
            pass
    with open(A["out"] + ".tmp", "w") as f:
        r = subprocess.run(["bash", os.path.join(root, "sgl-gen-host.sh"), "start"] + A["units"],
                           stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           env=dict(os.environ, SGLGEN_ROOT=root))
        f.write(f"@@rc {r.returncode}\n")
    os.rename(A["out"] + ".tmp", A["out"])
    pids = {}
    for u in A["units"]:
        try:
            with open(os.path.join(run, u + ".pid")) as f:
                pids[int(f.read().split()[0])] = u  # "PID STARTTIME"
        except (OSError, ValueError, IndexError):
            pass
    deadline = time.monotonic() + A["timeout"]
    while pids and time.monotonic() < deadline and os.path.exists(A["watch"]):
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            time.sleep(0.1)
            continue
        done = pids.pop(pid, None)
        if done is not None:
            with open(os.path.join(run, done + ".exit"), "w") as f:
                f.write(f"{os.waitstatus_to_exitcode(st)}\n")
    try:
        os.unlink(A["watch"])
    except FileNotFoundError:
        pass


def http(A: dict[str, Any]) -> list[Any]:
    """``[status, parsed JSON or text]`` of one call to a router's API, authenticated with its
    --api-key when it has one."""
    key = router_api_key(A.get("auth"), A.get("secrets"))
    body = A.get("body")
    if key and A.get("worker_key") and isinstance(body, dict):
        # a worker added by POST /workers gets no key from the router's own --api-key (smg 1.13
        # then never registers an engine that wants one): the engines share the router's key
        body = dict(body, api_key=key)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(A["url"], data=data, method=A["method"],
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": "Bearer " + key} if key else {})})
    raw: bytes
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, raw = r.status, r.read(1 << 20)
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read(4096)
    except Exception as e:
        status, raw = 0, str(e).encode()
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = raw[:300].decode("utf-8", "replace")
    return [status, parsed]


def http_many(A: dict[str, Any]) -> list[list[Any]]:
    """Several calls to one router's API in one go (``A["calls"]``: method, url, body,
    worker_key each; ``auth``, ``secrets`` as ``http``): their ``[status, body]`` in order."""
    return [http({**A, **c}) for c in A["calls"]]


def states(A: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The units' states alone (what probe and poll report as "units")."""
    return supervised_states(A, A["units"], _manifest(A))[0]


def systemctl(A: dict[str, Any]) -> None:
    """``systemctl [--user] ARGS`` with the environment a user manager needs; its output and
    exit status are the command's."""
    _exec(sd_argv("systemctl", *A["args"]))


def journal(A: dict[str, Any]) -> None:
    """``journalctl [--user]`` of the services (``-f``: follows)."""
    args = [x for s in A["services"] for x in ("-u", s)]
    args += ["-n", str(int(A.get("lines", 50))), "-o", A.get("output", "short-iso"),
             "--no-pager", "-q"] + (["-f"] if A.get("follow") else [])
    _exec(sd_argv("journalctl", *args))


def _exec(argv: list[str]) -> None:
    try:
        os.execvpe(argv[0], argv, sd_env())
    except OSError as e:
        sys.stderr.write(f"{argv[0]}: cannot run it here: {e.strerror or e}\n")
        sys.exit(127)


#: subcommand -> (function, prints its result as one JSON line)
COMMANDS: dict[str, tuple[Callable[[dict[str, Any]], Any], bool]] = {
    "probe": (probe, True), "poll": (poll, True), "wait": (wait, False),
    "start": (start, False), "http": (http, True), "http-many": (http_many, True),
    "states": (states, True),
    "sd-start": (sd_start, True), "systemctl": (systemctl, False), "journal": (journal, False),
}


def main(argv: list[str] | None = None) -> int:
    """``hostagent SUBCOMMAND JSON``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in COMMANDS:
        sys.stderr.write(f"usage: hostagent {{{'|'.join(COMMANDS)}}} JSON\n")
        return 2
    fn, prints = COMMANDS[args[0]]
    got = fn(json.loads(args[1]))
    if prints:
        print(json.dumps(got))
    return 0


if __name__ == "__main__":
    sys.exit(main())
