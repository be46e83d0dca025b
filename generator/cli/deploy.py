"""``sgl-gen deploy / diff / status / logs / down``: the SSH commands (generator/deploy/).

Each takes ``FILE|OUT_DIR``: a topology (compiled and rendered in memory with the same options as
``render``) or a rendered deployment directory (``out/<deployment>/``, used as it is). ``down``
keeps its ``--local`` form (``up --local``'s counterpart), which cli/local.py implements.

``--target slurm`` (exactly that target) takes deploy, status, logs and down to the Slurm job's
life instead (generator/deploy/slurmjobs.py): submit with sbatch, follow, status, logs, scancel.
SSH-only options are then usage errors, as the Slurm-only ones (``--run-dir``, ``--job``,
``--no-wait``, ``--now``, deploy's ``-o``) are without it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from generator.cli.common import (
    boundary,
    choose_targets,
    common_options,
    json_outcome,
    note_deployment,
    out_option,
    settings,
    warn,
)
from generator.cli.local import down_local, status_local
from generator.cli.sshopts import accept_sglang_option, output_option, ssh_options, ssh_settings
from generator.errors import EXIT_DEPLOY, SglGenError


def _render_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--target", "target", metavar="LIST",
                     help="Comma-separated targets rendered and uploaded: bash,systemd "
                          "(default: bash,systemd). Each host's units run under its "
                          "supervisor (runtime.supervisor, cluster.hosts[].supervisor): "
                          "systemd needs the systemd target. Exactly `slurm`: run the "
                          "deployment as one Slurm job instead (sbatch, squeue, scancel)."),
        click.option("--rehearse", is_flag=True,
                     help="Use the rehearsal engine instead of SGLang (no GPU needed)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f





def deploy_target(source: str, kw: dict[str, Any]) -> Any:
    """FILE or OUT_DIR -> deploy.Target (its deployment noted for a JSON failure)."""
    target = _deploy_target(source, kw)
    note_deployment(target.name)
    return target


def _deploy_target(source: str, kw: dict[str, Any]) -> Any:
    """FILE or OUT_DIR -> deploy.Target; topology options only make sense with a FILE."""
    from generator.compile.pipeline import compile_plan
    from generator.deploy import target_from_dir, target_from_plan

    topology_settings = settings(kw)
    rehearse = kw.pop("rehearse", False)
    target = kw.pop("target", None)
    if target is not None and {v.strip() for v in target.split(",") if v.strip()} == {"slurm"}:
        raise SglGenError(f"--target slurm: `sgl-gen {click.get_current_context().info_name}` "
                          f"works on SSH hosts only (a Slurm job has deploy, status, logs and "
                          f"down)", exit_code=2)
    p = Path(source)
    if p.is_dir() and (p / "plan.json").is_file():
        if topology_settings or rehearse or target:
            raise SglGenError(f"{source} is a rendered deployment: it is used as it is, so "
                              f"--set/--rehearse/--target (and their shorthands) do not apply; "
                              f"re-render it, or pass the topology FILE", exit_code=2)
        return target_from_dir(p)
    plan = compile_plan(source, topology_settings)
    warn(plan)
    if plan.topology.local:
        raise SglGenError("deploy works on SSH hosts; use `sgl-gen up --local` here", exit_code=2)
    if not plan.topology.hosts:
        names = ", ".join(n.host for n in plan.nodes[:4]) + (", ..." if len(plan.nodes) > 4
                                                              else "")
        command = click.get_current_context().info_name
        here = (f"what `sgl-gen up` started on this machine: sgl-gen {command} FILE --local"
                if command in ("down", "status") else
                "`sgl-gen up` runs it on this machine")
        raise SglGenError(
            f"{source}: the topology has no hosts (cluster.hosts): its {len(plan.nodes)} "
            f"node(s) {names} are placeholders, nothing to reach over SSH (hint: bind hosts "
            f"with --inventory FILE (one host per line, or an Ansible inventory) or --set "
            f"'cluster.hosts=[{{name: a, address: 10.0.0.1}}, ...]'; --target slurm runs it as "
            f"a Slurm job; {here})", exit_code=2)
    return target_from_plan(plan, choose_targets(target, plan), rehearse)


_KEEP_SHOWN = 20


def _adopt_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--adopt", is_flag=True,
                        help="Deploy into a host root that holds files sgl-gen did not write "
                             "(no manifest there): they are kept and reported, never "
                             "removed; identical files at paths the render writes become "
                             "sgl-gen's.")(f)


class _MaxUnavailable(click.ParamType):
    name = "N|P%"

    def convert(self, value: Any, param: Any, ctx: Any) -> Any:
        from generator.deploy.rollout import parse_max_unavailable

        if isinstance(value, (int, str)) and not isinstance(value, bool):
            try:
                return parse_max_unavailable(str(value))
            except ValueError as exc:
                self.fail(str(exc), param, ctx)
        self.fail(f"{value!r} is not a number of engines or a percentage", param, ctx)


def _rollout_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--max-unavailable", type=_MaxUnavailable(), default=None,
                     help="Engines of one model and role restarted at once: N, or P% of the "
                          "role's engines (at least 1); never the role's last serving one "
                          "(default: runtime.rollout.max_unavailable, else 1)."),
        click.option("--drain", type=click.FloatRange(min=0, max=3600), default=None,
                     help="Seconds an engine taken out of its router may finish its requests "
                          "in before it stops (default: runtime.rollout.drain, else 30)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _run_dir_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--run-dir", "run_dir", type=click.Path(file_okay=False),
                        help="With --target slurm: the job's submit directory, where it writes "
                             "its logs, state and endpoints (default: sgl-runs/<deployment>; "
                             "on a filesystem the nodes share).")(f)


def _slurm_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--job", "job", metavar="ID",
                     help="With --target slurm: this job instead of the one recorded in the run "
                          "directory.")(f)
    return _run_dir_option(f)


def echo_err(text: str) -> None:
    click.echo(text, err=True)


def _changes_text(result: Any, title: str) -> str:
    from generator.deploy import table

    ch = result.changes
    lines = [title]
    for h, text in sorted((result.supervisors or {}).items()):
        lines.append(f"  {h}: supervisor {text}")
    for h in sorted(ch.upload):
        n_up, n_rm, n_mode = len(ch.upload[h]), len(ch.remove.get(h, [])), len(ch.chmod.get(h, []))
        keep, adopt = ch.keep.get(h, []), ch.adopt.get(h, [])
        inst, uninst = ch.install.get(h, []), ch.uninstall.get(h, [])
        if inst or uninst or ch.enable.get(h):
            lines.append(f"  {h}: systemd: install {len(inst)} unit file(s)"
                         + (f", remove {len(uninst)}" if uninst else "")
                         + (f", enable {len(ch.enable[h])}" if ch.enable.get(h) else "")
                         + ", daemon-reload")
            lines += [f"    + {n}" for n in inst]
            lines += [f"    - {n}" for n in uninst]
        if n_up or n_rm or n_mode or keep or adopt:
            lines.append(f"  {h}: upload {n_up} file(s)" + (f", chmod {n_mode}" if n_mode else "")
                         + (f", remove {n_rm}" if n_rm else "")
                         + (f", adopt {len(adopt)}" if adopt else "")
                         + (f", keep {len(keep)} not written by sgl-gen" if keep else ""))
            lines += [f"    + {rel}" for rel in ch.upload[h]]
            lines += [f"    - {rel}" for rel in ch.remove.get(h, [])]
            lines += [f"    * {rel} (adopted: identical to the render)" for rel in adopt]
            lines += [f"    = {rel} (kept: not sgl-gen's)" for rel in keep[:_KEEP_SHOWN]]
            if len(keep) > _KEEP_SHOWN:
                lines.append(f"    = ... and {len(keep) - _KEEP_SHOWN} more (--output json "
                             f"lists them)")
    refused = [m for h in sorted(ch.refused) for m in ch.refused[h]]
    if refused:
        lines.append("deploy would refuse:")
        lines += [f"  {m}" for m in refused]
    rows = [dict(r, action=(f"{r['action']} {r['kind']}" if r["action"] != "none" else "nothing"))
            for r in result.rows]
    out = "\n".join(lines) + "\n" + table(rows, ["host", "unit", "action", "reason", "url"])
    ro = result.rollout
    if ro is not None and (ro.steps or ro.update or ro.restart or ro.start or ro.refused
                           or ro.warnings):
        out += "\n".join(ro.text()) + "\n"
    return out


def _short_container(c: Any) -> str:
    """A unit's container in the status table: its short id and status, or -."""
    if not isinstance(c, dict):
        return "-"
    st = c.get("status") or "?"
    if st != "running" and c.get("exit") is not None:
        st += f" ({c['exit']})"
    return f"{str(c.get('id') or '')[:12]} {st}"


