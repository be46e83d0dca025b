"""A rendered deployment directory (``out/<deployment>/``) as deploy input: every file checked
against ``MANIFEST.sha256``, no symlinks or special files, ``plan.json`` well-formed with plain
names, before anything is used from it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
from pathlib import Path
from typing import Any

from generator import __version__
from generator.deploy.spec import SUPERVISORS, Target, target_from
from generator.errors import SglGenError

# A rendered directory is input like a topology file: checked before anything is used from it.
# Names become file and unit names on the hosts and paths under their roots.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")
_ADDRESS = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]{0,252}|\[[0-9A-Fa-f:.]+\]")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_MAX_DIR_FILES = 100_000
_MAX_FILE_BYTES = 64 << 20
MAX_ERRORS = 20


def bad_text(value: str) -> bool:
    """Control characters and line breaks of any kind (U+2028, U+0085, ...)."""
    return any(ord(c) < 0x20 or 0x7f <= ord(c) <= 0x9f or c in "\u2028\u2029\ufeff"
               for c in value)


def safe_rel(rel: str) -> bool:
    parts = rel.split("/")
    return (not rel.startswith("/") and "\\" not in rel and not bad_text(rel)
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
    if py is not None and (not py or bad_text(py)):
        c.err("runtime.python", f"{py!r:.80} is not an interpreter path or command")
    sec = c.get(rt, "runtime", "secrets_env_file", str, optional=True)
    if sec is not None and (not sec.startswith("/") or not safe_rel(sec[1:])):
        c.err("runtime.secrets_env_file", f"{sec!r:.80} is not an absolute path")
    nodes: dict[int, str] = {}
    for p, n in c.items(plan, "", "nodes"):
        idx = c.get(n, p, "index", int)
        host = c.name(n, p, "host")
        c.name(n, p, "address", _ADDRESS)
        c.name(n, p, "user", _USER, optional=True)
        c.port(n, p, "ssh_port", optional=True)
        sup = c.get(n, p, "supervisor", str)
        if "supervisor" not in n:
            c.problems[-1] += " (rendered by an older sgl-gen: re-render it)"
        elif sup is not None and sup not in SUPERVISORS:
            c.err(f"{p}.supervisor", f"{sup!r:.40} is not one of {', '.join(SUPERVISORS)}")
        wd = c.get(n, p, "workdir", str)
        if wd is not None and (not wd.startswith("/") or (wd != "/" and not safe_rel(
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
    while stack and len(out) <= MAX_ERRORS:
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
        if not safe_rel(rel):  # (deploy's rule is stricter: no control characters, no '\')
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
        more = len(problems) - MAX_ERRORS
        raise SglGenError("\n".join(problems[:MAX_ERRORS] + (
            [f"{what}: ... and {more} more problem(s)"] if more > 0 else [])))


def checked_files(out_dir: Path) -> dict[str, bytes]:
    """The files a rendered directory's ``MANIFEST.sha256`` lists (relpath -> content), once
    every one of them is checked as :func:`target_from_dir` checks them (exit 1 otherwise);
    the files it does not list are left out."""
    files, problems, _ = _read_dir(out_dir)
    _refuse(problems, str(out_dir))
    return files


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
    for rel in foreign[:MAX_ERRORS]:
        print(f"{out_dir}/{rel}: warning: not in MANIFEST.sha256 (not sgl-gen's): ignored, "
              f"not uploaded", file=sys.stderr)
    if len(foreign) > MAX_ERRORS:
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

