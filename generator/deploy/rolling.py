"""``sgl-gen restart --rolling``: engines one at a time behind their routers."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from generator.deploy.session import Session, wait
from generator.deploy.spec import Echo, Target, UnitSpec
from generator.deploy.supervisors import supervisor_for
from generator.deploy.transport import Host, SshOptions, parallel
from generator.errors import DeployError, SglGenError


def call(host: Host, router: UnitSpec, secrets: str | None, method: str, url: str,
          body: Any = None, worker_key: bool = False) -> tuple[int, Any]:
    """One call to ``router``'s API, run on its host, authenticated when it has --api-key;
    ``worker_key``: the host adds that key to ``body`` as the new worker's ``api_key``."""
    got = host.py("http", {"method": method, "url": url, "body": body, "worker_key": worker_key,
                           "auth": router.api_key_env, "secrets": secrets}, f"{method} {url}")
    return int(got[0]), got[1]


def restart_rolling(target: Target, opts: SshOptions, *, echo: Echo, units: tuple[str, ...] = (),
                    timeout: float = 600, drain: float = 2.0,
                    allow_downtime: bool = False) -> list[str]:
    """Restart engines one at a time behind their routers: take the engine out of its router
    (``DELETE /workers/{id}``), let in-flight requests drain, restart every rank, wait for health,
    put it back (``POST /workers``) and wait until the router lists it healthy. An engine that is
    the only worker of its role in its router is refused unless ``allow_downtime``. Returns the
    engine ids restarted, in order."""
    plan_units = target.units()
    by_name = {u.name: u for u in plan_units}
    unknown = [n for n in units if n not in by_name]
    if unknown:
        raise SglGenError(f"unknown unit(s) {', '.join(unknown)} "
                          f"(units: {', '.join(sorted(by_name))})", exit_code=2)
    routers = {u.model: u for u in plan_units if u.kind == "router"}
    engines: dict[str, list[UnitSpec]] = {}
    for u in plan_units:
        if u.engine is not None and (not units or u.name in units):
            engines.setdefault(u.engine, [])
    for u in plan_units:
        if u.engine in engines:
            engines[u.engine].append(u)
    rank0 = {eid: next(u for u in us if u.node_rank == 0) for eid, us in engines.items()}
    sec = target.secrets_env_file
    with Session(target, opts, echo) as s:
        done: list[str] = []
        for eid, us in engines.items():
            r0 = rank0[eid]
            router = routers[r0.model]
            rhost = s.host(router.host)
            eurl = r0.url
            status, body = call(rhost, router, sec, "GET", router.url + "/workers")
            if status != 200 or not isinstance(body, dict):
                raise DeployError(f"{router.host}: {router.name}: GET /workers -> {status} {body}")
            workers = [w for w in body.get("workers", []) if isinstance(w, dict)]
            me = next((w for w in workers if w.get("url") == eurl), None)
            role = (me or {}).get("worker_type", "regular")
            peers = [w for w in workers if w.get("worker_type") == role and w.get("url") != eurl
                     and w.get("is_healthy")]
            if me is not None and not peers and not allow_downtime:
                raise DeployError(f"{eid}: the only healthy {role} worker of {router.name}; "
                                  f"restarting it would leave the router without one "
                                  f"(pass --allow-downtime to restart it anyway)")
            echo(f"  {eid}: remove from {router.name}")
            if me is not None:
                st, b = call(rhost, router, sec, "DELETE", f"{router.url}/workers/{me['id']}")
                if st not in (200, 202, 204):
                    raise DeployError(f"{router.host}: DELETE /workers/{me['id']} -> {st} {b}")
                _wait_workers(rhost, router, sec, eurl, False, timeout,
                              f"{router.name} to drop {eurl}")
                time.sleep(drain)
            add: dict[str, Any] = {"url": eurl, "worker_type": role}
            if me is not None and me.get("bootstrap_port") is not None:
                add["bootstrap_port"] = me["bootstrap_port"]
            token = uuid.uuid4().hex[:12]
            try:
                restarts = _restart_ranks(s, us, timeout + 30, token)
                echo(f"  {eid}: restarted, waiting for {r0.health_url}")
                wait(s, f"{eid} to become healthy", [(r0, str(r0.health_url))], us,
                     timeout, token, echo, restarts=restarts)
            except BaseException:
                if me is not None:  # give it back to its router (which health-checks it):
                    # an engine left out of its router would serve nothing even once it recovers
                    try:
                        call(rhost, router, sec, "POST", router.url + "/workers", add,
                             worker_key=True)
                    except SglGenError:
                        pass
                raise
            finally:
                s.end_watch(token, {u.host for u in us})
            st, b = call(rhost, router, sec, "POST", router.url + "/workers", add,
                          worker_key=True)
            if st not in (200, 201, 202):
                raise DeployError(f"{router.host}: POST /workers {add} -> {st} {b}")
            _wait_workers(rhost, router, sec, eurl, True, timeout,
                          f"{router.name} to list {eurl} as healthy")
            echo(f"  {eid}: back in {router.name}")
            done.append(eid)
        return done


def _restart_ranks(s: Session, us: list[UnitSpec], timeout: float, token: str
                   ) -> dict[str, dict[str, Any]]:
    """Every rank of one engine, each by its host's supervisor; their restart counters as
    started. One rank: ``restart`` (systemd: ``systemctl restart``). Several: every rank stops
    (all hosts at once) before any starts, so no new rank meets an old one."""
    def sup(name: str) -> Any:
        h = s.host(name)
        return supervisor_for(h, s.target.name, h.spec.supervisor)

    if len(us) == 1:
        return {us[0].host: sup(us[0].host).restart([us[0].name], timeout, token)}
    hosts = sorted({u.host for u in us})

    def ranks(name: str) -> list[str]:
        return [u.name for u in sorted(us, key=lambda u: u.node_rank) if u.host == name]

    parallel(hosts, lambda n: sup(n).stop(list(reversed(ranks(n)))))
    return dict(parallel(hosts, lambda n: (n, sup(n).start(ranks(n), timeout, token, None))))


def _wait_workers(host: Host, router: UnitSpec, secrets: str | None, url: str, present: bool,
                  timeout: float, what: str) -> None:
    """Until the router lists ``url`` as a healthy worker (present) or not at all."""
    deadline = time.monotonic() + timeout
    while True:
        status, body = call(host, router, secrets, "GET", router.url + "/workers")
        urls = {str(w.get("url")): bool(w.get("is_healthy")) for w in (body or {}).get("workers", [])
                if isinstance(w, dict)} if isinstance(body, dict) else {}
        if status == 200 and ((urls.get(url) is True) if present else (url not in urls)):
            return
        if time.monotonic() > deadline:
            raise DeployError(f"{host.name}: timed out after {timeout:g}s waiting for {what} "
                              f"(GET /workers -> {status} {json.dumps(body)[:300]})")
        time.sleep(0.3)

