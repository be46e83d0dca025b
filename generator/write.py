"""Stage 6 — write: artifacts -> ``<out>/<deployment>/``, atomically, with a per-file report.

Each file is written to a temporary file in its directory and renamed over the old one, so a
reader (or a crash) never sees half a file. ``check`` writes nothing and reports what would change.

Ownership: sgl-gen's files in a directory are exactly those its ``MANIFEST.sha256`` lists (render
writes one, the checksums of every file). Only those are updated or, when the render no longer
has them, removed (``stale``); any other file is never touched: it is kept and reported
(``foreign``). A render that would write over a file that is not sgl-gen's, a non-empty directory
without a manifest, a manifest entry that leaves the directory, and a symlink anywhere on a path
sgl-gen writes or removes are refused (SglGenError, exit 1) before anything is written, so
``--check`` reports the same refusal. The manifest on disk always lists every file of sgl-gen's
that is on disk, also after a crash in the middle of a write: it is written before new files
appear, and keeps a stale file's entry until that file is gone.

A manifest is sgl-gen's only when its first line is ``MANIFEST_HEADER`` (``sha256sum -c`` skips
it, as every ``#`` line, also with ``--strict``): plain ``sha256sum`` output in a directory of the
user's is not a licence to delete what it lists. A stale file is removed only while its content
still has the checksum its manifest line records; one edited since is kept and reported
(``modified``) and leaves the manifest: it is the user's now. A file the render still writes is
rewritten even if it was edited (``update``: its header says "do not edit: re-render", and
``--check`` shows it first). A manifest without the header (sgl-gen before manifest format 1,
or not sgl-gen's) is refused with a hint; only ``golden`` (sgl-gen's own out/) adopts one.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from generator.errors import SglGenError
from generator.targets.common import Artifact
from generator.targets.manifest import MANIFEST, MANIFEST_HEADER, manifest_text

#: a manifest bigger than this is not one sgl-gen wrote (an 8,192-GPU render's is ~1 MB)
MANIFEST_MAX_BYTES = 64 << 20
#: refusals listed one per line; past this many, the rest are counted
_MAX_LISTED = 20
_DIGEST = re.compile(r"[0-9a-f]{64}")
_NO_MANIFEST_HINT = ("render into an empty or new directory (-o DIR), or move its files away; "
                     "sgl-gen never writes over files it did not write")


@dataclass(frozen=True)
class Change:
    action: str  # create | identical | update | mode | stale | modified | foreign
    path: str


@dataclass
class _Tree:
    """What is under a root: every non-directory entry by kind, the directories, and the parsed
    manifest (relative path -> its line, in file order)."""

    exists: bool = False
    entries: dict[str, str] = field(default_factory=dict)  # rel -> file | link | other
    dirs: set[str] = field(default_factory=set)
    manifest: dict[str, str] | None = None
    manifest_text: str | None = None


def _scan(base: str) -> tuple[dict[str, str], set[str]]:
    """Every entry under ``base`` without following any symlink: kinds of the non-directories
    (a symlink to a directory is an entry of kind ``link``, never entered) and the directories."""
    entries: dict[str, str] = {}
    dirs: set[str] = set()
    stack = [("", base)]
    while stack:
        rel_dir, abs_dir = stack.pop()
        try:
            it = os.scandir(abs_dir)
        except OSError as exc:
            raise SglGenError(f"{abs_dir}: cannot read: {exc.strerror}") from None
        with it:
            for e in it:
                rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
                if e.is_symlink():
                    entries[rel] = "link"
                elif e.is_dir(follow_symlinks=False):
                    dirs.add(rel)
                    stack.append((rel, e.path))
                elif e.is_file(follow_symlinks=False):
                    entries[rel] = "file"
                else:
                    entries[rel] = "other"
    return entries, dirs


def _safe_rel(path: str) -> bool:
    """A relative path that stays inside its directory: no ``..``, ``.``, empty part or NUL."""
    return bool(path) and "\0" not in path and not path.startswith("/") and all(
        part not in ("", ".", "..") for part in path.split("/"))


_LEGACY_HINT = ("it is not a manifest sgl-gen wrote (plain sha256sum output, or an sgl-gen "
                "render older than manifest format 1): render into a new directory, or, if an "
                "older sgl-gen rendered this one, remove the directory and render again")


def parse_manifest(where: str, text: str, *, adopt_legacy: bool = False,
                   hint: str = _LEGACY_HINT) -> dict[str, str]:
    """rel path -> line (``<sha256>  <path>``) of an sgl-gen manifest: its first line is
    ``MANIFEST_HEADER`` (without it, SglGenError, unless ``adopt_legacy``); any other line that
    is not ``<sha256>  <path>`` with a safe path is refused: a manifest decides what sgl-gen
    deletes, so one it cannot trust is not used at all. The one parser of MANIFEST.sha256
    (render, up --local and deploy OUT_DIR)."""
    out: dict[str, str] = {}
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    first = 1
    if lines[:1] == [MANIFEST_HEADER]:
        first = 2
        lines = lines[1:]
    elif not adopt_legacy:
        raise SglGenError(f"{where}:1: does not start with {MANIFEST_HEADER!r}; refusing to "
                          f"treat its files as sgl-gen's (hint: {hint})")
    for n, line in enumerate(lines, first):
        digest, sep, rel = line[:64], line[64:66], line[66:]
        problem = None
        if sep != "  " or not _DIGEST.fullmatch(digest):
            problem = "not a '<sha256>  <path>' line"
        elif not _safe_rel(rel):
            problem = f"path {rel!r} is not a relative path inside the directory"
        elif rel in out:
            problem = f"path {rel!r} is listed twice"
        if problem:
            raise SglGenError(
                f"{where}:{n}: {problem}; refusing to use this manifest (hint: it decides which "
                f"files sgl-gen may overwrite or remove: restore it, or render into a new "
                f"directory)")
        out[rel] = line
    return out


def manifest_digest(line: str) -> str:
    """The sha256 of a line ``parse_manifest`` returned."""
    return line[:64]


def _read_tree(root: Path, hint: str, adopt_legacy: bool = False) -> _Tree:
    base = str(root)
    try:
        st = os.lstat(base)
    except FileNotFoundError:
        return _Tree()
    except OSError as exc:
        raise SglGenError(f"{root}: cannot read: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise SglGenError(f"{root}: is a symlink; sgl-gen does not write through symlinks "
                          f"(hint: point -o at the real directory, or choose another one)")
    if not stat.S_ISDIR(st.st_mode):
        raise SglGenError(f"{root}: exists and is not a directory (hint: {hint})")
    tree = _Tree(exists=True)
    where = os.path.join(base, MANIFEST)
    try:
        mst = os.lstat(where)
    except FileNotFoundError:
        # refused without walking the tree (`-o /` with a deployment named usr: all of /usr)
        try:
            with os.scandir(base) as it:
                empty = next(it, None) is None
        except OSError as exc:
            raise SglGenError(f"{root}: cannot read: {exc.strerror}") from None
        if not empty:
            raise SglGenError(f"{root}: not empty and has no {MANIFEST}, so none of its files "
                              f"are sgl-gen's; refusing to write there (hint: {hint})") from None
        return tree
    except OSError as exc:
        raise SglGenError(f"{where}: cannot read: {exc.strerror}") from None
    if not stat.S_ISREG(mst.st_mode):
        kind = "link" if stat.S_ISLNK(mst.st_mode) else "not a file"
        raise SglGenError(f"{where}: is not a regular file ({kind}); refusing to use it "
                          f"(hint: {hint})")
    tree.entries, tree.dirs = _scan(base)
    try:
        fd = os.open(where, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            raw = f.read(MANIFEST_MAX_BYTES + 1)
    except OSError as exc:
        raise SglGenError(f"{where}: cannot read: {exc.strerror}") from None
    if len(raw) > MANIFEST_MAX_BYTES:
        raise SglGenError(f"{where}: larger than {MANIFEST_MAX_BYTES >> 20} MiB: not a manifest "
                          f"sgl-gen wrote; refusing to use it")
    try:
        tree.manifest_text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SglGenError(f"{where}: not UTF-8 text: not a manifest sgl-gen wrote; refusing "
                          f"to use it") from None
    # (a caller's own hint says more: e.g. how to stop what an older `up --local` started)
    tree.manifest = parse_manifest(where, tree.manifest_text, adopt_legacy=adopt_legacy,
                                   hint=_LEGACY_HINT if hint == _NO_MANIFEST_HINT else hint)
    return tree


def _owned(tree: _Tree, rel: str) -> bool:
    return tree.manifest is not None and (rel == MANIFEST or rel in tree.manifest)


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


def _digest_of(path: str) -> str | None:
    """The sha256 of a regular file (never through a symlink), or None when it cannot be read."""
    import hashlib

    h = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return h.hexdigest()


def _with_manifest(artifacts: dict[str, Artifact]) -> dict[str, Artifact]:
    if MANIFEST in artifacts:
        return artifacts
    return {**artifacts, MANIFEST: Artifact(manifest_text(artifacts))}


def _plan(root: Path, artifacts: dict[str, Artifact], hint: str,
          adopt_legacy: bool = False) -> tuple[_Tree, list[Change]]:
    """The changes that make ``root`` hold the artifacts, or SglGenError naming every path that
    is in the way (nothing is written before this has passed)."""
    tree = _read_tree(root, hint, adopt_legacy)
    entries, base = tree.entries, str(root)
    manifest_where = os.path.join(base, MANIFEST)
    refused: list[str] = []
    blocked: dict[str, str | None] = {}  # parent dir -> why it cannot be written through

    def parent_problem(rel: str) -> str | None:
        parent = rel.rpartition("/")[0]
        if not parent:
            return None
        if parent in blocked:
            return blocked[parent]
        why = parent_problem(parent)
        if why is None:
            kind = entries.get(parent)
            if kind == "link":
                why = f"{base}/{parent}: is a symlink; sgl-gen does not write through symlinks"
            elif kind is not None and not (kind == "file" and _owned(tree, parent)
                                           and parent not in artifacts):
                # (an owned file that is stale is removed before directories are made)
                why = f"{base}/{parent}: is not a directory"
        blocked[parent] = why
        return why

    out: list[Change] = []
    for rel, art in artifacts.items():
        why = parent_problem(rel)
        kind = entries.get(rel)
        path = f"{base}/{rel}"
        if why is not None:
            refused.append(why)  # (once per directory: the set below)
        elif kind is None:
            if rel in tree.dirs:
                refused.append(f"{path}: is a directory; refusing to replace it")
            else:
                out.append(Change("create", rel))
        elif kind == "link":
            refused.append(f"{path}: is a symlink; sgl-gen does not write through symlinks")
        elif kind != "file":
            refused.append(f"{path}: is not a regular file; refusing to replace it")
        elif not _owned(tree, rel):
            refused.append(f"{path}: exists and is not sgl-gen's (not listed in "
                           f"{manifest_where}); refusing to overwrite it")
        else:
            same, mode_ok = _same(path, art.content.encode("utf-8"), art.mode)
            out.append(Change("identical" if same and mode_ok else "update" if not same
                              else "mode", rel))
    if refused:
        shown = sorted(set(refused))
        more = len(shown) - _MAX_LISTED
        lines = shown[:_MAX_LISTED] + ([f"... and {more} more"] if more > 0 else [])
        raise SglGenError("\n".join(lines) + f"\n{root}: nothing written (hint: move those "
                                             f"paths away, or render into another directory)")
    for rel, kind in entries.items():
        if rel not in artifacts:
            # only a regular file that the manifest lists is sgl-gen's: a symlink or a special
            # file at a listed path was put there by someone else; and one whose content is no
            # longer what sgl-gen wrote holds someone's edit: kept (``modified``)
            if kind != "file" or not _owned(tree, rel):
                action = "foreign"
            elif (tree.manifest is not None
                  and _digest_of(f"{base}/{rel}") == manifest_digest(tree.manifest[rel])):
                action = "stale"
            else:
                action = "modified"
            out.append(Change(action, rel))
    return tree, sorted(out, key=lambda c: c.path)


def diff_tree(root: Path, artifacts: dict[str, Artifact], *,
              hint: str = _NO_MANIFEST_HINT, adopt_legacy: bool = False) -> list[Change]:
    """How ``root`` differs from the artifacts: one Change per file, sorted by path. Raises
    SglGenError where writing would have to touch what is not sgl-gen's (as ``write_tree``)."""
    return _plan(root, _with_manifest(artifacts), hint, adopt_legacy)[1]


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


