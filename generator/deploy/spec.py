"""What to deploy: a Target (hosts, their units and files) built from plan.json and the render's
``hosts/<host>/`` files, of a topology FILE rendered in memory or of a rendered OUT_DIR."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from generator import routerauth
from generator.errors import SglGenError

Echo = Callable[[str], None]

MANIFEST = ".sgl-gen/manifest.json"
LOG_TAIL = 20
SUPERVISORS = ("systemd", "bash")


@dataclass(frozen=True)
class UnitSpec:
    name: str
    kind: str  # engine | router
    host: str
    model: str
    engine: str | None  # engine id (all ranks of a multi-node engine share it)
    node_rank: int
    health_url: str | None  # rank-0 engines and routers
    url: str  # what the summary shows
    files: tuple[str, ...]  # host-relative files the unit runs (its hash covers them)
    expected_workers: tuple[str, ...] = ()  # routers
    api_key_env: str | None = None  # routers: the variable their --api-key is read from
    service: str = ""  # its systemd unit name, sgl-<deployment>-<unit>.service
    role: str = ""  # engines: regular | prefill | decode | encoder
    bootstrap_port: int | None = None  # prefill engines: what the router's POST /workers needs
    settings: str = ""  # routers: the checksum of their files without the worker membership


@dataclass(frozen=True)
class HostSpec:
    index: int
    host: str
    address: str
    user: str | None
    port: int | None
    root: str
    units: tuple[UnitSpec, ...]
    files: dict[str, tuple[bytes, int]]  # relpath -> (content, mode)
    ports: tuple[tuple[int, str], ...]  # (port, unit that opens it)
    gpus_needed: int = 0  # GPU ids the engines use on this host: 0..gpus_needed-1 must exist
    supervisor: str = "bash"  # systemd | bash: what runs and restarts its units
    deployment: str = ""
    #: plan.json's ``nodes[].container`` ({kind, image, mounts, options}): its units run in
    #: containers of that image (docker or podman); None: on the host's python
    container: dict[str, Any] | None = None
    #: what the probe found of the image on the host: {"id": its image id}; part of every unit's
    #: hash, so that a new image behind the same name restarts (rolls) the units
    image: dict[str, str] = field(default_factory=dict, compare=False, hash=False)
    #: what the host must have for its engines (checked by the probe before a real deploy and
    #: by `sgl-gen check`): {"gpus": physical ids, "unit_gpus": {unit: ids}, "models": model
    #: paths, "ib": InfiniBand devices, "env": {NCCL_SOCKET_IFNAME, HF_HOME...: value}}
    needs: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def sha(self, rel: str) -> str:
        return hashlib.sha256(self.files[rel][0]).hexdigest()

    def unit_hash(self, u: UnitSpec) -> str:
        shas: dict[str, str | None] = {rel: self.sha(rel) for rel in u.files}
        if self.container is not None:
            shas[IMAGE_KEY] = self.image.get("id")
        return unit_hash(shas)

    @property
    def agent_python(self) -> str | None:
        """The interpreter of the host agent when it is not the deployment's: on a container
        host runtime.python is the image's, so the agent runs with python3 from PATH."""
        return "python3" if self.container is not None else None

    @property
    def systemd_files(self) -> list[str]:
        """The render's unit files for this host that the systemd supervisor installs into the
        unit directory: exactly its units' ``systemd/sgl-<deployment>-<unit>.service`` and the
        deployment's ``systemd/sgl-<deployment>.target`` (any other file there is not
        installed: a render cannot put, say, ssh.service into /etc/systemd/system)."""
        names = {u.service for u in self.units} | {self.systemd_target}
        return sorted(f"systemd/{n}" for n in names if f"systemd/{n}" in self.files)

    @property
    def systemd_target(self) -> str:
        return f"sgl-{self.deployment}.target"


def membership_free(texts: list[bytes], markers: list[str]) -> str:
    """The checksum of a router's files without the lines that name its engines (their URLs,
    their systemd units): what stays the same when only its worker list changes."""
    # a URL is not followed by a digit (http://a:3100 is not in http://a:31000)
    pat = re.compile("|".join(re.escape(m) + r"(?![0-9])" for m in markers)) if markers else None
    h = hashlib.sha256()
    for t in texts:
        for line in t.decode("utf-8", "replace").splitlines():
            if pat is None or not pat.search(line):
                h.update(line.encode() + b"\n")
        h.update(b"\0")
    return h.hexdigest()


#: the pseudo-file of a container unit's hash that stands for the image it runs
IMAGE_KEY = "<image>"


