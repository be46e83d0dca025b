"""``sgl-gen suggest``: a service goal -> the best layout by AIConfigurator's performance
model, as a commented topology (``generator.bridges.suggest``; AIConfigurator is imported only
when the command runs)."""

from __future__ import annotations

import json
from typing import Any

import click

from generator.cli.common import boundary, json_outcome
from generator.cli.sshopts import output_option
from generator.errors import SglGenError


def register(main: click.Group) -> None:
    @main.command("suggest")
    @click.option("--model", required=True,
                  help="Hugging Face id AIConfigurator ships the config of (e.g. Qwen/Qwen3-32B), "
                       "or a directory with the model's config.json; also the model_path "
                       "written.")
    @click.option("--gpus", required=True, type=click.IntRange(min=1),
                  help="GPUs to serve on (all of them, over every node).")
    @click.option("--system", required=True,
                  help="AIConfigurator's name of the GPU system, e.g. h200_sxm, h100_sxm, "
                       "b200_sxm.")
    @click.option("--isl", required=True, type=click.IntRange(min=1),
                  help="Input sequence length (tokens per request).")
    @click.option("--osl", required=True, type=click.IntRange(min=1),
                  help="Output sequence length (tokens per request).")
    @click.option("--ttft", type=click.FloatRange(min=0, min_open=True), default=2000.0,
                  show_default=True, help="Time-to-first-token target, ms.")
    @click.option("--tpot", type=click.FloatRange(min=0, min_open=True), default=30.0,
                  show_default=True, help="Time-per-output-token target, ms.")
    @click.option("--gpus-per-node", type=click.IntRange(min=1),
                  help="GPUs per node (default: the system's, per AIConfigurator's data, "
                       "else 8).")
    @click.option("--mode", type=click.Choice(["agg", "disagg", "auto"]), default="auto",
                  show_default=True,
                  help="Aggregated engines, prefill/decode disaggregation, or whichever the "
                       "model ranks best.")
    @click.option("--top", type=click.IntRange(min=1),
                  help="Print the K best layouts of each mode, ranked, instead of the "
                       "topology (-o still writes it).")
    @output_option
    @click.option("-o", "--out", "topology_out", metavar="FILE",
                  help="Write the topology to FILE (atomically) instead of stdout.")
    @boundary
    @json_outcome
    def suggest(model: str, gpus: int, system: str, isl: int, osl: int, ttft: float,
                tpot: float, gpus_per_node: int | None, mode: str, top: int | None, output: str,
                topology_out: str | None, **_: Any) -> None:
        """From a service goal to a topology: the best SGLang layout by NVIDIA AIConfigurator's
        offline performance model (no GPU needed), as a commented topology (needs
        `pip install 'sgl-gen[suggest]'`)."""
        from generator.bridges import suggest as sg
        from generator.cli.imports import write_or_print

        if output == "json" and top is None:
            raise SglGenError("--format json prints the ranked table: give --top K", exit_code=2)
        goal = sg.Goal(model=model, gpus=gpus, system=system, isl=isl, osl=osl, ttft=ttft,
                       tpot=tpot, gpus_per_node=gpus_per_node, mode=mode, top=top or 1)
        result = sg.run_model(goal)
        text, warnings = sg.topology(result, result.best())
        for line in warnings:
            click.echo(line, err=True)
        if top is None:
            write_or_print(text, topology_out)
            return
        if topology_out is not None:
            write_or_print(text, topology_out)
        if output == "json":
            click.echo(json.dumps(sg.as_json(result), indent=2, sort_keys=True))
        else:
            click.echo(sg.table(result), nl=False)
