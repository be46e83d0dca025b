"""Stage 2 — validate the document's shape against ``schemas/topology.schema.json``.

Each jsonschema error becomes a positioned diagnostic with a message written for people (not the
validator's ``'x' is not of type 'integer'``), unknown keys get a did-you-mean. Semantic rules
(slime's resolution and the stricter checks) live in ``resolve``.
"""

from __future__ import annotations

import difflib
import json
from functools import lru_cache
from typing import Any

import jsonschema

from generator.errors import Diagnostic
from generator.loader import PathT, SourceMap
from generator.paths import SCHEMAS

_TYPE_NAMES = {
    "integer": "an integer",
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "boolean": "true or false",
    "number": "a number",
    "null": "null",
}


@lru_cache(maxsize=1)
def topology_schema() -> dict[str, Any]:
    """The topology JSON Schema (2020-12) as a dict."""
    return json.loads((SCHEMAS / "topology.schema.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(topology_schema())


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """A hint naming the closest valid choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


def describe(value: Any) -> str:
    """A short, safe rendering of a user value for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "mapping"
    return "null"


def _expected(types: Any) -> str:
    if isinstance(types, str):
        types = [types]
    return " or ".join(_TYPE_NAMES.get(t, t) for t in types)


def _errors_for(err: jsonschema.ValidationError, smap: SourceMap) -> list[Diagnostic]:
    path: PathT = tuple(err.absolute_path)
    v = err.validator
    inst = err.instance
    if v == "additionalProperties" and isinstance(inst, dict):
        allowed = sorted(err.schema.get("properties", {}))
        out = []
        for key in sorted(k for k in inst if k not in err.schema.get("properties", {})):
            hint = did_you_mean(key, allowed) or ("allowed: " + ", ".join(allowed) if allowed else "")
            out.append(smap.diag(path + (key,), f"unknown key '{key}'", hint=hint, key=True))
        return out
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else err.message
        return [smap.diag(path, f"missing required key '{missing}'")]
    if v == "type":
        return [smap.diag(path, f"must be {_expected(err.validator_value)}, "
                                f"got {_type_of(inst)} {describe(inst)}")]
    if v == "enum":
        choices = ", ".join(str(c) for c in err.validator_value)
        hint = did_you_mean(str(inst), [str(c) for c in err.validator_value])
        return [smap.diag(path, f"{describe(inst)} is not one of: {choices}", hint=hint)]
    if v == "minimum":
        return [smap.diag(path, f"must be >= {err.validator_value}, got {describe(inst)}")]
    if v == "maximum":
        return [smap.diag(path, f"must be <= {err.validator_value}, got {describe(inst)}")]
    if v == "minItems":
        return [smap.diag(path, f"must have at least {err.validator_value} item(s)")]
    if v == "minLength":
        return [smap.diag(path, "must not be empty")]
    if v == "uniqueItems":
        return [smap.diag(path, "items must be unique")]
    if v == "pattern":
        desc = err.schema.get("description", "")
        return [smap.diag(path, f"{describe(inst)} is not allowed here"
                                + (f": {desc}" if desc else f" (must match {err.validator_value})"))]
    if v == "propertyNames":
        return [smap.diag(path, f"key {describe(inst)} is not a valid name", key=True)]
    if v == "not" and isinstance(inst, dict) and "engine_groups" in inst:
        return [smap.diag(path + ("engine_groups",),
                          "both server_groups and its legacy alias engine_groups are set",
                          hint="keep only server_groups", key=True)]
    return [smap.diag(path, err.message)]


def validate_shape(data: dict[str, Any], smap: SourceMap) -> list[Diagnostic]:
    """All schema problems of a document, positioned and sorted."""
    out: list[Diagnostic] = []
    for err in _validator().iter_errors(data):
        # propertyNames errors point at the key string itself: report on the parent mapping.
        if err.validator == "propertyNames":
            parent: PathT = tuple(err.absolute_path)
            out.append(smap.diag(parent + (str(err.instance),),
                                 f"key {describe(err.instance)} is not a valid name", key=True))
            continue
        out.extend(_errors_for(err, smap))
    return sorted(set(out))