def unit_hash(shas: dict[str, str | None]) -> str:
    text = "".join(f"{rel} {shas.get(rel) or '-'}\n" for rel in sorted(shas))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Target:
    name: str
    python: str
    rehearse: bool
    hosts: tuple[HostSpec, ...]
    secrets_env_file: str | None = None  # checked on every host by preflight
    max_unavailable: int | str = 1  # runtime.rollout: engines (or "P%") of a role out at once
    drain: float = 30.0  # seconds an engine out of its router may finish its requests in
    sglang_version: str = ""  # the catalog the plan was validated against (images must match)

    def units(self) -> list[UnitSpec]:
        return [u for h in self.hosts for u in h.units]


#: network interface settings of the engines (NCCL and Gloo pick their sockets' interface by
#: these): a name the host lacks makes multi-node start-up hang until NCCL times out
#: and where the engines find (or fetch) a model given by its hub id
_NEED_VARS = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME", "HF_HOME", "HF_HUB_CACHE",
              "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_EXPORT = re.compile(rf"^export ({'|'.join(_NEED_VARS)})=(.*)$", re.M)


def _host_model_paths(paths: list[str], container: Any) -> list[str]:
    """Where the host keeps the engines' models: on a container host, each path mapped back
    through the mounts (``SRC:DST``) that cover it; a path no mount covers lives in the image,
    and a hub id in the container's cache, which the host cannot see: neither is checked."""
    if not isinstance(container, dict):
        return paths
    out = []
    for p in paths:
        best: tuple[str, str] | None = None
        for m in container.get("mounts") or ():
            src, _, rest = str(m).partition(":")
            dst = rest.split(":", 1)[0]
            if dst and (p == dst or p.startswith(dst.rstrip("/") + "/")) and (
                    best is None or len(dst) > len(best[1])):
                best = (src, dst)
        if best is not None and os.path.isabs(p):
            out.append(best[0].rstrip("/") + p[len(best[1].rstrip("/")):] if p != best[1]
                       else best[0])
    return sorted(out)


def _env_needs(files: dict[str, tuple[bytes, int]], units: list[UnitSpec]) -> dict[str, str]:
    """The variables of ``_NEED_VARS`` the host's engine scripts export (rendered values)."""
    out: dict[str, str] = {}
    for u in units:
        if u.kind != "engine":
            continue
        text = files.get(u.files[0], (b"", 0))[0].decode("utf-8", "replace")
        for name, raw in _EXPORT.findall(text):
            try:
                words = shlex.split(raw)
            except ValueError:
                continue
            if len(words) == 1:
                out[name] = words[0]
    return out


def engine_unit(engine: dict[str, Any], rank: int) -> str:
    """The unit name of rank ``rank`` of a plan.json engine (``engine-<id>``, a multi-node
    engine's ranks ``engine-<id>-r<rank>``)."""
    return f"engine-{engine['id']}" if engine["nnodes"] == 1 else f"engine-{engine['id']}-r{rank}"


