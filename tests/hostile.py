"""Hostile and careless input, as generators of cases for the fuzz suites (``test_fuzz.py``; the
``deploy --dry-run`` fuzz reuses them). Deterministic: the same cases in the same order every run.

Every generator yields ``(label, case)``. A label starting with ``ok:`` is input sgl-gen must
accept (exit 0: tabs, CR LF line endings, a BOM); one starting with ``bad:`` must be refused
(exit 1, positioned errors); any other label may go either way, but never to a traceback or a
hang. ``expected(label)`` says which.

- ``raw_byte_cases()``: whole topology files as bytes: control characters, line separators,
  non-UTF-8, huge numbers, floats where integers are expected, YAML tags.
- ``special_files(dir)``: paths that are not regular files (FIFO, /dev/zero, a directory, a
  symlink loop, ...), created under ``dir``.
- ``hostile_structures()``: topology texts (YAML, parsed fine) whose values are hostile: list
  items shaped like flags, newline-terminated names, flag-shaped scalars in every string field,
  credentials written as literals.
- ``importer_cases()``: ``(label, (importer, text))``: the committed importer sources with the
  same hostile values put into every string field and key.
- ``set_cases()``: ``(label, [option, value, ...])``: command-line options for ``BASE`` (``--set``
  and the shorthands) carrying the same hostile values.
"""

from __future__ import annotations

import copy
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
SOURCES = REPO / "examples" / "sources"

#: a small valid topology every byte-level case starts from (one PD model, a router arg list,
#: an env value, a Slurm partition: each section whose values reach a script)
BASE = """\
deployment:
  name: hostile
  hf_checkpoint: /models/m
  num_gpus_per_engine: 2
cluster:
  gpus_per_node: 8
  slurm: {partition: gpu}
runtime:
  python: /opt/venv/bin/python
  workdir: /srv/sgl-gen
  env: {NCCL_DEBUG: INFO}
router:
  args: {request_timeout_secs: 600}
sglang:
  - name: actor
    server_groups:
      - worker_type: prefill
        num_gpus: 2
        overrides: {chunked_prefill_size: 4096}
      - worker_type: decode
        num_gpus: 2
"""


def expected(label: str) -> str:
    """``"valid"``, ``"invalid"`` or ``"either"`` for a case label."""
    if label.startswith("ok:"):
        return "valid"
    if label.startswith("bad:"):
        return "invalid"
    return "either"


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


# ---------------------------------------------------------------------------------------------
# raw bytes

#: characters that must never be in a topology's raw text, by name
RAW_CHARS = {
    "NUL": "\x00", "SOH": "\x01", "BS": "\x08", "VT": "\x0b", "FF": "\x0c", "ESC": "\x1b",
    "DEL": "\x7f", "U+0080": "\x80", "NEL U+0085": "\x85", "CSI U+009B": "\x9b",
    "LS U+2028": "\u2028", "PS U+2029": "\u2029", "RLO U+202E": "\u202e",
    "RLI U+2067": "\u2067", "U+FFFE": "\ufffe", "U+FFFF": "\uffff", "lone CR": "\r",
}

#: where a raw character goes: (label, old text of BASE, new text with {c} for the character)
RAW_SPOTS = [
    ("comment", "sglang:\n", "# reviewed{c}runtime: {{python: /tmp/evil}}\nsglang:\n"),
    ("value", "name: actor", "name: act{c}or"),
    ("quoted value", "hf_checkpoint: /models/m", 'hf_checkpoint: "/models/{c}m"'),
    ("key", "NCCL_DEBUG: INFO", "NCCL{c}_DEBUG: INFO"),
    ("end of file", "        num_gpus: 2\n" * 1, "        num_gpus: 2\n"),
]

