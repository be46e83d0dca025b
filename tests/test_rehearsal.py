"""The rehearsal engine as a real process: endpoints, argv rejection, PD, multi-node, EPD, and the
real sglang-router 0.3.2 in front of it. Every wait polls with a deadline; every process started
here is stopped in a fixture's ``finally``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from generator.compile.catalog import catalog_path
from tests.tools import need_python

REPO = Path(__file__).resolve().parent.parent
REHEARSAL = REPO / "generator" / "rehearsal.py"
CATALOG = catalog_path("0.5.23")
HOST = "127.0.0.1"
WAIT = 20.0  # upper bound of every readiness wait, seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """(status, decoded JSON body or raw text or None); never raises on HTTP errors."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    text = raw.decode()
    try:
        return status, json.loads(text) if text else None
    except ValueError:
        return status, text


def status_of(url: str) -> int | None:
    """HTTP status of GET url, or None while nothing listens."""
    try:
        return http("GET", url, timeout=2)[0]
    except OSError:
        return None


class Proc:
    """A started process with its stderr in a file (a pipe could fill up and block it)."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.handle = log.open("wb")
        self.popen = subprocess.Popen(argv, stdout=self.handle, stderr=subprocess.STDOUT,
                                      env=env, cwd=REPO)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self.handle.close()
        return self.popen.returncode


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start processes; all are stopped (SIGTERM, then SIGKILL) when the test ends."""
    procs: list[Proc] = []

    def start(argv: list[str], name: str, env: dict[str, str] | None = None) -> Proc:
        p = Proc(argv, tmp_path / f"{name}.log", env)
        procs.append(p)
        return p

    try:
        yield start
    finally:
        for p in reversed(procs):
            p.stop()


@pytest.fixture
def engine(spawn: Callable[..., Proc], tmp_path: Path) -> Callable[..., Proc]:
    """Start a rehearsal engine: engine(engine_id, port, *sglang_args)."""

    def start(engine_id: str, port: int, *args: str, model: str | None = None) -> Proc:
        argv = [sys.executable, str(REHEARSAL), "--catalog", str(CATALOG),
                "--rehearsal-id", engine_id, "--model-path", model or str(tmp_path),
                "--host", HOST, "--port", str(port), *args]
        return spawn(argv, engine_id)

    return start


def wait_until(check: Callable[[], bool], what: str, *procs: Proc,
               timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        for p in procs:
            if p.popen.poll() is not None:
                pytest.fail(f"{what}: process exited {p.popen.returncode}\n{p.text()}")
        time.sleep(0.05)
    logs = "\n".join(p.text() for p in procs)
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n{logs}")


def wait_healthy(url: str, *procs: Proc) -> None:
    wait_until(lambda: status_of(f"{url}/health") == 200, f"{url}/health", *procs)


def run_rehearsal(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REHEARSAL), *args], capture_output=True,
                          text=True, timeout=60, env=env)


# -- one engine -----------------------------------------------------------------------------------


