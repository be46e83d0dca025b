"""A fast yes/no check of a document against the topology schema, stdlib only.

Importing jsonschema (with referencing, attrs and its format checkers) costs more than the whole
rest of ``sgl-gen validate``. Most documents are valid, and for a valid one jsonschema would only
say "no errors": :func:`conforms` answers that without it. It knows exactly the keywords the
topology schema uses, with the semantics sgl-gen gives them (``validate``: an integer is what
YAML wrote as one, ``pattern`` matches the whole string); a schema keyword it does not know, or
a value it cannot judge, makes it answer ``None``, and the caller asks jsonschema, which also
writes the messages of every invalid document. ``tests/test_schemacheck.py`` holds it to
jsonschema's verdict on every example and on many broken variants of them.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

#: keywords that say nothing about validity
_ANNOTATIONS = frozenset({"description", "title", "$id", "$schema", "$defs", "default",
                          "examples", "$comment"})


class _Unsure(Exception):
    """The check met something it does not judge: jsonschema decides."""


_TYPES: dict[str, Any] = {
    "integer": lambda v: type(v) is int,
    "number": lambda v: type(v) in (int, float),
    "string": lambda v: isinstance(v, str),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


@lru_cache(maxsize=256)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``, ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if type(a) is not type(b):
        return False
    return bool(a == b)


def _ok(schema: Any, value: Any, root: dict[str, Any]) -> bool:
    if schema is True:
        return True
    if schema is False:
        return False
    if not isinstance(schema, dict):
        raise _Unsure
    for key, arg in schema.items():
        if key in _ANNOTATIONS:
            continue
        check = _KEYWORDS.get(key)
        if check is None:
            raise _Unsure
        if not check(arg, value, root, schema):
            return False
    return True


def _type(arg: Any, value: Any, _root: Any, _schema: Any) -> bool:
    names = [arg] if isinstance(arg, str) else arg
    if not all(isinstance(n, str) and n in _TYPES for n in names):
        raise _Unsure
    return any(_TYPES[n](value) for n in names)


def _number(value: Any) -> bool:
    return type(value) in (int, float)


def _ref(arg: Any, value: Any, root: dict[str, Any], _schema: Any) -> bool:
    if not isinstance(arg, str) or not arg.startswith("#/"):
        raise _Unsure
    target: Any = root
    for part in arg[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if not isinstance(target, dict) or part not in target:
            raise _Unsure
        target = target[part]
    return _ok(target, value, root)


def _properties(arg: Any, value: Any, root: dict[str, Any], _schema: Any) -> bool:
    if not isinstance(value, dict):
        return True
    return all(_ok(sub, value[k], root) for k, sub in arg.items() if k in value)


def _additional(arg: Any, value: Any, root: dict[str, Any], schema: dict[str, Any]) -> bool:
    if not isinstance(value, dict):
        return True
    if "patternProperties" in schema:
        raise _Unsure
    known = schema.get("properties", {})
    return all(_ok(arg, v, root) for k, v in value.items() if k not in known)


def _unique(arg: Any, value: Any, _root: Any, _schema: Any) -> bool:
    if not arg or not isinstance(value, list):
        return True
    if not (all(isinstance(v, str) for v in value) or all(type(v) is int for v in value)):
        raise _Unsure
    return len(set(value)) == len(value)


def _one_of(arg: Any, value: Any, root: dict[str, Any], _schema: Any) -> bool:
    return sum(1 for sub in arg if _ok(sub, value, root)) == 1


_KEYWORDS: dict[str, Any] = {
    "type": _type,
    "enum": lambda arg, v, _r, _s: any(_equal(v, c) for c in arg),
    "const": lambda arg, v, _r, _s: _equal(v, arg),
    "pattern": lambda arg, v, _r, _s: not isinstance(v, str)
    or _regex(arg).fullmatch(v) is not None,
    "minLength": lambda arg, v, _r, _s: not isinstance(v, str) or len(v) >= arg,
    "minimum": lambda arg, v, _r, _s: not _number(v) or v >= arg,
    "maximum": lambda arg, v, _r, _s: not _number(v) or v <= arg,
    "minItems": lambda arg, v, _r, _s: not isinstance(v, list) or len(v) >= arg,
    "maxItems": lambda arg, v, _r, _s: not isinstance(v, list) or len(v) <= arg,
    "uniqueItems": _unique,
    "items": lambda arg, v, r, _s: not isinstance(v, list) or all(_ok(arg, x, r) for x in v),
    "properties": _properties,
    "additionalProperties": _additional,
    "required": lambda arg, v, _r, _s: not isinstance(v, dict) or all(k in v for k in arg),
    "propertyNames": lambda arg, v, r, _s: not isinstance(v, dict)
    or all(_ok(arg, k, r) for k in v),
    "$ref": _ref,
    "oneOf": _one_of,
    "not": lambda arg, v, r, _s: not _ok(arg, v, r),
}


def conforms(schema: dict[str, Any], document: Any) -> bool | None:
    """True if ``document`` is valid against ``schema``, False if not, None when this check
    cannot tell (ask jsonschema)."""
    try:
        return _ok(schema, document, schema)
    except (_Unsure, RecursionError, TypeError):
        return None
