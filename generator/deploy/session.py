"""A deploy session: the open connections to the selected hosts, and what runs on them through
the host agent: probe, poll and the health-gated wait."""

from __future__ import annotations

import json
import shlex
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from generator.deploy.decide import Remote
from generator.deploy.spec import LOG_TAIL, MANIFEST, Echo, HostSpec, Target, UnitSpec
from generator.deploy.transport import Host, SshOptions, agent_command, parallel
from generator.errors import DeployError, SglGenError
from generator.redact import redact

_MAX_FOREIGN = 10_000  # files not sgl-gen's that a probe lists (a data directory can hold millions)


def supervisor_args(spec: HostSpec, deployment: str) -> dict[str, Any]:
    """What the host agent needs to read the units' states under the host's supervisor."""
    return {"kind": spec.supervisor, "deployment": deployment,
            "services": {u.name: u.service for u in spec.units}}


@dataclass
class Session:
    target: Target
    opts: SshOptions
    echo: Echo
    only: tuple[str, ...] = ()  # --hosts
    hosts: list[Host] = field(default_factory=list)
    # hosts outside --hosts connected only to call their routers' APIs (nothing changes there)
    api_only: tuple[str, ...] = ()
    aux: list[Host] = field(default_factory=list)

    def selected(self) -> list[HostSpec]:
        if not self.only:
            return list(self.target.hosts)
        names = {h.host for h in self.target.hosts}
        unknown = [h for h in self.only if h not in names]
        if unknown:
            raise SglGenError(f"--hosts: unknown host(s) {', '.join(unknown)} "
                              f"(hosts: {', '.join(sorted(names))})", exit_code=2)
        return [h for h in self.target.hosts if h.host in self.only]

    def __enter__(self) -> Session:
        specs = self.selected()
        self.hosts = [Host(s, s.agent_python or self.target.python, self.opts, self.echo)
                      for s in specs]
        names = {s.host for s in specs}
        self.aux = [Host(s, s.agent_python or self.target.python, self.opts, self.echo)
                    for s in self.target.hosts if s.host in self.api_only and s.host not in names]
        self.echo(f"connecting to {len(self.hosts)} host(s)"
                  + (f" (and {len(self.aux)} for their routers' APIs only)" if self.aux else ""))
        try:
            parallel(self.hosts + self.aux, lambda h: h.connect())
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for h in self.hosts + self.aux:
            h.close()

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts + self.aux if h.name == name)

    def has(self, name: str) -> bool:
        return any(h.name == name for h in self.hosts + self.aux)

    def sup(self, h: Host) -> dict[str, Any]:
        return supervisor_args(h.spec, self.target.name)

    def probe(self, gpus: bool = False, pull: bool = False, checks: bool = False
              ) -> dict[str, Remote]:
        """Every selected host's probe; ``pull`` (deploy --pull): a container host pulls its
        image first (before anything stops); ``checks``: also what its engines will meet there
        (hostagent.host_checks: SGLang version, model paths, GPUs in use, devices)."""
        def one(h: Host) -> Remote:
            modules = set()
            for u in h.spec.units if h.spec.container is None else ():  # (the image's)
                if u.kind == "router":
                    script = self._script(u)
                    modules.add("smg" if " -m smg.launch_router" in script else "sglang_router")
                elif not self.target.rehearse:
                    modules.add("sglang")
            args = {"root": h.spec.root, "modules": sorted(modules), "units": [
                u.name for u in h.spec.units], "gpus": gpus and not self.target.rehearse and any(
                u.kind == "engine" for u in h.spec.units), "manifest": MANIFEST,
                "want": sorted(h.spec.files), "max_files": _MAX_FOREIGN,
                "secrets": self.target.secrets_env_file, "supervisor": self.sup(h),
                "unit_files": [rel.split("/", 1)[1] for rel in h.spec.systemd_files]}
            engines = any(u.kind == "engine" for u in h.spec.units)
            if checks and engines:
                args["needs"] = h.spec.needs
                args["sglang"] = h.spec.container is None
                args["deployment"] = self.target.name
            c = h.spec.container
            if c is not None:
                args["container"] = {"kind": c["kind"], "image": c["image"],
                                     "python": self.target.python, "pull": pull,
                                     "deployment": self.target.name}
            got = h.py("probe", args, "probe")
            image_id = ((got.get("container") or {}).get("image") or {}).get("id")
            if image_id:
                h.spec.image["id"] = str(image_id)
            return Remote(h, got)
        return {r.host.name: r for r in parallel(self.hosts, one)}

    def _script(self, u: UnitSpec) -> str:
        h = next(x for x in self.target.hosts if x.host == u.host)
        return h.files[u.files[0]][0].decode("utf-8", "replace")

    def poll(self, units: dict[str, list[UnitSpec]], urls: dict[str, dict[str, str]],
             tails: dict[str, list[str]] | None = None,
             auth: dict[str, dict[str, str]] | None = None,
             last_exit: bool = False, containers: bool = False) -> dict[str, dict[str, Any]]:
        """``auth``: per host, url key -> the variable of the router's --api-key;
        ``containers``: on container hosts, also each unit's container (``<kind> inspect``)."""
        names = sorted(set(units) | set(urls) | set(tails or {}))

        def one(name: str) -> tuple[str, dict[str, Any]]:
            h = self.host(name)
            return name, h.py("poll", {"root": h.spec.root,
                                       "units": [u.name for u in units.get(name, [])],
                                       "urls": urls.get(name, {}),
                                       "auth": (auth or {}).get(name, {}),
                                       "secrets": self.target.secrets_env_file,
                                       "tails": (tails or {}).get(name, []),
                                       "lines": LOG_TAIL, "supervisor": self.sup(h),
                                       "manifest": MANIFEST, "last_exit": last_exit,
                                       **({"container": {
                                           "kind": h.spec.container["kind"],
                                           "deployment": self.target.name}}
                                          if containers and h.spec.container else {})},
                              "health check")
        return dict(parallel(names, one))

    def end_watch(self, token: str, hosts: Iterable[str] | None = None) -> None:
        """Remove the token's files (watch: the start helpers exit; abort; out) on the hosts
        where it was used (default: all), in parallel, one command each; a host that cannot be
        reached keeps them until the helpers' own timeout."""
        names = set(hosts) if hosts is not None else {h.name for h in self.hosts}

        def one(h: Host) -> None:
            try:
                h.run(f"rm -f {shlex.quote(h.spec.root)}/run/.deploy-{token}.*", "cleanup",
                      check=False)
            except SglGenError:
                pass
        parallel([h for h in self.hosts if h.conn is not None and h.name in names], one)


