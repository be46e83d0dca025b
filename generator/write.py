"""Stage 6 — write: artifacts -> ``<out>/<deployment>/``, atomically, with a per-file report.

Each file is written to a temporary file in its directory and renamed over the old one, so a
reader (or a crash) never sees half a file. Files that no longer belong to the render are removed
(``stale``). ``check`` writes nothing and reports what would change.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from generator.errors import SglGenError
from generator.render import Artifact


@dataclass(frozen=True)
class Change:
    action: str  # create | identical | update | stale | mode
    path: str


def _existing(root: Path) -> dict[str, str]:
    """relative POSIX path -> absolute path of every file (or link) under root."""
    out: dict[str, str] = {}
    if not root.is_dir():
        return out
    base = str(root)
    for dirpath, _, files in os.walk(base):
        rel_dir = os.path.relpath(dirpath, base)
        for name in files:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}".replace(os.sep, "/")
            out[rel] = os.path.join(dirpath, name)
    return out


def _same(path: str, data: bytes, mode: int) -> tuple[bool, bool]:
    """(content equal, mode equal); a link or an unreadable file is never equal."""
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode):
            return False, False
        with open(path, "rb") as f:
            same = st.st_size == len(data) and f.read() == data
        return same, (st.st_mode & 0o777) == mode
    except OSError:
        return False, False


def diff_tree(root: Path, artifacts: dict[str, Artifact]) -> list[Change]:
    """How ``root`` differs from the artifacts: one Change per file, sorted by path."""
    have = _existing(root)
    out: list[Change] = []
    for rel, art in artifacts.items():
        p = have.get(rel)
        if p is None:
            out.append(Change("create", rel))
            continue
        same, mode_ok = _same(p, art.content.encode("utf-8"), art.mode)
        out.append(Change("identical" if same and mode_ok else "update" if not same else "mode",
                          rel))
    for rel in have:
        if rel not in artifacts:
            out.append(Change("stale", rel))
    return sorted(out, key=lambda c: c.path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write one file atomically (as every file of a render is); a failure names ``path``."""
    try:
        _atomic_write(str(path), data, mode, _umask())
    except OSError as exc:
        raise SglGenError(f"{path}: cannot write: {exc.strerror}") from None


def _atomic_write(path: str, data: bytes, mode: int, umask: int) -> None:
    # temp file in the same directory, then rename: a reader never sees half a file, and a
    # failure leaves the old file in place. (No fsync per file: it made an 8,192-GPU render
    # take 9 s instead of 1; durability across power loss is the filesystem's, as for git.)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if mode & umask:
                os.fchmod(fd, mode)  # the umask narrowed os.open's mode
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_tree(root: Path, artifacts: dict[str, Artifact]) -> list[Change]:
    """Make ``root`` hold exactly the artifacts; return what was done per file."""
    if root.exists() and not root.is_dir():
        raise SglGenError(f"{root}: exists and is not a directory")
    changes = diff_tree(root, artifacts)
    base = str(root)
    umask = _umask()
    made: set[str] = set()
    try:
        for c in changes:
            target = os.path.join(base, c.path)
            if c.action in ("create", "update"):
                d = os.path.dirname(target)
                if d not in made:
                    os.makedirs(d, exist_ok=True)
                    made.add(d)
                art = artifacts[c.path]
                _atomic_write(target, art.content.encode("utf-8"), art.mode, umask)
            elif c.action == "mode":
                os.chmod(target, artifacts[c.path].mode)
            elif c.action == "stale":
                os.unlink(target)
        if any(c.action == "stale" for c in changes):  # prune directories that became empty
            for dirpath, _, _ in os.walk(base, topdown=False):
                if dirpath != base and not os.listdir(dirpath):
                    os.rmdir(dirpath)
    except OSError as exc:
        raise SglGenError(f"{exc.filename or root}: cannot write: {exc.strerror}") from None
    return changes
