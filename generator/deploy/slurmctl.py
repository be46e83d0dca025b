"""Slurm's commands as the CLI runs them (``sbatch``, ``squeue``, ``scontrol``, ``scancel``, with
the caller's environment), parsers of their output, and the files the CLI and the job share in a
run directory: the record ``sgl-gen-job.json`` (written here) and the job's ``state.json`` (read
here). generator/deploy/slurmjobs.py runs a job's life with them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator.errors import EXIT_DEPLOY, SglGenError, visible
from generator.redact import redact
from generator.write import write_file

#: the record the CLI writes into the run directory
RECORD = "sgl-gen-job.json"
RECORD_FORMAT = 1
#: how long one Slurm command may take before it counts as not answering
COMMAND_TIMEOUT = 60.0
#: lines of the job's stdout shown on a failure without the job's own log tail in it
TAIL_LINES = 30
#: the job's line before a failed unit's log tail: ``sgl-gen: <unit> exited; last lines of its
#: log:`` (``exited (exit 2) after 3 restart(s), no more left``, ``did not become healthy ...``)
_TAIL_MARK = re.compile(r"sgl-gen: (?P<unit>\S+) [^\n]*last lines of its log:")
_LOG = re.compile(r"(?P<unit>.+)-(?P<rank>[0-9]+)\.log\Z")
#: squeue %T states of a job that still holds (or waits for) its allocation
ACTIVE = frozenset({"PENDING", "RUNNING", "CONFIGURING", "SUSPENDED", "REQUEUED", "REQUEUE_HOLD",
                    "REQUEUE_FED", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD"})
#: pending reasons that waiting never clears: the request exceeds what the partition, the QOS or
#: the association allows a job, or names something that does not exist
DEFINITIVE = frozenset({"PartitionNodeLimit", "PartitionConfig", "PartitionTimeLimit",
                        "BadConstraints", "InvalidAccount", "InvalidQOS",
                        "DependencyNeverSatisfied", "AccountNotAllowed", "QOSNotAllowed"})
#: per-job maximums of a QOS or an association (QOSMaxNodePerJobLimit, AssocMaxGRESPerJob,
#: QOSMaxWallDurationPerJobLimit, ...): a job over one never starts. Per-user and group limits
#: (QOSMaxCpuPerUserLimit, AssocGrpGRES) clear as other jobs end: waits.
_PER_JOB_LIMIT = re.compile(r"(QOS|Assoc)Max\w*PerJob\w*\Z")
JOB_ID = re.compile(r"[0-9]+(_[0-9]+)?\Z")
def definitive(reason: str) -> bool:
    """Whether a pending job with this squeue reason (``%r``) can never start as submitted.
    ``Resources``, ``Priority``, ``Dependency``, ``BeginTime``, ``ReqNodeNotAvail`` (nodes down or
    reserved) and the per-user/group limits are waits."""
    word = re.split(r"[,\s(]", reason.strip(), maxsplit=1)[0]
    return word in DEFINITIVE or bool(_PER_JOB_LIMIT.match(word))


# -- parsing Slurm's output -----------------------------------------------------------------------

def parse_parsable(text: str) -> tuple[str, str | None]:
    """``sbatch --parsable``'s stdout (``JOBID`` or ``JOBID;CLUSTER``) -> (job id, cluster)."""
    lines = [x.strip() for x in text.splitlines() if x.strip()]
    if not lines:
        raise ValueError("sbatch printed no job id")
    job, _, cluster = lines[-1].partition(";")
    job = job.strip()
    if not JOB_ID.match(job):
        raise ValueError(f"sbatch printed {visible(lines[-1][:200])!r}, not a job id")
    return job, cluster.strip() or None


@dataclass(frozen=True)
class QueueState:
    """One job's line of ``squeue -h -o '%T|%r|%N'``."""

    state: str  # PENDING, RUNNING, COMPLETING, ...
    reason: str  # None, Resources, Priority, PartitionNodeLimit, ...
    nodes: str  # the allocation's node list ("" while pending)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def text(self) -> str:
        if self.state == "PENDING":
            return f"PENDING ({visible(self.reason)})" if self.reason not in ("", "None") \
                else "PENDING"
        if self.nodes and self.state in ("RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"):
            return f"{self.state} on {visible(self.nodes)}"
        return visible(self.state)


