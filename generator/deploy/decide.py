"""What the hosts have (their probes) against what the render wants: the decision per unit
(start, restart, stop, none) and the preflight, every problem on every host at once."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from generator.deploy.changes import Changes, UnitAction
from generator.deploy.hostfiles import host_files, owned_files, owned_unit_files, unit_file_changes
from generator.deploy.spec import HostSpec, Target, UnitSpec, unit_hash
from generator.deploy.transport import Host


@dataclass
class Remote:
    host: Host
    probe: dict[str, Any]

    @property
    def files(self) -> dict[str, list[Any]]:
        return dict(self.probe.get("files") or {})

    @property
    def units(self) -> dict[str, dict[str, Any]]:
        """The units' states under the host's supervisor."""
        return dict(self.probe.get("units") or {})

    @property
    def other_units(self) -> dict[str, dict[str, Any]]:
        """Units of this deployment under the other supervisor (a host that moved from bash to
        systemd or back); under systemd only those whose unit files sgl-gen installed here."""
        got = dict(self.probe.get("other_units") or {})
        spec = self.host.spec
        if spec.supervisor == "bash":
            owned = owned_unit_files(self.probe, spec.deployment)
            got = {u: st for u, st in got.items()
                   if f"sgl-{spec.deployment}-{u}.service" in owned}
        return got

    @property
    def systemd(self) -> dict[str, Any]:
        return dict(self.probe.get("systemd") or {})

    @property
    def records(self) -> dict[str, dict[str, Any]]:
        """The manifest's record of each unit as deployed (kind, hash, url, settings)."""
        man = self.probe.get("manifest")
        units = man.get("units") if isinstance(man, dict) else None
        return {str(n): rec for n, rec in units.items() if isinstance(rec, dict)} \
            if isinstance(units, dict) else {}

    def _recorded(self, unit: str, key: str) -> str | None:
        got = self.records.get(unit, {}).get(key)
        return str(got) if got else None

    def deployed_settings(self, u: UnitSpec) -> str | None:
        """A router's settings checksum (its files without the worker membership) as deployed."""
        return self._recorded(u.name, "settings")

    def deployed_url(self, unit: str) -> str | None:
        return self._recorded(unit, "url")

    def unit_file_drifted(self, u: UnitSpec) -> bool:
        """Its installed unit file is not the one sgl-gen installed (edited, or gone)."""
        if self.host.spec.supervisor != "systemd":
            return False
        owned = owned_unit_files(self.probe, self.host.spec.deployment)
        got = (self.systemd.get("installed") or {}).get(u.service)
        return got is None or len(got) > 2 or got[0] != owned.get(u.service)

    def image_changed(self, u: UnitSpec) -> bool:
        """On a container host: the unit ran another image than the one its name has now."""
        spec = self.host.spec
        was = self._recorded(u.name, "image")
        return spec.container is not None and was is not None and was != spec.image.get("id")

    def deployed_hash(self, u: UnitSpec) -> str | None:
        got = self._recorded(u.name, "hash")
        if got:
            return got
        files = self.files
        if all(rel in files for rel in u.files):
            return unit_hash({rel: files[rel][0] for rel in u.files})
        return None


def _short(image_id: Any) -> str:
    """An image id as the runtimes print it: 12 hex digits, without the sha256: prefix."""
    return str(image_id or "?").removeprefix("sha256:")[:12]


def _other(sup: str) -> str:
    return "bash" if sup == "systemd" else "systemd"