def tail_text(lines: list[str] | None, journal: bool = False) -> str:
    if lines is None:
        return "    (no log)"
    empty = ("    (no journal lines: a non-root user's units have a journal of their own only with "
             "persistent storage, /var/log/journal on the host)" if journal else "    (empty log)")
    return "\n".join(f"    {redact(x)}" for x in lines) or empty


def log_where(h: Host, unit: str) -> str:
    """Where a unit's output goes, for messages."""
    if h.spec.supervisor == "systemd":
        svc = next((u.service for u in h.spec.units if u.name == unit), unit)
        return f"the journal of {svc}"
    return f"{h.spec.root}/logs/{unit}.log"


class _Lines:
    """A file-like sink for a remote command's stdout that hands over whole lines."""

    def __init__(self, on_line: Any):
        self.on_line, self.buf = on_line, ""

    def write(self, data: str) -> None:
        self.buf += data
        *done, self.buf = self.buf.split("\n")
        for line in done:
            self.on_line(line)

    def flush(self) -> None:
        pass


def http_text(got: list[Any]) -> str:
    status, body = got
    if status == 0:
        return f"no answer ({body})"
    return f"{status} {json.dumps(body)[:300] if not isinstance(body, str) else body[:300]}"


def workers_ok(u: UnitSpec, got: list[Any]) -> bool:
    status, body = got
    if status != 200 or not isinstance(body, dict):
        return False
    workers = [w for w in body.get("workers", []) if isinstance(w, dict)]
    return sorted(str(w.get("url")) for w in workers) == sorted(u.expected_workers) and all(
        w.get("is_healthy") for w in workers)


