"""The systemd target: per host, one ``.service`` per unit of the bash target (same scripts), the
deployment's ``sgl-<deployment>.target`` and ``bin/sgl-gen-await.sh``, which the units run to
wait for ``/health`` (a rank-0 engine's ``ExecStartPost=``, a router's ``ExecStartPre=``).

The units are valid both as system units (root, ``/etc/systemd/system``) and as user units
(``~/.config/systemd/user``, ``systemctl --user``): no ``User=`` (a unit runs as whoever installs
it) and no ``Limit*=`` (in a user manager a limit above the hard one fails the unit with
205/LIMITS; the scripts raise their own soft limits as far as the hard ones allow).
"""

from __future__ import annotations

from typing import Any

from generator.compile.argv import ROUTER_DEFAULTS
from generator.compile.model import Node, Plan
from generator.targets import common
from generator.targets.common import MODE_EXEC, Artifact, Unit, root_of, systemd_name

#: seconds an engine may take to answer ``/health`` 200 after it starts (weight loading and CUDA
#: graph capture take many minutes), and a router to wait for its engines: what the routers are
#: told to wait for their workers, ``--worker-startup-timeout-secs`` (1800)
LOAD_SECONDS: int = ROUTER_DEFAULTS["worker_startup_timeout_secs"]
#: ``TimeoutStartSec=`` is this much longer, so that sgl-gen-await.sh gives up first and its
#: message (which URL, what it answered) reaches the journal
START_MARGIN_SECONDS = 60
AWAIT_SCRIPT = "bin/sgl-gen-await.sh"


def host_artifacts(plan: Plan, node: Node, units: list[Unit],
                   ctx: dict[str, Any]) -> dict[str, Artifact]:
    """``hosts/<host>/systemd/``: the units (routers After=/Wants= their engines on this host),
    the target, and ``bin/sgl-gen-await.sh``."""
    base = f"hosts/{node.host}"
    root = root_of(plan, node)
    await_cmd = f"{root}/{AWAIT_SCRIPT} {LOAD_SECONDS}"
    arts: dict[str, Artifact] = {}
    for u in units:
        arts[f"{base}/systemd/{systemd_name(plan, u)}"] = Artifact(common.tmpl(
            "systemd/unit.service.j2", u=u, node=node, root=root,
            after=[systemd_name(plan, x) for x in units if x.name in u.after],
            await_cmd=await_cmd, load_seconds=LOAD_SECONDS,
            timeout_start=LOAD_SECONDS + START_MARGIN_SECONDS, container=node.container,
            **ctx))
    arts[f"{base}/systemd/sgl-{plan.name}.target"] = Artifact(common.tmpl(
        "systemd/deployment.target.j2", node=node,
        units=[systemd_name(plan, u) for u in units], **ctx))
    arts[f"{base}/{AWAIT_SCRIPT}"] = Artifact(common.tmpl(
        "systemd/sgl-gen-await.sh.j2", node=node, **ctx), MODE_EXEC)
    return arts
