"""Stage 1 — load: YAML text -> (data, source map).

Safe loading only. Every mapping key and value gets a 1-based ``line:col`` so that later stages can
say exactly where a problem is. PyYAML's silent habits are turned into errors here: duplicate keys
(PyYAML keeps the last one), alias expansion bombs, non-UTF-8 bytes, documents that are not a
mapping, tags other than the standard scalar ones.

The raw text is checked before YAML reads it: a character that YAML reads as a line break but
``grep``, ``wc -l`` and a code review do not (U+2028, U+2029, U+0085, a lone CR), a control
character, or a bidirectional override can make a reviewed file say something else than what
runs, so each is an error positioned where an editor shows it (lines end at LF only). Only
regular files are read, and at most ``MAX_BYTES`` of them: a FIFO, a device or ``/dev/zero``
is refused, never waited on or read to the end.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from generator.errors import Diagnostic, TopologyError

# A topology of 8,192 GPUs is a few thousand nodes of YAML; a million constructed nodes is an
# attack (the "billion laughs" alias bomb), not a topology.
MAX_NODES = 1_000_000
MAX_DEPTH = 64
#: items of one list or keys of one mapping. The longest list a topology has is
#: ``cluster.hosts`` (at most 4,096 nodes); a longer one is checked while PyYAML composes it,
#: so a 900,000-item list stops at item 4,097 instead of costing a minute and a gigabyte (PyYAML
#: composes some 15,000 values a second, then every stage walks them again)
MAX_ITEMS = 4096
MAX_BYTES = 16 * 1024 * 1024
#: integers are 64-bit in every consumer (SGLang, the routers, JSON readers); a longer one is a
#: typo or an attack (a 5,000-digit integer makes Python's int() raise)
MAX_INT = 2**63 - 1
#: at most this many raw-text problems are listed (a binary file would give thousands)
MAX_RAW_PROBLEMS = 20

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


def describe_int(value: int) -> str:
    """A long integer shortened for messages."""
    text = str(value)
    return text if len(text) <= 24 else f"{text[:10]}...{text[-6:]} ({len(text)} digits)"


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

    def text(self, node: yaml.Node, path: PathT, value: str, *, report: bool = True) -> str | None:
        """A string as the document means it. YAML's ``\\u`` escapes count UTF-16 code units
        (as JSON's do), so a character beyond U+FFFF written as its surrogate pair
        (``"\\ud83d\\ude00"``, what ``json.dumps`` writes for an emoji) is that character;
        PyYAML keeps the two halves, which no UTF-8 file or argv can hold (rendering would
        crash). A lone surrogate is no character at all: an error at its escape (None)."""
        if _SURROGATE.search(value) is None:
            return value
        out: list[str] = []
        i = 0
        while i < len(value):
            ch = value[i]
            if "\ud800" <= ch <= "\udbff" and i + 1 < len(value) \
                    and "\udc00" <= value[i + 1] <= "\udfff":
                out.append(chr(0x10000 + ((ord(ch) - 0xD800) << 10) + ord(value[i + 1]) - 0xDC00))
                i += 2
                continue
            if "\ud800" <= ch <= "\udfff":
                if report:
                    line, col = _escape_position(node, ord(ch))
                    what = "high" if ch <= "\udbff" else "low"
                    self.errors.append(Diagnostic(
                        self.file, line, col, format_path(path),
                        f"\\u{ord(ch):04x} is a lone {what} surrogate, not a character: it "
                        "cannot be written to a file or passed to a process",
                        "a character beyond U+FFFF is written as its pair (\\ud83d\\ude00) or "
                        "as \\U0001f600"))
                return None
            out.append(ch)
            i += 1
        return "".join(out)

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
            if node.tag == "tag:yaml.org,2002:int" and len(node.value) > 40:
                # int() of thousands of digits is slow, then raises; no setting is this long
                self.err(node, path, f"integer of {len(node.value):,} characters is out of range",
                         f"integers are at most {MAX_INT:,}")
                return None
            value = self.loader.construct_object(node)
            if isinstance(value, str):
                value = self.text(node, path, value)
                if value is None:
                    return None
            if isinstance(value, float) and value != value:  # NaN is never a valid setting
                self.err(node, path, "NaN is not a valid value")
            elif isinstance(value, float) and value in (float("inf"), float("-inf")):
                # JSON (plan.json) has no infinity, and no SGLang setting needs one
                self.err(node, path, "infinity is not a valid value",
                         "a number too large for a double reads as infinity too")
            elif type(value) is int and not -MAX_INT - 1 <= value <= MAX_INT:
                self.err(node, path, f"integer {describe_int(value)} is out of range",
                         f"integers are at most {MAX_INT:,}")
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
                    name = self.text(knode, path, knode.value)
                    if name is None:
                        continue
                    if name in explicit:
                        first = explicit[name].start_mark.line + 1
                        self.err(knode, path + (name,),
                                 f"duplicate key {name!r} (first defined on line {first})",
                                 "YAML would silently keep only the last one")
                    else:
                        explicit[name] = knode
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
                key = self.text(knode, path, knode.value, report=False)
                if key is None:
                    continue  # reported above
                self.smap.keys[path + (key,)] = _origin(self.file, knode)
                out[key] = self.build(vnode, path + (key,), depth + 1)
            return out
        raise AssertionError(f"unknown YAML node {node!r}")  # pragma: no cover


_SURROGATE = re.compile("[\ud800-\udfff]")
#: one escape of a double-quoted YAML scalar (``\\\\`` is consumed whole, so an escaped
#: backslash followed by ``udc00`` is not taken for an escape)
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|.)", re.S)


def _escape_position(node: yaml.Node, code: int) -> tuple[int, int]:
    """1-based (line, column) of the first escape in ``node``'s source text that writes
    ``code``, else of the node (lines end at LF; the loader refuses other raw breaks)."""
    start, end = node.start_mark, node.end_mark
    buffer = start.buffer
    if buffer is not None and end is not None:
        for m in _ESCAPE.finditer(buffer, start.index, end.index):
            digits = m.group(1) or m.group(2)
            if digits and int(digits, 16) == code:
                i = m.start()
                return buffer.count("\n", 0, i) + 1, i - (buffer.rfind("\n", 0, i) + 1) + 1
    return start.line + 1, start.column + 1


def _expanded_size(root: yaml.Node) -> int:
    """How many values the document has once every alias is expanded, counted on the node
    graph (each node once, memoised): linear in the text, where building the expansion of an
    alias bomb is exponential. Raises ``_Bomb`` past ``MAX_NODES``."""
    sizes: dict[int, int] = {}
    on_stack: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise _TooDeep(node)
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in on_stack:  # PyYAML does not build recursive aliases; never loop on one
            raise _Bomb(node)
        on_stack.add(key)
        n = 1
        if isinstance(node, yaml.SequenceNode):
            n += sum(size(child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            n += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in node.value)
        on_stack.discard(key)
        if n > MAX_NODES:
            raise _Bomb(node)
        sizes[key] = n
        return n

    return size(root, 0)


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, bounded while it composes: at most ``MAX_ITEMS`` items per list or
    mapping and ``MAX_NODES`` nodes in the text, checked per node before the next one is
    composed (the expansion of aliases is bounded afterwards by ``_expanded_size``)."""

    def __init__(self, text: str):
        super().__init__(text)
        self._composed = 0
        #: the path of the collection being composed (None while composing a key)
        self._at: list[str | int | None] = []

    def compose_node(self, parent: yaml.Node | None, index: Any) -> Any:
        if parent is not None and len(parent.value) >= MAX_ITEMS:
            raise _TooMany(parent, tuple(p for p in self._at if p is not None),
                           self.peek_event().start_mark)
        self._composed += 1
        if self._composed > MAX_NODES:
            raise _Bomb(parent or yaml.ScalarNode("", "", self.peek_event().start_mark))
        if isinstance(index, int):
            self._at.append(index)
        elif isinstance(index, yaml.ScalarNode):
            self._at.append(index.value)
        else:
            self._at.append(None)
        try:
            return super().compose_node(parent, index)  # type: ignore[no-untyped-call]
        finally:
            self._at.pop()


class _TooMany(Exception):
    def __init__(self, node: yaml.Node, path: PathT, mark: Any):
        self.node, self.path, self.mark = node, path, mark


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


#: line breaks to YAML that are not line breaks to grep, wc -l or most review tools
_HIDDEN_BREAKS = {"\u2028": "line separator U+2028", "\u2029": "paragraph separator U+2029",
                  "\x85": "next-line character U+0085"}
#: bidirectional embeddings, overrides and isolates: they reorder how a line is displayed
#: ("Trojan Source", CVE-2021-42574), so the reviewed text is not the text that runs
_BIDI = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
#: raw characters refused in a topology's text: C0 controls except TAB/LF/CR, DEL, C1 controls,
#: the hidden line breaks above, bidi controls, noncharacters U+FFFE/U+FFFF, surrogates
_RAW_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029"
                      "\u202a-\u202e\u2066-\u2069\ufffe\uffff\ud800-\udfff]|\r(?!\n)")


