"""Two SGLang versions in the catalog: 0.5.23 (the default) and 0.4.10.post2 (the last 0.4
release, still what many RL stacks pin), chosen by ``deployment.sglang_version``. A flag one of
them lacks is refused naming the version; what sgl-gen itself emits follows the version.
The older argvs pass that version's own parser in tests/test_real_parser.py."""

from __future__ import annotations

import json
import sys

from generator.compile.catalog import SUPPORTED_VERSIONS, catalog_path, load_catalog
from generator.targets.plans import plan_json
from tests.helpers import EXAMPLES, errors_of, plan_of, write_topo
from tests.test_rehearsal import REHEARSAL, free_port, wait_healthy

OLD = "0.4.10.post2"


def test_both_versions_are_in_the_catalog_oldest_first():
    assert SUPPORTED_VERSIONS == (OLD, "0.5.23")
    old, new = load_catalog(OLD), load_catalog("0.5.23")
    assert 150 <= len(old.names) < len(new.names)
    # the names are ServerArgs fields in both, whatever the first flag is spelled
    assert old.get("tp_size").flags[0] == "--tensor-parallel-size"
    assert old.get("tp_size").name == new.get("tp_size").name == "tp_size"


def test_the_older_version_gets_no_engine_info_bootstrap_port():
    plan = plan_of(EXAMPLES / "pd.yaml", f"deployment.sglang_version={OLD}")
    doc = json.loads(plan_json(plan))
    assert doc["deployment"]["sglang_version"] == OLD
    for m in plan.models:
        for e in m.engines:
            assert e.engine_info_bootstrap_port is None
            assert "--engine-info-bootstrap-port" not in e.argv
            assert "--disaggregation-mode" in e.argv
    new = plan_of(EXAMPLES / "pd.yaml")
    assert all("--engine-info-bootstrap-port" in e.argv for m in new.models for e in m.engines)


def test_a_flag_the_version_lacks_is_refused_naming_it(tmp_path):
    topo = write_topo(tmp_path, f"""
        deployment: {{name: old, hf_checkpoint: /m, sglang_version: "{OLD}"}}
        cluster: {{gpus_per_node: 2}}
        defaults:
          enable_deterministic_inference: true
        sglang:
          - name: m
            server_groups: [{{worker_type: regular, num_gpus: 2, num_gpus_per_engine: 1}}]
        """)
    have = load_catalog("0.5.23").get("enable_deterministic_inference")
    assert have is not None and load_catalog(OLD).get("enable_deterministic_inference") is None
    errs = errors_of(topo)
    assert errs == [f"{topo}:4:3: defaults.enable_deterministic_inference: sglang {OLD} has no "
                    "server argument 'enable_deterministic_inference' (sglang 0.5.23 has it) "
                    f"(hint: the topology's deployment.sglang_version is {OLD})"], errs
    # and the other way round: a flag only the older version has
    gone = sorted(set(load_catalog(OLD).names) - set(load_catalog("0.5.23").names))
    assert gone, "0.4.10.post2 has flags 0.5.23 dropped"
    topo2 = write_topo(tmp_path, f"""
        deployment: {{name: new, hf_checkpoint: /m}}
        cluster: {{gpus_per_node: 2}}
        defaults:
          {gone[0]}: 1
        sglang:
          - name: m
            server_groups: [{{worker_type: regular, num_gpus: 2, num_gpus_per_engine: 1}}]
        """, name="new.yaml")
    errs = errors_of(topo2)
    assert len(errs) == 1 and f"sglang 0.5.23 has no server argument '{gone[0]}' (sglang {OLD} " \
        "has it)" in errs[0], errs


def test_encoder_groups_need_a_version_with_encoder_only():
    errs = errors_of(EXAMPLES / "epd-encoder.yaml", f"deployment.sglang_version={OLD}")
    assert len(errs) == 1, errs
    assert ("server_groups[0].worker_type: encoder groups need SGLang's --encoder-only, which "
            f"sglang {OLD} does not have (hint: sglang 0.5.23 has it") in errs[0]
    assert errs[0].startswith(f"{EXAMPLES / 'epd-encoder.yaml'}:")


def test_a_version_without_a_catalog_is_refused_with_the_command_that_adds_one(tmp_path):
    topo = write_topo(tmp_path, """
        deployment: {name: x, hf_checkpoint: /m, sglang_version: "0.4.11"}
        cluster: {gpus_per_node: 2}
        sglang:
          - name: m
            server_groups: [{worker_type: regular, num_gpus: 2, num_gpus_per_engine: 1}]
        """)
    errs = errors_of(topo)
    assert errs == [f"{topo}:1:58: deployment.sglang_version: sgl-gen has no catalog of SGLang "
                    f"0.4.11's server arguments (it has: {OLD}, 0.5.23) (hint: `make "
                    "sglang-catalog VERSION=0.4.11` adds one (README: Adding an SGLang "
                    "version))"], errs
    bad = write_topo(tmp_path, topo.read_text().replace('"0.4.11"', '"latest"'), name="b.yaml")
    assert "deployment.sglang_version" in errors_of(bad)[0]


def test_the_rehearsal_engine_serves_an_older_version_argv(tmp_path):
    """The stand-in parses with the plan's own catalog, so an 0.4 argv starts it too."""
    import subprocess

    plan = plan_of(EXAMPLES / "basic.yaml", f"deployment.sglang_version={OLD}")
    argv = list(plan.models[0].engines[0].argv)
    port = free_port()
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--host") + 1] = "127.0.0.1"
    log = tmp_path / "engine.log"
    with open(log, "wb") as out:
        p = subprocess.Popen([sys.executable, str(REHEARSAL), "--catalog",
                              str(catalog_path(OLD)), *argv], stdout=out, stderr=out)
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
    finally:
        p.terminate()
        p.wait(timeout=30)
