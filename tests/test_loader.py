"""YAML loading: positions, and PyYAML's silent habits turned into errors."""

from __future__ import annotations

from generator.compile.loader import load_file, parse_text
from generator.errors import TopologyError
from tests.helpers import run_cli


def errs(text: str) -> list[str]:
    try:
        parse_text(text, "t.yaml")
    except TopologyError as exc:
        return exc.lines()
    raise AssertionError("no error")


def test_positions_of_keys_and_values():
    data, smap = parse_text("sglang:\n  - name: a\n    server_groups: []\n", "t.yaml")
    assert data == {"sglang": [{"name": "a", "server_groups": []}]}
    assert smap.values[("sglang", 0, "name")].line == 2
    assert smap.values[("sglang", 0, "name")].col == 11
    assert smap.keys[("sglang", 0, "server_groups")].col == 5


def test_duplicate_keys_are_errors():
    assert errs("a: 1\nb: 2\na: 3\n") == [
        "t.yaml:3:1: a: duplicate key 'a' (first defined on line 1) "
        "(hint: YAML would silently keep only the last one)"]


def test_alias_bomb_refused():
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    prev = "a"
    for i in range(1, 9):
        bomb += f"l{i}: &l{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, " \
                f"*{prev}, *{prev}, *{prev}]\n"
        prev = f"l{i}"
    (e,) = errs(bomb)
    assert "alias bomb" in e


def test_empty_file_and_non_mapping():
    assert errs("") == ["t.yaml:1:1: file is empty (hint: a topology needs at least an "
                        "'sglang:' list)"]
    assert errs("- a\n") == ["t.yaml:1:1: top level must be a mapping, got a list (hint: a "
                             "topology starts with 'sglang:')"]


def test_syntax_error_positioned():
    (e,) = errs("a: [1, 2\n")
    assert e.startswith("t.yaml:2:1: YAML syntax error")


def test_python_tags_refused():
    (e,) = errs("a: !!python/object:os.system ls\n")
    assert e.startswith("t.yaml:1:4: a: unsupported YAML tag")


def test_non_utf8(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_bytes(b"sglang:\n  - name: \xff\n")
    try:
        load_file(p)
    except TopologyError as exc:
        assert exc.lines() == [f"{p}:2:11: file is not valid UTF-8 (byte 0xff) "
                               "(hint: save the file as UTF-8)"]
    else:
        raise AssertionError("no error")


def test_directory_and_missing_file_via_cli(tmp_path):
    r = run_cli("validate", str(tmp_path))
    assert r.exit_code == 1 and r.stderr == f"{tmp_path}: is a directory, not a topology file\n"
    r = run_cli("validate", str(tmp_path / "nope.yaml"))
    assert r.exit_code == 1 and r.stderr == f"{tmp_path / 'nope.yaml'}: no such file\n"


def test_merge_keys_allowed_and_dates_stay_text():
    data, _ = parse_text("base: &b {x: 1}\nm:\n  <<: *b\n  y: 2\nd: 2024-01-01\n", "t.yaml")
    assert data["m"] == {"x": 1, "y": 2}
    assert data["d"] == "2024-01-01"


def test_nul_character_is_rejected_with_position(tmp_path):
    from tests.helpers import errors_of, write_topo

    p = write_topo(tmp_path, 'deployment: {name: x, hf_checkpoint: "/m\\0x"}\n')
    assert errors_of(p) == [f"{p}:1:38: deployment.hf_checkpoint: a NUL character cannot be "
                            "passed to a process (hint: remove the \\0 escape)"]