def test_endpoints(engine: Callable[..., Proc], tmp_path: Path) -> None:
    port = free_port()
    url = f"http://{HOST}:{port}"
    p = engine("e1", port, "--served-model-name", "qwen-test", "--tp-size", "2")
    wait_healthy(url, p)
    ident = {"engine_id": "e1", "role": "regular", "node_rank": 0, "host": HOST, "port": port,
             "pid": p.popen.pid, "cpus": sorted(os.sched_getaffinity(p.popen.pid)),
             # on a host: none (this machine may itself be a container: it says which)
             "container": "podman" if Path("/run/.containerenv").exists() else
             "docker" if Path("/.dockerenv").exists() else None,
             "gpu_devices": sorted(int(d.name[6:]) for d in Path("/dev").glob("nvidia*")
                                   if d.name[6:].isdigit())}

    assert status_of(f"{url}/health_generate") == 200
    for path in ("/server_info", "/get_server_info"):
        status, info = http("GET", url + path)
        assert status == 200
        assert (info["tp_size"], info["dp_size"], info["model_path"], info["served_model_name"],
                info["disaggregation_mode"], info["load_balance_method"], info["version"]) == (
            2, 1, str(tmp_path), "qwen-test", "null", "auto", "0.5.23")
        assert info["sgl_gen"] == ident
    for path in ("/model_info", "/get_model_info"):
        status, info = http("GET", url + path)
        assert status == 200 and info["model_path"] == str(tmp_path)
        assert info["is_generation"] is True and info["architectures"]
    status, models = http("GET", f"{url}/v1/models")
    assert status == 200 and models["object"] == "list" and len(models["data"]) == 1
    assert models["data"][0]["id"] == "qwen-test" and models["data"][0]["owned_by"] == "sglang"
    assert http("GET", f"{url}/v1/models/qwen-test")[0] == 200
    assert http("GET", f"{url}/v1/models/other")[0] == 404
    status, loads = http("GET", f"{url}/v1/loads")
    assert status == 200 and loads["loads"][0]["dp_rank"] == 0
    status, load = http("GET", f"{url}/get_load")
    assert status == 200 and load[0]["num_tokens"] == 0

    status, out = http("POST", f"{url}/generate",
                       {"text": "hello world", "sampling_params": {"max_new_tokens": 8}})
    assert status == 200 and out["text"] == "rehearsal e1"
    assert {k: out["sgl_gen"][k] for k in ident} == ident
    assert out["meta_info"]["finish_reason"]["type"] == "length"
    status, batch = http("POST", f"{url}/generate", {"text": ["a", "b"]})
    assert status == 200 and [b["text"] for b in batch] == ["rehearsal e1"] * 2

    status, chat = http("POST", f"{url}/v1/chat/completions",
                        {"model": "qwen-test", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and chat["object"] == "chat.completion"
    assert chat["choices"][0]["message"]["content"] == "rehearsal e1"
    assert chat["sgl_gen"]["engine_id"] == "e1"
    status, comp = http("POST", f"{url}/v1/completions", {"model": "qwen-test", "prompt": "x"})
    assert status == 200 and comp["choices"][0]["text"] == "rehearsal e1"
    status, stream = http("POST", f"{url}/v1/chat/completions",
                          {"messages": [{"role": "user", "content": "hi"}], "stream": True})
    events = [line[len("data: "):] for line in stream.splitlines() if line.startswith("data: ")]
    assert status == 200 and events[-1] == "[DONE]"
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "rehearsal e1"

    assert http("GET", f"{url}/flush_cache")[0] == 200
    assert http("POST", f"{url}/flush_cache")[0] == 200
    assert http("GET", f"{url}/no/such/thing")[0] == 404
    assert http("POST", f"{url}/generate", None)[0] == 200  # empty body: defaults

    # One log line per request, then a prompt, clean exit on SIGTERM.
    assert '"POST /generate HTTP/1.1" 200' in p.text()
    t0 = time.monotonic()
    assert p.stop() == 0
    assert time.monotonic() - t0 < 5


def test_startup_delay_keeps_health_at_503(engine: Callable[..., Proc]) -> None:
    port = free_port()
    url = f"http://{HOST}:{port}"
    p = engine("slow", port, "--rehearsal-startup-delay", "2")
    wait_until(lambda: status_of(f"{url}/health") is not None, "the port to be bound", p)
    assert status_of(f"{url}/health") == 503
    assert http("POST", f"{url}/generate", {"text": "x"})[0] == 503
    wait_healthy(url, p)
    assert http("POST", f"{url}/generate", {"text": "x"})[0] == 200


def _loads(url: str) -> tuple[int, int]:
    """(``/get_load`` num_reqs, ``/v1/loads`` num_running_reqs) of one engine."""
    status, load = http("GET", f"{url}/get_load")
    assert status == 200, load
    status, loads = http("GET", f"{url}/v1/loads")
    assert status == 200, loads
    return load[0]["num_reqs"], loads["loads"][0]["num_running_reqs"]


def _timed_request(out: dict[str, Any], key: str, method: str, url: str, body: Any) -> None:
    """http() in a thread: out[key] = (status, body, seconds) or (None, exception, seconds)."""
    t0 = time.monotonic()
    try:
        status, reply = http(method, url, body)
        out[key] = (status, reply, time.monotonic() - t0)
    except OSError as exc:
        out[key] = (None, exc, time.monotonic() - t0)


def test_request_delay_counts_in_flight_requests(engine: Callable[..., Proc]) -> None:
    port = free_port()
    url = f"http://{HOST}:{port}"
    p = engine("busy", port, "--rehearsal-request-delay", "1.0")
    wait_healthy(url, p)
    assert _loads(url) == (0, 0)

    # one /generate in flight: counted by both load endpoints until it is answered
    out: dict[str, Any] = {}
    t = threading.Thread(target=_timed_request, args=(out, "gen", "POST", f"{url}/generate",
                                                      {"text": "hi"}))
    t.start()
    wait_until(lambda: _loads(url) != (0, 0), "the request to be counted", p)
    assert _loads(url) == (1, 1)
    t.join(timeout=WAIT)
    status, reply, secs = out["gen"]
    assert status == 200 and reply["sgl_gen"]["engine_id"] == "busy"
    assert secs >= 1.0
    # (the count drops right after the answer is written)
    wait_until(lambda: _loads(url) == (0, 0), "the count to drop back to 0", p, timeout=2)

    # every generation endpoint counts, streamed ones too, concurrently
    bodies = {"generate": ("/generate", {"text": "a"}),
              "stream": ("/generate", {"text": "b", "stream": True}),
              "chat": ("/v1/chat/completions", {"messages": [{"role": "user", "content": "c"}]}),
              "chat-stream": ("/v1/chat/completions",
                              {"messages": [{"role": "user", "content": "d"}], "stream": True}),
              "completions": ("/v1/completions", {"prompt": "e"})}
    threads = [threading.Thread(target=_timed_request,
                                args=(out, key, "POST", url + path, body))
               for key, (path, body) in bodies.items()]
    for th in threads:
        th.start()
    wait_until(lambda: _loads(url) == (5, 5), "5 requests in flight", p)
    for th in threads:
        th.join(timeout=WAIT)
    for key in bodies:
        status, reply, secs = out[key]
        assert status == 200 and secs >= 1.0, (key, out[key])
    assert "rehearsal busy" in out["stream"][1] and out["stream"][1].endswith("data: [DONE]\n\n")
    wait_until(lambda: _loads(url) == (0, 0), "the count to drop back to 0", p, timeout=2)
    # requests refused before they run (an unknown path) are not generation requests
    assert http("POST", f"{url}/no/such", {})[0] == 404 and _loads(url) == (0, 0)


def test_request_delay_from_env_option_wins(spawn: Callable[..., Proc], tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    env = dict(os.environ, SGLGEN_REHEARSAL_REQUEST_DELAY="0.8")
    base = [sys.executable, str(REHEARSAL), "--catalog", str(CATALOG),
            "--model-path", str(tmp_path), "--host", HOST]
    from_env = spawn([*base, "--port", str(ports[0])], "from-env", env)
    option = spawn([*base, "--port", str(ports[1]), "--rehearsal-request-delay=0"], "option", env)
    urls = [f"http://{HOST}:{port}" for port in ports]
    wait_healthy(urls[0], from_env)
    wait_healthy(urls[1], option)
    took = []
    for u in urls:
        t0 = time.monotonic()
        assert http("POST", f"{u}/generate", {"text": "x"})[0] == 200
        took.append(time.monotonic() - t0)
    assert took[0] >= 0.8
    assert took[1] < 0.5  # the option (0) wins over the environment (0.8)


def test_stopped_engine_drops_in_flight_requests(engine: Callable[..., Proc]) -> None:
    port = free_port()
    url = f"http://{HOST}:{port}"
    p = engine("dying", port, "--rehearsal-request-delay", "30")
    wait_healthy(url, p)
    out: dict[str, Any] = {}
    t = threading.Thread(target=_timed_request, args=(out, "gen", "POST", f"{url}/generate",
                                                      {"text": "x"}))
    t.start()
    wait_until(lambda: _loads(url) == (1, 1), "the request to be in flight", p)
    t0 = time.monotonic()
    assert p.stop() == 0
    assert time.monotonic() - t0 < 5  # SIGTERM does not wait for the 30 s request
    t.join(timeout=WAIT)
    status, exc, secs = out["gen"]
    assert status is None and isinstance(exc, OSError), out  # no answer at all, not a 200
    assert secs < 10
    assert "dropped an in-flight POST /generate unanswered" in p.text()


def test_bad_delays_exit_2(tmp_path: Path) -> None:
    base = ("--catalog", str(CATALOG), "--model-path", "m", "--port", str(free_port()))
    neg = run_rehearsal(*base, "--rehearsal-request-delay", "-1")
    assert neg.returncode == 2
    assert "--rehearsal-request-delay expects a finite number of seconds >= 0, got '-1'" in \
        neg.stderr
    word = run_rehearsal(*base, "--rehearsal-startup-delay", "soon")
    assert word.returncode == 2
    assert "--rehearsal-startup-delay expects a number of seconds, got 'soon'" in word.stderr
    env = dict(os.environ, SGLGEN_REHEARSAL_REQUEST_DELAY="inf")
    inf = run_rehearsal(*base, env=env)
    assert inf.returncode == 2
    assert "SGLGEN_REHEARSAL_REQUEST_DELAY expects a finite number of seconds >= 0, got 'inf'" \
        in inf.stderr


def test_sglgen_catalog_env_and_bad_flags_exit_2(tmp_path: Path) -> None:
    env = dict(os.environ, SGLGEN_CATALOG=str(CATALOG))
    bad = run_rehearsal("--model-path", "m", "--tp-size", "two", env=env)
    assert bad.returncode == 2
    assert "argument --tp-size/--tensor-parallel-size: invalid int value: 'two'" in bad.stderr
    unknown = run_rehearsal("--catalog", str(CATALOG), "--model-path", "m", "--no-such-flag")
    assert unknown.returncode == 2 and "unrecognized arguments: --no-such-flag" in unknown.stderr
    choice = run_rehearsal("--catalog", str(CATALOG), "--model-path", "m",
                           "--disaggregation-mode", "both")
    assert choice.returncode == 2 and "invalid choice: 'both'" in choice.stderr
    missing = run_rehearsal("--catalog", str(CATALOG), "--tp-size", "1")
    assert missing.returncode == 2 and "--model-path/--model" in missing.stderr
    env.pop("SGLGEN_CATALOG")
    no_catalog = run_rehearsal("--model-path", "m", env=env)
    assert no_catalog.returncode == 2 and "--catalog FILE or SGLGEN_CATALOG" in no_catalog.stderr
    role = run_rehearsal("--catalog", str(CATALOG), "--model-path", "m",
                         "--rehearsal-role", "prefill")
    assert role.returncode == 2
    assert "--rehearsal-role prefill but the SGLang flags make a regular engine" in role.stderr


def test_port_in_use_fails_loudly() -> None:
    with socket.socket() as s:
        s.bind((HOST, 0))
        s.listen(1)
        port = s.getsockname()[1]
        proc = run_rehearsal("--catalog", str(CATALOG), "--model-path", "m",
                             "--port", str(port))
    assert proc.returncode == 2 and f"cannot bind --host/--port on {HOST}:{port}" in proc.stderr


# -- prefill / decode -----------------------------------------------------------------------------


def test_pd_bootstrap_handshake(engine: Callable[..., Proc]) -> None:
    pport, dport, bport = free_port(), free_port(), free_port()
    prefill = engine("p0", pport, "--disaggregation-mode", "prefill",
                     "--disaggregation-bootstrap-port", str(bport),
                     "--rehearsal-role", "prefill", "--rehearsal-kv-timeout", "2")
    decode = engine("d0", dport, "--disaggregation-mode", "decode", "--rehearsal-role", "decode")
    purl, durl = f"http://{HOST}:{pport}", f"http://{HOST}:{dport}"
    wait_healthy(purl, prefill)
    wait_healthy(durl, decode)
    boot = {"bootstrap_host": HOST, "bootstrap_port": bport}

    # Like a PD router: both halves of room 11 at once (the decode half first, on purpose).
    result: dict[str, Any] = {}
    t = threading.Thread(target=lambda: result.update(
        decode=http("POST", f"{durl}/generate", {"text": "x", **boot, "bootstrap_room": 11})))
    t.start()
    status, out = http("POST", f"{purl}/generate", {"text": "x", **boot, "bootstrap_room": 11})
    t.join(timeout=WAIT)
    assert status == 200 and out["sgl_gen"]["role"] == "prefill"
    dstatus, dout = result["decode"]
    assert dstatus == 200 and dout["text"] == "rehearsal d0"
    assert dout["sgl_gen"]["prefill"] == [{"engine_id": "p0",
                                          "bootstrap": f"http://{HOST}:{bport}"}]

    # The bootstrap server named by the request is not there: a loud 5xx naming the address.
    wrong = free_port()
    status, err = http("POST", f"{durl}/generate", {"text": "x", "bootstrap_host": HOST,
                                                   "bootstrap_port": wrong, "bootstrap_room": 12})
    assert status == 502
    assert f"prefill bootstrap server http://{HOST}:{wrong}" in err["error"]["message"]
    assert "unreachable" in err["error"]["message"]
    assert f"http://{HOST}:{wrong}" in decode.text()  # logged too

    # The prefill half of the room never arrives (the router sent it elsewhere).
    status, err = http("POST", f"{durl}/generate", {"text": "x", **boot, "bootstrap_room": 13})
    assert status == 502 and "never received the prefill half of bootstrap room 13" in \
        err["error"]["message"]

    # An HTTP port that is not a bootstrap server; a decode reached without a PD router.
    status, err = http("POST", f"{durl}/generate", {"text": "x", "bootstrap_host": HOST,
                                                   "bootstrap_port": dport, "bootstrap_room": 1})
    assert status == 502
    status, err = http("POST", f"{durl}/generate", {"text": "x"})
    assert status == 502 and "without bootstrap_host/bootstrap_port" in err["error"]["message"]


# -- multi-node -----------------------------------------------------------------------------------


def test_multinode_rank1_waits_for_rank0(engine: Callable[..., Proc]) -> None:
    port0, port1, dist = free_port(), free_port(), free_port()
    common = ("--tp-size", "16", "--nnodes", "2", "--dist-init-addr", f"{HOST}:{dist}")
    url0, url1 = f"http://{HOST}:{port0}", f"http://{HOST}:{port1}"
    rank1 = engine("mn", port1, *common, "--node-rank", "1")
    wait_until(lambda: status_of(f"{url1}/health") is not None, "rank 1 to bind", rank1)
    assert status_of(f"{url1}/health") == 503
    wait_until(lambda: "waiting for node rank 0" in rank1.text(), "rank 1 to try rank 0", rank1)
    assert status_of(f"{url1}/health") == 503  # still: nothing to join yet

    rank0 = engine("mn", port0, *common, "--node-rank", "0")
    wait_healthy(url1, rank1)
    wait_healthy(url0, rank0)
    # Rank >= 1 is SGLang's dummy health server: /health only.
    assert status_of(f"{url1}/health_generate") == 200
    assert http("POST", f"{url1}/generate", {"text": "x"})[0] == 404
    assert http("GET", f"{url1}/server_info")[0] == 404
    status, out = http("POST", f"{url0}/generate", {"text": "x"})
    assert status == 200 and out["sgl_gen"]["engine_id"] == "mn"

    # A rank of another engine shape is refused and exits 1.
    stray = engine("mn", free_port(), "--tp-size", "8", "--nnodes", "2", "--node-rank", "1",
                   "--dist-init-addr", f"{HOST}:{dist}")
    stray.popen.wait(timeout=WAIT)
    assert stray.popen.returncode == 1 and "tp_size differs" in stray.text()

    # Rank 0 goes away: rank 1 reports unhealthy again.
    assert rank0.stop() == 0
    wait_until(lambda: status_of(f"{url1}/health") == 503, "rank 1 to notice", rank1)


def test_multinode_rank0_waits_for_all_ranks(engine: Callable[..., Proc]) -> None:
    port0, dist = free_port(), free_port()
    url0 = f"http://{HOST}:{port0}"
    rank0 = engine("solo", port0, "--nnodes", "2", "--node-rank", "0",
                   "--dist-init-addr", f"{HOST}:{dist}")
    wait_until(lambda: status_of(f"{url0}/health") is not None, "rank 0 to bind", rank0)
    assert status_of(f"{url0}/health") == 503
    engine("solo", free_port(), "--nnodes", "2", "--node-rank", "1",
           "--dist-init-addr", f"{HOST}:{dist}")
    wait_healthy(url0, rank0)


# -- EPD ------------------------------------------------------------------------------------------


def test_language_only_engine_reaches_its_encoder(engine: Callable[..., Proc]) -> None:
    eport, lport = free_port(), free_port()
    enc = engine("enc0", eport, "--encoder-only", "--rehearsal-role", "encoder")
    lang = engine("lang0", lport, "--language-only", "--encoder-urls",
                  f"http://{HOST}:{eport}")
    lurl = f"http://{HOST}:{lport}"
    wait_healthy(f"http://{HOST}:{eport}", enc)
    wait_healthy(lurl, lang)
    status, out = http("POST", f"{lurl}/generate", {"text": "x"})
    assert status == 200
    assert out["sgl_gen"]["encoder"] == {"engine_id": "enc0", "url": f"http://{HOST}:{eport}"}

    gone = free_port()
    lang2 = engine("lang1", free_port(), "--language-only", "--encoder-urls",
                   f"http://{HOST}:{gone}")
    url2 = f"http://{HOST}:{lang2.popen.args[lang2.popen.args.index('--port') + 1]}"
    wait_healthy(url2, lang2)
    status, err = http("POST", f"{url2}/generate", {"text": "x"})
    assert status == 502 and f"encoder http://{HOST}:{gone}" in err["error"]["message"]


# -- the real sglang-router 0.3.2 ------------------------------------------------------------------


def _router(spawn: Callable[..., Proc], port: int, *args: str,
            impl: str = "sglang-router") -> Proc:
    """Start a real router: sglang-router 0.3.2 here, or smg from $SGLGEN_SMG_PYTHON's venv
    (its console scripts clash with sglang-router's, so it lives in its own venv)."""
    if impl == "smg":
        python = need_python("SGLGEN_SMG_PYTHON", "smg==1.13.0")
        module = "smg.launch_router"
    else:
        pytest.importorskip("sglang_router", reason="pip install sglang-router==0.3.2")
        python, module = sys.executable, "sglang_router.launch_router"
    return spawn([python, "-m", module, "--host", HOST, "--port", str(port),
                  "--prometheus-port", str(free_port()), *args], impl)


def _workers_ready(url: str, n: int) -> bool:
    try:
        status, body = http("GET", f"{url}/workers", timeout=2)
    except OSError:
        return False
    workers = body.get("workers", []) if status == 200 and isinstance(body, dict) else []
    return len(workers) == n and all(w.get("is_healthy") for w in workers)


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["sglang-router", "smg"])
def test_real_router_round_robin(engine: Callable[..., Proc], spawn: Callable[..., Proc],
                                 impl: str, tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    engines = [engine(f"rr{i}", port) for i, port in enumerate(ports)]
    for port, p in zip(ports, engines, strict=True):
        wait_healthy(f"http://{HOST}:{port}", p)
    rport = free_port()
    rurl = f"http://{HOST}:{rport}"
    # Engines are healthy before the router starts, as deploy does it: smg retries a worker
    # whose first health check failed only after a long backoff.
    router = _router(spawn, rport, "--policy", "round_robin", "--worker-urls",
                     *(f"http://{HOST}:{port}" for port in ports), impl=impl)
    wait_until(lambda: _workers_ready(rurl, 2), "the router to register 2 workers", router)

    served = Counter()
    for i in range(10):
        status, out = http("POST", f"{rurl}/generate", {"text": f"request {i}"})
        assert status == 200, out
        served[out["sgl_gen"]["engine_id"]] += 1
    assert served == {"rr0": 5, "rr1": 5}
    # smg routes by model id: the served model name (the model path here).
    status, chat = http("POST", f"{rurl}/v1/chat/completions",
                        {"model": str(tmp_path), "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200, chat
    assert chat["choices"][0]["message"]["content"].startswith("rehearsal rr")
    # What the router learned from /server_info and /model_info during registration.
    _, workers = http("GET", f"{rurl}/workers")
    worker = workers["workers"][0]
    meta = worker.get("metadata") or worker.get("labels")  # sglang-router | smg
    assert meta["tp_size"] == "1" and meta["dp_size"] == "1"
    assert meta["model_path"] == worker["model_id"]


@pytest.mark.slow
@pytest.mark.parametrize("impl", ["sglang-router", "smg"])
def test_real_router_pd(engine: Callable[..., Proc], spawn: Callable[..., Proc], impl: str,
                        tmp_path: Path) -> None:
    pport, dport, bport = free_port(), free_port(), free_port()
    prefill = engine("pfx", pport, "--disaggregation-mode", "prefill",
                     "--disaggregation-bootstrap-port", str(bport))
    decode = engine("dcx", dport, "--disaggregation-mode", "decode")
    wait_healthy(f"http://{HOST}:{pport}", prefill)
    wait_healthy(f"http://{HOST}:{dport}", decode)
    rport = free_port()
    rurl = f"http://{HOST}:{rport}"
    router = _router(spawn, rport, "--pd-disaggregation",
                     "--prefill", f"http://{HOST}:{pport}", str(bport),
                     "--decode", f"http://{HOST}:{dport}", impl=impl)
    wait_until(lambda: _workers_ready(rurl, 2), "the PD router to register 2 workers", router)
    # (sglang-router 0.3.2's PD /generate rejects batched "text" lists with 422 itself.)
    for i in range(4):
        status, out = http("POST", f"{rurl}/generate", {"text": f"request {i}"})
        assert status == 200, out
        assert out["text"] == "rehearsal dcx"
        assert out["sgl_gen"]["prefill"][0]["engine_id"] == "pfx"
    assert prefill.text().count("GET /route?room=") == 4  # each decode half met its prefill
    status, chat = http("POST", f"{rurl}/v1/chat/completions",
                        {"model": str(tmp_path), "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and chat["sgl_gen"]["prefill"][0]["engine_id"] == "pfx"