#: (label, old text of BASE, new text): numbers that crash or hang a naive reader
NUMBER_CASES = [
    ("bad: 5,000-digit integer", "num_gpus: 2\n        overrides",
     "num_gpus: " + "9" * 5000 + "\n        overrides"),
    ("bad: 2**63 (out of int64)", "gpus_per_node: 8", f"gpus_per_node: {2**63}"),
    ("bad: -2**64", "request_timeout_secs: 600", f"request_timeout_secs: {-2**64}"),
    ("bad: float overflow to inf", "gpus_per_node: 8", "gpus_per_node: 1.0e+999"),
    ("bad: .inf", "chunked_prefill_size: 4096", "chunked_prefill_size: .inf"),
    ("bad: .nan", "request_timeout_secs: 600", "request_timeout_secs: .nan"),
    ("bad: num_gpus 2.0", "num_gpus: 2\n        overrides",
     "num_gpus: 2.0\n        overrides"),
    ("bad: gpus_per_node 8.0", "gpus_per_node: 8", "gpus_per_node: 8.0"),
    ("bad: port 40000.0", "num_gpus: 2\n        overrides",
     "num_gpus: 2\n        port: 40000.0\n        overrides"),
    ("bad: num_gpus_per_engine true", "num_gpus_per_engine: 2", "num_gpus_per_engine: true"),
    ("bad: gpus_per_node 2000000000", "gpus_per_node: 8", "gpus_per_node: 2000000000"),
    ("bad: num_gpus 1.0e+12", "num_gpus: 2\n        overrides",
     "num_gpus: 1.0e+12\n        overrides"),
    ("bad: num_gpus 10**12", "num_gpus: 2\n        overrides",
     "num_gpus: 1000000000000\n        overrides"),
    ("bad: nodes 1.0e+9", "gpus_per_node: 8", "gpus_per_node: 8\n  nodes: 1.0e+9"),
    ("bad: nodes 10**9", "gpus_per_node: 8", "gpus_per_node: 8\n  nodes: 1000000000"),
    ("bad: total_gpus 10**9", "num_gpus_per_engine: 2",
     "num_gpus_per_engine: 2\n  total_gpus: 1000000000"),
    ("bad: router node 10**9", "  - name: actor\n", "  - name: actor\n    router: {node: 1000000000}\n"),
    ("bad: many big groups", "      - worker_type: decode\n",
     "".join("      - {worker_type: decode, num_gpus: 262144}\n" for _ in range(3))
     + "      - worker_type: decode\n"),
    ("bad: gpu id 10**9", "  slurm: {partition: gpu}",
     "  slurm: {partition: gpu}\n  hosts: [{name: h, address: h, gpus: [0, 1, 2, 3, 4, 5, 6, "
     "1000000000]}]"),
    ("sexagesimal and hex ints", "request_timeout_secs: 600", "request_timeout_secs: 0x258"),
]


def raw_byte_cases() -> Iterator[tuple[str, bytes]]:
    """Whole topology files as bytes."""
    base = BASE.encode()
    yield "ok: the base topology", base
    yield "ok: CR LF line endings", BASE.replace("\n", "\r\n").encode()
    yield "ok: a BOM", b"\xef\xbb\xbf" + base
    yield "ok: tabs in comments and quoted values", _replace(
        BASE, "  env: {NCCL_DEBUG: INFO}", '  env: {NCCL_DEBUG: "a\tb"}  # a\tcomment').encode()
    yield "ok: escaped control characters stay byte-exact", _replace(
        BASE, "NCCL_DEBUG: INFO", 'NCCL_DEBUG: "a\\x01b\\u2028c\\x1b"').encode()
    for cname, ch in RAW_CHARS.items():
        for spot, old, new in RAW_SPOTS:
            text = _replace(BASE, old, new.format(c=ch)) if spot != "end of file" \
                else BASE + ch
            # a lone CR at the end of the file is a line ending YAML and editors agree on
            label = f"bad: raw {cname} in a {spot}" if not (cname == "lone CR"
                                                             and spot == "end of file") \
                else f"raw {cname} in a {spot}"
            yield label, text.encode("utf-8", "surrogatepass")
    yield "bad: a surrogate (CESU-8)", _replace(BASE, "name: actor", "name: a\ud800b").encode(
        "utf-8", "surrogatepass")
    yield "bad: non-UTF-8 byte", base.replace(b"actor", b"act\xffor")
    yield "bad: UTF-16", BASE.encode("utf-16")
    yield "bad: only NULs", b"\0" * 4096
    yield "bad: binary garbage", bytes(range(256)) * 16
    yield "bad: a python tag", _replace(BASE, "NCCL_DEBUG: INFO",
                                        "NCCL_DEBUG: !!python/object/apply:os.system [id]").encode()
    yield "bad: a binary tag", _replace(BASE, "NCCL_DEBUG: INFO",
                                        "NCCL_DEBUG: !!binary aGVsbG8=").encode()
    yield "bad: a timestamp as an integer", _replace(BASE, "gpus_per_node: 8",
                                                     "gpus_per_node: 2024-01-01").encode()
    yield "bad: deep nesting", _replace(BASE, "{request_timeout_secs: 600}",
                                        "[" * 500 + "]" * 500).encode()
    yield "bad: alias bomb", (BASE + "x: &a [1,1,1,1,1,1,1,1,1,1]\n" + "".join(
        f"x{i}: &a{i} [{', '.join(['*a' if i == 0 else f'*a{i - 1}'] * 10)}]\n"
        for i in range(7))).encode()
    for label, old, new in NUMBER_CASES:
        yield label, _replace(BASE, old, new).encode()


