"""``sgl-gen up/down --local``: run the rendered bash artifacts of every node on this machine.

Each logical node gets a state directory ``DIR/.run/<deployment>/<host>/`` that plays the part of
the host's ``<workdir>/<deployment>/``: the node's rendered files are copied there (as a deploy
uploads them) and its own ``sgl-gen-host.sh`` starts and stops the units. Both directories follow
write.py's ownership rules: only files the render's MANIFEST.sha256 lists are installed, the state
directory gets a manifest of its own, and nothing there that sgl-gen did not write (logs, pidfiles,
a user's file) is overwritten or removed. Order, as on a cluster:
every engine on every node, wait for each rank-0 ``/health``, then the routers, then wait until
each router lists exactly its engines as healthy workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import stat
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator.compile.model import Plan
from generator.errors import DeployError, SglGenError
from generator.routerauth import api_key_env, router_auth
from generator.targets.common import Artifact, Unit, units_by_node
from generator.write import check_no_symlinks, diff_tree, owned_files, read_owned, write_tree

Echo = Callable[[str], None]


def state_root(out_dir: str | os.PathLike[str], plan: Plan) -> Path:
    return Path(out_dir).resolve() / ".run" / plan.name


@dataclass(frozen=True)
class _Node:
    host: str
    root: Path
    units: tuple[Unit, ...]


def _nodes(plan: Plan, out_dir: str | os.PathLike[str], rehearse: bool) -> list[_Node]:
    by_node = units_by_node(plan, rehearse=rehearse)
    root = state_root(out_dir, plan)
    return [_Node(n.host, root / n.host, tuple(by_node.get(n.index, ()))) for n in plan.nodes]


def _host_script(node: _Node, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, SGLGEN_ROOT=str(node.root))
    r = subprocess.run(["bash", str(node.root / "sgl-gen-host.sh"), *args], env=env,
                       capture_output=True, text=True)
    if check and r.returncode != 0:
        raise DeployError(f"{node.host}: sgl-gen-host.sh {' '.join(args)} failed "
                          f"(exit {r.returncode}): {(r.stderr or r.stdout).strip()}")
    return r


def _state_hint(node: _Node) -> str:
    # a state dir without a manifest is most likely an older sgl-gen's (before state dirs had
    # one): say how to stop what it runs without trusting it to sgl-gen
    d = shlex.quote(str(node.root))
    return (f"it is where `sgl-gen up --local` keeps a node's files; if an earlier sgl-gen "
            f"started it, stop that with `SGLGEN_ROOT={d} bash {d}/sgl-gen-host.sh stop` and "
            f"remove the directory; otherwise choose another -o")


def _host_files(plan: Plan, out_dir: str | os.PathLike[str],
                nodes: list[_Node]) -> dict[str, dict[str, Artifact]]:
    """Per host, the rendered ``hosts/<host>/`` files as they are on disk (a hand edit counts):
    only those the render's MANIFEST.sha256 lists, never through a symlink. Each state directory
    is checked as render checks its output (no symlink on the way, nothing foreign overwritten)
    before anything runs."""
    rendered = Path(out_dir) / plan.name
    owned = read_owned(rendered, "hosts/")
    base = Path(out_dir).resolve()
    out: dict[str, dict[str, Artifact]] = {}
    for n in nodes:
        prefix = f"hosts/{n.host}/"
        files = {rel[len(prefix):]: a for rel, a in owned.items() if rel.startswith(prefix)}
        if "sgl-gen-host.sh" not in files:
            raise SglGenError(f"{rendered}/{prefix}sgl-gen-host.sh: not rendered (hint: render "
                              f"{plan.name} again; `sgl-gen up` does)")
        check_no_symlinks(base, f".run/{plan.name}/{n.host}")
        diff_tree(n.root, files, hint=_state_hint(n))
        out[n.host] = files
    return out


def _installed(node: _Node) -> bool:
    """Whether the node's state directory holds an sgl-gen-host.sh that sgl-gen put there."""
    return "sgl-gen-host.sh" in owned_files(node.root, hint=_state_hint(node))


