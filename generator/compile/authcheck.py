"""A model whose engines require an API key needs a router that sends the same key.

The router authenticates to its workers with its own ``--api-key`` (sglang-router 0.3.2, smg
1.13 take no separate worker key): engines started with ``--api-key`` answer the router's
``/server_info`` and health probes with 401 when the router has none or another one. sglang-router
then cannot read the workers' info, and smg never registers them and serves nothing, while
``sgl-gen up`` / ``deploy`` wait for the router's workers until they time out. Both keys are
``{env: NAME}`` references, so "the same key" is checked as "the same variable": an error naming
the engines' setting, with the router setting to add as the hint.
"""

from __future__ import annotations

from typing import Any

from generator.compile.loader import parse_display_path
from generator.compile.model import GroupSpec, ModelSpec, Topology
from generator.errors import Diagnostic, TopologyError

# the worker types a router talks to (encoders are called by the prefill engines, not the router)
_ROUTED = ("regular", "prefill", "decode")


def _env(value: Any) -> str | None:
    """The variable of an ``{env: NAME}`` value (a resolved EnvRef), else None."""
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else None


def _written(topo: Topology, *paths: str) -> str:
    """The first of ``paths`` the file (or a --set) writes, else the last."""
    values = getattr(topo.smap, "values", {})
    return next((p for p in paths if parse_display_path(p) in values), paths[-1])


def _engine_key(g: GroupSpec) -> str | None:
    return _env(dict(g.server_args).get("api_key"))


def _model_problems(topo: Topology, m: ModelSpec) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    router_key = _env(dict(m.router.args).get("api_key"))
    router_path = _written(topo, f"{m.router.path}.args.api_key", "router.args.api_key")
    for g in m.groups:
        want = _engine_key(g) if g.worker_type in _ROUTED else None
        if want is None or want == router_key:
            continue
        path = _written(topo, f"{g.path}.overrides.api_key", "defaults.api_key")
        hint = (f"set router.args.api_key: {{env: {want}}} (or {m.router.path}.args.api_key "
                f"for this model only)")
        if router_key is None:
            out.append(topo.diag(path, f"the engines of {g.path} require an API key "
                                       f"(${want}) but the {m.router.implementation} router of "
                                       f"model '{m.name}' has none, so it cannot reach them", hint))
        else:
            out.append(topo.diag(path, f"the engines of {g.path} require the API key in "
                                       f"${want} but the {m.router.implementation} router of "
                                       f"model '{m.name}' sends the one in ${router_key} "
                                       f"({router_path})", hint))
    return out


def router_auth_problems(topo: Topology) -> list[Diagnostic]:
    """One error per server group whose engines' ``api_key`` variable is not its router's."""
    return [d for m in topo.models for d in _model_problems(topo, m)]


def check_router_auth(topo: Topology) -> Topology:
    """``topo`` unchanged, or TopologyError with every such problem (see the module doc)."""
    problems = router_auth_problems(topo)
    if problems:
        raise TopologyError(problems)
    return topo
