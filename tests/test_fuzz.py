"""Fuzzing `validate`, `render` and `import`: mutated examples, hostile bytes, special files and
hostile structures (the generators are in tests/hostile.py). Every outcome is success or
positioned errors with exit 1 (a usage error exits 2) — never a traceback, never a hang (each
command has a time limit), never a partial output directory."""

from __future__ import annotations

import re
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from generator.cli import main
from tests import hostile
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


# ---------------------------------------------------------------------------------------------
# hostile.py's generators through the real CLI: validate, render into a temp dir, import

#: seconds one command may take (the slowest valid case renders in well under one)
TIME_LIMIT = 10
#: outcomes of the generators' commands: valid / rejected (exit 1) / usage (exit 2)
OUTCOMES: Counter[str] = Counter()
#: cases run, by generator
GENERATED: Counter[str] = Counter()
#: the importers and the options each needs for the committed sources
IMPORTS = {"slime": ["--hf-checkpoint", "/m", "--num-gpus-per-engine", "2"],
           "rlinf": ["--hf-checkpoint", "/m"], "roll": ["--hf-checkpoint", "/m"],
           "skyrl": ["--hf-checkpoint", "/m"]}


class _Hang(Exception):
    pass


def _alarm(_signum: int, _frame: Any) -> None:
    raise _Hang  # interrupts a blocking open() or read() too (PEP 475: not retried)


def _invoke(args: list[str]) -> Any:
    """One CLI command in-process under TIME_LIMIT (SIGALRM)."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, TIME_LIMIT)
    try:
        return CliRunner().invoke(main, args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _line_ok(line: str, file: str) -> bool:
    """A positioned diagnostic (FILE:LINE:COL: ...), a file-level one (FILE: ...: not a regular
    file, no such file) or one naming the option that gave the value (--set ...: ...)."""
    return bool(POSITIONED.match(line)) or line.startswith((f"{file}: ", "--"))


def _check(label: str, args: list[str], file: str, *, expect: str = "either",
           out: Path | None = None) -> int:
    r = _invoke(args)
    what = f"{label!r}: sgl-gen {' '.join(args[:2])}"
    if isinstance(r.exception, _Hang):
        OUTCOMES["hang"] += 1
        raise AssertionError(f"{what} hung (more than {TIME_LIMIT} s)")
    if r.exception is not None and not isinstance(r.exception, SystemExit) \
            or "Traceback" in r.output:
        OUTCOMES["traceback"] += 1
        raise AssertionError(f"{what} crashed:\n{r.output}") from r.exception
    assert r.exit_code in (0, 1, 2), (what, r.exit_code, r.output)
    if r.exit_code == 1:
        lines = [line for line in r.stderr.splitlines() if line]
        assert lines and all(_line_ok(line, file) for line in lines), (what, r.stderr)
        if out is not None:
            assert not out.exists(), f"{what}: a failed render left files behind"
    if expect == "valid":
        assert r.exit_code == 0, (what, r.output)
    elif expect == "invalid":
        assert r.exit_code == 1, (what, r.output)
    OUTCOMES[{0: "valid", 1: "rejected", 2: "usage"}[r.exit_code]] += 1
    return r.exit_code


def _through_everything(tmp: Path, label: str, src: Path, importers: tuple[str, ...]) -> None:
    """validate, render (into an empty temp dir) and the given importers on one file."""
    out = tmp / "out"
    expect = hostile.expected(label)
    _check(label, ["validate", str(src)], str(src), expect=expect)
    _check(label, ["render", str(src), "-o", str(out), "-q"], str(src), expect=expect, out=out)
    for name in importers:
        _check(label, ["import", name, str(src), *IMPORTS[name]], str(src))
    if out.exists():
        import shutil

        shutil.rmtree(out)


def test_raw_bytes_through_validate_render_and_every_importer(tmp_path):
    n = 0
    for label, data in hostile.raw_byte_cases():
        src = tmp_path / "fuzz.yaml"
        src.write_bytes(data)
        _through_everything(tmp_path, label, src, tuple(IMPORTS))
        n += 1
    GENERATED["raw bytes"] += n
    assert n >= 100


def test_special_files_through_validate_render_and_every_importer(tmp_path):
    (tmp_path / "files").mkdir()
    n = 0
    for label, path in hostile.special_files(tmp_path / "files"):
        _through_everything(tmp_path, label, path, tuple(IMPORTS))
        n += 1
    GENERATED["special files"] += n
    assert n >= 12


def test_hostile_structures_through_validate_render_and_import(tmp_path):
    n = 0
    for label, text in hostile.hostile_structures():
        src = tmp_path / "fuzz.yaml"
        src.write_text(text, encoding="utf-8")
        _through_everything(tmp_path, label, src, ("slime",))
        n += 1
    GENERATED["hostile structures"] += n
    assert n >= 300


def test_hostile_importer_sources(tmp_path):
    n = 0
    for label, (importer, text) in hostile.importer_cases():
        src = tmp_path / "source.yaml"
        src.write_text(text, encoding="utf-8")
        out = tmp_path / "imported.yaml"
        code = _check(label, ["import", importer, str(src), *IMPORTS[importer], "-o", str(out)],
                      str(src))
        if code == 0:  # what an importer writes is a topology that validates as it is
            _check(label, ["validate", str(out)], str(out), expect="valid")
            out.unlink()
        n += 1
    GENERATED["importer sources"] += n
    assert n >= 100


def test_hostile_command_line_values(tmp_path):
    src = tmp_path / "base.yaml"
    src.write_text(hostile.BASE.replace("  hf_checkpoint: /models/m\n", "")
                   .replace("sglang:\n", "  # hf_checkpoint from the command line\nsglang:\n"),
                   encoding="utf-8")
    n = 0
    for label, options in hostile.set_cases():
        args = [*options] if "hf_checkpoint" in " ".join(options) else [
            *options, "--hf-checkpoint", "/models/m"]
        expect = hostile.expected(label)
        usage = label.startswith("bad: bad --set") or label.startswith("bad: --set without") \
            or label.startswith("bad: --nodes ")
        code = _check(label, ["validate", str(src), *args], str(src),
                      expect="either" if usage else expect)
        if usage:  # click's and --set's own usage errors, or a value click refuses
            assert code in (1, 2), label
        _check(label, ["render", str(src), "-o", str(tmp_path / "out"), "-q", *args], str(src),
               expect="either" if usage else expect, out=tmp_path / "out")
        if (tmp_path / "out").exists():
            import shutil

            shutil.rmtree(tmp_path / "out")
        n += 1
    GENERATED["command-line values"] += n
    assert n >= 100


def test_report_fuzz_case_count(capsys):
    generated = sum(GENERATED.values())
    with capsys.disabled():
        print(f"\nfuzz: {CASES['n']} mutated-example cases through validate+render "
              f"({CASES['valid']} valid, {CASES['invalid']} rejected with positioned errors)")
        print(f"fuzz: {CASES['n'] + generated} cases ({CASES['n']} mutated examples, "
              + ", ".join(f"{n} {kind}" for kind, n in GENERATED.items())
              + f"); {sum(OUTCOMES.values())} hostile-input commands through "
              f"validate/render/import: {OUTCOMES['valid']} succeeded, {OUTCOMES['rejected']} "
              f"rejected with positioned errors, {OUTCOMES['usage']} usage errors, "
              f"{OUTCOMES['traceback']} tracebacks, {OUTCOMES['hang']} hangs")
    assert CASES["n"] >= 250
    assert generated >= 500 and sum(OUTCOMES.values()) >= 1500
    assert OUTCOMES["traceback"] == OUTCOMES["hang"] == 0
