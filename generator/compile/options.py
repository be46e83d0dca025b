"""CLI facts merged into the document: ``--set dotted.path=value`` and its named shorthands.

Like Helm's ``--set``, a value is parsed as a YAML scalar (``--set cluster.nodes=4`` is an integer;
quote to force a string: ``--set 'deployment.name="x"'``), with the loader's checks for a value in
a file (a ``--set`` value is no way around them). Unlike Helm, a CLI value never silently
replaces a different value written in the file: the two disagreeing is an error, because the
operator believes one of them and the other is what would run.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from typing import Any

from generator.compile.credentials import url_has_credential
from generator.compile.loader import (
    Origin,
    PathT,
    SourceMap,
    format_path,
    parse_scalar,
    raw_text_problems,
    walk,
)
from generator.compile.validate import describe, is_secret_path
from generator.errors import (
    EXIT_USAGE,
    MASK,
    Diagnostic,
    SglGenError,
    TopologyError,
    mask_userinfo,
)

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
    #: where values under ``path`` are written, when a file gave them (``--inventory FILE``)
    origins: tuple[tuple[PathT, Origin], ...] = ()


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
    """Parse one ``--set path=value`` expression. The value gets the checks a value in a file
    gets (``loader.parse_scalar``): raw control characters and line separators, tags, NaN,
    NUL, integer range; errors name the option."""
    if "=" not in expr:
        # no path to tell a credential by: never echo what might be one (--set HF_TOKEN:hf_...)
        raise SglGenError(f"--set {expr!r}: expected PATH=VALUE" if _no_secret_words(expr) else
                          "--set: expected PATH=VALUE (the argument is not shown: it names a "
                          "credential)", exit_code=2)
    key, _, raw = expr.partition("=")
    path = parse_path(key.strip())
    option = _shown(f"--set {expr}", path, f"--set {key}=")
    masked = f"--set {key}={MASK}"
    flow = raw.lstrip()[:1] in ("[", "{")
    named = not _no_secret_words(raw)  # a word of it names a credential (env: {HF_TOKEN: x})
    # a YAML escape ("HF_TOK\x45N") can spell any name: such a flow value is masked while it
    # is parsed, then by what it turned out to name
    value = parse_scalar(raw, masked if named or (flow and "\\" in raw) else option, path,
                         refuse_block=named)
    if flow and (named or _names_credential(value, path)):
        option = masked  # (a plain value is a credential only by its path: _shown)
    return Setting(path, value, option)


def _names_credential(value: Any, path: PathT) -> bool:
    """Whether a value holds a credential-named key or a URL with a credential anywhere."""
    return any(is_secret_path(p) or (isinstance(v, str) and url_has_credential(v))
               for p, v in walk(value, path))


def _no_secret_words(text: str) -> bool:
    """Whether no word of ``text`` is credential-named (``is_secret_path`` on each word)."""
    return not any(is_secret_path((w,)) for w in re.split(r"[^A-Za-z0-9_-]+", text) if w) \
        and mask_userinfo(text) == text


def _shown(option: str, path: PathT, prefix: str) -> str:
    """An option as messages name it (every message about a CLI value names its option):
    ``PREFIX***`` for a credential's path (``--set runtime.env.HF_TOKEN=***``), a URL's user
    name and password masked (``--hf-checkpoint https://***@hub/m``), and a huge value
    shortened (the message says the rest)."""
    if is_secret_path(path):
        return prefix + MASK
    option = mask_userinfo(option)
    if len(option) <= 100:
        return option
    return f"{option[:60]}...({len(option):,} characters)"


def model_config_setting(expr: str) -> Setting:
    """``--model-config NAME=DIR``: the model ``NAME``'s ``model_config`` (a path relative to the
    working directory, made absolute here)."""
    name, eq, value = expr.partition("=")
    option = f"--model-config {expr}"
    if not eq or not name.strip() or not value:
        raise SglGenError(f"{option!r}: expected NAME=DIR (a model's name and the directory "
                          "holding its config.json)", exit_code=2)
    problems = list(raw_text_problems(value))
    if problems or "\n" in value or "\0" in value:
        raise SglGenError(f"{option!r}: a line break, control character or NUL cannot be part "
                          "of a path", exit_code=2)
    return Setting(("sglang", f"@{name.strip()}", "model_config"),
                   os.path.abspath(os.path.expanduser(value)), option)


def settings_from_cli(sets: tuple[str, ...] | list[str], model_configs: tuple[str, ...] = (),
                      **named: Any) -> list[Setting]:
    """Settings from ``--set`` expressions, ``--model-config NAME=DIR`` and the named shorthands
    (``None`` = not given)."""
    out: list[Setting] = [model_config_setting(e) for e in model_configs]
    errors: list[Diagnostic] = []
    for expr in sets:  # every bad value at once, as for a file
        try:
            out.append(parse_set(expr))
        except TopologyError as exc:
            errors += exc.diagnostics
    for name, value in named.items():
        if value is None:
            continue
        path = parse_path(SHORTHANDS[name])
        flag = "--" + name.replace("_", "-")
        option = _shown(f"{flag} {value}", path, f"{flag} ")
        if isinstance(value, str):  # a shorthand's text is the value itself, never YAML
            errors += [Diagnostic(option, 0, 0, format_path(path), msg, hint)
                       for _i, _ch, msg, hint in raw_text_problems(value)]
            if "\n" in value or "\t" in value or "\0" in value:
                errors.append(Diagnostic(option, 0, 0, format_path(path),
                                         "a line break, tab or NUL cannot be part of this value"))
        out.append(Setting(path, value, option))
    if errors:
        raise TopologyError(errors)
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same type: ``8.0`` or ``true`` on the command line does not "agree" with
    ``8`` or ``1`` in the file (Python says they are equal; the schema refuses one of them)."""
    return type(a) is type(b) and a == b


