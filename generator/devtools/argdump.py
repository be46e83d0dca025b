"""Dump a live argparse parser as a catalog document (the format of ``generator.compile.catalog``).

Standard library only: it runs inside whatever interpreter has the router package installed
(sglang-router beside sgl-gen, smg in its own virtualenv because their console scripts clash)::

    python generator/devtools/argdump.py sglang_router.router_args:RouterArgs sglang-router
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import sys
from typing import Any

FORMAT = 1


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


def _type_name(action: argparse.Action) -> str:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction,
                           argparse.BooleanOptionalAction)):
        return "bool"
    if action.nargs == 0 and action.const is True:  # a project's own store-true action
        return "bool"
    t = action.type
    if t is None or t is str:
        return "str"
    if getattr(t, "__module__", None) == "json" and getattr(t, "__name__", None) == "loads":
        return "json"
    if t is int:
        return "int"
    if t is float:
        return "float"
    return "str"  # custom converters take a string token


def _kind(action: argparse.Action) -> str:
    if isinstance(action, argparse._StoreTrueAction):
        return "store_true"
    if isinstance(action, argparse._StoreFalseAction):
        return "store_false"
    if isinstance(action, argparse.BooleanOptionalAction):
        return "boolean_optional"
    if action.nargs == 0 and action.const is True:  # a project's own store-true action
        return "store_true"
    if isinstance(action, argparse._AppendAction):
        return "append"
    return "value"


def dump_parser(parser: argparse.ArgumentParser, package: str, version: str,
                fields: frozenset[str] | None = None) -> dict[str, Any]:
    """Every optional action of ``parser`` (help excluded), sorted by name.

    Each entry is named by its first long flag (the routers), or, given ``fields`` (SGLang's
    ServerArgs fields), by the field it sets: its ``dest`` or the underscore form of one of its
    flags that is a field (``--tensor-parallel-size``/``--tp-size`` is ``tp_size``); a later
    action setting a field already named (a deprecated spelling) keeps its own flag's form, as
    generator/devtools/extract_catalog.py names them."""
    args = []
    taken: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        flags = [f for f in action.option_strings if f.startswith("--")]
        flags = [f for f in flags if not f.startswith("--no-")] or flags
        name = flags[0][2:].replace("-", "_")
        if fields is not None:
            candidates = [action.dest] + [f[2:].replace("-", "_") for f in flags]
            field = next((c for c in candidates if c in fields), action.dest)
            if field not in taken:
                name = field
            taken.add(field)
        nargs = action.nargs
        args.append({
            "name": name,
            "dest": action.dest,
            "flags": flags,
            "kind": _kind(action),
            "action": type(action).__name__,
            "type": _type_name(action),
            "parser": None,
            "nargs": nargs if isinstance(nargs, (int, str)) or nargs is None else str(nargs),
            # sorted: some choice lists come from unordered registries (tool-call parsers)
            "choices": (_jsonable(sorted(action.choices, key=str))
                        if action.choices is not None else None),
            "const": _jsonable(action.const),
            "default": _jsonable(action.default),
            "required": bool(action.required),
            "help": (action.help or "") if action.help != argparse.SUPPRESS else "",
        })
    args.sort(key=lambda a: a["name"])
    return {"format": FORMAT, "package": package, "version": version,
            "wheel": f"{package}=={version}", "args": args}


def main(argv: list[str]) -> int:
    target, package = argv
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    parser = argparse.ArgumentParser(add_help=True)
    cls.add_cli_args(parser)
    version = importlib.metadata.version(package)
    json.dump(dump_parser(parser, package, version), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