def decide(target: Target, remotes: dict[str, Remote], adopt: bool = False) -> Changes:
    ch = Changes()
    wanted: dict[str, tuple[HostSpec, UnitSpec, str]] = {}
    for h in target.hosts:
        if h.host not in remotes:
            continue
        r = remotes[h.host]
        host_files(h, r.probe, adopt, ch)
        unit_file_changes(h, r.probe, adopt, ch)
        for u in h.units:
            st = r.units.get(u.name, {}).get("state", "stopped")
            moved = r.other_units.get(u.name, {}).get("state") in ("running", "dead")
            if moved:
                wanted[u.name] = (h, u, "restart")
            elif st != "running":
                wanted[u.name] = (h, u, "start")
            elif u.kind == "router" and r.deployed_hash(u) != h.unit_hash(u) \
                    and r.deployed_settings(u) == u.settings and not r.unit_file_drifted(u) \
                    and not r.image_changed(u):
                # only its worker list changed: applied live (POST/DELETE /workers)
                wanted[u.name] = (h, u, "update")
            elif r.deployed_hash(u) != h.unit_hash(u) or u.service in ch.install[h.host]:
                # (a unit file rewritten because it differs from sgl-gen's: its unit restarts)
                wanted[u.name] = (h, u, "restart")
            else:
                wanted[u.name] = (h, u, "none")
    # every rank of a multi-node engine starts together: one rank to (re)start restarts all
    by_engine: dict[str, list[str]] = {}
    for name, (_, u, _) in wanted.items():
        if u.engine is not None:
            by_engine.setdefault(u.engine, []).append(name)
    for names in by_engine.values():
        if len(names) > 1 and any(wanted[n][2] != "none" for n in names):
            for n in names:
                h, u, act = wanted[n]
                if act == "none":
                    wanted[n] = (h, u, "restart")
    reasons = {"start": "not running", "restart": "its files changed", "none": "unchanged",
               "update": "only its workers changed: updated live, not restarted"}
    for h in target.hosts:
        if h.host not in remotes:
            continue
        r = remotes[h.host]
        other = _other(h.supervisor)
        for u in h.units:
            _, _, act = wanted[u.name]
            reason = reasons[act]
            st = r.units.get(u.name, {}).get("state", "stopped")
            stop_with = ""
            if r.other_units.get(u.name, {}).get("state") in ("running", "dead"):
                reason, st, stop_with = f"moves from {other} to {h.supervisor}", "running", other
            elif act == "restart" and r.deployed_hash(u) == h.unit_hash(u) \
                    and u.service in ch.install[h.host]:
                reason = "its installed unit file differs from sgl-gen's"
            elif act == "restart" and r.deployed_hash(u) == h.unit_hash(u):
                reason = "another rank of its engine restarts"
            elif act == "restart" and r.image_changed(u):
                reason = (f"its image changed ({(h.container or {}).get('image')}: "
                          f"{_short(r.records[u.name]['image'])} -> "
                          f"{_short(h.image.get('id'))})")
            elif act == "restart" and u.kind == "router":
                reason = "its own settings changed"
            elif act == "start" and st == "dead":
                reason = "its process exited"
            ch.units.append(UnitAction(h.host, u.name, u.kind, act, reason, u.url, st,
                                       stop_with))
        known = {u.name for u in h.units}
        # only in a root sgl-gen owns: a pidfile in a foreign run/ is not one of its units
        if owned_files(r.probe) is not None:
            for sup, states in ((h.supervisor, r.units), (other, r.other_units)):
                for name, s in sorted(states.items()):
                    if name not in known and s.get("state") in ("running", "dead"):
                        kind = "router" if name.startswith("router-") else "engine"
                        ch.units.append(UnitAction(
                            h.host, name, kind, "stop", "no longer in the plan", "",
                            s["state"], "" if sup == h.supervisor else sup))
    return ch


def _systemd_problems(h: HostSpec, r: Remote) -> list[str]:
    sd = r.systemd
    name = h.host
    if not sd.get("booted"):
        return [f"{name}: supervisor systemd, but systemd is not running on this host (no "
                f"/run/systemd/system) (hint: give it `supervisor: bash` in cluster.hosts, or "
                f"set runtime.supervisor: bash)"]
    problems = []
    if sd.get("mode") == "user":
        user = sd.get("user") or h.user or "the SSH user"
        if not sd.get("linger"):
            problems.append(
                f"{name}: {user} is not root, so its units are user units (systemctl --user), "
                f"and without lingering they stop when the SSH session ends and do not start "
                f"at boot (hint: as root on {name}: loginctl enable-linger {user})")
        elif sd.get("error"):
            problems.append(f"{name}: systemctl --user does not answer: {sd['error']} "
                            f"(hint: is the user manager of {user} running? loginctl "
                            f"show-user {user})")
    return problems


