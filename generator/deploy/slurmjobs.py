"""The CLI side of a Slurm job's life: ``sgl-gen deploy / status / logs / down --target slurm``.

One topology is one batch job (generator/targets/slurm.py renders it; lib/sgljob.py, the in-job
supervisor, runs it). The CLI never talks to the nodes: it runs Slurm's own commands (``sbatch``,
``squeue``, ``scontrol``, ``scancel``) on the login node, with the caller's environment, and reads
the files the job writes into the run directory, which the nodes and the login node share:

1. ``deploy`` renders FILE into ``OUT/<dep>/`` (as ``render --target slurm``) or takes a rendered
   ``OUT_DIR`` as it is, refuses when the run directory's last job still pends or runs, and runs
   ``sbatch --parsable OUT/<dep>/slurm/<dep>.sbatch`` from the run directory (default
   ``sgl-runs/<dep>/`` under the cwd, 0700), so that directory is the job's submit directory. It
   records the job in ``<run_dir>/sgl-gen-job.json`` (atomically: deployment, job id, sbatch, run
   dir, submit time, the job's stdout as ``scontrol show job`` names it).
2. It then follows the job (``--no-wait``: it does not): ``squeue`` for the job's state (a pending
   reason that can never clear, such as ``PartitionNodeLimit``, cancels the job and says why),
   then the job's ``sgl-<dep>-<id>/state.json`` for its units (engines healthy n/N, routers,
   restarts), printing a progress line to stderr when something changes. The job is up once
   ``endpoints-<id>.json`` exists and the state's phase is ``up``: the router URLs are printed.
   The job leaving the queue first, or its phase turning ``failed``, is a failure (exit 3) with
   the failed unit's log tail from the job's stdout. ``--timeout`` or Ctrl-C stop the following,
   never the job.
3. ``status`` prints the job's state and the per-unit table of state.json; ``logs`` prints (or
   follows) the job's stdout and its units' per-rank logs (``<unit>-<rank>.log``), redacted;
   ``down`` asks the job to drain (``scancel --signal=USR1 --batch``: routers stop, engines
   finish their requests), waits up to ``cluster.slurm.stop_before_limit`` seconds for it to end,
   then cancels it. Each finds the job through the record, or ``--job ID`` (its work directory
   and stdout then come from ``scontrol show job``).

Every failure is a :class:`SglGenError` (exit 3, usage errors exit 2); nothing here prints a
traceback. Text that comes from Slurm or from the job's files is shown through
:func:`generator.errors.visible` (messages) or :func:`generator.redact.redact` (log lines).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.deploy.slurmctl import (
    JOB_ID,
    RECORD,
    QueueState,
    Record,
    Slurm,
    SlurmUnavailable,
    definitive,
    failure_text,
    first_int,
    progress,
    read_record,
    read_state,
    state_units,
    tail_lines,
    unit_logs,
    write_record,
)
from generator.errors import EXIT_DEPLOY, EXIT_USAGE, SglGenError, visible
from generator.redact import redact

Echo = Callable[[str], None]
#: every wait of the commands (tests replace it)
_sleep = time.sleep

#: seconds between two looks at the job while following it (tests lower these)
POLL = 1.5
LOG_POLL = 0.5
#: deploy --target slurm waits this long for the endpoints when --timeout is not given: loading
#: the weights of a large model from a shared filesystem takes minutes
DEFAULT_WAIT = 1800.0
#: down's wait for a draining job when the plan has no cluster.slurm.stop_before_limit
DEFAULT_STOP = 120
#: how long a failed job may take to end once it says so (it stops its steps: 10 s grace)
SETTLE = 30.0


# -- what the commands know of a deployment --------------------------------------------------------

@dataclass(frozen=True)
class Deployment:
    """A deployment as the Slurm commands see it: from its plan (a compiled FILE's, or an
    OUT_DIR's plan.json) and how the user named it (for the commands in hints)."""

    name: str
    job_name: str
    stop_before_limit: int
    units: tuple[tuple[str, str], ...]  # (unit, kind), engines first, as the plan orders them
    source: str
    run_dir_opt: str | None = None
    sbatch: Path | None = None

    def run_dir(self) -> Path:
        return Path(self.run_dir_opt) if self.run_dir_opt else Path("sgl-runs") / self.name

    def command(self, verb: str, *extra: str) -> str:
        parts = ["sgl-gen", verb, self.source, "--target", "slurm"]
        if self.run_dir_opt:
            parts += ["--run-dir", self.run_dir_opt]
        return " ".join(shlex.quote(p) for p in [*parts, *extra])


def deployment_from_plan(plan: dict[str, Any], source: str, run_dir: str | None = None,
                         sbatch: Path | None = None) -> Deployment:
    """``plan``: plan.json's content (``targets.plans.plan_dict``)."""
    name = str(plan["deployment"]["name"])
    slurm = plan.get("slurm") or {}
    engines: list[tuple[str, str]] = []
    routers: list[tuple[str, str]] = []
    for m in plan.get("models", []):
        engines += [(f"engine-{e['id']}", "engine") for e in m.get("engines", [])]
        if m.get("router"):
            routers.append((f"router-{m['name']}", "router"))
    stop = slurm.get("stop_before_limit")
    return Deployment(name, str(slurm.get("job_name") or f"sgl-{name}"),
                      stop if isinstance(stop, int) and stop > 0 else DEFAULT_STOP,
                      tuple(engines + routers), source, run_dir, sbatch)


def _job_stdout(info: dict[str, str] | None, run_dir: Path, dep: str, job: str) -> str:
    """The job's stdout: ``scontrol show job``'s StdOut= (its ``%j``, ``%x``, ``%u`` filled in
    where this Slurm leaves them), else the rendered default ``sgl-<dep>-<job>.out``."""
    info = info or {}
    out = info.get("StdOut", "")
    subst = {"j": job, "A": job.split("_")[0], "x": info.get("JobName", ""),
             "u": info.get("UserId", "").split("(")[0], "%": "%"}
    out = re.sub(r"%([jAxu%])", lambda m: subst[m.group(1)], out)
    if out and out not in ("(null)", "/dev/null") and "%" not in out:
        p = Path(out)
        if not p.is_absolute():
            p = Path(info.get("WorkDir") or run_dir) / p
        return str(p)
    return str(run_dir / f"sgl-{dep}-{job}.out")


def find_job(dep: Deployment, slurm: Slurm, job: str | None, *, strict: bool,
             echo: Echo) -> Record | None:
    """The job status/logs/down work on: the run directory's record, or ``--job ID`` (its
    work directory and stdout from ``scontrol show job``). None: no record and no --job.
    ``strict``: a --job whose Slurm name is not the deployment's job name is refused (down
    cancels it), else a warning."""
    run_dir = dep.run_dir()
    rec = read_record(run_dir) if run_dir.is_dir() else None
    if job is None:
        if rec is not None and rec.deployment != dep.name:
            raise SglGenError(f"{run_dir / RECORD}: records a job of {visible(rec.deployment)!r},"
                              f" not of {dep.name!r}\nhint: pass --run-dir of this deployment",
                              exit_code=EXIT_DEPLOY)
        if rec is not None:
            slurm.cluster = rec.cluster
        return rec
    if not JOB_ID.match(job):
        raise SglGenError(f"--job: {visible(job)!r} is not a Slurm job id", exit_code=EXIT_USAGE)
    if rec is not None and rec.job == job:
        slurm.cluster = rec.cluster
        return rec
    info = slurm.show("job", job)
    if info is not None:
        name = info.get("JobName", "")
        if name and name != dep.job_name:
            msg = (f"job {job} is named {visible(name)!r}, not {dep.job_name!r} (the job name of "
                   f"{dep.name})")
            if strict:
                raise SglGenError(msg + "\nhint: pass the id of this deployment's job (squeue "
                                  f"--name={shlex.quote(dep.job_name)})", exit_code=EXIT_DEPLOY)
            echo(f"warning: {msg}")
        if not dep.run_dir_opt and info.get("WorkDir"):
            run_dir = Path(info["WorkDir"])
    return Record(dep.name, job, str(dep.sbatch or ""), str(run_dir.resolve()),
                  rec.submitted if rec else 0.0,
                  _job_stdout(info, run_dir, dep.name, job))


def _no_job(dep: Deployment) -> str:
    return (f"{dep.name}: no job recorded in {dep.run_dir() / RECORD}\nhint: "
            f"`{dep.command('deploy')}` submits one; pass --job ID for a job submitted otherwise")


@dataclass
class Submitted:
    record: Record
    routers: dict[str, str] = field(default_factory=dict)

    def json(self, *, wait: bool) -> dict[str, Any]:
        d: dict[str, Any] = {"deployment": self.record.deployment, "job": self.record.job,
                             "run_dir": self.record.run_dir, "ok": True}
        if wait:
            d["routers"] = self.routers
            d["endpoints"] = str(self.record.endpoints_file)
        return d


def _prepare_run_dir(dep: Deployment) -> Path:
    run_dir = dep.run_dir()
    try:
        run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise SglGenError(f"{run_dir}: cannot create the run directory: "
                          f"{exc.strerror or exc}", exit_code=EXIT_DEPLOY) from None
    if not run_dir.is_dir():
        raise SglGenError(f"{run_dir}: not a directory", exit_code=EXIT_DEPLOY)
    return run_dir.resolve()


def check_free(dep: Deployment, slurm: Slurm) -> None:
    """Refuse when the run directory's recorded job still pends or runs (exit 3)."""
    run_dir = dep.run_dir()
    rec = read_record(run_dir) if run_dir.is_dir() else None
    if rec is None:
        return
    q = Slurm(rec.cluster).queue(rec.job)
    if q is not None and q.active:
        raise SglGenError(
            f"{dep.name}: job {rec.job} ({q.text()}), submitted from {run_dir}, is still in "
            f"the queue\nhint: `{dep.command('down')}` first, or deploy with another --run-dir",
            exit_code=EXIT_DEPLOY)


def submit(dep: Deployment, slurm: Slurm, echo: Echo) -> Record:
    """sbatch the rendered file from the run directory (made, 0700); the record written.
    (:func:`check_free` first: the CLI calls it before it renders.)"""
    if dep.sbatch is None:
        raise SglGenError(f"{dep.name}: no sbatch file to submit", exit_code=EXIT_DEPLOY)
    run_dir = _prepare_run_dir(dep)
    sbatch = dep.sbatch.resolve()
    job, cluster = slurm.submit(sbatch, run_dir)
    slurm.cluster = cluster
    info = slurm.show("job", job)
    rec = Record(dep.name, job, str(sbatch), str(run_dir), time.time(),
                 _job_stdout(info, run_dir, dep.name, job), cluster)
    write_record(rec)
    echo(f"{dep.name}: submitted job {job}" + (f" on cluster {cluster}" if cluster else "")
         + f" from {run_dir}")
    return rec


def _keeps_running(dep: Deployment, job: str) -> str:
    return (f"the job keeps running: follow it with `{dep.command('status')}` or "
            f"`{dep.command('logs', '-f')}`; stop it with `{dep.command('down')}` "
            f"(or scancel {job})")


def _cannot_start(dep: Deployment, slurm: Slurm, rec: Record, q: QueueState) -> SglGenError:
    """The job waits for something it can never get: cancelled; what Slurm says, with numbers
    where Slurm gives them."""
    info = slurm.show("job", rec.job) or {}
    why = []
    asked = first_int(info.get("NumNodes"))
    part = (info.get("Partition") or "").split(",")[0]
    if asked is not None:
        why.append(f"the job asks for {asked} node(s)")
    if part:
        p = slurm.show("partition", part) or {}
        total, most = first_int(p.get("TotalNodes")), first_int(p.get("MaxNodes"))
        if total is not None:
            have = f"partition {visible(part)} has {total}"
            if most is not None and most < total:
                have += f", at most {most} per job"
            why.append(have)
        if p.get("MaxTime") and "Time" in q.reason:
            why.append(f"its MaxTime is {visible(p['MaxTime'])}")
    slurm.cancel(rec.job)
    text = f"{dep.name}: job {rec.job} cannot start: Slurm says {visible(q.reason)}"
    if why:
        text += f" ({'; '.join(why)})"
    return SglGenError(
        text + "; it was cancelled\nhint: fit the request to the partition (cluster.nodes, "
        "gpus_per_node, cluster.slurm: partition, account, time, extra; `sinfo` and "
        "`scontrol show partition` show what it has), then deploy again", exit_code=EXIT_DEPLOY)


def _failed(dep: Deployment, slurm: Slurm, rec: Record, state: dict[str, Any] | None,
            q: QueueState | None) -> SglGenError:
    """The job ended (or failed) before its endpoints: what failed, and its log tail."""
    unit = (state or {}).get("failed_unit")
    unit = str(unit) if unit else None
    # the job sets its phase, prints the unit's log tail, stops its steps and ends: once it
    # has left the queue its output is complete (a shared filesystem may show it a moment
    # later: one more look then)
    deadline = time.monotonic() + SETTLE
    while q is not None and q.active and time.monotonic() < deadline:
        _sleep(min(POLL, 1.0))
        try:
            q = slurm.queue(rec.job)
        except SlurmUnavailable:
            pass
    shown = failure_text(rec.out, unit)
    if shown[0].startswith("("):
        _sleep(min(POLL, 2.0))
        shown = failure_text(rec.out, unit)
    lines = shown
    info = slurm.show("job", rec.job) or {}
    end = ", ".join(visible(x) for x in (info.get("JobState"), f"Reason={info['Reason']}"
                    if info.get("Reason") not in (None, "", "None") else None) if x)
    head = f"{dep.name}: job {rec.job} "
    if unit:  # the job's message says what the unit did: "exited (exit 2) after 3 restart(s)..."
        msg = (state or {}).get("message")
        head += f"failed: {visible(unit)} {visible(str(msg)) if msg else 'failed'}"
    elif (state or {}).get("phase") == "failed":
        head += "failed" + (f": {visible(str(state.get('message')))}"
                            if state and state.get("message") else "")
    else:
        head += "ended before its endpoints were written"
    if end:
        head += f" [{end}]"
    if q is not None and q.active:
        head += f"; it is still {q.text()}: `{dep.command('down')}` stops it"
    return SglGenError("\n".join([head, *lines, f"logs: {rec.log_dir}"]), exit_code=EXIT_DEPLOY)


def follow(dep: Deployment, slurm: Slurm, rec: Record, *, timeout: float,
           echo: Echo) -> Submitted:
    """Follow the submitted job until its endpoints exist (progress on ``echo`` when it
    changes); raise SglGenError when it fails, cannot start, or ``timeout`` passes."""
    t0 = time.monotonic()
    last: list[str] = []
    reached = "submitted"
    warned = False
    try:
        while True:
            try:
                q = slurm.queue(rec.job)
                warned = False
            except SlurmUnavailable as exc:
                if not warned:
                    echo(f"{dep.name}: {exc.message}; retrying")
                    warned = True
                q = QueueState("UNKNOWN", "", "")
            state = read_state(rec)
            if q is None or (q.state != "UNKNOWN" and not q.active) or (
                    state is not None and state.get("phase") == "failed"):
                raise _failed(dep, slurm, rec, state, q)
            if q.state == "PENDING" and definitive(q.reason):
                raise _cannot_start(dep, slurm, rec, q)
            if state is not None and state.get("phase") == "up" and rec.endpoints_file.is_file():
                routers = _routers(rec.endpoints_file)
                if routers is not None:
                    return Submitted(rec, routers)
            lines = [] if q.state == "UNKNOWN" else [f"job {rec.job}: {q.text()}"]
            if q.state == "RUNNING":
                lines.append(f"job {rec.job}: {progress(state)}")
            for text in lines:
                if text not in last:
                    echo(f"{dep.name}: {text}")
            if lines:
                last = lines
                reached = "; ".join(x.split(": ", 1)[1] for x in lines)
            if time.monotonic() - t0 > timeout:
                raise SglGenError(f"{dep.name}: timed out after {timeout:g}s waiting for job "
                                  f"{rec.job}'s endpoints; it reached: {reached}\n"
                                  f"hint: {_keeps_running(dep, rec.job)}; a larger --timeout "
                                  f"waits longer", exit_code=EXIT_DEPLOY)
            _sleep(POLL)
    except KeyboardInterrupt:
        raise SglGenError(f"\n{dep.name}: interrupted; job {rec.job}: {reached}\n"
                          f"{_keeps_running(dep, rec.job)}", exit_code=130) from None


def _routers(path: Path) -> dict[str, str] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return {str(m): str(v["router"]) for m, v in sorted(doc["models"].items())
                if isinstance(v, dict) and v.get("router")}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
        return None


# -- status ---------------------------------------------------------------------------------------

STATUS_COLUMNS = ["unit", "kind", "nodes", "state", "restarts", "last_exit", "cpus", "mem_mb",
                  "healthy", "url"]


@dataclass
class Status:
    deployment: str
    job: str | None
    job_state: str | None  # squeue's state, else scontrol's JobState once it left the queue
    queue: str  # the job's state line
    phase: str | None
    message: str | None
    rows: list[dict[str, Any]]
    ok: bool
    note: str = ""

    def json(self) -> str:
        return json.dumps({"deployment": self.deployment, "job": self.job,
                           "job_state": self.job_state, "phase": self.phase,
                           "message": self.message, "units": self.rows, "ok": self.ok},
                          indent=2, sort_keys=True)


def status(dep: Deployment, slurm: Slurm, job: str | None, echo: Echo) -> Status:
    rec = find_job(dep, slurm, job, strict=False, echo=echo)
    if rec is None:
        return Status(dep.name, None, None, "no job", None, None, [], False, _no_job(dep))
    q = slurm.queue(rec.job)
    state = read_state(rec)
    running = q is not None and q.state == "RUNNING"
    if q is not None and q.active:
        job_state: str | None = q.state
        line = f"job {rec.job} {q.text()}"
    else:
        info = slurm.show("job", rec.job) or {}
        job_state = info.get("JobState") or (q.state if q else None)
        line = f"job {rec.job} has ended" + (f" ({visible(job_state)})" if job_state else
                                              " (Slurm no longer lists it)")
    units = state_units(state)
    names = [n for n, _ in dep.units if n in units or not units] + [
        n for n in units if n not in {x for x, _ in dep.units}]
    kinds = dict(dep.units)
    rows = []
    for name in names:
        u = units.get(name, {})
        nodes = u.get("nodes")
        rows.append({"unit": name, "kind": u.get("kind", kinds.get(name)),
                     "model": u.get("model"), "role": u.get("role"),
                     "nodes": ",".join(map(str, nodes)) if isinstance(nodes, list) else None,
                     "state": u.get("state", "unknown" if running or state else None),
                     "restarts": u.get("restarts"), "last_exit": u.get("last_exit"),
                     "cpus": u.get("cpus"), "mem_mb": u.get("mem_mb"),
                     "healthy": running and u.get("state") == "healthy",
                     "url": u.get("url"), "step": u.get("step")})
    ok = running and bool(rows) and all(r["healthy"] for r in rows)
    phase = state.get("phase") if state else None
    if phase:
        line += f"; phase {visible(str(phase))}"
        if state and state.get("message"):
            line += f": {visible(str(state['message']))}"
    elif q is not None and q.active:
        line += "; no state.json yet"
    return Status(dep.name, rec.job, job_state, line, str(phase) if phase else None,
                  str(state.get("message")) if state and state.get("message") else None,
                  rows, ok)


# -- logs -----------------------------------------------------------------------------------------

@dataclass
class _Source:
    label: str  # "job 12" | "<unit> rank <r>"
    path: Path
    offset: int = 0
    buf: bytes = b""


def logs(dep: Deployment, slurm: Slurm, job: str | None, units: tuple[str, ...], *,
         lines: int, follow_: bool, out: Echo, echo: Echo) -> None:
    rec = find_job(dep, slurm, job, strict=False, echo=echo)
    if rec is None:
        raise SglGenError(_no_job(dep), exit_code=EXIT_DEPLOY)
    known = [n for n, _ in dep.units] + [n for n in state_units(read_state(rec))
                                         if n not in dict(dep.units)]
    for n in units:
        if n not in known:
            raise SglGenError(f"unknown unit {n!r} (units: {', '.join(sorted(known))})",
                              exit_code=EXIT_USAGE)
    wanted = list(dict.fromkeys(units)) if units else known

    def sources() -> list[_Source]:
        got = [] if units else [_Source(f"job {rec.job}", Path(rec.out))]
        for u in wanted:
            got += [_Source(f"{u} rank {r}", p) for r, p in unit_logs(rec.log_dir, u)]
        return got

    found = sources()
    have = {s.path for s in found}
    for u in wanted:
        if not unit_logs(rec.log_dir, u):
            echo(f"{u}: no log in {rec.log_dir} yet")
    for s in found:
        try:
            shown, s.offset = tail_lines(s.path, lines)
        except OSError as exc:
            echo(f"{s.path}: {exc.strerror or exc}")
            continue
        if follow_:
            for line in shown:
                out(f"{s.label} | {redact(line)}")
        else:
            out(f"==> {s.label} <==")
            for line in shown:
                out(redact(line))
    if not follow_:
        return
    try:
        q = slurm.queue(rec.job)
    except SlurmUnavailable:
        q = QueueState("UNKNOWN", "", "")
    if q is None or (q.state != "UNKNOWN" and not q.active):
        echo(f"{dep.name}: job {rec.job} has ended")
        return
    watched = {s.path: s for s in found}
    next_check = time.monotonic() + POLL
    try:
        while True:
            ended = False
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + POLL
                try:
                    q = slurm.queue(rec.job)
                    ended = q is None or not q.active
                except SlurmUnavailable:
                    pass
            for s in sources():
                if s.path not in have:  # a log that appeared later: from its start
                    have.add(s.path)
                    watched[s.path] = s
            for s in watched.values():
                _drain(s, out, final=ended)
            if ended:
                echo(f"{dep.name}: job {rec.job} has ended")
                return
            _sleep(LOG_POLL)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _drain(s: _Source, out: Echo, *, final: bool) -> None:
    try:
        with open(s.path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < s.offset:  # truncated (or replaced): from its start
                s.offset, s.buf = 0, b""
            if size == s.offset and not (final and s.buf):
                return
            f.seek(s.offset)
            data = f.read(size - s.offset)
            s.offset = size
    except OSError:
        return
    s.buf += data
    *done, s.buf = s.buf.split(b"\n")
    if final and s.buf:
        done.append(s.buf)
        s.buf = b""
    for raw in done:
        out(f"{s.label} | {redact(raw.decode('utf-8', errors='replace'))}")


# -- down -----------------------------------------------------------------------------------------

def down(dep: Deployment, slurm: Slurm, job: str | None, *, now: bool, echo: Echo) -> str:
    """Stop the job: drained (SIGUSR1 to the batch shell: the job's supervisor stops the
    routers and lets the engines finish), cancelled after ``stop_before_limit`` seconds if
    still there; ``now``: cancelled at once. The line to print."""
    rec = find_job(dep, slurm, job, strict=True, echo=echo)
    if rec is None:
        return f"{dep.name}: no job recorded in {dep.run_dir() / RECORD}: nothing to stop"
    q = slurm.queue(rec.job)
    if q is None or not q.active:
        return f"{dep.name}: job {rec.job} is not running (it has ended already)"
    if now or q.state != "RUNNING":
        slurm.cancel(rec.job)
        _wait_gone(slurm, rec.job, 30.0)
        return f"{dep.name}: job {rec.job} stopped (cancelled)"
    echo(f"{dep.name}: job {rec.job}: draining (up to {dep.stop_before_limit}s; Ctrl-C cancels "
         f"it at once)")
    slurm.cancel(rec.job, drain=True)
    try:
        gone = _wait_gone(slurm, rec.job, float(dep.stop_before_limit))
    except KeyboardInterrupt:
        gone = False
    if gone:
        return f"{dep.name}: job {rec.job} stopped (drained)"
    slurm.cancel(rec.job)
    _wait_gone(slurm, rec.job, 30.0)
    return f"{dep.name}: job {rec.job} stopped (cancelled)"


def _wait_gone(slurm: Slurm, job: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        try:
            q = slurm.queue(job)
            if q is None or not q.active:
                return True
        except SlurmUnavailable:
            pass
        if time.monotonic() >= deadline:
            return False
        _sleep(min(POLL, max(0.0, deadline - time.monotonic())) or 0.01)

