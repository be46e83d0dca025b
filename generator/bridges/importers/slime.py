"""``sgl-gen import slime``: a slime ``--sglang-config`` file (or slime's legacy
``--prefill-num-servers`` flag) plus the facts slime takes from its command line -> a topology.

Lossless: the file's models, groups (also ``encoder`` and ``placeholder``), overrides and the legacy
``engine_groups`` key are kept as written; the command-line facts become ``deployment`` /
``cluster`` / ``--set`` fields, so the result needs no options to validate. The mutual exclusions
of slime's documentation are errors: a config file with ``--prefill-num-servers`` or with
``--rollout-external``.
"""

from __future__ import annotations

from typing import Any

from generator import __version__
from generator.bridges.importers.common import deployment_name, dump, topology_text
from generator.compile.loader import load_file, parse_text
from generator.compile.options import Setting, apply_settings, parse_path
from generator.compile.pipeline import compile_plan  # noqa: F401 (re-exported for callers)
from generator.compile.place import place
from generator.compile.resolve import resolve
from generator.errors import SglGenError


def _legacy_pd(prefill_servers: int, total: int | None, per_engine: int | None) -> dict[str, Any]:
    """What slime builds from ``--prefill-num-servers M``: one model, M prefill engines and the
    remaining rollout GPUs as decode engines of the same width."""
    if total is None or per_engine is None:
        raise SglGenError("--prefill-num-servers needs --rollout-num-gpus and "
                          "--rollout-num-gpus-per-engine (slime derives the groups from them)",
                          exit_code=2)
    prefill = prefill_servers * per_engine
    if prefill >= total:
        raise SglGenError(f"--prefill-num-servers {prefill_servers} x {per_engine} GPUs leaves no "
                          f"GPU of --rollout-num-gpus {total} for decode", exit_code=2)
    return {"sglang": [{"name": "default", "server_groups": [
        {"worker_type": "prefill", "num_gpus": prefill},
        {"worker_type": "decode", "num_gpus": total - prefill},
    ]}]}


def import_slime(file: str | None, settings: list[Setting], *, prefill_num_servers: int | None,
                 rollout_external: bool, router_port: int | None) -> str:
    """The topology YAML text (commented), validated; raises SglGenError / TopologyError."""
    if file is not None and prefill_num_servers is not None:
        raise SglGenError("--prefill-num-servers and an --sglang-config file are mutually "
                          "exclusive in slime: PD is configured by the file's prefill/decode "
                          "groups", exit_code=2)
    if rollout_external:
        raise SglGenError("--rollout-external is mutually exclusive with --sglang-config in "
                          "slime: external engines have their own topology (export it from a "
                          "plan with `sgl-gen export slime-args`)", exit_code=2)
    named = {s.path: s.value for s in settings}
    if file is not None:
        data, smap = load_file(file)
        source = f"slime --sglang-config {file}"
    else:
        if prefill_num_servers is None:
            raise SglGenError("give a slime --sglang-config FILE or --prefill-num-servers N",
                              exit_code=2)
        data = _legacy_pd(prefill_num_servers, named.get(("deployment", "total_gpus")),
                          named.get(("deployment", "num_gpus_per_engine")))
        smap = parse_text(dump(data), "--prefill-num-servers")[1]
        source = f"slime --prefill-num-servers {prefill_num_servers}"
    if not isinstance(data, dict):
        raise SglGenError(f"{file}: a slime --sglang-config file is a mapping with a 'sglang' list")
    extra = list(settings)
    if router_port is not None:
        extra.append(Setting(parse_path("sglang[0].router.port"), router_port,
                             "--sglang-router-port"))
    if "name" not in (data.get("deployment") or {}) and not any(
            st.path == ("deployment", "name") for st in settings):
        named_by = "from the file name" if file else "the default: no file to name it after"
        extra.append(Setting(("deployment", "name"), deployment_name(file, "slime"),
                             f"deployment.name ({named_by})"))
    apply_settings(data, smap, extra)
    place(resolve(data, smap))  # every positioned error against the user's own file
    first = [k for k in ("deployment", "cluster", "runtime", "router") if k in data]
    ordered = {k: data[k] for k in first + [k for k in data if k not in first]}
    facts = ", ".join(s.option for s in extra if not s.option.startswith("deployment.name ("))
    name_lines = [f"deployment.name {s.value!r}: {s.option.partition('(')[2].rstrip(')')} "
             "(--set deployment.name=... to choose one)."
             for s in extra if s.option.startswith("deployment.name (")]
    return topology_text([
        f"Imported from {source} by sgl-gen {__version__} (`sgl-gen import slime`).",
        f"Command-line facts written into the file: {facts or 'none'}.", *name_lines,
        "Models, groups and overrides are kept exactly as slime reads them."], ordered)