def container_problems(target: Target, remotes: dict[str, Remote], pull: bool = False,
                       accept_version: bool = False) -> tuple[list[str], list[str]]:
    """(problems, warnings) of the container hosts: the runtime usable by the SSH user, the
    image present (pulled, with ``pull``), its SGLang the plan's (``accept_version``
    (--accept-image-version): a mismatch is a warning)."""
    problems: list[str] = []
    warnings: list[str] = []
    for name, r in sorted(remotes.items()):
        c = r.host.spec.container
        got = r.probe.get("container")
        if c is None:
            continue
        kind, image = c["kind"], c["image"]
        if not isinstance(got, dict):
            problems.append(f"{name}: the host agent did not report on {kind} (an older sgl-gen?)")
            continue
        rt = got.get("runtime") or {}
        if not rt.get("ok"):
            hint = (f"install {kind} on {name}" if rt.get("missing") else
                    f"can {r.host.spec.user or 'the SSH user'} run `{kind} version` there? "
                    + ("add the user to the docker group, or connect as root"
                       if kind == "docker" else "a rootless podman needs the user's subuid range"))
            problems.append(f"{name}: {kind} is not usable: {rt.get('error')} (hint: {hint})")
            continue
        pulled = got.get("pull") or {}
        if pull and pulled.get("ok") is False:
            problems.append(f"{name}: {kind} pull {image} failed: {pulled.get('error')}")
            continue
        if not (got.get("image") or {}).get("id"):
            problems.append(
                f"{name}: the image {image} is not on the host ({kind}: "
                f"{(got.get('image') or {}).get('error')}) (hint: deploy --pull, or `{kind} pull "
                f"{image}` / `{kind} load` there)")
            continue
        sg = got.get("sglang") or {}
        version = sg.get("version")
        want = target.sglang_version
        if not version and "No module named" in str(sg.get("error")):
            problems.append(f"{name}: the image {image} has no SGLang its {target.python} can "
                            f"import ({sg.get('error')}) (hint: is runtime.python the image's "
                            f"interpreter?)")
        elif not version:
            problems.append(f"{name}: could not read the SGLang version of {image} (`{kind} run "
                            f"... {target.python} -c 'import sglang'` failed: {sg.get('error')})")
        elif want and version != want:
            _version_mismatch(f"{name}: the image {image}", version, want, accept_version,
                              "--accept-image-version", f"use an image of SGLang {want}",
                              problems, warnings)
    return problems, warnings


def _version_mismatch(what: str, version: str, want: str, accept: bool, flag: str, fix: str,
                      problems: list[str], warnings: list[str]) -> None:
    """Another SGLang than the catalog's: an error naming both, or with ``flag`` a warning."""
    msg = (f"{what} has SGLang {version}, but the topology was validated against the catalog "
           f"of SGLang {want}")
    if accept:
        warnings.append(f"{msg}: deploying anyway ({flag})")
    else:
        problems.append(f"{msg} (hint: set deployment.sglang_version: \"{version}\" if sgl-gen "
                        f"has its catalog, {fix}, or pass {flag})")


