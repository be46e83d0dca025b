"""Checks against the model itself, where its ``config.json`` is readable at validate time: the
model's ``model_config`` (a directory holding config.json, or the file; ``--model-config
NAME=DIR`` on the command line), else a ``model_path`` that is a local directory with one.

What SGLang only finds out after minutes of loading weights, or not at all before its first
request (its argument resolution does not read the model's shape):

* tensor parallelism divides the attention heads, and the KV heads divide it or it divides them
  (SGLang's attention layers assert both; with attention data parallelism the attention TP is
  ``tp_size / attn_dp_size``); pipeline stages do not outnumber the layers;
* ``ep_size`` divides the routed experts of a MoE model;
* encoder groups (encoder disaggregation) need a multimodal architecture;
* ``context_length`` is within what the model allows (SGLang derives it as its
  ``get_context_length`` does, below);
* with ``cluster.gpu`` known, an estimate of the weights each GPU holds against
  ``mem_fraction_static`` x the GPU's memory.

And, for every model, the argument rules SGLang 0.5.23's own resolution lets through (measured:
tests/test_real_parser.py runs them through it): ``mem_fraction_static`` outside (0, 1), an
EAGLE-family speculative algorithm with no draft model (SGLang takes the model itself only for
architectures that bundle their MTP layers), pipeline parallelism with attention data
parallelism.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace
from typing import Any

from generator.compile.model import GroupSpec, ModelSpec, Topology
from generator.errors import Diagnostic, TopologyError

#: GPU memory as nvidia-smi reports it (memory.total, MiB), by the name ``cluster.gpu`` takes
GPUS: dict[str, int] = {
    "a10-24gb": 23028,
    "a100-40gb": 40960,
    "a100-80gb": 81920,
    "b200-180gb": 183359,
    "h100-80gb": 81559,
    "h100-94gb": 95830,
    "h20-96gb": 97871,
    "h200-141gb": 143771,
    "l4-24gb": 23034,
    "l40s-48gb": 46068,
    "rtx4090-24gb": 24564,
}

#: when the topology does not set mem_fraction_static: SGLang picks one from the GPU memory and
#: the parallelism (0.83 for one 80 GB GPU); the estimate uses this upper bound
DEFAULT_MEM_FRACTION = 0.9

#: the keys SGLang reads the context length from, in its order (hf_transformers_utils)
CONTEXT_KEYS = ("max_sequence_length", "seq_length", "max_seq_len", "model_max_length",
                "max_position_embeddings")

_MULTIMODAL_KEYS = ("vision_config", "audio_config", "speech_config", "visual")


@dataclass(frozen=True)
class ModelFacts:
    source: str  # where config.json was read, for messages
    architecture: str
    heads: int | None
    kv_heads: int | None
    layers: int | None
    experts: int | None
    multimodal: bool
    context: int | None
    params: int | None  # an estimate
    quantization: str | None  # config.json's quantization_config.quant_method

    @property
    def mla(self) -> bool:
        return self.kv_heads is None


#: above this a config value is not a model's shape (and would make the estimates loop)
_MAX_DIM = 10**8


def _int(cfg: dict[str, Any], *keys: str) -> int | None:
    for k in keys:
        v = cfg.get(k)
        if isinstance(v, int) and not isinstance(v, bool) and 0 < v <= _MAX_DIM:
            return v
    return None


def context_length(cfg: dict[str, Any]) -> int | None:
    """The context length SGLang derives from a config (``get_context_length``)."""
    rope = cfg.get("rope_scaling")
    factor: float = 1
    if isinstance(rope, dict):
        f = rope.get("factor", 1)
        ok = isinstance(f, (int, float)) and not isinstance(f, bool) and math.isfinite(f) \
            and 0 < f <= 1024
        factor = f if ok else 1
        if "original_max_position_embeddings" in rope or rope.get("rope_type") == "llama3":
            factor = 1
    for key in CONTEXT_KEYS:
        v = _int(cfg, key)
        if v is not None:
            return int(factor * v)
    return None


def _param_estimate(cfg: dict[str, Any], heads: int | None, kv: int | None,
                    experts: int | None) -> int | None:
    hidden, layers = _int(cfg, "hidden_size"), _int(cfg, "num_hidden_layers")
    vocab, inter = _int(cfg, "vocab_size"), _int(cfg, "intermediate_size")
    if not (hidden and layers and vocab and heads):
        return None
    head_dim = _int(cfg, "head_dim") or hidden // heads
    embed = vocab * hidden * (1 if cfg.get("tie_word_embeddings") else 2)
    if _int(cfg, "kv_lora_rank"):  # multi-head latent attention (DeepSeek V2/V3)
        q_lora, kv_lora = _int(cfg, "q_lora_rank"), _int(cfg, "kv_lora_rank") or 0
        nope, rope = _int(cfg, "qk_nope_head_dim") or 0, _int(cfg, "qk_rope_head_dim") or 0
        v_dim = _int(cfg, "v_head_dim") or head_dim
        q = hidden * q_lora + q_lora * heads * (nope + rope) if q_lora \
            else hidden * heads * (nope + rope)
        attn = q + hidden * (kv_lora + rope) + kv_lora * heads * (nope + v_dim) \
            + heads * v_dim * hidden
    else:
        attn = hidden * heads * head_dim * 2 + hidden * (kv or heads) * head_dim * 2
    dense_mlp = 3 * hidden * (inter or 4 * hidden)
    mlp_total = dense_mlp * layers
    if experts:
        moe_inter = _int(cfg, "moe_intermediate_size") or inter or 4 * hidden
        shared = _int(cfg, "n_shared_experts") or 0
        dense_layers = _int(cfg, "first_k_dense_replace") or 0
        step = _int(cfg, "decoder_sparse_step") or 1
        # layers i in [dense_layers, layers) with (i + 1) % step == 0
        moe_layers = max(0, layers // step - min(dense_layers, layers) // step)
        moe = 3 * hidden * moe_inter * (experts + shared) + hidden * experts
        mlp_total = moe * moe_layers + dense_mlp * (layers - moe_layers)
    return embed + attn * layers + mlp_total


def _bytes_per_param(checkpoint_quant: str | None, args: dict[str, Any]) -> float:
    quant = args.get("quantization") or checkpoint_quant
    if isinstance(quant, str):
        q = quant.lower()
        if "fp8" in q or "w8a8" in q or q in ("modelopt", "compressed-tensors", "qoq"):
            return 1.0
        if q in ("awq", "gptq", "awq_marlin", "gptq_marlin", "marlin", "bitsandbytes", "mxfp4",
                 "modelopt_fp4", "w4afp8", "gguf") or "int4" in q or "fp4" in q:
            return 0.5
    dtype = args.get("dtype")
    if dtype in ("float32", "float"):
        return 4.0
    return 2.0  # bfloat16 / float16 (SGLang's "auto" serves a float32 checkpoint in 16 bits)


def facts_of(cfg: dict[str, Any], source: str) -> ModelFacts:
    text = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else None
    body = {**cfg, **text} if text else cfg
    archs = cfg.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else "?"
    heads = _int(body, "num_attention_heads", "n_head", "num_heads")
    mla = _int(body, "kv_lora_rank") is not None
    kv = None if mla else (_int(body, "num_key_value_heads", "multi_query_group_num") or heads)
    experts = _int(body, "num_experts", "n_routed_experts", "num_local_experts", "moe_num_experts")
    qc = cfg.get("quantization_config")
    quant = qc.get("quant_method") if isinstance(qc, dict) and isinstance(
        qc.get("quant_method"), str) else None
    multimodal = any(k in cfg for k in _MULTIMODAL_KEYS) or "VL" in arch or \
        "ConditionalGeneration" in arch
    return ModelFacts(source=source, architecture=arch, heads=heads, kv_heads=kv,
                      layers=_int(body, "num_hidden_layers", "n_layer", "num_layers"),
                      experts=experts, multimodal=multimodal, context=context_length(body),
                      params=_param_estimate(body, heads, kv, experts), quantization=quant)


def _config_file(path: str) -> str:
    return os.path.join(path, "config.json") if os.path.isdir(path) else path


def _read(topo: Topology, m: ModelSpec) -> tuple[ModelFacts | None, list[Diagnostic]]:
    """The model's facts, or None when no config is at hand; an unreadable ``model_config`` is
    an error (it was asked for), a local model directory without one is skipped."""
    if m.model_config:
        where = f"{m.path}.model_config"
        file = _config_file(m.model_config)
        cfg, reason = _load_config(file)
        if reason is not None:
            return None, [topo.diag(where, f"cannot read the model's config.json at {file}: "
                                           f"{reason}", "point model_config at the directory "
                                           "holding the model's config.json (or at the file)")]
        return facts_of(cfg, file), []
    file = os.path.join(m.model_path, "config.json")
    if not os.path.isabs(m.model_path):
        return None, []
    cfg, reason = _load_config(file)
    # no config there, or not one: the hosts' copy is what counts (sgl-gen check)
    return (None, []) if reason is not None else (facts_of(cfg, file), [])


#: a model's config.json is a few KiB; a larger file is not one
_MAX_CONFIG = 16 << 20


def _load_config(file: str) -> tuple[dict[str, Any], str | None]:
    """config.json as a JSON object, or the reason it is not one (never raises, never blocks
    on a FIFO or a device)."""
    try:
        st = os.stat(file)
    except OSError as exc:
        return {}, exc.strerror or str(exc)
    if not os.path.isfile(file):
        return {}, "not a regular file"
    if st.st_size > _MAX_CONFIG:
        return {}, f"{st.st_size:,} bytes: too large for a model config"
    try:
        with open(file, encoding="utf-8") as f:
            cfg = json.load(f)
    except OSError as exc:
        return {}, exc.strerror or str(exc)
    except (ValueError, RecursionError) as exc:
        return {}, f"not JSON ({str(exc)[:200] or type(exc).__name__})"
    if not isinstance(cfg, dict):
        return {}, "not a JSON object"
    return cfg, None


def _where(topo: Topology, g: GroupSpec, key: str, fallback: str) -> str:
    """The path of the key that sets server argument ``key`` for group ``g`` (its overrides,
    else defaults), under whichever spelling the file uses (``context-length``, an alias);
    ``fallback`` when neither sets it."""
    from generator.compile.catalog import load_catalog
    from generator.compile.loader import format_path, parse_display_path

    values = getattr(topo.smap, "values", {})
    catalog = load_catalog(topo.sglang_version)
    for base in (f"{g.path}.overrides", "defaults"):
        prefix = parse_display_path(base)
        for path in values:
            if len(path) == len(prefix) + 1 and path[:len(prefix)] == prefix:
                spec = catalog.get(str(path[-1]))
                if spec is not None and spec.name == key:
                    return format_path(path)
    return fallback


def _width_path(topo: Topology, m: ModelSpec, g: GroupSpec) -> str:
    """Where the group's engine width is written: the group, its model, or the deployment."""
    from generator.compile.loader import parse_display_path

    values = getattr(topo.smap, "values", {})
    for p in (f"{g.path}.num_gpus_per_engine", f"{m.path}.num_gpus_per_engine",
              "deployment.num_gpus_per_engine"):
        if parse_display_path(p) in values:
            return p
    return g.path


