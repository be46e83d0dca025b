"""The code sgl-gen runs on the deployment's hosts: one stdlib-only module, one subcommand each.

``sgl-gen deploy`` (generator/deploy.py) runs it on a host with the deployment's own interpreter
as ``python -c <this file's source> SUBCOMMAND JSON`` (its ``__main__`` block calls main): nothing
is uploaded for it, and each call carries the code it runs. The subcommands, each reading its
arguments from one JSON object and printing JSON on stdout:

* ``probe``: what a deploy needs to know about a host (Python modules, GPUs, free disk, listening
  ports, the files under the root with their hashes, the manifest, the units' states);
* ``poll``: the units' states, HTTP checks of their endpoints and the tails of their logs;
* ``wait``: watches units come up, one JSON event a line (``ready``, ``dead``, ``timeout``,
  ``tick``) until all are ready, one dies, the abort file appears or time runs out;
* ``start``: started detached; runs ``sgl-gen-host.sh start`` for the units as a child
  subreaper, so their exit statuses are recorded (run/<unit>.exit) while the deploy waits;
* ``http``: one call to a router's API;
* ``states``: the units' states alone.

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
import re
import shutil
import subprocess
import sys
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
# Subcommands


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
    out["units"] = unit_states(root, A["units"])
    return out


def poll(A: dict[str, Any]) -> dict[str, Any]:
    root = A["root"]
    out: dict[str, Any] = {"units": unit_states(root, A["units"]), "http": {}, "tails": {}}
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
        out["tails"][u] = log_tail(root, u, A["lines"])
    return out


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
        states = unit_states(root, A["watch"])
        dead = [u for u in A["watch"] if states[u]["state"] != "running"]
        if dead:
            st = states[dead[0]]
            say({"dead": dead[0], "state": st["state"], "exit": st["exit"],
                 "tail": log_tail(root, dead[0], A["lines"])})
            break
        if not pending or os.path.exists(A["abort"]):
            break
        if time.monotonic() > deadline:
            first = sorted(pending)[0]
            say({"timeout": {u: [url, last.get(u, [0, "not checked"])]
                             for u, url in pending.items()},
                 "tail": log_tail(root, first, A["lines"])})
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


def states(A: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The units' states alone (what probe and poll report as "units")."""
    return unit_states(A["root"], A["units"])


#: subcommand -> (function, prints its result as one JSON line)
COMMANDS: dict[str, tuple[Callable[[dict[str, Any]], Any], bool]] = {
    "probe": (probe, True), "poll": (poll, True), "wait": (wait, False),
    "start": (start, False), "http": (http, True), "states": (states, True),
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
