"""Each rejection of DESIGN.md, with its exact position and message."""

from __future__ import annotations

from tests.helpers import errors_of, run_cli, write_topo

HEAD = """\
deployment:
  hf_checkpoint: /m
  num_gpus_per_engine: 2
"""


def test_duplicate_model_names(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: actor
    server_groups: [{worker_type: regular, num_gpus: 2}]
  - name: actor
    server_groups: [{worker_type: regular, num_gpus: 2}]
""")
    assert errors_of(p) == [
        f"{p}:7:11: sglang[1].name: duplicate model name 'actor' (first defined at line 5)"]


def test_regular_mixed_with_pd(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: actor
    server_groups:
      - {worker_type: regular, num_gpus: 2}
      - {worker_type: prefill, num_gpus: 2}
      - {worker_type: decode, num_gpus: 2}
""")
    assert errors_of(p) == [
        f"{p}:7:7: sglang[0].server_groups: mixes regular with prefill/decode groups "
        "(hint: a model is either all regular or prefill+decode; split it into two models)"]


def test_prefill_without_decode_and_reverse(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: a
    server_groups:
      - {worker_type: prefill, num_gpus: 2}
  - name: b
    server_groups:
      - {worker_type: decode, num_gpus: 2}
""")
    assert errors_of(p) == [
        f"{p}:7:7: sglang[0].server_groups: has prefill groups but no decode group",
        f"{p}:10:7: sglang[1].server_groups: has decode groups but no prefill group",
    ]


def test_num_gpus_not_a_multiple_of_width(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: actor
    num_gpus_per_engine: 4
    server_groups:
      - worker_type: regular
        num_gpus: 6
""")
    assert errors_of(p) == [
        f"{p}:9:19: sglang[0].server_groups[0].num_gpus: 6 is not a multiple of the engine "
        "width 4 (from sglang[0].num_gpus_per_engine)"]


def test_wide_engine_not_multiple_of_node(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: actor
    server_groups:
      - worker_type: regular
        num_gpus: 12
        num_gpus_per_engine: 12
""")
    assert errors_of(p) == [
        f"{p}:9:30: sglang[0].server_groups[0].num_gpus_per_engine: an engine of 12 GPUs spans "
        "nodes but 12 is not a multiple of gpus_per_node 8 (hint: use a width <= gpus_per_node "
        "or a multiple of it)"]


def test_unknown_keys_with_did_you_mean(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: actor
    server_group:
      - {worker_type: regular, num_gpus: 2}
    model_pth: /x
""")
    errs = errors_of(p)
    assert f"{p}:6:5: sglang[0].server_group: unknown key 'server_group' (hint: did you mean " \
           "'server_groups'?)" in errs
    assert f"{p}:8:5: sglang[0].model_pth: unknown key 'model_pth' (hint: did you mean " \
           "'model_path'?)" in errs


def test_override_unknown_key_did_you_mean(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: actor
    server_groups:
      - worker_type: regular
        num_gpus: 2
        overrides:
          mem_fraction_statik: 0.8
""")
    assert errors_of(p) == [
        f"{p}:10:11: sglang[0].server_groups[0].overrides.mem_fraction_statik: unknown SGLang "
        "server argument 'mem_fraction_statik' (sglang 0.5.23) (hint: did you mean "
        "'mem_fraction_static'?)"]


def test_override_wrong_type_choice_and_store_true(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: actor
    server_groups:
      - worker_type: regular
        num_gpus: 2
        overrides:
          context_length: lots
          attention_backend: warp-drive
          enable_torch_compile: "yes"
""")
    errs = errors_of(p)
    assert len(errs) == 3
    assert errs[0].startswith(f"{p}:10:27: sglang[0].server_groups[0].overrides.context_length: ")
    assert "integer" in errs[0]
    assert errs[1].startswith(
        f"{p}:11:30: sglang[0].server_groups[0].overrides.attention_backend: ")
    assert "warp-drive" in errs[1]
    assert errs[2].startswith(
        f"{p}:12:33: sglang[0].server_groups[0].overrides.enable_torch_compile: ")
    assert "true or false" in errs[2]


