"""Start-up: what each command imports (checked in a fresh interpreter's ``sys.modules``), and the
fast schema check that lets ``validate`` skip jsonschema, held to jsonschema's own verdict.

The start-up times themselves are figures of ``make bench`` (tests/bench_render.py), not tests.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from typing import Any

import pytest
import yaml

from generator.compile.schemacheck import conforms
from generator.compile.validate import jsonschema_validator, topology_schema
from tests.helpers import EXAMPLES, REPO

#: what no command that neither renders, deploys nor rehearses may import
HEAVY = ("fabric", "paramiko", "invoke", "jinja2", "jsonschema", "generator.rehearsal",
         "generator.targets", "generator.deploy", "generator.write", "http.server")

_PROBE = """
import json, runpy, sys
sys.argv = ["sgl-gen", *json.loads(sys.argv[1])]
try:
    runpy.run_module("generator.cli", run_name="__main__")
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print(json.dumps({"code": code, "loaded": sorted(
    m for m in sys.modules if any(m == h or m.startswith(h + ".") for h in HEAVY))}))
"""


def _loaded(*args: str) -> dict[str, Any]:
    """Run ``sgl-gen ARGS`` in a fresh interpreter; its exit code and the heavy modules loaded."""
    code = f"HEAVY = {list(HEAVY)!r}\n" + _PROBE
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(list(args))], cwd=REPO,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.splitlines()[-1])


def test_import_of_the_cli_loads_nothing_heavy() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "import json, sys, generator.cli; print(json.dumps(sorted(sys.modules)))"],
        cwd=REPO, capture_output=True, text=True, check=True)
    loaded = json.loads(proc.stdout)
    assert [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)] == []
    # nor the compile stages: --help lists commands, it reads no topology
    assert [m for m in loaded if m.startswith("generator.compile")] == []


def test_help_loads_nothing_heavy() -> None:
    got = _loaded("--help")
    assert got == {"code": 0, "loaded": []}


@pytest.mark.parametrize("example", ["pd.yaml", "agentic-32gpu.yaml", "ssh-4hosts.yaml"])
def test_validate_of_a_valid_topology_loads_nothing_heavy(example: str) -> None:
    got = _loaded("validate", str(EXAMPLES / example))
    assert got == {"code": 0, "loaded": []}


def test_an_invalid_topology_still_gets_jsonschema_messages(tmp_path: Any) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sglang:\n  - name: a\n    server_groups:\n      - {worker_type: regular, "
                   "num_gpus: two}\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "generator.cli", "validate", str(bad)],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1
    assert f"{bad}:4:42: sglang[0].server_groups[0].num_gpus: must be an integer, got string " \
           f"'two'" in proc.stderr


# -- schemacheck.conforms against jsonschema ----------------------------------------------------

_VALUES: list[Any] = [0, -1, 1, 2.0, 1.5, 70000, "", "x", "a b", "-x", "x\n", True, False, None,
                      [], [1], ["a", "a"], {}, {"zz": 1}]


def _paths(doc: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, path + (i,))
    return out


def _replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    new = copy.deepcopy(doc)
    node = new
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return new


def _variants(doc: dict[str, Any]) -> list[Any]:
    """``doc`` with every value (and the document itself) replaced by each of _VALUES, an
    unknown key added to every mapping, and every key of every mapping removed."""
    out: list[Any] = []
    for path in _paths(doc):
        out += [_replaced(doc, path, v) for v in _VALUES]
        node = doc
        for p in path:
            node = node[p]
        if isinstance(node, dict):
            out.append(_replaced(doc, path, {**node, "not_a_key": 1}))
            for k in node:
                out.append(_replaced(doc, path, {a: b for a, b in node.items() if a != k}))
    return out


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_conforms_agrees_with_jsonschema(example: str) -> None:
    schema = topology_schema()
    validator = jsonschema_validator()
    doc = yaml.safe_load((EXAMPLES / example).read_text(encoding="utf-8"))
    assert conforms(schema, doc) is True
    verdicts = {True: 0, False: 0, None: 0}
    for variant in _variants(doc):
        fast = conforms(schema, variant)
        verdicts[fast] += 1
        if fast is not None:
            assert fast == (next(iter(validator.iter_errors(variant)), None) is None), variant
    # the check decides nearly everything itself (else validate would import jsonschema)
    assert verdicts[True] > 0 and verdicts[False] > 0
    assert verdicts[None] <= (verdicts[True] + verdicts[False]) // 10


def test_plan_against_loads_no_ssh_code() -> None:
    """The offline review uses deploy's decision, never its transport."""
    got = _loaded("plan", str(EXAMPLES / "pd.yaml"), "--against", "out/pd", "--format", "json")
    assert got["code"] == 0
    assert [m for m in got["loaded"] if m.split(".")[0] in ("fabric", "paramiko", "invoke")
            or m in ("generator.rehearsal", "http.server")] == []


def test_the_lazy_command_list_is_every_command_of_its_module() -> None:
    """generator.cli.COMMANDS names each command's module: exactly what the modules register."""
    import importlib

    import click

    from generator.cli import COMMANDS

    everything = click.Group()
    for module in sorted(set(COMMANDS.values())):
        own = click.Group()
        importlib.import_module(f"generator.cli.{module}").register(own)
        assert sorted(own.commands) == sorted(n for n, m in COMMANDS.items() if m == module)
        importlib.import_module(f"generator.cli.{module}").register(everything)
    assert sorted(everything.commands) == sorted(COMMANDS)
