"""Shared by the importers: positioned "not mapped" reports, override checks against the
ServerArgs catalog, and the commented, validated topology text they print."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from generator import __version__
from generator.catalog import load_catalog
from generator.errors import Diagnostic, TopologyError
from generator.loader import PathT, SourceMap, parse_text
from generator.options import Setting, apply_settings
from generator.place import place
from generator.resolve import resolve
from generator.validate import did_you_mean

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


def emit(doc: dict[str, Any], source: str, command: str, settings: list[Setting],
         notes: list[str], report: Report) -> tuple[str, list[str]]:
    """Apply CLI settings, validate the whole topology; return it as commented YAML and the
    "not mapped" report lines (for stderr)."""
    report.raise_if_errors()
    if any(st.path == ("deployment", "name") for st in settings):
        doc["deployment"].pop("name", None)  # the name from the file name is only a default
    text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
    data, smap = parse_text(text, f"<{command}>")
    apply_settings(data, smap, settings)
    place(resolve(data, smap))
    ordered = {k: data[k] for k in TOP_ORDER if k in data}
    ordered.update({k: v for k, v in data.items() if k not in ordered})
    body = yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, width=100)
    lines = [SCHEMA_LINE, f"# Imported from {source} by sgl-gen {__version__} (`{command}`)."]
    lines += [f"# {n}" for n in notes]
    warnings = [d.format() for d in sorted(report.unmapped)]
    lines += [f"# {w}" for w in warnings]
    return "\n".join(lines) + "\n" + body, warnings
