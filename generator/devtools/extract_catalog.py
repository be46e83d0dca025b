"""Extract the ServerArgs catalog (every ``sglang.launch_server`` flag) from an sglang wheel.

Run once per SGLang release (a developer tool; no command imports it)::

    python -m generator.devtools.extract_catalog WHEEL -o schemas/sglang-<version>.json

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
``schemas/sglang-<version>.json`` and read back with :func:`generator.compile.catalog.load_catalog`.

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
import json
import math
import sys
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from generator.compile.catalog import FORMAT, Catalog, CatalogError, normalize_key
from generator.devtools.wheel_eval import (
    ClassRef,
    Module,
    Native,
    Unresolvable,
    Wheel,
)
from generator.rehearsal import build_parser

__all__ = ["dumps", "extract", "main"]

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
# ---------------------------------------------------------------------------------------------
# Extraction: mirror arg_utils.add_cli_args_from_dataclass and ServerArgs.add_cli_args
# ---------------------------------------------------------------------------------------------

_MISSING: Any = object()


@dataclass(frozen=True)
class _Field:
    module: Module
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
    def __init__(self, wheel: Wheel) -> None:
        self.wheel = wheel
        self.server_args = wheel.module(_SERVER_ARGS_MODULE)
        self.fields = self._input_fields()
        self.field_defaults: dict[str, Any] = {}
        for f in self.fields:
            if f.default is not None:
                self.field_defaults[f.name] = self._eval(f.module, f.default, f"{f.name} default")

    def _eval(self, module: Module, node: ast.expr, what: str,
              local: Mapping[str, Any] | None = None) -> Any:
        try:
            return module.eval(node, local)
        except Unresolvable as exc:
            raise CatalogError(f"cannot evaluate {what}: {exc}") from exc

    def _input_fields(self) -> list[_Field]:
        """Fields of the namespace classes ServerArgs is assembled from (``_INPUT_NAMESPACES``),
        plus any annotated on ServerArgs itself."""
        node = self.server_args.scope.get("_INPUT_NAMESPACES")
        if not isinstance(node, ast.List):
            raise CatalogError("server_args._INPUT_NAMESPACES is not a list literal")
        classes: list[ClassRef] = []
        for elt in node.elts:
            ref = self._eval(self.server_args, elt, "_INPUT_NAMESPACES")
            if not isinstance(ref, ClassRef):
                raise CatalogError(f"_INPUT_NAMESPACES entry {ast.unparse(elt)} is not a class")
            classes.append(ref)
        own = self.server_args.classes.get("ServerArgs")
        if own is not None:
            classes.append(ClassRef(self.server_args, own))
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
        local: dict[str, Any] = {"_declared_default": Native(self._declared_default)}
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
            raise Unresolvable(f"no declared default for {name}")
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
    wheel = Wheel(wheel_path)
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
            e["name"] = normalize_key(e["flags"][0])
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
    """``python -m generator.devtools.extract_catalog WHEEL -o schemas/sglang-X.json``."""
    ap = argparse.ArgumentParser(prog="python -m generator.devtools.extract_catalog",
                                 description="Extract the SGLang ServerArgs catalog from a wheel "
                                             "(read as a zip; nothing is imported).")
    ap.add_argument("wheel", type=Path)
    ap.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
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
