"""The ``sgl-gen`` command line. The one error boundary: expected errors print short and map to
the documented exit codes; anything else is a bug and keeps its traceback."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from generator.errors import EXIT_INVALID, SglGenError
from generator.options import settings_from_cli


def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options every command that reads a topology takes (the README documents them)."""
    opts = [
        click.option("--set", "sets", multiple=True, metavar="PATH=VALUE",
                     help="Set any topology field, e.g. --set runtime.python=/opt/venv/bin/python."),
        click.option("--hf-checkpoint", help="Shorthand for --set deployment.hf_checkpoint=..."),
        click.option("--total-gpus", type=click.IntRange(min=1),
                     help="Shorthand for --set deployment.total_gpus=... (slime --rollout-num-gpus)"),
        click.option("--num-gpus-per-engine", type=click.IntRange(min=1),
                     help="Shorthand for --set deployment.num_gpus_per_engine=..."),
        click.option("--gpus-per-node", type=click.IntRange(min=1),
                     help="Shorthand for --set cluster.gpus_per_node=... (default 8)"),
        click.option("--nodes", type=click.IntRange(min=1),
                     help="Shorthand for --set cluster.nodes=..."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _settings(kw: dict[str, Any]) -> list[Any]:
    return settings_from_cli(
        kw.pop("sets"), hf_checkpoint=kw.pop("hf_checkpoint"), total_gpus=kw.pop("total_gpus"),
        num_gpus_per_engine=kw.pop("num_gpus_per_engine"), gpus_per_node=kw.pop("gpus_per_node"),
        nodes=kw.pop("nodes"))


def _boundary(f: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except SglGenError as exc:
            for line in exc.lines():
                click.echo(line, err=True)
            sys.exit(exc.exit_code)
    return wrapper


def _warn(plan_or_topo: Any) -> None:
    for w in getattr(plan_or_topo, "warnings", ()):
        click.echo(w if isinstance(w, str) else w.format(), err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sgl-gen")
def main() -> None:
    """Compile an SGLang serving topology into launch artifacts."""


@main.command()
@click.argument("file", type=click.Path(dir_okay=True))
@_common
@_boundary
def validate(file: str, **kw: Any) -> None:
    """Check FILE; print every problem as FILE:LINE:COL: path: message (exit 1 if any)."""
    from generator.pipeline import compile_plan

    plan = compile_plan(file, _settings(kw))
    _warn(plan)
    engines = sum(len(m.engines) for m in plan.models)
    click.echo(f"{file}: valid: {len(plan.models)} model(s), {engines} engine(s), "
               f"{len(plan.nodes)} node(s)")


@main.command("plan")
@click.argument("file", type=click.Path(dir_okay=True))
@_common
@click.option("--json", "as_json", is_flag=True, help="Print plan.json instead of the table.")
@click.option("--local", is_flag=True, help="Map every node to 127.0.0.1 (as `up --local`).")
@_boundary
def plan_cmd(file: str, as_json: bool, local: bool, **kw: Any) -> None:
    """Show where every engine and router of FILE runs: GPUs, ports, URLs."""
    from generator.pipeline import compile_plan
    from generator.planfile import plan_json
    from generator.report import plan_table

    plan = compile_plan(file, _settings(kw), local=local)
    _warn(plan)
    _targets(None, plan)  # the plan of a default render: say what its targets ignore
    click.echo(plan_json(plan) if as_json else plan_table(plan), nl=False)


def _targets(value: str | None, plan: Any) -> tuple[str, ...]:
    from generator.render import AVAILABLE_TARGETS, default_targets

    if value is None:
        return _warn_container(plan, default_targets(plan))
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    for n in names:
        if n not in AVAILABLE_TARGETS:
            raise SglGenError(f"--target: unknown target {n!r} "
                              f"(choose from {', '.join(AVAILABLE_TARGETS)})", exit_code=2)
    return _warn_container(plan, names)


def _warn_container(plan: Any, targets: tuple[str, ...]) -> tuple[str, ...]:
    """Say so when bash or systemd artifacts will ignore ``runtime.container``; ``targets``."""
    from generator.slurm import container_warning

    warning = container_warning(plan, targets)
    if warning:
        click.echo(warning, err=True)
    return targets


@main.command()
@click.argument("file", type=click.Path(dir_okay=True))
@_common
@click.option("-o", "--output", "out_dir", default="out", show_default=True,
              help="Output directory; files go to OUTPUT/<deployment>/.")
@click.option("--target", "target", metavar="LIST",
              help="Comma-separated targets: bash,systemd,slurm (default: bash,systemd, plus slurm "
                   "when the topology has cluster.slurm).")
@click.option("--rehearse", is_flag=True,
              help="Swap the engine command for the stdlib rehearsal engine; nothing else changes.")
@click.option("--local", is_flag=True, help="Map every node to 127.0.0.1 (as `up --local`).")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 if OUTPUT/<deployment>/ differs from a fresh render.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the summary line.")
@_boundary
def render(file: str, out_dir: str, target: str | None, rehearse: bool, local: bool,
           check: bool, quiet: bool, **kw: Any) -> None:
    """Render FILE into launch artifacts under OUTPUT/<deployment>/."""
    from pathlib import Path

    from generator.pipeline import compile_plan
    from generator.render import render as render_plan
    from generator.write import diff_tree, write_tree

    plan = compile_plan(file, _settings(kw), local=local)
    _warn(plan)
    arts = render_plan(plan, _targets(target, plan), rehearse=rehearse)
    root = Path(out_dir) / plan.name
    changes = diff_tree(root, arts) if check else write_tree(root, arts)
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.action] = counts.get(c.action, 0) + 1
        if c.action != "identical" and not quiet:
            click.echo(f"{c.action:<9} {root / c.path}")
    summary = ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))
    if check:
        # a foreign file (not in MANIFEST.sha256) is kept by a render too: not out of date
        dirty = sum(n for a, n in counts.items() if a not in ("identical", "foreign"))
        if dirty:
            click.echo(f"{root}: out of date ({summary}); run: sgl-gen render {file} -o {out_dir}",
                       err=True)
            sys.exit(EXIT_INVALID)
        click.echo(f"{root}: up to date ({summary})")
        return
    click.echo(f"{root}: {summary}")


def _write_render(plan: Any, out_dir: str, targets: tuple[str, ...], rehearse: bool) -> Any:
    from pathlib import Path

    from generator.render import render as render_plan
    from generator.write import write_tree

    root = Path(out_dir) / plan.name
    changes = write_tree(root, render_plan(plan, targets, rehearse=rehearse))
    for c in changes:
        if c.action == "foreign":
            click.echo(f"{c.action:<9} {root / c.path}")
    return changes


@main.command()
@click.argument("file", type=click.Path(dir_okay=True))
@_common
@click.option("-o", "--output", "out_dir", default="out", show_default=True,
              help="Output directory; files go to OUTPUT/<deployment>/, run state to OUTPUT/.run/.")
@click.option("--local", is_flag=True, help="Run every node on this machine (127.0.0.1). Required.")
@click.option("--rehearse", is_flag=True, help="Use the rehearsal engine instead of SGLang (no GPU).")
@click.option("--timeout", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Seconds to wait for engines and routers to become healthy.")
@_boundary
def up(file: str, out_dir: str, local: bool, rehearse: bool, timeout: float, **kw: Any) -> None:
    """Render FILE and start it on this machine: engines, then routers; print the router URLs."""
    from generator import local as local_run
    from generator.pipeline import compile_plan

    if not local:
        raise SglGenError("up: only --local is supported (use `sgl-gen deploy` for hosts)",
                          exit_code=2)
    plan = compile_plan(file, _settings(kw), local=True)
    _warn(plan)
    _write_render(plan, out_dir, _warn_container(plan, ("bash", "systemd")), rehearse)
    urls = local_run.up(plan, out_dir, rehearse=rehearse, timeout=timeout, echo=click.echo)
    click.echo(f"{plan.name} is up:")
    for model, url in urls:
        click.echo(f"  {model}: {url}")
    click.echo(f"stop it with: sgl-gen down {file} --local -o {out_dir}")


@main.command()
@click.argument("file", type=click.Path(dir_okay=True))
@_common
@click.option("-o", "--output", "out_dir", default="out", show_default=True,
              help="The OUTPUT given to `up`.")
@click.option("--local", is_flag=True, help="Stop what `up --local` started. Required.")
@click.option("--rehearse", is_flag=True, help="Accepted for symmetry with `up`.")
@_boundary
def down(file: str, out_dir: str, local: bool, rehearse: bool, **kw: Any) -> None:
    """Stop what `up --local` started: routers first, then engines."""
    from generator import local as local_run
    from generator.pipeline import compile_plan

    if not local:
        raise SglGenError("down: only --local is supported here", exit_code=2)
    plan = compile_plan(file, _settings(kw), local=True)
    n = local_run.down(plan, out_dir, rehearse=rehearse, echo=click.echo)
    click.echo(f"{plan.name}: stopped on {n} local node(s)" if n else
               f"{plan.name}: nothing was started from {out_dir}")


@main.command()
def schema() -> None:
    """Print the topology JSON Schema (for editors: yaml-language-server)."""
    from generator.validate import topology_schema

    click.echo(json.dumps(topology_schema(), indent=2, sort_keys=True))


from generator.cli_import import register as _register_import  # noqa: E402

_register_import(main)

from generator.cli_deploy import register as _register_deploy  # noqa: E402

_register_deploy(main)

if __name__ == "__main__":  # pragma: no cover
    main()

__all__ = ["main", "EXIT_INVALID"]