def special_files(directory: Path) -> Iterator[tuple[str, Path]]:
    """Paths that are not regular topology files; created under ``directory``."""
    fifo = directory / "fifo.yaml"
    os.mkfifo(fifo)
    yield "bad: a FIFO (nobody writes to it)", fifo
    yield "bad: /dev/zero", Path("/dev/zero")
    yield "bad: /dev/null", Path("/dev/null")
    yield "bad: /dev/urandom", Path("/dev/urandom")
    yield "bad: a directory", directory
    loop = directory / "loop.yaml"
    loop.symlink_to(directory / "loop2.yaml")
    (directory / "loop2.yaml").symlink_to(loop)
    yield "bad: a symlink loop", loop
    dangling = directory / "dangling.yaml"
    dangling.symlink_to(directory / "nowhere.yaml")
    yield "bad: a dangling symlink", dangling
    zero_link = directory / "zero.yaml"
    zero_link.symlink_to("/dev/zero")
    yield "bad: a symlink to /dev/zero", zero_link
    big = directory / "big.yaml"
    with big.open("wb") as f:  # sparse: 16 MiB + 1 without writing them
        f.write(BASE.encode())
        f.truncate(16 * 1024 * 1024 + 1)
    yield "bad: a file over the size limit", big
    sock = directory / "sock.yaml"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(sock))
    try:
        yield "bad: a unix socket", sock
    finally:
        s.close()
    yield "bad: no such file", directory / "missing.yaml"
    link = directory / "link.yaml"
    (directory / "target.yaml").write_text(BASE, encoding="utf-8")
    link.symlink_to(directory / "target.yaml")
    yield "ok: a symlink to a regular file", link


# ---------------------------------------------------------------------------------------------
# hostile structures

#: values argparse reads as options (and "--", which ends them)
FLAGS = ["--host", "-x", "--api-key=x", "--", "-1e3", "--worker-urls"]
#: values that are fine as argv words (byte-exact), though they look odd
NOT_FLAGS = ["-", "-1", "-0.5", "-.5"]
#: names and paths ending in a line break, or holding one
NEWLINES = ["\n", "\r\n", "\u2028", "\u0085"]


def _doc() -> dict[str, Any]:
    return yaml.safe_load(BASE)


def _text(doc: dict[str, Any]) -> str:
    # JSON is YAML: every string escaped, so the raw text is clean and the VALUES are hostile
    return json.dumps(doc, ensure_ascii=True)