# -- --target slurm -------------------------------------------------------------------------------

#: options of the SSH path only: with --target slurm, naming one is a usage error
_SSH_ONLY = ("hosts", "ssh_config", "known_hosts", "accept_new_host_keys", "connect_timeout",
             "dry_run", "max_unavailable", "drain", "allow_downtime", "adopt", "local", "pull",
             "accept_image_version", "accept_sglang_version")
#: options of the Slurm path only
_SLURM_ONLY = ("run_dir", "job", "no_wait", "now", "slurm_out")


def _local_only(kw: dict[str, Any]) -> None:
    """Drop the SSH and render options a ``--local`` form does not use."""
    for k in ("hosts", "ssh_config", "known_hosts", "accept_new_host_keys", "connect_timeout",
              "target"):
        kw.pop(k, None)


def _given(name: str) -> bool:
    """Whether the user named option ``name`` (not its default)."""
    from click.core import ParameterSource

    ctx = click.get_current_context()
    return ctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE,
                                              ParameterSource.ENVIRONMENT)


def _flag(name: str) -> str:
    ctx = click.get_current_context()
    for p in ctx.command.params:
        if p.name == name and isinstance(p, click.Option):
            return max(p.opts, key=len)
    return name


def _slurm_route(kw: dict[str, Any]) -> bool:
    """True when ``--target`` is exactly ``slurm``: the Slurm path. SSH-only options are then
    usage errors, and so are the Slurm-only ones on the SSH path (both named)."""
    value = kw.get("target")
    names = list(dict.fromkeys(v.strip() for v in (value or "").split(",") if v.strip()))
    slurm = "slurm" in names
    if slurm and names != ["slurm"]:
        raise SglGenError(f"--target {value}: slurm cannot be combined with other targets here "
                          f"(--target slurm runs the deployment as one Slurm job; "
                          f"{', '.join(n for n in names if n != 'slurm')} are deployed over "
                          f"SSH without it)", exit_code=2)
    params = click.get_current_context().params
    if slurm:
        for name in _SSH_ONLY:
            if name in params and _given(name):
                raise SglGenError(f"{_flag(name)}: does not apply with --target slurm (it is an "
                                  f"option of the SSH {'or local ' if name == 'local' else ''}"
                                  f"deployment)", exit_code=2)
    else:
        for name in _SLURM_ONLY:
            if name in params and _given(name):
                raise SglGenError(f"{_flag(name)}: only with --target slurm", exit_code=2)
    return slurm