def target_from(plan: dict[str, Any], files: dict[str, tuple[bytes, int]], python: str,
                rehearse: bool, secrets_env_file: str | None = None) -> Target:
    """A Target from a plan dict (plan.json) and the render's files (paths under hosts/)."""
    name = plan["deployment"]["name"]
    nodes = plan["nodes"]
    per: dict[int, list[UnitSpec]] = {n["index"]: [] for n in nodes}
    ports: dict[int, list[tuple[int, str]]] = {n["index"]: [] for n in nodes}
    host_of = {n["index"]: n["host"] for n in nodes}
    sup_of = {n["host"]: n.get("supervisor", "bash") for n in nodes}
    gpus: dict[int, int] = {n["index"]: 0 for n in nodes}
    routers: list[UnitSpec] = []
    encoders: list[UnitSpec] = []
    engines: list[UnitSpec] = []

    def unit_files(host: str, uname: str, lib: bool) -> tuple[str, ...]:
        out = [f"bin/{uname}.sh"]
        if sup_of[host] == "systemd":
            out.append(f"systemd/sgl-{name}-{uname}.service")
        if lib:
            out += sorted(r.split("/", 2)[2] for r in files if r.startswith(f"hosts/{host}/lib/"))
        return tuple(out)

    needs: dict[int, dict[str, Any]] = {
        n["index"]: {"models": set(), "ib": set(), "unit_gpus": {}}
        for n in nodes}
    for m in plan["models"]:
        for e in m["engines"]:
            for p in e["placements"]:
                argv = [a for a in p.get("argv") or e.get("argv") or () if isinstance(a, str)]
                need = needs[p["node"]]
                for flag, key in (("--model-path", "models"),
                                  ("--disaggregation-ib-device", "ib")):
                    if flag in argv[:-1]:
                        need[key].add(argv[argv.index(flag) + 1])
                rank = p["node_rank"]
                uname = engine_unit(e, rank)
                need["unit_gpus"][uname] = list(p["gpus"])
                host = host_of[p["node"]]
                u = UnitSpec(uname, "engine", host, m["name"], e["id"], rank,
                             f"{e['url']}/health" if rank == 0 else None,
                             e["url"] if rank == 0 else f"(rank {rank} of {e['url']})",
                             unit_files(host, uname, rehearse),
                             service=f"sgl-{name}-{uname}.service", role=e["worker_type"],
                             bootstrap_port=e.get("bootstrap_port") if rank == 0 else None)
                (encoders if e["worker_type"] == "encoder" else engines).append(u)
                gpus[p["node"]] = max([gpus[p["node"]], *(g + 1 for g in p["gpus"])])
                ps = ports[p["node"]]
                ps.append((p.get("port") or e["port"], uname))
                if e.get("engine_info_bootstrap_port"):
                    ps.append((e["engine_info_bootstrap_port"], uname))
                if rank == 0:
                    ps.append((e["nccl_port"], uname))
                    if e.get("bootstrap_port"):
                        ps.append((e["bootstrap_port"], uname))
                    if e.get("dist_init_addr"):
                        ps.append((int(e["dist_init_addr"].rsplit(":", 1)[1]), uname))
        r = m["router"]
        rname = f"router-{m['name']}"
        rhost = host_of[r["node"]]
        expected = tuple(sorted(e["url"] for e in m["engines"] if e["worker_type"] != "encoder"))
        rfiles = unit_files(rhost, rname, False)
        # what names its engines: their URLs and (systemd) their units
        markers = [e["url"] for e in m["engines"]] + [
            f"sgl-{name}-{engine_unit(e, k)}.service"
            for e in m["engines"] for k in range(e["nnodes"])]
        texts = [files.get(f"hosts/{rhost}/{rel}", (b"", 0))[0] for rel in rfiles]
        routers.append(UnitSpec(rname, "router", rhost, m["name"], None, 0,
                                f"{r['url']}/health", r["url"], rfiles,
                                expected, routerauth.api_key_env(r.get("argv")),
                                service=f"sgl-{name}-{rname}.service",
                                settings=membership_free(texts, markers)))
        ports[r["node"]] += [(r["port"], rname), (r["prometheus_port"], rname)]
    for u in encoders + engines + routers:
        node = next(n["index"] for n in nodes if n["host"] == u.host)
        per[node].append(u)
    hosts = []
    for n in nodes:
        prefix = f"hosts/{n['host']}/"
        hfiles = {rel[len(prefix):]: v for rel, v in files.items() if rel.startswith(prefix)}
        for u in per[n["index"]]:
            missing = [f for f in u.files if f not in hfiles]
            if missing:
                hint = (" (node supervisor systemd needs the systemd target: render with "
                        "--target bash,systemd, or set its supervisor to bash)"
                        if missing[0].startswith("systemd/") else
                        " (it does not match plan.json)")
                raise SglGenError(f"{prefix}{missing[0]}: missing from the render{hint}")
        root = f"{n['workdir'].rstrip('/')}/{name}"
        ctr = n.get("container")
        need = needs[n["index"]]
        host_needs = {"gpus": sorted({int(g) for gs in need["unit_gpus"].values() for g in gs}),
                      "models": _host_model_paths(sorted(need["models"]), ctr),
                      "ib": sorted(need["ib"]),
                      "env": _env_needs(hfiles, per[n["index"]]),
                      "unit_gpus": {k: sorted(v) for k, v in need["unit_gpus"].items()}}
        hosts.append(HostSpec(n["index"], n["host"], n["address"], n.get("user"),
                              n.get("ssh_port"), root, tuple(per[n["index"]]), hfiles,
                              tuple(sorted(set(ports[n["index"]]))), gpus[n["index"]],
                              sup_of[n["host"]], name,
                              dict(ctr) if isinstance(ctr, dict) else None,
                              needs=host_needs))
    ro = plan.get("rollout") or {}
    return Target(name, python, rehearse, tuple(hosts), secrets_env_file,
                  ro.get("max_unavailable", 1), float(ro.get("drain", 30)),
                  str(plan["deployment"].get("sglang_version") or ""))


def target_from_plan(plan: Any, targets: tuple[str, ...], rehearse: bool) -> Target:
    """Render a compiled Plan in memory and build its Target."""
    from generator.targets.plans import plan_dict
    from generator.targets.render import render

    arts = render(plan, targets, rehearse=rehearse)
    files = {rel: (a.content.encode("utf-8"), a.mode) for rel, a in arts.items()
             if rel.startswith("hosts/")}
    return target_from(json.loads(json.dumps(plan_dict(plan))), files,
                       plan.topology.runtime.python, rehearse,
                       plan.topology.runtime.secrets_env_file)
