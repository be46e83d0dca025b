"""The bash target: per host, one launch script per unit (``bin/<unit>.sh``) and the host's
supervisor ``sgl-gen-host.sh`` (start|stop|status|logs), plus ``lib/`` with ``--rehearse``."""

from __future__ import annotations

from typing import Any

from generator.compile.model import Node, Plan
from generator.targets import common
from generator.targets.common import (
    MODE_EXEC,
    Artifact,
    Unit,
    argv_lines,
    command_word,
    launch_secrets,
    rehearsal_lib,
    root_of,
)
from generator.targets.containers import container_run, split_inside


def host_artifacts(plan: Plan, node: Node, units: list[Unit], rehearse: bool,
                   ctx: dict[str, Any]) -> dict[str, Artifact]:
    """``hosts/<host>/``: the unit scripts, the host script and (rehearsing) ``lib/``."""
    base = f"hosts/{node.host}"
    root = root_of(plan, node)
    arts: dict[str, Artifact] = {}
    for u in units:
        sec = launch_secrets(u)
        ctr = container_run(plan, node.container, u, sec, rehearse) if node.container else None
        lines = argv_lines(split_inside(sec)[0] if ctr else sec.argv_tokens)
        if sec.config:
            lines.insert(0, f'--config "$SGLGEN_ROOT/run/{u.name}.secrets.yaml"')
        arts[f"{base}/bin/{u.name}.sh"] = Artifact(common.tmpl(
            "bash/unit.sh.j2", u=u, node=node, root=root,
            command=" ".join(command_word(c) for c in u.command),
            lines=lines, secrets=sec, ctr=ctr, **ctx), MODE_EXEC)
    arts[f"{base}/sgl-gen-host.sh"] = Artifact(common.tmpl(
        "bash/sgl-gen-host.sh.j2", node=node, root=root, units=units,
        container=node.container, **ctx), MODE_EXEC)
    if rehearse:
        arts.update(rehearsal_lib(f"{base}/lib", plan.topology.sglang_version))
    return arts