def parse_squeue(text: str) -> QueueState | None:
    """The first ``STATE|REASON|NODES`` line of squeue's output; None when there is none (the
    job is no longer in the queue)."""
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.strip().split("|")
        parts += [""] * (3 - len(parts))
        return QueueState(parts[0].strip().upper(), parts[1].strip(), "|".join(parts[2:]).strip())
    return None


#: keys of ``scontrol show job`` whose value is the rest of its line (paths, names with spaces)
_REST_OF_LINE = ("JobName", "Command", "WorkDir", "StdErr", "StdIn", "StdOut", "Comment",
                 "AdminComment", "SystemComment")
_KEY = re.compile(r"(?:(?<=\s)|^)([A-Za-z][A-Za-z0-9_:/.]*)=")


def parse_scontrol(text: str) -> dict[str, str]:
    """``scontrol show job|partition`` output -> {key: value}. Values are whitespace-free except
    for the keys of ``_REST_OF_LINE``, which take the rest of their line (``JobName=a b``,
    ``StdOut=/runs/my dir/x.out``). The first record only."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            if out:
                break  # records are separated by an empty line
            continue
        pos = 0
        while pos < len(line):
            m = _KEY.search(line, pos)
            if m is None:
                break
            key = m.group(1)
            if key in _REST_OF_LINE:
                out.setdefault(key, line[m.end():].strip())
                break
            nxt = _KEY.search(line, m.end())
            end = nxt.start() if nxt is not None else len(line)
            out.setdefault(key, line[m.end():end].strip())
            pos = end
    return out


def first_int(value: str | None) -> int | None:
    """``4``, ``4-4``, ``4-``: the first number; None for ``UNLIMITED``, ``N/A``, nothing."""
    m = re.match(r"\s*([0-9]+)", value or "")
    return int(m.group(1)) if m else None


# -- running Slurm's commands ---------------------------------------------------------------------

class SlurmUnavailable(SglGenError):
    """A Slurm command failed for a reason other than the job being unknown (the controller
    does not answer, ...): while following a job, one of these is reported and retried."""

    exit_code = EXIT_DEPLOY


class Slurm:
    """Slurm's commands, run with this process's environment (``SLURM_CONF`` included).
    ``cluster``: the cluster sbatch named (``JOBID;CLUSTER``), passed as ``--clusters``."""

    def __init__(self, cluster: str | None = None):
        self.cluster = cluster

    def _m(self) -> list[str]:
        return [f"--clusters={self.cluster}"] if self.cluster else []

    def run(self, argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                                  errors="replace", timeout=COMMAND_TIMEOUT, check=False,
                                  stdin=subprocess.DEVNULL)
        except FileNotFoundError as exc:
            if cwd is not None and not cwd.is_dir():
                raise SglGenError(f"{cwd}: no such directory", exit_code=EXIT_DEPLOY) from None
            raise SglGenError(f"{argv[0]} not found: run on a Slurm login node (Slurm's "
                              f"commands on PATH)", exit_code=EXIT_DEPLOY) from exc
        except PermissionError as exc:
            raise SglGenError(f"{argv[0]}: cannot run it: {exc.strerror or exc}",
                              exit_code=EXIT_DEPLOY) from None
        except subprocess.TimeoutExpired:
            raise SlurmUnavailable(f"{argv[0]} did not answer within {COMMAND_TIMEOUT:g}s "
                                   f"(is slurmctld reachable?)") from None

    def submit(self, sbatch: Path, run_dir: Path) -> tuple[str, str | None]:
        r = self.run(["sbatch", "--parsable", str(sbatch)], cwd=run_dir)
        err = _clean(r.stderr)
        if r.returncode != 0:
            hint = ("Slurm's controller cannot be reached from here: run on a login node of "
                    "the cluster (SLURM_CONF names its slurm.conf)") if unreachable(r.stderr) \
                else ("the job asks for what the topology says (cluster.nodes, gpus_per_node, "
                      "cluster.slurm: partition, account, time, extra); compare with `sinfo` "
                      "and `scontrol show partition`, fix the topology and deploy again")
            raise SglGenError(f"sbatch refused {sbatch}: {err or f'exit {r.returncode}'}\n"
                              f"hint: {hint}", exit_code=EXIT_DEPLOY)
        try:
            return parse_parsable(r.stdout)
        except ValueError as exc:
            raise SglGenError(f"sbatch {sbatch}: {exc}" + (f" ({err})" if err else ""),
                              exit_code=EXIT_DEPLOY) from None

    def queue(self, job: str) -> QueueState | None:
        """The job's line in squeue; None once Slurm no longer lists it. Raises
        SlurmUnavailable when squeue fails for another reason."""
        r = self.run(["squeue", "-h", *self._m(), f"--jobs={job}", "-o", "%T|%r|%N"])
        if r.returncode != 0:
            if "invalid job id" in r.stderr.lower():
                return None
            raise SlurmUnavailable(f"squeue failed: {_clean(r.stderr) or f'exit {r.returncode}'}")
        return parse_squeue(r.stdout)

    def show(self, what: str, name: str) -> dict[str, str] | None:
        """``scontrol show job|partition NAME`` parsed; None when Slurm does not know it (or
        scontrol fails: what it would say is extra information only)."""
        r = self.run(["scontrol", *self._m(), "show", what, name])
        if r.returncode != 0:
            return None
        got = parse_scontrol(r.stdout)
        return got or None

    def cancel(self, job: str, *, drain: bool = False) -> None:
        argv = ["scancel", *self._m(), *(["--signal=USR1", "--batch"] if drain else []), job]
        r = self.run(argv)
        if r.returncode != 0 and "invalid job id" not in r.stderr.lower() \
                and "already completing or completed" not in r.stderr.lower():
            raise SglGenError(f"{' '.join(argv)} failed: "
                              f"{_clean(r.stderr) or f'exit {r.returncode}'}",
                              exit_code=EXIT_DEPLOY)


#: what Slurm's commands say when they cannot talk to slurmctld at all
_UNREACHABLE = ("could not establish a configuration source", "unable to contact slurm controller",
                "socket timed out", "connection refused")


def unreachable(stderr: str) -> bool:
    low = stderr.lower()
    return any(m in low for m in _UNREACHABLE)


def _clean(text: str) -> str:
    return visible("; ".join(x.strip() for x in text.splitlines() if x.strip())[:2000])


@dataclass
class Record:
    """``sgl-gen-job.json``: the job deploy submitted from a run directory."""

    deployment: str
    job: str
    sbatch: str
    run_dir: str
    submitted: float
    out: str
    cluster: str | None = None

    def doc(self) -> dict[str, Any]:
        d: dict[str, Any] = {"format": RECORD_FORMAT, "deployment": self.deployment,
                             "job": self.job, "sbatch": self.sbatch, "run_dir": self.run_dir,
                             "submitted": self.submitted, "out": self.out}
        if self.cluster:
            d["cluster"] = self.cluster
        return d

    @property
    def log_dir(self) -> Path:
        return Path(self.run_dir) / f"sgl-{self.deployment}-{self.job}"

    @property
    def state_file(self) -> Path:
        return self.log_dir / "state.json"

    @property
    def endpoints_file(self) -> Path:
        return Path(self.run_dir) / f"endpoints-{self.job}.json"


def write_record(rec: Record) -> Path:
    """Write the record into its run directory atomically (generator.write.write_file)."""
    path = Path(rec.run_dir) / RECORD
    write_file(path, (json.dumps(rec.doc(), indent=2, sort_keys=True) + "\n").encode(), 0o600)
    return path


def read_record(run_dir: Path) -> Record | None:
    """The record in ``run_dir``; None when there is none. A record that is not sgl-gen's (not
    JSON, another format) is an error: it is not overwritten silently."""
    path = run_dir / RECORD
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise SglGenError(f"{path}: cannot read it ({type(exc).__name__}: "
                          f"{visible(str(exc))[:200]})\nhint: remove it, or pass --job ID",
                          exit_code=EXIT_DEPLOY) from None
    try:
        if doc["format"] != RECORD_FORMAT:
            raise ValueError(f"format {doc['format']!r}, this sgl-gen writes {RECORD_FORMAT}")
        rec = Record(str(doc["deployment"]), str(doc["job"]), str(doc["sbatch"]),
                     str(doc["run_dir"]), float(doc["submitted"]), str(doc["out"]),
                     str(doc["cluster"]) if doc.get("cluster") else None)
        if not JOB_ID.match(rec.job):
            raise ValueError(f"job {rec.job!r} is not a job id")
    except (KeyError, TypeError, ValueError) as exc:
        raise SglGenError(f"{path}: not a job record of sgl-gen ({visible(str(exc))[:200]})\n"
                          f"hint: remove it, or pass --job ID", exit_code=EXIT_DEPLOY) from None
    # the directory it is in is the run directory (a moved one too)
    return Record(rec.deployment, rec.job, rec.sbatch, str(run_dir.resolve()), rec.submitted,
                  rec.out, rec.cluster)


def read_state(rec: Record) -> dict[str, Any] | None:
    """The job's state.json (contract format 1); None while there is none (or it cannot be
    read: the job rewrites it by rename, so a read sees a whole one or none)."""
    try:
        doc = json.loads(rec.state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("units", {}), dict):
        return None
    return doc


def state_units(state: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    units = (state or {}).get("units") or {}
    return {str(k): v for k, v in units.items() if isinstance(v, dict)}


# -- what the job's files say ----------------------------------------------------------------------

def progress(state: dict[str, Any] | None) -> str:
    """What the job's state says, in one line: engines healthy n/N, routers n/M, and every
    unit that restarted, waits to restart or failed."""
    if state is None:
        return "starting (no state.json yet)"
    units = state_units(state)
    engines = [u for u in units.values() if u.get("kind") != "router"]
    routers = [u for u in units.values() if u.get("kind") == "router"]
    parts = [f"engines healthy {sum(u.get('state') == 'healthy' for u in engines)}/{len(engines)}"]
    if routers:
        parts.append(f"routers {sum(u.get('state') == 'healthy' for u in routers)}/{len(routers)}")
    notes = []
    for name, u in units.items():
        restarts = u.get("restarts") if isinstance(u.get("restarts"), int) else 0
        st = str(u.get("state"))
        if st in ("backoff", "failed") or restarts:
            what = {"backoff": "waits to restart", "failed": "failed"}.get(st, st)
            extra = [f"restarts {restarts}"] if restarts else []
            if u.get("last_exit"):
                extra.append(f"last {u['last_exit']}")
            notes.append(f"{name} {what}" + (f" ({', '.join(extra)})" if extra else ""))
    phase = str(state.get("phase") or "starting")
    text = f"{phase}: " + ", ".join(parts)
    if notes:
        text += "; " + "; ".join(notes)
    return visible(text)


def failure_text(out_path: str, unit: str | None, *, tail: int = TAIL_LINES) -> list[str]:
    """The job's stdout from the first ``sgl-gen: <unit> exited; last lines of its log:`` on
    (the job redacted those lines; they are redacted again here), else its last ``tail``
    lines."""
    try:
        text = Path(out_path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return [f"(no job output: {out_path}: {exc.strerror or exc})"]
    lines = text.splitlines()
    marker = _TAIL_MARK
    for i, line in enumerate(lines):
        m = marker.search(line)
        if m and (unit is None or m.group("unit") == unit):
            return [redact(x) for x in lines[i:]]
    for i, line in enumerate(lines):
        if marker.search(line):
            return [redact(x) for x in lines[i:]]
    shown = lines[-tail:] if tail else []
    return [f"(last {len(shown)} line(s) of {out_path})"] + [redact(x) for x in shown]


def unit_logs(log_dir: Path, unit: str) -> list[tuple[int, Path]]:
    """A unit's per-rank logs in ``log_dir`` (``<unit>-<rank>.log``), by rank."""
    try:
        names = os.listdir(log_dir)
    except OSError:
        return []
    out = []
    for n in names:
        m = _LOG.match(n)
        if m and m.group("unit") == unit:
            out.append((int(m.group("rank")), log_dir / n))
    return sorted(out)


def tail_lines(path: Path, n: int, limit: int = 16 << 20) -> tuple[list[str], int]:
    """The last ``n`` lines of ``path`` (decoded, at most ``limit`` bytes read) and its size."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        if n <= 0:
            return [], size
        pos, data = size, b""
        while pos > 0 and data.count(b"\n") <= n and size - pos < limit:
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    lines = data.decode("utf-8", errors="replace").splitlines()
    return lines[-n:], size
