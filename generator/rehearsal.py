#!/usr/bin/env python3
"""sgl-gen rehearsal engine: a stdlib-only stand-in for ``python -m sglang.launch_server``.

Usage (the same argv as SGLang, plus a catalog and a few ``--rehearsal-*`` options)::

    python3 rehearsal.py --catalog sglang-0.5.23.json [--rehearsal-id ID] [--rehearsal-role ROLE]
        [--rehearsal-startup-delay SECONDS] [--rehearsal-request-delay SECONDS]
        [--rehearsal-kv-timeout SECONDS] --model-path M --host H --port P ...

``SGLGEN_CATALOG`` may replace ``--catalog``. The SGLang argv is parsed with a parser built from the
ServerArgs catalog (:func:`build_parser`), so a flag SGLang would reject fails here too (exit 2).

What it does, so that routers and launch scripts can be checked without GPUs:

* binds ``--host``/``--port`` (default 127.0.0.1:30000, like SGLang) and serves what routers call:
  ``/health``, ``/health_generate``, ``/server_info``, ``/model_info`` (and the ``/get_`` forms),
  ``/v1/models``, ``/v1/loads``, ``/get_load``, ``/flush_cache``, ``POST /generate``,
  ``/v1/completions``, ``/v1/chat/completions`` (also streamed); replies name the engine
  (``"sgl_gen": {...}``: id, role, node rank, address, pid, the CPUs it may run on, the container
  it runs in and the GPU devices it sees, and the text ``rehearsal <engine id>``);
* ``--rehearsal-startup-delay`` (or ``SGLGEN_REHEARSAL_STARTUP_DELAY`` in the environment) keeps
  ``/health`` at 503 for that long (weight loading);
* every generation request (``POST /generate``, ``/v1/completions``, ``/v1/chat/completions``,
  streamed or not) counts as running from its arrival until its answer is sent: ``/get_load``
  (``num_reqs``) and ``/v1/loads`` (``num_running_reqs``) report how many are in flight, as
  SGLang's scheduler does, so a router or a deploy can wait for an engine to drain;
  ``--rehearsal-request-delay`` (or ``SGLGEN_REHEARSAL_REQUEST_DELAY``; the option wins) makes
  each of them take that long before it answers (decoding time). An engine stopped meanwhile
  (SIGTERM) drops its in-flight requests unanswered (the connection closes), as a killed SGLang
  would;
* PD: a prefill engine serves HTTP on ``--host``:``--disaggregation-bootstrap-port``
  (``GET /health``; ``GET /route?room=R`` answers once the prefill half of room R has arrived);
  a decode engine receiving ``bootstrap_host``/``bootstrap_port``/``bootstrap_room`` asks that
  server and answers 502 naming the address when it cannot;
* multi-node (``--nnodes`` > 1): node rank 0 listens on the ``--dist-init-addr`` port and is ready
  only when every other rank has joined (one JSON line each way); ranks >= 1 connect to it and,
  like SGLang's dummy health server, answer only ``/health``, ``/health_generate`` and ``/ping``
  (503 until joined); everything else is 404;
* EPD: an ``--encoder-only`` engine serves ``POST /encode``; a ``--language-only`` engine reaches
  one of its ``--encoder-urls`` for every request (502 naming the URL when it cannot);
* logs one line per request to stderr; SIGTERM/SIGINT exit 0 promptly.

This file is copied next to rendered launch scripts, so it must stay a single stdlib-only module.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hmac
import http.client
import itertools
import json
import math
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SGLANG_VERSION_FALLBACK = "0.5.23"
#: SGLang's health check sends this bootstrap host; it never reaches a real prefill.
FAKE_BOOTSTRAP_HOST = "2.2.2.2"
ROLES = ("regular", "prefill", "decode", "encoder")

# ---------------------------------------------------------------------------------------------
# The SGLang argv parser, built from the catalog
# ---------------------------------------------------------------------------------------------


def _human_readable_int(value: str) -> int:
    """sglang.srt.utils.common.human_readable_int: 1k, 1M, 25.6k (SI), 1Ki, 1Mi (IEC)."""
    value = value.strip()
    si = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    iec = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)", value)
    if match:
        number, suffix = match.groups()
        if suffix in iec:
            if "." in number:
                raise argparse.ArgumentTypeError(
                    f"Decimals are not allowed with IEC suffixes like '{suffix}'.")
            return int(number) * iec[suffix]
        return int(Decimal(number) * si[suffix])
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"Invalid integer value: '{value}'. Use a plain integer, SI suffixes (1k, 1M), "
            "or IEC suffixes (1Ki, 1Mi). Suffixes are case-sensitive.") from None


def _nullable_str(value: str) -> Any:
    """sglang.srt.utils.common.nullable_str: '' and 'None' mean None."""
    return None if not value or value == "None" else value


def _json_value(value: str) -> Any:
    """json.loads / json_list_type, with argparse's error on bad JSON."""
    try:
        return json.loads(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid JSON: {value}") from None


def _json_object(value: str) -> Any:
    """parse_cuda_graph_config_arg: a JSON object (per-phase checks are SGLang's business)."""
    parsed = _json_value(value)
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {type(parsed).__name__}")
    return parsed


def _cuda_graph_backend(value: str) -> str:
    """parse_cuda_graph_backend_arg: the retired backend is rejected before choices."""
    if value == "tc_piecewise":
        raise argparse.ArgumentTypeError(
            "tc_piecewise was removed; select breakable, full, or disabled")
    return value


_PARSERS = {
    "json.loads": _json_value,
    "json_list_type": _json_value,
    "parse_cuda_graph_config_arg": _json_object,
    "human_readable_int": _human_readable_int,
    "nullable_str": _nullable_str,
    "parse_cuda_graph_backend_arg": _cuda_graph_backend,
}
_TYPES = {"str": str, "int": int, "float": float, "any": str, "json": _json_value}


def _type_func(arg: dict) -> Any:
    if arg.get("parser"):
        return _PARSERS[arg["parser"]]
    return _TYPES[arg["type"]]


def build_parser(catalog: dict) -> argparse.ArgumentParser:
    """An argparse parser accepting exactly what SGLang's ``launch_server`` parser accepts.

    Built from a catalog document (the decoded ``sglang-<version>.json``). Every argument's
    ``dest`` is its catalog ``name`` (unique), so ``vars(parser.parse_args(argv))[name]`` reads back
    the value of each flag. Like SGLang's parser it allows unambiguous prefixes of long options.
    """
    parser = argparse.ArgumentParser(prog="sglang serve")
    for arg in catalog["args"]:
        # argparse %-formats help text; a literal '%' must not break `--help`.
        kwargs: dict[str, Any] = {"dest": arg["name"],
                                  "help": arg.get("help", "").replace("%", "%%")}
        kind = arg["kind"]
        if kind == "store_true":
            kwargs.update(action="store_true", default=arg.get("default"))
        elif kind == "store_false":
            kwargs.update(action="store_false", default=arg.get("default"))
        elif kind == "boolean_optional":
            kwargs.update(action=argparse.BooleanOptionalAction, default=arg.get("default"))
        elif kind == "value":
            kwargs["type"] = _type_func(arg)
            for key in ("nargs", "choices", "const"):
                if arg.get(key) is not None:
                    kwargs[key] = arg[key]
            if arg.get("required"):
                kwargs["required"] = True
            else:
                kwargs["default"] = arg.get("default")
        else:
            raise ValueError(f"{arg['name']}: unknown kind {kind!r}")
        parser.add_argument(*arg["flags"], **kwargs)
    return parser


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

#: Options of this program, removed from argv before SGLang's arguments are parsed.
OWN_OPTIONS = {
    "--catalog": "catalog",
    "--rehearsal-id": "engine_id",
    "--rehearsal-role": "role",
    "--rehearsal-startup-delay": "startup_delay",
    "--rehearsal-request-delay": "request_delay",
    "--rehearsal-kv-timeout": "kv_timeout",
}


@functools.lru_cache(maxsize=1)
def _sandbox() -> dict[str, Any]:
    """Where it runs: ``container`` (podman writes /run/.containerenv, docker /.dockerenv; None
    on a host) and ``gpu_devices``, the NVIDIA GPU device nodes it sees (/dev/nvidiaN: what a
    runtime's GPU flags gave a container; a host shows all of its own)."""
    kind = "podman" if os.path.exists("/run/.containerenv") else \
        "docker" if os.path.exists("/.dockerenv") else None
    try:
        names = os.listdir("/dev")
    except OSError:
        names = []
    devs = sorted(int(n[6:]) for n in names if n.startswith("nvidia") and n[6:].isdigit())
    return {"container": kind, "gpu_devices": devs}


class UsageError(Exception):
    """Bad command line for the rehearsal engine (exit code 2, like argparse)."""


def split_argv(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Separate this program's options (``--opt V`` or ``--opt=V``) from SGLang's argv."""
    own: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name, eq, value = token.partition("=")
        if name in OWN_OPTIONS:
            if not eq:
                if i + 1 >= len(argv):
                    raise UsageError(f"{name} expects a value")
                value = argv[i + 1]
                i += 1
            own[OWN_OPTIONS[name]] = value
        else:
            rest.append(token)
        i += 1
    return own, rest


_CONFIG_LINE = re.compile(r"([a-z0-9][a-z0-9-]*): '((?:[^']|'')*)'")


def merge_config(argv: list[str]) -> list[str]:
    """``--config FILE`` as SGLang merges it (sglang/srt/utils/server_args_config_parser.py:
    the file's ``key: value`` pairs become ``--key value`` before the other arguments, so the
    command line wins). The rehearsal engine is stdlib-only and reads the form sgl-gen writes
    (its secrets file): ``flag-name: 'value'`` lines (``''`` is a quote), ``#`` comments."""
    if any(a.startswith("--config=") for a in argv):
        raise UsageError("--config=FILE is ignored by SGLang: write --config FILE")
    at = [i for i, a in enumerate(argv) if a == "--config"]
    if not at:
        return argv
    if len(at) > 1:
        raise UsageError("Multiple config files specified! Only one allowed.")
    i = at[0]
    if i + 1 >= len(argv):
        raise UsageError("No config file specified after --config flag!")
    path = argv[i + 1]
    if not path.endswith((".yaml", ".yml")):
        raise UsageError(f"Config file must be YAML format: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the config file {path}: {exc}") from None
    merged: list[str] = []
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _CONFIG_LINE.fullmatch(line)
        if m is None:
            raise UsageError(f"{path}:{n}: the rehearsal engine reads only the --config lines "
                             "sgl-gen writes (flag-name: 'value')")
        merged += [f"--{m.group(1)}", m.group(2).replace("''", "'")]
    return merged + argv[:i] + argv[i + 2:]


def _split_host_port(addr: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"expected HOST:PORT, got {addr!r}")
    return host.strip("[]"), int(port)


def _fmt_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# ---------------------------------------------------------------------------------------------
# Engine state
# ---------------------------------------------------------------------------------------------


def _log(engine_id: str, message: str) -> None:
    stamp = time.strftime("%H:%M:%S")
    sys.stderr.write(f"[{stamp}] rehearsal {engine_id}: {message}\n")
    sys.stderr.flush()


class Engine:
    """Everything a request handler needs: parsed args, identity, readiness and wiring state."""

    def __init__(self, args: dict[str, Any], own: dict[str, str], version: str) -> None:
        self.args = args
        self.version = version
        self.host: str = args.get("host") or "127.0.0.1"
        self.port: int = int(args.get("port") or 30000)
        self.engine_id: str = own.get("engine_id") or _fmt_addr(self.host, self.port)
        self.explicit_id = "engine_id" in own
        self.mode: str = args.get("disaggregation_mode") or "null"
        self.role = self._role(own.get("role"))
        self.nnodes: int = int(args.get("nnodes") or 1)
        self.node_rank: int = int(args.get("node_rank") or 0)
        self.model_path: str = args["model_path"]
        self.served_model_name: str = args.get("served_model_name") or self.model_path
        # SGLGEN_REHEARSAL_STARTUP_DELAY / _REQUEST_DELAY (e.g. set in runtime.env) apply to
        # every engine; the command-line option wins
        self.startup_delay = _seconds(own, "startup_delay", 0.0, "SGLGEN_REHEARSAL_STARTUP_DELAY")
        self.request_delay = _seconds(own, "request_delay", 0.0, "SGLGEN_REHEARSAL_REQUEST_DELAY")
        self.kv_timeout = _seconds(own, "kv_timeout", 30.0)
        self.started = time.time()
        self.ready_at = time.monotonic() + self.startup_delay
        self.stop = threading.Event()
        self.exit_code = 0
        self.lock = threading.Lock()
        self.requests = 0
        self.running = 0  # generation requests in flight (arrived, not yet answered)
        # prefill: bootstrap rooms whose prefill half arrived (room -> arrival time)
        self.rooms: dict[int, float] = {}
        self.rooms_changed = threading.Condition(self.lock)
        # multi-node: rank 0 -> joined ranks; ranks >= 1 -> whether joined to rank 0
        self.peers: dict[int, socket.socket] = {}
        self.joined = self.nnodes == 1 or self.node_rank == 0
        self.encoder_cycle = itertools.count()
        if self.nnodes > 1 and not args.get("dist_init_addr"):
            raise UsageError("--dist-init-addr is required when --nnodes > 1")
        if not 0 <= self.node_rank < self.nnodes:
            raise UsageError(f"--node-rank {self.node_rank} is outside 0..{self.nnodes - 1}")

    def _role(self, declared: str | None) -> str:
        derived = ("encoder" if self.args.get("encoder_only") else
                   self.mode if self.mode in ("prefill", "decode") else "regular")
        if declared is None:
            return derived
        if declared not in ROLES:
            raise UsageError(f"--rehearsal-role must be one of {', '.join(ROLES)}, "
                             f"got {declared!r}")
        if declared != derived:
            # The rendered script names a role its SGLang flags do not implement: a wiring bug.
            raise UsageError(f"--rehearsal-role {declared} but the SGLang flags make a {derived} "
                             f"engine (--disaggregation-mode {self.mode}, --encoder-only "
                             f"{bool(self.args.get('encoder_only'))})")
        return declared

    @property
    def identity(self) -> dict[str, Any]:
        """The ``sgl_gen`` block every reply carries."""
        return {"engine_id": self.engine_id, "role": self.role, "node_rank": self.node_rank,
                "host": self.host, "port": self.port, "pid": os.getpid(),
                # the CPUs it may run on (a Slurm step's binding, a cgroup's cpuset)
                "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                else None, **_sandbox()}

    def is_ready(self) -> bool:
        """Weights "loaded" (startup delay over) and every rank of a multi-node engine joined."""
        if time.monotonic() < self.ready_at or self.stop.is_set():
            return False
        with self.lock:
            if self.node_rank == 0:
                return len(self.peers) == self.nnodes - 1
            return self.joined

    def log(self, message: str) -> None:
        _log(self.engine_id, message)


def _seconds(own: dict[str, str], key: str, default: float, env: str | None = None) -> float:
    """A duration option: ``own[key]``, else the environment variable ``env``, else ``default``;
    a finite number >= 0."""
    flag = next(k for k, v in OWN_OPTIONS.items() if v == key)
    if key in own:
        raw, where = own[key], flag
    elif env is not None and env in os.environ:
        raw, where = os.environ[env], env
    else:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"{where} expects a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{where} expects a finite number of seconds >= 0, got {raw!r}")
    return value


# ---------------------------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------------------------


class WiringError(Exception):
    """A peer this engine must reach (prefill bootstrap, encoder, rank 0) is not there."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    engine: Engine


def _make_server(host: str, port: int, handler: type, engine: Engine) -> _Server:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    cls = type("_BoundServer", (_Server,), {"address_family": family})
    server = cls((host, port), handler)
    server.engine = engine
    return server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: routers pool connections
    server: _Server
    body = b""

    @property
    def engine(self) -> Engine:
        return self.server.engine

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        self.engine.log(f"{self.client_address[0]} {format % args}")

    def send_json(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send_error_json(self, status: int, message: str) -> None:
        self.send_json(status, {"error": {"message": message, "code": status},
                                "sgl_gen": self.engine.identity})

    def read_body(self) -> None:
        """Consume the request body up front: an unread body would corrupt the next request
        on a kept-alive connection."""
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length > 0 else b""

    def read_json(self) -> Any:
        return json.loads(self.body) if self.body.strip() else {}

    def send_sse(self, events: list[Any]) -> None:
        # No Content-Length: the stream ends when the connection closes (HTTP/1.1 allows it).
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for event in events:
            self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


# ---------------------------------------------------------------------------------------------
# The engine's HTTP API
# ---------------------------------------------------------------------------------------------


def _prompt_tokens(body: dict) -> int:
    for key in ("text", "prompt"):
        value = body.get(key)
        if isinstance(value, str):
            return max(1, len(value.split()))
    messages = body.get("messages")
    if isinstance(messages, list):
        return max(1, sum(len(str(m.get("content", "")).split())
                          for m in messages if isinstance(m, dict)))
    ids = body.get("input_ids")
    if isinstance(ids, list) and ids and not isinstance(ids[0], list):
        return len(ids)
    return 1


def _batch_size(body: dict) -> int | None:
    """None for a single request, else the number of prompts (SGLang's batch forms)."""
    text, ids = body.get("text"), body.get("input_ids")
    if isinstance(text, list):
        return len(text)
    if isinstance(ids, list) and ids and isinstance(ids[0], list):
        return len(ids)
    return None


def _bootstrap_triples(body: dict) -> list[tuple[Any, Any, Any]]:
    """(host, port, room) per prompt; the router sends lists for batches."""
    hosts, ports, rooms = (body.get(k) for k in ("bootstrap_host", "bootstrap_port",
                                                 "bootstrap_room"))
    if isinstance(hosts, list):
        n = len(hosts)
        ports = ports if isinstance(ports, list) else [ports] * n
        rooms = rooms if isinstance(rooms, list) else [rooms] * n
        return list(zip(hosts, ports, rooms, strict=False))
    if hosts is None:
        return []
    return [(hosts, ports, rooms)]


#: SGLang 0.5.23 endpoints marked ``@auth_level(AuthLevel.ADMIN_OPTIONAL)`` in
#: sglang/srt/entrypoints/http_server.py, of those the rehearsal engine serves
ADMIN_OPTIONAL_PATHS = frozenset({"/flush_cache"})
#: argument names that hold a credential (sgl-gen's rule: api_key, admin_api_key,
#: ssl_keyfile_password, ...): never echoed back
SECRET_SUFFIXES = ("api_key", "api_keys", "password", "secret", "credential", "credentials")
REDACTED = "<redacted>"


def redact_args(args: dict[str, Any]) -> dict[str, Any]:
    """``args`` with the value of every credential argument replaced by ``<redacted>``."""
    return {k: REDACTED if k.endswith(SECRET_SUFFIXES) and v is not None else v
            for k, v in args.items()}


def _bearer_ok(authorization: str | None, expected: str) -> bool:
    """sglang.srt.utils.auth.decide_request_auth._check_bearer_token."""
    if not authorization:
        return False
    parts = authorization.split(" ", 1)
    if len(parts) != 2 or parts[0].lower() != "bearer":
        return False
    return hmac.compare_digest(parts[1].encode(), expected.encode())


def auth_status(method: str, path: str, authorization: str | None, api_key: str | None,
                admin_api_key: str | None) -> int | None:
    """SGLang 0.5.23's API-key check (sglang/srt/utils/auth.py ``decide_request_auth``, installed
    by ``add_api_key_middleware`` when --api-key or --admin-api-key is set): None to serve the
    request, else the status to refuse it with (401; 403 is for ADMIN_FORCE endpoints, of which
    0.5.23 has none). Exempt: OPTIONS and paths starting /health, /ready or /metrics. A path no
    route matches is a NORMAL one, as in Starlette's matching."""
    if not api_key and not admin_api_key:
        return None  # no middleware at all
    if method == "OPTIONS" or path.startswith(("/health", "/ready", "/metrics")):
        return None
    if path in ADMIN_OPTIONAL_PATHS:  # the admin key if there is one, else the api key
        return None if _bearer_ok(authorization, admin_api_key or api_key or "") else 401
    if api_key:  # NORMAL: api_key protects everything, even with an admin key set
        return None if _bearer_ok(authorization, api_key) else 401
    return None


class EngineHandler(_Handler):
    """SGLang's HTTP surface (the parts routers and operators use)."""

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        raw_path = urlsplit(self.path).path
        path = raw_path.rstrip("/") or "/"
        e = self.engine
        self.read_body()
        try:
            if e.node_rank > 0:  # SGLang's dummy health server has no API-key middleware
                return self._follower(method, path)
            status = auth_status(method, raw_path, self.headers.get("Authorization"),
                                 e.args.get("api_key"), e.args.get("admin_api_key"))
            if status:
                e.log(f"refused {method} {raw_path}: HTTP {status} (API key)")
                return self.send_json(status, {
                    "error": "Unauthorized" if status == 401 else "Forbidden",
                    "sgl_gen": e.identity})
            if path in ("/health", "/health_generate", "/ready"):
                return self.send_empty(200 if e.is_ready() else 503)
            if not e.is_ready():
                return self.send_error_json(503, f"rehearsal {e.engine_id} is starting up")
            route = _ROUTES.get((method, path))
            if route is None and method == "PUT":
                route = _ROUTES.get(("POST", path))
            if route is None and method == "GET" and path.startswith("/v1/models/"):
                return self._model_card(path[len("/v1/models/"):])
            if route is None:
                return self.send_error_json(404, f"{method} {path} is not served by the "
                                                 "rehearsal engine")
            route(self)
        except WiringError as exc:
            e.log(f"ERROR {exc}")
            self.send_error_json(502, str(exc))
        except ValueError as exc:  # bad JSON body
            self.send_error_json(400, f"invalid request: {exc}")

    def _follower(self, method: str, path: str) -> None:
        # SGLang's nodes with rank >= 1 run only a dummy health server on --port.
        if method == "GET" and path in ("/health", "/health_generate", "/ping"):
            return self.send_empty(200 if self.engine.is_ready() else 503)
        self.send_error_json(404, f"node rank {self.engine.node_rank} serves only /health; "
                                  "send requests to node rank 0")

    # -- info ------------------------------------------------------------------------------

    def server_info(self) -> None:
        e = self.engine
        info = redact_args(e.args)
        info.update(served_model_name=e.served_model_name, version=e.version,
                    frontend="python", startup_time=e.started, launch_command=None,
                    internal_states=[{"dp_rank": 0, "rehearsal": True}],
                    sgl_gen=e.identity)
        self.send_json(200, info)

    def model_info(self) -> None:
        e = self.engine
        self.send_json(200, {
            "model_path": e.model_path, "served_model_name": e.served_model_name,
            "tokenizer_path": e.args.get("tokenizer_path") or e.model_path,
            "is_generation": True, "preferred_sampling_params": None, "weight_version": "default",
            "load_format": e.args.get("load_format"), "disaggregation_mode": e.mode,
            "has_image_understanding": False, "has_audio_understanding": False,
            "model_type": "rehearsal", "architectures": ["RehearsalForCausalLM"],
            "sgl_gen": e.identity})

    def _card(self) -> dict:
        e = self.engine
        return {"id": e.served_model_name, "object": "model", "created": int(e.started),
                "owned_by": "sglang", "root": e.served_model_name, "parent": None,
                "max_model_len": e.args.get("context_length")}

    def models(self) -> None:
        self.send_json(200, {"object": "list", "data": [self._card()]})

    def _model_card(self, model: str) -> None:
        if model != self.engine.served_model_name:
            return self.send_json(404, {"error": {
                "message": f"The model '{model}' does not exist", "type": "invalid_request_error",
                "param": "model", "code": "model_not_found"}})
        self.send_json(200, self._card())

    def loads(self) -> None:
        e = self.engine
        with e.lock:
            running = e.running
        self.send_json(200, {"timestamp": time.time(), "version": e.version, "loads": [{
            "dp_rank": 0, "num_running_reqs": running, "num_waiting_reqs": 0,
            "num_used_tokens": 0, "max_total_num_tokens": e.args.get("max_total_tokens") or 0,
            "token_usage": 0.0}], "sgl_gen": e.identity})

    def get_load(self) -> None:
        with self.engine.lock:
            running = self.engine.running
        self.send_json(200, [{"dp_rank": 0, "num_reqs": running, "num_waiting_reqs": 0,
                              "num_tokens": 0}])

    def flush_cache(self) -> None:
        self.send_json(200, {"message": "Cache flushed.", "sgl_gen": self.engine.identity})

    # -- generation ------------------------------------------------------------------------

    def _wiring(self, body: dict) -> dict[str, Any]:
        """Reach the peers this request depends on; raises WiringError when one is missing."""
        e = self.engine
        out: dict[str, Any] = {}
        if e.role == "prefill":
            rooms = [room for _, _, room in _bootstrap_triples(body) if room is not None]
            with e.rooms_changed:
                for room in rooms:
                    e.rooms[int(room)] = time.monotonic()
                e.rooms_changed.notify_all()
        elif e.role == "decode":
            triples = _bootstrap_triples(body)
            if not triples:
                raise WiringError(f"decode engine {e.engine_id} got a request without "
                                  "bootstrap_host/bootstrap_port: decode engines are reached "
                                  "through a PD router (--pd-disaggregation)")
            out["prefill"] = [_bootstrap_handshake(e, *t) for t in triples
                              if t[0] != FAKE_BOOTSTRAP_HOST]
        if e.args.get("language_only") and e.args.get("encoder_urls"):
            out["encoder"] = _probe_encoder(e)
        return out

    def _begin(self, body: dict) -> tuple[dict[str, Any], str]:
        e = self.engine
        wiring = self._wiring(body)
        with e.lock:
            e.requests += 1
            n = e.requests
        ident = dict(e.identity, request=n, **wiring)
        return ident, f"rehearsal {e.engine_id}"

    @contextlib.contextmanager
    def _in_flight(self) -> Iterator[None]:
        """Count this generation request as running (``/get_load``, ``/v1/loads``) until it has
        been answered or has failed."""
        e = self.engine
        with e.lock:
            e.running += 1
        try:
            yield
        finally:
            with e.lock:
                e.running -= 1

    def _decode_time(self) -> bool:
        """Sleep ``--rehearsal-request-delay``; False (connection closed unanswered) when the
        engine is stopped meanwhile."""
        e = self.engine
        if e.request_delay and e.stop.wait(e.request_delay):
            e.log(f"stopping: dropped an in-flight {self.command} {self.path} unanswered")
            self.close_connection = True
            return False
        return True

    def generate(self) -> None:
        with self._in_flight():
            self._generate()

    def _generate(self) -> None:
        body = self.read_json()
        ident, text = self._begin(body)
        rid = body.get("rid") or uuid.uuid4().hex

        def one(i: int) -> dict:
            return {"text": text, "output_ids": [0], "meta_info": {
                "id": rid if isinstance(rid, str) else rid[i],
                "finish_reason": {"type": "length", "length": 1},
                "prompt_tokens": _prompt_tokens(body), "completion_tokens": 1,
                "cached_tokens": 0, "e2e_latency": 0.0}, "sgl_gen": ident}

        n = _batch_size(body)
        result: Any = [one(i) for i in range(n)] if n is not None else one(0)
        if not self._decode_time():
            return
        if body.get("stream"):
            return self.send_sse(result if isinstance(result, list) else [result])
        self.send_json(200, result)

    def _openai(self, kind: str) -> None:
        with self._in_flight():
            self._openai_reply(kind)

    def _openai_reply(self, kind: str) -> None:
        body = self.read_json()
        ident, text = self._begin(body)
        e = self.engine
        created = int(time.time())
        model = body.get("model") or e.served_model_name
        usage = {"prompt_tokens": _prompt_tokens(body), "completion_tokens": 1,
                 "total_tokens": _prompt_tokens(body) + 1}
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
        if kind == "chat":
            choice: dict[str, Any] = {"index": 0, "finish_reason": "length", "logprobs": None,
                                      "message": {"role": "assistant", "content": text}}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "finish_reason": "length", "logprobs": None}
            obj = "text_completion"
        reply = {"id": rid, "object": obj, "created": created, "model": model,
                 "choices": [choice], "usage": usage, "sgl_gen": ident}
        if not self._decode_time():
            return
        if body.get("stream"):
            if kind == "chat":
                delta = {"index": 0, "delta": {"role": "assistant", "content": text},
                         "finish_reason": "length"}
                chunk = dict(reply, object="chat.completion.chunk", choices=[delta])
            else:
                chunk = dict(reply)
            chunk.pop("usage")
            return self.send_sse([chunk])
        self.send_json(200, reply)

    def chat(self) -> None:
        self._openai("chat")

    def completions(self) -> None:
        self._openai("completion")

    def encode(self) -> None:
        if self.engine.role != "encoder":
            return self.send_error_json(404, "POST /encode is served by --encoder-only engines")
        body = self.read_json()
        self.send_json(200, {"text": f"rehearsal {self.engine.engine_id}",
                             "sgl_gen": dict(self.engine.identity, probe_from=body.get("from"))})


_ROUTES = {
    ("GET", "/server_info"): EngineHandler.server_info,
    ("GET", "/get_server_info"): EngineHandler.server_info,
    ("GET", "/model_info"): EngineHandler.model_info,
    ("GET", "/get_model_info"): EngineHandler.model_info,
    ("GET", "/v1/models"): EngineHandler.models,
    ("GET", "/v1/loads"): EngineHandler.loads,
    ("GET", "/get_load"): EngineHandler.get_load,
    ("GET", "/flush_cache"): EngineHandler.flush_cache,
    ("POST", "/flush_cache"): EngineHandler.flush_cache,
    ("POST", "/generate"): EngineHandler.generate,
    ("POST", "/v1/chat/completions"): EngineHandler.chat,
    ("POST", "/v1/completions"): EngineHandler.completions,
    ("POST", "/encode"): EngineHandler.encode,
}


# ---------------------------------------------------------------------------------------------
# PD: the prefill bootstrap server and the decode side of the handshake
# ---------------------------------------------------------------------------------------------


class BootstrapHandler(_Handler):
    """A prefill engine's bootstrap server (SGLang's is HTTP too, on the same port)."""

    def do_GET(self) -> None:  # noqa: N802
        e = self.engine
        url = urlsplit(self.path)
        if url.path == "/health":
            return self.send_json(200, {"sgl_gen": e.identity})
        if url.path != "/route":
            return self.send_error_json(404, f"GET {url.path} is not a bootstrap route")
        query = parse_qs(url.query)
        room_s = (query.get("room") or [""])[0]
        if not room_s.lstrip("-").isdigit():
            return self.send_json(200, {"sgl_gen": e.identity, "room": None})
        room = int(room_s)
        # The router sends the prefill half and the decode half at the same time; like SGLang's
        # KV transfer, the decode side waits for the prefill side of its room.
        deadline = time.monotonic() + e.kv_timeout
        with e.rooms_changed:
            while room not in e.rooms and not e.stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                e.rooms_changed.wait(min(left, 0.5))
            arrived = room in e.rooms
        if not arrived:
            return self.send_error_json(504, f"prefill {e.engine_id} never received the prefill "
                                              f"half of bootstrap room {room} "
                                              f"(waited {e.kv_timeout:g}s)")
        self.send_json(200, {"sgl_gen": e.identity, "room": room})


def _bootstrap_handshake(e: Engine, host: Any, port: Any, room: Any) -> dict[str, Any]:
    """Ask the prefill bootstrap server named by a request; return the prefill's identity."""
    if port is None:  # SGLang falls back to the decode's own --disaggregation-bootstrap-port
        port = e.args.get("disaggregation_bootstrap_port")
    where = f"http://{_fmt_addr(str(host), int(port))}"
    what = (f"decode {e.engine_id}: prefill bootstrap server {where} (bootstrap_host/"
            f"bootstrap_port of the request, room {room})")
    query = f"/route?room={room}&decode={e.engine_id}" if room is not None else "/health"
    conn = http.client.HTTPConnection(str(host), int(port), timeout=e.kv_timeout + 5)
    try:
        conn.request("GET", query)
        resp = conn.getresponse()
        raw = resp.read()
    except OSError as exc:
        raise WiringError(f"{what} is unreachable: {exc}") from None
    finally:
        conn.close()
    try:
        reply = json.loads(raw)
    except ValueError:
        reply = None
    peer = reply.get("sgl_gen") if isinstance(reply, dict) else None
    if not isinstance(peer, dict):
        raise WiringError(f"{what} answered HTTP {resp.status} but is not a rehearsal engine")
    if resp.status != 200:
        message = reply.get("error", {}).get("message", raw.decode(errors="replace"))
        raise WiringError(f"{what} answered HTTP {resp.status}: {message}")
    if peer.get("role") != "prefill":
        raise WiringError(f"{what} belongs to {peer.get('engine_id')}, a {peer.get('role')} "
                          "engine, not a prefill engine")
    return {"engine_id": peer.get("engine_id"), "bootstrap": where}


def _probe_encoder(e: Engine) -> dict[str, Any]:
    """EPD: a language-only engine reaches one of its encoders (round robin)."""
    urls = e.args["encoder_urls"]
    url = urls[next(e.encoder_cycle) % len(urls)]
    parts = urlsplit(url if "://" in url else f"http://{url}")
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=10)
    try:
        conn.request("POST", "/encode", body=json.dumps({"from": e.engine_id}),
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        reply = json.loads(resp.read() or b"null")
    except (OSError, ValueError) as exc:
        raise WiringError(f"language-only {e.engine_id}: encoder {url} (--encoder-urls) is "
                          f"unreachable: {exc}") from None
    finally:
        conn.close()
    peer = reply.get("sgl_gen") if isinstance(reply, dict) else None
    if resp.status != 200 or not isinstance(peer, dict) or peer.get("role") != "encoder":
        raise WiringError(f"language-only {e.engine_id}: {url} (--encoder-urls) is not an "
                          f"encoder-only engine (HTTP {resp.status})")
    return {"engine_id": peer.get("engine_id"), "url": url}


# ---------------------------------------------------------------------------------------------
# Multi-node: rank 0 accepts the other ranks on --dist-init-addr
# ---------------------------------------------------------------------------------------------


def _hello(e: Engine) -> dict[str, Any]:
    return {"engine_id": e.engine_id, "explicit_id": e.explicit_id, "node_rank": e.node_rank,
            "nnodes": e.nnodes, "model_path": e.model_path, "tp_size": e.args.get("tp_size")}


def _check_hello(e: Engine, hello: dict[str, Any]) -> str | None:
    """Why rank 0 must refuse a joining rank (None to accept)."""
    rank = hello.get("node_rank")
    for key in ("nnodes", "model_path", "tp_size"):
        if hello.get(key) != _hello(e)[key]:
            return f"{key} differs: rank {rank} has {hello.get(key)!r}, rank 0 has " \
                   f"{_hello(e)[key]!r}"
    if hello.get("explicit_id") and e.explicit_id and hello.get("engine_id") != e.engine_id:
        return f"rank {rank} belongs to engine {hello.get('engine_id')}, not {e.engine_id}"
    if not isinstance(rank, int) or not 1 <= rank < e.nnodes:
        return f"node rank {rank!r} is outside 1..{e.nnodes - 1}"
    with e.lock:
        if rank in e.peers:
            return f"node rank {rank} has already joined"
    return None


def _serve_rank0(e: Engine, listener: socket.socket) -> None:
    listener.settimeout(0.5)
    while not e.stop.is_set():
        try:
            conn, addr = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            return
        threading.Thread(target=_rank0_peer, args=(e, conn, addr), daemon=True).start()


def _rank0_peer(e: Engine, conn: socket.socket, addr: Any) -> None:
    conn.settimeout(10)
    try:
        hello = json.loads(conn.makefile("r").readline() or "null")
    except (OSError, ValueError):
        conn.close()
        return
    if not isinstance(hello, dict):
        conn.close()
        return
    problem = _check_hello(e, hello)
    reply = {"ok": problem is None, "error": problem, "engine_id": e.engine_id}
    try:
        conn.sendall((json.dumps(reply) + "\n").encode())
    except OSError:
        conn.close()
        return
    if problem:
        e.log(f"ERROR refused {addr[0]}: {problem}")
        conn.close()
        return
    rank = hello["node_rank"]
    with e.lock:
        e.peers[rank] = conn
        joined = len(e.peers)
    e.log(f"node rank {rank} joined from {addr[0]} ({joined + 1}/{e.nnodes} ranks)")
    conn.settimeout(None)
    try:
        while conn.recv(1024):  # held open for the life of both processes
            pass
    except OSError:
        pass
    with e.lock:
        e.peers.pop(rank, None)
    if not e.stop.is_set():
        e.log(f"ERROR node rank {rank} left; not ready until it rejoins")
    conn.close()


def _follow_rank0(e: Engine, host: str, port: int) -> None:
    """Rank >= 1: join rank 0 (retrying like torch.distributed), stay joined, rejoin if lost."""
    where = _fmt_addr(host, port)
    waiting_logged = False
    while not e.stop.is_set():
        try:
            conn = socket.create_connection((host, port), timeout=2)
        except OSError as exc:
            if not waiting_logged:
                e.log(f"waiting for node rank 0 at --dist-init-addr {where}: {exc}")
                waiting_logged = True
            e.stop.wait(0.2)
            continue
        try:
            conn.sendall((json.dumps(_hello(e)) + "\n").encode())
            reply = json.loads(conn.makefile("r").readline() or "null")
        except (OSError, ValueError) as exc:
            e.log(f"handshake with node rank 0 at {where} failed: {exc}")
            conn.close()
            e.stop.wait(0.5)
            continue
        if not isinstance(reply, dict) or not reply.get("ok"):
            error = reply.get("error") if isinstance(reply, dict) else reply
            e.log(f"ERROR node rank 0 at --dist-init-addr {where} refused this rank: {error}")
            conn.close()
            e.exit_code = 1  # a misconfiguration does not heal: stop
            e.stop.set()
            return
        with e.lock:
            e.joined = True
        e.log(f"joined node rank 0 ({reply.get('engine_id')}) at {where}")
        conn.settimeout(0.5)
        while not e.stop.is_set():
            try:
                if not conn.recv(1024):
                    break
            except TimeoutError:
                continue
            except OSError:
                break
        conn.close()
        with e.lock:
            e.joined = False
        if not e.stop.is_set():
            e.log(f"ERROR lost node rank 0 at {where}; reconnecting")
            waiting_logged = False


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def _bind_error(what: str, host: str, port: int, exc: OSError) -> UsageError:
    return UsageError(f"cannot bind {what} on {_fmt_addr(host, port)}: {exc}")


def run(argv: list[str]) -> int:
    """Parse, bind, serve until SIGTERM/SIGINT; returns the exit code."""
    own, sglang_argv = split_argv(argv)
    catalog_path = own.get("catalog") or os.environ.get("SGLGEN_CATALOG")
    if not catalog_path:
        raise UsageError("the ServerArgs catalog is required: --catalog FILE or SGLGEN_CATALOG")
    try:
        with open(catalog_path, encoding="utf-8") as f:
            catalog = json.load(f)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the catalog {catalog_path}: {exc}") from None
    sglang_argv = merge_config(sglang_argv)
    args = vars(build_parser(catalog).parse_args(sglang_argv))  # exits 2 like SGLang
    e = Engine(args, own, catalog.get("version") or SGLANG_VERSION_FALLBACK)

    servers: list[_Server] = []
    sockets: list[socket.socket] = []
    try:
        servers.append(_make_server(e.host, e.port, EngineHandler, e))
    except OSError as exc:
        raise _bind_error("--host/--port", e.host, e.port, exc) from None
    if e.role == "prefill" and e.node_rank == 0:
        bport = int(args.get("disaggregation_bootstrap_port") or 8998)
        try:
            servers.append(_make_server(e.host, bport, BootstrapHandler, e))
        except OSError as exc:
            raise _bind_error("--disaggregation-bootstrap-port", e.host, bport, exc) from None
    if e.nnodes > 1:
        dhost, dport = _split_host_port(args["dist_init_addr"])
        if e.node_rank == 0:
            family = socket.AF_INET6 if ":" in dhost else socket.AF_INET
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind((dhost, dport))
            except OSError as exc:
                listener.close()
                raise _bind_error("--dist-init-addr (node rank 0)", dhost, dport, exc) from None
            listener.listen(64)
            sockets.append(listener)
            threading.Thread(target=_serve_rank0, args=(e, listener), daemon=True).start()
        else:
            threading.Thread(target=_follow_rank0, args=(e, dhost, dport), daemon=True).start()

    def on_signal(signum: int, frame: Any) -> None:
        e.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for s in servers:
        threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True).start()
    extra = f", bootstrap port {args.get('disaggregation_bootstrap_port')}" \
        if e.role == "prefill" and e.node_rank == 0 else ""
    nodes = f", node rank {e.node_rank}/{e.nnodes}" if e.nnodes > 1 else ""
    e.log(f"{e.role} engine for {e.model_path} listening on "
          f"http://{_fmt_addr(e.host, e.port)}{extra}{nodes}"
          + (f", ready in {e.startup_delay:g}s" if e.startup_delay else ""))
    while not e.stop.wait(0.5):
        pass
    e.log("stopping")
    for s in servers:
        s.shutdown()
        s.server_close()
    for sock in sockets:
        sock.close()
    with e.lock:
        for conn in e.peers.values():
            conn.close()
    return e.exit_code


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        sys.stderr.write(f"rehearsal: error: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
