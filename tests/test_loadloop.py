"""tests/loadloop.py, the no-retry request loop of the rollout tests and benchmark, against real
local rehearsal engines (no SSH): what it counts as sent, ok and failed, its pacing, and that
leaving the ``with`` block stops it after the requests in flight."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.loadloop import Load
from tests.test_rehearsal import CATALOG, HOST, REHEARSAL, Proc, free_port, wait_healthy


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Callable[..., tuple[str, Proc]]]:
    """engine(engine_id, *rehearsal options) -> (url, process); stopped when the test ends."""
    procs: list[Proc] = []

    def start(engine_id: str, *options: str, wait: bool = True) -> tuple[str, Proc]:
        port = free_port()
        p = Proc([sys.executable, str(REHEARSAL), "--catalog", str(CATALOG), "--rehearsal-id",
                  engine_id, "--model-path", str(tmp_path), "--host", HOST, "--port", str(port),
                  *options], tmp_path / f"{engine_id}.log")
        procs.append(p)
        url = f"http://{HOST}:{port}"
        if wait:
            wait_healthy(url, p)
        return url, p

    try:
        yield start
    finally:
        for p in procs:
            p.stop()


TEXTS: list[str] = []  # what the impostor received (the "text" of each request)


@pytest.fixture
def impostor() -> Iterator[str]:
    """A server that is not a rehearsal engine: /ok/generate answers 200 without the sgl_gen
    block, /boom/generate answers 500. Each request's "text" goes to TEXTS."""
    TEXTS.clear()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (stdlib name)
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            assert body["sampling_params"] == {"max_new_tokens": 1}
            TEXTS.append(body["text"])
            status, body = ((200, {"text": "hello"}) if self.path == "/ok/generate"
                            else (500, {"error": "exploded on purpose"}))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    server = ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    t.start()
    try:
        yield f"http://{HOST}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        t.join()


def test_counts_answers_and_refused_connections(engine) -> None:
    url, _ = engine("e0")
    refused = f"http://{HOST}:{free_port()}"  # nothing listens there
    with Load({"good": url, "down": refused}, threads_per_router=2) as load:
        deadline = time.monotonic() + 20
        while load.summary()["good"]["ok"] < 20 or load.summary()["down"]["failed"] < 5:
            assert time.monotonic() < deadline, load.report()
            time.sleep(0.02)
        # a router that never answers: wait_ok gives up, naming it and its failures
        with pytest.raises(AssertionError, match=r"routers without 1 successful request\(s\) "
                                                 r"after 0.2s: down: .*Connection refused"):
            load.wait_ok(1, timeout=0.2)
    elapsed = time.monotonic() - (load.started or 0)
    s = load.summary()
    assert s["good"]["failed"] == 0 and s["good"]["ok"] == s["good"]["sent"] >= 20
    assert s["down"]["ok"] == 0 and s["down"]["failed"] == s["down"]["sent"] >= 5
    assert s["total"] == {k: s["good"][k] + s["down"][k] for k in ("sent", "ok", "failed")}
    assert load.failures("good") == [] and load.failure_window("good") is None
    assert load.engines("good") == {"e0": s["good"]["ok"]}
    fails = load.failures("down")
    assert len(fails) == s["down"]["failed"]
    assert all("Connection refused" in f.error for f in fails), fails[:3]
    assert [f.at for f in fails] == sorted(f.at for f in fails)
    window = load.failure_window("down")
    assert window is not None and 0 <= window[0] <= window[1] <= elapsed
    assert "down: " in load.report() and "Connection refused" in load.report()
    with pytest.raises(KeyError, match="no router 'nope'"):
        load.failures("nope")