def _positive(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def _attn_dp(args: dict[str, Any]) -> int:
    """The attention data-parallel width: ``attn_dp_size``, or (before it) ``dp_size`` with
    ``enable_dp_attention``; 1 without attention DP."""
    return _positive(args.get("attn_dp_size")) or (
        _positive(args.get("dp_size")) if args.get("enable_dp_attention") else None) or 1


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def group_problems(topo: Topology, m: ModelSpec, g: GroupSpec, facts: ModelFacts
                   ) -> tuple[list[Diagnostic], list[Diagnostic]]:
    errors: list[Diagnostic] = []
    warnings: list[Diagnostic] = []
    args = dict(g.server_args)
    src = f"{facts.architecture}, {facts.source}"
    width = _width_path(topo, m, g)
    if g.worker_type == "encoder":
        # an --encoder-only engine loads the vision/audio tower, not the language model
        if not facts.multimodal:
            errors.append(topo.diag(f"{g.path}.worker_type",
                                    f"encoder groups need a multimodal model, and {src} has no "
                                    "vision or audio encoder",
                                    "encoder disaggregation serves a VLM's vision tower; serve "
                                    "this model without encoder groups"))
        return errors, warnings
    attn_dp = _attn_dp(args)
    attn_cp = _positive(args.get("attn_cp_size")) or 1
    attn_tp = max(1, g.tp_size // (attn_dp * attn_cp))
    parts = [f"attention DP {attn_dp}"] * (attn_dp > 1) + [f"attention CP {attn_cp}"] * (
        attn_cp > 1)
    tp_what = f"tensor parallelism {attn_tp}" + (
        f" (tp_size {g.tp_size} / {' / '.join(parts)})" if parts else "")
    kv = facts.kv_heads

    def kv_fits(t: int) -> bool:
        return not kv or (kv % t == 0 if kv >= t else t % kv == 0)

    if facts.heads and facts.heads % attn_tp:
        fits = [d for d in range(1, 65) if facts.heads % d == 0 and kv_fits(d)]
        errors.append(topo.diag(width, f"{tp_what} does not divide the model's "
                                       f"{facts.heads} attention heads ({src})",
                                f"SGLang shards heads evenly over TP ranks: use a TP of "
                                f"{', '.join(map(str, fits[-4:]))}"))
    if kv and not kv_fits(attn_tp):
        errors.append(topo.diag(width, f"{tp_what} and the model's {kv} KV heads do not "
                                       f"divide one another ({src})",
                                "SGLang splits KV heads over TP ranks, or replicates them when "
                                "there are fewer: one must divide the other"))
    if facts.layers and g.pp_size > facts.layers:
        errors.append(topo.diag(_where(topo, g, "pp_size", width),
                                f"pp_size {g.pp_size} is more pipeline stages than the model's "
                                f"{facts.layers} layers ({src})"))
    ep = args.get("ep_size", 1)
    if isinstance(ep, int) and ep > 1:
        if not facts.experts:
            errors.append(topo.diag(_where(topo, g, "ep_size", width),
                                    f"ep_size {ep} but the model has no routed experts ({src})",
                                    "expert parallelism is for MoE models: drop ep_size"))
        elif facts.experts % ep:
            errors.append(topo.diag(_where(topo, g, "ep_size", width),
                                    f"ep_size {ep} does not divide the model's {facts.experts} "
                                    f"routed experts ({src})"))
    ctx_len = args.get("context_length")
    if isinstance(ctx_len, int) and facts.context and ctx_len > facts.context:
        flag = str(dict(topo.runtime.env).get("SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN", ""))
        allowed = flag.strip().lower() in ("1", "true", "yes", "on")  # SGLang's get_bool_env_var
        d = (warnings if allowed else errors)
        d.append(topo.diag(_where(topo, g, "context_length", width),
                           f"context_length {ctx_len} is longer than the model's "
                           f"{facts.context} ({src})" + (
                               ": allowed by SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN in "
                               "runtime.env" if allowed else ""),
                           "" if allowed else "SGLang refuses it at start-up unless runtime.env "
                           "sets SGLANG_ALLOW_OVERWRITE_LONGER_CONTEXT_LEN=1 (outputs may be "
                           "wrong past the trained length)"))
    if topo.gpu and facts.params and g.gpus_per_engine:
        gpu_bytes = GPUS[topo.gpu] * 2**20
        frac = args.get("mem_fraction_static")
        explicit = isinstance(frac, (int, float)) and not isinstance(frac, bool)
        fraction = float(frac) if isinstance(frac, (int, float)) and explicit \
            else DEFAULT_MEM_FRACTION
        per_gpu = facts.params * _bytes_per_param(facts.quantization, args) / g.gpus_per_engine
        budget = fraction * gpu_bytes
        what = (f"about {_gib(per_gpu)} of weights per GPU ({facts.params / 1e9:.1f}B parameters "
                f"over {g.gpus_per_engine} GPU(s))")
        limit = (f"mem_fraction_static {fraction:g}" if explicit else
                 f"at most {DEFAULT_MEM_FRACTION:g}") + f" of the {topo.gpu}'s {_gib(gpu_bytes)}"
        where = _where(topo, g, "mem_fraction_static", width)
        if per_gpu >= budget:
            errors.append(topo.diag(where, f"{what} do not fit {limit} ({_gib(budget)}; {src})",
                                    "more GPUs per engine, a quantized checkpoint, or a larger "
                                    "mem_fraction_static"))
        elif per_gpu > 0.85 * budget:
            warnings.append(topo.diag(where, f"{what} leave under {_gib(budget - per_gpu)} of "
                                             f"{limit} for the KV cache ({src})",
                                      "SGLang may start with a tiny KV cache or fail to"))
    return errors, warnings


#: architectures whose checkpoint carries its own MTP draft layers: SGLang 0.5.23 uses the model
#: itself as the EAGLE/NEXTN draft for these (speculative_hook._handle_eagle_family)
BUNDLED_DRAFT = frozenset({
    "DeepseekV32ForCausalLM", "DeepseekV3ForCausalLM", "DeepseekV4ForCausalLM",
    "Glm4MoeForCausalLM", "Glm4MoeLiteForCausalLM", "GlmMoeDsaForCausalLM",
    "BailingMoeForCausalLM", "BailingMoeV2ForCausalLM", "BailingMoeV2_5ForCausalLM",
    "MistralLarge3ForCausalLM", "PixtralForConditionalGeneration", "HYV3ForCausalLM",
    "HYV4ForCausalLM", "Qwen4ExpForConditionalGeneration",
})
_NEEDS_DRAFT = ("EAGLE", "EAGLE3", "NEXTN", "STANDALONE")


def rule_problems(topo: Topology, g: GroupSpec, facts: ModelFacts | None
                  ) -> tuple[list[Diagnostic], list[Diagnostic]]:
    """The argument rules SGLang's own checks let through (no model config needed)."""
    errors: list[Diagnostic] = []
    warnings: list[Diagnostic] = []
    args = dict(g.server_args)
    frac = args.get("mem_fraction_static")
    if isinstance(frac, (int, float)) and not isinstance(frac, bool) and not 0 < frac < 1:
        errors.append(topo.diag(_where(topo, g, "mem_fraction_static", g.path),
                                f"mem_fraction_static {frac:g} is not a fraction between 0 and 1",
                                "the share of each GPU's memory for weights and KV cache, "
                                "e.g. 0.85"))
    algo = args.get("speculative_algorithm")
    if isinstance(algo, str) and algo.upper() in _NEEDS_DRAFT \
            and not args.get("speculative_draft_model_path"):
        where = _where(topo, g, "speculative_algorithm", g.path)
        bundled = ", ".join(sorted(a.removesuffix("ForCausalLM") for a in BUNDLED_DRAFT
                                   if a.startswith(("Deepseek", "Glm4Moe"))))
        hint = ("set speculative_draft_model_path (SGLang uses the model itself only for "
                f"architectures whose checkpoint bundles its MTP layers: {bundled}, ...)")
        if facts is not None and facts.architecture in BUNDLED_DRAFT:
            pass
        elif facts is not None or algo.upper() in ("EAGLE3", "STANDALONE"):
            what = f" for {facts.architecture}" if facts is not None else ""
            errors.append(topo.diag(where, f"speculative_algorithm {algo} needs a draft model"
                                           f"{what}, and none is set", hint))
        else:
            warnings.append(topo.diag(where, f"speculative_algorithm {algo} with no draft "
                                             "model: only a model that bundles its MTP layers "
                                             "serves as its own (no model config here to tell)",
                                      hint))
    attn_dp = _attn_dp(args)
    if g.pp_size > 1 and attn_dp > 1:
        key = "attn_dp_size" if "attn_dp_size" in args else "enable_dp_attention"
        errors.append(topo.diag(_where(topo, g, key, g.path),
                                f"pipeline parallelism (pp_size {g.pp_size}) with attention data "
                                f"parallelism ({attn_dp}): SGLang does not combine them",
                                "use one of them"))
    return errors, warnings


def check_models(topo: Topology) -> Topology:
    """The model-aware checks of every model whose config is at hand; warnings join the
    topology's, errors raise TopologyError (with the warnings)."""
    errors: list[Diagnostic] = []
    warnings: list[Diagnostic] = []
    for m in topo.models:
        facts, problems = _read(topo, m)
        errors += problems
        for g in m.groups:
            if g.worker_type == "placeholder":
                continue
            e, w = rule_problems(topo, g, facts)
            if facts is not None:
                e2, w2 = group_problems(topo, m, g, facts)
                e, w = e + e2, w + w2
            errors += e
            warnings += w
    if errors:
        raise TopologyError(sorted(errors) + list(topo.warnings) + sorted(warnings))
    if not warnings:
        return topo
    return replace(topo, warnings=tuple(sorted([*topo.warnings, *warnings])))


__all__ = ["GPUS", "ModelFacts", "check_models", "context_length", "facts_of"]