def raw_problem(ch: str) -> tuple[str, str]:
    """(message, hint) for one character ``_RAW_BAD`` matched (``"\\r"`` for a lone CR)."""
    code = f"U+{ord(ch[0]):04X}"
    if ch == "\r":
        return ("a carriage return that does not end a CRLF line: YAML reads it as a line "
                "break, grep, wc -l and code review tools do not",
                "use LF or CRLF line endings")
    if ch in _HIDDEN_BREAKS:
        return (f"raw {_HIDDEN_BREAKS[ch]}: YAML reads it as a line break, grep, wc -l and code "
                "review tools do not",
                f"remove it; inside a double-quoted string write it as the escape \\u{ord(ch):04x}")
    if ch in _BIDI:
        return (f"raw bidirectional control character {code}: it reorders how the line is "
                "displayed, so a review does not see the text that runs",
                "remove it")
    if "\udc80" <= ch <= "\udcff":  # how Python decodes a command-line byte that is not UTF-8
        return (f"byte 0x{ord(ch) - 0xDC00:02x} is not valid UTF-8",
                "give the value as UTF-8 text")
    if "\ud800" <= ch <= "\udfff":
        return (f"lone surrogate {code} is not a character", "remove it")
    if ch == "\0":
        return ("raw NUL character (U+0000): a NUL cannot be passed to a process",
                "remove it; is this a binary file?")
    return (f"raw control character {code} cannot be written in a topology",
            f"remove it; inside a double-quoted string write it as the escape \\x{ord(ch):02x}"
            if ord(ch) < 0x100 else "remove it")