def _slurm_deployment(source: str, kw: dict[str, Any], *, render_to: str | None = None,
                      before_render: Callable[[Any], None] | None = None) -> Any:
    """FILE|OUT_DIR -> slurmjobs.Deployment. ``render_to``: deploy's OUT: a FILE is rendered
    there as `render --target slurm` would (``before_render`` first sees the deployment), an
    OUT_DIR's sbatch is used as it is."""
    from generator.compile.pipeline import compile_plan
    from generator.deploy.slurmjobs import deployment_from_plan
    from generator.targets.plans import plan_dict

    topology_settings = settings(kw)
    rehearse = kw.pop("rehearse", False)
    kw.pop("target", None)
    run_dir = kw.pop("run_dir", None)
    p = Path(source)
    if p.is_dir() and (p / "plan.json").is_file():
        if topology_settings or rehearse:
            raise SglGenError(f"{source} is a rendered deployment: it is used as it is, so "
                              f"--set/--rehearse (and their shorthands) do not apply; re-render "
                              f"it, or pass the topology FILE", exit_code=2)
        plan_doc, sbatch = _read_slurm_dir(p, need_sbatch=render_to is not None)
        dep = deployment_from_plan(plan_doc, source, run_dir, sbatch)
        if before_render is not None:
            before_render(dep)
        return dep
    plan = compile_plan(source, topology_settings)
    warn(plan)
    if plan.topology.local:
        raise SglGenError("--target slurm runs a Slurm job: a local topology has none "
                          "(use `sgl-gen up --local` here)", exit_code=2)
    targets = choose_targets("slurm", plan)
    dep = deployment_from_plan(plan_dict(plan), source, run_dir)
    if render_to is None:
        return dep
    if before_render is not None:
        before_render(dep)
    from generator.cli.compile import write_render

    root, _, summary = write_render(plan, targets, rehearse, render_to, err=True)
    click.echo(f"{root}: {summary}", err=True)
    return deployment_from_plan(plan_dict(plan), source, run_dir,
                                root / "slurm" / f"{plan.name}.sbatch")


