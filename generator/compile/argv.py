"""Exact argv for engines (from the ServerArgs catalog) and routers (from the router catalogs).

Order: the flags sgl-gen owns (model, networking, parallelism, PD, EPD), then the merged server
arguments (``defaults`` overridden by group ``overrides``, as slime does), sorted by name.
"""

from __future__ import annotations

from typing import Any

from generator.compile.catalog import load_catalog
from generator.compile.model import Engine, ModelSpec, Placement, Router, Topology
from generator.compile.routers import router_argv


def _flag(catalog: Any, name: str) -> str:
    spec = catalog.get(name)
    if spec is None:  # the catalog of this SGLang version lacks a flag sgl-gen relies on
        raise KeyError(f"sglang {catalog.version} has no server argument {name!r}")
    return str(spec.flags[0])


def engine_argv(topo: Topology, model: ModelSpec, e: Engine) -> tuple[Any, ...]:
    """Rank-0 argv (the tokens after ``python -m sglang.launch_server``) of one engine."""
    cat = load_catalog(topo.sglang_version)
    out: list[Any] = [
        _flag(cat, "model_path"), model.model_path,
        _flag(cat, "host"), e.bind_host,
        _flag(cat, "port"), str(e.port),
        _flag(cat, "tp_size"), str(e.tp_size),
        _flag(cat, "nccl_port"), str(e.nccl_port),
    ]
    if e.engine_info_bootstrap_port is not None and cat.get("engine_info_bootstrap_port"):
        out += [_flag(cat, "engine_info_bootstrap_port"), str(e.engine_info_bootstrap_port)]
    if e.nnodes > 1:
        assert e.dist_init_addr is not None  # place sets it for every multi-node engine
        out += [_flag(cat, "nnodes"), str(e.nnodes), _flag(cat, "node_rank"), "0",
                _flag(cat, "dist_init_addr"), e.dist_init_addr]
    if e.worker_type in ("prefill", "decode"):
        out += [_flag(cat, "disaggregation_mode"), e.worker_type]
    if e.worker_type == "prefill":
        out += [_flag(cat, "disaggregation_bootstrap_port"), str(e.bootstrap_port)]
    if e.worker_type == "encoder":
        out += [_flag(cat, "encoder_only")]
    if e.encoder_urls:
        out += [_flag(cat, "language_only"), _flag(cat, "encoder_urls"), *e.encoder_urls]
    for key, value in e.server_args:
        spec = cat.get(key)
        assert spec is not None  # resolve validated every key against the same catalog
        out += spec.to_argv(value)
    return tuple(out)


def placement_argv(rank0: tuple[Any, ...], e: Engine, p: Placement) -> tuple[Any, ...]:
    """The argv of one node of an engine: rank 0's with its own ``--node-rank``."""
    if e.nnodes == 1:
        return rank0
    out = list(rank0)
    i = out.index("--node-rank")
    out[i + 1] = str(p.node_rank)
    if p.port is not None:
        out[out.index("--port") + 1] = str(p.port)
    # every rank binds its own node's address (ranks >= 1 serve a health endpoint there)
    out[out.index("--host") + 1] = p.address
    return tuple(out)


#: router settings sgl-gen always writes out (so a reviewer sees them); router.args overrides each.
#: Weight loading can take many minutes, hence the long start-up and request timeouts; a health
#: check every 10 s (the routers' own default is 60 s) takes a dead engine out of rotation quickly.
ROUTER_DEFAULTS: dict[str, Any] = {
    "worker_startup_timeout_secs": 1800,
    "request_timeout_secs": 1800,
    "health_check_interval_secs": 10,
    "health_check_timeout_secs": 5,
}
#: header smg reads the routing key from (consistent_hashing); written out explicitly
SMG_ROUTING_KEY_HEADER = "x-smg-routing-key"


def router_argv_for(router: Router, pd: bool, engines: tuple[Engine, ...] | list[Engine]
                    ) -> tuple[Any, ...]:
    """The router's argv (after ``python -m <module>``) with its model's engines as workers."""
    kwargs: dict[str, Any] = {
        "host": router.bind_host,
        "port": router.port,
        "prometheus_port": router.prometheus_port,
        "policy": router.policy,
        "extra_args": {**ROUTER_DEFAULTS, **dict(router.args)},
    }
    hashing = "consistent_hashing" in (router.policy, router.prefill_policy, router.decode_policy)
    if router.implementation == "smg" and hashing:
        kwargs["extra_args"].setdefault("routing_key_headers", [SMG_ROUTING_KEY_HEADER])
    if pd:
        kwargs["pd"] = (
            [(e.url, e.bootstrap_port) for e in engines if e.worker_type == "prefill"],
            [e.url for e in engines if e.worker_type == "decode"],
        )
        kwargs["prefill_policy"] = router.prefill_policy
        kwargs["decode_policy"] = router.decode_policy
    else:
        kwargs["worker_urls"] = [e.url for e in engines if e.worker_type == "regular"]
    return tuple(router_argv(router.implementation, **kwargs))
