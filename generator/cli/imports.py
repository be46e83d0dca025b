"""``sgl-gen import ...`` (other frameworks' configs -> topology) and ``sgl-gen export ...``
(a plan -> what other frameworks take)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from generator.cli.common import boundary, common_options, out_option, settings, warn
from generator.errors import SglGenError


def write_or_print(text: str, output: str | None) -> None:
    """The imported topology on stdout or in ``output``, its first line pointing editors at the
    installed schema (``sgl-gen schema --path``): as a path relative to the written file, or as
    a file URI on stdout (where the file will be saved is not known)."""
    import os

    from generator.bridges.importers.common import SCHEMA_LINE
    from generator.paths import SCHEMAS
    from generator.write import write_file

    schema = (SCHEMAS / "topology.schema.json").resolve()
    first, _, rest = text.partition("\n")
    assert first == SCHEMA_LINE, first
    if output is None:
        click.echo(f"# yaml-language-server: $schema={schema.as_uri()}\n{rest}", nl=False)
        return
    path = Path(output)
    if path.is_dir():
        raise SglGenError(f"{output}: is a directory", exit_code=2)
    rel = Path(os.path.relpath(schema, path.parent.resolve())).as_posix()
    text = f"# yaml-language-server: $schema={rel}\n{rest}"
    write_file(path, text.encode("utf-8"), 0o644)
    click.echo(f"wrote {path}", err=True)


def register(main: click.Group) -> None:
    @main.group("import")
    def import_group() -> None:
        """Turn another framework's SGLang configuration into a topology."""

    @import_group.command("slime")
    @click.argument("file", required=False, type=click.Path(dir_okay=False))
    @common_options
    @click.option("--prefill-num-servers", type=click.IntRange(min=1),
                  help="slime's legacy PD flag (instead of FILE).")
    @click.option("--sglang-router-port", type=click.IntRange(1, 65535),
                  help="Port of the (first) model's router.")
    @click.option("--rollout-external", is_flag=True,
                  help="Accepted to report slime's mutual exclusion with --sglang-config.")
    @out_option("Write the topology to this file instead of stdout.", dest="output")
    @boundary
    def import_slime_cmd(file: str | None, prefill_num_servers: int | None,
                         sglang_router_port: int | None, rollout_external: bool,
                         output: str | None, **kw: Any) -> None:
        """A slime --sglang-config FILE (or --prefill-num-servers) -> a commented topology."""
        from generator.bridges.importers.slime import import_slime

        text = import_slime(file, settings(kw), prefill_num_servers=prefill_num_servers,
                            rollout_external=rollout_external, router_port=sglang_router_port)
        write_or_print(text, output)

    def _framework(name: str, doc: str) -> None:
        @import_group.command(name, help=doc)
        @click.argument("file", type=click.Path(dir_okay=False))
        @common_options
        @out_option("Write the topology to this file instead of stdout.", dest="output")
        @boundary
        def cmd(file: str, output: str | None, **kw: Any) -> None:
            from importlib import import_module

            importer = getattr(import_module(f"generator.bridges.importers.{name}"), f"import_{name}")
            text, unmapped = importer(file, settings(kw))
            for line in unmapped:
                click.echo(line, err=True)
            write_or_print(text, output)

    _framework("roll", "ROLL's actor_infer SGLang strategy -> a commented topology; fields it "
                       "cannot map are reported on stderr.")
    _framework("skyrl", "SkyRL's generator section (backend: sglang) -> a commented topology; "
                        "fields it cannot map are reported on stderr.")

    @import_group.command("rlinf")
    @click.argument("file", type=click.Path(dir_okay=False))
    @common_options
    @click.option("--component", default="rollout", show_default=True,
                  help="The key under cluster.component_placement that runs the engines.")
    @click.option("--args-key", help="Top-level key of the launcher args block "
                                     "(default: router_server_args, or the one block with "
                                     "server/router keys).")
    @out_option("Write the topology to this file instead of stdout.", dest="output")
    @boundary
    def import_rlinf_cmd(file: str, component: str, args_key: str | None, output: str | None,
                         **kw: Any) -> None:
        """RLinf's SGLang server + router config -> a commented topology; fields it cannot map
        are reported on stderr."""
        from generator.bridges.importers.rlinf import import_rlinf

        text, unmapped = import_rlinf(file, settings(kw), component=component,
                                      args_key=args_key)
        for line in unmapped:
            click.echo(line, err=True)
        write_or_print(text, output)

    @main.group("export")
    def export_group() -> None:
        """Print what another framework needs from a plan."""

    @export_group.command("slime-args")
    @click.argument("file", type=click.Path(dir_okay=True))
    @common_options
    @click.option("--model", help="Model whose engines to list (default: the updated one).")
    @click.option("--local", is_flag=True, help="Map every node to 127.0.0.1 (as `up --local`).")
    @boundary
    def export_slime_args(file: str, model: str | None, local: bool, **kw: Any) -> None:
        """slime's --rollout-external --rollout-external-engine-addrs HOST:PORT ... arguments."""
        from generator.bridges.exports import pd_note, slime_external_line
        from generator.compile.pipeline import compile_plan

        plan = compile_plan(file, settings(kw), local=local)
        warn(plan)
        note = pd_note(plan, model)
        if note:
            click.echo(note, err=True)
        click.echo(slime_external_line(plan, model))

    @export_group.command("model-routers")
    @click.argument("file", type=click.Path(dir_okay=True))
    @common_options
    @click.option("--local", is_flag=True, help="Map every node to 127.0.0.1 (as `up --local`).")
    @boundary
    def export_model_routers(file: str, local: bool, **kw: Any) -> None:
        """slime's sglang_model_routers mapping {model: [ip, port]} as JSON."""
        from generator.bridges.exports import model_routers
        from generator.compile.pipeline import compile_plan

        plan = compile_plan(file, settings(kw), local=local)
        warn(plan)
        routers = model_routers(plan)
        click.echo(json.dumps({k: list(v) for k, v in routers.items()}, indent=2, sort_keys=True))
