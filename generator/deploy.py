"""``sgl-gen deploy / diff / status / logs / down``: push a render to SSH hosts with Fabric and run
it with each host's own ``sgl-gen-host.sh``. The only SSH code in sgl-gen.

What a host holds: ``<workdir>/<deployment>/`` (``SGLGEN_ROOT``) = the render's ``hosts/<host>/``
tree, plus ``run/`` (pidfiles, exit statuses), ``logs/`` and ``.sgl-gen/manifest.json`` (what is
deployed: every file's checksum and, per unit, the checksum of the files it runs).

Ownership: sgl-gen's files on a host are exactly those its manifest there lists. A deploy
overwrites or removes only those (and its own temporary upload names); every other file is kept
and reported (``keep``). A root that holds files but no manifest is refused unless ``--adopt``
(its files are then kept); a file at a path the render writes that the manifest does not list is
refused (with ``--adopt``, one identical to the render's is taken over). The manifest is extended
before the first upload, so an interrupted deploy leaves a root whose manifest covers it.

A deploy, every step on all hosts in parallel:

1. connect (``~/.ssh/config`` or ``--ssh-config``; host keys checked against the known-hosts file,
   an unknown key refused unless ``accept_new_host_keys``, a changed key always refused; every
   ProxyJump hop is checked the same way);
2. probe: one remote Python run reports python/modules, GPUs (``nvidia-smi -L``), free disk,
   listening ports, the checksum of every deployed file, the manifest and each unit's state;
3. preflight: every problem on every host at once (Python modules, GPUs, disk, ports, the
   secrets env file, ownership of the root);
4. decide per unit: ``start`` (not running), ``restart`` (its files changed; every rank of a
   multi-node engine together), ``stop`` (no longer in the plan), ``none``;
5. stop routers, then engines, that must stop; upload files whose checksum or mode differs
   (SFTP to a temporary name, then rename: never a half-written file); delete the files the
   previous manifest lists that the render no longer has;
6. start engines; wait until every rank-0 ``/health`` answers 200, failing at once when a unit's
   process exits (its exit status and the end of its log); start routers; wait until each
   router's ``GET /workers`` lists exactly its engines, all healthy; write the manifest.

Health checks run on the hosts over the SSH connection, so the operator's machine needs nothing
but SSH. Exit statuses: the bash launcher detaches units, so while a deploy waits, a short-lived
helper started with the units (a child subreaper) records ``run/<unit>.exit``; it exits when the
deploy stops waiting. Nothing of sgl-gen stays running on a host.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shlex
import stat
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from generator import __version__, hostagent, routerauth
from generator.errors import DeployError, SglGenError
from generator.redact import redact

Echo = Callable[[str], None]
T = TypeVar("T")

MANIFEST = ".sgl-gen/manifest.json"
TMP_SUFFIX = ".sgl-gen-tmp"
LOG_TAIL = 20
_MAX_FOREIGN = 10_000  # files not sgl-gen's that a probe lists (a data directory can hold millions)
# sgl-gen's own temporary upload names: <dest>.<8 hex>.sgl-gen-tmp (Host.put)
_TMP_NAME = re.compile(r"(.+)\.[0-9a-f]{8}" + re.escape(TMP_SUFFIX))

# ---------------------------------------------------------------------------------------------
# What to deploy: built from plan.json + the hosts/<host>/ files (of a FILE or a rendered OUT_DIR)


@dataclass(frozen=True)
class UnitSpec:
    name: str
    kind: str  # engine | router
    host: str
    model: str
    engine: str | None  # engine id (all ranks of a multi-node engine share it)
    node_rank: int
    health_url: str | None  # rank-0 engines and routers
    url: str  # what the summary shows
    files: tuple[str, ...]  # host-relative files the unit runs (its hash covers them)
    expected_workers: tuple[str, ...] = ()  # routers
    api_key_env: str | None = None  # routers: the variable their --api-key is read from


@dataclass(frozen=True)
class HostSpec:
    index: int
    host: str
    address: str
    user: str | None
    port: int | None
    root: str
    units: tuple[UnitSpec, ...]
    files: dict[str, tuple[bytes, int]]  # relpath -> (content, mode)
    ports: tuple[tuple[int, str], ...]  # (port, unit that opens it)
    gpus_needed: int = 0  # GPU ids the engines use on this host: 0..gpus_needed-1 must exist

    def sha(self, rel: str) -> str:
        return hashlib.sha256(self.files[rel][0]).hexdigest()

    def unit_hash(self, u: UnitSpec) -> str:
        return _unit_hash({rel: self.sha(rel) for rel in u.files})


def _unit_hash(shas: dict[str, str | None]) -> str:
    text = "".join(f"{rel} {shas.get(rel) or '-'}\n" for rel in sorted(shas))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Target:
    name: str
    python: str
    rehearse: bool
    hosts: tuple[HostSpec, ...]
    secrets_env_file: str | None = None  # checked on every host by preflight

    def units(self) -> list[UnitSpec]:
        return [u for h in self.hosts for u in h.units]


def target_from(plan: dict[str, Any], files: dict[str, tuple[bytes, int]], python: str,
                rehearse: bool, secrets_env_file: str | None = None) -> Target:
    """A Target from a plan dict (plan.json) and the render's files (paths under hosts/)."""
    name = plan["deployment"]["name"]
    nodes = plan["nodes"]
    per: dict[int, list[UnitSpec]] = {n["index"]: [] for n in nodes}
    ports: dict[int, list[tuple[int, str]]] = {n["index"]: [] for n in nodes}
    host_of = {n["index"]: n["host"] for n in nodes}
    gpus: dict[int, int] = {n["index"]: 0 for n in nodes}
    routers: list[UnitSpec] = []
    encoders: list[UnitSpec] = []
    engines: list[UnitSpec] = []
    for m in plan["models"]:
        for e in m["engines"]:
            for p in e["placements"]:
                rank = p["node_rank"]
                uname = f"engine-{e['id']}" if e["nnodes"] == 1 else f"engine-{e['id']}-r{rank}"
                host = host_of[p["node"]]
                unit_files = [f"bin/{uname}.sh"]
                if rehearse:
                    unit_files += sorted(r.split("/", 2)[2] for r in files
                                         if r.startswith(f"hosts/{host}/lib/"))
                u = UnitSpec(uname, "engine", host, m["name"], e["id"], rank,
                             f"{e['url']}/health" if rank == 0 else None,
                             e["url"] if rank == 0 else f"(rank {rank} of {e['url']})",
                             tuple(unit_files))
                (encoders if e["worker_type"] == "encoder" else engines).append(u)
                gpus[p["node"]] = max([gpus[p["node"]], *(g + 1 for g in p["gpus"])])
                ps = ports[p["node"]]
                ps.append((p.get("port") or e["port"], uname))
                if e.get("engine_info_bootstrap_port"):
                    ps.append((e["engine_info_bootstrap_port"], uname))
                if rank == 0:
                    ps.append((e["nccl_port"], uname))
                    if e.get("bootstrap_port"):
                        ps.append((e["bootstrap_port"], uname))
                    if e.get("dist_init_addr"):
                        ps.append((int(e["dist_init_addr"].rsplit(":", 1)[1]), uname))
        r = m["router"]
        rname = f"router-{m['name']}"
        expected = tuple(sorted(e["url"] for e in m["engines"] if e["worker_type"] != "encoder"))
        routers.append(UnitSpec(rname, "router", host_of[r["node"]], m["name"], None, 0,
                                f"{r['url']}/health", r["url"], (f"bin/{rname}.sh",), expected,
                                routerauth.api_key_env(r.get("argv"))))
        ports[r["node"]] += [(r["port"], rname), (r["prometheus_port"], rname)]
    for u in encoders + engines + routers:
        node = next(n["index"] for n in nodes if n["host"] == u.host)
        per[node].append(u)
    hosts = []
    for n in nodes:
        prefix = f"hosts/{n['host']}/"
        hfiles = {rel[len(prefix):]: v for rel, v in files.items() if rel.startswith(prefix)}
        for u in per[n["index"]]:
            missing = [f for f in u.files if f not in hfiles]
            if missing:
                raise SglGenError(f"{prefix}{missing[0]}: missing from the render "
                                  f"(it does not match plan.json)")
        root = f"{n['workdir'].rstrip('/')}/{name}"
        hosts.append(HostSpec(n["index"], n["host"], n["address"], n.get("user"),
                              n.get("ssh_port"), root, tuple(per[n["index"]]), hfiles,
                              tuple(sorted(set(ports[n["index"]]))), gpus[n["index"]]))
    return Target(name, python, rehearse, tuple(hosts), secrets_env_file)