def raw_text_problems(text: str) -> Iterator[tuple[int, str, str, str]]:
    """(index, character, message, hint) of every character of ``text`` a topology must not
    hold raw (see ``_RAW_BAD``)."""
    for m in _RAW_BAD.finditer(text):
        msg, hint = raw_problem(m.group())
        yield m.start(), m.group(), msg, hint


def _check_raw_text(text: str, file: str) -> None:
    """Refuse a text holding characters ``raw_text_problems`` names, positioned as an editor
    counts: lines end at LF, columns are characters, 1-based (a leading BOM is not one)."""
    errors: list[Diagnostic] = []
    for i, _ch, msg, hint in raw_text_problems(text):
        line = text.count("\n", 0, i) + 1
        col = i - (text.rfind("\n", 0, i) + 1) + 1
        if len(errors) == MAX_RAW_PROBLEMS:
            errors.append(Diagnostic(file, line, col, "", "more such characters from here on "
                                     f"(only the first {MAX_RAW_PROBLEMS} are listed)"))
            break
        errors.append(Diagnostic(file, line, col, "", msg, hint))
    if errors:
        raise TopologyError(errors)


def parse_scalar(text: str, where: str, path: PathT, *, refuse_block: bool = False) -> Any:
    """One YAML value given on the command line (``--set PATH=TEXT``), with the same checks as
    a value in a file: raw characters, tags, NaN and infinity, NUL, integer range, dates kept as
    text. ``where`` names the option in messages. A flow list or mapping (the text starts with
    ``[`` or ``{``: ``[{name: a, address: 10.0.0.1}]``) is that list or mapping, and one that
    YAML cannot read is an error; any other text YAML cannot read as a plain scalar (a block
    list ``- a``, ``a: b``) is kept as the literal string (``refuse_block``: is an error, for a
    text whose words name a credential: ``env=HF_TOKEN: x`` meant a mapping)."""
    shown = format_path(path)
    errors = [Diagnostic(where, 0, 0, shown, msg, hint)
              for _i, _ch, msg, hint in raw_text_problems(text)]
    if "\n" in text or "\t" in text:
        errors.append(Diagnostic(where, 0, 0, shown,
                                 "a raw line break or tab in a --set value",
                                 "write it as an escape inside double quotes: "
                                 '--set \'PATH="a\\nb"\''))
    if errors:
        raise TopologyError(errors[:MAX_RAW_PROBLEMS])
    if not text.strip():
        return ""
    flow = text.lstrip()[:1] in ("[", "{")
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except (yaml.YAMLError, RecursionError, _TooMany, _Bomb) as exc:
            if not flow:
                return text
            if isinstance(exc, _TooMany):
                kind = "list" if isinstance(exc.node, yaml.SequenceNode) else "mapping"
                raise TopologyError([Diagnostic(
                    where, 0, 0, format_path((*path, *exc.path)),
                    f"{kind} has more than {MAX_ITEMS:,} "
                    f"{'items' if kind == 'list' else 'keys'}",
                    "no topology needs this many: the longest list is cluster.hosts, at most "
                    f"{MAX_ITEMS:,}")]) from None
            problem = getattr(exc, "problem", None) or "it is nested too deeply or too large"
            mark = getattr(exc, "problem_mark", None)
            at = f" at character {mark.column + 1}" if mark is not None and mark.line == 0 else ""
            raise TopologyError([Diagnostic(
                where, 0, 0, shown, f"not a YAML flow list or mapping: {problem}{at}",
                "write a list as [a, b] and a mapping as {key: value}; quote the whole value "
                "to mean a string: --set 'PATH=\"[x\"'")]) from None
        if node is None:
            return text
        if isinstance(node, yaml.CollectionNode) and not node.flow_style:
            flow = False
        if not isinstance(node, yaml.ScalarNode) and not flow:
            if refuse_block:
                raise TopologyError([Diagnostic(
                    where, 0, 0, shown, "reads as a YAML block mapping or list",
                    "write a mapping as {KEY: VALUE} and a list as [A, B]; quote the whole "
                    "value to mean a string")])
            return text  # keep anything that is not a plain scalar as the literal text
        rest = text[node.end_mark.index:].strip()
        if rest:  # only a comment can follow the value: `x #y` is x to YAML
            raise TopologyError([Diagnostic(
                where, 0, 0, shown, "YAML reads the rest as a comment, from character "
                f"{text.index(rest, node.end_mark.index) + 1}",
                "quote the whole value to keep the '#': --set 'PATH=\"x #y\"'")])
        builder = _Builder(where, loader)
        try:
            _expanded_size(node)  # an alias bomb is refused before anything is built
            value = builder.build(node, path, 0)
        except (_Bomb, _TooDeep):
            raise TopologyError([Diagnostic(
                where, 0, 0, shown, f"value is larger than {MAX_NODES:,} values or nested "
                f"deeper than {MAX_DEPTH} levels")]) from None
        if builder.errors:
            raise TopologyError([Diagnostic(where, 0, 0, d.path, d.message, d.hint)
                                 for d in builder.errors])
        if value is None and text.strip() not in ("null", "~"):
            return text
        return value
    finally:
        loader.dispose()


