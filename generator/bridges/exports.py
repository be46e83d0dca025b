"""What other tools need from a plan: slime's external-engine arguments and its
``sglang_model_routers`` mapping ``{model: (ip, port)}``."""

from __future__ import annotations

import shlex

from generator.compile.model import ModelPlan, Plan
from generator.errors import SglGenError


def _model(plan: Plan, name: str | None) -> ModelPlan:
    if name is None:
        # slime points --rollout-external at the engines it trains: the updated model
        return next((m for m in plan.models if m.update_weights), plan.models[0])
    for m in plan.models:
        if m.name == name:
            return m
    raise SglGenError(f"--model: no model {name!r} in {plan.name} "
                      f"(models: {', '.join(m.name for m in plan.models)})", exit_code=2)


def slime_external_args(plan: Plan, model: str | None = None) -> list[str]:
    """``--rollout-external --rollout-external-engine-addrs host:port ...`` for one model's
    serving engines (rank-0 addresses; encoders are not rollout engines)."""
    m = _model(plan, model)
    addrs = [f"[{e.address}]:{e.port}" if ":" in e.address else f"{e.address}:{e.port}"
             for e in m.engines if e.worker_type != "encoder"]
    if not addrs:
        raise SglGenError(f"model {m.name!r} has no engines to point slime at", exit_code=1)
    return ["--rollout-external", "--rollout-external-engine-addrs", *addrs]


def pd_note(plan: Plan, model: str | None = None) -> str | None:
    """For a prefill/decode model, how slime tells the roles apart (None for any other): it
    reads each external engine's ``/server_info`` (``disaggregation_mode``,
    ``disaggregation_bootstrap_port``, ``tp_size``), which every engine of the plan reports
    from its own argv, so the addresses need no roles."""
    m = _model(plan, model)
    if not m.pd:
        return None
    roles = [e.worker_type for e in m.engines if e.worker_type in ("prefill", "decode")]
    return (f"note: model {m.name!r} is prefill/decode ({roles.count('prefill')} prefill, "
            f"{roles.count('decode')} decode): slime reads each engine's role and bootstrap port "
            "from its /server_info (its external-engine discovery), so the addresses carry no "
            "roles")


def slime_external_line(plan: Plan, model: str | None = None) -> str:
    return " ".join(shlex.quote(a) for a in slime_external_args(plan, model))


def model_routers(plan: Plan) -> dict[str, tuple[str, int]]:
    """slime's ``args.sglang_model_routers``: model name -> (router ip, router port)."""
    return {m.name: (m.router.address, m.router.port) for m in plan.models}
