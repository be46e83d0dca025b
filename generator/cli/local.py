"""``sgl-gen up --local`` and ``down --local``: run a render on this machine (generator.local).

``down`` itself is registered by cli/deploy.py (its SSH form); for ``--local`` it calls
:func:`down_local` here, so this module imports nothing of the deploy commands.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from generator.cli.common import (
    boundary,
    common_options,
    out_option,
    settings,
    topology_words,
    warn,
    warn_container,
)
from generator.errors import SglGenError


def _write_render(plan: Any, out_dir: str, targets: tuple[str, ...], rehearse: bool) -> Any:
    from pathlib import Path

    from generator.targets.render import render as render_plan
    from generator.write import write_tree

    root = Path(out_dir) / plan.name
    changes = write_tree(root, render_plan(plan, targets, rehearse=rehearse))
    for c in changes:
        if c.action == "foreign":
            click.echo(f"{c.action:<9} {root / c.path}")
    return changes


@click.command()
@click.argument("file", type=click.Path(dir_okay=True))
@common_options
@out_option("Output directory; files go to OUT/<deployment>/, run state to OUT/.run/.",
            default="out")
@click.option("--local", is_flag=True,
              help="Every node on this machine (127.0.0.1): what up always does (accepted, as "
                   "before; `sgl-gen deploy` runs on hosts).")
@click.option("--rehearse", is_flag=True, help="Use the rehearsal engine instead of SGLang (no GPU).")
@click.option("--timeout", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Seconds to wait for engines and routers to become healthy.")
@click.option("--keep-on-failure", is_flag=True,
              help="When engines or routers fail to come up, leave what started running (to "
                   "look at) and print the down command, instead of stopping it.")
@boundary
def up(file: str, out_dir: str, local: bool, rehearse: bool, timeout: float,
       keep_on_failure: bool, **kw: Any) -> None:
    """Render FILE and start it on this machine: engines, then routers; print the router URLs.
    On failure it stops what it started (--keep-on-failure leaves it)."""
    import shlex

    from generator import local as local_run
    from generator.compile.pipeline import compile_plan

    down_command = shlex.join(["sgl-gen", "down", file, *topology_words(), "--local",
                               "-o", out_dir])
    # the record's command is run later, from anywhere: every path in it absolute
    recorded_down = shlex.join(["sgl-gen", "down", os.path.abspath(file),
                                *topology_words(absolute=True), "--local",
                                "-o", str(Path(out_dir).resolve())])
    plan = compile_plan(file, settings(kw), local=True)
    warn(plan)
    _write_render(plan, out_dir, warn_container(plan, ("bash", "systemd")), rehearse)
    urls = local_run.up(plan, out_dir, rehearse=rehearse, timeout=timeout, echo=click.echo,
                        file=file, down_command=down_command, keep_on_failure=keep_on_failure,
                        recorded_down=recorded_down)
    click.echo(f"{plan.name} is up:")
    for model, url in urls:
        click.echo(f"  {model}: {url}")
    click.echo(f"status: {down_command.replace(' down ', ' status ', 1)}")
    click.echo(f"stop it with: {down_command}")


def _local_run(file: str, out_dir: str, out_given: bool, kw: dict[str, Any]) -> tuple[Any, str]:
    """The plan of ``FILE --local`` and the OUTPUT its run is in: the one given, else the one
    ``up`` recorded for the deployment (when nothing runs from the default)."""
    from generator import local as local_run
    from generator.compile.pipeline import compile_plan

    plan = compile_plan(file, settings(kw), local=True)
    if local_run.state_root(out_dir, plan).exists():
        return plan, out_dir
    rec = local_run.recorded_run(plan.name)
    if rec is None or not local_run.state_root(rec["out"], plan).exists():
        return plan, out_dir
    if out_given:
        raise SglGenError(f"{plan.name}: nothing was started from {out_dir}; `up` ran it from "
                          f"{rec['out']}: {rec['down']}", exit_code=2)
    click.echo(f"{plan.name}: the run `up` recorded is in {rec['out']}", err=True)
    return plan, rec["out"]


def down_local(file: str, out_dir: str, rehearse: bool, out_given: bool = False,
               **kw: Any) -> None:
    """``down FILE --local``: stop what `up --local` started, routers first, then engines. ``kw``
    holds the topology options (``common_options``); called inside the command's boundary."""
    from generator import local as local_run

    plan, out_dir = _local_run(file, out_dir, out_given, kw)
    n = local_run.down(plan, out_dir, rehearse=rehearse, echo=click.echo)
    local_run.forget_run(plan.name, out_dir)
    click.echo(f"{plan.name}: stopped on {n} local node(s)" if n else
               f"{plan.name}: nothing was started from {out_dir}")


def status_local(file: str, out_dir: str, out_given: bool, output: str, **kw: Any) -> None:
    """``status FILE --local``: per unit of what `up` started, its state, pid and health (exit 3
    unless every unit runs and is healthy)."""
    import json
    import sys

    from generator import local as local_run
    from generator.deploy import table
    from generator.errors import EXIT_DEPLOY

    plan, out_dir = _local_run(file, out_dir, out_given, kw)
    rows = local_run.status(plan, out_dir)
    if output == "json":
        click.echo(json.dumps({"deployment": plan.name, "out": out_dir, "units": rows},
                              indent=2, sort_keys=True))
    else:
        click.echo(table(rows, ["host", "unit", "kind", "state", "pid", "healthy", "url"]),
                   nl=False)
    if not rows or any(r["state"] != "running" or r["healthy"] is False for r in rows):
        sys.exit(EXIT_DEPLOY)


def register(main: click.Group) -> None:
    main.add_command(up)
