"""Frozen data passed between stages: ``Topology`` (after resolve) and ``Plan`` (after place).

No ``dict[str, Any]`` crosses a stage boundary: server-argument overrides travel as sorted
``(key, value)`` tuples whose values are the YAML scalars, lists or mappings the user wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ArgItems = tuple[tuple[str, Any], ...]

WORKER_TYPES = ("regular", "prefill", "decode", "placeholder", "encoder")
#: what keeps a host's units running: systemd units, or the pidfile launcher sgl-gen-host.sh
SUPERVISORS = ("systemd", "bash")
DEFAULT_SUPERVISOR = "systemd"
#: rolling deploys (``runtime.rollout``, the schema's bounds; a test keeps them equal): how many
#: engines of one model and role a batch restarts at once, and the bound in seconds on waiting
#: for an engine's in-flight requests after it left its router
DEFAULT_MAX_UNAVAILABLE = 1
DEFAULT_DRAIN = 30
MAX_DRAIN = 3600
#: ``max_unavailable`` as a percentage of a role's engines: "P%", P an integer 1..100
PERCENT_PATTERN = r"^(?:[1-9][0-9]?|100)%$"
PLAN_VERSION = 1


# ---------------------------------------------------------------------------------------------
# resolve -> Topology


@dataclass(frozen=True)
class ContainerSpec:
    kind: str  # docker | podman (SSH hosts) | pyxis | apptainer (Slurm)
    image: str
    mounts: tuple[str, ...] = ()
    options: tuple[str, ...] = ()  # docker/podman run options, argv tokens, before the image


@dataclass(frozen=True)
class HostSpec:
    name: str
    address: str
    user: str | None
    port: int | None
    labels: tuple[str, ...]
    gpus: tuple[int, ...]
    workdir: str | None
    supervisor: str | None = None  # None: runtime.supervisor
    #: None: runtime.container; False: none on this host (its units run the host's python)
    container: ContainerSpec | bool | None = None


@dataclass(frozen=True)
class SlurmSpec:
    partition: str | None = None
    account: str | None = None
    time: str | None = None
    job_name: str | None = None
    output: str | None = None
    exclusive: bool = True
    extra: ArgItems = ()
    #: CPUs of an engine step: cpus_per_engine, else cpus_per_gpu x its GPUs on the node, else
    #: (None, None) its GPU share of the node's CPUs, read in the job
    cpus_per_gpu: int | None = None
    cpus_per_engine: int | None = None
    #: memory of an engine step per GPU, MB; None: its GPU share of the node's memory
    mem_per_gpu_mb: int | None = None
    restart: str = "on-failure"  # on-failure | never
    restart_limit: int = 3  # restarts of one unit in one job
    restart_backoff: int | float = 5  # seconds before the first restart, doubling
    stop_before_limit: int = 120  # --signal=B:USR1@N: drain this long before the time limit


@dataclass(frozen=True)
class RolloutSpec:
    """``runtime.rollout``: values as the topology wrote them (an int stays an int, a float a
    float, a percentage the string ``"25%"``), so plan.json says what the file says."""

    max_unavailable: int | str = DEFAULT_MAX_UNAVAILABLE  # engines, or "P%" of a role's engines
    drain: int | float = DEFAULT_DRAIN  # seconds


@dataclass(frozen=True)
class RuntimeSpec:
    python: str = "python3"
    workdir: str = "/var/lib/sgl-gen"
    env: tuple[tuple[str, str], ...] = ()
    secrets_env_file: str | None = None
    container: ContainerSpec | None = None
    supervisor: str = DEFAULT_SUPERVISOR
    rollout: RolloutSpec = RolloutSpec()


@dataclass(frozen=True)
class RouterSpec:
    implementation: str
    policy: str | None
    prefill_policy: str | None
    decode_policy: str | None
    host: str | None
    port: int | None
    prometheus_port: int | None
    node: int | None
    args: ArgItems
    path: str  # topology path of the model's router section (for messages)


@dataclass(frozen=True)
class GroupSpec:
    model: str
    index: int
    path: str
    worker_type: str
    num_gpus: int
    gpus_per_engine: int
    tp_size: int
    pp_size: int
    num_engines: int
    server_args: ArgItems  # defaults merged with overrides, sorted by key
    node_group: str | None
    port: int | None
    bootstrap_port: int | None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: str
    model_path: str
    update_weights: bool
    pd: bool
    groups: tuple[GroupSpec, ...]
    router: RouterSpec
    #: where the model's config.json is read at validate time (model_config, absolute), if set
    model_config: str | None = None


@dataclass(frozen=True)
class Topology:
    file: str
    name: str
    sglang_version: str
    hf_checkpoint: str | None
    total_gpus: int | None
    gpus_per_node: int
    nodes: int | None
    hosts: tuple[HostSpec, ...]
    node_groups: tuple[tuple[str, tuple[int, ...]], ...]
    slurm: SlurmSpec | None
    runtime: RuntimeSpec
    router_implementation: str
    models: tuple[ModelSpec, ...]
    local: bool = False
    gpu: str | None = None  # cluster.gpu: a name of generator.compile.modelcheck.GPUS
    warnings: tuple[Any, ...] = ()  # errors.Diagnostic with severity "warning"
    # loader.SourceMap: positions for errors found after resolve (placement, ports)
    smap: Any = field(default=None, compare=False, repr=False)

    def diag(self, path: str, message: str, hint: str = "") -> Any:
        """A diagnostic positioned at a dotted topology path (see ``loader.format_path``)."""
        from generator.compile.loader import parse_display_path
        from generator.errors import Diagnostic

        if self.smap is None:
            return Diagnostic(self.file, 0, 0, path, message, hint)
        o = self.smap.at(parse_display_path(path))
        return Diagnostic(o.file, o.line, o.col, path, message, hint)


# ---------------------------------------------------------------------------------------------
# place -> Plan


@dataclass(frozen=True)
class Node:
    index: int
    host: str
    address: str
    gpus: tuple[int, ...]
    user: str | None = None
    ssh_port: int | None = None
    workdir: str = "/var/lib/sgl-gen"
    labels: tuple[str, ...] = ()
    supervisor: str = DEFAULT_SUPERVISOR  # the host's, else runtime.supervisor (SUPERVISORS)
    #: docker or podman: the container its units run in (the host's, else runtime.container)
    container: ContainerSpec | None = None


@dataclass(frozen=True)
class Placement:
    node: int
    host: str
    address: str
    gpus: tuple[int, ...]  # physical GPU ids (CUDA_VISIBLE_DEVICES)
    node_rank: int
    argv: tuple[Any, ...] = ()
    #: the HTTP port this rank binds when it differs from the engine's (ranks of one engine that
    #: share an address, as with --local: ranks >= 1 serve a health endpoint on --port too)
    port: int | None = None


@dataclass(frozen=True)
class Engine:
    id: str
    model: str
    group: int
    worker_type: str
    gpus_per_engine: int
    tp_size: int
    pp_size: int
    nnodes: int
    placements: tuple[Placement, ...]
    host: str
    address: str
    bind_host: str
    port: int
    url: str
    nccl_port: int
    engine_info_bootstrap_port: int | None
    bootstrap_port: int | None
    dist_init_addr: str | None
    encoder_urls: tuple[str, ...]
    server_args: ArgItems
    argv: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlaceholderSlot:
    model: str
    group: int
    node: int
    gpus: tuple[int, ...]


@dataclass(frozen=True)
class Router:
    model: str
    implementation: str
    module: str
    node: int
    host: str
    address: str
    bind_host: str
    port: int
    prometheus_port: int
    url: str
    policy: str | None
    prefill_policy: str | None
    decode_policy: str | None
    args: ArgItems
    argv: tuple[Any, ...] = ()  # str tokens, or routers.EnvRef for values taken from the env


@dataclass(frozen=True)
class ModelPlan:
    name: str
    model_path: str
    update_weights: bool
    pd: bool
    router: Router
    engines: tuple[Engine, ...]
    placeholders: tuple[PlaceholderSlot, ...]


@dataclass(frozen=True)
class Plan:
    topology: Topology
    nodes: tuple[Node, ...]
    models: tuple[ModelPlan, ...]
    warnings: tuple[str, ...] = field(default=())

    @property
    def name(self) -> str:
        return self.topology.name

    def engines(self) -> list[Engine]:
        """Every engine, in start order: encoders first, then file order."""
        all_engines = [e for m in self.models for e in m.engines]
        return sorted(all_engines, key=lambda e: 0 if e.worker_type == "encoder" else 1)
