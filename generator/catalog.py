"""The ServerArgs catalog: every ``sglang.launch_server`` flag of a pinned SGLang version.

SGLang cannot be imported by the generator (it pins torch and CUDA), but its wheel is the source of
truth. ``extract`` reads the wheel as a zip and evaluates, statically with :mod:`ast`, exactly what
``ServerArgs.add_cli_args`` registers:

* every field of the namespace classes listed in ``server_args._INPUT_NAMESPACES`` that is declared
  as ``name: A[T, "help"]`` or ``name: A[T, Arg(...)]`` (``no_cli`` fields are skipped), mapped to
  argparse the way ``arg_utils.add_cli_args_from_dataclass`` does it;
* the manual ``parser.add_argument`` calls in ``ServerArgs.add_cli_args`` (dynamic choices,
  ``--config`` and the deprecated spellings). Environment-dependent branches (``if envs...``) are
  skipped, so the catalog is what SGLang registers with a clean environment.

Nothing from the wheel is imported or executed. The result is committed as
``schemas/sglang-<version>.json`` and read back with :func:`load_catalog`.

Catalog entry fields (JSON keys, sorted):

``name``      underscore key users write in YAML (the dataclass field; for a manual flag whose
              ``dest`` is shared with another flag, the flag's own underscore form)
``dest``      argparse ``dest`` in SGLang's parser
``flags``     option strings, primary first, then aliases (BooleanOptionalAction also accepts
              ``--no-<flag>`` for each)
``kind``      ``value`` (takes a value), ``store_true`` (bare flag), ``boolean_optional``
              (``--x`` / ``--no-x``)
``action``    the argparse action SGLang registers (``store``, ``store_true``,
              ``BooleanOptionalAction``, ``LoRAPathAction``, ``DeprecatedStoreTrueAction``,
              ``DeprecatedStoreConstAction``)
``type``      YAML value type: ``str``, ``int``, ``float``, ``bool``, ``json`` (a JSON document
              on the command line: object or list), ``any``
``parser``    SGLang's ``type=`` callable when it is not a plain builtin (``json.loads``,
              ``human_readable_int``, ...), else null
``nargs``     null, ``"?"``, ``"*"``, ``"+"`` or an int
``choices``   list or null (sets are sorted)
``const``     argparse ``const`` (for ``nargs="?"``), else null
``default``   declared default as JSON, null when absent or not representable
``required``  argparse ``required``
``help``      help text
"""

from __future__ import annotations

import argparse
import ast
import difflib
import functools
import json
import math
import operator
import re
import sys
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from generator.paths import SCHEMAS
from generator.rehearsal import build_parser

__all__ = [
    "SUPPORTED_VERSIONS",
    "ArgSpec",
    "Catalog",
    "CatalogError",
    "build_parser",
    "catalog_path",
    "did_you_mean",
    "dumps",
    "extract",
    "load_catalog",
]

#: SGLang versions with a committed catalog under ``schemas/``.
SUPPORTED_VERSIONS: tuple[str, ...] = ("0.5.23",)

FORMAT = 1

_FIELDS_MODULE = "sglang.srt.arg_groups.fields"
_SERVER_ARGS_MODULE = "sglang.srt.server_args"

#: SGLang's ``type=`` callables and the catalog type each one produces.
_PARSER_TYPES = {
    "json.loads": "json",
    "json_list_type": "json",
    "parse_cuda_graph_config_arg": "json",
    "human_readable_int": "int",
    "nullable_str": "str",
    "parse_cuda_graph_backend_arg": "str",
}
_BUILTIN_TYPES = {"str": "str", "int": "int", "float": "float", "bool": "bool"}

_HUMAN_INT = re.compile(r"\d+(?:\.\d+)?(?:Ki|Mi|Gi|Ti|k|M|G|T)")


class CatalogError(Exception):
    """The wheel cannot be read the way this extractor expects, or a catalog file is invalid."""


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


