"""Fuzzing `validate` and `render`: mutated examples and hostile bytes. Every outcome is success
or positioned errors with exit 1 — never a traceback, never a partial output directory."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator.cli import main
from tests.helpers import EXAMPLES

EXAMPLE_DATA = [yaml.safe_load(p.read_text()) for p in sorted(EXAMPLES.glob("*.yaml"))]
POSITIONED = re.compile(r"^.+:\d+:\d+: (warning: )?\S.*$")
CASES = {"n": 0, "valid": 0, "invalid": 0}


def _paths(data: Any, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(data, dict):
        for k, v in data.items():
            out += _paths(v, path + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _paths(v, path + (i,))
    return out


def _set(data: Any, path: tuple, value: Any, delete: bool) -> Any:
    if not path:
        return value
    parent = data
    for p in path[:-1]:
        parent = parent[p]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return data


WEIRD = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
    st.floats(allow_nan=False), st.text(max_size=30),
    st.sampled_from(["", "0", "-1", "1e999", "regular", "prefill", "🚀", "a\nb", "$(id)",
                     "x" * 300, "null", "~", "yes"]),
    st.lists(st.integers(-3, 20), max_size=4),
    st.dictionaries(st.sampled_from(["name", "num_gpus", "x", "worker_type", "port"]),
                    st.integers(-5, 70000), max_size=3),
    st.recursive(st.integers(), lambda k: st.lists(k, max_size=2), max_leaves=30),
)


def _run(tmp: Path, text: bytes | str) -> None:
    src = tmp / "fuzz.yaml"
    if isinstance(text, str):
        src.write_text(text, encoding="utf-8")
    else:
        src.write_bytes(text)
    out = tmp / "out"
    runner = CliRunner()
    for args in (["validate", str(src)], ["render", str(src), "-o", str(out), "-q"]):
        r = runner.invoke(main, args)
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            raise AssertionError(f"{args[0]} crashed on:\n{text!r}") from r.exception
        assert r.exit_code in (0, 1), (args, r.exit_code, r.output)
        if r.exit_code == 1:
            lines = [line for line in r.stderr.splitlines() if line]
            assert lines and all(POSITIONED.match(line) for line in lines), r.stderr
            if args[0] == "render":
                assert not out.exists(), "a failed render left files behind"
    CASES["n"] += 1
    CASES["valid" if r.exit_code == 0 else "invalid"] += 1
    if out.exists():
        import shutil

        shutil.rmtree(out)


@given(st.data())
@settings(max_examples=250, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_mutated_examples_never_crash(tmp_path, data):
    import copy

    doc = copy.deepcopy(data.draw(st.sampled_from(EXAMPLE_DATA)))
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(doc)
        path = data.draw(st.sampled_from(paths))
        delete = bool(path) and data.draw(st.booleans())
        doc = _set(doc, path, data.draw(WEIRD), delete)
    _run(tmp_path, yaml.safe_dump(doc, allow_unicode=True))


HOSTILE_FILES = [
    b"",
    b"\n\n",
    b"\xff\xfe\x00garbage",
    b"deployment: {name: x}\ndeployment: {name: y}\n",
    b"a: &a [1,1,1,1,1,1,1,1,1]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    b"d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\n"
    b"f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n",
    b"[" * 200 + b"]" * 200,
    b"!!python/object/apply:os.system ['id']\n",
    b"deployment: !!binary aGVsbG8=\n",
    b"- just\n- a list\n",
    b"sglang:\n  - name: m\n    server_groups: [{worker_type: regular, num_gpus: 99999999999999999999}]\n",
    b"\t\tbad: indentation\n  : x",
    b"deployment: {name: \"\\u0000\"}\n",
]


def test_hostile_files_never_crash(tmp_path):
    for i, text in enumerate(HOSTILE_FILES):
        d = tmp_path / str(i)
        d.mkdir()
        _run(d, text)
        assert CASES["invalid"] >= 1


def test_a_directory_instead_of_a_file(tmp_path):
    r = CliRunner().invoke(main, ["validate", str(tmp_path)])
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit)
    assert "is a directory" in r.stderr


def test_report_fuzz_case_count(capsys):
    with capsys.disabled():
        print(f"\nfuzz: {CASES['n']} cases through validate+render "
              f"({CASES['valid']} valid, {CASES['invalid']} rejected with positioned errors)")
    assert CASES["n"] >= 250
