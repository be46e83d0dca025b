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


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    # temp file in the same directory, then rename: a reader never sees half a file, and a
    # failure leaves the old file in place. (No fsync per file: it made an 8,192-GPU render
    # take 9 s instead of 1; durability across power loss is the filesystem's, as for git.)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)  # the umask may have narrowed os.open's mode
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
    try:
        for c in changes:
            target = root / c.path
            if c.action in ("create", "update", "mode"):
                art = artifacts[c.path]
                if c.action == "mode":
                    os.chmod(target, art.mode)
                else:
                    _atomic_write(target, art.content.encode("utf-8"), art.mode)
            elif c.action == "stale":
                target.unlink()
        # prune directories that became empty
        if root.is_dir():
            for d in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
                if not any(d.iterdir()):
                    d.rmdir()
    except OSError as exc:
        raise SglGenError(f"{exc.filename or root}: cannot write: {exc.strerror}") from None
    return changes