def _norm(key: str) -> str:
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
            for key in [_norm(f) for f in a.flags] + [a.dest]:
                index.setdefault(key, i)
        return cls(data["package"], data["version"], data["wheel"], args, index, data)

    @property
    def names(self) -> tuple[str, ...]:
        """Canonical underscore names, sorted."""
        return tuple(a.name for a in self.args)

    def get(self, key: str) -> ArgSpec | None:
        """Look up by name, dest or flag, in underscore or dash form (``tp_size``, ``--tp-size``,
        ``tensor-parallel-size``); None if unknown."""
        i = self.index.get(_norm(key))
        return None if i is None else self.args[i]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def parser(self) -> argparse.ArgumentParser:
        """A parser that accepts exactly what SGLang's ``launch_server`` parser accepts."""
        return build_parser(dict(self.document))


def catalog_path(version: str) -> Path:
    """Path of the committed catalog file for ``version``."""
    return SCHEMAS / f"sglang-{version}.json"


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
    matches = difflib.get_close_matches(_norm(key), list(names), n=1, cutoff=0.75)
    return f"did you mean '{matches[0]}'?" if matches else None


# ---------------------------------------------------------------------------------------------
# Static evaluation of the wheel's Python source
# ---------------------------------------------------------------------------------------------


class _Unresolvable(Exception):
    """An expression this evaluator does not model (caller decides whether that is fatal)."""


@dataclass(frozen=True)
class _Extern:
    """A name from outside the wheel (``argparse.BooleanOptionalAction``, ``json.loads``)."""

    qualname: str


@dataclass(frozen=True)
class _ClassRef:
    module: _Module
    node: ast.ClassDef


@dataclass(frozen=True)
class _FuncRef:
    module: _Module
    node: ast.FunctionDef


@dataclass(frozen=True)
class _EnumMember:
    name: str
    value: Any


@dataclass(frozen=True)
class _Bound:
    """A bound method of an evaluated value (``"AMD".lower``)."""

    obj: Any
    attr: str


@dataclass(frozen=True)
class _Native:
    """A Python callable standing in for a wheel helper (``_declared_default``)."""

    fn: Callable[..., Any]


@dataclass(frozen=True)
class _Import:
    module: str
    name: str | None  # None: the module itself (``import json``)


_BUILTINS: dict[str, Callable[..., Any]] = {
    "list": list, "tuple": tuple, "set": set, "frozenset": frozenset, "sorted": sorted,
    "dict": dict, "str": str, "int": int, "float": float, "bool": bool, "len": len,
}
_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv, ast.Div: operator.truediv, ast.Pow: operator.pow,
    ast.LShift: operator.lshift, ast.BitOr: operator.or_,
}
#: Constants from the standard library that the field declarations use.
_KNOWN_EXTERNS: dict[str, Any] = {"argparse.SUPPRESS": argparse.SUPPRESS}
_STR_METHODS = {"lower", "upper", "strip", "replace", "format", "join"}


