"""Shared by the importers: positioned "not mapped" reports, override checks against the
ServerArgs catalog, and the commented, validated topology text they print."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from generator import __version__
from generator.compile.catalog import load_catalog
from generator.compile.loader import PathT, SourceMap, parse_text
from generator.compile.options import Setting, apply_settings
from generator.compile.place import place
from generator.compile.resolve import resolve
from generator.compile.validate import did_you_mean
from generator.errors import Diagnostic, SglGenError, TopologyError

SCHEMA_LINE = "# yaml-language-server: $schema=../schemas/topology.schema.json"
TOP_ORDER = ("deployment", "cluster", "runtime", "router", "sglang")


@dataclass
class Report:
    """Errors and "not mapped" warnings, positioned in the user's source file."""

    smap: SourceMap
    errors: list[Diagnostic] = field(default_factory=list)
    unmapped: list[Diagnostic] = field(default_factory=list)

    def error(self, path: PathT, message: str, hint: str = "", *, key: bool = False) -> None:
        self.errors.append(self.smap.diag(path, message, hint=hint, key=key))

    def not_mapped(self, path: PathT, why: str) -> None:
        self.unmapped.append(self.smap.diag(path, f"not mapped: {why}", key=True,
                                            severity="warning"))

    def raise_if_errors(self) -> None:
        if self.errors:
            raise TopologyError(sorted(self.errors))


def server_args(report: Report, args: Any, base: PathT) -> dict[str, Any]:
    """Validate a mapping of SGLang server arguments (as the source wrote them) against the
    catalog; return the valid ones under their canonical names."""
    if not isinstance(args, dict):
        report.error(base, "expected a mapping of SGLang server arguments")
        return {}
    cat = load_catalog()
    out: dict[str, Any] = {}
    for key, value in args.items():
        spec = cat.get(str(key))
        if spec is None:
            report.error(base + (key,), f"unknown SGLang server argument '{key}' "
                                        f"(sglang {cat.version})",
                         did_you_mean(str(key).replace("-", "_"), list(cat.names)), key=True)
            continue
        problem = spec.check_value(value)
        if problem:
            report.error(base + (key,), problem)
            continue
        out[spec.name] = value
    return out


def deployment_name(file: str | None, default: str) -> str:
    """A valid deployment name from a file name."""
    stem = Path(file).stem if file else default
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_")[:63] or default
    return name if name[0].isalnum() else f"x{name}"[:63]


def _needs_escape(ch: str) -> bool:
    """Line breaks (also U+0085, U+2028, U+2029) and other control or format characters: what
    YAML, a terminal or a code review would read differently from what the text says."""
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")


def comment_text(text: str) -> str:
    """``text`` made safe for one ``# ...`` comment line: every character that could end the
    line (or hide as something else) becomes a visible escape (``\\n``, ``\\u2028``).
    Backslashes stay as they are: paths in diagnostics may already be escaped."""
    out = []
    for ch in text:
        if _needs_escape(ch):
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch) or (
                f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else
                f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}"))
        else:
            out.append(ch)
    return "".join(out)


def _breaks(ch: str) -> bool:
    """A character the written text must not hold raw: a control character or a line break
    other than ``\\n`` (the loader refuses them)."""
    return unicodedata.category(ch) in ("Cc", "Zl", "Zp")


class _Dumper(yaml.SafeDumper):
    """SafeDumper that writes a string holding a line break or control character double-quoted,
    where PyYAML escapes them: plain or single-quoted, ``\\x85`` is folded into a space and
    U+2028 is written raw (a line break to YAML, invisible to ``grep`` and a reviewer)."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if any(_needs_escape(ch) for ch in value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(data: Any) -> str:
    """YAML text of ``data`` as importers write it (order kept, unicode readable)."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def topology_text(comments: list[str], data: dict[str, Any]) -> str:
    """The schema line, ``comments`` (one ``# ...`` line each, escaped) and ``data`` as YAML;
    checked by parsing it back: the file must say exactly ``data``, and nothing else."""
    lines = [SCHEMA_LINE] + [f"# {comment_text(c)}" for c in comments]
    text = "\n".join(lines) + "\n" + dump(data)
    try:
        back = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        back = exc
    if back != data or any(_breaks(ch) for ch in text if ch != "\n"):
        raise SglGenError("internal error: the imported topology does not read back as what "
                          "was imported; nothing written (please report this)")
    return text


def emit(doc: dict[str, Any], source: str, command: str, settings: list[Setting],
         notes: list[str], report: Report) -> tuple[str, list[str]]:
    """Apply CLI settings, validate the whole topology; return it as commented YAML and the
    "not mapped" report lines (for stderr)."""
    report.raise_if_errors()
    if any(st.path == ("deployment", "name") for st in settings):
        doc["deployment"].pop("name", None)  # the name from the file name is only a default
    data, smap = parse_text(dump(doc), f"<{command}>")
    apply_settings(data, smap, settings)
    place(resolve(data, smap))
    ordered = {k: data[k] for k in TOP_ORDER if k in data}
    ordered.update({k: v for k, v in data.items() if k not in ordered})
    lines = [f"Imported from {source} by sgl-gen {__version__} (`{command}`)."]
    lines += notes
    warnings = [comment_text(d.format()) for d in sorted(report.unmapped)]
    lines += warnings
    return topology_text(lines, ordered), warnings
