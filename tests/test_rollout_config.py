"""``runtime.rollout`` (issue 16): how deploy rolls a change out. Its two values reach plan.json as
the topology wrote them, defaults filled in; every bad value is refused at its position, naming
its path, with a hint."""

from __future__ import annotations

import json

import pytest

from generator.compile.model import DEFAULT_DRAIN, DEFAULT_MAX_UNAVAILABLE, MAX_DRAIN, PERCENT_PATTERN
from generator.compile.validate import topology_schema
from generator.targets.plans import plan_dict, plan_json
from generator.targets.render import default_targets, render
from tests.helpers import REPO, errors_of, plan_of, run_cli, write_topo

HEAD = """\
deployment:
  hf_checkpoint: /m
  num_gpus_per_engine: 2
sglang:
  - name: actor
    server_groups: [{worker_type: regular, num_gpus: 8}]
"""

MU = "runtime.rollout.max_unavailable"
DRAIN = "runtime.rollout.drain"
MU_DESC = ("Engines of one model and role that a rolling deploy restarts at once: a positive "
           "integer, or a percentage of the role's engines written \"P%\" with P an integer from "
           "1 to 100 (default 1).")
MU_HINT = "a number of engines (2) or a percentage of each role's engines (25%)"
DRAIN_HINT = "seconds, from 0 (restart without waiting for in-flight requests) to 3600"


def _topo(tmp_path, rollout: str = ""):
    """A topology whose ``runtime.rollout`` mapping holds the lines ``rollout`` (line 3 on)."""
    text = "runtime:\n  rollout:\n" + "".join(f"    {line}\n" for line in rollout.splitlines()) \
        if rollout else ""
    return write_topo(tmp_path, text + HEAD)


def _rollout(path, *sets: str) -> dict:
    return plan_dict(plan_of(path, *sets))["rollout"]


# -- defaults and round trips ----------------------------------------------------------------------


def test_defaults_are_in_plan_json_when_the_topology_says_nothing(tmp_path):
    p = write_topo(tmp_path, HEAD)
    text = plan_json(plan_of(p))
    assert '  "rollout": {\n    "drain": 30,\n    "max_unavailable": 1\n  },\n' in text
    assert json.loads(text)["rollout"] == {"max_unavailable": 1, "drain": 30}
    # an empty mapping is the defaults too
    p2 = write_topo(tmp_path, "runtime:\n  rollout: {}\n" + HEAD, name="empty.yaml")
    assert _rollout(p2) == {"max_unavailable": DEFAULT_MAX_UNAVAILABLE, "drain": DEFAULT_DRAIN}
    # one given, the other defaulted
    assert _rollout(_topo(tmp_path, "drain: 5")) == {"max_unavailable": 1, "drain": 5}


