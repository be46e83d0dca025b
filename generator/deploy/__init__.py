"""``sgl-gen deploy / diff / status / logs / down / restart --rolling``: push a render to SSH
hosts with Fabric and run it under each host's supervisor.

What a host holds: ``<workdir>/<deployment>/`` (``SGLGEN_ROOT``) = the render's ``hosts/<host>/``
tree, plus ``run/`` (pidfiles, exit statuses, engines' secrets files), ``logs/`` (bash) and
``.sgl-gen/manifest.json`` (what is deployed: every file's checksum, per unit the checksum of the
files it runs, the supervisor, and the systemd unit files installed outside the root).

Supervisors (``runtime.supervisor`` / ``cluster.hosts[].supervisor``): ``systemd`` installs the
rendered units (root: the system manager, /etc/systemd/system; another user: its own manager,
``systemctl --user``, ~/.config/systemd/user, which needs lingering), enables them (they come
back after a reboot) and systemd restarts a unit that fails; ``bash`` runs them with the host's
``sgl-gen-host.sh`` (pidfiles; nothing restarts a unit that dies). supervisors.py has both.

Ownership: sgl-gen's files on a host are exactly those its manifest there lists. A deploy
overwrites or removes only those (and its own temporary upload names); every other file is kept
and reported (``keep``). A root that holds files but no manifest is refused unless ``--adopt``;
a file at a path the render writes (or a unit file in the unit directory) that the manifest does
not list is refused (with ``--adopt``, one identical to the render's is taken over). The manifest
is extended before the first change, so an interrupted deploy leaves a manifest that covers it.

A deploy, every step on all hosts in parallel (session.py, decide.py, commands.py):

1. connect (``~/.ssh/config`` or ``--ssh-config``; host keys checked against the known-hosts file,
   an unknown key refused unless ``accept_new_host_keys``, a changed key always refused; every
   ProxyJump hop is checked the same way) (transport.py);
2. probe: one run of the host agent (generator/hostagent.py) reports python/modules, GPUs, free
   disk, listening ports, the checksum of every deployed file, the manifest, systemd (PID 1? which
   manager, lingering, the unit files and whether they are enabled) and each unit's state;
3. preflight: every problem on every host at once;
4. decide per unit: ``start`` (not running), ``restart`` (its files changed, or it moves to the
   other supervisor; every rank of a multi-node engine together), ``update`` (a router whose
   worker list alone changed: applied live), ``stop`` (no longer in the plan), ``none``; and the
   rollout (rollout.py), from each running router's ``GET /workers``;
5. take the engines that leave out of their routers, drain and stop them (``--allow-downtime``:
   stop every router and engine that restarts or goes); upload files whose checksum or mode
   differs (SFTP to a temporary name, then rename); delete the files the previous manifest lists
   that the render no longer has; systemd: install changed unit files, one ``daemon-reload``
   only when one changed, ``enable`` what is not enabled;
6. start new engines and add them to their routers; roll the restarts out in batches per model
   and role (out of the router, drained, restarted, healthy, back in: rolling.py); make each
   router that stays list exactly its engines; restart the routers whose own settings changed,
   start those not running; wait until each router's ``GET /workers`` lists exactly its engines,
   all healthy; write the manifest.

Health checks run on the hosts over the SSH connection, so the operator's machine needs nothing
but SSH.
"""

from generator.deploy.changes import Changes, UnitAction
from generator.deploy.commands import (
    CheckResult,
    Result,
    check,
    deploy,
    diff,
    down,
    logs,
    status,
    table,
)
from generator.deploy.rendered import check_plan, target_from_dir
from generator.deploy.rolling import restart_rolling
from generator.deploy.spec import HostSpec, Target, UnitSpec, target_from, target_from_plan
from generator.deploy.transport import SshOptions

__all__ = ["Changes", "CheckResult", "HostSpec", "Result", "SshOptions", "Target", "UnitAction", "UnitSpec",
           "check", "check_plan", "deploy", "diff", "down", "logs", "restart_rolling", "status", "table",
           "target_from", "target_from_dir", "target_from_plan"]
