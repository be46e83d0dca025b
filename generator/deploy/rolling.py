"""Carrying out a rollout (rollout.py) on the hosts: router membership through the routers' own
API (``GET/POST /workers``, ``DELETE /workers/{id}``, called on the router's host), draining,
restarting every rank of an engine, the health-gated waits; and ``sgl-gen restart --rolling``,
the same batches for engines whose files did not change."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from generator.deploy.decide import decide
from generator.deploy.rollout import Item, Rollout, plan_rollout
from generator.deploy.session import Session, wait
from generator.deploy.spec import Echo, Target
from generator.deploy.supervisors import Supervisor, supervisor_for
from generator.deploy.transport import Host, SshOptions, parallel
from generator.errors import DeployError, SglGenError

#: how often the routers' and engines' APIs are asked while waiting
_POLL = 0.3


def call(host: Host, auth: str | None, secrets: str | None, method: str, url: str,
         body: Any = None, worker_key: bool = False) -> tuple[int, Any]:
    """One call to a router's API (or an engine's), run on ``host``, authenticated with the key
    in the variable ``auth`` (a router's --api-key) when given; ``worker_key``: the host adds
    that key to ``body`` as the new worker's ``api_key``."""
    got = host.py("http", {"method": method, "url": url, "body": body, "worker_key": worker_key,
                           "auth": auth, "secrets": secrets}, f"{method} {url}")
    return int(got[0]), got[1]


def stop_by_supervisor(h: Host, sup: Supervisor, names: list[str], stop_with: dict[str, str],
                       echo: Echo) -> None:
    """Stop the host's units ``names`` (in this order), each by the supervisor that runs it
    now: ``stop_with`` names the other one for units that move to the host's supervisor."""
    own = h.spec.supervisor
    for by in sorted({stop_with.get(n, own) for n in names}):
        these = [n for n in names if stop_with.get(n, own) == by]
        echo(f"  stop    {h.name} {' '.join(these)}" + (f" ({by})" if by != own else ""))
        (sup if by == own else supervisor_for(h, sup.deployment, by, {})).stop(
            these, what=f"stop {' '.join(these)}")


def router_hosts(target: Target, only: tuple[str, ...]) -> tuple[str, ...]:
    """The hosts of the routers of models with engines on ``only`` (what --hosts leaves out but
    a rollout must call)."""
    if not only:
        return ()
    models = {u.model for u in target.units() if u.host in only and u.kind == "engine"}
    return tuple(sorted({u.host for u in target.units() if u.kind == "router"
                         and u.model in models and u.host not in only}))


def live_routers(s: Session) -> dict[str, dict[str, Any]]:
    """The plan's routers that answer ``GET /workers`` (on every connected host): their answer."""
    routers = [u for u in s.target.units() if u.kind == "router" and s.has(u.host)]
    urls: dict[str, dict[str, str]] = {}
    auth: dict[str, dict[str, str]] = {}
    for u in routers:
        urls.setdefault(u.host, {})[u.url + "/workers"] = u.url + "/workers"
        if u.api_key_env:
            auth.setdefault(u.host, {})[u.url + "/workers"] = u.api_key_env
    res = s.poll({}, urls, auth=auth)
    out = {}
    for u in routers:
        status, body = res[u.host]["http"][u.url + "/workers"]
        if status == 200 and isinstance(body, dict):
            out[u.name] = body
    return out


Starter = Callable[[Host, list[str], str], dict[str, Any]]


class Roller:
    """Runs a rollout's steps. ``start(host, units, token)`` starts units on a host (recording
    them in its manifest) and returns their restart counters; ``stop_with``: (host, unit) ->
    the supervisor running it now, when it is not the host's."""

    def __init__(self, s: Session, sups: dict[str, Supervisor], echo: Echo, timeout: float,
                 drain: float, start: Starter, stop_with: dict[tuple[str, str], str] | None = None,
                 known_urls: set[str] | None = None, hosts: set[str] | None = None):
        self.s, self.sups, self.echo, self.timeout, self.drain_s = s, sups, echo, timeout, drain
        self.start_units = start
        self.stop_with = stop_with or {}
        self.routers = {u.name: u for u in s.target.units() if u.kind == "router"}
        self.secrets = s.target.secrets_env_file
        self.known = known_urls or set()  # URLs this deployment's engines have had
        self.stopped: set[tuple[str, str]] = set()  # stopped already (moved supervisor)
        # the hosts whose engines this run made sure of (reconcile adds only theirs)
        self.mine = hosts if hosts is not None else {h.host for h in s.target.hosts}

    # -- the routers' API ---------------------------------------------------------------------
    def api(self, rname: str, method: str, path: str, body: Any = None,
            worker_key: bool = False) -> tuple[int, Any]:
        r = self.routers[rname]
        return call(self.s.host(r.host), r.api_key_env, self.secrets, method, r.url + path, body,
                    worker_key)

    def api_many(self, rname: str, calls: list[dict[str, Any]]) -> list[tuple[int, Any]]:
        """Several calls to the router's API with one SSH command."""
        r = self.routers[rname]
        got = self.s.host(r.host).py("http-many", {
            "calls": calls, "auth": r.api_key_env, "secrets": self.secrets},
            f"{len(calls)} call(s) to {r.url}")
        return [(int(g[0]), g[1]) for g in got]

    def workers(self, rname: str) -> list[dict[str, Any]]:
        status, body = self.api(rname, "GET", "/workers")
        if status != 200 or not isinstance(body, dict):
            raise DeployError(f"{self.routers[rname].host}: {rname}: GET /workers -> {status} "
                              f"{json.dumps(body)[:300]}")
        return [w for w in body.get("workers", []) if isinstance(w, dict)]

    def wait_workers(self, rname: str, present: set[str], absent: set[str], what: str) -> None:
        """Until the router lists every ``present`` URL healthy and none of ``absent``."""
        deadline = time.monotonic() + self.timeout
        while True:
            ws = self.workers(rname)
            urls = {str(w.get("url")): bool(w.get("is_healthy")) for w in ws}
            if all(urls.get(u) is True for u in present) and not absent & set(urls):
                return
            if time.monotonic() > deadline:
                raise DeployError(f"{self.routers[rname].host}: timed out after "
                                  f"{self.timeout:g}s waiting for {rname} to {what} (GET "
                                  f"/workers: {json.dumps(ws)[:300]})")
            time.sleep(_POLL)

    def take_out(self, items: list[Item]) -> list[Item]:
        """``DELETE /workers/{id}`` of every item its router lists (by its URL now and as
        deployed); wait until the routers no longer list them. Returns the items taken out."""
        out = []
        for rname in sorted({i.router for i in items if i.router}):
            mine = [i for i in items if i.router == rname]
            urls = {u for i in mine for u in (i.url, i.old_url) if u}
            listed = [w for w in self.workers(rname) if str(w.get("url")) in urls]
            self.delete(rname, listed)
            if listed:
                self.wait_workers(rname, set(), urls, f"drop {', '.join(sorted(urls))}")
                out += [i for i in mine if {i.url, i.old_url} & {str(w.get("url"))
                                                                 for w in listed}]
        return out

    def delete(self, rname: str, listed: list[dict[str, Any]], why: str = "") -> None:
        if not listed:
            return
        r = self.routers[rname]
        for w in listed:
            self.echo(f"  out     {rname}: {w.get('url')}{why}")
        got = self.api_many(rname, [{"method": "DELETE", "url": f"{r.url}/workers/{w.get('id')}",
                                     "body": None, "worker_key": False} for w in listed])
        for w, (st, b) in zip(listed, got, strict=True):
            if st not in (200, 202, 204):
                raise DeployError(f"{r.host}: {rname}: DELETE /workers/{w.get('id')} -> {st} "
                                  f"{json.dumps(b)[:300]}")

    def drain(self, items: list[Item]) -> None:
        """Until each engine taken out has no request in flight (its ``/get_load``), at most
        ``drain`` seconds; an engine whose load cannot be read gets the whole time."""
        if not items or self.drain_s <= 0:
            return
        t0 = time.monotonic()
        deadline = t0 + self.drain_s
        # the requests the router sent just before it let go of the engine reach it first
        time.sleep(min(0.5, self.drain_s))

        def one(i: Item) -> None:
            host, _ = i.units[0]
            h = self.s.host(host)
            # the engines share their router's key (the router adds it to the workers it adds)
            router = self.routers.get(i.router or "") or next(
                (u for u in self.routers.values() if u.model == i.model), None)
            url = i.old_url or i.url
            while time.monotonic() < deadline:
                st, body = call(h, router.api_key_env if router else None, self.secrets, "GET",
                                url + "/get_load")
                busy = _in_flight(body) if st == 200 else None
                if busy == 0:
                    return
                time.sleep(0.25 if busy is not None else max(0.0, deadline - time.monotonic()))
        parallel(items, one)
        self.echo(f"  drained {', '.join(i.id for i in items)} in {time.monotonic() - t0:.1f}s")

    def put_back(self, items: list[Item]) -> None:
        """``POST /workers`` of every item with a live router that does not list it yet (with
        its bootstrap port, prefill), and wait until the routers list them healthy."""
        for rname in sorted({i.router for i in items if i.router}):
            mine = [i for i in items if i.router == rname]
            listed = {str(w.get("url")) for w in self.workers(rname)}
            bodies: list[dict[str, Any]] = []
            for i in mine:
                if i.url in listed:
                    continue
                body: dict[str, Any] = {"url": i.url, "worker_type": i.role}
                if i.role == "prefill" and i.bootstrap_port is not None:
                    body["bootstrap_port"] = i.bootstrap_port
                self.echo(f"  in      {rname}: {i.url}")
                bodies.append(body)
            r = self.routers[rname]
            got = self.api_many(rname, [{"method": "POST", "url": r.url + "/workers",
                                         "body": b, "worker_key": True} for b in bodies]) \
                if bodies else []
            for body, (st, b) in zip(bodies, got, strict=True):
                if st not in (200, 201, 202):
                    raise DeployError(f"{r.host}: {rname}: POST /workers {json.dumps(body)} -> "
                                      f"{st} {json.dumps(b)[:300]}")
            self.wait_workers(rname, {i.url for i in mine}, set(),
                              f"list {', '.join(i.url for i in mine)} as healthy")

    # -- the engines ----------------------------------------------------------------------
    def stop(self, items: list[Item]) -> None:
        """Every rank of the items (all hosts at once; ranks >= 1 first), each by the
        supervisor that runs it now."""
        per: dict[str, list[str]] = {}
        for i in items:
            for host, unit in reversed(i.units):
                if (host, unit) not in self.stopped:
                    per.setdefault(host, []).append(unit)

        def one(host: str) -> None:
            stop_by_supervisor(self.s.host(host), self.sups[host], per[host],
                               {u: by for (hn, u), by in self.stop_with.items() if hn == host},
                               self.echo)
        parallel(sorted(per), one)

    def start(self, items: list[Item], what: str) -> None:
        """Start every rank (all hosts at once), wait until rank 0 answers /health."""
        specs = [u for i in items for u in i.specs]
        per: dict[str, list[str]] = {}
        for u in specs:
            per.setdefault(u.host, []).append(u.name)
        token = uuid.uuid4().hex[:12]
        try:
            def one(host: str) -> tuple[str, dict[str, Any]]:
                self.echo(f"  start   {host} {' '.join(per[host])}")
                return host, self.start_units(self.s.host(host), per[host], token)
            restarts = dict(parallel(sorted(per), one))
            checks = [(u, str(u.health_url)) for u in specs if u.health_url]
            self.echo(f"waiting for {len(checks)} engine(s) to become healthy ({what})")
            wait(self.s, f"{what} to become healthy", checks, specs, self.timeout, token,
                 self.echo, restarts=restarts)
        finally:
            self.s.end_watch(token, set(per))

    # -- the steps ------------------------------------------------------------------------
    def cycle(self, items: list[Item], what: str, batch: bool = True) -> None:
        """Out of the router, drained, stopped (restarts), started, healthy, back in."""
        self.drain(self.take_out(items))
        self.stop([i for i in items if i.action == "restart"])
        try:
            self.start(items, what)
        except DeployError as exc:
            if not batch:
                raise
            outs = sorted({i.router for i in items if i.router})
            raise DeployError(f"{exc.message}\n(the rollout stopped here: "
                              f"{', '.join(i.id for i in items)} "
                              + (f"left out of {', '.join(outs)}; " if outs else "")
                              + "the rest of the deployment is untouched and serving; fix the "
                                "cause and deploy again: it carries on from here)") from None
        self.put_back(items)

    def remove(self, items: list[Item]) -> None:
        self.drain(self.take_out(items))
        self.stop(items)

    def reconcile(self, rname: str) -> None:
        """Make a router that stays list exactly its engines: ``DELETE`` the workers that were
        this deployment's engines but are not in the plan any more (a worker sgl-gen never put
        there stays, and the final check reports it), ``POST`` the plan's missing ones."""
        r = self.routers[rname]
        ws = self.workers(rname)
        listed = {str(w.get("url")): w for w in ws}
        stale = [w for url, w in listed.items() if url not in r.expected_workers
                 and url in self.known]
        self.delete(rname, stale, " (not in the plan)")
        missing = [u for u in self.s.target.units() if u.kind == "engine" and u.node_rank == 0
                   and u.url in r.expected_workers and u.url not in listed
                   and u.host in self.mine]
        self.put_back([Item(u.engine or u.name, u.model, u.role, "start", [(u.host, u.name)],
                            u.url, router=rname, bootstrap_port=u.bootstrap_port)
                       for u in missing])


def _in_flight(body: Any) -> int | None:
    """Requests running or waiting on an engine, from SGLang's ``/get_load`` (a list per DP
    rank: num_reqs, num_waiting_reqs) or ``/v1/loads`` (loads: num_running_reqs, ...)."""
    rows = body.get("loads") if isinstance(body, dict) else body
    if not isinstance(rows, list) or not rows:
        return None
    n = 0
    for row in rows:
        if not isinstance(row, dict):
            return None
        vals = [row.get(k) for k in ("num_reqs", "num_running_reqs", "num_waiting_reqs")
                if k in row]
        if not vals or not all(isinstance(v, int) for v in vals):
            return None
        n += sum(v for v in vals if isinstance(v, int))
    return n


def run_steps(ro: Rollout, roller: Roller, echo: Echo, skip_removals: bool = False) -> None:
    """The rolling steps in order (the routers' own restarts are the caller's;
    ``skip_removals``: the caller took the leaving engines out already)."""
    for n, st in enumerate(ro.steps, 1):
        ids = ", ".join(i.id for i in st.items)
        if st.kind == "start":
            echo(f"step {n}/{len(ro.steps)}: start {ids}")
            roller.cycle(st.items, "engines", batch=False)
        elif st.kind == "batch":
            echo(f"step {n}/{len(ro.steps)}: {st.model} {st.role}: restart {ids} "
                 f"({st.serving})")
            roller.cycle(st.items, ids)
        elif not skip_removals:
            echo(f"step {n}/{len(ro.steps)}: remove {ids}")
            roller.remove(st.items)


def restart_rolling(target: Target, opts: SshOptions, *, echo: Echo, units: tuple[str, ...] = (),
                    timeout: float = 600, drain: float | None = None,
                    max_unavailable: int | str | None = None,
                    allow_downtime: bool = False) -> list[str]:
    """Restart the engines of ``units`` (default: all) in batches behind their routers, as a
    deploy rolls out a change (rollout.py); the files stay as they are. Returns the engine ids
    restarted, in order."""
    by_name = {u.name: u for u in target.units()}
    unknown = [n for n in units if n not in by_name]
    if unknown:
        raise SglGenError(f"unknown unit(s) {', '.join(unknown)} "
                          f"(units: {', '.join(sorted(by_name))})", exit_code=2)
    routers = [n for n in units if by_name[n].kind == "router"]
    if routers:
        raise SglGenError(f"restart --rolling restarts engines; {', '.join(routers)} "
                          f"{'is a router' if len(routers) == 1 else 'are routers'} (a router "
                          f"restarts with `deploy` when its own settings change, or `down` "
                          f"and `deploy`)", exit_code=2)
    chosen = {u.engine for u in target.units() if u.engine is not None
              and (not units or u.name in units)}
    drain = target.drain if drain is None else drain
    mu = target.max_unavailable if max_unavailable is None else max_unavailable
    with Session(target, opts, echo) as s:
        remotes = s.probe()
        ch = decide(target, remotes)
        live = live_routers(s)
        ro = plan_rollout(target, ch, {}, live, {h.host for h in target.hosts},
                          max_unavailable=mu, drain=drain, allow_downtime=False,
                          only_engines=chosen, force=allow_downtime)
        if ro.refused:
            raise DeployError("refused:\n" + "\n".join(f"  {m}" for m in ro.refused))
        for line in ro.text():
            echo(line)
        sups = {h.name: supervisor_for(h, target.name, h.spec.supervisor,
                                       remotes[h.name].systemd) for h in s.hosts}

        def start(h: Host, names: list[str], token: str) -> dict[str, Any]:
            return sups[h.name].start(names, timeout + 30, token, None)
        roller = Roller(s, sups, echo, timeout, drain, start)
        run_steps(ro, roller, echo)
        return [i.id for st in ro.steps for i in st.items]
