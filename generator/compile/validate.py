"""Stage 2 — validate the document's shape against ``schemas/topology.schema.json``.

Each jsonschema error becomes a positioned diagnostic with a message written for people (not the
validator's ``'x' is not of type 'integer'``), unknown keys get a did-you-mean. Semantic rules
(slime's resolution and the stricter checks) live in ``resolve``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from generator.compile.credentials import is_credential_name
from generator.compile.loader import PathT, SourceMap
from generator.compile.schemacheck import conforms
from generator.errors import MASK, Diagnostic, mask_userinfo
from generator.paths import SCHEMAS

if TYPE_CHECKING:
    import jsonschema

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


def _is_integer(_checker: Any, instance: Any) -> bool:
    # JSON Schema counts 2.0 as an integer and jsonschema follows it; here an integer is what
    # YAML wrote as one (``2``, not ``2.0``, and not ``true``): range(), %, JSON and argv use it
    return type(instance) is int


def _is_number(_checker: Any, instance: Any) -> bool:
    return type(instance) in (int, float)


def _full_pattern(validator: Any, pattern: str, instance: Any, _schema: Any) -> Iterator[Any]:
    """``pattern`` matched against the whole string. The schema's patterns are anchored
    (``^...$``, checked by a test) so this is what ECMA-262 (editors) does, where ``$`` is the
    end of the input; Python's ``re.search`` lets ``$`` match before a final newline, which
    would accept ``name: "actor\\n"``."""
    import jsonschema

    if isinstance(instance, str) and re.fullmatch(pattern, instance) is None:
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


@lru_cache(maxsize=1)
def jsonschema_validator() -> Any:
    """The jsonschema validator of the topology schema, built once per process (and only for
    a document :func:`schemacheck.conforms` does not pass: importing jsonschema is slow)."""
    import jsonschema

    cls = jsonschema.validators.extend(
        jsonschema.Draft202012Validator,
        validators={"pattern": _full_pattern},
        type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine_many(
            {"integer": _is_integer, "number": _is_number}),
    )
    return cls(topology_schema())


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """A hint naming the closest valid choice, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


def is_secret_path(path: PathT) -> bool:
    """Whether the value at ``path`` is a credential that no message may show: a key on the
    way is credential-named (``runtime.env.HF_TOKEN``, ``overrides.api_key``,
    ``router.args.control_plane_api_keys[0]``) by the one rule, ``credentials.is_credential_name``.
    The ``env`` of a reference (``api_key: {env: NAME}``) names a variable, not a secret."""
    keys = [p for p in path if isinstance(p, str)]
    if len(keys) >= 2 and keys[-1] == "env" and is_credential_name(keys[-2]) \
            and isinstance(path[-1], str):
        keys = keys[:-2]
    return any(is_credential_name(k) for k in keys)