def _string_leaves(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(data, str):
        yield path
    elif isinstance(data, dict):
        for k, v in data.items():
            yield from _string_leaves(v, path + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            yield from _string_leaves(v, path + (i,))


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    node: Any = out
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return out


#: a document with a string in every field that takes one (the base's plus hosts, container,
#: router host/policy, labels, node groups), for "a hostile value in every string field"
def _full_doc() -> dict[str, Any]:
    doc = _doc()
    doc["cluster"].pop("slurm")
    doc["cluster"]["hosts"] = [{"name": "h0", "address": "10.0.0.1", "user": "serve",
                                "labels": ["rollout"], "workdir": "/srv/h0"}]
    doc["cluster"]["slurm"] = {"partition": "gpu", "account": "acct", "time": "01:00:00",
                               "job_name": "job", "output": "out.log", "extra": {"qos": "high"}}
    doc["runtime"]["secrets_env_file"] = "/etc/sgl-gen/secrets.env"
    doc["runtime"]["container"] = {"kind": "apptainer", "image": "sglang.sif",
                                   "mounts": ["/data:/data"]}
    doc["router"]["policy"] = "round_robin"
    doc["router"]["args"]["cors_allowed_origins"] = ["https://a.example"]
    m = doc["sglang"][0]
    m["model_path"] = "/models/m"
    m["node_group"] = "rollout"
    m["router"] = {"host": "0.0.0.0", "args": {"request_id_headers": ["x-request-id"]}}
    m["server_groups"][0]["overrides"]["lora_paths"] = ["adapter"]
    m["server_groups"][0]["overrides"]["served_model_name"] = "actor"
    return doc


#: fields whose value reaches a command line or a file name: a flag-shaped or newline-holding
#: value there must be refused (elsewhere, e.g. an env value or a label, it may be accepted)
ARGV_FIELDS = {
    ("deployment", "name"), ("deployment", "hf_checkpoint"), ("runtime", "python"),
    ("runtime", "workdir"), ("runtime", "secrets_env_file"), ("runtime", "container", "image"),
    ("runtime", "container", "mounts", 0), ("router", "policy"),
    ("router", "args", "cors_allowed_origins", 0), ("cluster", "hosts", 0, "name"),
    ("cluster", "hosts", 0, "address"), ("cluster", "hosts", 0, "user"),
    ("cluster", "hosts", 0, "workdir"), ("sglang", 0, "name"), ("sglang", 0, "model_path"),
    ("sglang", 0, "router", "host"), ("sglang", 0, "router", "args", "request_id_headers", 0),
    ("sglang", 0, "server_groups", 0, "overrides", "lora_paths", 0),
    ("sglang", 0, "server_groups", 0, "overrides", "served_model_name"),
}
#: fields a line break must not get into: their schema pattern refuses one (they are written
#: into lines of scripts, units, #SBATCH headers or file names). Free-form server and router
#: argument strings may hold one: they arrive byte-exact ($'...' quoting).
LINE_FIELDS = {
    ("deployment", "name"), ("deployment", "hf_checkpoint"), ("runtime", "python"),
    ("runtime", "workdir"), ("runtime", "secrets_env_file"), ("runtime", "container", "image"),
    ("runtime", "container", "mounts", 0), ("router", "policy"), ("cluster", "hosts", 0, "name"),
    ("cluster", "hosts", 0, "address"), ("cluster", "hosts", 0, "user"),
    ("cluster", "hosts", 0, "workdir"), ("sglang", 0, "name"), ("sglang", 0, "model_path"),
    ("sglang", 0, "router", "host"), ("cluster", "slurm", "partition"),
    ("cluster", "slurm", "account"), ("cluster", "slurm", "time"),
    ("cluster", "slurm", "job_name"), ("cluster", "slurm", "output"),
    ("cluster", "slurm", "extra", "qos"), ("cluster", "hosts", 0, "labels", 0),
    ("sglang", 0, "node_group"),
}


def hostile_structures() -> Iterator[tuple[str, str]]:
    """Topology texts whose values are hostile."""
    yield "bad: lora_paths smuggles --host and --api-key", _text(_set(
        _doc(), ("sglang", 0, "server_groups", 0, "overrides", "lora_paths"),
        ["adapter", "--host", "0.0.0.0", "--api-key", "x"]))
    yield "bad: defaults list smuggles a flag", _text(_set(
        _doc(), ("defaults",), {"lora_paths": ["a", "--port", "1"]}))
    yield "bad: router args list smuggles --worker-urls", _text(_set(
        _doc(), ("router", "args", "cors_allowed_origins"),
        ["https://a", "--worker-urls", "http://evil:1"]))
    yield "bad: model router args list smuggles a flag", _text(_set(
        _doc(), ("sglang", 0, "router"), {"args": {"request_id_headers": ["x", "--api-key"]}}))
    yield "bad: a float item written -1e-05", _text(_set(
        _doc(), ("defaults",), {"bucket_time_to_first_token": [0.5, -0.00001]}))
    full = _full_doc()
    yield "ok: every string field set", _text(full)
    for path in _string_leaves(full):
        shown = ".".join(str(p) for p in path)
        for flag in FLAGS:
            bad = path in ARGV_FIELDS
            yield f"{'bad: ' if bad else ''}{flag!r} in {shown}", _text(_set(full, path, flag))
        for nl in NEWLINES:
            value = full_value(full, path)
            bad = path in LINE_FIELDS
            yield (f"{'bad: ' if bad else ''}{value!r} + {nl!r} in {shown}",
                   _text(_set(full, path, value + nl)))
        yield f"$(id) in {shown}", _text(_set(full, path, "$(touch /tmp/sgl-gen-pwned)"))
        # _text writes JSON with ensure_ascii: an emoji is its surrogate pair "\ud83d\ude00"
        # (a character, as for JSON), a lone half is refused at its escape, never a traceback
        yield f"emoji in {shown}", _text(_set(full, path, full_value(full, path) + "\U0001f600"))
        yield f"bad: lone surrogate in {shown}", _text(_set(full, path, "a\udc00"))
    for value in NOT_FLAGS:
        yield f"ok: {value!r} as a list item", _text(_set(
            full, ("sglang", 0, "server_groups", 0, "overrides", "lora_paths"), ["a", value]))
    yield "bad: python with a variable", _text(_set(
        _doc(), ("runtime", "python"), "$SGLGEN_ROOT/venv/bin/python"))
    yield "bad: python with ~", _text(_set(_doc(), ("runtime", "python"), "~/venv/bin/python"))
    yield "bad: python relative", _text(_set(_doc(), ("runtime", "python"), "venv/bin/python"))
    for key in ("HF_TOKEN", "WANDB_API_KEY", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD",
                "GITHUB_TOKEN", "MY_SECRET"):
        yield f"bad: runtime.env.{key} literal", _text(_set(
            _doc(), ("runtime", "env", key), "hf_abc123"))
    yield "ok: runtime.env.MAX_TOKENS is not a credential", _text(_set(
        _doc(), ("runtime", "env", "SGLANG_MAX_TOKENS"), "4096"))
    for path, url in ((("router", "args", "redis_url"), "redis://:pw@cache:6379"),
                      (("sglang", 0, "server_groups", 0, "overrides", "served_model_name"),
                       "postgres://u:pw@db/x"),
                      (("runtime", "env", "DATABASE"), "postgres://u:pw@db/x")):
        yield f"bad: a URL with a password in {'.'.join(map(str, path))}", _text(
            _set(_doc(), path, url))
    yield "bad: env key with a lone surrogate", _text(_set(_doc(), ("runtime", "env"),
                                                           {"A\ud800": "1"}))
    yield "ok: an emoji in served_model_name", _text(_set(
        _doc(), ("sglang", 0, "server_groups", 0, "overrides", "served_model_name"), "m\U0001f600"))
    yield "bad: env key with a newline", _text(_set(_doc(), ("runtime", "env"), {"FOO\n": "1"}))
    yield "bad: override key with a newline", _text(_set(
        _doc(), ("sglang", 0, "server_groups", 0, "overrides"), {"chunked_prefill_size\n": 1}))


def full_value(doc: dict[str, Any], path: tuple[Any, ...]) -> str:
    node: Any = doc
    for p in path:
        node = node[p]
    return str(node)


# ---------------------------------------------------------------------------------------------
# importers

#: importer -> the committed sources it reads (examples/sources/)
IMPORTER_SOURCES = {
    "slime": ["slime_sglang_basic.yaml", "slime_sglang_pd.yaml"],
    "rlinf": ["rlinf_sglang_server.yaml"],
    "roll": ["roll_rlvr_config_sglang.yaml"],
    "skyrl": ["skyrl_sglang_full.yaml"],
}


def importer_cases() -> Iterator[tuple[str, tuple[str, str]]]:
    """``(label, (importer, source text))``: each source as it is, then with one hostile value
    in each string field, a hostile key beside each mapping's first key, and raw bad bytes."""
    for importer, names in IMPORTER_SOURCES.items():
        for name in names:
            text = (SOURCES / name).read_text(encoding="utf-8")
            doc = yaml.safe_load(text)
            yield f"{importer} {name} as it is", (importer, text)
            for path in list(_string_leaves(doc))[:12]:
                shown = ".".join(str(p) for p in path)
                for value in ("--host", "x\n", "a\u2028runtime: {python: /tmp/evil}"):
                    yield (f"{importer} {name}: {value!r} in {shown}",
                           (importer, _text(_set(doc, path, value))))
            for path in _mappings(doc)[:6]:
                hostile = copy.deepcopy(doc)
                node: Any = hostile
                for p in path:
                    node = node[p]
                node["notes\nruntime: {python: /tmp/evil}\n#"] = 1
                yield (f"{importer} {name}: a key with line breaks in {'.'.join(map(str, path))}",
                       (importer, _text(hostile)))
            for cname in ("NUL", "ESC", "LS U+2028", "NEL U+0085"):
                yield (f"{importer} {name}: raw {cname} in a comment",
                       (importer, f"# x{RAW_CHARS[cname]}y\n" + text))


def _mappings(data: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out: list[tuple[Any, ...]] = []
    if isinstance(data, dict):
        out.append(path)
        for k, v in data.items():
            out += _mappings(v, path + (k,))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _mappings(v, path + (i,))
    return out


# ---------------------------------------------------------------------------------------------
# command-line values

#: --set paths and whether a flag-shaped value must be refused there (argv-bound fields)
SET_PATHS = {"defaults.served_model_name": True, "runtime.env.NCCL_DEBUG2": False,
             "deployment.hf_checkpoint": True, "runtime.python": True,
             "cluster.slurm.account": False}


def set_cases() -> Iterator[tuple[str, list[str]]]:
    """Options for ``BASE`` whose values are hostile (they must get the file's checks)."""
    yield "ok: a plain --set", ["--set", "runtime.env.X=1"]
    yield "ok: an escaped control character", ["--set", 'runtime.env.X="a\\x01b"']
    for cname, ch in RAW_CHARS.items():
        if ch == "\x00":
            continue  # the kernel cannot pass a NUL in argv; the escape is the way in
        for path in SET_PATHS:
            yield f"bad: raw {cname} in --set {path}", ["--set", f"{path}=a{ch}b"]
    for path in SET_PATHS:
        yield f"bad: a NUL escape in --set {path}", ["--set", f'{path}="a\\0b"']
        yield f"bad: a raw newline in --set {path}", ["--set", f"{path}=a\nb"]
        for flag in FLAGS:
            yield (f"{'bad: ' if SET_PATHS[path] else ''}{flag!r} in --set {path}",
                   ["--set", f"{path}={flag}"])
        yield f"bad: a tag in --set {path}", ["--set", f"{path}=!!binary aGVsbG8="]
        yield f"bad: a lone surrogate escape in --set {path}", ["--set", f'{path}="a\\udfffb"']
        yield f"a surrogate pair escape in --set {path}", ["--set",
                                                          f'{path}="/a\\ud83d\\ude00b"']
    for value in ("9" * 5000, str(2**63), "8.0", "1.0e+999", ".nan", "2000000000", "true"):
        yield f"bad: --set cluster.nodes={value[:12]}", ["--set", f"cluster.nodes={value}"]
        yield f"bad: --set cluster.gpus_per_node={value[:12]} (the file says 8)", [
            "--set", f"cluster.gpus_per_node={value}"]
        yield f"bad: --nodes {value[:12]}", ["--nodes", value]
    yield "bad: --total-gpus that the groups do not make", ["--total-gpus", "12"]
    yield "bad: --hf-checkpoint shaped like a flag", ["--set", "deployment.hf_checkpoint=",
                                                      "--hf-checkpoint=--host"]
    yield "bad: bad --set path", ["--set", "sglang[x]=1"]
    yield "bad: --set without =", ["--set", "runtime.python"]