class _Wheel:
    """Read-only view of the wheel's Python modules (parsed lazily, never imported)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip = zipfile.ZipFile(path)
        self._names = set(self._zip.namelist())
        self._modules: dict[str, _Module] = {}

    def close(self) -> None:
        self._zip.close()

    def has_module(self, dotted: str) -> bool:
        base = dotted.replace(".", "/")
        return f"{base}.py" in self._names or f"{base}/__init__.py" in self._names

    def module(self, dotted: str) -> _Module:
        if dotted not in self._modules:
            base = dotted.replace(".", "/")
            for candidate in (f"{base}.py", f"{base}/__init__.py"):
                if candidate in self._names:
                    source = self._zip.read(candidate).decode("utf-8")
                    is_pkg = candidate.endswith("__init__.py")
                    self._modules[dotted] = _Module(self, dotted, ast.parse(source), is_pkg)
                    break
            else:
                raise CatalogError(f"{self.path.name}: module {dotted} not found")
        return self._modules[dotted]

    def version(self) -> str:
        for name in sorted(self._names):
            if name.endswith(".dist-info/METADATA"):
                for line in self._zip.read(name).decode("utf-8").splitlines():
                    if line.startswith("Version:"):
                        return line.split(":", 1)[1].strip()
        raise CatalogError(f"{self.path.name}: no dist-info METADATA with a Version")


class _Module:
    """Top-level bindings of one module: assignments, classes, functions and imports."""

    def __init__(self, wheel: _Wheel, name: str, tree: ast.Module, is_pkg: bool) -> None:
        self.wheel = wheel
        self.name = name
        self.tree = tree
        self.package = name if is_pkg else name.rpartition(".")[0]
        self.scope: dict[str, Any] = {}
        # Class statements by name, even when the name is later rebound
        # (server_args rebinds ServerArgs to msgspec.defstruct(...) of the class).
        self.classes: dict[str, ast.ClassDef] = {}
        for stmt in tree.body:
            self._bind(stmt, self.scope)
            if isinstance(stmt, ast.ClassDef):
                self.classes[stmt.name] = stmt

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Module) and other.name == self.name

    def _bind(self, stmt: ast.stmt, scope: dict[str, Any]) -> None:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
                and isinstance(stmt.targets[0], ast.Name):
            scope[stmt.targets[0].id] = stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
            scope[stmt.target.id] = stmt.value
        elif isinstance(stmt, ast.ClassDef):
            scope[stmt.name] = _ClassRef(self, stmt)
        elif isinstance(stmt, ast.FunctionDef):
            scope[stmt.name] = _FuncRef(self, stmt)
        elif isinstance(stmt, ast.ImportFrom):
            base = self._absolute(stmt)
            for alias in stmt.names:
                scope[alias.asname or alias.name] = _Import(base, alias.name)
        elif isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if alias.asname:
                    scope[alias.asname] = _Import(alias.name, None)
                else:
                    top = alias.name.split(".")[0]
                    scope[top] = _Import(top, None)

    def _absolute(self, stmt: ast.ImportFrom) -> str:
        if not stmt.level:
            return stmt.module or ""
        parts = self.package.split(".")
        base = ".".join(parts[: len(parts) - stmt.level + 1])
        return f"{base}.{stmt.module}" if stmt.module else base

    # -- evaluation -----------------------------------------------------------------------

    def lookup(self, name: str, local: Mapping[str, Any] | None = None) -> Any:
        if local is not None and name in local:
            return self._resolve_binding(local[name], local)
        if name in self.scope:
            return self._resolve_binding(self.scope[name], None)
        if name in _BUILTINS:
            return _BUILTINS[name]
        if name in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[name]
        raise _Unresolvable(f"{self.name}: unknown name {name}")

    def _resolve_binding(self, binding: Any, local: Mapping[str, Any] | None) -> Any:
        if isinstance(binding, _Value):
            return binding.value
        if isinstance(binding, ast.expr):
            return self.eval(binding, local)
        if isinstance(binding, _Import):
            return self._resolve_import(binding)
        return binding

    def _resolve_import(self, imp: _Import) -> Any:
        if imp.name is None:
            return _Extern(imp.module)
        if self.wheel.has_module(imp.module):
            mod = self.wheel.module(imp.module)
            if imp.name in mod.scope:
                return mod.lookup(imp.name)
            sub = f"{imp.module}.{imp.name}"
            if self.wheel.has_module(sub):
                return _Extern(sub)
            raise _Unresolvable(f"{imp.module} has no {imp.name}")
        return _Extern(f"{imp.module}.{imp.name}")

    def eval(self, node: ast.expr, local: Mapping[str, Any] | None = None) -> Any:
        """Evaluate a constant-ish expression; raises :class:`_Unresolvable` otherwise."""
        ev = functools.partial(self.eval, local=local)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            items: list[Any] = []
            for elt in node.elts:
                if isinstance(elt, ast.Starred):
                    items.extend(ev(elt.value))
                else:
                    items.append(ev(elt))
            kind = {ast.List: list, ast.Tuple: tuple, ast.Set: set}[type(node)]
            return kind(items)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise _Unresolvable("dict unpacking")
            return {ev(k): ev(v)  # type: ignore[arg-type]
                    for k, v in zip(node.keys, node.values, strict=True)}
        if isinstance(node, ast.Name):
            return self.lookup(node.id, local)
        if isinstance(node, ast.Attribute):
            return self._attribute(ev(node.value), node.attr)
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = ev(node.operand)
            return -value if isinstance(node.op, ast.USub) else value
        if isinstance(node, ast.JoinedStr):
            out = []
            for part in node.values:
                if isinstance(part, ast.Constant):
                    out.append(str(part.value))
                elif isinstance(part, ast.FormattedValue):
                    value = ev(part.value)
                    if part.conversion == ord("r"):
                        value = repr(value)
                    elif part.conversion == ord("s"):
                        value = str(value)
                    spec = ev(part.format_spec) if part.format_spec else ""
                    out.append(format(value, spec))
            return "".join(out)
        if isinstance(node, ast.Call):
            return self._call(node, local)
        if isinstance(node, ast.ListComp) and len(node.generators) == 1:
            gen = node.generators[0]
            if gen.ifs or gen.is_async or not isinstance(gen.target, ast.Name):
                raise _Unresolvable("complex comprehension")
            out = []
            for item in _iterate(ev(gen.iter)):
                scope = {**(local or {}), gen.target.id: _Value(item)}
                out.append(self.eval(node.elt, scope))
            return out
        raise _Unresolvable(f"{self.name}: cannot evaluate {ast.unparse(node)[:80]}")

    def _attribute(self, obj: Any, attr: str) -> Any:
        if isinstance(obj, _Extern):
            qualname = f"{obj.qualname}.{attr}"
            return _KNOWN_EXTERNS.get(qualname, _Extern(qualname))
        if isinstance(obj, (_ClassRef, _FuncRef)) and attr == "__doc__":
            # Raw, as CPython 3.11 stores it (3.13 would dedent it); the wheel is cp311.
            return ast.get_docstring(obj.node, clean=False)
        if isinstance(obj, _ClassRef):
            return obj.module.class_attr(obj.node, attr)
        if isinstance(obj, _EnumMember):
            if attr in ("name", "value"):
                return getattr(obj, attr)
        if isinstance(obj, str) and attr in _STR_METHODS:
            return _Bound(obj, attr)
        raise _Unresolvable(f"attribute {attr} of {obj!r}")

    def class_attr(self, cls: ast.ClassDef, attr: str) -> Any:
        # Names in a class body see earlier class attributes first (Backend.ALL = (FULL, ...)).
        body: dict[str, Any] = {}
        for stmt in cls.body:
            self._bind(stmt, body)
        if attr not in body:
            raise _Unresolvable(f"{cls.name} has no {attr}")
        return self._resolve_binding(body[attr], body)

    def _call(self, node: ast.Call, local: Mapping[str, Any] | None) -> Any:
        func = self.eval(node.func, local)
        args = [self.eval(a, local) for a in node.args]
        kwargs = {k.arg: self.eval(k.value, local) for k in node.keywords if k.arg}
        if isinstance(func, _Bound):
            return getattr(func.obj, func.attr)(*args, **kwargs)
        if func in (list, tuple, set, frozenset, sorted) and args:
            return func(_iterate(args[0]))
        if callable(func) and func in _BUILTINS.values():
            return func(*args, **kwargs)
        if isinstance(func, _Extern) and func.qualname == "msgspec.field":
            if "default" in kwargs:
                return kwargs["default"]
            factory = kwargs.get("default_factory")
            if factory in (list, dict, set, tuple):
                return factory()
        if isinstance(func, _Native):
            return func.fn(*args, **kwargs)
        if isinstance(func, _FuncRef) and not args and not kwargs:
            return func.module.function_result(func.node)
        raise _Unresolvable(f"call {ast.unparse(node)[:80]}")

    def function_result(self, fn: ast.FunctionDef) -> Any:
        """Value of a no-argument helper: its last top-level ``return``, with the function's own
        imports in scope. Earlier returns guard on runtime state (a plugin already imported), so
        the last one is what a fresh process computes."""
        local: dict[str, Any] = {}
        result: ast.expr | None = None
        for stmt in fn.body:
            if isinstance(stmt, (ast.ImportFrom, ast.Import, ast.Assign)):
                self._bind(stmt, local)
            elif isinstance(stmt, ast.Return) and stmt.value is not None:
                result = stmt.value
        if result is None:
            raise _Unresolvable(f"{fn.name} returns nothing")
        return self.eval(result, local)


@dataclass(frozen=True)
class _Value:
    """An already-evaluated value bound in a local scope (comprehension variables)."""

    value: Any


def _iterate(obj: Any) -> list[Any]:
    if isinstance(obj, _ClassRef):  # an Enum class: its members, in definition order
        bases = {ast.unparse(b).rsplit(".", 1)[-1] for b in obj.node.bases}
        if not bases & {"Enum", "IntEnum", "StrEnum", "IntFlag", "Flag"}:
            raise _Unresolvable(f"iterating class {obj.node.name}")
        members = []
        for stmt in obj.node.body:
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
                    and isinstance(stmt.targets[0], ast.Name) \
                    and not stmt.targets[0].id.startswith("_"):
                members.append(_EnumMember(stmt.targets[0].id,
                                           obj.module.eval(stmt.value)))
        return members
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=repr)
    if isinstance(obj, (list, tuple, dict, str)):
        return list(obj)
    raise _Unresolvable(f"iterating {obj!r}")


# ---------------------------------------------------------------------------------------------
# Extraction: mirror arg_utils.add_cli_args_from_dataclass and ServerArgs.add_cli_args
# ---------------------------------------------------------------------------------------------

_MISSING: Any = object()


@dataclass(frozen=True)
class _Field:
    module: _Module
    name: str
    annotation: ast.expr
    default: ast.expr | None


def _tail(node: ast.expr) -> str:
    """Last dotted component of a type name (``typing.Optional`` -> ``Optional``)."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _slice_items(node: ast.Subscript) -> list[ast.expr]:
    return list(node.slice.elts) if isinstance(node.slice, ast.Tuple) else [node.slice]


