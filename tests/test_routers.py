"""Router catalogs are the live parsers of the pinned router packages; policies per router."""

from __future__ import annotations

import json
import subprocess
import sys

from generator.compile.routers import PARSERS, VERSIONS, catalog_file, load_router_catalog, router_argv
from tests.helpers import REPO, errors_of, write_topo
from tests.tools import need_python

DUMPER = str(REPO / "generator" / "devtools" / "argdump.py")


def _dump(python: str, impl: str) -> dict:
    r = subprocess.run([python, DUMPER, PARSERS[impl], impl], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_sglang_router_catalog_matches_the_installed_parser():
    assert _dump(sys.executable, "sglang-router") == json.loads(
        catalog_file("sglang-router").read_text())


def test_smg_catalog_matches_the_installed_parser():
    py = need_python("SGLGEN_SMG_PYTHON", "smg==1.13.0")
    assert _dump(py, "smg") == json.loads(catalog_file("smg").read_text())


def test_catalog_versions_are_the_pinned_ones():
    for impl, version in VERSIONS.items():
        assert load_router_catalog(impl).version == version


def test_consistent_hashing_is_smg_only():
    assert "consistent_hashing" in load_router_catalog("smg").policies
    assert "consistent_hashing" not in load_router_catalog("sglang-router").policies
    assert "cache_aware" in load_router_catalog("sglang-router").policies


def test_policy_missing_from_the_chosen_router_points_at_the_other(tmp_path):
    p = write_topo(tmp_path, """
        deployment: {name: r, hf_checkpoint: /m, num_gpus_per_engine: 1}
        router: {policy: consistent_hashing}
        sglang:
          - name: m
            server_groups: [{worker_type: regular, num_gpus: 1}]
        """)
    (err,) = errors_of(p)
    assert err.startswith(f"{p}:2:18: router.policy: policy 'consistent_hashing' is not available "
                          "in sglang-router 0.3.2 (choices: ")
    assert err.endswith("(hint: smg has it: set router.implementation: smg)")


def test_unknown_router_argument_did_you_mean(tmp_path):
    p = write_topo(tmp_path, """
        deployment: {name: r, hf_checkpoint: /m, num_gpus_per_engine: 1}
        router: {args: {request_timeout_secs: 30, max_concurent_requests: 4}}
        sglang:
          - name: m
            server_groups: [{worker_type: regular, num_gpus: 1}]
        """)
    assert errors_of(p) == [
        f"{p}:2:43: router.args.max_concurent_requests: unknown sglang-router 0.3.2 argument "
        "'max_concurent_requests' (hint: did you mean 'max_concurrent_requests'?)"]


def test_router_argv_pd_with_and_without_bootstrap_port():
    argv = router_argv("sglang-router", host="0.0.0.0", port=1, prometheus_port=2,
                       pd=([("http://a:1", 9000), ("http://b:1", None)], ["http://c:1"]),
                       prefill_policy="cache_aware", decode_policy="power_of_two")
    assert argv == ["--host", "0.0.0.0", "--port", "1", "--prometheus-port", "2",
                    "--pd-disaggregation", "--prefill", "http://a:1", "9000",
                    "--prefill", "http://b:1", "--decode", "http://c:1",
                    "--prefill-policy", "cache_aware", "--decode-policy", "power_of_two"]
