"""``sgl-gen validate / plan / render / schema``: the commands that compile a topology and write
nothing but the render (generator.compile, generator.targets, generator.write)."""

from __future__ import annotations

import json
import sys
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
from generator.errors import EXIT_INVALID, SglGenError


@click.command()
@click.argument("file", type=click.Path(dir_okay=True))
@common_options
@boundary
def validate(file: str, **kw: Any) -> None:
    """Check FILE; print every problem as FILE:LINE:COL: path: message (exit 1 if any)."""
    from generator.compile.pipeline import compile_plan

    plan = compile_plan(file, settings(kw))
    warn(plan)
    engines = sum(len(m.engines) for m in plan.models)
    click.echo(f"{file}: valid: {len(plan.models)} model(s), {engines} engine(s), "
               f"{len(plan.nodes)} node(s)")


@click.command("plan")
@click.argument("file", type=click.Path(dir_okay=True))
@common_options
@click.option("--json", "as_json", is_flag=True, help="Print plan.json instead of the table.")
@click.option("--local", is_flag=True, help="Map every node to 127.0.0.1 (as `up --local`).")
@click.option("--against", "against", metavar="OLD",
              help="Summarise what deploying FILE would change on hosts that run OLD (a "
                   "rendered directory, e.g. the base branch's out/<deployment>/, or its "
                   "plan.json): per model and unit added, removed, moved, restarted (and why), "
                   "updated, unchanged, and the capacity per role. Offline.")
@click.option("--target", "target", metavar="LIST",
              help="With --against: the targets FILE is rendered with (default: as render).")
@click.option("--format", "output", type=click.Choice(["text", "json", "markdown"]), default=None,
              help="With --against: text (default), one JSON document, or Markdown for a pull "
                   "request's comment.")
@boundary
@json_outcome
def plan_cmd(file: str, as_json: bool, local: bool, against: str | None, target: str | None,
             output: str | None, **kw: Any) -> None:
    """Show where every engine and router of FILE runs: GPUs, ports, URLs; with --against
    OLD, what a deploy of it onto OLD would change."""
    from generator.compile.pipeline import compile_plan

    if against is None:
        for name, value in (("--format", output), ("--target", target)):
            if value is not None:
                raise SglGenError(f"{name}: applies only with --against OLD", exit_code=2)
    elif as_json:
        raise SglGenError("--json prints plan.json; with --against use --format json",
                          exit_code=2)
    plan = compile_plan(file, settings(kw), local=local)
    note_deployment(plan.name)
    warn(plan)
    targets = choose_targets(target, plan)  # (the plan of a render: says what targets ignore)
    if against is not None:
        click.echo(plan_against(plan, targets, against, output or "text"), nl=False)
        return
    from generator.targets.docs import plan_table
    from generator.targets.plans import plan_json

    click.echo(plan_json(plan) if as_json else plan_table(plan), nl=False)


def plan_against(plan: Any, targets: tuple[str, ...], against: str, output: str) -> str:
    """``plan --against``: the review of deploying ``plan`` onto OLD, as text, JSON or
    Markdown."""
    from generator.deploy.review import read_old, review, review_markdown, review_text
    from generator.deploy.spec import target_from_plan
    from generator.targets.plans import plan_dict

    old = read_old(against)
    new = target_from_plan(plan, targets, old.rehearse)
    doc = review(json.loads(json.dumps(plan_dict(plan))), new, old, against)
    if output == "json":
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"
    return review_markdown(doc) if output == "markdown" else review_text(doc)


@click.command()
@click.argument("file", type=click.Path(dir_okay=True))
@common_options
@out_option("Output directory; files go to OUT/<deployment>/.", default="out")
@click.option("--target", "target", metavar="LIST",
              help="Comma-separated targets: bash,systemd,slurm (default: bash,systemd, plus slurm "
                   "when the topology has cluster.slurm).")
@click.option("--rehearse", is_flag=True,
              help="Swap the engine command for the stdlib rehearsal engine; nothing else changes.")
@click.option("--local", is_flag=True, help="Map every node to 127.0.0.1 (as `up --local`).")
@click.option("--check", is_flag=True,
              help="Write nothing; exit 1 if OUT/<deployment>/ differs from a fresh render.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the summary line.")
@boundary
def render(file: str, out_dir: str, target: str | None, rehearse: bool, local: bool,
           check: bool, quiet: bool, **kw: Any) -> None:
    """Render FILE into launch artifacts under OUTPUT/<deployment>/."""
    from generator.compile.pipeline import compile_plan

    plan = compile_plan(file, settings(kw), local=local)
    warn(plan)
    root, counts, summary = write_render(plan, choose_targets(target, plan), rehearse, out_dir,
                                         check=check, quiet=quiet)
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


def write_render(plan: Any, targets: tuple[str, ...], rehearse: bool, out_dir: str, *,
                 check: bool = False, quiet: bool = False, err: bool = False
                 ) -> tuple[Path, dict[str, int], str]:
    """Render ``plan`` into ``out_dir/<deployment>/`` under write_tree's ownership rules
    (``check``: compare only), reporting each file that is not identical (on stderr with
    ``err``); (root, count per action, the summary text)."""
    from generator.targets.render import render as render_plan
    from generator.write import diff_tree, write_tree

    arts = render_plan(plan, targets, rehearse=rehearse)
    root = Path(out_dir) / plan.name
    changes = diff_tree(root, arts) if check else write_tree(root, arts)
    counts: dict[str, int] = {}
    for c in changes:
        counts[c.action] = counts.get(c.action, 0) + 1
        if c.action != "identical" and not quiet:
            click.echo(f"{c.action:<9} {root / c.path}", err=err)
    return root, counts, ", ".join(f"{n} {a}" for a, n in sorted(counts.items()))


@click.command()
@click.option("--path", "as_path", is_flag=True,
              help="Print where the installed schema file is instead (for an editor's "
                   "yaml-language-server: $schema= line).")
def schema(as_path: bool) -> None:
    """Print the topology JSON Schema (for editors: yaml-language-server)."""
    if as_path:
        from generator.paths import SCHEMAS

        click.echo(str((SCHEMAS / "topology.schema.json").resolve()))
        return
    from generator.compile.validate import topology_schema

    click.echo(json.dumps(topology_schema(), indent=2, sort_keys=True))


def register(main: click.Group) -> None:
    for command in (validate, plan_cmd, render, schema):
        main.add_command(command)
