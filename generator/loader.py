"""Stage 1 — load: YAML text -> (data, source map).

Safe loading only. Every mapping key and value gets a 1-based ``line:col`` so that later stages can
say exactly where a problem is. PyYAML's silent habits are turned into errors here: duplicate keys
(PyYAML keeps the last one), alias expansion bombs, non-UTF-8 bytes, documents that are not a
mapping, tags other than the standard scalar ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from generator.errors import Diagnostic, TopologyError

# A topology of 8,192 GPUs is a few thousand nodes of YAML; a million constructed nodes is an
# attack (the "billion laughs" alias bomb), not a topology.
MAX_NODES = 1_000_000
MAX_DEPTH = 64
MAX_BYTES = 16 * 1024 * 1024

PathT = tuple[str | int, ...]


def format_path(path: PathT) -> str:
    """``("sglang", 0, "name")`` -> ``sglang[0].name``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def parse_display_path(text: str) -> PathT:
    """Inverse of ``format_path``: ``sglang[0].name`` -> ``("sglang", 0, "name")``."""
    out: list[str | int] = []
    for seg in text.split("."):
        name, _, rest = seg.partition("[")
        if name:
            out.append(name)
        if rest:
            out.extend(int(i) for i in ("[" + rest).replace("]", "").split("[") if i)
    return tuple(out)


@dataclass(frozen=True)
class Origin:
    """Where a value came from: a file position, or a CLI option (line 0)."""

    file: str
    line: int
    col: int


@dataclass
class SourceMap:
    """Positions of values (and of the keys naming them) by topology path."""

    file: str
    values: dict[PathT, Origin] = field(default_factory=dict)
    keys: dict[PathT, Origin] = field(default_factory=dict)

    def at(self, path: PathT, *, key: bool = False) -> Origin:
        """The position of ``path`` (its key when ``key``), else of its nearest known parent."""
        table = self.keys if key else self.values
        p = tuple(path)
        while p:
            if p in table:
                return table[p]
            if p in self.values:
                return self.values[p]
            p = p[:-1]
        return self.values.get((), Origin(self.file, 1, 1))

    def diag(self, path: PathT, message: str, *, hint: str = "", key: bool = False,
             severity: str = "error") -> Diagnostic:
        """A diagnostic positioned at ``path``."""
        o = self.at(path, key=key)
        return Diagnostic(o.file, o.line, o.col, format_path(path), message, hint, severity)


def _origin(file: str, node: yaml.Node) -> Origin:
    return Origin(file, node.start_mark.line + 1, node.start_mark.column + 1)


_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}


