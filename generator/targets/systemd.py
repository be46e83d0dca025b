"""The systemd target: per host, one ``.service`` per unit of the bash target (same scripts)
and the deployment's ``sgl-<deployment>.target``."""

from __future__ import annotations

from typing import Any

from generator.compile.model import Node, Plan
from generator.targets import common
from generator.targets.common import Artifact, Unit, root_of, systemd_name


def host_artifacts(plan: Plan, node: Node, units: list[Unit],
                   ctx: dict[str, Any]) -> dict[str, Artifact]:
    """``hosts/<host>/systemd/``: the units (routers After=/Wants= their engines) and the target."""
    base = f"hosts/{node.host}"
    root = root_of(plan, node)
    arts: dict[str, Artifact] = {}
    for u in units:
        arts[f"{base}/systemd/{systemd_name(plan, u)}"] = Artifact(common.tmpl(
            "systemd/unit.service.j2", u=u, node=node, root=root,
            after=[systemd_name(plan, x) for x in units if x.name in u.after],
            **ctx))
    arts[f"{base}/systemd/sgl-{plan.name}.target"] = Artifact(common.tmpl(
        "systemd/deployment.target.j2", node=node,
        units=[systemd_name(plan, u) for u in units], **ctx))
    return arts