def describe(value: Any, path: PathT | None = None) -> str:
    """A short, safe rendering of a user value for messages: ``***`` for the value of a
    credential (``path`` given and ``is_secret_path``), and a URL's user name and password
    masked before the text is shortened (a cut could drop the ``@`` that marks them)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if path is not None and is_secret_path(path):
        return MASK
    text = mask_userinfo(repr(value))
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


#: what ``runtime.rollout``'s values are, said with any problem of theirs
_ROLLOUT_HINTS: dict[PathT, str] = {
    ("runtime", "rollout", "max_unavailable"):
        "a number of engines (2) or a percentage of each role's engines (25%)",
    ("runtime", "rollout", "drain"):
        "seconds, from 0 (restart without waiting for in-flight requests) to 3600",
}


def _max_unavailable_hint(value: str) -> str:
    """Why a string is no ``max_unavailable``: the common slips get their own words."""
    number = value.removesuffix("%")
    if value.isascii() and number.isdigit():
        # (no int(): a string of 5,000 digits is past what Python converts)
        shown = number.lstrip("0") or "0"
        if not value.endswith("%") and len(shown) <= 18:  # (an integer YAML can hold)
            return (f"an engine count is an integer: write {shown} without quotes"
                    if shown != "0" else "at least 1 engine")
        if not value.endswith("%"):
            return _ROLLOUT_HINTS[("runtime", "rollout", "max_unavailable")]
        if shown == "0" or len(shown) > 3 or int(shown) > 100:
            return "a percentage is from 1% to 100% of a role's engines"
        return f"write {shown}% without leading zeros"
    if value.isascii() and value.endswith("%") and number.replace(".", "", 1).isdigit():
        return "the percentage is a whole number (25%)"
    return _ROLLOUT_HINTS[("runtime", "rollout", "max_unavailable")]


def _pattern_hint(path: PathT, value: Any) -> str:
    if not isinstance(value, str):
        return ""
    if value != value.rstrip():  # also U+2028, U+0085: str.rstrip() strips every line break
        return "remove the trailing line break or space"
    if path == ("runtime", "rollout", "max_unavailable"):
        return _max_unavailable_hint(value)
    if path == ("runtime", "python") and any(c in value for c in "$`~"):
        return ("sgl-gen expands no variables here: the scripts, the units and deploy's probe "
                "run exactly this word; write the absolute path")
    if value.startswith("-"):
        return "a value starting with '-' would be read as a command-line flag"
    return ""


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
        hint = ""
        if isinstance(inst, float) and inst.is_integer() and "integer" in (
                [err.validator_value] if isinstance(err.validator_value, str)
                else err.validator_value):
            hint = f"write {int(inst)} without a decimal point"
        got = describe(inst, path) if isinstance(inst, (dict, list)) else \
            f"{_type_of(inst)} {describe(inst, path)}"
        return [smap.diag(path, f"must be {_expected(err.validator_value)}, got {got}",
                          hint=hint or _ROLLOUT_HINTS.get(path, ""))]
    if v == "enum":
        if is_secret_path(path):
            return [smap.diag(path, "is not one of the allowed values")]
        choices = ", ".join(str(c) for c in err.validator_value)
        hint = did_you_mean(str(inst), [str(c) for c in err.validator_value])
        return [smap.diag(path, f"{describe(inst, path)} is not one of: {choices}", hint=hint)]
    if v == "minimum":
        return [smap.diag(path, f"must be >= {err.validator_value}, got {describe(inst, path)}",
                          hint=_ROLLOUT_HINTS.get(path, ""))]
    if v == "maximum":
        return [smap.diag(path, f"must be <= {err.validator_value}, got {describe(inst, path)}",
                          hint=_ROLLOUT_HINTS.get(path, ""))]
    if v == "minItems":
        return [smap.diag(path, f"must have at least {err.validator_value} item(s)")]
    if v == "minLength":
        return [smap.diag(path, "must not be empty")]
    if v == "uniqueItems":
        return [smap.diag(path, "items must be unique")]
    if v == "pattern":
        desc = err.schema.get("description", "")
        return [smap.diag(path, f"{describe(inst, path)} is not allowed here"
                                + (f": {desc}" if desc else f" (must match {err.validator_value})"),
                          hint=_pattern_hint(path, inst))]
    if v == "propertyNames":
        return [smap.diag(path, f"key {describe(inst)} is not a valid name", key=True)]
    if v == "not" and not isinstance(inst, dict):
        return []  # "required" holds for any non-mapping: its type error says what is wrong
    if v == "not" and isinstance(inst, dict) and "engine_groups" in inst:
        return [smap.diag(path + ("engine_groups",),
                          "both server_groups and its legacy alias engine_groups are set",
                          hint="keep only server_groups", key=True)]
    # jsonschema's own message quotes the value
    return [smap.diag(path, MASK if is_secret_path(path) else mask_userinfo(err.message))]


#: jsonschema stops being asked after this many problems: each costs a ValidationError, and a
#: list of 100,000 wrong items would take a minute to list one by one (the CLI prints the first
#: ``errors.MAX_SHOWN`` of them and the count of the rest)
MAX_SCHEMA_ERRORS = 1000


def validate_shape(data: dict[str, Any], smap: SourceMap) -> list[Diagnostic]:
    """All schema problems of a document, positioned and sorted."""
    if conforms(topology_schema(), data):
        return []  # what jsonschema would say, without importing it
    out: list[Diagnostic] = []
    for err in jsonschema_validator().iter_errors(data):
        if len(out) >= MAX_SCHEMA_ERRORS:
            last = max(out)
            out.append(Diagnostic(last.file, last.line, last.col, "",
                                  f"the schema check stopped after {MAX_SCHEMA_ERRORS:,} "
                                  "problems", "fix these and run again"))
            break
        # propertyNames errors point at the key string itself: report on the parent mapping.
        if err.validator == "propertyNames":
            parent: PathT = tuple(err.absolute_path)
            out.append(smap.diag(parent + (str(err.instance),),
                                 f"key {describe(err.instance)} is not a valid name", key=True))
            continue
        out.extend(_errors_for(err, smap))
    return sorted(set(out))
