"""What every command module of the CLI shares: the topology options (:func:`common_options`),
the one error boundary (:func:`boundary`: expected errors print short and map to the documented
exit codes; anything else is a bug and keeps its traceback), warnings, and the ``--target`` rule
(:func:`choose_targets`).

Imports nothing of generator.cli; the command modules import it.
"""

from __future__ import annotations

import functools
import json
import os
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
        click.option("--inventory", metavar="FILE",
                     help="cluster.hosts from FILE: one host per line, or an Ansible INI/YAML "
                          "inventory (ansible_host, ansible_user, ansible_port)."),
        click.option("--model-config", "model_configs", multiple=True, metavar="NAME=DIR",
                     help="Model NAME's config.json (or its directory) for the model-aware "
                          "checks, for a model that lives only on the hosts."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _renamed(new: click.Option, old_dest: str, old_flag: str, new_flags: str) -> Callable[..., Any]:
    """A decorator adding option ``new`` and, hidden, its old spelling ``old_flag`` (dest
    ``old_dest``): the old one still works, with a note on stderr; both, disagreeing, is a
    usage error."""
    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from click.core import ParameterSource

            old = kwargs.pop(old_dest, None)
            if old is not None:
                ctx = click.get_current_context()
                dest = new.name or ""
                if ctx.get_parameter_source(dest) == ParameterSource.COMMANDLINE \
                        and kwargs[dest] != old:
                    raise click.UsageError(f"{old_flag} {old} and {new_flags} {kwargs[dest]} "
                                           "disagree (they are one option)")
                click.echo(f"note: {old_flag} is now {new_flags} for `sgl-gen "
                           f"{ctx.command_path.split(' ', 1)[-1]}`; {old_flag} still works",
                           err=True)
                kwargs[dest] = old
                # the old spelling is the user naming the value, as the new one is (`down
                # --local --output DIR` must not fall back to the recorded run)
                ctx.set_parameter_source(dest, ParameterSource.COMMANDLINE)
            return f(*args, **kwargs)
        hidden = click.option(old_flag, old_dest, hidden=True, default=None,
                              type=new.type, help=f"Old spelling of {new_flags}.")
        return hidden(_attach(new)(wrapper))
    return deco


def _attach(option: click.Option) -> Callable[..., Any]:
    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        params = f.__dict__.setdefault("__click_params__", [])
        params.append(option)
        return f
    return deco


def out_option(help: str, default: str | None = None, dest: str = "out_dir"
               ) -> Callable[..., Any]:
    """``-o/--out PATH``: where a command writes (a directory or a file). ``--output PATH``,
    its old spelling, still works (with a note): ``--output`` now means ``--format``'s
    text|json on the commands that print reports."""
    new = click.Option(["-o", "--out", dest], default=default, show_default=default is not None,
                       help=help)
    return _renamed(new, f"{dest}_old_spelling", "--output", "-o/--out")


def format_option(choices: tuple[str, ...] = ("text", "json")) -> Callable[..., Any]:
    """``--format text|json``: how a report is printed (``output`` in the command). Its old
    spelling ``--output text|json`` still works (with a note)."""
    new = click.Option(["--format", "output"], type=click.Choice(list(choices)),
                       default="text", show_default=True,
                       help="text tables, or one JSON document on stdout.")
    return _renamed(new, "output_old_spelling", "--output", "--format")


def topology_words(absolute: bool = False) -> list[str]:
    """The topology options the running command was given, as command-line words (for a
    command it prints that must compile the same plan: ``down`` after ``up``); ``absolute``:
    with the files they name (``--inventory``, ``--model-config``) as absolute paths, for a
    command run from another directory."""
    ctx = click.get_current_context()
    names = {p.name for p in ctx.command.params if isinstance(p, click.Option)}
    words: list[str] = []
    for p in ctx.command.params:
        if not isinstance(p, click.Option) or p.name not in _TOPOLOGY_PARAMS or p.name not in names:
            continue
        value = ctx.params.get(p.name)
        flag = max(p.opts, key=len)
        for v in (value if isinstance(value, tuple) else (value,)):
            if v is None:
                continue
            if absolute and p.name == "inventory":
                v = os.path.abspath(v)
            elif absolute and p.name == "model_configs" and "=" in v:
                name, _, folder = v.partition("=")
                v = f"{name}={os.path.abspath(os.path.expanduser(folder))}"
            words += [flag, str(v)]
    return words


_TOPOLOGY_PARAMS = ("sets", "hf_checkpoint", "total_gpus", "rollout_num_gpus",
                    "num_gpus_per_engine", "rollout_num_gpus_per_engine", "gpus_per_node",
                    "nodes", "inventory", "model_configs")


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
    inventory = kw.pop("inventory", None)
    out = settings_from_cli(
        kw.pop("sets"), kw.pop("model_configs", ()), hf_checkpoint=kw.pop("hf_checkpoint"),
        total_gpus=kw.pop("total_gpus"),
        num_gpus_per_engine=kw.pop("num_gpus_per_engine"), gpus_per_node=kw.pop("gpus_per_node"),
        nodes=kw.pop("nodes"))
    if inventory is not None:
        from generator.compile.inventory import inventory_setting

        out.append(inventory_setting(inventory, warn=lambda line: click.echo(line, err=True)))
    return out


def boundary(f: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except SglGenError as exc:
            for line in exc.lines():
                click.echo(line, err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            # Ctrl-C: the documented 130 (click would print "Aborted!" and exit 1)
            click.echo("interrupted", err=True)
            sys.exit(130)
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