def _open_temp(head: str, name: str, mode: int) -> tuple[int, str]:
    """A new temp file beside the target. O_EXCL|O_NOFOLLOW: a file or symlink already at the
    name (a crashed run's, or planted) is never written through or truncated."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
    tmp = os.path.join(head, f".{name}.{os.getpid()}.tmp")
    for attempt in range(100):
        try:
            return os.open(tmp, flags, mode), tmp
        except FileExistsError:
            tmp = os.path.join(head, f".{name}.{os.getpid()}.{attempt}.tmp")
    return os.open(tmp, flags, mode), tmp


def _atomic_write(path: str, data: bytes, mode: int, umask: int) -> None:
    # temp file in the same directory, then rename: a reader never sees half a file, and a
    # failure leaves the old file in place. (No fsync per file: it made an 8,192-GPU render
    # take 9 s instead of 1; durability across power loss is the filesystem's, as for git.)
    head, name = os.path.split(path)
    fd, tmp = _open_temp(head, name, mode)
    try:
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


def _prune(base: str, removed: list[str]) -> None:
    """Remove the directories that removing sgl-gen's files left empty, deepest first; a
    directory that still holds anything (a foreign file, an empty directory of someone else's)
    stays, and so does every directory above it."""
    seen: set[str] = set()
    for rel in sorted(removed, key=lambda r: -r.count("/")):
        parent = rel.rpartition("/")[0]
        while parent and parent not in seen:
            seen.add(parent)
            try:
                os.rmdir(os.path.join(base, parent))
            except OSError:
                break
            parent = parent.rpartition("/")[0]


def write_tree(root: Path, artifacts: dict[str, Artifact], *,
               hint: str = _NO_MANIFEST_HINT, adopt_legacy: bool = False) -> list[Change]:
    """Make sgl-gen's files in ``root`` exactly the artifacts (plus ``MANIFEST.sha256``, added
    when the artifacts lack one); return what was done per file. Files that are not sgl-gen's
    are kept (``foreign``, ``modified``); see the module docstring for what is refused.
    ``adopt_legacy``: a manifest without ``MANIFEST_HEADER`` counts as sgl-gen's (only for a
    tree known to be sgl-gen's own, as golden's out/)."""
    artifacts = _with_manifest(artifacts)
    tree, changes = _plan(root, artifacts, hint, adopt_legacy)
    base = str(root)
    umask = _umask()
    todo = [c for c in changes if c.action in ("create", "update", "mode", "stale")]
    if not todo:
        return changes
    stale = [c.path for c in changes if c.action == "stale"]
    new_manifest = artifacts[MANIFEST]
    try:
        os.makedirs(base, exist_ok=True)
        # 1. the manifest first: it lists every file about to appear, and (as long as they
        #    exist) the stale ones, so a crash at any point leaves no file of sgl-gen's unlisted
        first = new_manifest.content
        if stale and tree.manifest is not None:
            first += "".join(f"{tree.manifest[rel]}\n" for rel in stale)
        if first != tree.manifest_text:
            _atomic_write(os.path.join(base, MANIFEST), first.encode("utf-8"),
                          new_manifest.mode, umask)
        # 2. stale files (before directories are made: one may stand where a directory goes)
        for rel in stale:
            os.unlink(os.path.join(base, rel))
        # 3. every other file
        made: set[str] = {base}
        for c in changes:
            if c.path == MANIFEST:
                continue
            target = os.path.join(base, c.path)
            if c.action in ("create", "update"):
                d = os.path.dirname(target)
                if d not in made:
                    os.makedirs(d, exist_ok=True)
                    made.add(d)
                art = artifacts[c.path]
                _atomic_write(target, art.content.encode("utf-8"), art.mode, umask)
            elif c.action == "mode":
                # rewritten, not chmod-ed: the path may be a hard link to a file outside
                # root (os.chmod would change that file's mode too); a new inode leaves it be
                art = artifacts[c.path]
                _atomic_write(target, art.content.encode("utf-8"), art.mode, umask)
        # 4. the final manifest, now that the stale files are gone
        if first != new_manifest.content:
            _atomic_write(os.path.join(base, MANIFEST), new_manifest.content.encode("utf-8"),
                          new_manifest.mode, umask)
        elif Change("mode", MANIFEST) in changes:
            _atomic_write(os.path.join(base, MANIFEST), new_manifest.content.encode("utf-8"),
                          new_manifest.mode, umask)
        _prune(base, stale)
    except OSError as exc:
        raise SglGenError(f"{exc.filename or root}: cannot write: {exc.strerror}") from None
    return changes


def read_owned(root: Path, prefix: str) -> dict[str, Artifact]:
    """sgl-gen's files under ``root`` whose relative path starts with ``prefix``, as they are
    on disk (hand edits included): only regular files that ``root``'s manifest lists, never
    through a symlink. A directory without a manifest, or one it cannot trust, is refused."""
    hint = "render it again with sgl-gen render"
    tree = _read_tree(root, hint)
    if tree.manifest is None:
        raise SglGenError(f"{root}: has no {MANIFEST}: not a directory sgl-gen rendered "
                          f"(hint: {hint})")
    out: dict[str, Artifact] = {}
    for rel in tree.manifest:
        if not rel.startswith(prefix):
            continue
        parts = rel.split("/")
        for i in range(1, len(parts)):
            if tree.entries.get("/".join(parts[:i])) == "link":
                raise SglGenError(f"{root}/{'/'.join(parts[:i])}: is a symlink; sgl-gen does "
                                  f"not read through symlinks (hint: {hint})")
        kind = tree.entries.get(rel)
        path = os.path.join(str(root), rel)
        if kind is None:
            continue  # listed but gone: nothing to install
        if kind != "file":
            raise SglGenError(f"{path}: is not a regular file ({kind}); sgl-gen does not read "
                              f"through symlinks or special files (hint: {hint})")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as f:
                mode = os.fstat(f.fileno()).st_mode & 0o777
                content = f.read().decode("utf-8")
        except OSError as exc:
            raise SglGenError(f"{path}: cannot read: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise SglGenError(f"{path}: not UTF-8 text: not a file sgl-gen rendered") from None
        out[rel] = Artifact(content, mode)
    return out


def owned_files(root: Path, *, hint: str = _NO_MANIFEST_HINT) -> set[str]:
    """The regular files under ``root`` that its manifest lists (the manifest included; none
    reached through a symlink); refused as ``write_tree`` would refuse the directory."""
    tree = _read_tree(root, hint)
    return {rel for rel, kind in tree.entries.items() if kind == "file" and _owned(tree, rel)}


def check_no_symlinks(base: Path, rel: str) -> None:
    """Refuse when any existing component of ``base/rel`` below ``base`` is a symlink (or not
    a directory, for all but the last)."""
    path = str(base)
    for part in rel.split("/"):
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise SglGenError(f"{path}: cannot read: {exc.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            raise SglGenError(f"{path}: is a symlink; sgl-gen does not write through symlinks")
        if not stat.S_ISDIR(st.st_mode):
            raise SglGenError(f"{path}: exists and is not a directory")