def preflight(target: Target, remotes: dict[str, Remote], ch: Changes,
              min_free: int, stop_all: bool = False) -> list[str]:
    """Every problem on every host. ``stop_all`` (--allow-downtime): what restarts or goes
    stops before anything starts, so a port one of them holds is free by then."""
    problems: list[str] = []
    t = target
    for name, r in sorted(remotes.items()):
        spec = r.host.spec
        p = r.probe
        for mod, ok in sorted((p.get("modules") or {}).items()):
            if not ok:
                problems.append(f"{name}: {t.python} cannot import {mod} (python {p.get('python')})")
        g = p.get("gpus")
        if g is not None:
            need = spec.gpus_needed
            if g["rc"] != 0:
                problems.append(f"{name}: nvidia-smi -L failed (exit {g['rc']}): {g['err']}")
            elif len(g["lines"]) < need:
                problems.append(f"{name}: {len(g['lines'])} GPU(s) visible, the plan uses {need}")
        free = p.get("disk_free")
        if free is not None and free < min_free:
            problems.append(f"{name}: only {free // (1 << 20)} MiB free under {spec.root}")
        if spec.supervisor == "systemd":
            problems += _systemd_problems(spec, r)
        for unit, st in sorted({**r.units, **r.other_units}.items()):
            if st.get("state") == "unknown":
                problems.append(f"{name}: cannot read the state of {unit}: {st.get('active')}")
        masked = [n for n, v in (r.systemd.get("enabled") or {}).items() if v == "masked"]
        if masked and spec.supervisor == "systemd":
            problems.append(f"{name}: {', '.join(masked)} masked (hint: systemctl unmask "
                            f"{' '.join(masked)}, if you masked it for no lasting reason)")
        listening = set(p.get("listen") or ())
        units = r.units
        moving = [a.unit for a in ch.units if a.host == name and a.action in ("restart", "stop")
                  and a.state == "running"]
        for port, unit in spec.ports:
            mine_running = "running" in (units.get(unit, {}).get("state"),
                                         r.other_units.get(unit, {}).get("state"))
            if port in listening and not mine_running:
                if moving and stop_all:
                    continue  # held, presumably, by one of the units that stop first
                problems.append(
                    f"{name}: port {port} ({unit}) is already in use on {spec.address} by "
                    f"another process" + (
                        f" (if one of this deployment's units that restart or go holds it "
                        f"({', '.join(moving[:3])}{', ...' if len(moving) > 3 else ''}): a "
                        f"rolling deploy starts {unit} before they stop; deploy with "
                        f"--allow-downtime)" if moving else ""))
        problems += _secrets_problems(name, spec, p.get("secrets"), t.secrets_env_file)
        problems += ch.refused.get(name, [])
    return problems


def _secrets_problems(name: str, spec: HostSpec, sec: Any, path: str | None) -> list[str]:
    if not path or not isinstance(sec, dict):
        return []
    if not sec.get("exists"):
        return [f"{name}: runtime.secrets_env_file {path} is missing ({sec.get('error')}) "
                f"(hint: create it, mode 600, with the NAME=value lines the units need)"]
    if not sec.get("regular"):
        return [f"{name}: runtime.secrets_env_file {path} is not a regular file"]
    if int(sec.get("mode") or 0) & 0o077:
        return [f"{name}: runtime.secrets_env_file {path} is readable by group/others (mode "
                f"{int(sec['mode']):o}) (hint: chmod 600 {path})"]
    if not sec.get("readable"):
        return [f"{name}: runtime.secrets_env_file {path} is not readable by "
                f"{spec.user or 'the SSH user'}"]
    return []


# ---------------------------------------------------------------------------------------------
# What the engines will meet on each host (hostagent.host_checks): before a real deploy, and
# `sgl-gen check`


def _ifname_problem(var: str, value: str, have: list[str]) -> str | None:
    """NCCL_SOCKET_IFNAME's syntax: a comma-separated list of prefixes, ``=`` for exact names,
    ``^`` to exclude (nothing to check then); GLOO_SOCKET_IFNAME: exact names only."""
    if var.startswith("NCCL_"):
        if not value or value.startswith("^"):
            return None
        exact = value.startswith("=")
        want = [w.strip() for w in value.lstrip("=").split(",") if w.strip()]
        found = [w for w in want if any(n == w if exact else n.startswith(w) for n in have)]
        who = "NCCL would hang until its timeout"
    else:
        want = [w.strip() for w in value.split(",") if w.strip()]
        found = want if want and all(w in have for w in want) else []
        who = "Gloo takes exact interface names; its start-up would fail"
    if found:
        return None
    return (f"{var}={value} names no network interface here (it has: "
            f"{', '.join(have) or 'none'}); {who}")


def _ib_names(value: str) -> list[str]:
    """``mlx5_0``, ``mlx5_0,mlx5_1`` or a JSON object of GPU -> device(s)."""
    text = value.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            return []
        if not isinstance(doc, dict):
            return []
        return sorted({n.strip() for v in doc.values() for n in str(v).split(",") if n.strip()})
    return [n.strip() for n in text.split(",") if n.strip()]


