"""``sgl-gen check``: a deploy's preflight on the SSH hosts, alone (README: Truth before
launch). The SSH options and the FILE|OUT_DIR handling are the deploy commands'."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from generator.cli.common import boundary, common_options, json_outcome
from generator.cli.deploy import deploy_target, echo_err
from generator.cli.sshopts import accept_sglang_option, output_option, ssh_options, ssh_settings
from generator.errors import EXIT_DEPLOY


def register(main: click.Group) -> None:
    @main.command("check")
    @click.argument("source", metavar="FILE|OUT_DIR", type=click.Path(dir_okay=True))
    @common_options
    @ssh_options
    @click.option("--accept-image-version", is_flag=True, help="As deploy's.")
    @accept_sglang_option
    @output_option
    @boundary
    @json_outcome
    def check_cmd(source: str, output: str, accept_image_version: bool,
                  accept_sglang_version: bool, **kw: Any) -> None:
        """What a deploy's preflight checks on the hosts, without deploying: the SGLang
        version there, the model paths, the plan's GPUs (present, no other process on them),
        NCCL's interfaces and InfiniBand devices, disk, ports (exit 3 on a problem)."""
        from generator import deploy as d

        target = deploy_target(source, kw)
        opts, only = ssh_settings(kw)
        result = d.check(target, opts, echo=echo_err, only=only,
                         accept_sglang_version=accept_sglang_version,
                         accept_image_version=accept_image_version)
        if output == "json":
            click.echo(json.dumps({"deployment": target.name, **result.as_json()}, indent=2,
                                  sort_keys=True))
        else:
            for w in result.warnings:
                click.echo(f"warning: {w}", err=True)
            for p in result.problems:
                click.echo(f"  {p}")
            click.echo(f"{target.name}: " + (
                f"{len(result.problems)} problem(s) on {len(result.hosts)} host(s)"
                if result.problems else f"{len(result.hosts)} host(s) ready"))
        if result.problems:
            sys.exit(EXIT_DEPLOY)
