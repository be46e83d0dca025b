"""Every command with ``--output json`` prints exactly one JSON document on stdout in every
outcome: a host that cannot be reached, a topology that does not validate (README: the deploy
commands' JSON)."""

from __future__ import annotations

import json

import pytest

from tests.helpers import run_cli, write_topo

LONE = """
    deployment: {name: lone, hf_checkpoint: /models/m}
    cluster:
      gpus_per_node: 1
      hosts: [{name: gone, address: 127.0.0.1, port: 1}]
    runtime: {supervisor: bash}
    sglang:
      - name: m
        server_groups: [{worker_type: regular, num_gpus: 1, num_gpus_per_engine: 1}]
    """


@pytest.mark.parametrize("command", ["deploy", "diff", "status", "check"])
def test_an_unreachable_host_gives_one_json_document(tmp_path, command):
    topo = write_topo(tmp_path, LONE)
    known = tmp_path / "known_hosts"
    known.write_text("")
    r = run_cli(command, str(topo), "--format", "json", "--known-hosts", str(known),
                "--connect-timeout", "5")
    assert r.exit_code == 3, r.output
    doc = json.loads(r.stdout)  # exactly one document: json.loads refuses trailing data
    assert doc["deployment"] == "lone" and doc["ok"] is False and doc["exit_code"] == 3
    assert "gone" in doc["error"]


@pytest.mark.parametrize("command", ["deploy", "diff", "status", "check"])
def test_an_invalid_topology_gives_one_json_document(tmp_path, command):
    topo = write_topo(tmp_path, LONE.replace("num_gpus: 1,", "num_gpus: 3,"))
    r = run_cli(command, str(topo), "--format", "json")
    assert r.exit_code == 1, r.output
    doc = json.loads(r.stdout)
    assert doc == {"deployment": None, "ok": False, "exit_code": 1, "error": doc["error"]}
    assert "the server groups need 3" in doc["error"]
