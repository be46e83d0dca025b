"""The two supervisors of a host's units, behind one interface: ``bash`` (each host's
``sgl-gen-host.sh``: pidfiles, process groups; nothing restarts a unit that dies) and
``systemd`` (the rendered units installed into the system manager for root, or the SSH user's
own manager, ``systemctl --user``, with lingering: restarted on failure, started at boot).

A deploy calls, per host: ``stop`` (what restarts or goes), ``install`` (after the upload: unit
files, daemon-reload, enable), ``start`` (returns the baseline a wait compares with), and
``finish``; ``down`` stops (and under systemd disables) everything; ``log_command`` reads a
unit's output (its log file, or the journal)."""

from __future__ import annotations

import shlex
from typing import Any

from generator.deploy.changes import Changes
from generator.deploy.hostfiles import manifest_text
from generator.deploy.spec import MANIFEST, Echo
from generator.deploy.transport import Host, agent_command
from generator.errors import DeployError


class Supervisor:
    """One host's supervisor. ``units`` are unit names (``engine-x-0``, ``router-m``)."""

    name = ""

    def __init__(self, host: Host, deployment: str):
        self.host, self.deployment = host, deployment

    def stop(self, units: list[str], what: str = "stop") -> list[str]:
        """Stop the units (in this order); the lines to show."""
        raise NotImplementedError

    def install(self, ch: Changes, echo: Echo) -> None:
        """Make the uploaded files take effect before anything starts."""

    def start(self, units: list[str], timeout: float, token: str,
              manifest: dict[str, Any] | None) -> dict[str, Any]:
        """Start the units (writing ``manifest`` first when given); their restart counters
        as started (empty for bash)."""
        raise NotImplementedError

    def restart(self, units: list[str], timeout: float, token: str) -> dict[str, Any]:
        """Restart the units (every rank of an engine on this host)."""
        self.stop(list(reversed(units)), what=f"stop {' '.join(units)}")
        return self.start(units, timeout, token, None)

    def down(self, units: list[str], disable: list[str] | tuple[str, ...] = (),
             last: bool = False, reset: list[str] | tuple[str, ...] = ()) -> list[str]:
        """Stop the units for good; the lines to show. systemd: ``disable`` units that must
        not start at boot, ``reset`` failed ones (reset-failed); ``last``: the host's final
        call (its target stops too)."""
        return self.stop(units)

    def log_command(self, unit: str, lines: int, follow: bool) -> str:
        raise NotImplementedError


class Bash(Supervisor):
    name = "bash"

    def stop(self, units: list[str], what: str = "stop") -> list[str]:
        if not units:
            return []
        return self.host.host_script("stop", *units, what=what).splitlines()

    def start(self, units: list[str], timeout: float, token: str,
              manifest: dict[str, Any] | None) -> dict[str, Any]:
        """With the detached hostagent ``start`` helper (a child subreaper, so the units' exit
        statuses are recorded while the deploy waits)."""
        host = self.host
        root = host.spec.root
        watch = f"{root}/run/.deploy-{token}.watch"
        out = f"{root}/run/.deploy-{token}.out"
        args = {"root": root, "units": units, "timeout": timeout, "watch": watch, "out": out,
                "manifest": None if manifest is None else manifest_text(manifest),
                "manifest_path": MANIFEST}
        q = shlex.quote
        cmd = (f"mkdir -p {q(root + '/run')} && : > {q(watch)} && "
               f"(setsid {agent_command(host.python, 'start', args)} </dev/null >/dev/null 2>&1 &)"
               f" && i=0; while [ ! -e {q(out)} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); "
               f"done; cat {q(out)} && rm -f {q(out)}")
        r = host.run(cmd, "start " + " ".join(units))
        text = str(r.stdout)
        if "@@rc 0" not in text:
            raise DeployError(f"{host.name}: sgl-gen-host.sh start {' '.join(units)} failed: "
                              f"{text.strip()}")
        return {}

    def log_command(self, unit: str, lines: int, follow: bool) -> str:
        log = f"{shlex.quote(self.host.spec.root)}/logs/{shlex.quote(unit)}.log"
        if follow:
            return f"tail -n {int(lines)} -F {log}"
        return f"tail -n {int(lines)} {log} 2>/dev/null || true"