def _read_slurm_dir(out_dir: Path, *, need_sbatch: bool) -> tuple[dict[str, Any], Path | None]:
    """A rendered directory's plan.json and its slurm/<dep>.sbatch, checked as deploy checks a
    rendered directory (every file against MANIFEST.sha256)."""
    from generator.deploy.rendered import checked_files

    files = checked_files(out_dir)
    where = out_dir / "plan.json"
    try:
        plan = json.loads(files["plan.json"].decode("utf-8"))
        name = plan["deployment"]["name"]
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"deployment name {name!r}")
    except KeyError:
        raise SglGenError(f"{where}: missing or not a plan") from None
    except (UnicodeDecodeError, RecursionError, ValueError, TypeError) as exc:
        raise SglGenError(f"{where}: not a plan: {str(exc)[:200]}") from None
    rel = f"slurm/{name}.sbatch"
    if rel not in files:
        if need_sbatch:
            raise SglGenError(f"{out_dir}/{rel}: missing: {out_dir} was rendered without the "
                              f"Slurm target (hint: sgl-gen render FILE -o OUT --target slurm, "
                              f"or deploy the topology FILE with --target slurm)")
        return plan, None
    return plan, out_dir / rel


def _slurm_deploy(source: str, kw: dict[str, Any], *, out_dir: str, no_wait: bool,
                  timeout: float | None, output: str) -> None:
    from generator.deploy import slurmjobs as sj

    slurm = sj.Slurm()
    # before the render writes anything: the run directory's last job has ended
    dep = _slurm_deployment(source, kw, render_to=out_dir,
                            before_render=lambda d: sj.check_free(d, slurm))
    note_deployment(dep.name)
    rec = None
    try:
        rec = sj.submit(dep, slurm, echo_err)
        if no_wait:
            if output == "json":
                click.echo(json.dumps(sj.Submitted(rec).json(wait=False), indent=2,
                                      sort_keys=True))
            else:
                click.echo(f"submitted job {rec.job}")
            return
        done = sj.follow(dep, slurm, rec, timeout=sj.DEFAULT_WAIT if timeout is None
                         else timeout, echo=echo_err)
    except SglGenError as exc:
        if output == "json":
            click.echo(json.dumps({"deployment": dep.name, "job": rec.job if rec else None,
                                   "ok": False, "error": exc.message,
                                   "exit_code": exc.exit_code}, indent=2, sort_keys=True))
            exc.json_shown = True  # type: ignore[attr-defined]
        raise
    if output == "json":
        click.echo(json.dumps(done.json(wait=True), indent=2, sort_keys=True))
        return
    click.echo(f"{dep.name} is up (job {rec.job}); routers:")
    for model, url in done.routers.items():
        click.echo(f"  {model}: {url}")
    click.echo(f"endpoints: {rec.endpoints_file}")
    click.echo(f"logs: {rec.log_dir}")


