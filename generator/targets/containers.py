"""How a unit of a docker/podman node runs: the ``<kind> run`` lines of its ``bin/<unit>.sh``.

Each engine and router is one container named ``sgl-<deployment>-<unit>``, run in the
foreground by the unit's script (so the pidfile or systemd's MainPID is the client, its output
the unit's log or journal, and SIGTERM reaches the server: the client forwards it, ``--init``
passes it on). The argv inside the container is the unit's argv on the host, byte-exact.

What the container gets, and why:

* ``--rm --init --name N --label sgl-gen.deployment=D --label sgl-gen.unit=U``: gone once it
  exits; stop, status and the removal of a leftover go by the name, and only a container whose
  label names this deployment is ever stopped or removed.
* ``--network host --ipc host``: the plan's addresses and ports are the host's; SGLang's shared
  memory is the host's /dev/shm (so no ``--shm-size``, which podman refuses beside it).
* GPUs by the runtime's own mechanism: docker ``--gpus "device=0,1"`` (the NVIDIA container
  toolkit; the double quotes belong to the value: docker splits it at commas otherwise), podman
  CDI ``--device nvidia.com/gpu=N`` (``nvidia-ctk cdi generate``). No CUDA_VISIBLE_DEVICES: the
  container sees its GPUs only, numbered from 0.
* ``--ulimit``: open files as the script raised them, processes up to the host's hard limit,
  and for engines locked memory up to it (NCCL and RDMA pin buffers), computed when the script
  runs (a runtime's own defaults are refused where the hard limits are lower).
* the mounts of the topology, then what the unit needs of sgl-gen's own files: the engines'
  secrets file of ``--config`` (read-only), ``lib/`` when rehearsing, the script itself when a
  secret must be appended to argv inside the container.
* ``--env-file run/<unit>.env``: runtime.env, every variable the secrets file sets and the
  secrets the unit reads from its environment, written by the script (mode 0600), so no value
  is on a command line (``ps``) and none in the rendered files.
"""

from __future__ import annotations

from dataclasses import dataclass

from generator.compile.model import ContainerSpec, Plan
from generator.targets.common import LaunchSecrets, Unit, command_word, shq


@dataclass(frozen=True)
class ContainerRun:
    """What ``bin/<unit>.sh`` of a container node needs beyond the host-python script."""

    kind: str
    image: str
    name: str  # sgl-<deployment>-<unit>
    deployment: str
    #: the ``<kind> run`` options, one rendered line each (quoted; ``$SGLGEN_ROOT`` and the
    #: script's ``$nofile``/``$memlock`` expand when it runs)
    lines: tuple[str, ...]
    #: variables the script writes to the env file, by name (runtime.env, secrets)
    env_names: tuple[str, ...]
    #: (flag, NAME) appended inside the container from its environment (``inside``)
    inside: tuple[tuple[str, str], ...]


def container_name(plan: Plan, u: Unit) -> str:
    return f"sgl-{plan.name}-{u.name}"


def gpu_options(kind: str, gpus: str) -> list[str]:
    """The runtime's GPU flags for ``gpus`` (host GPU ids, "0,1"), rendered."""
    if not gpus:
        return []
    if kind == "docker":
        value = '"device=' + gpus + '"'
        return [f"--gpus {shq(value)}"]
    return [f"--device {shq(f'nvidia.com/gpu={g}')}" for g in gpus.split(",")]


def container_run(plan: Plan, c: ContainerSpec, u: Unit, sec: LaunchSecrets, rehearse: bool,
                  ) -> ContainerRun:
    name = container_name(plan, u)
    _, inside = split_inside(sec)
    lines = [
        "--rm --init",
        f"--name {shq(name)}",
        f"--label {shq('sgl-gen.deployment=' + plan.name)} --label {shq('sgl-gen.unit=' + u.name)}",
        "--network host --ipc host",
        *gpu_options(c.kind, u.gpus),
        '--ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc"',
    ]
    if u.kind == "engine":
        lines.append('--ulimit "memlock=$memlock:$memlock"')
    lines += [f"-v {shq(m)}" for m in c.mounts]
    if sec.config:
        lines.append(f'-v "$SGLGEN_ROOT/run/{u.name}.secrets.yaml:$SGLGEN_ROOT/run/'
                     f'{u.name}.secrets.yaml:ro"')
    if rehearse and u.kind == "engine":
        lines.append('-v "$SGLGEN_ROOT/lib:$SGLGEN_ROOT/lib:ro"')
    if inside:
        lines.append(f'-v "$SGLGEN_ROOT/bin/{u.name}.sh:$SGLGEN_ROOT/bin/{u.name}.sh:ro"')
        lines.append(f'--entrypoint "$SGLGEN_ROOT/bin/{u.name}.sh"')
    lines.append(f'--env-file "$SGLGEN_ROOT/run/{u.name}.env"')
    if c.options:
        lines.append(" ".join(shq(o) for o in c.options))
    lines.append(shq(c.image))
    if inside:
        lines.append("inside")
    lines.append(" ".join(command_word(w) for w in u.command))
    env_names = [k for k, _ in plan.topology.runtime.env]
    env_names += [var for var, _, _ in sec.env]
    env_names += [n for _, n in inside]
    return ContainerRun(c.kind, c.image, name, plan.name, tuple(lines),
                        tuple(dict.fromkeys(env_names)), inside)



def split_inside(sec: LaunchSecrets) -> tuple[tuple[object, ...], tuple[tuple[str, str], ...]]:
    """A container unit's argv as its script passes it to ``<kind> run``, and the ``(FLAG,
    NAME)`` pairs of ``FLAG {env: NAME}`` taken out of it: appended inside the container from
    its environment (``inside``), their values are on no command line of the host and in no
    ``<kind> inspect``."""
    toks = list(sec.argv_tokens)
    out: list[object] = []
    inside: list[tuple[str, str]] = []
    i = 0
    while i < len(toks):
        tok, nxt = toks[i], toks[i + 1] if i + 1 < len(toks) else None
        if isinstance(tok, str) and tok.startswith("--") and nxt is not None \
                and not isinstance(nxt, str):
            inside.append((tok, nxt.name))
            i += 2
            continue
        out.append(tok)
        i += 1
    return tuple(out), tuple(inside)