def parse_text(text: str, file: str) -> tuple[dict[str, Any], SourceMap]:
    """Parse YAML text into plain data plus a source map; raise TopologyError on any problem."""
    if text.startswith("\ufeff"):
        text = text[1:]
    _check_raw_text(text, file)
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:  # the reader checks the text: _check_raw_text refuses first
        raise TopologyError([Diagnostic(file, 1, 1, "", f"YAML error: {exc}")]) from None
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
        except _TooMany as t:
            kind = "list" if isinstance(t.node, yaml.SequenceNode) else "mapping"
            o = _origin(file, t.node)
            raise TopologyError([Diagnostic(
                file, o.line, o.col, format_path(t.path),
                f"{kind} has more than {MAX_ITEMS:,} {'items' if kind == 'list' else 'keys'} "
                f"(item {MAX_ITEMS + 1:,} is at {t.mark.line + 1}:{t.mark.column + 1})",
                "no topology needs this many: the longest list is cluster.hosts, at most "
                f"{MAX_ITEMS:,}")]) from None
        except _Bomb as b:
            o = _origin(file, b.node)
            raise TopologyError([Diagnostic(
                file, o.line, o.col, "",
                f"document has more than {MAX_NODES:,} values")]) from None
        if node is None:
            raise TopologyError([Diagnostic(file, 1, 1, "", "file is empty",
                                            "a topology needs at least an 'sglang:' list")])
        builder = _Builder(file, loader)
        try:
            _expanded_size(node)  # an alias bomb is refused before anything is built
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