def test_generator_owned_keys_rejected_with_explanation(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
defaults:
  tp_size: 4
sglang:
  - name: actor
    server_groups:
      - worker_type: regular
        num_gpus: 2
        overrides:
          port: 9000
          disaggregation_mode: prefill
""")
    assert errors_of(p) == [
        f"{p}:5:3: defaults.tp_size: 'tp_size' is set by sgl-gen: derived: num_gpus_per_engine / "
        "pp_size (set num_gpus_per_engine)",
        f"{p}:12:11: sglang[0].server_groups[0].overrides.port: 'port' is set by sgl-gen: "
        "assigned per host by sgl-gen (pin it with server_groups[i].port)",
        f"{p}:13:11: sglang[0].server_groups[0].overrides.disaggregation_mode: "
        "'disaggregation_mode' is set by sgl-gen: set by worker_type: prefill / decode",
    ]


def test_router_policy_the_implementation_lacks(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
router:
  policy: consistent_hashing
sglang:
  - name: actor
    server_groups: [{worker_type: regular, num_gpus: 2}]
""")
    (err,) = errors_of(p)
    assert err.startswith(f"{p}:5:11: router.policy: policy 'consistent_hashing' is not "
                          "available in sglang-router 0.3.2 (choices: ")
    assert err.endswith("(hint: smg has it: set router.implementation: smg)")


def test_total_gpus_must_match(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
  total_gpus: 16
sglang:
  - name: actor
    server_groups:
      - {worker_type: regular, num_gpus: 6}
      - {worker_type: placeholder, num_gpus: 2}
""")
    assert errors_of(p) == [
        f"{p}:4:15: deployment.total_gpus: server groups use 8 GPUs but total_gpus is 16 (hint: "
        "the sum of every group's num_gpus (placeholders included) must equal it)"]


def test_groups_of_a_model_share_the_model_path(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: actor
    server_groups:
      - worker_type: prefill
        num_gpus: 2
        overrides: {model_path: /a}
      - worker_type: decode
        num_gpus: 2
        overrides: {model_path: /b}
""")
    assert errors_of(p) == [
        f"{p}:5:5: warning: sglang[0]: update_weights inferred false: the model path '/a' is not "
        "the hf_checkpoint (hint: set update_weights explicitly to silence this)",
        f"{p}:12:33: sglang[0].server_groups[1].overrides.model_path: '/b' differs from the "
        "model's path '/a' (hint: all groups of a model share one model path; define another "
        "model)"]


def test_placement_failure_is_explained_in_user_terms(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
cluster:
  nodes: 2
sglang:
  - name: actor
    server_groups:
      - {worker_type: regular, num_gpus: 15, num_gpus_per_engine: 3}
""")
    assert errors_of(p) == [
        f"{p}:9:9: sglang[0].server_groups[0]: actor/regular needs 5 engine(s) of 3 GPUs; 4 fit, "
        "then no node had 3 free GPUs: 4 GPU(s) left (node 0: 2, node 1: 2)"]


def test_unknown_node_group(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
cluster:
  node_groups: {rollout: [0]}
sglang:
  - name: actor
    node_group: rolout
    server_groups: [{worker_type: regular, num_gpus: 2}]
""")
    assert errors_of(p) == [
        f"{p}:8:17: sglang[0].node_group: unknown node group 'rolout' "
        "(hint: did you mean 'rollout'?)"]


def test_pinned_port_clash(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: a
    router: {port: 9000}
    server_groups: [{worker_type: regular, num_gpus: 2, port: 9000}]
""")
    assert errors_of(p) == [f"{p}:6:20: sglang[0].router.port: port 9000 on node0 is already "
                            "taken by a-regular (group 0) engine 0"]


def test_dp_size_on_multinode_engine(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: a
    server_groups:
      - worker_type: regular
        num_gpus: 16
        num_gpus_per_engine: 16
        overrides: {dp_size: 2}
""")
    assert errors_of(p) == [
        f"{p}:10:30: sglang[0].server_groups[0].overrides.dp_size: dp_size > 1 is rejected by "
        "SGLang for an engine spanning 2 nodes (hint: use attention data parallelism instead)"]


def test_all_errors_at_once_sorted(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: a
    server_groups: [{worker_type: regular, num_gpus: 3}]
  - name: a
    server_groups: [{worker_type: regular, num_gpus: 0}]
""")
    errs = errors_of(p)
    assert len(errs) == 1  # schema errors stop before rules: the num_gpus: 0 one
    assert errs[0] == f"{p}:8:54: sglang[1].server_groups[0].num_gpus: must be >= 1, got 0"


def test_cli_prints_every_error_one_per_line_and_exits_1(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: a
    server_groups: [{worker_type: regular, num_gpus: 3}]
  - name: a
    server_groups: [{worker_type: regular, num_gpus: 2}]
""")
    r = run_cli("validate", str(p))
    assert r.exit_code == 1
    lines = r.stderr.splitlines()
    assert lines == [
        f"{p}:6:54: sglang[0].server_groups[0].num_gpus: 3 is not a multiple of the engine width "
        "2 (from deployment.num_gpus_per_engine)",
        f"{p}:7:11: sglang[1].name: duplicate model name 'a' (first defined at line 5)",
    ]
    assert "Traceback" not in r.output
