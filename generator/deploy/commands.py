"""The commands: ``deploy``, ``diff``, ``status``, ``down``, ``logs`` (and their tables)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from generator.deploy.changes import Changes, UnitAction
from generator.deploy.decide import (
    Remote,
    container_problems,
    decide,
    host_problems,
    preflight,
)
from generator.deploy.hostfiles import (
    foreign_unit_dir,
    manifest_doc,
    owned_files,
    owned_unit_files,
    upload,
    write_manifest,
)
from generator.deploy.rolling import (
    Roller,
    live_routers,
    router_hosts,
    run_steps,
    stop_by_supervisor,
)
from generator.deploy.rollout import Rollout, plan_rollout
from generator.deploy.session import Session, wait, workers_ok
from generator.deploy.spec import Echo, Target, UnitSpec
from generator.deploy.supervisors import Supervisor, Systemd, supervisor_for
from generator.deploy.transport import Host, SshOptions, parallel
from generator.errors import DeployError, SglGenError
from generator.redact import redact


@dataclass
class Result:
    target: Target
    changes: Changes
    rows: list[dict[str, Any]]
    error: str | None = None
    supervisors: dict[str, str] | None = None  # host -> "systemd (system units in ...)"
    rollout: Rollout | None = None

    def json(self) -> str:
        ch = self.changes
        return json.dumps({
            "deployment": self.target.name, "ok": self.error is None, "error": self.error,
            "units": self.rows,
            "supervisors": self.supervisors or {},
            "files": {h: {"upload": ch.upload.get(h, []), "chmod": ch.chmod.get(h, []),
                          "remove": ch.remove.get(h, []), "keep": ch.keep.get(h, []),
                          "adopt": ch.adopt.get(h, []), "install": ch.install.get(h, []),
                          "uninstall": ch.uninstall.get(h, [])}
                      for h in sorted(ch.upload)},
            "refused": [m for h in sorted(ch.refused) for m in ch.refused[h]],
            "rollout": self.rollout.json() if self.rollout is not None else None,
        }, indent=2, sort_keys=True)


def _sups(s: Session, remotes: dict[str, Remote]) -> dict[str, Supervisor]:
    return {h.name: supervisor_for(h, s.target.name, h.spec.supervisor,
                                   remotes[h.name].systemd) for h in s.hosts}


def supervisor_text(sup: Supervisor) -> str:
    return f"systemd ({sup.where()})" if isinstance(sup, Systemd) else "bash (sgl-gen-host.sh)"


def _supervisors(sups: dict[str, Supervisor]) -> dict[str, str]:
    return {name: supervisor_text(sup) for name, sup in sorted(sups.items())}


def _rows(ch: Changes, phase: str, target: Target) -> list[dict[str, Any]]:
    past = {"start": "started", "restart": "restarted", "stop": "stopped", "none": "unchanged",
            "update": "updated"}
    sup = {h.host: h.supervisor for h in target.hosts}
    return [{"host": a.host, "unit": a.unit, "kind": a.kind, "supervisor": sup.get(a.host),
             "action": a.action if phase == "plan" else past[a.action],
             "reason": a.reason, "was": a.state, "url": a.url} for a in ch.units]


def _stop_phase(s: Session, ch: Changes, sups: dict[str, Supervisor], echo: Echo,
                which: Callable[[UnitAction], bool] | None = None) -> None:
    """Stop routers on every host, then engines: what restarts or goes (``which``: of those,
    these), each by the supervisor that runs it now."""
    for kind in ("router", "engine"):
        def stop(h: Host, kind: str = kind) -> None:
            acts = [a for a in ch.units if a.host == h.name and a.kind == kind
                    and a.action in ("restart", "stop") and a.state in ("running", "dead")
                    and (which is None or which(a))]
            stop_by_supervisor(h, sups[h.name], [a.unit for a in acts],
                               {a.unit: a.stop_with for a in acts if a.stop_with}, echo)
        parallel(s.hosts, stop)


def deploy(target: Target, opts: SshOptions, *, echo: Echo, only: tuple[str, ...] = (),
           timeout: float = 600, dry_run: bool = False, min_free_mb: int = 100,
           adopt: bool = False, max_unavailable: int | str | None = None,
           drain: float | None = None, allow_downtime: bool = False, pull: bool = False,
           accept_image_version: bool = False, accept_sglang_version: bool = False) -> Result:
    """Converge the hosts on the target. Raises DeployError (exit 3) on failure. ``adopt``: a
    root without a manifest is deployed into; its files are kept (and reported). Changes roll
    out engine by engine behind the routers (rollout.py) unless ``allow_downtime``. On
    container hosts, ``pull`` pulls the image first; ``accept_image_version`` deploys an image
    whose SGLang is not the catalog's (with a warning). Unless rehearsing, what the engines
    will meet on each host is checked first (decide.host_problems; ``accept_sglang_version``:
    another SGLang version on a host is a warning)."""
    mu = target.max_unavailable if max_unavailable is None else max_unavailable
    drain = target.drain if drain is None else drain
    with Session(target, opts, echo, only, api_only=router_hosts(target, only)) as s:
        remotes = s.probe(gpus=True, pull=pull, checks=not target.rehearse)
        image_problems, image_warnings = container_problems(target, remotes, pull,
                                                            accept_image_version)
        needs_problems, needs_warnings = host_problems(target, remotes, accept_sglang_version)
        image_problems += needs_problems
        for w in image_warnings + needs_warnings:
            echo(f"warning: {w}")
        ch = decide(target, remotes, adopt)
        live = live_routers(s)
        ro = plan_rollout(target, ch, _deployed_urls(remotes), live, {h.name for h in s.hosts},
                          max_unavailable=mu, drain=drain, allow_downtime=allow_downtime)
        problems = image_problems + preflight(target, remotes, ch, min_free_mb << 20,
                                              stop_all=allow_downtime) + ro.refused
        if problems:
            raise DeployError("preflight failed:\n" + "\n".join(f"  {p}" for p in problems))
        sups = _sups(s, remotes)
        if dry_run:
            return Result(target, ch, _rows(ch, "plan", target), supervisors=_supervisors(sups),
                          rollout=ro)
        n_up = sum(len(v) for v in ch.upload.values())
        echo(f"preflight ok on {len(s.hosts)} host(s); {n_up} file(s) to upload, "
             f"{sum(1 for a in ch.units if a.action != 'none')} unit(s) to change")
        for name, text in _supervisors(sups).items():
            echo(f"  {name}: supervisor {text}")
        if any(a.action != "none" for a in ch.units):
            for line in ro.text():
                echo(line)
        run = _Run(s, target, ch, remotes, sups, echo, timeout)
        known = {url for url in _deployed_urls(remotes).values() if url} | {
            u.url for u in target.units() if u.kind == "engine"}
        roller = Roller(s, sups, echo, timeout, drain, run.start_units,
                        {(a.host, a.unit): a.stop_with for a in ch.units if a.stop_with}, known,
                        {h.name for h in s.hosts})
        if ro.mode == "rolling":  # before the files change: their units leave the render
            for st in ro.steps:
                if st.kind == "remove":
                    echo(f"step {ro.steps.index(st) + 1}/{len(ro.steps)}: remove "
                         f"{', '.join(i.id for i in st.items)}")
                    roller.remove(st.items)
        if ro.mode == "downtime":
            _stop_phase(s, ch, sups, echo)
        else:  # what goes without serving anything: routers of models gone, engines no router
            # lists
            leaving = {u for st in ro.steps if st.kind == "remove" for i in st.items
                       for u in i.units}
            # and units that move to the other supervisor (the old one's files go with the
            # upload): stopped here, started in their step
            _stop_phase(s, ch, sups, echo, lambda a: bool(a.stop_with) or a.action == "stop" and (
                a.kind == "router" or (a.host, a.unit) not in leaving))
            roller.stopped = {(a.host, a.unit) for a in ch.units if a.stop_with}
        parallel(s.hosts, run.put_files)
        if ro.mode == "downtime":
            run.downtime(roller, ro)
        else:
            run_steps(ro, roller, echo, skip_removals=True)
            run.routers(roller, ro)
        return Result(target, ch, _rows(ch, "done", target), supervisors=_supervisors(sups),
                      rollout=ro)


@dataclass(frozen=True)
class CheckResult:
    hosts: tuple[str, ...]
    problems: tuple[str, ...]
    warnings: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {"hosts": list(self.hosts), "ok": not self.problems,
                "problems": list(self.problems), "warnings": list(self.warnings)}


def check(target: Target, opts: SshOptions, *, echo: Echo, only: tuple[str, ...] = (),
          accept_sglang_version: bool = False, accept_image_version: bool = False
          ) -> CheckResult:
    """`sgl-gen check`: what a real deploy's preflight checks on the hosts, changing nothing:
    the interpreters and their SGLang (or the image's), the model paths, the GPUs (present and
    free), network devices, free disk, ports."""
    with Session(target, opts, echo, only) as s:
        remotes = s.probe(gpus=True, checks=True)
        problems, warnings = container_problems(target, remotes, False, accept_image_version)
        p2, w2 = host_problems(target, remotes, accept_sglang_version)
        ch = decide(target, remotes, adopt=True)
        problems += p2 + preflight(target, remotes, ch, 100 << 20)
        return CheckResult(tuple(h.name for h in s.hosts), tuple(problems), tuple(warnings + w2))


def _deployed_urls(remotes: dict[str, Remote]) -> dict[tuple[str, str], str | None]:
    return {(name, unit): r.deployed_url(unit) for name, r in remotes.items()
            for unit in r.records}


class _Run:
    """One deploy's bookkeeping on its hosts: what each runs (its manifest), the uploads, the
    starts, and the routers at the end."""

    def __init__(self, s: Session, target: Target, ch: Changes, remotes: dict[str, Remote],
                 sups: dict[str, Supervisor], echo: Echo, timeout: float):
        self.s, self.target, self.ch, self.remotes = s, target, ch, remotes
        self.sups, self.echo, self.timeout = sups, echo, timeout
        self.unit_dir = {n: sup.unit_dir if isinstance(sup, Systemd) else None
                         for n, sup in sups.items()}
        self.manifests = {h.name: remotes[h.name].probe.get("manifest") for h in s.hosts}
        self.before = {h.name: remotes[h.name].records for h in s.hosts}
        self.acts = {(a.host, a.unit): a for a in ch.units}
        # what runs: the unchanged units as rendered; one whose files changed keeps its old
        # record until it restarts (a rollout cut short restarts it on the next deploy)
        self.running: dict[str, dict[str, str]] = {h.name: {} for h in s.hosts}
        for h in s.hosts:
            for u in h.spec.units:
                a = self.action(h.name, u.name)
                old = remotes[h.name].deployed_hash(u)
                if a.action == "none":
                    self.running[h.name][u.name] = h.spec.unit_hash(u)
                elif a.action in ("restart", "update") and old and a.state == "running":
                    self.running[h.name][u.name] = old
        self.token = uuid.uuid4().hex[:12]

    def action(self, host: str, unit: str) -> UnitAction:
        return self.acts[(host, unit)]

    def doc(self, h: Host) -> dict[str, Any]:
        return manifest_doc(h, self.target, self.running[h.name], self.unit_dir[h.name],
                            self.before[h.name])

    def put_files(self, h: Host) -> None:
        self.manifests[h.name] = upload(h, self.ch, self.manifests[h.name],
                                        self.remotes[h.name].probe, self.target,
                                        self.unit_dir[h.name], self.echo)
        sup = self.sups[h.name]
        if not isinstance(sup, Systemd) and self.ch.uninstall.get(h.name):
            # the host moved to bash: the unit files sgl-gen installed go (disabled first)
            sup = Systemd(h, self.target.name, self.remotes[h.name].systemd)
        sup.install(self.ch, self.echo)

    def _runs_now(self, h: Host, names: list[str]) -> None:
        """The units ``names`` run the rendered files from now on (their manifest record)."""
        for u in h.spec.units:
            if u.name in names:
                self.running[h.name][u.name] = h.spec.unit_hash(u)

    def start_units(self, h: Host, names: list[str], token: str) -> dict[str, Any]:
        self._runs_now(h, names)
        doc = self.doc(h)
        got = self.sups[h.name].start(names, self.timeout + 30, token,
                                      None if doc == self.manifests[h.name] else doc)
        self.manifests[h.name] = doc
        return got

    def record(self, h: Host, names: list[str]) -> None:
        self._runs_now(h, names)
        self.manifests[h.name] = write_manifest(h, self.doc(h), self.manifests[h.name])

    def routers(self, roller: Roller, ro: Rollout) -> None:
        """Routers that stay: their worker lists made exact, live; those whose own settings
        changed restart (once), those not running start; then every router must list exactly
        its engines, healthy."""
        restart = set(ro.restart)
        by_host = self._settle_routers(roller, ro)
        t0 = time.monotonic()
        if restart:
            def stop(h: Host) -> None:
                names = [n for n in by_host.get(h.name, []) if n in restart
                         and (h.name, n) not in roller.stopped]
                if names:
                    self.echo(f"  stop    {h.name} {' '.join(names)}")
                    self.sups[h.name].stop(names, what=f"stop {' '.join(names)}")
            parallel(self.s.hosts, stop)
        self._start_and_wait(by_host)
        if restart:
            self.echo(f"  {', '.join(sorted(restart))}: restarted; without a router for "
                      f"{time.monotonic() - t0:.1f}s")

    def _settle_routers(self, roller: Roller, ro: Rollout) -> dict[str, list[str]]:
        """Make every live router that stays list exactly its engines and record the updated
        ones; return, per host, the routers that (re)start."""
        for rname in sorted(set(ro.live) - set(ro.restart) - set(ro.start)):
            if rname in roller.routers and self.s.has(roller.routers[rname].host):
                roller.reconcile(rname)
        by_host: dict[str, list[str]] = {}
        for h in self.s.hosts:
            acts = {u.name: self.action(h.name, u.name).action for u in h.spec.units
                    if u.kind == "router"}
            if any(a == "update" for a in acts.values()):
                self.record(h, [n for n, a in acts.items() if a == "update"])
            starting = [n for n, a in acts.items() if a in ("restart", "start")]
            if starting:
                by_host[h.name] = starting
        return by_host

    def _start_and_wait(self, by_host: dict[str, list[str]]) -> None:
        """Start the routers of ``by_host``; wait until every router of the selected hosts
        lists exactly its engines, healthy; the last manifests."""
        token = self.token
        started = set()
        try:
            for h in self.s.hosts:
                if by_host.get(h.name):
                    started.add(h.name)
            parallel([h for h in self.s.hosts if h.name in started],
                     lambda h: self.start_units(h, by_host[h.name], token))
            for line in [f"  start   {n} {' '.join(by_host[n])}" for n in sorted(started)]:
                self.echo(line)
            units = [u for h in self.s.hosts for u in h.spec.units if u.kind == "router"]
            checks = [(u, u.url + "/workers") for u in units]
            for h in self.s.hosts:
                if h.name not in started:
                    self.manifests[h.name] = write_manifest(h, self.doc(h), self.manifests[h.name])
            if checks:
                self.echo(f"waiting for {len(checks)} router(s) to list exactly their workers "
                          f"as healthy")
                wait(self.s, "routers to list exactly their workers as healthy", checks,
                     [u for u in units if self.s.has(u.host)], self.timeout, token, self.echo,
                     finish=started)
                started = set()
        finally:
            self.s.end_watch(token, started)

    def downtime(self, roller: Roller, ro: Rollout) -> None:
        """``--allow-downtime``: every engine that changes starts at once (they were stopped),
        the routers that stay get their worker lists, then the rest as ``routers``."""
        items = [i for st in ro.steps if st.kind == "start" for i in st.items]
        if items:
            roller.start(items, "engines")
        by_host = self._settle_routers(roller, ro)
        self._start_and_wait(by_host)


def diff(target: Target, opts: SshOptions, *, echo: Echo, only: tuple[str, ...] = (),
         adopt: bool = False, max_unavailable: int | str | None = None,
         drain: float | None = None, allow_downtime: bool = False) -> Result:
    """What ``deploy`` would change, and the rollout it would run."""
    with Session(target, opts, echo, only, api_only=router_hosts(target, only)) as s:
        remotes = s.probe()
        ch = decide(target, remotes, adopt)
        ro = plan_rollout(
            target, ch, _deployed_urls(remotes), live_routers(s), {h.name for h in s.hosts},
            max_unavailable=target.max_unavailable if max_unavailable is None
            else max_unavailable, drain=target.drain if drain is None else drain,
            allow_downtime=allow_downtime)
        return Result(target, ch, _rows(ch, "plan", target),
                      supervisors=_supervisors(_sups(s, remotes)), rollout=ro)


def status(target: Target, opts: SshOptions, *, echo: Echo, only: tuple[str, ...] = ()
           ) -> list[dict[str, Any]]:
    """Per unit: its supervisor, state, pid, restarts and last exit (systemd), health
    (rank-0 engines: /health; routers: /workers as expected)."""
    with Session(target, opts, echo, only) as s:
        units = {h.name: list(h.spec.units) for h in s.hosts}
        urls = {h.name: {u.health_url: u.health_url for u in h.spec.units if u.health_url
                         and u.kind == "engine"} | {u.url + "/workers": u.url + "/workers"
                                                    for u in h.spec.units if u.kind == "router"}
                for h in s.hosts}
        auth = {h.name: {u.url + "/workers": u.api_key_env for u in h.spec.units
                         if u.kind == "router" and u.api_key_env} for h in s.hosts}
        res = s.poll(units, urls, auth=auth, last_exit=True, containers=True)
        rows = []
        for h in s.hosts:
            r = res[h.name]
            known = {u.name for u in h.spec.units}
            sd = h.spec.supervisor == "systemd"
            for u in h.spec.units:
                st = r["units"].get(u.name, {})
                healthy: bool | None
                if u.kind == "router":
                    healthy = workers_ok(u, r["http"][u.url + "/workers"])
                elif u.health_url:
                    healthy = r["http"][u.health_url][0] == 200
                else:
                    healthy = None
                rows.append({"host": h.name, "unit": u.name, "kind": u.kind,
                             "supervisor": h.spec.supervisor,
                             "state": st.get("state", "stopped"), "pid": st.get("pid"),
                             "active": st.get("active") if sd else None,
                             "restarts": st.get("restarts") if sd else None,
                             "last_exit": st.get("last_exit") if sd else None,
                             "enabled": st.get("enabled") if sd else None,
                             "healthy": healthy if st.get("state") == "running" else False,
                             "url": u.url,
                             # container hosts: its container (id, status, exit, started)
                             "container": (r.get("containers") or {}).get(u.name)})
            for other, states in ((h.spec.supervisor, r["units"]),
                                  ("bash" if sd else "systemd", r.get("other_units") or {})):
                for name, st in sorted(states.items()):
                    if (name not in known or other != h.spec.supervisor) \
                            and st.get("state") == "running":
                        rows.append({"host": h.name, "unit": name, "kind": "unknown",
                                     "supervisor": other,
                                     "state": "running (not in the plan)" if name not in known
                                     else f"running (under {other})", "pid": st.get("pid"),
                                     "active": None, "restarts": None, "last_exit": None,
                                     "enabled": None, "healthy": None, "url": "",
                                     "container": None})
        return rows


def down(target: Target, opts: SshOptions, *, echo: Echo, only: tuple[str, ...] = ()) -> int:
    """Routers on every host, then engines (under systemd: stopped and disabled; the files
    stay); return how many units were stopped. A second ``down`` changes nothing."""
    with Session(target, opts, echo, only) as s:
        remotes = s.probe()
        sups = _sups(s, remotes)
        stopped = 0
        lock = threading.Lock()
        for kind in ("router", "engine"):
            def stop(h: Host, kind: str = kind) -> None:
                nonlocal stopped
                r = remotes[h.name]
                if owned_files(r.probe) is None:
                    return  # without a manifest, nothing in that root is sgl-gen's to stop
                other = foreign_unit_dir(r.probe)
                if other is not None:
                    raise DeployError(f"{h.name}: {h.spec.root} was deployed with unit files in "
                                      f"{other}, not this SSH user's: run `sgl-gen down` as the "
                                      f"user that deployed it")
                lines = _down_host(h, r, sups[h.name], kind)
                for line in lines:
                    echo(f"  {h.name}: {line}")
                with lock:
                    stopped += sum(1 for line in lines if line.endswith("stopped"))
            parallel(s.hosts, stop)

        def clear(h: Host) -> None:
            have = remotes[h.name].probe.get("manifest")
            # files put there by other means have none to update; the files it lists stay
            # sgl-gen's (the render down was given may differ from the one deployed)
            if isinstance(have, dict) and have.get("units"):
                write_manifest(h, {**have, "units": {}}, have)
        parallel(s.hosts, clear)
        return stopped


def _is_router(name: str) -> bool:
    return name.startswith("router-")


def _down_host(h: Host, r: Remote, sup: Supervisor, kind: str) -> list[str]:
    """Stop (under systemd: and disable) the host's units of ``kind``, under whichever
    supervisor runs them (a host that moved from one to the other has some under each);
    nothing when nothing runs and nothing is enabled."""
    def mine(n: str) -> bool:
        return n.startswith("router-") == (kind == "router")
    lines: list[str] = []
    on_systemd = isinstance(sup, Systemd)
    bash_states, sd_states = (r.other_units, r.units) if on_systemd else (r.units, r.other_units)
    bash = [n for n, st in bash_states.items() if mine(n) and st.get("state") in ("running", "dead")]
    if bash:
        if "sgl-gen-host.sh" not in r.files:
            raise DeployError(f"{h.name}: {h.spec.root}/sgl-gen-host.sh is missing; cannot "
                              f"stop {' '.join(bash)}")
        lines += supervisor_for(h, sup.deployment, "bash").down(bash)
    sd = sup if isinstance(sup, Systemd) else Systemd(h, sup.deployment, r.systemd)
    # only the units (and the target) whose unit files sgl-gen installed here
    owned = owned_unit_files(r.probe, sd.deployment)
    units = {n: st for n, st in sd_states.items() if mine(n) and sd.service(n) in owned}
    failed = [n for n, st in units.items() if str(st.get("active")).startswith("failed")]
    active = [n for n, st in units.items() if st.get("state") in ("running", "dead")
              and n not in failed]
    enabled = [n for n, st in units.items() if st.get("enabled") == "enabled"]
    target = r.systemd.get("target") or {}
    target_on = h.spec.systemd_target in owned and (
        target.get("enabled") == "enabled" or target.get("state") == "running")
    if active or enabled or failed or (target_on and kind == "engine"):
        lines += sd.down(active, disable=enabled, last=kind == "engine" and target_on,
                         reset=failed)
    return lines


def logs(target: Target, opts: SshOptions, *, echo: Echo, units: tuple[str, ...] = (),
         lines: int = 50, follow: bool = False, out: Echo) -> None:
    """Print each unit's output: the end of its log file (bash) or its journal (systemd);
    ``follow``: keep streaming, each line prefixed with host and unit."""
    known = {u.name: u for u in target.units()}
    for n in units:
        if n not in known:
            raise SglGenError(f"unknown unit {n!r} (units: {', '.join(sorted(known))})",
                              exit_code=2)
    wanted = [known[n] for n in units] if units else target.units()
    only = tuple(dict.fromkeys(u.host for u in wanted))
    with Session(target, opts, echo, only) as s:
        def sup(u: UnitSpec) -> Supervisor:
            h = s.host(u.host)
            return supervisor_for(h, target.name, h.spec.supervisor)
        if not follow:
            for u in wanted:
                text = s.host(u.host).run(sup(u).log_command(u.name, lines, False), "logs",
                                          check=False)
                out(f"==> {u.host} {u.name} <==")
                for line in str(text.stdout).splitlines():
                    out(redact(line))
            return
        lock = threading.Lock()

        class _Stream:
            def __init__(self, prefix: str):
                self.prefix, self.buf = prefix, ""

            def write(self, data: str) -> None:
                self.buf += data
                *done, self.buf = self.buf.split("\n")
                with lock:
                    for line in done:
                        out(f"{self.prefix} {redact(line)}")

            def flush(self) -> None:
                pass

        def follow_one(u: UnitSpec) -> None:
            s.host(u.host).conn.run(sup(u).log_command(u.name, lines, True), hide=True,
                                    warn=True, in_stream=False,
                                    out_stream=_Stream(f"{u.host} {u.name} |"))
        parallel(wanted, follow_one)


def table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    cells = [[c.upper() for c in cols]] + [["-" if r.get(c) is None else str(r.get(c))
                                            for c in cols] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    return "".join("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n"
                   for row in cells)
