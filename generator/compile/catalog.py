"""The ServerArgs catalog at run time: every ``sglang.launch_server`` flag of a pinned SGLang
version, read from the committed ``schemas/sglang-<version>.json`` (:func:`load_catalog`), with the
per-argument checks (:class:`ArgSpec`) and the did-you-mean hint every command uses.

The file is produced once per SGLang release, statically from the wheel, by
``python -m generator.devtools.extract_catalog WHEEL -o schemas/sglang-<version>.json``
(generator/devtools/extract_catalog.py; its docstring documents the entry fields). ``Catalog.parser``
builds SGLang's parser with :func:`generator.rehearsal.build_parser`: the rehearsal engine ships to
hosts as one stdlib file and needs the same parser, so the builder lives there and compile imports
that leaf module (it imports nothing of generator).
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.paths import SCHEMAS

__all__ = [
    "SUPPORTED_VERSIONS",
    "ArgSpec",
    "Catalog",
    "CatalogError",
    "build_parser",
    "catalog_path",
    "did_you_mean",
    "load_catalog",
    "versions_with",
]

def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version))


#: SGLang versions with a committed catalog under ``schemas/`` (``schemas/sglang-<version>.json``;
#: ``make sglang-catalog VERSION=...`` adds one), oldest first.
SUPPORTED_VERSIONS: tuple[str, ...] = tuple(sorted(
    (p.name[len("sglang-"):-len(".json")] for p in SCHEMAS.glob("sglang-*.json")),
    key=_version_key))

#: the catalog document format (``"format"``) this module reads and the extractor writes
FORMAT = 1

_HUMAN_INT = re.compile(r"\d+(?:\.\d+)?(?:Ki|Mi|Gi|Ti|k|M|G|T)")


class CatalogError(Exception):
    """A catalog file is invalid, or (generator.devtools.extract_catalog) the wheel cannot be read
    the way the extractor expects."""


# ---------------------------------------------------------------------------------------------
# Public model
# ---------------------------------------------------------------------------------------------


def _describe(value: Any) -> str:
    """Short type-and-value description for error messages (``int 3``, ``str 'x'``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {'true' if value else 'false'}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _fmt_choices(choices: Iterable[Any]) -> str:
    return ", ".join("null" if c is None else str(c) for c in choices)


@dataclass(frozen=True)
class ArgSpec:
    """One ``launch_server`` flag as SGLang's argparse parser registers it."""

    name: str
    dest: str
    flags: tuple[str, ...]
    kind: str
    action: str
    type: str
    parser: str | None
    nargs: str | int | None
    choices: tuple[Any, ...] | None
    const: Any
    default: Any
    required: bool
    help: str

    @property
    def flag(self) -> str:
        """The primary (first) option string, e.g. ``--tp-size``."""
        return self.flags[0]

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ArgSpec:
        """Build from one entry of the catalog's ``args`` list."""
        choices = d.get("choices")
        return cls(
            name=d["name"],
            dest=d.get("dest", d["name"]),
            flags=tuple(d["flags"]),
            kind=d["kind"],
            action=d.get("action", "store"),
            type=d["type"],
            parser=d.get("parser"),
            nargs=d.get("nargs"),
            choices=tuple(choices) if choices is not None else None,
            const=d.get("const"),
            default=d.get("default"),
            required=bool(d.get("required", False)),
            help=d.get("help", ""),
        )

    def check_value(self, value: Any) -> str | None:
        """Return why ``value`` (a YAML-loaded object) is unusable for this flag, or None if OK.

        ``None`` always means "leave the flag unset" and is accepted.
        """
        if value is None:
            return None
        if self.kind in ("store_true", "boolean_optional"):
            if not isinstance(value, bool):
                return (f"{self.flag} is a boolean flag: expected true or false, "
                        f"got {_describe(value)}")
            return None
        if self.nargs in ("+", "*") or isinstance(self.nargs, int):
            if not isinstance(value, (list, tuple)):
                return f"{self.flag} takes a list, got {_describe(value)}"
            if self.nargs == "+" and not value:
                return f"{self.flag} takes a non-empty list"
            if isinstance(self.nargs, int) and len(value) != self.nargs:
                return f"{self.flag} takes exactly {self.nargs} values, got {len(value)}"
            for i, item in enumerate(value):
                problem = self._check_scalar(item)
                if problem:
                    return f"{self.flag}[{i}]: {problem}"
            return None
        if self.nargs == "?" and value is True:
            return None  # bare flag: argparse stores `const`
        problem = self._check_scalar(value)
        return f"{self.flag}: {problem}" if problem else None

    def _check_scalar(self, value: Any) -> str | None:
        t = self.type
        if t == "json":
            if isinstance(value, (dict, list)):
                return None
            if isinstance(value, str):
                try:
                    json.loads(value)
                except ValueError:
                    return ("expected a mapping, a list or a JSON string, "
                            f"got invalid JSON {value!r}")
                return None
            return f"expected a mapping or a list, got {_describe(value)}"
        if t == "int":
            ok = isinstance(value, int) and not isinstance(value, bool)
            if not ok and self.parser == "human_readable_int" and isinstance(value, str):
                ok = _HUMAN_INT.fullmatch(value.strip()) is not None
            if not ok:
                return f"expected an integer, got {_describe(value)}"
        elif t == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"expected a number, got {_describe(value)}"
        elif t == "bool":
            if not isinstance(value, bool):
                return f"expected true or false, got {_describe(value)}"
        elif t == "str":
            if not isinstance(value, str):
                hint = "" if isinstance(value, (dict, list, tuple)) else " (quote it in YAML)"
                return f"expected a string, got {_describe(value)}{hint}"
        elif isinstance(value, (dict, list, tuple)):
            return f"expected a scalar, got {_describe(value)}"
        if self.choices is not None and value not in self.choices:
            return f"{value!r} is not one of: {_fmt_choices(self.choices)}"
        return None

    def to_argv(self, value: Any) -> list[Any]:
        """The exact tokens SGLang's parser expects for ``value`` (``[]`` leaves the flag unset).

        Call :meth:`check_value` first; this raises ``ValueError`` on values it rejects.
        """
        if type(value).__name__ == "EnvRef":  # a secret read from the environment at launch
            return [self.flag, value]
        problem = self.check_value(value)
        if problem:
            raise ValueError(problem)
        if value is None:
            return []
        flag = self.flag
        if self.kind == "store_true":
            return [flag] if value else []
        if self.kind == "boolean_optional":
            return [flag] if value else ["--no-" + flag[2:]]
        if self.nargs in ("+", "*") or isinstance(self.nargs, int):
            return [flag, *(self._token(v) for v in value)]
        if self.nargs == "?" and value is True:
            return [flag]
        token = self._token(value)
        # "--flag -x" would read "-x" as an option; "--flag=-x" cannot be misread.
        if token.startswith("-") and not _looks_negative_number(token):
            return [f"{flag}={token}"]
        return [flag, token]

    def _token(self, value: Any) -> str:
        if self.type == "json" and not isinstance(value, str):
            return json.dumps(value, sort_keys=True, separators=(",", ":"))
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return repr(value)  # shortest repr that round-trips
        return str(value)


def _looks_negative_number(token: str) -> bool:
    # argparse's own test (parser._negative_number_matcher) of Python 3.10-3.12, the strictest
    # a host may run: "-1", "-.5", "-0.5" ("-1e-05" reads as an option there: "--flag=-1e-05")
    return re.fullmatch(r"-\d+|-\d*\.\d+", token) is not None


def normalize_key(key: str) -> str:
    return key.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Catalog:
    """All ``launch_server`` flags of one SGLang version, looked up by any spelling."""

    package: str
    version: str
    wheel: str
    args: tuple[ArgSpec, ...]
    #: normalised key (underscore form of a name, dest or flag) -> index into ``args``
    index: Mapping[str, int] = field(repr=False, compare=False)
    #: the decoded JSON document (what :func:`build_parser` and the rehearsal engine read)
    document: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Catalog:
        """Build from the decoded JSON document; raises :class:`CatalogError` on a bad one."""
        if data.get("format") != FORMAT:
            raise CatalogError(f"unsupported catalog format {data.get('format')!r}")
        args = tuple(ArgSpec.from_json(a) for a in data["args"])
        index: dict[str, int] = {}
        # Names win over aliases: register all names first, then flags, then dests.
        for i, a in enumerate(args):
            if a.name in index:
                raise CatalogError(f"duplicate argument name {a.name!r}")
            index[a.name] = i
        for i, a in enumerate(args):
            for key in [normalize_key(f) for f in a.flags] + [a.dest]:
                index.setdefault(key, i)
        return cls(data["package"], data["version"], data["wheel"], args, index, data)

    @property
    def names(self) -> tuple[str, ...]:
        """Canonical underscore names, sorted."""
        return tuple(a.name for a in self.args)

    def get(self, key: str) -> ArgSpec | None:
        """Look up by name, dest or flag, in underscore or dash form (``tp_size``, ``--tp-size``,
        ``tensor-parallel-size``); None if unknown."""
        i = self.index.get(normalize_key(key))
        return None if i is None else self.args[i]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def parser(self) -> argparse.ArgumentParser:
        """A parser that accepts exactly what SGLang's ``launch_server`` parser accepts."""
        return build_parser(dict(self.document))


def build_parser(document: dict[str, Any]) -> argparse.ArgumentParser:
    """:func:`generator.rehearsal.build_parser`, imported when a parser is wanted: the
    rehearsal engine (http.server and all) stays out of the commands that never parse argv."""
    from generator.rehearsal import build_parser as build

    return build(document)


def catalog_path(version: str) -> Path:
    """Path of the committed catalog file for ``version``."""
    return SCHEMAS / f"sglang-{version}.json"


def versions_with(name: str, besides: str) -> list[str]:
    """The supported SGLang versions other than ``besides`` whose catalog has server argument
    ``name`` (any spelling it takes)."""
    return [v for v in SUPPORTED_VERSIONS if v != besides and load_catalog(v).get(name) is not None]


@functools.cache
def load_catalog(version: str = "0.5.23") -> Catalog:
    """Load the committed catalog for an SGLang version (cached)."""
    if version not in SUPPORTED_VERSIONS:
        raise CatalogError(f"no ServerArgs catalog for sglang {version} "
                           f"(supported: {', '.join(SUPPORTED_VERSIONS)})")
    path = catalog_path(version)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogError(f"cannot read {path}: {exc}") from exc
    return Catalog.from_json(data)


def did_you_mean(key: str, names: Iterable[str]) -> str | None:
    """A "did you mean 'x'?" hint for an unknown key, or None when nothing is close."""
    matches = difflib.get_close_matches(normalize_key(key), list(names), n=1, cutoff=0.75)
    return f"did you mean '{matches[0]}'?" if matches else None