def _is_none(node: ast.expr) -> bool:
    return isinstance(node, ast.Constant) and node.value is None


def _unwrap_optional(tp: ast.expr) -> ast.expr:
    """``Optional[X]`` / ``Union[X, None]`` / ``X | None`` -> X; anything else unchanged."""
    members: list[ast.expr] | None = None
    if isinstance(tp, ast.Subscript) and _tail(tp.value) == "Optional":
        return tp.slice
    if isinstance(tp, ast.Subscript) and _tail(tp.value) == "Union":
        members = _slice_items(tp)
    elif isinstance(tp, ast.BinOp) and isinstance(tp.op, ast.BitOr):
        members = []
        stack: list[ast.expr] = [tp]
        while stack:
            n = stack.pop()
            if isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr):
                stack += [n.right, n.left]
            else:
                members.append(n)
    if members is not None:
        non_none = [m for m in members if not _is_none(m)]
        if len(non_none) == 1:
            return non_none[0]
    return tp


def _infer_type_func(tp: Any) -> str:
    """arg_utils._infer_type_func: str/int/float map to themselves, anything else to str."""
    return tp if tp in ("str", "int", "float") else "str"


def _py_type_name(value: Any) -> str:
    return type(value).__name__


def _jsonable(value: Any) -> Any:
    """The declared default as JSON; raises ValueError when it has no JSON form."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(value)
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((_jsonable(v) for v in value), key=repr)
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _jsonable(v) for k, v in value.items()}
    raise ValueError(value)


def _choices_json(choices: Any) -> list[Any] | None:
    if choices is None:
        return None
    if isinstance(choices, (set, frozenset)):
        return sorted(choices, key=repr)
    return [_jsonable(c) for c in choices]


class _Extractor:
    def __init__(self, wheel: _Wheel) -> None:
        self.wheel = wheel
        self.server_args = wheel.module(_SERVER_ARGS_MODULE)
        self.fields = self._input_fields()
        self.field_defaults: dict[str, Any] = {}
        for f in self.fields:
            if f.default is not None:
                self.field_defaults[f.name] = self._eval(f.module, f.default, f"{f.name} default")

    def _eval(self, module: _Module, node: ast.expr, what: str,
              local: Mapping[str, Any] | None = None) -> Any:
        try:
            return module.eval(node, local)
        except _Unresolvable as exc:
            raise CatalogError(f"cannot evaluate {what}: {exc}") from exc

    def _input_fields(self) -> list[_Field]:
        """Fields of the namespace classes ServerArgs is assembled from (``_INPUT_NAMESPACES``),
        plus any annotated on ServerArgs itself."""
        node = self.server_args.scope.get("_INPUT_NAMESPACES")
        if not isinstance(node, ast.List):
            raise CatalogError("server_args._INPUT_NAMESPACES is not a list literal")
        classes: list[_ClassRef] = []
        for elt in node.elts:
            ref = self._eval(self.server_args, elt, "_INPUT_NAMESPACES")
            if not isinstance(ref, _ClassRef):
                raise CatalogError(f"_INPUT_NAMESPACES entry {ast.unparse(elt)} is not a class")
            classes.append(ref)
        own = self.server_args.classes.get("ServerArgs")
        if own is not None:
            classes.append(_ClassRef(self.server_args, own))
        fields: list[_Field] = []
        seen: set[str] = set()
        for ref in classes:
            for stmt in ref.node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    name = stmt.target.id
                    if name in seen:
                        raise CatalogError(f"field {name} is declared twice")
                    seen.add(name)
                    fields.append(_Field(ref.module, name, stmt.annotation, stmt.value))
        return fields

    # -- dataclass fields ------------------------------------------------------------------

    def _arg_meta(self, f: _Field) -> dict[str, Any] | None:
        """The field's ``Arg`` keywords (bare help string -> ``{"help": ...}``), None if absent."""
        ann = f.annotation
        if not (isinstance(ann, ast.Subscript) and _tail(ann.value) in ("A", "Annotated")):
            return None
        for meta in _slice_items(ann)[1:]:
            if isinstance(meta, ast.Call) and _tail(meta.func) == "Arg":
                out: dict[str, Any] = {}
                for kw in meta.keywords:
                    if kw.arg in ("type_parser", "action"):
                        out[kw.arg] = ast.unparse(kw.value)  # a callable: keep its name
                        if kw.arg == "action":
                            out["action_node"] = kw.value
                    elif kw.arg:
                        out[kw.arg] = self._eval(f.module, kw.value, f"{f.name}.{kw.arg}")
                return out
            if isinstance(meta, (ast.Constant, ast.JoinedStr, ast.BinOp)):
                value = self._eval(f.module, meta, f"{f.name} help")
                if isinstance(value, str):
                    return {"help": value}
        return None

    def field_entries(self) -> list[dict[str, Any]]:
        entries = []
        for f in self.fields:
            meta = self._arg_meta(f)
            if meta is None or meta.get("no_cli"):
                continue
            entries.append(self._field_entry(f, meta))
        return entries

    def _field_entry(self, f: _Field, meta: dict[str, Any]) -> dict[str, Any]:
        cli_name = meta.get("cli_name") or "--" + f.name.replace("_", "-")
        flags = [cli_name, *(meta.get("aliases") or [])]
        default = self.field_defaults.get(f.name, _MISSING)
        raw_type = _slice_items(f.annotation)[0]  # type: ignore[arg-type]
        entry: dict[str, Any] = {
            "name": f.name, "dest": f.name, "flags": flags, "help": meta.get("help", ""),
            "kind": "value", "action": "store", "type": "str", "parser": None, "nargs": None,
            "choices": None, "const": meta.get("const"), "required": False, "default": default,
        }
        if meta.get("action") is not None:
            action = meta["action"].rsplit(".", 1)[-1]
            entry["action"] = action
            entry["const"] = None
            akw = meta.get("action_kwargs") or {}
            if action == "BooleanOptionalAction":
                entry.update(kind="boolean_optional", type="bool")
            elif action == "store_true":
                entry.update(kind="store_true", type="bool")
            else:  # a custom value action (LoRAPathAction): its kwargs carry type and nargs
                t = akw.get("type")
                entry["type"] = _BUILTIN_TYPES.get(getattr(t, "__name__", ""), "any")
                entry["nargs"] = akw.get("nargs")
                entry["choices"] = _choices_json(akw.get("choices"))
            return entry

        inner = _unwrap_optional(raw_type)
        parser = meta.get("type_parser")
        if isinstance(inner, ast.Subscript) and _tail(inner.value) == "Literal":
            values = [self._eval(f.module, v, f"{f.name} Literal") for v in _slice_items(inner)]
            func = parser or _infer_type_func(_py_type_name(values[0]) if values else "str")
            entry.update(choices=_choices_json(meta.get("choices") or values))
            return self._typed(entry, func)

        is_list = (isinstance(inner, ast.Subscript) and _tail(inner.value) in ("List", "list")) \
            or (isinstance(inner, ast.Name) and inner.id in ("List", "list"))
        if is_list and parser is None:
            elem = _slice_items(inner)[0] if isinstance(inner, ast.Subscript) else None
            entry["nargs"] = meta.get("nargs") or "+"
            if meta.get("choices"):
                entry["choices"] = _choices_json(meta["choices"])
            return self._typed(entry, _infer_type_func(_tail(elem) if elem is not None else "str"))

        if isinstance(inner, ast.Name) and inner.id == "bool":
            entry.update(kind="store_true", action="store_true", type="bool", const=None)
            return entry

        if meta.get("choices"):
            entry["choices"] = _choices_json(meta["choices"])
        if meta.get("nargs"):
            entry["nargs"] = meta["nargs"]
        required = meta.get("required")
        entry["required"] = bool(required is True or (required is None and default is _MISSING))
        return self._typed(entry, parser or _infer_type_func(_tail(inner)))

    @staticmethod
    def _typed(entry: dict[str, Any], func: str) -> dict[str, Any]:
        if func in _BUILTIN_TYPES:
            entry["type"] = _BUILTIN_TYPES[func]
        elif func in _PARSER_TYPES:
            entry.update(type=_PARSER_TYPES[func], parser=func)
        else:
            raise CatalogError(f"{entry['name']}: unknown type parser {func}")
        return entry

    # -- ServerArgs.add_cli_args -----------------------------------------------------------

    def entries(self) -> list[dict[str, Any]]:
        """All flags in registration order (dataclass fields where ``add_cli_args`` adds them)."""
        cls = self.server_args.classes.get("ServerArgs")
        fn = None
        if cls is not None:
            fn = next((s for s in cls.body
                       if isinstance(s, ast.FunctionDef) and s.name == "add_cli_args"), None)
        if fn is None:
            raise CatalogError("ServerArgs.add_cli_args not found")
        local: dict[str, Any] = {"_declared_default": _Native(self._declared_default)}
        out: list[dict[str, Any]] = []
        for stmt in fn.body:
            if isinstance(stmt, ast.Assign):
                self.server_args._bind(stmt, local)
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
                call = stmt.value
                if _tail(call.func) == "add_cli_args_from_dataclass":
                    out.extend(self.field_entries())
                elif _tail(call.func) == "add_argument":
                    out.append(self._manual_entry(call, local))
            # `if` blocks depend on the environment (e.g. SGLANG_KV_CANARY_ENABLE_TOKEN_ORACLE
            # adds a sampling backend): the catalog is what a clean environment registers.
        return out

    def _declared_default(self, name: str) -> Any:
        if name not in self.field_defaults:
            raise _Unresolvable(f"no declared default for {name}")
        return self.field_defaults[name]

    def _manual_entry(self, call: ast.Call, local: dict[str, Any]) -> dict[str, Any]:
        mod = self.server_args
        flags = [self._eval(mod, a, "add_argument flag", local) for a in call.args]
        kw: dict[str, Any] = {}
        names: dict[str, str] = {}
        for k in call.keywords:
            if k.arg in ("type", "action") and not isinstance(k.value, ast.Constant):
                names[k.arg] = ast.unparse(k.value).rsplit(".", 1)[-1]
            elif k.arg:
                kw[k.arg] = self._eval(mod, k.value, f"{flags[0]} {k.arg}", local)
        long = next((f for f in flags if f.startswith("--")), flags[0])
        dest = kw.get("dest") or long.lstrip("-").replace("-", "_")
        action = kw.get("action") or names.get("action") or "store"
        entry: dict[str, Any] = {
            "name": dest, "dest": dest, "flags": flags, "help": kw.get("help", ""),
            "kind": "value", "action": action, "type": "str", "parser": None,
            "nargs": kw.get("nargs"), "choices": _choices_json(kw.get("choices")),
            "const": kw.get("const"), "required": bool(kw.get("required", False)),
            "default": kw.get("default"),
        }
        if action in ("store_true", "DeprecatedStoreTrueAction"):
            # DeprecatedStoreTrueAction(nargs=0, default=False) stores True like store_true.
            entry.update(kind="store_true", type="bool", nargs=None, const=None,
                         default=kw.get("default", False))
        elif action == "store_false":
            entry.update(kind="store_false", type="bool", nargs=None, const=None,
                         default=kw.get("default", True))
        elif action == "DeprecatedStoreConstAction" and "nargs" not in kw:
            # nargs=0 (its default): a bare flag that stores const_value.
            entry.update(kind="store_true", type="bool", const=None, default=kw.get("default"))
        elif action not in ("store", "DeprecatedStoreConstAction", "DeprecatedAliasStoreAction"):
            raise CatalogError(f"{flags[0]}: unsupported action {action}")
        else:
            self._typed(entry, names.get("type", "str"))
        return entry