def host_problems(target: Target, remotes: dict[str, Remote], accept_version: bool = False
                  ) -> tuple[list[str], list[str]]:
    """(problems, warnings) of what each host's engines need there: the SGLang version the
    topology was validated against, the model paths, the plan's GPUs (present, and no other
    process computing on them), the interfaces NCCL/Gloo are told to use, the InfiniBand
    devices of PD transfer."""
    problems: list[str] = []
    warnings: list[str] = []
    want = target.sglang_version
    for name, r in sorted(remotes.items()):
        c = r.probe.get("checks")
        if not isinstance(c, dict):
            continue
        needs = r.host.spec.needs
        sg = c.get("sglang") or {}
        version = sg.get("version")
        if version and want and version != want:
            _version_mismatch(f"{name}: {sg.get('python') or target.python}", version, want,
                              accept_version, "--accept-sglang-version",
                              f"install sglang=={want} there", problems, warnings)
        elif sg and not version and "No module named" not in str(sg.get("error")):
            problems.append(f"{name}: could not read the SGLang version of "
                            f"{sg.get('python') or target.python}: {sg.get('error')}")
        for path, m in sorted((c.get("models") or {}).items()):
            if m.get("kind") == "dir":
                if not m.get("exists"):
                    problems.append(f"{name}: model_path {path} does not exist (hint: copy the "
                                    f"model there, or mount it)")
                elif not m.get("readable"):
                    problems.append(f"{name}: model_path {path} is not readable by "
                                    f"{r.host.spec.user or 'the SSH user'}")
                elif not m.get("config"):
                    problems.append(f"{name}: model_path {path} has no config.json: not a "
                                    f"model directory")
            elif not m.get("cached") and (m.get("online") is False or m.get("offline_env")):
                why = "HF_HUB_OFFLINE is set" if m.get("offline_env") else \
                    "huggingface.co does not resolve"
                warnings.append(f"{name}: model {path} is a hub id with no copy in "
                                f"{m.get('cache')} and the host is offline ({why}): the engines "
                                f"cannot download it")
        g = c.get("gpu")
        if isinstance(g, dict):
            listed = r.probe.get("gpus")
            if g.get("error"):
                # unless preflight reports `nvidia-smi -L` failing already
                if not (isinstance(listed, dict) and listed.get("rc")):
                    problems.append(f"{name}: nvidia-smi --query-gpu failed: {g['error']}")
            else:
                problems += _gpu_problems(name, g, needs)
        have = c.get("net")
        if isinstance(have, list):
            for var, value in sorted((needs.get("env") or {}).items()):
                if var.endswith("_SOCKET_IFNAME"):
                    p = _ifname_problem(var, value, have)
                    if p:
                        problems.append(f"{name}: {p}")
        ib = c.get("ib")
        for value in needs.get("ib") or ():
            missing = [n for n in _ib_names(value) if ib is None or n not in ib]
            if missing:
                problems.append(f"{name}: disaggregation_ib_device {', '.join(missing)} is not an "
                                f"InfiniBand device here (it has: {', '.join(ib or []) or 'none'})")
    return problems, warnings


def _gpu_problems(name: str, g: dict[str, Any], needs: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if g.get("apps_error"):
        out.append(f"{name}: nvidia-smi --query-compute-apps failed ({g['apps_error']}): "
                   f"cannot tell whether the plan's GPUs are free")
    ids = {int(x["index"]) for x in g.get("gpus") or ()}
    missing = [i for i in needs.get("gpus") or () if i not in ids]
    if missing:
        out.append(f"{name}: the plan puts engines on GPU(s) {', '.join(map(str, missing))} but "
                   f"nvidia-smi lists {', '.join(map(str, sorted(ids))) or 'none'}")
    # a process of this deployment's (any of its running units, by the names of now or of an
    # earlier deploy: hostagent.owned_by) is one this deploy stops or keeps, not a stranger
    for a in g.get("apps") or ():
        i = a.get("gpu")
        if i in (needs.get("gpus") or ()) and not a.get("ours"):
            users = [u for u, gs in (needs.get("unit_gpus") or {}).items() if i in gs]
            out.append(f"{name}: GPU {i} is in use by pid {a['pid']} ({a.get('name')}, "
                       f"{a.get('used')} MiB), not by this deployment; "
                       f"{', '.join(users) or 'an engine'} would start on it (hint: stop that "
                       f"process, or move the engine with cluster.hosts[].gpus)")
    return out