class Systemd(Supervisor):
    name = "systemd"

    def __init__(self, host: Host, deployment: str, info: dict[str, Any] | None = None):
        super().__init__(host, deployment)
        self.info = dict(info or {})

    @property
    def unit_dir(self) -> str | None:
        d = self.info.get("unit_dir")
        return str(d) if d else None

    @property
    def mode(self) -> str:
        return str(self.info.get("mode") or "system")

    def where(self) -> str:
        if self.mode == "user":
            return f"user units of {self.info.get('user')} in {self.unit_dir}"
        return f"system units in {self.unit_dir}"

    def service(self, unit: str) -> str:
        return next((u.service for u in self.host.spec.units if u.name == unit),
                    f"sgl-{self.deployment}-{unit}.service")

    def systemctl(self, *args: str, what: str, check: bool = True) -> Any:
        return self.host.run(agent_command(self.host.python, "systemctl", {"args": list(args)}),
                             what, check=check)

    def stop(self, units: list[str], what: str = "stop") -> list[str]:
        if not units:
            return []
        # one job per unit, in this order: systemctl stop of several units runs them at once
        for u in units:
            self.systemctl("stop", "--", self.service(u), what=f"systemctl stop {u}")
        return [f"{u}: stopped" for u in units]

    def install(self, ch: Changes, echo: Echo) -> None:
        """Disable and remove the unit files sgl-gen installed that are no longer rendered,
        write the changed ones, then one daemon-reload (only when a unit file changed) and
        enable what is not enabled yet."""
        h, name = self.host, self.host.name
        gone = ch.uninstall.get(name, [])
        kept = ch.disable.get(name, [])  # sgl-gen's once, edited since: disabled, not removed
        new = ch.install.get(name, [])
        enable = ch.enable.get(name, [])
        if not (gone or kept or new or enable or ch.reload.get(name)):
            return
        if self.unit_dir is None:
            raise DeployError(f"{name}: no systemd unit directory known (probe)")
        # a host moving to bash, or whose manager does not answer: what can be done without
        # systemd is done (files, links), a failing reload does not fail the deploy
        leaving = h.spec.supervisor != "systemd" or not self.info.get("booted") \
            or bool(self.info.get("error"))
        if gone or kept:
            target = f"sgl-{self.deployment}.target"
            if target in gone:  # a target whose file goes would stay "active", not-found
                self.systemctl("stop", "--", target, what=f"systemctl stop {target}",
                               check=False)
            self.systemctl("disable", "--no-reload", "--", *gone, *kept,
                           what="systemctl disable", check=False)
            self.systemctl("reset-failed", "--", *gone, *kept, what="systemctl reset-failed",
                           check=False)
        if gone:
            h.run("rm -f -- " + " ".join(shlex.quote(f"{self.unit_dir}/{n}") for n in gone),
                  "remove unit files")
        if new:
            h.run(f"mkdir -p {shlex.quote(self.unit_dir)}", "mkdir unit directory")
            for n in new:
                h.put(f"{self.unit_dir}/{n}", h.spec.files[f"systemd/{n}"][0], 0o644)
        if enable:
            self.systemctl("enable", "--no-reload", "--", *enable, what="systemctl enable")
        self.systemctl("daemon-reload", what="systemctl daemon-reload", check=not leaving)
        echo(f"  systemd {name}: {len(new)} unit file(s) installed"
             + (f", {len(gone)} removed" if gone else "")
             + (f", {len(enable)} enabled" if enable else "") + ", daemon-reload")

    def start(self, units: list[str], timeout: float, token: str,
              manifest: dict[str, Any] | None, verb: str = "start") -> dict[str, Any]:
        h = self.host
        if manifest is not None:  # what is deployed, recorded before the units start
            h.put(MANIFEST, manifest_text(manifest).encode(), 0o644)
        got = h.py("sd-start", {"services": [self.service(u) for u in units], "verb": verb},
                   f"systemctl {verb} {' '.join(units)}")
        if "error" in got:
            raise DeployError(f"{h.name}: systemctl {verb} {' '.join(units)} failed (exit "
                              f"{got['error']['rc']}): {got['error']['text']}")
        # what the wait compares with: a restart counts as an exit, an undispatched start job
        # (the invocation before it) is still pending
        return {u: {"restarts": int(got.get(self.service(u), {}).get("restarts", 0)),
                    "before": got.get(self.service(u), {}).get("before", "")} for u in units}

    def restart(self, units: list[str], timeout: float, token: str) -> dict[str, Any]:
        return self.start(units, timeout, token, None, verb="restart")

    def down(self, units: list[str], disable: list[str] | tuple[str, ...] = (),
             last: bool = False, reset: list[str] | tuple[str, ...] = ()) -> list[str]:
        out = self.stop(units)
        target = f"sgl-{self.deployment}.target"
        if last:
            self.systemctl("stop", "--", target, what=f"systemctl stop {target}")
        gone = [self.service(u) for u in dict.fromkeys([*units, *reset])]
        if gone:  # a unit whose stop timed out, or that had given up, would stay "failed"
            self.systemctl("reset-failed", "--", *gone, what="systemctl reset-failed",
                           check=False)
        names = [self.service(u) for u in dict.fromkeys([*units, *disable, *reset])]
        names += [target] if last else []
        if names:
            self.systemctl("disable", "--", *names, what="systemctl disable", check=False)
        return out

    def log_command(self, unit: str, lines: int, follow: bool) -> str:
        return agent_command(self.host.python, "journal", {
            "services": [self.service(unit)], "lines": int(lines), "follow": follow})


def supervisor_for(host: Host, deployment: str, kind: str,
                   info: dict[str, Any] | None = None) -> Supervisor:
    if kind == "systemd":
        return Systemd(host, deployment, info)
    return Bash(host, deployment)