def extract(wheel_path: Path) -> dict[str, Any]:
    """Statically extract the ServerArgs catalog document from an sglang wheel."""
    wheel = _Wheel(wheel_path)
    try:
        raw = _Extractor(wheel).entries()
        version = wheel.version()
    finally:
        wheel.close()

    field_dests = {e["dest"] for e in raw if e["action"] != "DeprecatedStoreConstAction"}
    args: dict[str, dict[str, Any]] = {}
    option_owner: dict[str, str] = {}
    for e in raw:
        # A manual flag writing into another flag's dest keeps its own spelling as its name.
        if e["dest"] in field_dests and e["action"] == "DeprecatedStoreConstAction":
            e["name"] = _norm(e["flags"][0])
        if e["name"] in args:
            raise CatalogError(f"argument name {e['name']} registered twice")
        for flag in e["flags"]:  # argparse would raise on a conflicting option string
            if flag in option_owner:
                raise CatalogError(f"{flag} registered by {option_owner[flag]} and {e['name']}")
            option_owner[flag] = e["name"]
        default = e["default"]
        try:
            e["default"] = None if default is _MISSING else _jsonable(default)
        except ValueError:
            e["default"] = None
        if e["const"] is not None:
            e["const"] = _jsonable(e["const"])
        for key, value in e.items():
            if key not in ("default", "const", "choices") and value is not None \
                    and not isinstance(value, (str, bool, int, list)):
                raise CatalogError(f"{e['name']}: {key} is not a JSON value: {value!r}")
        args[e["name"]] = e
    return {
        "format": FORMAT,
        "package": "sglang",
        "version": version,
        "wheel": wheel_path.name,
        "args": [args[name] for name in sorted(args)],
    }


def dumps(document: Mapping[str, Any]) -> str:
    """Deterministic JSON text of a catalog document (sorted keys, indent 1, final newline)."""
    return json.dumps(document, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m generator.catalog extract WHEEL -o schemas/sglang-X.json``."""
    ap = argparse.ArgumentParser(prog="python -m generator.catalog",
                                 description="Extract the SGLang ServerArgs catalog from a wheel.")
    sub = ap.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("extract", help="extract the catalog from an sglang wheel (no import)")
    ex.add_argument("wheel", type=Path)
    ex.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    args = ap.parse_args(argv)
    try:
        document = extract(args.wheel)
        # The catalog must be loadable and its parser buildable before it is written.
        Catalog.from_json(document)
        build_parser(document)
    except (CatalogError, OSError, zipfile.BadZipFile) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    text = dumps(document)
    if args.output:
        args.output.write_text(text, encoding="utf-8", newline="\n")
        print(f"{args.output}: {len(document['args'])} arguments "
              f"from {PurePosixPath(args.wheel).name}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
