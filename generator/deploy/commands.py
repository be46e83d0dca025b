"""The commands: ``deploy``, ``diff``, ``status``, ``down``, ``logs`` (and their tables)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from generator.deploy.changes import Changes
from generator.deploy.decide import Remote, decide, preflight
from generator.deploy.hostfiles import (
    foreign_unit_dir,
    manifest_doc,
    owned_files,
    owned_unit_files,
    upload,
    write_manifest,
)
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
        }, indent=2, sort_keys=True)


def _sups(s: Session, remotes: dict[str, Remote]) -> dict[str, Supervisor]:
    return {h.name: supervisor_for(h, s.target.name, h.spec.supervisor,
                                   remotes[h.name].systemd) for h in s.hosts}


def supervisor_text(sup: Supervisor) -> str:
    return f"systemd ({sup.where()})" if isinstance(sup, Systemd) else "bash (sgl-gen-host.sh)"


def _supervisors(sups: dict[str, Supervisor]) -> dict[str, str]:
    return {name: supervisor_text(sup) for name, sup in sorted(sups.items())}


def _rows(ch: Changes, phase: str, target: Target) -> list[dict[str, Any]]:
    past = {"start": "started", "restart": "restarted", "stop": "stopped", "none": "unchanged"}
    sup = {h.host: h.supervisor for h in target.hosts}
    return [{"host": a.host, "unit": a.unit, "kind": a.kind, "supervisor": sup.get(a.host),
             "action": a.action if phase == "plan" else past[a.action],
             "reason": a.reason, "was": a.state, "url": a.url} for a in ch.units]


def _stop_phase(s: Session, ch: Changes, sups: dict[str, Supervisor], echo: Echo) -> None:
    """Stop routers on every host, then engines: what restarts or goes, each by the supervisor
    that runs it now."""
    for kind in ("router", "engine"):
        def stop(h: Host, kind: str = kind) -> None:
            acts = [a for a in ch.units if a.host == h.name and a.kind == kind
                    and a.action in ("restart", "stop") and a.state in ("running", "dead")]
            for by in sorted({a.stop_with or h.spec.supervisor for a in acts}):
                names = [a.unit for a in acts if (a.stop_with or h.spec.supervisor) == by]
                echo(f"  stop    {h.name} {' '.join(names)}"
                     + (f" ({by})" if by != h.spec.supervisor else ""))
                sup = sups[h.name] if by == h.spec.supervisor else supervisor_for(
                    h, s.target.name, by, {})
                sup.stop(names, what=f"stop {' '.join(names)}")
        parallel(s.hosts, stop)


def deploy(target: Target, opts: SshOptions, *, echo: Echo, only: tuple[str, ...] = (),
           timeout: float = 600, dry_run: bool = False, min_free_mb: int = 100,
           adopt: bool = False) -> Result:
    """Converge the hosts on the target. Raises DeployError (exit 3) on failure. ``adopt``: a
    root without a manifest is deployed into; its files are kept (and reported)."""
    with Session(target, opts, echo, only) as s:
        remotes = s.probe(gpus=True)
        ch = decide(target, remotes, adopt)
        problems = preflight(target, remotes, ch, min_free_mb << 20)
        if problems:
            raise DeployError("preflight failed:\n" + "\n".join(f"  {p}" for p in problems))
        sups = _sups(s, remotes)
        if dry_run:
            return Result(target, ch, _rows(ch, "plan", target), supervisors=_supervisors(sups))
        n_up = sum(len(v) for v in ch.upload.values())
        echo(f"preflight ok on {len(s.hosts)} host(s); {n_up} file(s) to upload, "
             f"{sum(1 for a in ch.units if a.action != 'none')} unit(s) to (re)start or stop")
        for name, text in _supervisors(sups).items():
            echo(f"  {name}: supervisor {text}")
        _stop_phase(s, ch, sups, echo)
        unit_dir = {n: sup.unit_dir if isinstance(sup, Systemd) else None
                    for n, sup in sups.items()}
        manifests = {h.name: remotes[h.name].probe.get("manifest") for h in s.hosts}

        def put_files(h: Host) -> None:
            manifests[h.name] = upload(h, ch, manifests[h.name], remotes[h.name].probe,
                                       target, unit_dir[h.name], echo)
            sup = sups[h.name]
            if not isinstance(sup, Systemd) and ch.uninstall.get(h.name):
                # the host moved to bash: the unit files sgl-gen installed go (disabled first)
                sup = Systemd(h, target.name, remotes[h.name].systemd)
            sup.install(ch, echo)
        parallel(s.hosts, put_files)

        token = uuid.uuid4().hex[:12]
        deadline = time.monotonic() + timeout
        running: dict[str, dict[str, str]] = {h.name: {} for h in s.hosts}
        for h in s.hosts:
            for u in h.spec.units:
                a = next(x for x in ch.units if x.host == h.name and x.unit == u.name)
                if a.action == "none":
                    running[h.name][u.name] = h.spec.unit_hash(u)

        def to_start(h: Host, kinds: tuple[str, ...]) -> list[str]:
            return [a.unit for a in ch.units if a.host == h.name and a.kind in kinds
                    and a.action in ("start", "restart")]

        # Engines start first and must be healthy before routers start. When no router has to
        # start, one wait covers both: engines healthy and every router listing its workers.
        started: set[str] = set()
        restarts: dict[str, dict[str, Any]] = {h.name: {} for h in s.hosts}
        any_router = any(to_start(h, ("router",)) for h in s.hosts)
        phases = [("engine",), ("router",)] if any_router else [("engine", "router")]
        try:
            for kinds in phases:
                def start(h: Host, kinds: tuple[str, ...] = kinds) -> None:
                    names = to_start(h, kinds)
                    for u in h.spec.units:
                        if u.name in names:
                            running[h.name][u.name] = h.spec.unit_hash(u)
                    doc = manifest_doc(h, target, running[h.name], unit_dir[h.name])
                    if names:
                        echo(f"  start   {h.name} {' '.join(names)}")
                        started.add(h.name)
                        restarts[h.name].update(sups[h.name].start(
                            names, timeout + 30, token,
                            None if doc == manifests[h.name] else doc))
                        manifests[h.name] = doc
                    else:
                        manifests[h.name] = write_manifest(h, doc, manifests[h.name])
                parallel(s.hosts, start)
                units = [u for h in s.hosts for u in h.spec.units if u.kind in kinds]
                checks = [(u, u.health_url) for u in units if u.kind == "engine" and u.health_url]
                checks += [(u, u.url + "/workers") for u in units if u.kind == "router"]
                if not checks:
                    continue
                n_eng = sum(u.kind == "engine" for u, _ in checks)
                waits = [(n, kind, verb) for n, kind, verb in (
                    (n_eng, "engine", "to become healthy"),
                    (len(checks) - n_eng, "router", "to list exactly their workers as healthy"))
                    if n]
                echo("waiting for " + " and ".join(f"{n} {k}(s) {v}" for n, k, v in waits))
                last = kinds == phases[-1]
                wait(s, " and ".join(f"{k}s {v}" for _, k, v in waits), checks, units,
                     max(1.0, deadline - time.monotonic()), token, echo, timeout,
                     finish=started if last else (), restarts=restarts)
                if last:
                    started.clear()  # the last wait cleaned up after itself
        except BaseException:
            s.end_watch(token)  # a failed wait may have left abort files on any host
            raise
        s.end_watch(token, started)
        return Result(target, ch, _rows(ch, "done", target), supervisors=_supervisors(sups))


def diff(target: Target, opts: SshOptions, *, echo: Echo, only: tuple[str, ...] = (),
         adopt: bool = False) -> Result:
    with Session(target, opts, echo, only) as s:
        remotes = s.probe()
        ch = decide(target, remotes, adopt)
        return Result(target, ch, _rows(ch, "plan", target),
                      supervisors=_supervisors(_sups(s, remotes)))


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
        res = s.poll(units, urls, auth=auth, last_exit=True)
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
                             "url": u.url})
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
                                     "enabled": None, "healthy": None, "url": ""})
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
