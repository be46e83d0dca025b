"""``sgl-gen import skyrl``: SkyRL's ``generator`` section with ``backend: sglang`` -> a topology.

``num_inference_engines`` engines of ``inference_engine_tensor_parallel_size x
pipeline_parallel_size`` GPUs; ``expert_parallel_size`` -> ``ep_size``; a data-parallel size D > 1
becomes D times as many engines behind the router (one engine per replica);
``gpu_memory_utilization`` -> ``mem_fraction_static``, ``max_num_batched_tokens`` ->
``max_prefill_tokens``, ``max_num_seqs`` -> ``max_running_requests``, ``enable_lora`` ->
``enable_lora``, ``enable_prefix_caching: false`` -> ``disable_radix_cache: true`` (SkyRL passes
``disable_radix_cache=not enable_prefix_caching``; true is SGLang's default), ``engine_init_kwargs``
-> overrides (they win, as in SkyRL).
"""

from __future__ import annotations

from typing import Any

from generator.bridges.importers.common import Report, deployment_name, emit, server_args
from generator.compile.loader import load_file, walk
from generator.compile.options import Setting

RENAMED = {"gpu_memory_utilization": "mem_fraction_static",
           "max_num_batched_tokens": "max_prefill_tokens",
           "max_num_seqs": "max_running_requests",
           "enable_lora": "enable_lora"}
MODEL_PATH = ("trainer", "policy", "model", "path")
SIZES = ("num_inference_engines", "inference_engine_tensor_parallel_size",
         "inference_engine_pipeline_parallel_size", "inference_engine_data_parallel_size",
         "inference_engine_expert_parallel_size")


def import_skyrl(file: str, settings: list[Setting]) -> tuple[str, list[str]]:
    data, smap = load_file(file)
    report = Report(smap)
    gen = data.get("generator") if isinstance(data, dict) else None
    if not isinstance(gen, dict):
        report.error((), "no 'generator' section: SkyRL configures its inference engines there")
        report.raise_if_errors()
    assert isinstance(gen, dict)
    base = ("generator",)
    backend = gen.get("backend", "vllm")
    if backend != "sglang":
        report.error(base + ("backend",) if "backend" in gen else base,
                     f"backend is {backend!r}" + ("" if "backend" in gen else " (SkyRL's default)"),
                     "set generator.backend: sglang")
    sizes: dict[str, int] = {}
    for key in SIZES:
        value = gen.get(key, 1)
        if type(value) is not int or value < 1:
            report.error(base + (key,), f"expected a positive integer, got {value!r}")
            value = 1
        sizes[key] = value
    mapped: dict[str, Any] = {}
    for key, target in RENAMED.items():
        if key in gen:
            mapped[target] = gen[key]
    if "enable_prefix_caching" in gen:
        cache = gen["enable_prefix_caching"]
        if type(cache) is not bool:
            report.error(base + ("enable_prefix_caching",), f"expected true or false, got {cache!r}")
        elif not cache:
            mapped["disable_radix_cache"] = True
    overrides = server_args(report, mapped, base) if mapped else {}
    kwargs = gen.get("engine_init_kwargs") or {}
    overrides.update(server_args(report, kwargs, base + ("engine_init_kwargs",)))
    for key in gen:
        if key not in SIZES and key not in RENAMED and key not in (
                "backend", "engine_init_kwargs", "enable_prefix_caching"):
            report.not_mapped(base + (key,), "a SkyRL generator setting with no SGLang server "
                                             "equivalent")
    for key in data:
        if key not in ("generator", "trainer"):
            report.not_mapped((key,), "not part of SkyRL's inference engines")
    model_path = None
    for path, value in walk(data["trainer"], ("trainer",)) if "trainer" in data else ():
        if path == MODEL_PATH and isinstance(value, str):
            model_path = value
        elif not isinstance(value, (dict, list)) and path != MODEL_PATH:
            report.not_mapped(path, "a trainer setting (only trainer.policy.model.path is read)")
    report.raise_if_errors()
    tp = sizes["inference_engine_tensor_parallel_size"]
    pp = sizes["inference_engine_pipeline_parallel_size"]
    dp = sizes["inference_engine_data_parallel_size"]
    ep = sizes["inference_engine_expert_parallel_size"]
    engines = sizes["num_inference_engines"] * dp
    if pp > 1:
        overrides["pp_size"] = pp
    if ep > 1:
        overrides["ep_size"] = ep
    group: dict[str, Any] = {"worker_type": "regular", "num_gpus": engines * tp * pp,
                             "num_gpus_per_engine": tp * pp}
    if overrides:
        group["overrides"] = dict(sorted(overrides.items()))
    doc: dict[str, Any] = {"deployment": {"name": deployment_name(file, "skyrl")},
                           "sglang": [{"name": "policy", "server_groups": [group]}]}
    if model_path:
        doc["deployment"]["hf_checkpoint"] = model_path
    notes = [f"{engines} engine(s) of tp {tp} x pp {pp}"
             + (f" ({sizes['num_inference_engines']} x data parallel {dp}: one engine per "
                "replica behind the router)." if dp > 1 else ".")]
    return emit(doc, f"SkyRL {file}", "sgl-gen import skyrl", settings, notes, report)