class _Builder:
    def __init__(self, file: str, loader: yaml.SafeLoader):
        self.file = file
        self.loader = loader
        self.smap = SourceMap(file)
        self.count = 0
        self.errors: list[Diagnostic] = []

    def err(self, node: yaml.Node, path: PathT, message: str, hint: str = "") -> None:
        o = _origin(self.file, node)
        self.errors.append(Diagnostic(o.file, o.line, o.col, format_path(path), message, hint))

    def build(self, node: yaml.Node, path: PathT, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _Bomb(node)
        if depth > MAX_DEPTH:
            raise _TooDeep(node)
        self.smap.values.setdefault(path, _origin(self.file, node))
        if isinstance(node, yaml.ScalarNode):
            if node.tag == "tag:yaml.org,2002:timestamp":
                return node.value  # keep dates as the text the user wrote
            if node.tag not in _PLAIN_TAGS:
                self.err(node, path, f"unsupported YAML tag {node.tag!r}",
                         "only plain strings, numbers, booleans and null are allowed")
                return None
            value = self.loader.construct_object(node)
            if isinstance(value, float) and value != value:  # NaN is never a valid setting
                self.err(node, path, "NaN is not a valid value")
            if isinstance(value, str) and "\0" in value:
                self.err(node, path, "a NUL character cannot be passed to a process",
                         "remove the \\0 escape")
            return value
        if isinstance(node, yaml.SequenceNode):
            if node.tag != "tag:yaml.org,2002:seq":
                self.err(node, path, f"unsupported YAML tag {node.tag!r}")
            return [self.build(child, path + (i,), depth + 1) for i, child in enumerate(node.value)]
        if isinstance(node, yaml.MappingNode):
            if node.tag != "tag:yaml.org,2002:map":
                self.err(node, path, f"unsupported YAML tag {node.tag!r}")
            explicit: dict[str, yaml.Node] = {}
            for knode, _ in node.value:
                if isinstance(knode, yaml.ScalarNode) and knode.tag == "tag:yaml.org,2002:merge":
                    continue
                if isinstance(knode, yaml.ScalarNode):
                    if knode.value in explicit:
                        first = explicit[knode.value].start_mark.line + 1
                        self.err(knode, path + (knode.value,),
                                 f"duplicate key {knode.value!r} (first defined on line {first})",
                                 "YAML would silently keep only the last one")
                    else:
                        explicit[knode.value] = knode
            try:
                self.loader.flatten_mapping(node)
            except yaml.YAMLError as exc:
                self.err(node, path, f"bad merge key: {exc}")
                return {}
            out: dict[str, Any] = {}
            for knode, vnode in node.value:
                if not isinstance(knode, yaml.ScalarNode) or knode.tag not in (
                    "tag:yaml.org,2002:str",
                ):
                    shown = knode.value if isinstance(knode, yaml.ScalarNode) else "a collection"
                    self.err(knode, path, f"mapping keys must be strings, got {shown!r}",
                             "quote the key")
                    continue
                key = knode.value
                self.smap.keys[path + (key,)] = _origin(self.file, knode)
                out[key] = self.build(vnode, path + (key,), depth + 1)
            return out
        raise AssertionError(f"unknown YAML node {node!r}")  # pragma: no cover


class _Bomb(Exception):
    def __init__(self, node: yaml.Node):
        self.node = node


class _TooDeep(Exception):
    def __init__(self, node: yaml.Node):
        self.node = node


def _decode(raw: bytes, file: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        raise TopologyError([Diagnostic(file, line, col, "",
                                        f"file is not valid UTF-8 (byte 0x{raw[exc.start]:02x})",
                                        "save the file as UTF-8")]) from None


def parse_text(text: str, file: str) -> tuple[dict[str, Any], SourceMap]:
    """Parse YAML text into plain data plus a source map; raise TopologyError on any problem."""
    if text.startswith("\ufeff"):
        text = text[1:]
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            msg = " ".join(p for p in (exc.context, exc.problem) if p) or str(exc)
            raise TopologyError([Diagnostic(file, line, col, "", f"YAML syntax error: {msg}")]) \
                from None
        except yaml.YAMLError as exc:
            raise TopologyError([Diagnostic(file, 1, 1, "", f"YAML error: {exc}")]) from None
        except RecursionError:
            raise TopologyError([Diagnostic(file, 1, 1, "",
                                            "YAML nesting is too deep")]) from None
        if node is None:
            raise TopologyError([Diagnostic(file, 1, 1, "", "file is empty",
                                            "a topology needs at least an 'sglang:' list")])
        builder = _Builder(file, loader)
        try:
            data = builder.build(node, (), 0)
        except _Bomb as b:
            o = _origin(file, b.node)
            raise TopologyError([Diagnostic(
                file, o.line, o.col, "",
                f"document expands to more than {MAX_NODES:,} values (YAML alias bomb?)",
                "avoid aliases that reference other aliases")]) from None
        except _TooDeep as t:
            o = _origin(file, t.node)
            raise TopologyError([Diagnostic(file, o.line, o.col, "",
                                            f"nesting deeper than {MAX_DEPTH} levels")]) from None
        if builder.errors:
            raise TopologyError(builder.errors)
        if not isinstance(data, dict):
            kind = "a list" if isinstance(data, list) else f"a {type(data).__name__} scalar"
            raise TopologyError([Diagnostic(file, 1, 1, "", f"top level must be a mapping, got {kind}",
                                            "a topology starts with 'sglang:'")])
        return data, builder.smap
    finally:
        loader.dispose()


def load_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], SourceMap]:
    """Read and parse a topology file with positioned errors for every way reading can fail."""
    p = Path(path)
    name = str(path)
    try:
        if p.is_dir():
            raise TopologyError([Diagnostic(name, 0, 0, "", "is a directory, not a topology file")])
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise TopologyError([Diagnostic(name, 0, 0, "",
                                            f"file is {size:,} bytes; the limit is {MAX_BYTES:,}")])
        raw = p.read_bytes()
    except FileNotFoundError:
        raise TopologyError([Diagnostic(name, 0, 0, "", "no such file")]) from None
    except PermissionError:
        raise TopologyError([Diagnostic(name, 0, 0, "", "permission denied")]) from None
    except OSError as exc:
        raise TopologyError([Diagnostic(name, 0, 0, "", f"cannot read: {exc.strerror}")]) from None
    return parse_text(_decode(raw, name), name)


def walk(data: Any, path: PathT = ()) -> Iterator[tuple[PathT, Any]]:
    """Yield every (path, value) pair of a loaded document, parents first."""
    yield path, data
    if isinstance(data, dict):
        for k, v in data.items():
            yield from walk(v, path + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from walk(v, path + (i,))