def test_plan_json_written_by_render_and_printed_by_plan_has_it(tmp_path):
    p = _topo(tmp_path, 'max_unavailable: "50%"\ndrain: 12')
    plan = plan_of(p)
    written = json.loads(render(plan, default_targets(plan))["plan.json"].content)
    assert written["rollout"] == {"max_unavailable": "50%", "drain": 12}
    r = run_cli("plan", str(p), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rollout"] == {"max_unavailable": "50%", "drain": 12}


def test_every_golden_plan_has_the_rollout_of_its_example():
    import yaml

    checked = 0
    for ex in sorted((REPO / "examples").glob("*.yaml")):
        plan = plan_of(ex)
        golden = REPO / "out" / plan.name / "plan.json"
        written = (yaml.safe_load(ex.read_text()).get("runtime") or {}).get("rollout") or {}
        want = {"max_unavailable": written.get("max_unavailable", 1),
                "drain": written.get("drain", 30)}
        assert json.loads(golden.read_text())["rollout"] == want, golden
        checked += 1
    assert checked >= 20


@pytest.mark.parametrize("written, value", [
    ("3", 3), ("1", 1), ("100000", 100000),
    ('"25%"', "25%"), ("25%", "25%"), ("'1%'", "1%"), ('"100%"', "100%"), ('"9%"', "9%"),
])
def test_max_unavailable_round_trips_with_its_type(tmp_path, written, value):
    got = _rollout(_topo(tmp_path, f"max_unavailable: {written}"))["max_unavailable"]
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize("written, value, shown", [
    ("0", 0, "0"), ("30", 30, "30"), ("3600", 3600, "3600"), ("2.5", 2.5, "2.5"),
    ("30.0", 30.0, "30.0"), ("0.25", 0.25, "0.25"), ("3600.0", 3600.0, "3600.0"),
])
def test_drain_round_trips_as_written(tmp_path, written, value, shown):
    plan = plan_of(_topo(tmp_path, f"drain: {written}"))
    got = plan_dict(plan)["rollout"]["drain"]
    assert got == value and type(got) is type(value)
    # an int stays an int in the JSON text, a float a float: the text is what the file says
    assert f'"drain": {shown},' in plan_json(plan)


def test_plan_json_is_the_same_bytes_every_time(tmp_path):
    p = _topo(tmp_path, 'max_unavailable: "25%"\ndrain: 2.5')
    assert plan_json(plan_of(p)) == plan_json(plan_of(p))


# -- --set --------------------------------------------------------------------------------------


def test_set_gives_a_percentage_as_a_string_and_a_count_as_an_integer(tmp_path):
    p = write_topo(tmp_path, HEAD)  # no runtime section at all: --set creates it
    assert _rollout(p, f"{MU}=25%") == {"max_unavailable": "25%", "drain": 30}
    got = _rollout(p, f"{MU}=2", f"{DRAIN}=0")
    assert got == {"max_unavailable": 2, "drain": 0}
    assert type(got["max_unavailable"]) is int and type(got["drain"]) is int
    assert _rollout(p, f"{DRAIN}=7.5") == {"max_unavailable": 1, "drain": 7.5}


def test_set_through_the_cli(tmp_path):
    p = write_topo(tmp_path, HEAD)
    r = run_cli("plan", str(p), "--json", "--set", f"{MU}=25%", "--set", f"{DRAIN}=45")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["rollout"] == {"max_unavailable": "25%", "drain": 45}


def test_set_agrees_with_the_file_or_says_both(tmp_path):
    p = _topo(tmp_path, "max_unavailable: 2")
    assert _rollout(p, f"{MU}=2")["max_unavailable"] == 2
    assert errors_of(p, f"{MU}=3") == [
        f"{p}:3:22: {MU}: the file says 2 but --set {MU}=3 says 3 (hint: remove one of them: a "
        "CLI value never silently replaces a file value)"]
    # "2" in a file is not 2% and 2% is not 2: a different value, said as such
    assert errors_of(p, f"{MU}=2%") == [
        f"{p}:3:22: {MU}: the file says 2 but --set {MU}=2% says '2%' (hint: remove one of "
        "them: a CLI value never silently replaces a file value)"]


@pytest.mark.parametrize("value, message", [
    ("0%", f"'0%' is not allowed here: {MU_DESC} (hint: a percentage is from 1% to 100% of a "
           "role's engines)"),
    ("150%", f"'150%' is not allowed here: {MU_DESC} (hint: a percentage is from 1% to 100% of "
             "a role's engines)"),
    ("abc", f"'abc' is not allowed here: {MU_DESC} (hint: {MU_HINT})"),
    ("0", f"must be >= 1, got 0 (hint: {MU_HINT})"),
    ("-1", f"must be >= 1, got -1 (hint: {MU_HINT})"),
    ("true", f"must be an integer or a string, got boolean true (hint: {MU_HINT})"),
    ('"2"', f"'2' is not allowed here: {MU_DESC} (hint: an engine count is an integer: write 2 "
            "without quotes)"),
])
def test_set_with_a_bad_value_names_the_option_and_the_path(tmp_path, value, message):
    p = write_topo(tmp_path, HEAD)
    assert errors_of(p, f"{MU}={value}") == [f"--set {MU}={value}: {MU}: {message}"]


def test_set_with_a_bad_drain(tmp_path):
    p = write_topo(tmp_path, HEAD)
    assert errors_of(p, f"{DRAIN}=-1") == [
        f"--set {DRAIN}=-1: {DRAIN}: must be >= 0, got -1 (hint: {DRAIN_HINT})"]
    assert errors_of(p, f"{DRAIN}=30s") == [
        f"--set {DRAIN}=30s: {DRAIN}: must be a number, got string '30s' (hint: {DRAIN_HINT})"]


# -- bad values in a file: position, path, message, hint ------------------------------------------


@pytest.mark.parametrize("written, message", [
    ('"0%"', f"'0%' is not allowed here: {MU_DESC} (hint: a percentage is from 1% to 100% of a "
             "role's engines)"),
    ('"150%"', f"'150%' is not allowed here: {MU_DESC} (hint: a percentage is from 1% to 100% "
               "of a role's engines)"),
    ("101%", f"'101%' is not allowed here: {MU_DESC} (hint: a percentage is from 1% to 100% of "
             "a role's engines)"),
    ('"abc"', f"'abc' is not allowed here: {MU_DESC} (hint: {MU_HINT})"),
    ('""', f"'' is not allowed here: {MU_DESC} (hint: {MU_HINT})"),
    ('"-5%"', f"'-5%' is not allowed here: {MU_DESC} (hint: {MU_HINT})"),
    ('"%"', f"'%' is not allowed here: {MU_DESC} (hint: {MU_HINT})"),
    ('"05%"', f"'05%' is not allowed here: {MU_DESC} (hint: write 5% without leading zeros)"),
    ('"25.5%"', f"'25.5%' is not allowed here: {MU_DESC} (hint: the percentage is a whole "
                "number (25%))"),
    ('"25% "', f"'25% ' is not allowed here: {MU_DESC} (hint: remove the trailing line break or "
               "space)"),
    ('"3"', f"'3' is not allowed here: {MU_DESC} (hint: an engine count is an integer: write 3 "
            "without quotes)"),
    ('"0"', f"'0' is not allowed here: {MU_DESC} (hint: at least 1 engine)"),
    ('"007"', f"'007' is not allowed here: {MU_DESC} (hint: an engine count is an integer: "
              "write 7 without quotes)"),
    ("0", f"must be >= 1, got 0 (hint: {MU_HINT})"),
    ("-1", f"must be >= 1, got -1 (hint: {MU_HINT})"),
    ("true", f"must be an integer or a string, got boolean true (hint: {MU_HINT})"),
    ("false", f"must be an integer or a string, got boolean false (hint: {MU_HINT})"),
    ("2.5", f"must be an integer or a string, got number 2.5 (hint: {MU_HINT})"),
    ("2.0", "must be an integer or a string, got number 2.0 (hint: write 2 without a decimal "
            "point)"),
    ("[1]", f"must be an integer or a string, got a list (hint: {MU_HINT})"),
])
def test_bad_max_unavailable(tmp_path, written, message):
    p = _topo(tmp_path, f"max_unavailable: {written}")
    assert errors_of(p) == [f"{p}:3:22: {MU}: {message}"]


def test_a_huge_quoted_number_is_refused_without_converting_it(tmp_path):
    # int() of 5,000 digits raises in Python: the hint must not try it
    for digits, hint in (("1" * 5000, MU_HINT),
                         ("1" * 5000 + "%", "a percentage is from 1% to 100% of a role's engines")):
        p = _topo(tmp_path, f'max_unavailable: "{digits}"')
        (e,) = errors_of(p)
        assert e.startswith(f"{p}:3:22: {MU}: '111111") and e.endswith(f"(hint: {hint})"), e


def test_a_fraction_below_one_fails_both_ways_and_both_are_said(tmp_path):
    p = _topo(tmp_path, "max_unavailable: 0.5")
    assert errors_of(p) == [
        f"{p}:3:22: {MU}: must be >= 1, got 0.5 (hint: {MU_HINT})",
        f"{p}:3:22: {MU}: must be an integer or a string, got number 0.5 (hint: {MU_HINT})"]


@pytest.mark.parametrize("written, message", [
    ("-1", "must be >= 0, got -1"),
    ("-0.5", "must be >= 0, got -0.5"),
    ("3601", "must be <= 3600, got 3601"),
    ("3600.5", "must be <= 3600, got 3600.5"),
    ('"30s"', "must be a number, got string '30s'"),
    ('"30"', "must be a number, got string '30'"),
    ("true", "must be a number, got boolean true"),
    ("{}", "must be a number, got a mapping"),
])
def test_bad_drain(tmp_path, written, message):
    p = _topo(tmp_path, f"drain: {written}")
    assert errors_of(p) == [f"{p}:3:12: {DRAIN}: {message} (hint: {DRAIN_HINT})"]


def test_every_bad_value_at_once_in_file_order(tmp_path):
    p = _topo(tmp_path, 'drain: -1\nmax_unavailable: "0%"')
    assert errors_of(p) == [
        f"{p}:3:12: {DRAIN}: must be >= 0, got -1 (hint: {DRAIN_HINT})",
        f"{p}:4:22: {MU}: '0%' is not allowed here: {MU_DESC} (hint: a percentage is from 1% to "
        "100% of a role's engines)"]


def test_unknown_key_and_wrong_shape(tmp_path):
    p = _topo(tmp_path, "max_unavail: 2")
    assert errors_of(p) == [f"{p}:3:5: runtime.rollout.max_unavail: unknown key 'max_unavail' "
                            "(hint: did you mean 'max_unavailable'?)"]
    p2 = write_topo(tmp_path, "runtime:\n  rollout: 2\n" + HEAD, name="int.yaml")
    assert errors_of(p2) == [f"{p2}:2:12: runtime.rollout: must be a mapping, got integer 2"]
    p3 = write_topo(tmp_path, "runtime:\n  rollouts: {}\n" + HEAD, name="typo.yaml")
    assert errors_of(p3) == [f"{p3}:2:3: runtime.rollouts: unknown key 'rollouts' (hint: did you "
                             "mean 'rollout'?)"]


def test_the_cli_prints_the_error_and_exits_1(tmp_path):
    p = _topo(tmp_path, "max_unavailable: 0")
    r = run_cli("plan", str(p))
    assert r.exit_code == 1
    assert f"{p}:3:22: {MU}: must be >= 1, got 0 (hint: {MU_HINT})" in r.stderr


# -- the schema is the model's constants ------------------------------------------------------


def test_the_schema_bounds_are_the_model_constants():
    import re

    ro = topology_schema()["properties"]["runtime"]["properties"]["rollout"]
    assert ro["additionalProperties"] is False
    mu, drain = ro["properties"]["max_unavailable"], ro["properties"]["drain"]
    assert mu["pattern"] == PERCENT_PATTERN and mu["minimum"] == DEFAULT_MAX_UNAVAILABLE == 1
    assert drain["minimum"] == 0 and drain["maximum"] == MAX_DRAIN == 3600
    assert DEFAULT_DRAIN == 30
    # P an integer 1..100, nothing else
    percents = [f"{i}%" for i in range(-5, 205)] + ["05%", "1.5%", "%", "1%%", "1"]
    assert [t for t in percents if re.fullmatch(PERCENT_PATTERN, t)] == \
        [f"{i}%" for i in range(1, 101)]