def wait(session: Session, what: str, checks: list[tuple[UnitSpec, str]],
         watch: list[UnitSpec], timeout: float, token: str, echo: Echo,
         budget: float | None = None, finish: Iterable[str] = (),
         restarts: dict[str, dict[str, Any]] | None = None) -> None:
    """Wait until every check passes, each host watching its own units with one remote process
    (hostagent's ``wait``) that reports as things happen: fail at once when a watched unit's
    process exits (its exit status and log tail; under systemd, also when it was restarted:
    ``restarts`` has each unit's NRestarts when it was started), or at the deadline; one host
    failing stops the others. On the ``finish`` hosts the waiter then removes the token's files
    (as ``Session.end_watch``)."""
    started = time.monotonic()
    finish = set(finish)
    hosts = sorted({u.host for u, _ in checks} | {u.host for u in watch} | finish)
    total = len(checks)
    lock = threading.Lock()
    state: dict[str, Any] = {"ready": 0, "pending": {u.name for u, _ in checks},
                             "failure": None, "timeouts": {}, "note": started}

    def one(name: str) -> None:
        h = session.host(name)
        root = h.spec.root
        args = {"root": root, "timeout": timeout, "lines": LOG_TAIL,
                "abort": f"{root}/run/.deploy-{token}.abort",
                "checks": {u.name: url for u, url in checks if u.host == name},
                "expected": {u.name: list(u.expected_workers) for u, _ in checks
                             if u.host == name and u.kind == "router"},
                "auth": {u.name: u.api_key_env for u, _ in checks
                         if u.host == name and u.api_key_env},
                "secrets": session.target.secrets_env_file,
                "watch": [u.name for u in watch if u.host == name],
                "supervisor": session.sup(h), "restarts": (restarts or {}).get(name, {}),
                "finish": f".deploy-{token}." if name in finish else None}

        def on_line(line: str) -> None:
            try:
                ev = json.loads(line)
            except ValueError:
                return
            with lock:
                if "ready" in ev:
                    state["ready"] += 1
                    state["pending"].discard(ev["ready"])
                    u = next(u for u, _ in checks if u.name == ev["ready"] and u.host == name)
                    echo(f"  ready   {name} {u.name} {u.url} ({state['ready']}/{total})")
                elif "tick" in ev and time.monotonic() >= state["note"] and state["pending"]:
                    state["note"] = time.monotonic() + 10
                    pend = sorted(state["pending"])
                    echo(f"  waiting {what}: {state['ready']}/{total} after "
                         f"{time.monotonic() - started:.0f}s ({', '.join(pend[:4])}"
                         f"{', ...' if len(pend) > 4 else ''})")
                elif "dead" in ev and state["failure"] is None:
                    state["failure"] = (name, ev)
                elif "timeout" in ev:
                    state["timeouts"][name] = ev
        cmd = agent_command(h.python, "wait", args)
        try:
            h.conn.run(cmd, hide=True, warn=True, in_stream=False, out_stream=_Lines(on_line))
        except Exception as exc:  # noqa: BLE001
            raise DeployError(f"{name}: waiting for {what}: connection failed: "
                              f"{type(exc).__name__}: {exc}") from None
        with lock:
            failed = state["failure"] is not None and state["failure"][0] == name
        if failed:  # stop the other hosts' waiters
            def abort(other: str) -> None:
                if other != name:
                    o = session.host(other)
                    o.run(f": > {shlex.quote(o.spec.root)}/run/.deploy-{token}.abort",
                          "abort wait", check=False)
            parallel(hosts, abort)

    parallel(hosts, one)  # the token's abort file goes in end_watch, with its other files
    failure = state["failure"]
    if failure is not None:
        name, ev = failure
        h = session.host(name)
        ex = ev.get("exit")
        if h.spec.supervisor == "systemd":
            how = (f"exited with status {ex}" if ex is not None and ex >= 0 else
                   f"was killed by signal {-ex}" if ex is not None else "exited")
            how += f" (systemd: {ev.get('active')})"
        else:
            how = f"exited with status {ex}" if ex is not None else (
                "is not running" if ev.get("state") == "stopped" else "exited (status unknown)")
        raise DeployError(f"{name}: {ev['dead']} {how} while waiting for {what}; last lines "
                          f"of {log_where(h, ev['dead'])}:\n"
                          f"{tail_text(ev.get('tail'), h.spec.supervisor == 'systemd')}")
    if state["timeouts"]:
        late = sorted((host, u) for host, ev in state["timeouts"].items() for u in ev["timeout"])
        name, first = late[0]
        ev = state["timeouts"][name]
        got = ev["timeout"][first]
        raise DeployError(
            f"timed out after {budget or timeout:g}s waiting for {what}: "
            + ", ".join(f"{host} {u}" for host, u in late)
            + f"\n{name}: {first}: GET {got[0]} -> {http_text(got[1])}; last lines of "
            f"{log_where(session.host(name), first)}:\n"
            f"{tail_text(ev.get('tail'), session.host(name).spec.supervisor == 'systemd')}")
    if state["pending"]:
        raise DeployError(f"waiting for {what}: no answer about {', '.join(sorted(state['pending']))}")