def _difference(a: Any, b: Any, path: PathT, a_name: str, b_name: str) -> str:
    """``": X is ... in A's, ... in B"``: the first place two lists or mappings differ, for a
    message that would otherwise say "a mapping" twice (values by ``describe``: masked)."""
    if not isinstance(a, (dict, list)) or type(a) is not type(b):
        return ""
    here = format_path(path)
    if isinstance(a, list):
        if len(a) != len(b):
            return f": {here} has {len(a)} item(s) in {a_name}, {len(b)} in {b_name}"
        pairs = list(zip(range(len(a)), a, b, strict=True))
    else:
        pairs = [(k, a[k], b[k]) for k in a if k in b]
    for k, x, y in pairs:  # a value both have first, then a key only one has
        if not _same(x, y):
            sub = (*path, k)
            deeper = _difference(x, y, sub, a_name, b_name)
            return deeper or (f": {format_path(sub)} is {describe(x, sub)} in {a_name}, "
                              f"{describe(y, sub)} in {b_name}")
    if isinstance(a, dict):
        for k in b:
            if k not in a:
                return f": {format_path((*path, k))} is not in {a_name}"
        for k in a:
            if k not in b:
                return f": {format_path((*path, k))} is not in {b_name}"
    return ""


_NO_SUCH = ("no such list item", "no such list", "is not a mapping",
            "--set can only set mapping keys")


def _by_model_name(data: dict[str, Any], settings: list[Setting]
                   ) -> tuple[list[Setting], list[Diagnostic]]:
    """Settings addressed to a model by name (``("sglang", "@NAME", ...)``) with its index."""
    raw = data.get("sglang")
    models: list[Any] = raw if isinstance(raw, list) else []
    names = [m.get("name") if isinstance(m, dict) else None for m in models]
    out: list[Setting] = []
    errors: list[Diagnostic] = []
    for s in settings:
        tag = s.path[1] if len(s.path) > 1 else None
        if not (isinstance(tag, str) and tag.startswith("@")):
            out.append(s)
            continue
        name = tag[1:]
        if name not in names:
            known = [n for n in names if isinstance(n, str)]
            close = difflib.get_close_matches(name, known, n=1)
            errors.append(Diagnostic(s.option, 0, 0, "sglang", f"no model named {name!r}",
                                     f"did you mean {close[0]!r}?" if close else
                                     f"the models are: {', '.join(known) or 'none'}"))
            continue
        out.append(Setting(("sglang", names.index(name), *s.path[2:]), s.value, s.option))
    return out, errors


def apply_settings(data: dict[str, Any], smap: SourceMap, settings: list[Setting]) -> None:
    """Merge CLI settings into ``data`` in place; a disagreement with the file is an error."""
    errors: list[Diagnostic] = []
    seen: dict[PathT, Setting] = {}
    settings, named_errors = _by_model_name(data, settings)
    errors += named_errors
    for s in settings:
        prev = seen.get(s.path)
        if prev is not None and not _same(prev.value, s.value):
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
                        errors.append(Diagnostic(
                            s.option, 0, 0, format_path(s.path[: i + 1]), "no such list",
                            f"set the whole list as a YAML flow list: --set "
                            f"'{format_path(s.path[: i + 1])}=[...]'" + (
                                ", or --inventory FILE" if s.path[: i + 1] == ("cluster", "hosts")
                                else "")))
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
            if last in node and not _same(node[last], s.value):
                o = smap.at(s.path)
                # (another CLI option may have made the value: line 0 names that option)
                theirs = "the file" if o.line else o.file
                errors.append(Diagnostic(
                    o.file, o.line, o.col, format_path(s.path),
                    f"{theirs} says {describe(node[last], s.path)} but {s.option} says "
                    f"{describe(s.value, s.path)}"
                    + _difference(node[last], s.value, s.path, f"{theirs}'s", s.option),
                    "remove one of them: a CLI value never silently replaces a file value"))
                continue
            if last not in node:
                node[last] = s.value
                smap.keys[s.path] = Origin(s.option, 0, 0)
                for sub, _v in walk(s.value, s.path):  # a flow list or mapping: every item
                    smap.values[sub] = Origin(s.option, 0, 0)
                    if sub and isinstance(sub[-1], str):
                        smap.keys[sub] = Origin(s.option, 0, 0)
                for sub, origin in s.origins:
                    smap.values[sub] = origin
                    if isinstance(sub[-1], str):
                        smap.keys[sub] = origin
    if errors:
        exc = TopologyError(errors)
        # a path that names nothing in the document (no such list, item, mapping, model) is
        # a usage error, as a malformed one is (README: Exit codes); a value the file
        # contradicts is invalid input
        if any(d.message in _NO_SUCH or d.message.startswith("no model named") for d in errors):
            exc.exit_code = EXIT_USAGE
        raise exc