def test_http_errors_and_foreign_answers_are_failures(engine, impostor) -> None:
    # an engine still loading its weights answers 503, then serves: the failures come first
    url, _ = engine("late", "--rehearsal-startup-delay", "1.5", wait=False)
    routers = {"late": url, "foreign": f"{impostor}/ok", "broken": f"{impostor}/boom"}
    with Load(routers, threads_per_router=1) as load:
        deadline = time.monotonic() + 20
        while load.summary()["late"]["ok"] < 3 or load.summary()["broken"]["failed"] < 3:
            assert time.monotonic() < deadline, load.report()
            time.sleep(0.02)
    s = load.summary()
    late = load.failures("late")
    assert late and s["late"]["ok"] >= 3
    # (while the port is not yet bound: refused; once bound: 503 from the engine)
    assert any(f.error.startswith("HTTP 503: ") and "rehearsal late is starting up" in f.error
               for f in late), late
    window = load.failure_window("late")
    assert window is not None and window[1] >= 1.0  # the startup delay, measured
    assert s["foreign"]["ok"] == 0 and s["foreign"]["failed"] == s["foreign"]["sent"] > 0
    assert all(f.error == 'HTTP 200 without the rehearsal engine\'s sgl_gen block: '
               '{"text": "hello"}' for f in load.failures("foreign"))
    assert s["broken"]["ok"] == 0 and s["broken"]["failed"] == s["broken"]["sent"] >= 3
    assert all(f.error == 'HTTP 500: {"error": "exploded on purpose"}'
               for f in load.failures("broken"))


def test_spread_sends_distinct_texts(impostor) -> None:
    with Load({"same": f"{impostor}/ok"}, threads_per_router=2) as load:
        while load.summary()["same"]["failed"] < 20:
            time.sleep(0.01)
    assert len(TEXTS) == load.summary()["same"]["sent"] and set(TEXTS) == {"hi"}
    TEXTS.clear()
    with Load({"spread": f"{impostor}/ok"}, threads_per_router=2, spread=True) as load:
        while load.summary()["spread"]["failed"] < 20:
            time.sleep(0.01)
    assert len(TEXTS) == load.summary()["spread"]["sent"]
    assert len(set(TEXTS)) == len(TEXTS)  # every request its own text
    assert len({t[0] for t in TEXTS}) > 1 and all(t.endswith(" hi") for t in TEXTS)


def test_rate_paces_each_router(engine) -> None:
    url, _ = engine("paced")
    with Load({"a": url, "b": url}, rate=10, threads_per_router=3) as load:
        time.sleep(1.0)
    s = load.summary()
    # slots at 0, 0.1, ..., 1.0 s: 10 or 11 per router (all its threads together), no burst
    for name in ("a", "b"):
        assert 9 <= s[name]["sent"] <= 12, s
        assert s[name]["ok"] == s[name]["sent"]


def test_exit_waits_for_requests_in_flight(engine) -> None:
    url, _ = engine("slow", "--rehearsal-request-delay", "1.0")
    with Load({"slow": url}, threads_per_router=2) as load:
        load.wait_ok(4, timeout=10)  # two rounds of 2 answered: the third is in flight
        time.sleep(0.3)
        assert load.summary()["slow"] == {"sent": 6, "ok": 4, "failed": 0}
        t0 = time.monotonic()
    took = time.monotonic() - t0
    assert 0.3 <= took < 1.5  # the in-flight requests finished; no new one was started
    assert load.summary()["slow"] == {"sent": 6, "ok": 6, "failed": 0}
    assert load.engines("slow") == {"slow": 6}
    assert load.stopped is not None and load.started is not None
    assert not any(t.name.startswith("load-slow") and t.is_alive()
                   for t in threading.enumerate())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one router"):
        Load({})
    with pytest.raises(ValueError, match="'total' is the name of summary"):
        Load({"total": "http://x"})
    with pytest.raises(ValueError, match="rate must be > 0"):
        Load({"a": "http://x"}, rate=0)
    with pytest.raises(ValueError, match="threads_per_router must be >= 1"):
        Load({"a": "http://x"}, threads_per_router=0)