def _install(files: dict[str, Artifact], node: _Node) -> None:
    """Make the node's state dir hold the rendered files, as render writes its output: atomic
    writes, its own MANIFEST.sha256, files that are not sgl-gen's (logs/, run/) kept."""
    write_tree(node.root, files, hint=_state_hint(node))


def _http_json(url: str, timeout: float = 2.0,
               headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (http only)
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def _port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def plan_ports(plan: Plan) -> list[tuple[int, str]]:
    """Every TCP port the plan opens on this machine, with who opens it."""
    out: list[tuple[int, str]] = []
    for m in plan.models:
        r = m.router
        out += [(r.port, f"router {m.name}"), (r.prometheus_port, f"router {m.name} prometheus")]
        for e in m.engines:
            out += [(e.port, f"engine {e.id}"), (e.nccl_port, f"engine {e.id} nccl")]
            out += [(p.port, f"engine {e.id} rank {p.node_rank}") for p in e.placements
                    if p.port is not None]
            if e.bootstrap_port is not None:
                out.append((e.bootstrap_port, f"engine {e.id} bootstrap"))
            if e.dist_init_addr is not None:
                out.append((int(e.dist_init_addr.rsplit(":", 1)[1]), f"engine {e.id} dist-init"))
    return sorted(set(out))


def _tail(node: _Node, unit: str, lines: int = 20) -> str:
    log = node.root / "logs" / f"{unit}.log"
    try:
        text = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return "\n".join(f"    {line}" for line in text) or "(empty log)"


def _dead_units(node: _Node, names: set[str]) -> list[str]:
    r = _host_script(node, "status", check=False)
    dead = []
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in names and parts[1] in ("dead", "stopped"):
            dead.append(parts[0])
    return dead


def _wait(what: str, pending: dict[str, tuple[_Node, Unit, Callable[[], bool]]],
          deadline: float, echo: Echo) -> None:
    """Poll every check until all pass; a unit whose process died fails at once with its log."""
    last = -1
    while pending:
        for key, (_, _, check) in list(pending.items()):
            if check():
                pending.pop(key)
                echo(f"  ready  {key}")
        if not pending:
            return
        by_node: dict[Path, tuple[_Node, set[str]]] = {}
        for node, unit, _ in pending.values():
            by_node.setdefault(node.root, (node, set()))[1].add(unit.name)
        for node, names in by_node.values():
            dead = _dead_units(node, names)
            if dead:
                raise DeployError(f"{node.host}: {dead[0]} exited while starting; last lines of "
                                  f"its log:\n{_tail(node, dead[0])}")
        if time.monotonic() > deadline:
            key, (node, unit, _) = sorted(pending.items())[0]
            raise DeployError(f"timed out waiting for {what}: {', '.join(sorted(pending))}; "
                              f"last lines of {unit.name}'s log on {node.host}:\n"
                              f"{_tail(node, unit.name)}")
        if len(pending) != last:
            echo(f"  waiting for {len(pending)} {what}...")
            last = len(pending)
        time.sleep(0.3)


def _health_check(url: str) -> Callable[[], bool]:
    return lambda: _http_json(url)[0] == 200


def _workers_check(router_url: str, expected: set[str],
                   headers: dict[str, str] | None = None) -> Callable[[], bool]:
    def check() -> bool:
        status, body = _http_json(f"{router_url}/workers", headers=headers)
        if status != 200 or not isinstance(body, dict):
            return False
        workers = body.get("workers", [])
        urls = {w.get("url") for w in workers if isinstance(w, dict)}
        return urls == expected and all(w.get("is_healthy") for w in workers)
    return check


def runs_dir() -> Path:
    """Where ``up`` records the runs it started, per user: ``$XDG_STATE_HOME/sgl-gen/runs``
    (default ``~/.local/state/sgl-gen/runs``, also for a relative $XDG_STATE_HOME, which the
    XDG spec says to ignore), one ``<deployment>.json`` each."""
    base = os.environ.get("XDG_STATE_HOME") or ""
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "sgl-gen" / "runs"


#: a record is a few hundred bytes; anything larger is not one ``up`` wrote
_MAX_RECORD = 64 * 1024


def _read_record(path: Path) -> bytes | None:
    """The bytes of a run record that is a regular file: never through a symlink (a planted
    one names a file sgl-gen did not write), never blocking on a FIFO, at most _MAX_RECORD."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, _MAX_RECORD + 1)
    except OSError:
        return None
    finally:
        os.close(fd)
    return data if len(data) <= _MAX_RECORD else None


def recorded_run(name: str) -> dict[str, Any] | None:
    """The record ``up`` wrote for deployment ``name`` ({"out", "file", "down"}), if any: a
    record that is not what ``up`` writes (corrupt, a symlink, a FIFO, a relative or NUL-holding
    path, no down command) is none."""
    raw = _read_record(runs_dir() / f"{name}.json")
    try:
        data = json.loads(raw.decode("utf-8")) if raw is not None else None
    except ValueError:  # (UnicodeDecodeError is one)
        return None
    if not isinstance(data, dict):
        return None
    out, down_command = data.get("out"), data.get("down")
    if not (isinstance(out, str) and isinstance(down_command, str) and os.path.isabs(out)
            and "\0" not in out):
        return None
    return data


def _record(plan: Plan, out_dir: str | os.PathLike[str], file: str, down_command: str) -> None:
    from generator.write import write_file

    record = {"deployment": plan.name, "out": str(Path(out_dir).resolve()),
              "file": os.path.abspath(file), "down": down_command}
    runs_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
    path = runs_dir() / f"{plan.name}.json"
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise SglGenError(f"{path} is a symlink or not a regular file: not a record sgl-gen "
                          "wrote, left as it is")
    write_file(path,
               (json.dumps(record, indent=2, sort_keys=True) + "\n").encode(), 0o600)


def forget_run(name: str, out_dir: str | os.PathLike[str]) -> None:
    """Remove the record of ``name`` when it names ``out_dir`` (another run's stays)."""
    rec = recorded_run(name)  # (never a symlink: that one is left where it is)
    if rec is not None and rec["out"] == str(Path(out_dir).resolve()):
        (runs_dir() / f"{name}.json").unlink(missing_ok=True)


def is_running(plan: Plan, out_dir: str | os.PathLike[str], rehearse: bool = False) -> bool:
    """Whether any unit of ``plan`` started from ``out_dir`` runs."""
    return any(_installed(n) and any(
        line.split()[1:2] == ["running"]
        for line in _host_script(n, "status", check=False).stdout.splitlines())
        for n in _nodes(plan, out_dir, rehearse))


def up(plan: Plan, out_dir: str | os.PathLike[str], *, rehearse: bool, timeout: float,
       echo: Echo, file: str = "FILE", down_command: str = "sgl-gen down FILE --local",
       keep_on_failure: bool = False, recorded_down: str | None = None
       ) -> list[tuple[str, str]]:
    """Start everything; return (model, router URL) pairs. Raises DeployError on failure,
    having stopped what it started (``keep_on_failure``: left running, the error names
    ``down_command``). A started run is recorded (:func:`recorded_run`) for ``down``/``status``,
    with ``recorded_down`` (default ``down_command``): the command with absolute paths."""
    if not plan.topology.local:
        raise SglGenError("up runs on this machine only: pass --local", exit_code=2)
    nodes = _nodes(plan, out_dir, rehearse)
    files = _host_files(plan, out_dir, nodes)
    if is_running(plan, out_dir, rehearse):
        raise DeployError(f"{plan.name} is already up on this machine "
                          f"(state in {state_root(out_dir, plan)}); stop it first: "
                          f"{down_command}")
    busy = [(p, who) for p, who in plan_ports(plan) if _port_busy(p)]
    if busy:
        raise DeployError("ports already in use on this machine: " + ", ".join(
            f"{p} ({who})" for p, who in busy), )
    for n in nodes:
        _install(files[n.host], n)
    try:
        _record(plan, out_dir, file, recorded_down or down_command)
    except (OSError, SglGenError) as exc:  # only `down` without -o needs it
        echo(f"warning: cannot record this run in {runs_dir()} ({exc}): stop it with "
             f"{down_command}")
    try:
        with _sigterm_interrupts():
            return _start(plan, nodes, time.monotonic() + timeout, echo)
    except KeyboardInterrupt:
        if not keep_on_failure:
            echo("interrupted: stopping what was started")
            down(plan, out_dir, rehearse=rehearse, echo=lambda _line: None)
            forget_run(plan.name, out_dir)
        else:
            echo(f"interrupted: left running (--keep-on-failure): stop it with: {down_command}")
        raise
    except DeployError as exc:
        if keep_on_failure:
            exc.message += f"\nleft running (--keep-on-failure): stop it with: {down_command}"
        else:
            down(plan, out_dir, rehearse=rehearse, echo=lambda _line: None)
            forget_run(plan.name, out_dir)
            exc.message += ("\nstopped everything it had started (--keep-on-failure leaves "
                            "it running to look at)")
        raise


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (``timeout``, a CI cancel, ``kill``) interrupts as Ctrl-C does, so what ``up``
    started in their own sessions is stopped instead of outliving it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _start(plan: Plan, nodes: list[_Node], deadline: float, echo: Echo) -> list[tuple[str, str]]:
    echo(f"starting engines of {plan.name} on {len(nodes)} local node(s)")
    for n in nodes:
        engines = [u.name for u in n.units if u.kind == "engine"]
        if engines:
            _host_script(n, "start", *engines)
    pending = {f"{u.name} {u.health_url}": (n, u, _health_check(u.health_url))
               for n in nodes for u in n.units if u.kind == "engine" and u.health_url}
    _wait("engines", pending, deadline, echo)
    echo("starting routers")
    for n in nodes:
        routers = [u.name for u in n.units if u.kind == "router"]
        if routers:
            _host_script(n, "start", *routers)
    pending = {}
    for m in plan.models:
        node = nodes[m.router.node]
        unit = next(u for u in node.units if u.name == f"router-{m.name}")
        expected = {e.url for e in m.engines if e.worker_type != "encoder"}
        # the router's --api-key, read as its unit script reads it (environment, secrets file)
        auth = router_auth(api_key_env(m.router.argv), plan.topology.runtime.secrets_env_file)
        pending[f"router-{m.name} {m.router.url}"] = (
            node, unit, _workers_check(m.router.url, expected, auth))
    _wait("routers", pending, deadline, echo)
    return [(m.name, m.router.url) for m in plan.models]


def down(plan: Plan, out_dir: str | os.PathLike[str], *, rehearse: bool, echo: Echo) -> int:
    """Stop routers on every node, then engines; return how many nodes had state."""
    base = Path(out_dir).resolve()
    nodes = _nodes(plan, out_dir, rehearse)
    for n in nodes:
        check_no_symlinks(base, f".run/{plan.name}/{n.host}")
    nodes = [n for n in nodes if _installed(n)]
    for kind in ("router", "engine"):
        for n in nodes:
            names = [u.name for u in n.units if u.kind == kind]
            if names:
                r = _host_script(n, "stop", *names)
                for line in r.stdout.splitlines():
                    if line.endswith("stopped") or "SIGKILL" in line:
                        echo(f"  {n.host}: {line}")
    return len(nodes)


def status(plan: Plan, out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Per unit started from ``out_dir``: host, unit, kind, state (running, dead, stopped),
    pid, healthy (its /health answered 200; None when it has no health URL or does not run)
    and URL. Empty when nothing was started from there."""
    rows: list[dict[str, Any]] = []
    for n in _nodes(plan, out_dir, False):
        if not _installed(n):
            continue
        states: dict[str, tuple[str, str]] = {}
        for line in _host_script(n, "status", check=False).stdout.splitlines():
            parts = line.split(None, 2)
            if len(parts) >= 2:
                states[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "-")
        for u in n.units:
            state, pid = states.get(u.name, ("unknown", "-"))
            healthy = _health_check(u.health_url)() if state == "running" and u.health_url \
                else None
            rows.append({"host": n.host, "unit": u.name, "kind": u.kind, "state": state,
                         "pid": int(pid) if pid.isdigit() else None, "healthy": healthy,
                         "url": u.health_url.rsplit("/health", 1)[0] if u.health_url else None})
    return rows