def _slurm_status(source: str, kw: dict[str, Any], job: str | None, output: str) -> None:
    from generator.deploy import slurmjobs as sj
    from generator.deploy import table

    dep = _slurm_deployment(source, kw)
    note_deployment(dep.name)
    st = sj.status(dep, sj.Slurm(), job, echo_err)
    if output == "json":
        click.echo(st.json())
    else:
        if st.note:
            echo_err(st.note)
        click.echo(f"{dep.name}: {st.queue}")
        if st.rows:
            click.echo(table(st.rows, sj.STATUS_COLUMNS), nl=False)
    if not st.ok:
        sys.exit(EXIT_DEPLOY)


def register(main: click.Group) -> None:
    register_restart(main)

    @main.command()
    @click.argument("source", metavar="FILE|OUT_DIR", type=click.Path(dir_okay=True))
    @common_options
    @_render_options
    @ssh_options
    @click.option("--dry-run", is_flag=True, help="Connect and preflight; change nothing "
                                                  "(prints what `sgl-gen diff` prints).")
    @click.option("--timeout", type=click.FloatRange(min=1), default=None,
                  help="Seconds to wait for each step's engines and routers to become healthy "
                       "(default 600). With --target slurm: for the job's endpoints, in all "
                       "(default 1800: weights load slowly from shared storage).")
    @_rollout_options
    @click.option("--allow-downtime", is_flag=True,
                  help="Stop everything that changes at once and start it again (fastest; "
                       "requests fail meanwhile) instead of rolling engine by engine.")
    @_adopt_option
    @click.option("--pull", is_flag=True,
                  help="Container hosts: pull the image on each host first (once per host, "
                       "before anything stops); without it the image must be there.")
    @click.option("--accept-image-version", is_flag=True,
                  help="Container hosts: deploy an image whose SGLang is not the version the "
                       "topology was validated against (a warning instead of an error).")
    @accept_sglang_option
    @output_option
    @click.option("-o", "--out", "slurm_out", default=None, metavar="OUT",
                  help="With --target slurm and a FILE: render into OUT/<deployment>/ "
                       "(default: out), as `sgl-gen render FILE -o OUT --target slurm`.")
    @_run_dir_option
    @click.option("--no-wait", is_flag=True,
                  help="With --target slurm: submit, print the job id and return.")
    @boundary
    @json_outcome
    def deploy(source: str, dry_run: bool, timeout: float | None, adopt: bool, output: str,
               max_unavailable: Any, drain: float | None, allow_downtime: bool,
               slurm_out: str | None, no_wait: bool, pull: bool, accept_image_version: bool,
               accept_sglang_version: bool, **kw: Any) -> None:
        """Push FILE|OUT_DIR to its SSH hosts, roll out what changed behind the routers, wait
        until healthy. --target slurm: render, submit the job, wait for its router URLs."""
        from generator import deploy as d
        from generator.deploy import table

        if _slurm_route(kw):
            if slurm_out is not None and (Path(source) / "plan.json").is_file():
                raise SglGenError(f"-o: {source} is a rendered deployment: its sbatch is "
                                  f"submitted as it is (-o renders a topology FILE)",
                                  exit_code=2)
            return _slurm_deploy(source, kw, out_dir=slurm_out or "out", no_wait=no_wait,
                                 timeout=timeout, output=output)
        kw.pop("run_dir")
        timeout = 600 if timeout is None else timeout
        target = deploy_target(source, kw)
        opts, only = ssh_settings(kw)
        result = d.deploy(target, opts, echo=echo_err, only=only, timeout=timeout,
                          dry_run=dry_run, adopt=adopt, max_unavailable=max_unavailable,
                          drain=drain, allow_downtime=allow_downtime, pull=pull,
                          accept_image_version=accept_image_version,
                          accept_sglang_version=accept_sglang_version)
        if output == "json":
            click.echo(result.json())
            return
        if dry_run:
            click.echo(_changes_text(result, f"{target.name}: dry run, nothing changed"), nl=False)
            return
        click.echo(table(result.rows, ["host", "unit", "kind", "supervisor", "action", "url"]),
                   nl=False)
        routers = [u for u in target.units() if u.kind == "router"
                   and (not only or u.host in only)]
        click.echo(f"{target.name} is deployed" + ("; routers:" if routers else ""))
        for u in routers:
            click.echo(f"  {u.model}: {u.url}")

    @main.command("diff")
    @click.argument("source", metavar="FILE|OUT_DIR", type=click.Path(dir_okay=True))
    @common_options
    @_render_options
    @ssh_options
    @_rollout_options
    @click.option("--allow-downtime", is_flag=True, help="As deploy's.")
    @_adopt_option
    @output_option
    @boundary
    @json_outcome
    def diff_cmd(source: str, adopt: bool, output: str, max_unavailable: Any,
                 drain: float | None, allow_downtime: bool, **kw: Any) -> None:
        """What `deploy` would change, per host and unit, and its rollout plan (nothing is
        changed)."""
        from generator import deploy as d

        target = deploy_target(source, kw)
        opts, only = ssh_settings(kw)
        result = d.diff(target, opts, echo=echo_err, only=only, adopt=adopt,
                        max_unavailable=max_unavailable, drain=drain,
                        allow_downtime=allow_downtime)
        if output == "json":
            click.echo(result.json())
            return
        title = f"{target.name}: " + ("no changes" if result.changes.noop() else "changes")
        click.echo(_changes_text(result, title), nl=False)

    @main.command()
    @click.argument("source", metavar="FILE|OUT_DIR", type=click.Path(dir_okay=True))
    @common_options
    @_render_options
    @ssh_options
    @output_option
    @_slurm_options
    @click.option("--local", is_flag=True, help="What `up` started on this machine.")
    @click.option("-o", "--out", "out_dir", default="out", show_default=True,
                  help="With --local: the OUTPUT given to `up` (default: where `up` recorded "
                       "the run).")
    @boundary
    @json_outcome
    def status(source: str, output: str, run_dir: str | None, job: str | None, local: bool,
               out_dir: str, **kw: Any) -> None:
        """Per unit: supervisor, state, pid, restarts and last exit (systemd), healthy, URL
        (exit 3 unless all run and are healthy). --target slurm: the job's state, then per
        unit its nodes, state, restarts, CPUs and memory. --local: what `up` started here."""
        from generator import deploy as d
        from generator.deploy import table

        if local:
            _local_only(kw)
            return status_local(source, out_dir, _given("out_dir"), output, **kw)
        if _given("out_dir"):
            raise SglGenError("-o/--out: only with --local", exit_code=2)
        if _slurm_route(kw):
            return _slurm_status(source, dict(kw, run_dir=run_dir), job, output)
        target = deploy_target(source, kw)
        opts, only = ssh_settings(kw)
        rows = d.status(target, opts, echo=echo_err, only=only)
        if output == "json":
            click.echo(json.dumps({"deployment": target.name, "units": rows}, indent=2,
                                  sort_keys=True))
        else:
            cols = ["host", "unit", "kind", "supervisor", "state", "pid", "restarts",
                    "last_exit", "healthy", "url"]
            if any(r.get("container") for r in rows):
                cols.insert(6, "container")
            click.echo(table([dict(r, container=_short_container(r.get("container")))
                              for r in rows], cols), nl=False)
        if any(r["state"] != "running" or r["healthy"] is False for r in rows):
            sys.exit(EXIT_DEPLOY)

    @main.command()
    @click.argument("source", metavar="FILE|OUT_DIR", type=click.Path(dir_okay=True))
    @click.argument("units", nargs=-1)
    @common_options
    @_render_options
    @ssh_options
    @click.option("-n", "--lines", type=click.IntRange(min=0), default=50, show_default=True,
                  help="Lines of each log to print (its last N).")
    @click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
    @_slurm_options
    @boundary
    def logs(source: str, units: tuple[str, ...], lines: int, follow: bool,
             run_dir: str | None, job: str | None, **kw: Any) -> None:
        """Print the logs of UNITS (default: all) from their hosts: the journal under systemd,
        logs/<unit>.log under bash. --target slurm: the job's output (without UNITS), then each
        unit's per-rank logs; -f until the job ends."""
        from generator import deploy as d

        if _slurm_route(kw):
            from generator.deploy import slurmjobs as sj

            dep = _slurm_deployment(source, dict(kw, run_dir=run_dir))
            return sj.logs(dep, sj.Slurm(), job, units, lines=lines, follow_=follow,
                           out=click.echo, echo=echo_err)
        target = deploy_target(source, kw)
        opts, only = ssh_settings(kw)
        if only:
            raise SglGenError("logs: name units instead of --hosts", exit_code=2)
        d.logs(target, opts, echo=echo_err, units=units, lines=lines, follow=follow, out=click.echo)

    @main.command()
    @click.argument("source", metavar="FILE|OUT_DIR", type=click.Path(dir_okay=True))
    @common_options
    @_render_options
    @ssh_options
    @out_option("With --local: the OUT given to `up` (default: where `up` recorded the run).",
                default="out")
    @click.option("--local", is_flag=True, help="Stop what `up --local` started on this machine.")
    @_slurm_options
    @click.option("--now", is_flag=True,
                  help="With --target slurm: cancel the job at once instead of letting it drain.")
    @boundary
    def down(source: str, out_dir: str, local: bool, run_dir: str | None, job: str | None,
             now: bool, **kw: Any) -> None:
        """Stop the deployment: routers on every host first, then engines (systemd: stopped
        and disabled; every file stays). --target slurm: the job drains (routers stop,
        engines finish their requests), then is cancelled if still there."""
        if _slurm_route(kw):
            from generator.deploy import slurmjobs as sj

            dep = _slurm_deployment(source, dict(kw, run_dir=run_dir))
            click.echo(sj.down(dep, sj.Slurm(), job, now=now, echo=echo_err))
            return None
        if local:
            _local_only(kw)
            return down_local(file=source, out_dir=out_dir, out_given=_given("out_dir"), **kw)
        if _given("out_dir"):  # (--local forgotten: never on to the SSH hosts instead)
            raise SglGenError("-o/--out: only with --local (the OUT given to `up`)", exit_code=2)
        from generator import deploy as d

        target = deploy_target(source, kw)
        opts, only = ssh_settings(kw)
        n = d.down(target, opts, echo=echo_err, only=only)
        click.echo(f"{target.name}: stopped {n} unit(s)")