_KINDS = ((stat.S_ISDIR, "is a directory, not a topology file"),
          (stat.S_ISFIFO, "is a FIFO (named pipe), not a regular file"),
          (stat.S_ISCHR, "is a character device, not a regular file"),
          (stat.S_ISBLK, "is a block device, not a regular file"),
          (stat.S_ISSOCK, "is a socket, not a regular file"))


def read_regular_file(path: str | os.PathLike[str], limit: int = MAX_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (symlinks to one are followed);
    anything else is a TopologyError naming the file. The file is opened non-blocking (a FIFO
    would block ``open`` until a writer comes), checked with ``fstat`` on the open descriptor
    (no race with a rename), and read to at most ``limit + 1`` bytes (``/proc`` files report
    size 0)."""
    name = str(path)

    def fail(message: str, hint: str = "") -> TopologyError:
        return TopologyError([Diagnostic(name, 0, 0, "", message, hint)])

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise fail("no such file") from None
    except PermissionError:
        raise fail("permission denied") from None
    except IsADirectoryError:
        raise fail("is a directory, not a topology file") from None
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        for test, message in _KINDS:
            if test(st.st_mode):
                raise fail(message)
        if not stat.S_ISREG(st.st_mode):
            raise fail("is not a regular file")
        if st.st_size > limit:
            raise fail(f"file is {st.st_size:,} bytes; the limit is {limit:,}")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise fail(f"file is more than {limit:,} bytes (the limit)")
        return b"".join(chunks)
    except OSError as exc:
        raise fail(f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)


def load_file(path: str | os.PathLike[str]) -> tuple[dict[str, Any], SourceMap]:
    """Read and parse a topology file with positioned errors for every way reading can fail."""
    name = str(path)
    return parse_text(_decode(read_regular_file(path), name), name)


def walk(data: Any, path: PathT = ()) -> Iterator[tuple[PathT, Any]]:
    """Yield every (path, value) pair of a loaded document, parents first."""
    yield path, data
    if isinstance(data, dict):
        for k, v in data.items():
            yield from walk(v, path + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from walk(v, path + (i,))
