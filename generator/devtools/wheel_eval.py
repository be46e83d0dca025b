"""A static evaluator of Python source inside a wheel (read as a zip, never imported): module
bindings, imports across modules, constant-ish expressions, class attributes and simple function
results: what generator/devtools/extract_catalog.py needs to read SGLang's ServerArgs without
importing SGLang (it pins torch and CUDA).
"""

from __future__ import annotations

import argparse
import ast
import functools
import operator
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator.compile.catalog import CatalogError

# ---------------------------------------------------------------------------------------------
# Static evaluation of the wheel's Python source
# ---------------------------------------------------------------------------------------------


class Unresolvable(Exception):
    """An expression this evaluator does not model (caller decides whether that is fatal)."""


@dataclass(frozen=True)
class _Extern:
    """A name from outside the wheel (``argparse.BooleanOptionalAction``, ``json.loads``)."""

    qualname: str


@dataclass(frozen=True)
class ClassRef:
    module: Module
    node: ast.ClassDef


@dataclass(frozen=True)
class _FuncRef:
    module: Module
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
class Native:
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


class Wheel:
    """Read-only view of the wheel's Python modules (parsed lazily, never imported)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip = zipfile.ZipFile(path)
        self._names = set(self._zip.namelist())
        self._modules: dict[str, Module] = {}

    def close(self) -> None:
        self._zip.close()

    def has_module(self, dotted: str) -> bool:
        base = dotted.replace(".", "/")
        return f"{base}.py" in self._names or f"{base}/__init__.py" in self._names

    def module(self, dotted: str) -> Module:
        if dotted not in self._modules:
            base = dotted.replace(".", "/")
            for candidate in (f"{base}.py", f"{base}/__init__.py"):
                if candidate in self._names:
                    source = self._zip.read(candidate).decode("utf-8")
                    is_pkg = candidate.endswith("__init__.py")
                    self._modules[dotted] = Module(self, dotted, ast.parse(source), is_pkg)
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


class Module:
    """Top-level bindings of one module: assignments, classes, functions and imports."""

    def __init__(self, wheel: Wheel, name: str, tree: ast.Module, is_pkg: bool) -> None:
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
        return isinstance(other, Module) and other.name == self.name

    def _bind(self, stmt: ast.stmt, scope: dict[str, Any]) -> None:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 \
                and isinstance(stmt.targets[0], ast.Name):
            scope[stmt.targets[0].id] = stmt.value
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
            scope[stmt.target.id] = stmt.value
        elif isinstance(stmt, ast.ClassDef):
            scope[stmt.name] = ClassRef(self, stmt)
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
        raise Unresolvable(f"{self.name}: unknown name {name}")

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
            raise Unresolvable(f"{imp.module} has no {imp.name}")
        return _Extern(f"{imp.module}.{imp.name}")

    def eval(self, node: ast.expr, local: Mapping[str, Any] | None = None) -> Any:
        """Evaluate a constant-ish expression; raises :class:`Unresolvable` otherwise."""
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
                raise Unresolvable("dict unpacking")
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
                raise Unresolvable("complex comprehension")
            out = []
            for item in _iterate(ev(gen.iter)):
                scope = {**(local or {}), gen.target.id: _Value(item)}
                out.append(self.eval(node.elt, scope))
            return out
        raise Unresolvable(f"{self.name}: cannot evaluate {ast.unparse(node)[:80]}")

    def _attribute(self, obj: Any, attr: str) -> Any:
        if isinstance(obj, _Extern):
            qualname = f"{obj.qualname}.{attr}"
            return _KNOWN_EXTERNS.get(qualname, _Extern(qualname))
        if isinstance(obj, (ClassRef, _FuncRef)) and attr == "__doc__":
            # Raw, as CPython 3.11 stores it (3.13 would dedent it); the wheel is cp311.
            return ast.get_docstring(obj.node, clean=False)
        if isinstance(obj, ClassRef):
            return obj.module.class_attr(obj.node, attr)
        if isinstance(obj, _EnumMember):
            if attr in ("name", "value"):
                return getattr(obj, attr)
        if isinstance(obj, str) and attr in _STR_METHODS:
            return _Bound(obj, attr)
        raise Unresolvable(f"attribute {attr} of {obj!r}")

    def class_attr(self, cls: ast.ClassDef, attr: str) -> Any:
        # Names in a class body see earlier class attributes first (Backend.ALL = (FULL, ...)).
        body: dict[str, Any] = {}
        for stmt in cls.body:
            self._bind(stmt, body)
        if attr not in body:
            raise Unresolvable(f"{cls.name} has no {attr}")
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
        if isinstance(func, Native):
            return func.fn(*args, **kwargs)
        if isinstance(func, _FuncRef) and not args and not kwargs:
            return func.module.function_result(func.node)
        raise Unresolvable(f"call {ast.unparse(node)[:80]}")

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
            raise Unresolvable(f"{fn.name} returns nothing")
        return self.eval(result, local)


@dataclass(frozen=True)
class _Value:
    """An already-evaluated value bound in a local scope (comprehension variables)."""

    value: Any


def _iterate(obj: Any) -> list[Any]:
    if isinstance(obj, ClassRef):  # an Enum class: its members, in definition order
        bases = {ast.unparse(b).rsplit(".", 1)[-1] for b in obj.node.bases}
        if not bases & {"Enum", "IntEnum", "StrEnum", "IntFlag", "Flag"}:
            raise Unresolvable(f"iterating class {obj.node.name}")
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
    raise Unresolvable(f"iterating {obj!r}")