def target_from_plan(plan: Any, targets: tuple[str, ...], rehearse: bool) -> Target:
    """Render a compiled Plan in memory and build its Target."""
    from generator.targets.plans import plan_dict
    from generator.targets.render import render

    arts = render(plan, targets, rehearse=rehearse)
    files = {rel: (a.content.encode("utf-8"), a.mode) for rel, a in arts.items()
             if rel.startswith("hosts/")}
    return target_from(json.loads(json.dumps(plan_dict(plan))), files,
                       plan.topology.runtime.python, rehearse,
                       plan.topology.runtime.secrets_env_file)


# A rendered directory is input like a topology file: checked before anything is used from it.
# Names become file and unit names on the hosts and paths under their roots.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_ADDRESS = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}|\[[0-9A-Fa-f:.]+\]")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_MAX_DIR_FILES = 100_000
_MAX_FILE_BYTES = 64 << 20
_MAX_ERRORS = 20


def _bad_text(value: str) -> bool:
    """Control characters and line breaks of any kind (U+2028, U+0085, ...)."""
    return any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f or c in "\u2028\u2029\ufeff"
               for c in value)


def _safe_rel(rel: str) -> bool:
    parts = rel.split("/")
    return (not rel.startswith("/") and "\\" not in rel and not _bad_text(rel)
            and all(p not in ("", ".", "..") for p in parts))


