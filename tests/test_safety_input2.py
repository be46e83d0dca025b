"""Issue 13, red-team findings on input: aliases of owned arguments (F2), runtime.env values that
replace a referenced secret (F3) or sgl-gen's own variables (F11), literal credentials in model
paths and connection strings (F4), ',' in container mounts (F8), #SBATCH options sgl-gen writes
and '\\' in header values (F9), credential names (F13) and names that differ only in case (F16).
Each test failed on the code before the fix."""

from __future__ import annotations

import pytest

from tests.helpers import errors_of, plan_of, write_topo

HEAD = """\
deployment:
  hf_checkpoint: /m
  num_gpus_per_engine: 2
"""
ONE = """\
sglang:
  - name: actor
    server_groups: [{worker_type: regular, num_gpus: 2}]
"""


def _errors(p, *sets):
    return [e for e in errors_of(p, *sets) if ": warning: " not in e]


# -- F2: an argument is what the catalog resolves a key to, whatever its spelling ----------------


def test_aliases_of_owned_arguments_are_refused(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: actor
    server_groups:
      - worker_type: regular
        num_gpus: 2
        overrides: {nccl_init_addr: "10.9.9.9:1234", tensor-parallel-size: 2, --port: 1}
""")
    assert _errors(p) == [
        f"{p}:9:21: sglang[0].server_groups[0].overrides.nccl_init_addr: 'nccl_init_addr' "
        "(--dist-init-addr) is set by sgl-gen: derived: the address of the engine's rank-0 node",
        f"{p}:9:54: sglang[0].server_groups[0].overrides.tensor-parallel-size: "
        "'tensor-parallel-size' (--tp-size) is set by sgl-gen: derived: num_gpus_per_engine / "
        "pp_size (set num_gpus_per_engine)",
        f"{p}:9:79: sglang[0].server_groups[0].overrides.--port: '--port' is set by sgl-gen: "
        "assigned per host by sgl-gen (pin it with server_groups[i].port)",
    ]


def test_model_alias_goes_through_the_model_path_cascade(tmp_path):
    """``model`` is ``--model-path``: in defaults it is refused, in overrides it is the group's
    model path (one --model-path in argv, compared with the model's)."""
    p = write_topo(tmp_path, HEAD + "defaults: {model: /evil/m2}\n" + ONE)
    assert _errors(p) == [
        f"{p}:4:12: defaults.model: 'model' (--model-path) is not a server default (hint: set "
        "deployment.hf_checkpoint or the model's model_path)"]
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: actor
    model_path: /models/a
    server_groups:
      - {worker_type: regular, num_gpus: 2, overrides: {model: /evil/other-model}}
""")
    assert _errors(p) == [
        f"{p}:8:64: sglang[0].server_groups[0].overrides.model: '/evil/other-model' differs from "
        "model_path '/models/a'"]
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: actor
    server_groups:
      - {worker_type: regular, num_gpus: 2, overrides: {model: /models/b}}
""")
    argv = plan_of(p).models[0].engines[0].argv
    assert argv.count("--model-path") == 1 and "--model" not in argv
    assert argv[argv.index("--model-path") + 1] == "/models/b"


def test_two_spellings_of_one_argument_are_refused(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
router: {args: {request_timeout_secs: 10, request-timeout-secs: 20}}
sglang:
  - name: actor
    server_groups:
      - worker_type: regular
        num_gpus: 2
        overrides: {pipeline_parallel_size: 2, pp-size: 1}
""")
    assert _errors(p) == [
        f"{p}:4:43: router.args.request-timeout-secs: 'request-timeout-secs' and "
        "'request_timeout_secs' are the same argument (--request-timeout-secs) (hint: keep one "
        "of them)",
        f"{p}:10:48: sglang[0].server_groups[0].overrides.pp-size: 'pp-size' and "
        "'pipeline_parallel_size' are the same argument (--pp-size) (hint: keep one of them: "
        "SGLang would take the last one on the command line)",
    ]


def test_router_owned_flags_in_dash_form_are_refused(tmp_path):
    p = write_topo(tmp_path, HEAD + "router: {args: {--host: 1.2.3.4}}\n" + ONE)
    assert _errors(p) == [
        f"{p}:4:17: router.args.--host: '--host' is set by sgl-gen from the topology (hint: use "
        "router.host / router.port / router.prometheus_port / router.policy)"]


# -- F3 / F11: runtime.env cannot replace a secret or sgl-gen's own variables ---------------------


def test_runtime_env_cannot_replace_a_referenced_secret(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
runtime:
  env: {MYKEY: "", ROUTER_SECRET_X: "x", OTHER: "1"}
router: {args: {api_key: {env: ROUTER_SECRET_X}}}
sglang:
  - name: actor
    server_groups:
      - {worker_type: regular, num_gpus: 2, overrides: {api_key: {env: MYKEY}}}
""")
    assert _errors(p) == [
        f"{p}:5:9: runtime.env.MYKEY: MYKEY carries the credential of "
        "sglang[0].server_groups[0].overrides.api_key ({env: MYKEY}): a value here would "
        "replace the one from runtime.secrets_env_file (hint: remove it from runtime.env and "
        "put MYKEY=... in runtime.secrets_env_file on the hosts)",
        f"{p}:5:20: runtime.env.ROUTER_SECRET_X: ROUTER_SECRET_X carries the credential of "
        "router.args.api_key ({env: ROUTER_SECRET_X}): a value here would replace the one from "
        "runtime.secrets_env_file (hint: remove it from runtime.env and put ROUTER_SECRET_X=... "
        "in runtime.secrets_env_file on the hosts)",
    ]


@pytest.mark.parametrize("name", ["SGLGEN_ROOT", "SGLGEN_LOG_DIR", "SGLGEN_LIB", "SGLGEN_ANYTHING",
                                  "CUDA_VISIBLE_DEVICES", "SGL_ADDR_0", "SUBMIT_DIR",
                                  "SLURM_PROCID", "SLURM_JOB_NODELIST"])
def test_runtime_env_cannot_set_the_scripts_own_variables(tmp_path, name):
    p = write_topo(tmp_path, HEAD + f"runtime: {{env: {{{name}: /tmp/rt/hijack}}}}\n" + ONE)
    assert _errors(p) == [
        f"{p}:4:17: runtime.env.{name}: {name} is set by sgl-gen's scripts: a value here would "
        "replace theirs (hint: remove it from runtime.env)"]


def test_runtime_env_keeps_documented_knobs(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
runtime: {env: {SGLGEN_REHEARSAL_STARTUP_DELAY: 2, NCCL_SOCKET_IFNAME: eth0, KEY_PREFIX: a}}
""" + ONE)
    assert dict(plan_of(p).topology.runtime.env) == {
        "SGLGEN_REHEARSAL_STARTUP_DELAY": "2", "NCCL_SOCKET_IFNAME": "eth0", "KEY_PREFIX": "a"}


# -- F4: literal credentials in model paths and connection strings ------------------------------


def test_a_model_path_with_userinfo_is_refused_everywhere_in_the_cascade(tmp_path):
    p = write_topo(tmp_path, """\
deployment: {hf_checkpoint: "https://user:hunter2@hf.example/m", num_gpus_per_engine: 2}
runtime: {container: {kind: pyxis, image: "https://u:pw@registry.example/img"}}
sglang:
  - name: actor
    model_path: "https://tok@hf.example/a"
    server_groups:
      - {worker_type: regular, num_gpus: 2, overrides: {model_path: "https://tok@hf.example/a"}}
""")
    msg = ("a URL with a user name or password is a credential and must not be written in the "
           "topology: this value is shown in argv, plan.json, README.md and endpoints.json (hint: "
           "give the host access another way (a local path, HF_TOKEN=... in "
           "runtime.secrets_env_file))")
    assert _errors(p) == [
        f"{p}:1:29: deployment.hf_checkpoint: {msg}",
        f"{p}:2:43: runtime.container.image: {msg}",
        f"{p}:5:17: sglang[0].model_path: {msg}",
        f"{p}:7:69: sglang[0].server_groups[0].overrides.model_path: {msg}",
    ]


def test_connection_strings_are_credential_arguments(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
router:
  implementation: smg
  args:
    redis_url: "redis://cache:6379/0?password=hunter3"
    postgres_db_url: "host=db user=u password=hunter4"
    oracle_connect_descriptor: "u/hunter5@db:1521/svc"
runtime: {env: {REDIS_URL: "redis://cache/0?password=x", POSTGRES_DB_URL: "host=db", ATP_DSN: d}}
""" + ONE)
    hint = "(hint: write {env: NAME} and put NAME=... in runtime.secrets_env_file on the hosts)"
    env_msg = ("is a connection string or password the routers read: a value written here is "
               "rendered into every script and unit")
    errs = _errors(p)
    assert errs == [
        f"{p}:7:16: router.args.redis_url: --redis-url is a connection string, which can hold a "
        f"password, and must not be written in the topology {hint}",
        f"{p}:8:22: router.args.postgres_db_url: --postgres-db-url is a connection string, which "
        f"can hold a password, and must not be written in the topology {hint}",
        f"{p}:9:32: router.args.oracle_connect_descriptor: --oracle-connect-descriptor is a "
        "connection string, which can hold a password, and must not be written in the topology "
        f"{hint}",
        f"{p}:10:28: runtime.env.REDIS_URL: REDIS_URL {env_msg} (hint: put REDIS_URL=... in "
        "runtime.secrets_env_file on the hosts)",
        f"{p}:10:75: runtime.env.POSTGRES_DB_URL: POSTGRES_DB_URL {env_msg} (hint: put "
        "POSTGRES_DB_URL=... in runtime.secrets_env_file on the hosts)",
        f"{p}:10:95: runtime.env.ATP_DSN: ATP_DSN {env_msg} (hint: put ATP_DSN=... in "
        "runtime.secrets_env_file on the hosts)",
    ]
    assert not any("hunter" in e for e in errs)
    # the reference is the way: the router reads it from its own variable
    p = write_topo(tmp_path, HEAD + """\
router: {implementation: smg, args: {redis_url: {env: MY_REDIS}, postgres_db_url: {env: PG}}}
""" + ONE)
    argv = plan_of(p).models[0].router.argv
    assert [getattr(t, "name", None) for t in argv if not isinstance(t, str)] == ["PG", "MY_REDIS"]


# -- F8: ',' separates container mounts ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["pyxis", "apptainer"])
def test_a_comma_in_a_container_mount_is_refused(tmp_path, kind):
    p = write_topo(tmp_path, HEAD + f"""\
runtime: {{container: {{kind: {kind}, image: img, mounts: ["/models:/models", "/a:/b,/etc:/etc"]}}}}
""" + ONE)
    col = 71 + len(kind)
    assert _errors(p) == [
        f"{p}:4:{col}: runtime.container.mounts[1]: '/a:/b,/etc:/etc' is not allowed here: One "
        "mount (SRC:DST[:FLAGS]): one line, no ',' (it separates mounts), not starting with '-'."]


# -- F9: the #SBATCH header ---------------------------------------------------------------------


@pytest.mark.parametrize("key,why,hint", [
    ("nodes", "'nodes' is written by sgl-gen itself", "set cluster.nodes (or cluster.hosts)"),
    ("ntasks-per-node", "'ntasks-per-node' is written by sgl-gen itself",
     "sgl-gen sizes it for the steps on the busiest node"),
    ("output", "'output' is written by sgl-gen itself", "use cluster.slurm.output"),
    ("job-name", "'job-name' is written by sgl-gen itself", "use cluster.slurm.job_name"),
    ("gres", "'gres' is written by sgl-gen itself",
     "sgl-gen requests gpu:<cluster.gpus_per_node> per node"),
    ("partition", "'partition' is written by sgl-gen itself", "use cluster.slurm.partition"),
    ("account", "'account' is written by sgl-gen itself", "use cluster.slurm.account"),
    ("time", "'time' is written by sgl-gen itself", "use cluster.slurm.time"),
    ("exclusive", "'exclusive' is written by sgl-gen itself", "use cluster.slurm.exclusive"),
    ("part", "'part' (--partition) is written by sgl-gen itself", "use cluster.slurm.partition"),
    ("outp", "'outp' (--output) is written by sgl-gen itself", "use cluster.slurm.output"),
    ("o", "'o' (--output) is written by sgl-gen itself", "use cluster.slurm.output"),
    ("p", "'p' (--partition) is written by sgl-gen itself", "use cluster.slurm.partition"),
    ("t", "'t' (--time) is written by sgl-gen itself", "use cluster.slurm.time"),
    ("n", "'n' (--ntasks) contradicts the task layout sgl-gen computes", ""),
    ("e", "'e' (--error) sends the job's error output away from cluster.slurm.output", ""),
    ("error", "'error' sends the job's error output away from cluster.slurm.output", ""),
    ("wrap", "'wrap' replaces the job script", ""),
    ("chdir", "'chdir' changes the directory the job script and its steps run in", ""),
    ("export", "'export' changes the environment the steps get", ""),
    ("ntasks", "'ntasks' contradicts the task layout sgl-gen computes", ""),
    ("gpus-per-node", "'gpus-per-node' contradicts the GPUs sgl-gen requests", ""),
])
def test_sbatch_options_sgl_gen_writes_are_refused_in_extra(tmp_path, key, why, hint):
    p = write_topo(tmp_path, HEAD + f"cluster: {{slurm: {{extra: {{{key}: x, mail-type: NONE}}}}}}\n"
                   + ONE)
    assert _errors(p) == [f"{p}:4:27: cluster.slurm.extra.{key}: {why}"
                          + (f" (hint: {hint})" if hint else "")]


def test_sbatch_extra_that_sgl_gen_does_not_write_is_kept(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
cluster: {slurm: {extra: {mail-type: NONE, time-min: "01:00:00", qos: high, nodelist: a,
                          gres-flags: enforce-binding, constraint: h100}}}
""" + ONE)
    assert dict(plan_of(p).topology.slurm.extra) == {
        "mail-type": "NONE", "time-min": "01:00:00", "qos": "high", "nodelist": "a",
        "gres-flags": "enforce-binding", "constraint": "h100"}


@pytest.mark.parametrize("key", ["partition", "account", "time", "job_name", "output"])
def test_a_backslash_in_an_sbatch_header_value_is_refused(tmp_path, key):
    p = write_topo(tmp_path, HEAD + f"cluster: {{slurm: {{{key}: 'gpu\\', extra: {{a-b: 'x\\ y'}}}}}}\n"
                   + ONE)
    desc = ("One line without double quotes or backslashes (written into an #SBATCH line, where "
            "sbatch reads \\ as an escape).")
    col = 21 + len(key)  # the value of KEY, then the value of a-b 21 columns on
    assert _errors(p) == [
        f"{p}:4:{col}: cluster.slurm.{key}: 'gpu\\\\' is not allowed here: {desc}",
        f"{p}:4:{col + 21}: cluster.slurm.extra.a-b: 'x\\\\ y' is not allowed here: {desc}"]


# -- F13: one rule for credential names ---------------------------------------------------------


CREDENTIAL_NAMES = [
    "HF_TOKEN", "hfApiKey", "HfToken", "HFToken", "OPENAIAPIKEY", "openaiApiKey", "AUTH_TOKEN_2",
    "AUTH_TOKEN2", "DB_PASS", "DB_PWD", "CLIENT_SECRET_VALUE", "GITHUB_PAT", "HF_AUTH",
    "WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "DB_PASSWD", "api_key", "admin_api_key",
    "ssl_keyfile_password", "tenant_api_key", "oracle_password", "control_plane_api_keys",
    "mesh_tls_key", "client-secret", "MY_HFTOKEN", "SLACK_BOT_TOKEN_B64", "AZURE_CLIENT_SECRET",
    "GOOGLE_APPLICATION_CREDENTIALS", "PRIVATEKEY", "SSH_PASSPHRASE",
]
NOT_CREDENTIAL_NAMES = [
    "max_total_tokens", "max_prefill_tokens", "tokenizer_path", "tokenizer_mode",
    "speculative_num_draft_tokens", "ssl_keyfile", "tls_key_path", "client_key_path",
    "TOKENIZERS_PARALLELISM", "AWS_ACCESS_KEY_ID", "NCCL_SOCKET_IFNAME", "KEY_PREFIX", "PWD",
    "PASS", "AUTH", "PAT", "HOCKEY", "MONKEY_COUNT", "BYPASS_PROXY", "SGLANG_MAX_TOKENS",
    "tokens", "TOKEN_COUNT", "KEYS_DIR", "KEY_VALUE_CACHE", "oracle_username", "redis_pool_max",
]


@pytest.mark.parametrize("name", CREDENTIAL_NAMES)
def test_credential_names(name):
    from generator.compile.credentials import is_credential_name

    assert is_credential_name(name)


@pytest.mark.parametrize("name", NOT_CREDENTIAL_NAMES)
def test_names_that_are_not_credentials(name):
    from generator.compile.credentials import is_credential_name

    assert not is_credential_name(name)


def test_runtime_env_credential_names_are_refused_as_literals(tmp_path):
    names = ["hfApiKey", "HfToken", "OPENAIAPIKEY", "AUTH_TOKEN_2", "DB_PASS", "DB_PWD",
             "CLIENT_SECRET_VALUE", "GITHUB_PAT", "HF_AUTH"]
    env = "\n".join(f"    {n}: hunter2" for n in names)
    p = write_topo(tmp_path, HEAD + "runtime:\n  env:\n" + env + "\n" + ONE)
    errs = _errors(p)
    assert [e.split(": ")[1] for e in errs] == [f"runtime.env.{n}" for n in names]
    ends = ["Key", "Token", "APIKEY", "TOKEN", "PASS", "PWD", "SECRET", "PAT", "AUTH"]
    for e, n, end in zip(errs, names, ends, strict=True):
        assert f"{n} looks like a credential (its name ends in {end!r})" in e, e
        assert "hunter2" not in e


# -- F16: names that become files are unique also where case is ignored ---------------------------


def test_host_names_differing_only_in_case_are_refused(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
cluster:
  gpus_per_node: 2
  hosts: [{name: Node0, address: 10.0.0.1}, {name: node0, address: 10.0.0.2},
          {name: Node0, address: 10.0.0.3}]
sglang:
  - name: actor
    server_groups: [{worker_type: regular, num_gpus: 6}]
""")
    hint = ("(hint: names become file and unit names, and macOS and Windows checkouts of the "
            "output ignore case: choose names that differ in more than case)")
    assert _errors(p) == [
        f"{p}:6:52: cluster.hosts[1].name: host name 'node0' differs from 'Node0' "
        f"(cluster.hosts[0]) only in case {hint}",
        f"{p}:7:18: cluster.hosts[2].name: duplicate host name 'Node0' (also cluster.hosts[0])"]


def test_model_names_differing_only_in_case_are_refused(tmp_path):
    p = write_topo(tmp_path, HEAD + """\
sglang:
  - name: A
    server_groups: [{worker_type: regular, num_gpus: 2}]
  - name: a
    server_groups: [{worker_type: regular, num_gpus: 2}]
""")
    assert _errors(p) == [
        f"{p}:7:11: sglang[1].name: model name 'a' differs from 'A' (line 5) only in case (hint: "
        "names become file and unit names, and macOS and Windows checkouts of the output ignore "
        "case: choose names that differ in more than case)"]


def test_a_top_level_router_argument_is_reported_once_for_all_models(tmp_path):
    """router.args applies to every model's router and is checked for each: one error, not one
    per model."""
    p = write_topo(tmp_path, HEAD + """\
router: {args: {redis_url: "redis://cache/0?password=x"}}
sglang:
  - name: a
    server_groups: [{worker_type: regular, num_gpus: 2}]
  - name: b
    server_groups: [{worker_type: regular, num_gpus: 2}]
""")
    assert _errors(p) == [
        f"{p}:4:28: router.args.redis_url: --redis-url is a connection string, which can hold a "
        "password, and must not be written in the topology (hint: write {env: NAME} and put "
        "NAME=... in runtime.secrets_env_file on the hosts)"]


def test_a_url_with_a_credential_query_parameter_is_refused(tmp_path):
    p = write_topo(tmp_path, """\
deployment: {hf_checkpoint: "https://hf.example/m?rev=main&token=hf_x", num_gpus_per_engine: 2}
runtime: {env: {PROXY_URL: "http://proxy/?api_key=k"}}
defaults: {served_model_name: "s3://bucket/m?X-Amz-Signature=1&password=p"}
""" + ONE)
    assert [e.split(": ")[1] for e in _errors(p)] == [
        "deployment.hf_checkpoint", "runtime.env.PROXY_URL", "defaults.served_model_name"]
    # parameters that are not credentials are fine
    p = write_topo(tmp_path, """\
deployment: {hf_checkpoint: "https://hf.example/m?revision=main&max_tokens=3", num_gpus_per_engine: 2}
runtime: {env: {PROXY_URL: "http://proxy/?key_prefix=a"}}
""" + ONE)
    assert plan_of(p).models[0].model_path == "https://hf.example/m?revision=main&max_tokens=3"
