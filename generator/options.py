"""CLI facts merged into the document: ``--set dotted.path=value`` and its named shorthands.

Like Helm's ``--set``, a value is parsed as a YAML scalar (``--set cluster.nodes=4`` is an integer;
quote to force a string: ``--set 'deployment.name="x"'``). Unlike Helm, a CLI value never silently
replaces a different value written in the file: the two disagreeing is an error, because the
operator believes one of them and the other is what would run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

from generator.errors import Diagnostic, SglGenError, TopologyError
from generator.loader import Origin, PathT, SourceMap, format_path
from generator.validate import describe

#: Named options and the topology path each one stands for.
SHORTHANDS: dict[str, str] = {
    "hf_checkpoint": "deployment.hf_checkpoint",
    "total_gpus": "deployment.total_gpus",
    "num_gpus_per_engine": "deployment.num_gpus_per_engine",
    "gpus_per_node": "cluster.gpus_per_node",
    "nodes": "cluster.nodes",
}

_SEGMENT = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)((?:\[\d+\])*)")


@dataclass(frozen=True)
class Setting:
    """One CLI-given value for a topology path."""

    path: PathT
    value: Any
    option: str  # how the user said it, for messages: "--set a.b=1" or "--total-gpus 16"


def parse_path(text: str) -> PathT:
    """``sglang[0].router.port`` -> ``("sglang", 0, "router", "port")``."""
    parts: list[str | int] = []
    for seg in text.split("."):
        m = _SEGMENT.fullmatch(seg)
        if not m:
            raise SglGenError(f"--set: bad path {text!r}: segment {seg!r} is not a key or key[index]",
                              exit_code=2)
        parts.append(m.group(1))
        parts.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return tuple(parts)


def parse_set(expr: str) -> Setting:
    """Parse one ``--set path=value`` expression."""
    if "=" not in expr:
        raise SglGenError(f"--set {expr!r}: expected PATH=VALUE", exit_code=2)
    key, _, raw = expr.partition("=")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, (dict, list)) or value is None and raw.strip() not in ("null", "~"):
        value = raw  # keep anything that is not a plain scalar as the literal text
    return Setting(parse_path(key.strip()), value, f"--set {expr}")


def settings_from_cli(sets: tuple[str, ...] | list[str], **named: Any) -> list[Setting]:
    """Settings from ``--set`` expressions and the named shorthands (``None`` = not given)."""
    out = [parse_set(s) for s in sets]
    for name, value in named.items():
        if value is None:
            continue
        path = SHORTHANDS[name]
        flag = "--" + name.replace("_", "-")
        out.append(Setting(parse_path(path), value, f"{flag} {value}"))
    return out


def apply_settings(data: dict[str, Any], smap: SourceMap, settings: list[Setting]) -> None:
    """Merge CLI settings into ``data`` in place; a disagreement with the file is an error."""
    errors: list[Diagnostic] = []
    seen: dict[PathT, Setting] = {}
    for s in settings:
        prev = seen.get(s.path)
        if prev is not None and prev.value != s.value:
            errors.append(Diagnostic(s.option, 0, 0, format_path(s.path),
                                     f"conflicts with {prev.option}"))
            continue
        seen[s.path] = s
        node: Any = data
        for i, part in enumerate(s.path[:-1]):
            nxt = s.path[i + 1]
            if isinstance(part, int):
                if not isinstance(node, list) or part >= len(node):
                    errors.append(Diagnostic(s.option, 0, 0, format_path(s.path[: i + 1]),
                                             "no such list item"))
                    break
                node = node[part]
            else:
                if not isinstance(node, dict):
                    errors.append(Diagnostic(s.option, 0, 0, format_path(s.path[:i]),
                                             "is not a mapping"))
                    break
                if part not in node:
                    if isinstance(nxt, int):
                        errors.append(Diagnostic(s.option, 0, 0, format_path(s.path[: i + 1]),
                                                 "no such list"))
                        break
                    node[part] = {}
                    smap.values[s.path[: i + 1]] = Origin(s.option, 0, 0)
                node = node[part]
        else:
            last = s.path[-1]
            if isinstance(last, int) or not isinstance(node, dict):
                errors.append(Diagnostic(s.option, 0, 0, format_path(s.path),
                                         "--set can only set mapping keys"))
                continue
            if last in node and node[last] != s.value:
                o = smap.at(s.path)
                errors.append(Diagnostic(
                    o.file, o.line, o.col, format_path(s.path),
                    f"the file says {describe(node[last])} but {s.option} says {describe(s.value)}",
                    "remove one of them: a CLI value never silently replaces a file value"))
                continue
            if last not in node:
                node[last] = s.value
                smap.values[s.path] = Origin(s.option, 0, 0)
                smap.keys[s.path] = Origin(s.option, 0, 0)
    if errors:
        raise TopologyError(errors)
