"""A steady request loop through routers, for the rolling-deploy tests and benchmark: a client
with no retries, so every request a rollout loses is counted.

    with Load({"chat": "http://10.207.6.11:30000", "judge": "http://10.207.6.14:30000"}) as load:
        load.wait_ok(1)          # every router has answered at least once
        ...                      # deploy, restart, ...
    assert load.summary()["total"]["failed"] == 0, load.failures("judge")

Each router gets ``threads_per_router`` threads; each thread sends ``POST {url}/generate`` with
``{"text": "hi", "sampling_params": {"max_new_tokens": 1}}``, one request after another, each with
its own connection and a 30 s timeout, optionally paced so that the router gets at most ``rate``
requests per second (all its threads together). A cache-aware router (sglang-router's default
policy) sends the same text to the same engine; ``spread=True`` makes every text different
(16 hex digits of a hash of the request's number, then `` hi``; no shared prefix to match) so
that it spreads the load over all of a model's engines. A request fails when it raises (connection
refused or reset, timeout, ...), answers anything but HTTP 200, or answers 200 with a body that is
not the rehearsal engine's (no ``sgl_gen`` block naming the engine). Leaving the ``with`` block
stops the threads: each finishes (and records) the request it has in flight, then exits.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from types import TracebackType
from typing import NamedTuple

SAMPLING = {"max_new_tokens": 1}
TIMEOUT = 30.0  # seconds, per request
EXCERPT = 200  # characters of a failed answer's body kept


class Failure(NamedTuple):
    """One failed request: when it ended (time.monotonic()) and what went wrong."""

    at: float
    error: str


class _Router:
    """One router's counters (guarded by Load's lock) and its pacing schedule."""

    def __init__(self, name: str, url: str, interval: float | None) -> None:
        self.name, self.url, self.interval = name, url.rstrip("/"), interval
        self.sent = self.ok = 0
        self.failures: list[Failure] = []
        self.engines: Counter[str] = Counter()
        self.next_slot = 0.0


def _text(n: int) -> str:
    """The text of request ``n`` with ``spread``: unlike its neighbours from the first character."""
    return hashlib.sha256(str(n).encode()).hexdigest()[:16] + " hi"


def _attempt(url: str, text: str) -> tuple[str | None, str | None]:
    """Send one request: (engine id, None) on success, (None, what went wrong) on failure."""
    body = json.dumps({"text": text, "sampling_params": SAMPLING}).encode()
    req = urllib.request.Request(f"{url}/generate", data=body, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        try:
            detail = exc.read().decode(errors="replace")
        except OSError as read_exc:
            detail = f"<body unreadable: {read_exc!r}>"
        return None, f"HTTP {exc.code}: {detail[:EXCERPT]}"
    except Exception as exc:  # noqa: BLE001 - every failure counts, whatever it is
        return None, repr(exc)
    text = raw.decode(errors="replace")
    if status != 200:
        return None, f"HTTP {status}: {text[:EXCERPT]}"
    try:
        doc = json.loads(text)
    except ValueError:
        return None, f"HTTP 200 but not JSON: {text[:EXCERPT]}"
    ident = doc.get("sgl_gen") if isinstance(doc, dict) else None
    if not isinstance(ident, dict) or not isinstance(ident.get("engine_id"), str):
        return None, f"HTTP 200 without the rehearsal engine's sgl_gen block: {text[:EXCERPT]}"
    return ident["engine_id"], None


class Load:
    """A constant request load through every router while the ``with`` block runs."""

    def __init__(self, routers: dict[str, str], rate: float | None = None,
                 threads_per_router: int = 2, spread: bool = False) -> None:
        if not routers:
            raise ValueError("Load needs at least one router")
        if "total" in routers:
            raise ValueError("'total' is the name of summary()'s totals, not a router name")
        if rate is not None and not rate > 0:
            raise ValueError(f"rate must be > 0 requests/s, got {rate!r}")
        if threads_per_router < 1:
            raise ValueError(f"threads_per_router must be >= 1, got {threads_per_router!r}")
        interval = None if rate is None else 1.0 / rate
        self._routers = {name: _Router(name, url, interval) for name, url in routers.items()}
        self._threads_per_router = threads_per_router
        self._spread = spread
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.started: float | None = None  # time.monotonic() when the threads started
        self.stopped: float | None = None  # ... and when the last one had finished

    # -- the loop ------------------------------------------------------------------------------

    def __enter__(self) -> Load:
        if self.started is not None:
            raise RuntimeError("a Load runs once")
        self.started = time.monotonic()
        for r in self._routers.values():
            r.next_slot = self.started
            for i in range(self._threads_per_router):
                t = threading.Thread(target=self._run, args=(r,), daemon=True,
                                     name=f"load-{r.name}-{i}")
                self._threads.append(t)
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop sending; wait for the requests in flight (at most the 30 s timeout)."""
        self._stop.set()
        for t in self._threads:
            t.join(TIMEOUT + 10)
            if t.is_alive():
                raise RuntimeError(f"{t.name} did not stop within {TIMEOUT + 10:g}s")
        if self.stopped is None:
            self.stopped = time.monotonic()

    def _run(self, r: _Router) -> None:
        while not self._stop.is_set():
            if r.interval is not None:
                with self._lock:  # the router's next free slot; never a burst to catch up
                    slot = max(r.next_slot, time.monotonic())
                    r.next_slot = slot + r.interval
                if self._stop.wait(max(0.0, slot - time.monotonic())):
                    return
            with self._lock:
                r.sent += 1
                n = r.sent
            engine, error = _attempt(r.url, _text(n) if self._spread else "hi")
            with self._lock:
                if error is None:
                    r.ok += 1
                    r.engines[str(engine)] += 1
                else:
                    r.failures.append(Failure(time.monotonic(), error))

    # -- what happened -------------------------------------------------------------------------

    def _router(self, name: str) -> _Router:
        if name not in self._routers:
            raise KeyError(f"no router {name!r} in this Load (routers: "
                           f"{', '.join(self._routers)})")
        return self._routers[name]

    def summary(self) -> dict[str, dict[str, int]]:
        """``{router: {"sent", "ok", "failed"}, ..., "total": {...}}``. While running, ``sent``
        also counts the requests in flight (sent = ok + failed once stopped)."""
        out: dict[str, dict[str, int]] = {}
        with self._lock:
            for name, r in self._routers.items():
                out[name] = {"sent": r.sent, "ok": r.ok, "failed": len(r.failures)}
        out["total"] = {k: sum(v[k] for v in out.values()) for k in ("sent", "ok", "failed")}
        return out

    def failures(self, router: str) -> list[Failure]:
        """The router's failed requests, in the order they ended."""
        r = self._router(router)
        with self._lock:
            return sorted(r.failures)

    def failure_window(self, router: str) -> tuple[float, float] | None:
        """(first, last) failure of the router, in seconds since the load started; None when
        none of its requests failed."""
        fails = self.failures(router)
        if not fails:
            return None
        assert self.started is not None
        return fails[0].at - self.started, fails[-1].at - self.started

    def engines(self, router: str) -> Counter[str]:
        """How many of the router's successful requests each engine (engine id) answered."""
        r = self._router(router)
        with self._lock:
            return Counter(r.engines)

    def wait_ok(self, n: int = 1, timeout: float = 30.0) -> None:
        """Block until every router has answered ``n`` requests successfully; AssertionError
        (with the failures so far) when that takes longer than ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            summary = self.summary()
            short = [name for name in self._routers if summary[name]["ok"] < n]
            if not short:
                return
            if time.monotonic() >= deadline or self._stop.is_set():
                detail = "; ".join(f"{name}: {summary[name]} {self.failures(name)[-3:]}"
                                   for name in short)
                raise AssertionError(f"routers without {n} successful request(s) after "
                                     f"{timeout:g}s: {detail}")
            time.sleep(0.05)

    def report(self) -> str:
        """One line per router and the totals: sent / ok / failed and the failure window."""
        lines = []
        summary = self.summary()
        for name in [*self._routers, "total"]:
            s = summary[name]
            line = f"{name}: {s['sent']} sent, {s['ok']} ok, {s['failed']} failed"
            window = self.failure_window(name) if name != "total" else None
            if window is not None:
                line += f" (failures from {window[0]:.2f}s to {window[1]:.2f}s: " \
                        f"{self.failures(name)[0].error})"
            lines.append(line)
        return "\n".join(lines)

