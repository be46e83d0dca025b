"""Stage 5 — render: ``Plan`` -> ``{relative path: Artifact}``. Pure: no I/O but reading templates.

Layout of ``<out>/<deployment>/``::

    plan.json  endpoints.json  README.md  MANIFEST.sha256  prometheus/targets.json
    hosts/<host>/sgl-gen-host.sh            start|stop|status|logs for that host   (targets/bash.py)
    hosts/<host>/bin/<unit>.sh              one launch script per engine rank and router
    hosts/<host>/systemd/<unit>.service     one unit per launch script, plus <deployment>.target
                                            (targets/systemd.py)
    hosts/<host>/lib/                       rehearsal engine + catalog (with --rehearse only)
    slurm/<deployment>.sbatch               with the slurm target (targets/slurm.py)

A host directory is copied verbatim to ``<workdir>/<deployment>/`` on that host (``SGLGEN_ROOT``).
This module only assembles: each artifact family has its own module in this package, what they
share is in targets/common.py. A new target is a module here plus a line in :func:`render` and
its name in :data:`AVAILABLE_TARGETS`.
"""

from __future__ import annotations

import gc

from generator import __version__
from generator.compile.model import Plan
from generator.targets import bash, docs, slurm, systemd
from generator.targets.common import MODE_EXEC, Artifact, rehearsal_lib, units_by_node
from generator.targets.manifest import MANIFEST, manifest_text
from generator.targets.plans import endpoints, plan_json, pretty_json, prometheus_targets

AVAILABLE_TARGETS = ("bash", "systemd", "slurm")


def default_targets(plan: Plan) -> tuple[str, ...]:
    """bash and systemd, plus slurm when the topology has a ``cluster.slurm`` section."""
    return ("bash", "systemd", "slurm") if plan.topology.slurm is not None else ("bash", "systemd")


def render(plan: Plan, targets: tuple[str, ...] = ("bash", "systemd"),
           rehearse: bool = False) -> dict[str, Artifact]:
    """Every artifact of the plan, keyed by path relative to ``<out>/<deployment>/``."""
    # A render allocates a few hundred thousand small objects and no garbage cycles: the cyclic
    # collector would only walk them, and all the caller holds, again and again (about a tenth
    # of an 8,192-GPU render). Reference counting frees what it drops as before.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _render(plan, targets, rehearse)
    finally:
        if collecting:
            gc.enable()


def _render(plan: Plan, targets: tuple[str, ...], rehearse: bool) -> dict[str, Artifact]:
    t = plan.topology
    arts: dict[str, Artifact] = {
        "plan.json": Artifact(plan_json(plan)),
        "endpoints.json": Artifact(pretty_json(endpoints(plan))),
        "prometheus/targets.json": Artifact(pretty_json(prometheus_targets(plan))),
    }
    per_node = units_by_node(plan, rehearse)
    ctx = {"plan": plan, "t": t, "version": __version__, "rehearse": rehearse}
    for node in plan.nodes:
        units = per_node[node.index]
        arts.update(bash.host_artifacts(plan, node, units, rehearse, ctx))
        if "systemd" in targets:
            arts.update(systemd.host_artifacts(plan, node, units, ctx))
    if "slurm" in targets:
        arts[f"slurm/{plan.name}.sbatch"] = Artifact(slurm.render_sbatch(plan, rehearse), MODE_EXEC)
        # a failed unit's log tail reaches the job output through it (credential values masked)
        arts["slurm/lib/redact.py"] = Artifact(slurm.redact_source(), MODE_EXEC)
        # the job's supervisor: starts the units, keeps them running, drains at the end
        arts["slurm/lib/sgljob.py"] = Artifact(slurm.JOB_SOURCE.read_text(encoding="utf-8"),
                                               MODE_EXEC)
        if rehearse:  # the sbatch runs them from lib/ beside itself
            arts.update(rehearsal_lib("slurm/lib", t.sglang_version))
    arts["README.md"] = docs.readme(plan, targets, ctx)
    arts[MANIFEST] = Artifact(manifest_text(arts))  # the one format: targets/manifest.py
    return dict(sorted(arts.items()))


__all__ = ["AVAILABLE_TARGETS", "Artifact", "default_targets", "render"]
