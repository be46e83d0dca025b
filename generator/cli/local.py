"""``sgl-gen up --local`` and ``down --local``: run a render on this machine (generator.local).

``down`` itself is registered by cli/deploy.py (its SSH form); for ``--local`` it calls
:func:`down_local` here, so this module imports nothing of the deploy commands.
"""

from __future__ import annotations

from typing import Any

import click

from generator.cli.common import boundary, common_options, settings, warn, warn_container
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
@click.option("-o", "--output", "out_dir", default="out", show_default=True,
              help="Output directory; files go to OUTPUT/<deployment>/, run state to OUTPUT/.run/.")
@click.option("--local", is_flag=True, help="Run every node on this machine (127.0.0.1). Required.")
@click.option("--rehearse", is_flag=True, help="Use the rehearsal engine instead of SGLang (no GPU).")
@click.option("--timeout", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Seconds to wait for engines and routers to become healthy.")
@boundary
def up(file: str, out_dir: str, local: bool, rehearse: bool, timeout: float, **kw: Any) -> None:
    """Render FILE and start it on this machine: engines, then routers; print the router URLs."""
    from generator import local as local_run
    from generator.compile.pipeline import compile_plan

    if not local:
        raise SglGenError("up: only --local is supported (use `sgl-gen deploy` for hosts)",
                          exit_code=2)
    plan = compile_plan(file, settings(kw), local=True)
    warn(plan)
    _write_render(plan, out_dir, warn_container(plan, ("bash", "systemd")), rehearse)
    urls = local_run.up(plan, out_dir, rehearse=rehearse, timeout=timeout, echo=click.echo)
    click.echo(f"{plan.name} is up:")
    for model, url in urls:
        click.echo(f"  {model}: {url}")
    click.echo(f"stop it with: sgl-gen down {file} --local -o {out_dir}")


def down_local(file: str, out_dir: str, rehearse: bool, **kw: Any) -> None:
    """``down FILE --local``: stop what `up --local` started, routers first, then engines. ``kw``
    holds the topology options (``common_options``); called inside the command's boundary."""
    from generator import local as local_run
    from generator.compile.pipeline import compile_plan

    plan = compile_plan(file, settings(kw), local=True)
    n = local_run.down(plan, out_dir, rehearse=rehearse, echo=click.echo)
    click.echo(f"{plan.name}: stopped on {n} local node(s)" if n else
               f"{plan.name}: nothing was started from {out_dir}")


def register(main: click.Group) -> None:
    main.add_command(up)
