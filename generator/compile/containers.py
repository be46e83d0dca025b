"""``runtime.container`` and a host's ``container``: what is checked before a plan exists.

docker and podman run the units of the SSH hosts (bash and systemd targets, deploy); pyxis and
apptainer run the Slurm target's steps. The ``docker run``/``podman run`` options sgl-gen sets
itself (generator/targets/containers.py) cannot be given again in ``options``: a second
``--network`` or ``--gpus`` would silently replace sgl-gen's, a ``--detach`` would leave the
supervisor watching a client that exited at once.
"""

from __future__ import annotations

import re
from typing import Any

from generator.compile.argchecks import Ctx, no_userinfo
from generator.compile.credentials import is_credential_name, url_has_credential
from generator.compile.loader import PathT
from generator.compile.model import ContainerSpec
from generator.compile.validate import describe

HOST_KINDS = ("docker", "podman")
SLURM_KINDS = ("pyxis", "apptainer")

#: long options sgl-gen writes itself, and why a second one cannot be given
_OWNED = {
    "--name": "sgl-gen names each container sgl-<deployment>-<unit> (stop, status and the "
              "removal of a leftover go by that name)",
    "--rm": "sgl-gen passes --rm",
    "--init": "sgl-gen passes --init (so SIGTERM reaches the server)",
    "--network": "sgl-gen passes --network host (the plan's ports are the host's)",
    "--net": "sgl-gen passes --network host (the plan's ports are the host's)",
    "--ipc": "sgl-gen passes --ipc host (SGLang's shared memory)",
    "--gpus": "sgl-gen gives each engine the GPUs the plan assigns it",
    "--env-file": "sgl-gen passes the unit's own --env-file (runtime.env and the secrets)",
    "--detach": "the unit's supervisor runs the container in the foreground",
    "--restart": "the unit's supervisor restarts it (systemd Restart=on-failure)",
    "--entrypoint": "the container runs the unit's argv as the plan shows it",
    "--tty": "the units run without a terminal",
    "--interactive": "the units run without a terminal",
    "--shm-size": "--ipc host shares the host's /dev/shm, whose size the host sets (podman "
                  "refuses the pair, docker ignores --shm-size)",
}
_OWNED_HINT = {
    "--network": "remove it", "--net": "remove it", "--gpus": "remove it: GPUs come from the "
    "server groups", "--env-file": "use runtime.env, and runtime.secrets_env_file for secrets",
    "--restart": "remove it (runtime.supervisor chooses what restarts the units)",
    "--shm-size": "remove it",
}
#: short options among them: -d (detach), -t (tty), -i (interactive)
_SHORT_OWNED = {"d": "--detach", "t": "--tty", "i": "--interactive"}
_GPU_DEVICE = re.compile(r"^(?:nvidia\.com/gpu|/dev/nvidia[0-9])")
_ENV_OPTS = ("-e", "--env")


def container_spec(ctx: Ctx, path: PathT, c: dict[str, Any], *, host: bool = False
                   ) -> ContainerSpec:
    """The checked ContainerSpec of the mapping at ``path``."""
    kind = c["kind"]
    no_userinfo(ctx, path + ("image",), c["image"])
    if host and kind in SLURM_KINDS:
        ctx.err(path + ("kind",), f"{kind} runs the Slurm target's steps, not a host's units",
                "a host's container is docker or podman; set pyxis or apptainer in "
                "runtime.container")
    for j, mount in enumerate(c.get("mounts", ())):
        if "," in mount:  # pyxis --container-mounts and apptainer --bind split at ','
            ctx.err(path + ("mounts", j),
                    f"{describe(mount)} holds ',', which separates mounts: it would add "
                    "another mount", "write each mount as its own list item")
    options = tuple(c.get("options", ()))
    if options and kind in SLURM_KINDS:
        ctx.err(path + ("options",), f"options are `docker run`/`podman run` options; {kind} "
                "takes none here", "remove them (cluster.slurm.extra holds sbatch options)")
    _check_options(ctx, path + ("options",), options)
    return ContainerSpec(kind, c["image"], tuple(c.get("mounts", ())), options)


def _check_options(ctx: Ctx, path: PathT, options: tuple[str, ...]) -> None:
    for j, opt in enumerate(options):
        prev = options[j - 1] if j else ""
        if prev in _ENV_OPTS or opt.startswith("--env="):
            _check_env(ctx, path + (j,), opt.removeprefix("--env="))
            continue
        if prev == "--device" or opt.startswith("--device="):
            if _GPU_DEVICE.match(opt.removeprefix("--device=")):
                ctx.err(path + (j,), f"{describe(opt)} is a GPU: sgl-gen gives each engine the "
                        "GPUs the plan assigns it", "remove it")
            continue
        if opt.startswith("--"):
            name = opt.split("=", 1)[0]
            if name in _OWNED:
                ctx.err(path + (j,), f"{name} is set by sgl-gen: {_OWNED[name]}",
                        _OWNED_HINT.get(name, "remove it"))
        elif re.fullmatch(r"-[A-Za-z]+", opt):
            for letter in opt[1:]:
                if letter in _SHORT_OWNED:
                    long = _SHORT_OWNED[letter]
                    ctx.err(path + (j,), f"-{letter} ({long}) is set by sgl-gen: {_OWNED[long]}",
                            "remove it")
                    break


def _check_env(ctx: Ctx, path: PathT, value: str) -> None:
    """``-e NAME=value``: a credential there reaches argv, ``docker inspect`` and the files."""
    name, eq, text = value.partition("=")
    if not eq:
        return  # -e NAME: passed through from the unit's environment, no value here
    if is_credential_name(name) and text != "" or url_has_credential(text):
        ctx.err(path, f"{name} looks like a credential: a value written in options is "
                "rendered into every script and shown by `ps` and `docker inspect`",
                f"put {name}=... in runtime.secrets_env_file on the hosts (the container gets "
                "it through --env-file)")
    else:
        ctx.err(path, f"-e {name}=...: environment values go in runtime.env (each unit's "
                "--env-file carries them)", f"move it to runtime.env: {name}: ...")


def covered(mounts: tuple[str, ...], path: str) -> bool:
    """An absolute ``path`` lies under the destination of one of ``mounts`` (SRC:DST[:FLAGS];
    a bare DST mounts a path of the same name)."""
    for m in mounts:
        parts = m.split(":")
        dst = parts[1] if len(parts) > 1 else parts[0]
        dst = dst.rstrip("/") or "/"
        if path == dst or path.startswith(dst if dst.endswith("/") else dst + "/"):
            return True
    return False
