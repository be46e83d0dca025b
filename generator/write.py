"""Stage 6 — write: artifacts -> ``<out>/<deployment>/``, atomically, with a per-file report.

Each file is written to a temporary file in its directory and renamed over the old one, so a
reader (or a crash) never sees half a file. Files that no longer belong to the render are removed
(``stale``). ``check`` writes nothing and reports what would change.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from generator.errors import SglGenError
from generator.render import Artifact


@dataclass(frozen=True)
class Change:
    action: str  # create | identical | update | stale | mode
    path: str


def _existing(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
            if p.is_file() or p.is_symlink()}


def diff_tree(root: Path, artifacts: dict[str, Artifact]) -> list[Change]:
    """How ``root`` differs from the artifacts: one Change per file, sorted by path."""
    have = _existing(root)
    out: list[Change] = []
    for rel, art in artifacts.items():
        p = have.get(rel)
        if p is None:
            out.append(Change("create", rel))
            continue
        try:
            same = not p.is_symlink() and p.read_bytes() == art.content.encode("utf-8")
            mode_ok = (p.stat().st_mode & 0o777) == art.mode
        except OSError:
            same, mode_ok = False, False
        out.append(Change("identical" if same and mode_ok else "update" if not same else "mode",
                          rel))
    for rel in have:
        if rel not in artifacts:
            out.append(Change("stale", rel))
    return sorted(out, key=lambda c: c.path)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
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
