"""What every command module of the CLI shares: the topology options (:func:`common_options`),
the one error boundary (:func:`boundary`: expected errors print short and map to the documented
exit codes; anything else is a bug and keeps its traceback), warnings, and the ``--target`` rule
(:func:`choose_targets`).

Imports nothing of generator.cli; the command modules import it.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from typing import Any

import click

from generator.errors import SglGenError


def common_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options every command that reads a topology takes (the README documents them)."""
    opts = [
        click.option("--set", "sets", multiple=True, metavar="PATH=VALUE",
                     help="Set any topology field, e.g. --set runtime.python=/opt/venv/bin/python."),
        click.option("--hf-checkpoint", help="Shorthand for --set deployment.hf_checkpoint=..."),
        click.option("--total-gpus", type=click.IntRange(min=1),
                     help="Shorthand for --set deployment.total_gpus=... (slime --rollout-num-gpus)"),
        click.option("--rollout-num-gpus", type=click.IntRange(min=1),
                     help="slime's name for --total-gpus."),
        click.option("--num-gpus-per-engine", type=click.IntRange(min=1),
                     help="Shorthand for --set deployment.num_gpus_per_engine=..."),
        click.option("--rollout-num-gpus-per-engine", type=click.IntRange(min=1),
                     help="slime's name for --num-gpus-per-engine."),
        click.option("--gpus-per-node", type=click.IntRange(min=1),
                     help="Shorthand for --set cluster.gpus_per_node=... (default 8)"),
        click.option("--nodes", type=click.IntRange(min=1),
                     help="Shorthand for --set cluster.nodes=..."),
        click.option("--model-config", "model_configs", multiple=True, metavar="NAME=DIR",
                     help="Model NAME's config.json (or its directory) for the model-aware "
                          "checks, for a model that lives only on the hosts."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


#: slime's flag names, accepted by every topology command: (slime's, sgl-gen's)
SLIME_NAMES = (("rollout_num_gpus", "total_gpus"),
               ("rollout_num_gpus_per_engine", "num_gpus_per_engine"))


def settings(kw: dict[str, Any]) -> list[Any]:
    """The topology options of ``kw`` (popped) as ``--set`` settings."""
    # imported here: the compile stages (jsonschema, the catalog) load only for a command that
    # reads a topology, never for --help
    from generator.compile.options import settings_from_cli

    for alias, name in SLIME_NAMES:
        value = kw.pop(alias, None)
        if value is None:
            continue
        if kw.get(name) not in (None, value):
            raise SglGenError(f"--{name.replace('_', '-')} {kw[name]} and its slime name "
                              f"--{alias.replace('_', '-')} {value} disagree", exit_code=2)
        kw[name] = value
    return settings_from_cli(
        kw.pop("sets"), kw.pop("model_configs", ()), hf_checkpoint=kw.pop("hf_checkpoint"),
        total_gpus=kw.pop("total_gpus"),
        num_gpus_per_engine=kw.pop("num_gpus_per_engine"), gpus_per_node=kw.pop("gpus_per_node"),
        nodes=kw.pop("nodes"))


def boundary(f: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except SglGenError as exc:
            for line in exc.lines():
                click.echo(line, err=True)
            sys.exit(exc.exit_code)
    return wrapper


#: click context meta key: the deployment a command works on, once known (for json_outcome)
DEPLOYMENT_KEY = "sgl-gen.deployment"


def note_deployment(name: str) -> None:
    """Record the deployment the running command works on (its JSON failure names it)."""
    click.get_current_context().meta[DEPLOYMENT_KEY] = name


def json_outcome(f: Callable[..., Any]) -> Callable[..., Any]:
    """For a command with ``--output json``: exactly one JSON document on stdout in every
    outcome. A failure (``SglGenError``) prints ``{"deployment", "ok": false, "error",
    "exit_code"}`` there (the error also goes to stderr, and the exit code is the error's),
    unless the command printed its own document for it (``exc.json_shown``)."""
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except SglGenError as exc:
            if kwargs.get("output") == "json" and not getattr(exc, "json_shown", False):
                name = click.get_current_context().meta.get(DEPLOYMENT_KEY)
                click.echo(json.dumps({"deployment": name, "ok": False, "error": exc.message,
                                       "exit_code": exc.exit_code}, indent=2, sort_keys=True))
            raise
    return wrapper


def warn(plan_or_topo: Any) -> None:
    for w in getattr(plan_or_topo, "warnings", ()):
        click.echo(w if isinstance(w, str) else w.format(), err=True)


def choose_targets(value: str | None, plan: Any) -> tuple[str, ...]:
    """``--target LIST`` (None: the default targets of ``plan``), checked; warns as render does."""
    from generator.targets.render import AVAILABLE_TARGETS, default_targets

    if value is None:
        return warn_container(plan, default_targets(plan))
    names = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    for n in names:
        if n not in AVAILABLE_TARGETS:
            raise SglGenError(f"--target: unknown target {n!r} "
                              f"(choose from {', '.join(AVAILABLE_TARGETS)})", exit_code=2)
    return warn_container(plan, names)


def warn_container(plan: Any, targets: tuple[str, ...]) -> tuple[str, ...]:
    """Say so when bash or systemd artifacts will ignore ``runtime.container``; ``targets``."""
    from generator.targets.slurm import container_warning

    warning = container_warning(plan, targets)
    if warning:
        click.echo(warning, err=True)
    return targets