class _Checks:
    """Explicit checks of plan.json: every key deploy uses, with its type and shape."""

    def __init__(self, where: str):
        self.where = where
        self.problems: list[str] = []

    def err(self, path: str, message: str) -> None:
        self.problems.append(f"{self.where}: {path}: {message}")

    def get(self, obj: Any, path: str, key: str, kind: type | tuple[type, ...],
            optional: bool = False) -> Any:
        full = f"{path}.{key}" if path else key
        if not isinstance(obj, dict):
            return None
        if key not in obj or (optional and obj[key] is None):
            if not optional:
                self.err(full, "missing")
            return None
        v = obj[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (bool not in kinds and isinstance(v, bool)) or not isinstance(v, kinds):
            self.err(full, f"must be {' or '.join(k.__name__ for k in kinds)}, got {v!r:.80}")
            return None
        return v

    def name(self, obj: Any, path: str, key: str, pattern: re.Pattern[str] = _NAME,
             optional: bool = False) -> str | None:
        v = self.get(obj, path, key, str, optional)
        if v is not None and (not pattern.fullmatch(v) or ".." in v):
            self.err(f"{path}.{key}" if path else key,
                     f"{v!r:.80} is not a plain name (letters, digits, '.', '_', '-'; no '/', "
                     f"'..' or control characters)")
            return None
        return v  # type: ignore[no-any-return]

    def port(self, obj: Any, path: str, key: str, optional: bool = False) -> int | None:
        v = self.get(obj, path, key, int, optional)
        if v is not None and not 1 <= v <= 65535:
            self.err(f"{path}.{key}", f"{v} is not a port number")
            return None
        return v  # type: ignore[no-any-return]

    def items(self, obj: Any, path: str, key: str) -> list[tuple[str, dict[str, Any]]]:
        v = self.get(obj, path, key, list)
        out = []
        for i, x in enumerate(v or []):
            p = f"{path}.{key}[{i}]" if path else f"{key}[{i}]"
            if isinstance(x, dict):
                out.append((p, x))
            else:
                self.err(p, f"must be an object, got {x!r:.80}")
        return out


def check_plan(plan: Any, where: str) -> list[str]:
    """Problems of a plan.json document (as deploy uses it), one line each."""
    c = _Checks(where)
    if not isinstance(plan, dict):
        return [f"{where}: must be a JSON object"]
    version = c.get(plan, "", "plan_version", int)
    if version is not None and version != 1:
        c.err("plan_version", f"{version} is not supported by sgl-gen {__version__} "
                              f"(it reads plan_version 1); deploy it with the sgl-gen that "
                              f"rendered it, or re-render it")
    dep = c.get(plan, "", "deployment", dict)
    c.name(dep, "deployment", "name")
    rt = c.get(plan, "", "runtime", dict)
    if "runtime" not in plan:
        c.problems[-1] += " (rendered by an older sgl-gen: re-render it)"
    py = c.get(rt, "runtime", "python", str)
    if py is not None and (not py or _bad_text(py)):
        c.err("runtime.python", f"{py!r:.80} is not an interpreter path or command")
    sec = c.get(rt, "runtime", "secrets_env_file", str, optional=True)
    if sec is not None and (not sec.startswith("/") or not _safe_rel(sec[1:])):
        c.err("runtime.secrets_env_file", f"{sec!r:.80} is not an absolute path")
    nodes: dict[int, str] = {}
    for p, n in c.items(plan, "", "nodes"):
        idx = c.get(n, p, "index", int)
        host = c.name(n, p, "host")
        c.name(n, p, "address", _ADDRESS)
        c.name(n, p, "user", _USER, optional=True)
        c.port(n, p, "ssh_port", optional=True)
        wd = c.get(n, p, "workdir", str)
        if wd is not None and (not wd.startswith("/") or (wd != "/" and not _safe_rel(
                wd.strip("/")))):
            c.err(f"{p}.workdir", f"{wd!r:.80} is not an absolute path without '..' or "
                                  f"control characters")
        if idx is not None and host is not None:
            if idx in nodes or host in nodes.values():
                c.err(p, f"node {idx} ({host}) appears twice")
            nodes[idx] = host

    def node(obj: Any, path: str) -> None:
        v = c.get(obj, path, "node", int)
        if v is not None and nodes and v not in nodes:
            c.err(f"{path}.node", f"{v} is not a node index of nodes[]")

    models: set[str] = set()
    for p, m in c.items(plan, "", "models"):
        name = c.name(m, p, "name")
        if name is not None:
            if name in models:
                c.err(f"{p}.name", f"model {name!r} appears twice")
            models.add(name)
        r = c.get(m, p, "router", dict)
        if r is not None:
            node(r, f"{p}.router")
            c.port(r, f"{p}.router", "port")
            c.port(r, f"{p}.router", "prometheus_port")
            c.get(r, f"{p}.router", "url", str)
        for ep, e in c.items(m, p, "engines"):
            c.name(e, ep, "id")
            nn = c.get(e, ep, "nnodes", int)
            if nn is not None and nn < 1:
                c.err(f"{ep}.nnodes", f"{nn} is not a node count")
            c.get(e, ep, "worker_type", str)
            c.get(e, ep, "url", str)
            c.port(e, ep, "port")
            c.port(e, ep, "nccl_port")
            c.port(e, ep, "engine_info_bootstrap_port", optional=True)
            c.port(e, ep, "bootstrap_port", optional=True)
            dia = c.get(e, ep, "dist_init_addr", str, optional=True)
            if dia is not None and not dia.rsplit(":", 1)[-1].isdigit():
                c.err(f"{ep}.dist_init_addr", f"{dia!r:.80} is not HOST:PORT")
            for pp, pl in c.items(e, ep, "placements"):
                node(pl, pp)
                rank = c.get(pl, pp, "node_rank", int)
                if rank is not None and rank < 0:
                    c.err(f"{pp}.node_rank", f"{rank} is negative")
                c.port(pl, pp, "port", optional=True)
                for g in c.get(pl, pp, "gpus", list) or []:
                    if type(g) is not int or g < 0:
                        c.err(f"{pp}.gpus", f"{g!r:.40} is not a GPU id")
    return c.problems


def _read_listed(out_dir: Path, rel: str) -> tuple[bytes | None, str | None]:
    """A file the manifest lists: its content, or why it cannot be used (a symlink on its path,
    not a regular file, missing, too big). Never follows a symlink."""
    p = out_dir
    parts = rel.split("/")
    for i, part in enumerate(parts):
        p = p / part
        try:
            st = p.lstat()
        except FileNotFoundError:
            return None, f"{out_dir}/{rel}: listed in MANIFEST.sha256 but missing"
        except OSError as exc:
            return None, f"{p}: cannot read: {exc.strerror or exc}"
        if stat.S_ISLNK(st.st_mode):
            return None, f"{p}: is a symlink (a rendered directory holds none: re-render it)"
        if i < len(parts) - 1 and not stat.S_ISDIR(st.st_mode):
            return None, f"{p}: is not a directory"
    if not stat.S_ISREG(st.st_mode):
        return None, f"{p}: is not a regular file"
    if st.st_size > _MAX_FILE_BYTES:
        return None, f"{p}: larger than {_MAX_FILE_BYTES >> 20} MiB"
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            return f.read(_MAX_FILE_BYTES + 1), None
    except OSError as exc:
        return None, f"{p}: cannot read: {exc.strerror or exc}"


def _foreign(out_dir: Path, listed: set[str]) -> list[str]:
    """Every entry under out_dir that the manifest does not list (render keeps such a file and
    reports it ``foreign``): never read, never uploaded. A directory holding only foreign
    entries is reported once; symlinked directories are not entered."""
    out: list[str] = []
    # directories on the way to a listed file: entered; any other directory is foreign whole
    wanted = {"/".join(r.split("/")[:i]) for r in listed for i in range(1, r.count("/") + 1)}
    stack = [("", out_dir)]
    while stack and len(out) <= _MAX_ERRORS:
        rel_dir, d = stack.pop()
        try:
            with os.scandir(d) as it:
                found = sorted(it, key=lambda e: e.name)
        except OSError:
            continue  # (a listed file below it is reported by _read_listed)
        for e in found:
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            if rel == "MANIFEST.sha256" or rel in listed:
                continue
            if rel in wanted and e.is_dir(follow_symlinks=False):
                stack.append((rel, Path(e.path)))
            else:
                out.append(rel)
    return sorted(out)


def _read_dir(out_dir: Path) -> tuple[dict[str, bytes], list[str], list[str]]:
    """The files ``MANIFEST.sha256`` lists (relpath -> content), the problems (a manifest that
    is not sgl-gen's, a listed file that is missing, changed since it was rendered, a symlink or
    special file) and the foreign entries (not listed: render kept them; deploy ignores them).
    The manifest is parsed by write.py's parser, as render and up --local parse it."""
    from generator.write import MANIFEST as LISTING
    from generator.write import manifest_digest, parse_manifest

    where = f"{out_dir}/{LISTING}"
    try:
        fd = os.open(where, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return {}, [f"{where}: is not a regular file"], []
            raw = f.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return {}, [f"{where}: missing (every file of a rendered directory is checked against "
                    f"it: re-render it)"], []
    except OSError as exc:
        return {}, [f"{where}: cannot read: {exc.strerror or exc}"], []
    if len(raw) > _MAX_FILE_BYTES:
        return {}, [f"{where}: larger than {_MAX_FILE_BYTES >> 20} MiB"], []
    try:
        lines = parse_manifest(where, raw.decode("utf-8"))
    except UnicodeDecodeError:
        return {}, [f"{where}: not UTF-8"], []
    except SglGenError as exc:
        return {}, [exc.message], []
    problems: list[str] = []
    if len(lines) > _MAX_DIR_FILES:
        return {}, [f"{out_dir}: more than {_MAX_DIR_FILES} files"], []
    files: dict[str, bytes] = {}
    for rel in sorted(lines):
        if not _safe_rel(rel):  # (deploy's rule is stricter: no control characters, no '\')
            problems.append(f"{out_dir}/{rel!r}: file name with control characters")
            continue
        data, problem = _read_listed(out_dir, rel)
        if problem is not None:
            problems.append(problem)
        elif data is not None:
            if hashlib.sha256(data).hexdigest() != manifest_digest(lines[rel]):
                problems.append(f"{out_dir}/{rel}: changed since it was rendered (its sha256 "
                                f"differs from MANIFEST.sha256)")
            else:
                files[rel] = data
    return files, problems, _foreign(out_dir, set(lines))


def _refuse(problems: list[str], what: str) -> None:
    if problems:
        more = len(problems) - _MAX_ERRORS
        raise SglGenError("\n".join(problems[:_MAX_ERRORS] + (
            [f"{what}: ... and {more} more problem(s)"] if more > 0 else [])))


def target_from_dir(out_dir: Path) -> Target:
    """A rendered deployment directory (``out/<deployment>/``) as it is, once checked: every file
    against ``MANIFEST.sha256``, no symlinks or special files, and ``plan.json`` well-formed
    with plain names (exit 1 otherwise, one line per problem). Exactly the files the manifest
    lists are used; any other (a user's NOTES.txt, which render keeps as ``foreign``) is
    reported on stderr and ignored."""
    files, problems, foreign = _read_dir(out_dir)
    _refuse(problems, str(out_dir))
    # as render reports them: kept, not sgl-gen's, so never uploaded (one inside hosts/<host>/
    # too: only what the manifest lists reaches a host)
    for rel in foreign[:_MAX_ERRORS]:
        print(f"{out_dir}/{rel}: warning: not in MANIFEST.sha256 (not sgl-gen's): ignored, "
              f"not uploaded", file=sys.stderr)
    if len(foreign) > _MAX_ERRORS:
        print(f"{out_dir}: warning: ... and more files not in MANIFEST.sha256: ignored",
              file=sys.stderr)
    where = f"{out_dir}/plan.json"
    try:
        plan = json.loads(files["plan.json"].decode("utf-8"))
    except KeyError:
        raise SglGenError(f"{where}: missing") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise SglGenError(f"{where}: not JSON: {str(exc)[:200]}") from None
    _refuse(check_plan(plan, where), where)
    modes = {rel: (out_dir / rel).lstat().st_mode & 0o755 for rel in files
             if rel.startswith("hosts/")}
    hosts = {rel: (data, modes[rel]) for rel, data in files.items() if rel.startswith("hosts/")}
    rehearse = any(r.endswith("/lib/rehearsal.py") for r in hosts)
    try:
        return target_from(plan, hosts, plan["runtime"]["python"], rehearse,
                           plan["runtime"].get("secrets_env_file"))
    except (KeyError, TypeError, ValueError, StopIteration) as exc:
        raise SglGenError(f"{where}: does not match the rendered files "
                          f"({type(exc).__name__}: {exc})") from None


# ---------------------------------------------------------------------------------------------
# Code that runs on the hosts (stdlib Python, the deployment's own interpreter)

# All of it is generator/hostagent.py, one stdlib-only module with a subcommand per program
# (probe, poll, wait, start, http): each call sends its source, so nothing is uploaded for it
# (its ``if __name__ == "__main__"`` runs main: ``python -c`` names its code __main__)
_AGENT = Path(hostagent.__file__).read_text(encoding="utf-8")


def _py_cmd(python: str, command: str, args: dict[str, Any]) -> str:
    """``python -c <hostagent> COMMAND JSON``: hostagent's subcommand ``command`` on the host
    (one of ``hostagent.COMMANDS``; another one exits 2 there, with its usage)."""
    return (f"{shlex.quote(python)} -c {shlex.quote(_AGENT)} {shlex.quote(command)} "
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
        import paramiko
        from fabric import Config, Connection

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
                              f"{type(exc).__name__}: {exc}") from None
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
            if r.exited == 127:
                err = f"{self.python!r} not found on the host ({err})"
            raise DeployError(f"{self.name}: {what} failed (exit {r.exited}): {err}")
        return r

    def py(self, command: str, args: dict[str, Any], what: str) -> Any:
        r = self.run(_py_cmd(self.python, command, args), what)
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
        """Upload to a temporary name, set the mode, rename over the old file."""
        dest = f"{self.spec.root}/{rel}"
        tmp = f"{dest}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}"
        try:
            sftp = self.conn.sftp()
            sftp.putfo(io.BytesIO(data), tmp, file_size=len(data), confirm=True)
            sftp.chmod(tmp, mode)
            sftp.posix_rename(tmp, dest)
        except Exception as exc:  # noqa: BLE001
            raise DeployError(f"{self.name}: uploading {dest}: {type(exc).__name__}: {exc}") \
                from None


def _parallel(items: Iterable[T], fn: Callable[[T], Any], workers: int = 32) -> list[Any]:
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


# ---------------------------------------------------------------------------------------------
# Remote state and the decision per unit


@dataclass
class Remote:
    host: Host
    probe: dict[str, Any]

    @property
    def files(self) -> dict[str, list[Any]]:
        return dict(self.probe.get("files") or {})

    @property
    def units(self) -> dict[str, dict[str, Any]]:
        return dict(self.probe.get("units") or {})

    def deployed_hash(self, u: UnitSpec) -> str | None:
        man = self.probe.get("manifest") or {}
        rec = (man.get("units") or {}).get(u.name)
        if isinstance(rec, dict) and rec.get("hash"):
            return str(rec["hash"])
        files = self.files
        if all(rel in files for rel in u.files):
            return _unit_hash({rel: files[rel][0] for rel in u.files})
        return None


@dataclass
class UnitAction:
    host: str
    unit: str
    kind: str
    action: str  # start | restart | stop | none
    reason: str
    url: str = ""
    state: str = ""  # running / dead / stopped before the deploy


@dataclass
class Changes:
    units: list[UnitAction] = field(default_factory=list)
    upload: dict[str, list[str]] = field(default_factory=dict)  # host -> relpaths
    chmod: dict[str, list[str]] = field(default_factory=dict)
    remove: dict[str, list[str]] = field(default_factory=dict)  # only files sgl-gen wrote
    keep: dict[str, list[str]] = field(default_factory=dict)  # not sgl-gen's: never touched
    adopt: dict[str, list[str]] = field(default_factory=dict)  # --adopt: identical, now owned
    refused: dict[str, list[str]] = field(default_factory=dict)  # why a deploy must not go on

    def of(self, host: str, action: str, kind: str | None = None) -> list[str]:
        return [a.unit for a in self.units if a.host == host and a.action == action
                and (kind is None or a.kind == kind)]

    def noop(self) -> bool:
        return not any(a.action != "none" for a in self.units) and not any(
            self.upload.values()) and not any(self.chmod.values()) and not any(
            self.remove.values()) and not any(self.adopt.values())


def owned_files(probe: dict[str, Any]) -> set[str] | None:
    """The files the host's manifest says sgl-gen wrote there, or None without a (valid) one."""
    man = probe.get("manifest")
    files = man.get("files") if isinstance(man, dict) else None
    if not isinstance(files, dict):
        return None
    return {rel for rel in files if isinstance(rel, str) and _safe_rel(rel)}


def _files(h: HostSpec, r: Remote, adopt: bool, ch: Changes) -> None:
    """What to upload, chmod, remove and keep on one host. sgl-gen removes or overwrites only
    files its manifest there lists; anything else is kept, or the deploy is refused."""
    have, links = r.files, set(r.probe.get("links") or ())
    owned = owned_files(r.probe)
    mine = owned or set()
    up: list[str] = []
    chmod: list[str] = []
    remove: list[str] = []
    keep: list[str] = []
    adopted: list[str] = []
    conflicts: list[str] = []
    tmp = {rel for rel in have if (m := _TMP_NAME.fullmatch(rel)) is not None
           and (m.group(1) in mine or m.group(1) in h.files)}  # left by an interrupted upload
    for rel in sorted(h.files):
        parts = rel.split("/")
        through = next((p for p in ("/".join(parts[:i]) for i in range(1, len(parts) + 1))
                        if p in links), None)
        if through is not None:
            conflicts.append(f"{rel} (goes through the symlink {through})" if through != rel
                             else f"{rel} (a symlink)")
        elif rel not in have:
            up.append(rel)
        elif rel in mine:
            if have[rel][0] != h.sha(rel):
                up.append(rel)
            elif have[rel][1] != h.files[rel][1]:
                chmod.append(rel)
        elif have[rel][0] == h.sha(rel) and adopt:
            adopted.append(rel)
            if have[rel][1] != h.files[rel][1]:
                chmod.append(rel)
        else:
            conflicts.append(rel + ("" if have[rel][0] != h.sha(rel) else " (identical)"))
    for rel in sorted(have):
        if rel in h.files:
            continue
        (remove if rel in mine or rel in tmp else keep).append(rel)
    refused = []
    if owned is None and keep and not adopt:
        refused.append(
            f"{h.host}: {h.root} is not empty and has no sgl-gen manifest ({MANIFEST}): "
            f"{len(keep) + int(r.probe.get('more') or 0)} file(s) that sgl-gen did not write, "
            f"e.g. {', '.join(keep[:3])} (hint: give this host a workdir of its own, or pass "
            f"--adopt to deploy into it: files sgl-gen did not write are kept and reported)")
    if conflicts:
        refused.append(
            f"{h.host}: {len(conflicts)} file(s) the render writes exist under {h.root} but were "
            f"not written by sgl-gen: {', '.join(conflicts[:5])}"
            f"{', ...' if len(conflicts) > 5 else ''} (hint: sgl-gen never overwrites a file it "
            f"did not write: move them away"
            + ("; --adopt takes over identical ones" if not adopt else "") + ")")
    ch.upload[h.host], ch.chmod[h.host], ch.remove[h.host] = up, chmod, remove
    ch.keep[h.host], ch.adopt[h.host], ch.refused[h.host] = keep, adopted, refused


def decide(target: Target, remotes: dict[str, Remote], adopt: bool = False) -> Changes:
    ch = Changes()
    wanted: dict[str, tuple[HostSpec, UnitSpec, str]] = {}
    for h in target.hosts:
        if h.host not in remotes:
            continue
        r = remotes[h.host]
        _files(h, r, adopt, ch)
        for u in h.units:
            st = r.units.get(u.name, {}).get("state", "stopped")
            if st != "running":
                wanted[u.name] = (h, u, "start")
            elif r.deployed_hash(u) != h.unit_hash(u):
                wanted[u.name] = (h, u, "restart")
            else:
                wanted[u.name] = (h, u, "none")
    # every rank of a multi-node engine starts together: one rank to (re)start restarts all
    by_engine: dict[str, list[str]] = {}
    for name, (_, u, _) in wanted.items():
        if u.engine is not None:
            by_engine.setdefault(u.engine, []).append(name)
    for names in by_engine.values():
        if len(names) > 1 and any(wanted[n][2] != "none" for n in names):
            for n in names:
                h, u, act = wanted[n]
                if act == "none":
                    wanted[n] = (h, u, "restart")
    reasons = {"start": "not running", "restart": "its files changed", "none": "unchanged"}
    for h in target.hosts:
        if h.host not in remotes:
            continue
        r = remotes[h.host]
        for u in h.units:
            _, _, act = wanted[u.name]
            reason = reasons[act]
            st = r.units.get(u.name, {}).get("state", "stopped")
            if act == "restart" and r.deployed_hash(u) == h.unit_hash(u):
                reason = "another rank of its engine restarts"
            elif act == "start" and st == "dead":
                reason = "its process exited"
            ch.units.append(UnitAction(h.host, u.name, u.kind, act, reason, u.url, st))
        known = {u.name for u in h.units}
        for name, st in sorted(r.units.items()):
            # only in a root sgl-gen owns: a pidfile in a foreign run/ is not one of its units
            if name not in known and st.get("state") == "running" \
                    and owned_files(r.probe) is not None:
                kind = "router" if name.startswith("router-") else "engine"
                ch.units.append(UnitAction(h.host, name, kind, "stop", "no longer in the plan",
                                           "", "running"))
    return ch


# ---------------------------------------------------------------------------------------------
# The commands


@dataclass
class Session:
    target: Target
    opts: SshOptions
    echo: Echo
    only: tuple[str, ...] = ()  # --hosts
    hosts: list[Host] = field(default_factory=list)

    def selected(self) -> list[HostSpec]:
        if not self.only:
            return list(self.target.hosts)
        names = {h.host for h in self.target.hosts}
        unknown = [h for h in self.only if h not in names]
        if unknown:
            raise SglGenError(f"--hosts: unknown host(s) {', '.join(unknown)} "
                              f"(hosts: {', '.join(sorted(names))})", exit_code=2)
        return [h for h in self.target.hosts if h.host in self.only]

    def __enter__(self) -> Session:
        specs = self.selected()
        self.hosts = [Host(s, self.target.python, self.opts, self.echo) for s in specs]
        self.echo(f"connecting to {len(self.hosts)} host(s)")
        try:
            _parallel(self.hosts, lambda h: h.connect())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for h in self.hosts:
            h.close()

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def probe(self, gpus: bool = False) -> dict[str, Remote]:
        def one(h: Host) -> Remote:
            modules = set()
            for u in h.spec.units:
                if u.kind == "router":
                    script = self._script(u)
                    modules.add("smg" if " -m smg.launch_router" in script else "sglang_router")
                elif not self.target.rehearse:
                    modules.add("sglang")
            args = {"root": h.spec.root, "modules": sorted(modules), "units": [
                u.name for u in h.spec.units], "gpus": gpus and not self.target.rehearse and any(
                u.kind == "engine" for u in h.spec.units), "manifest": MANIFEST,
                "want": sorted(h.spec.files), "max_files": _MAX_FOREIGN,
                "secrets": self.target.secrets_env_file}
            return Remote(h, h.py("probe", args, "probe"))
        return {r.host.name: r for r in _parallel(self.hosts, one)}

    def _script(self, u: UnitSpec) -> str:
        h = next(x for x in self.target.hosts if x.host == u.host)
        return h.files[u.files[0]][0].decode("utf-8", "replace")

    def poll(self, units: dict[str, list[UnitSpec]], urls: dict[str, dict[str, str]],
             tails: dict[str, list[str]] | None = None,
             auth: dict[str, dict[str, str]] | None = None) -> dict[str, dict[str, Any]]:
        """``auth``: per host, url key -> the variable of the router's --api-key."""
        names = sorted(set(units) | set(urls) | set(tails or {}))

        def one(name: str) -> tuple[str, dict[str, Any]]:
            h = self.host(name)
            return name, h.py("poll", {"root": h.spec.root,
                                       "units": [u.name for u in units.get(name, [])],
                                       "urls": urls.get(name, {}),
                                       "auth": (auth or {}).get(name, {}),
                                       "secrets": self.target.secrets_env_file,
                                       "tails": (tails or {}).get(name, []),
                                       "lines": LOG_TAIL}, "health check")
        return dict(_parallel(names, one))


def _preflight(session: Session, remotes: dict[str, Remote], ch: Changes,
               min_free: int) -> list[str]:
    problems: list[str] = []
    t = session.target
    for name, r in sorted(remotes.items()):
        spec = r.host.spec
        p = r.probe
        for mod, ok in sorted((p.get("modules") or {}).items()):
            if not ok:
                problems.append(f"{name}: {t.python} cannot import {mod} (python {p.get('python')})")
        g = p.get("gpus")
        if g is not None:
            need = spec.gpus_needed
            if g["rc"] != 0:
                problems.append(f"{name}: nvidia-smi -L failed (exit {g['rc']}): {g['err']}")
            elif len(g["lines"]) < need:
                problems.append(f"{name}: {len(g['lines'])} GPU(s) visible, the plan uses {need}")
        free = p.get("disk_free")
        if free is not None and free < min_free:
            problems.append(f"{name}: only {free // (1 << 20)} MiB free under {spec.root}")
        listening = set(p.get("listen") or ())
        units = r.units
        for port, unit in spec.ports:
            mine_running = units.get(unit, {}).get("state") == "running"
            if port in listening and not mine_running:
                problems.append(f"{name}: port {port} ({unit}) is already in use on "
                                f"{spec.address} by another process")
        sec, path = p.get("secrets"), t.secrets_env_file
        if path and isinstance(sec, dict):
            if not sec.get("exists"):
                problems.append(f"{name}: runtime.secrets_env_file {path} is missing "
                                f"({sec.get('error')}) (hint: create it, mode 600, with the "
                                f"NAME=value lines the units need)")
            elif not sec.get("regular"):
                problems.append(f"{name}: runtime.secrets_env_file {path} is not a regular file")
            elif int(sec.get("mode") or 0) & 0o077:
                problems.append(f"{name}: runtime.secrets_env_file {path} is readable by "
                                f"group/others (mode {int(sec['mode']):o}) (hint: chmod 600 "
                                f"{path})")
            elif not sec.get("readable"):
                problems.append(f"{name}: runtime.secrets_env_file {path} is not readable by "
                                f"{spec.user or 'the SSH user'}")
        problems += ch.refused.get(name, [])
    return problems


def _tail_text(lines: list[str] | None) -> str:
    if lines is None:
        return "    (no log)"
    return "\n".join(f"    {redact(x)}" for x in lines) or "    (empty log)"


class _Lines:
    """A file-like sink for a remote command's stdout that hands over whole lines."""

    def __init__(self, on_line: Callable[[str], None]):
        self.on_line, self.buf = on_line, ""

    def write(self, data: str) -> None:
        self.buf += data
        *done, self.buf = self.buf.split("\n")
        for line in done:
            self.on_line(line)

    def flush(self) -> None:
        pass


def _wait(session: Session, what: str, checks: list[tuple[UnitSpec, str]],
          watch: list[UnitSpec], timeout: float, token: str, echo: Echo,
          budget: float | None = None, finish: Iterable[str] = ()) -> None:
    """Wait until every check passes, each host watching its own units with one remote process
    (hostagent's ``wait``) that reports as things happen: fail at once when a watched unit's
    process exits (its exit status and log tail), or at the deadline; one host failing stops the
    others.
    On the ``finish`` hosts the waiter then removes the token's files (as ``_end_watch``)."""
    started = time.monotonic()
    finish = set(finish)
    hosts = sorted({u.host for u, _ in checks} | {u.host for u in watch} | finish)
    total = len(checks)
    lock = threading.Lock()
    state: dict[str, Any] = {"ready": 0, "pending": {u.name for u, _ in checks},
                             "failure": None, "timeouts": {}, "note": started}

    def one(name: str) -> None:
        h = session.host(name)
        root = h.spec.root
        args = {"root": root, "timeout": timeout, "lines": LOG_TAIL,
                "abort": f"{root}/run/.deploy-{token}.abort",
                "checks": {u.name: url for u, url in checks if u.host == name},
                "expected": {u.name: list(u.expected_workers) for u, _ in checks
                             if u.host == name and u.kind == "router"},
                "auth": {u.name: u.api_key_env for u, _ in checks
                         if u.host == name and u.api_key_env},
                "secrets": session.target.secrets_env_file,
                "watch": [u.name for u in watch if u.host == name],
                "finish": f".deploy-{token}." if name in finish else None}

        def on_line(line: str) -> None:
            try:
                ev = json.loads(line)
            except ValueError:
                return
            with lock:
                if "ready" in ev:
                    state["ready"] += 1
                    state["pending"].discard(ev["ready"])
                    u = next(u for u, _ in checks if u.name == ev["ready"] and u.host == name)
                    echo(f"  ready   {name} {u.name} {u.url} ({state['ready']}/{total})")
                elif "tick" in ev and time.monotonic() >= state["note"] and state["pending"]:
                    state["note"] = time.monotonic() + 10
                    pend = sorted(state["pending"])
                    echo(f"  waiting {what}: {state['ready']}/{total} after "
                         f"{time.monotonic() - started:.0f}s ({', '.join(pend[:4])}"
                         f"{', ...' if len(pend) > 4 else ''})")
                elif "dead" in ev and state["failure"] is None:
                    state["failure"] = (name, ev)
                elif "timeout" in ev:
                    state["timeouts"][name] = ev
        cmd = _py_cmd(h.python, "wait", args)
        try:
            h.conn.run(cmd, hide=True, warn=True, in_stream=False, out_stream=_Lines(on_line))
        except Exception as exc:  # noqa: BLE001
            raise DeployError(f"{name}: waiting for {what}: connection failed: "
                              f"{type(exc).__name__}: {exc}") from None
        with lock:
            failed = state["failure"] is not None and state["failure"][0] == name
        if failed:  # stop the other hosts' waiters
            def abort(other: str) -> None:
                if other != name:
                    o = session.host(other)
                    o.run(f": > {shlex.quote(o.spec.root)}/run/.deploy-{token}.abort",
                          "abort wait", check=False)
            _parallel(hosts, abort)

    _parallel(hosts, one)  # the token's abort file goes in _end_watch, with its other files
    failure = state["failure"]
    if failure is not None:
        name, ev = failure
        log = f"{session.host(name).spec.root}/logs"
        if "dead" in ev:
            ex = ev.get("exit")
            how = f"exited with status {ex}" if ex is not None else (
                "is not running" if ev.get("state") == "stopped" else "exited (status unknown)")
            raise DeployError(f"{name}: {ev['dead']} {how} while waiting for {what}; last lines "
                              f"of {log}/{ev['dead']}.log:\n{_tail_text(ev.get('tail'))}")
    if state["timeouts"]:
        late = sorted((host, u) for host, ev in state["timeouts"].items() for u in ev["timeout"])
        name, first = late[0]
        ev = state["timeouts"][name]
        got = ev["timeout"][first]
        raise DeployError(
            f"timed out after {budget or timeout:g}s waiting for {what}: "
            + ", ".join(f"{host} {u}" for host, u in late)
            + f"\n{name}: {first}: GET {got[0]} -> {_http_text(got[1])}; last lines of "
            f"{session.host(name).spec.root}/logs/{first}.log:\n{_tail_text(ev.get('tail'))}")
    if state["pending"]:
        raise DeployError(f"waiting for {what}: no answer about {', '.join(sorted(state['pending']))}")


def _http_text(got: list[Any]) -> str:
    status, body = got
    if status == 0:
        return f"no answer ({body})"
    return f"{status} {json.dumps(body)[:300] if not isinstance(body, str) else body[:300]}"


def _workers_ok(u: UnitSpec, got: list[Any]) -> bool:
    status, body = got
    if status != 200 or not isinstance(body, dict):
        return False
    workers = [w for w in body.get("workers", []) if isinstance(w, dict)]
    return sorted(str(w.get("url")) for w in workers) == sorted(u.expected_workers) and all(
        w.get("is_healthy") for w in workers)


def _start(session: Session, host: Host, units: list[str], timeout: float, token: str,
           manifest: dict[str, Any] | None = None) -> str:
    """Start units with the detached hostagent ``start`` helper (writing ``manifest`` first, if
    given)."""
    root = host.spec.root
    watch = f"{root}/run/.deploy-{token}.watch"
    out = f"{root}/run/.deploy-{token}.out"
    args = {"root": root, "units": units, "timeout": timeout, "watch": watch, "out": out,
            "manifest": None if manifest is None else _manifest_text(manifest),
            "manifest_path": MANIFEST}
    q = shlex.quote
    cmd = (f"mkdir -p {q(root + '/run')} && : > {q(watch)} && "
           f"(setsid {_py_cmd(host.python, 'start', args)} </dev/null >/dev/null 2>&1 &) && "
           f"i=0; while [ ! -e {q(out)} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done; "
           f"cat {q(out)} && rm -f {q(out)}")
    r = host.run(cmd, "start " + " ".join(units))
    text = str(r.stdout)
    if "@@rc 0" not in text:
        raise DeployError(f"{host.name}: sgl-gen-host.sh start {' '.join(units)} failed: "
                          f"{text.strip()}")
    return text


def _end_watch(session: Session, token: str, hosts: Iterable[str] | None = None) -> None:
    """Remove the token's files (watch: the start helpers exit; abort; out) on the hosts where it
    was used (default: all), in parallel, one command each; a host that cannot be reached keeps
    them until the helpers' own timeout."""
    names = set(hosts) if hosts is not None else {h.name for h in session.hosts}

    def one(h: Host) -> None:
        try:
            h.run(f"rm -f {shlex.quote(h.spec.root)}/run/.deploy-{token}.*", "cleanup",
                  check=False)
        except SglGenError:
            pass
    _parallel([h for h in session.hosts if h.conn is not None and h.name in names], one)


def _manifest_doc(host: Host, target: Target, units: dict[str, str]) -> dict[str, Any]:
    spec = host.spec
    return {
        "deployment": target.name,
        "generator": f"sgl-gen {__version__}",
        "host": spec.host,
        "rehearse": target.rehearse,
        "files": {rel: spec.sha(rel) for rel in sorted(spec.files)},
        "units": {u.name: {"kind": u.kind, "hash": units[u.name], "url": u.url}
                  for u in spec.units if u.name in units},
    }


def _intent_manifest(host: Host, target: Target, have: Any, remote: Remote
                     ) -> dict[str, Any] | None:
    """The manifest to write before uploading: what the host's says, its files extended by
    every file this deploy writes or adopts (None: it lists them all already)."""
    spec = host.spec
    old = have.get("files") if isinstance(have, dict) else None
    files = dict(old) if isinstance(old, dict) and owned_files(remote.probe) is not None else {}
    if all(rel in files for rel in spec.files):
        return None
    doc = dict(have) if isinstance(have, dict) and files else _manifest_doc(host, target, {})
    doc["files"] = dict(sorted({**files, **{rel: spec.sha(rel) for rel in spec.files}}.items()))
    return doc


def _manifest_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def _write_manifest(host: Host, target: Target, units: dict[str, str],
                    have: Any = None) -> Any:
    """Upload the host's manifest unless ``have`` (what the host has) is the same; return it."""
    doc = _manifest_doc(host, target, units)
    if doc != have:
        host.put(MANIFEST, _manifest_text(doc).encode(), 0o644)
    return doc


@dataclass
class Result:
    target: Target
    changes: Changes
    rows: list[dict[str, Any]]
    error: str | None = None

    def json(self) -> str:
        return json.dumps({
            "deployment": self.target.name, "ok": self.error is None, "error": self.error,
            "units": self.rows,
            "files": {h: {"upload": self.changes.upload.get(h, []),
                          "chmod": self.changes.chmod.get(h, []),
                          "remove": self.changes.remove.get(h, []),
                          "keep": self.changes.keep.get(h, []),
                          "adopt": self.changes.adopt.get(h, [])}
                      for h in sorted(self.changes.upload)},
            "refused": [m for h in sorted(self.changes.refused)
                        for m in self.changes.refused[h]],
        }, indent=2, sort_keys=True)


def deploy(target: Target, opts: SshOptions, *, echo: Echo, only: tuple[str, ...] = (),
           timeout: float = 600, dry_run: bool = False, min_free_mb: int = 100,
           adopt: bool = False) -> Result:
    """Converge the hosts on the target. Raises DeployError (exit 3) on failure. ``adopt``: a
    root without a manifest is deployed into; its files are kept (and reported)."""
    with Session(target, opts, echo, only) as s:
        remotes = s.probe(gpus=True)
        ch = decide(target, remotes, adopt)
        problems = _preflight(s, remotes, ch, min_free_mb << 20)
        if problems:
            raise DeployError("preflight failed:\n" + "\n".join(f"  {p}" for p in problems))
        if dry_run:
            return Result(target, ch, _rows(ch, "plan"))
        n_up = sum(len(v) for v in ch.upload.values())
        echo(f"preflight ok on {len(s.hosts)} host(s); {n_up} file(s) to upload, "
             f"{sum(1 for a in ch.units if a.action != 'none')} unit(s) to (re)start or stop")
        # stop: routers on every host, then engines
        for kind in ("router", "engine"):
            def stop(h: Host, kind: str = kind) -> None:
                names = [a.unit for a in ch.units if a.host == h.name and a.kind == kind
                         and a.action in ("restart", "stop")]
                if names:
                    echo(f"  stop    {h.name} {' '.join(names)}")
                    h.host_script("stop", *names, what=f"stop {' '.join(names)}")
            _parallel(s.hosts, stop)

        manifests = {h.name: remotes[h.name].probe.get("manifest") for h in s.hosts}

        def upload(h: Host) -> None:
            rels = ch.upload.get(h.name, [])
            if not rels and not ch.chmod.get(h.name) and not ch.remove.get(h.name) \
                    and not ch.adopt.get(h.name) and manifests[h.name] is not None:
                return  # nothing to change, and the directories exist
            root = h.spec.root
            dirs = sorted({f"{root}/{rel}".rsplit("/", 1)[0] for rel in rels} | {
                f"{root}/.sgl-gen", f"{root}/run", f"{root}/logs"})
            h.run("mkdir -p " + " ".join(shlex.quote(d) for d in dirs), "mkdir")
            # Ownership is recorded before the first byte lands: a deploy interrupted from here
            # on leaves a root whose manifest lists every file it may have written.
            intent = _intent_manifest(h, target, manifests[h.name], remotes[h.name])
            if intent is not None:
                h.put(MANIFEST, _manifest_text(intent).encode(), 0o644)
                manifests[h.name] = intent
            for rel in rels:
                data, mode = h.spec.files[rel]
                h.put(rel, data, mode)
            for rel in ch.chmod.get(h.name, []):
                # uploaded again, not chmod-ed: the path may be a hard link to a file outside
                # the root (sftp chmod changes that file too); a rename leaves the other be
                h.put(rel, *h.spec.files[rel])
            if ch.remove.get(h.name):
                h.run("rm -f " + " ".join(shlex.quote(f"{root}/{rel}")
                                          for rel in ch.remove[h.name]), "remove stale files")
            if rels or ch.remove.get(h.name):
                echo(f"  upload  {h.name}: {len(rels)} file(s)"
                     + (f", removed {len(ch.remove[h.name])}" if ch.remove.get(h.name) else ""))
        _parallel(s.hosts, upload)

        token = uuid.uuid4().hex[:12]
        deadline = time.monotonic() + timeout
        running: dict[str, dict[str, str]] = {h.name: {} for h in s.hosts}
        for h in s.hosts:
            for u in h.spec.units:
                a = next(x for x in ch.units if x.host == h.name and x.unit == u.name)
                if a.action == "none":
                    running[h.name][u.name] = h.spec.unit_hash(u)

        def to_start(h: Host, kinds: tuple[str, ...]) -> list[str]:
            return [a.unit for a in ch.units if a.host == h.name and a.kind in kinds
                    and a.action in ("start", "restart")]

        def record(h: Host) -> None:
            manifests[h.name] = _write_manifest(h, target, running[h.name], manifests[h.name])

        # Engines start first and must be healthy before routers start. When no router has to
        # start, one wait covers both: engines healthy and every router listing its workers.
        started: set[str] = set()
        any_router = any(to_start(h, ("router",)) for h in s.hosts)
        phases = [("engine",), ("router",)] if any_router else [("engine", "router")]
        try:
            for kinds in phases:
                def start(h: Host, kinds: tuple[str, ...] = kinds) -> None:
                    names = to_start(h, kinds)
                    if names:
                        echo(f"  start   {h.name} {' '.join(names)}")
                        started.add(h.name)
                        for u in h.spec.units:
                            if u.name in names:
                                running[h.name][u.name] = h.spec.unit_hash(u)
                        doc = _manifest_doc(h, target, running[h.name])
                        _start(s, h, names, timeout + 30, token,
                               None if doc == manifests[h.name] else doc)
                        manifests[h.name] = doc
                    else:
                        record(h)
                _parallel(s.hosts, start)
                units = [u for h in s.hosts for u in h.spec.units if u.kind in kinds]
                checks = [(u, u.health_url) for u in units if u.kind == "engine" and u.health_url]
                checks += [(u, u.url + "/workers") for u in units if u.kind == "router"]
                if not checks:
                    continue
                n_eng = sum(u.kind == "engine" for u, _ in checks)
                waits = [(n, kind, verb) for n, kind, verb in (
                    (n_eng, "engine", "to become healthy"),
                    (len(checks) - n_eng, "router", "to list exactly their workers as healthy"))
                    if n]
                echo("waiting for " + " and ".join(f"{n} {k}(s) {v}" for n, k, v in waits))
                last = kinds == phases[-1]
                _wait(s, " and ".join(f"{k}s {v}" for _, k, v in waits), checks, units,
                      max(1.0, deadline - time.monotonic()), token, echo, timeout,
                      finish=started if last else ())
                if last:
                    started.clear()  # the last wait cleaned up after itself
        except BaseException:
            _end_watch(s, token)  # a failed wait may have left abort files on any host
            raise
        _end_watch(s, token, started)
        return Result(target, ch, _rows(ch, "done"))


def diff(target: Target, opts: SshOptions, *, echo: Echo, only: tuple[str, ...] = (),
         adopt: bool = False) -> Result:
    with Session(target, opts, echo, only) as s:
        remotes = s.probe()
        ch = decide(target, remotes, adopt)
        return Result(target, ch, _rows(ch, "plan"))


def _rows(ch: Changes, phase: str) -> list[dict[str, Any]]:
    past = {"start": "started", "restart": "restarted", "stop": "stopped", "none": "unchanged"}
    return [{"host": a.host, "unit": a.unit, "kind": a.kind,
             "action": a.action if phase == "plan" else past[a.action],
             "reason": a.reason, "was": a.state, "url": a.url} for a in ch.units]


def status(target: Target, opts: SshOptions, *, echo: Echo, only: tuple[str, ...] = ()
           ) -> list[dict[str, Any]]:
    """Per unit: state, pid, health (rank-0 engines: /health; routers: /workers as expected)."""
    with Session(target, opts, echo, only) as s:
        units = {h.name: list(h.spec.units) for h in s.hosts}
        urls = {h.name: {u.health_url: u.health_url for u in h.spec.units if u.health_url
                         and u.kind == "engine"} | {u.url + "/workers": u.url + "/workers"
                                                    for u in h.spec.units if u.kind == "router"}
                for h in s.hosts}
        auth = {h.name: {u.url + "/workers": u.api_key_env for u in h.spec.units
                         if u.kind == "router" and u.api_key_env} for h in s.hosts}
        res = s.poll(units, urls, auth=auth)
        rows = []
        for h in s.hosts:
            r = res[h.name]
            known = {u.name for u in h.spec.units}
            for u in h.spec.units:
                st = r["units"].get(u.name, {})
                if u.kind == "router":
                    got = r["http"][u.url + "/workers"]
                    healthy: bool | None = _workers_ok(u, got)
                elif u.health_url:
                    got = r["http"][u.health_url]
                    healthy = got[0] == 200
                else:
                    healthy = None
                rows.append({"host": h.name, "unit": u.name, "kind": u.kind,
                             "state": st.get("state", "stopped"), "pid": st.get("pid"),
                             "healthy": healthy if st.get("state") == "running" else False,
                             "url": u.url})
            for name, st in sorted(r["units"].items()):
                if name not in known and st.get("state") == "running":
                    rows.append({"host": h.name, "unit": name, "kind": "unknown",
                                 "state": "running (not in the plan)", "pid": st.get("pid"),
                                 "healthy": None, "url": ""})
        return rows


def down(target: Target, opts: SshOptions, *, echo: Echo, only: tuple[str, ...] = ()) -> int:
    """Routers on every host, then engines; return how many units were stopped."""
    with Session(target, opts, echo, only) as s:
        remotes = s.probe()
        stopped = 0
        lock = threading.Lock()
        for kind in ("router", "engine"):
            def stop(h: Host, kind: str = kind) -> None:
                nonlocal stopped
                r = remotes[h.name]
                names = [n for n, st in r.units.items() if st.get("state") in ("running", "dead")
                         and (n.startswith("router-") == (kind == "router"))]
                if not names or owned_files(r.probe) is None:
                    return  # without a manifest, nothing in that root is sgl-gen's to stop
                if "sgl-gen-host.sh" not in r.files:
                    raise DeployError(f"{h.name}: {h.spec.root}/sgl-gen-host.sh is missing; "
                                      f"cannot stop {' '.join(names)}")
                known = set(_host_units(h, remotes))
                script = [n for n in names if n in known]
                if script:
                    out = h.host_script("stop", *script, what="stop")
                    for line in out.splitlines():
                        echo(f"  {h.name}: {line}")
                    with lock:
                        stopped += sum(1 for line in out.splitlines() if line.endswith("stopped"))
            _parallel(s.hosts, stop)

        def clear(h: Host) -> None:
            have = remotes[h.name].probe.get("manifest")
            # files put there by other means have none to update; the files it lists stay
            # sgl-gen's (the render down was given may differ from the one deployed)
            if isinstance(have, dict) and have.get("units"):
                h.put(MANIFEST, _manifest_text({**have, "units": {}}).encode(), 0o644)
        _parallel(s.hosts, clear)
        return stopped


def _host_units(h: Host, remotes: dict[str, Remote]) -> list[str]:
    """Units the host's deployed sgl-gen-host.sh knows (its UNITS array)."""
    text = h.run(f"cat {shlex.quote(h.spec.root + '/sgl-gen-host.sh')}", "read sgl-gen-host.sh")
    names, inside = [], False
    for line in str(text.stdout).splitlines():
        if line.startswith("UNITS=("):
            inside = True
            continue
        if inside:
            if line.strip() == ")":
                break
            try:
                names += shlex.split(line)
            except ValueError:
                pass
    return names


def logs(target: Target, opts: SshOptions, *, echo: Echo, units: tuple[str, ...] = (),
         lines: int = 50, follow: bool = False, out: Echo) -> None:
    """Print each unit's log tail (``follow``: keep streaming, prefixed with host and unit)."""
    known = {u.name: u for u in target.units()}
    for n in units:
        if n not in known:
            raise SglGenError(f"unknown unit {n!r} (units: {', '.join(sorted(known))})",
                              exit_code=2)
    wanted = [known[n] for n in units] if units else target.units()
    only = tuple(dict.fromkeys(u.host for u in wanted))
    with Session(target, opts, echo, only) as s:
        if not follow:
            for u in wanted:
                h = s.host(u.host)
                text = h.run(f"tail -n {int(lines)} {shlex.quote(h.spec.root)}/logs/"
                             f"{shlex.quote(u.name)}.log 2>/dev/null || true", "logs")
                out(f"==> {u.host} {u.name} <==")
                for line in str(text.stdout).splitlines():
                    out(redact(line))
            return
        lock = threading.Lock()

        class _Stream:
            def __init__(self, prefix: str):
                self.prefix, self.buf = prefix, ""

            def write(self, data: str) -> None:
                self.buf += data
                *done, self.buf = self.buf.split("\n")
                with lock:
                    for line in done:
                        out(f"{self.prefix} {redact(line)}")

            def flush(self) -> None:
                pass

        def follow_one(u: UnitSpec) -> None:
            h = s.host(u.host)
            h.conn.run(f"tail -n {int(lines)} -F {shlex.quote(h.spec.root)}/logs/"
                       f"{shlex.quote(u.name)}.log", hide=True, warn=True, in_stream=False,
                       out_stream=_Stream(f"{u.host} {u.name} |"))
        _parallel(wanted, follow_one)


# ---------------------------------------------------------------------------------------------
# Tables


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    cells = [[c.upper() for c in cols]] + [["-" if r.get(c) is None else str(r.get(c))
                                            for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n"
                   for row in cells)


# ---------------------------------------------------------------------------------------------
# Rolling restart

def _http(host: Host, router: UnitSpec, secrets: str | None, method: str, url: str,
          body: Any = None, worker_key: bool = False) -> tuple[int, Any]:
    """One call to ``router``'s API, run on its host, authenticated when it has --api-key;
    ``worker_key``: the host adds that key to ``body`` as the new worker's ``api_key``."""
    got = host.py("http", {"method": method, "url": url, "body": body, "worker_key": worker_key,
                           "auth": router.api_key_env, "secrets": secrets}, f"{method} {url}")
    return int(got[0]), got[1]


def restart_rolling(target: Target, opts: SshOptions, *, echo: Echo, units: tuple[str, ...] = (),
                    timeout: float = 600, drain: float = 2.0,
                    allow_downtime: bool = False) -> list[str]:
    """Restart engines one at a time behind their routers: take the engine out of its router
    (``DELETE /workers/{id}``), let in-flight requests drain, restart every rank, wait for health,
    put it back (``POST /workers``) and wait until the router lists it healthy. An engine that is
    the only worker of its role in its router is refused unless ``allow_downtime``. Returns the
    engine ids restarted, in order."""
    plan_units = target.units()
    by_name = {u.name: u for u in plan_units}
    unknown = [n for n in units if n not in by_name]
    if unknown:
        raise SglGenError(f"unknown unit(s) {', '.join(unknown)} "
                          f"(units: {', '.join(sorted(by_name))})", exit_code=2)
    routers = {u.model: u for u in plan_units if u.kind == "router"}
    engines: dict[str, list[UnitSpec]] = {}
    for u in plan_units:
        if u.engine is not None and (not units or u.name in units):
            engines.setdefault(u.engine, [])
    for u in plan_units:
        if u.engine in engines:
            engines[u.engine].append(u)
    rank0 = {eid: next(u for u in us if u.node_rank == 0) for eid, us in engines.items()}
    sec = target.secrets_env_file
    with Session(target, opts, echo) as s:
        done: list[str] = []
        for eid, us in engines.items():
            r0 = rank0[eid]
            router = routers[r0.model]
            rhost = s.host(router.host)
            eurl = r0.url
            status, body = _http(rhost, router, sec, "GET", router.url + "/workers")
            if status != 200 or not isinstance(body, dict):
                raise DeployError(f"{router.host}: {router.name}: GET /workers -> {status} {body}")
            workers = [w for w in body.get("workers", []) if isinstance(w, dict)]
            me = next((w for w in workers if w.get("url") == eurl), None)
            role = (me or {}).get("worker_type", "regular")
            peers = [w for w in workers if w.get("worker_type") == role and w.get("url") != eurl
                     and w.get("is_healthy")]
            if me is not None and not peers and not allow_downtime:
                raise DeployError(f"{eid}: the only healthy {role} worker of {router.name}; "
                                  f"restarting it would leave the router without one "
                                  f"(pass --allow-downtime to restart it anyway)")
            echo(f"  {eid}: remove from {router.name}")
            if me is not None:
                st, b = _http(rhost, router, sec, "DELETE", f"{router.url}/workers/{me['id']}")
                if st not in (200, 202, 204):
                    raise DeployError(f"{router.host}: DELETE /workers/{me['id']} -> {st} {b}")
                _wait_workers(rhost, router, sec, eurl, False, timeout,
                              f"{router.name} to drop {eurl}")
                time.sleep(drain)
            for u in sorted(us, key=lambda u: -u.node_rank):
                s.host(u.host).host_script("stop", u.name, what=f"stop {u.name}")
            token = uuid.uuid4().hex[:12]
            try:
                _start_ranks(s, us, timeout + 30, token)
                echo(f"  {eid}: restarted, waiting for {r0.health_url}")
                _wait(s, f"{eid} to become healthy", [(r0, str(r0.health_url))], us,
                      timeout, token, echo)
            finally:
                _end_watch(s, token, {u.host for u in us})
            add: dict[str, Any] = {"url": eurl, "worker_type": role}
            if me is not None and me.get("bootstrap_port") is not None:
                add["bootstrap_port"] = me["bootstrap_port"]
            st, b = _http(rhost, router, sec, "POST", router.url + "/workers", add,
                          worker_key=True)
            if st not in (200, 201, 202):
                raise DeployError(f"{router.host}: POST /workers {add} -> {st} {b}")
            _wait_workers(rhost, router, sec, eurl, True, timeout,
                          f"{router.name} to list {eurl} as healthy")
            echo(f"  {eid}: back in {router.name}")
            done.append(eid)
        return done


def _start_ranks(s: Session, us: list[UnitSpec], timeout: float, token: str) -> None:
    def one(h: str) -> None:
        _start(s, s.host(h), [u.name for u in us if u.host == h], timeout, token)
    _parallel(sorted({u.host for u in us}), one)


def _wait_workers(host: Host, router: UnitSpec, secrets: str | None, url: str, present: bool,
                  timeout: float, what: str) -> None:
    """Until the router lists ``url`` as a healthy worker (present) or not at all."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = _http(host, router, secrets, "GET", router.url + "/workers")
        urls = {str(w.get("url")): bool(w.get("is_healthy")) for w in (body or {}).get("workers", [])
                if isinstance(w, dict)} if isinstance(body, dict) else {}
        if status == 200 and ((urls.get(url) is True) if present else (url not in urls)):
            return
        if time.monotonic() > deadline:
            raise DeployError(f"{host.name}: timed out after {timeout:g}s waiting for {what} "
                              f"(GET /workers -> {status} {json.dumps(body)[:300]})")
        time.sleep(0.3)