def register_restart(main: click.Group) -> None:
    @main.command()
    @click.argument("source", metavar="FILE|OUT_DIR", type=click.Path(dir_okay=True))
    @click.argument("units", nargs=-1)
    @common_options
    @_render_options
    @ssh_options
    @click.option("--rolling", is_flag=True,
                  help="In batches behind their routers, as deploy rolls a change: what restart "
                       "always does (accepted, as before).")
    @_rollout_options
    @click.option("--allow-downtime", is_flag=True,
                  help="Also restart a role's only serving engines (together; that role has "
                       "no worker meanwhile).")
    @click.option("--timeout", type=click.FloatRange(min=1), default=600, show_default=True,
                  help="Seconds to wait for each engine and router step.")
    @boundary
    def restart(source: str, units: tuple[str, ...], rolling: bool, drain: float | None,
                max_unavailable: Any, allow_downtime: bool, timeout: float, **kw: Any) -> None:
        """Restart the engines of UNITS (default: all) in batches behind their routers."""
        from generator import deploy as d

        target = deploy_target(source, kw)
        opts, only = ssh_settings(kw)
        if only:
            raise SglGenError("restart: name units instead of --hosts", exit_code=2)
        done = d.restart_rolling(target, opts, echo=echo_err, units=units, timeout=timeout,
                                 drain=drain, max_unavailable=max_unavailable,
                                 allow_downtime=allow_downtime)
        click.echo(f"{target.name}: restarted {len(done)} engine(s): {', '.join(done)}")
