"""``sgl-gen plan FILE --against OLD``: what deploying FILE's render onto hosts that run OLD (a
rendered directory, ``out/<deployment>/``, or its ``plan.json``) would do, per model and unit,
without a host.

OLD becomes the probes of hosts where it is deployed and every unit runs (what the host agent
would report to a deploy); :func:`generator.deploy.decide.decide`, the decision of ``deploy``
and ``diff``, judges the new render against them. Its actions are then named for review:
``start`` is *added* (or *moved*, when the unit leaves another host), ``stop`` *removed*,
``restart`` *restarted* (or *moved*, when its GPUs changed), ``update`` *updated* (a router's
worker list, applied live), ``none`` *unchanged*; each with the flags and files behind it.

A ``plan.json`` holds no files: both sides are then judged by what plan.json records of each
unit (its argv, GPUs, host, node and the runtime), so a change only in the scripts' environment
shows against a rendered directory alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generator.deploy.changes import Changes
from generator.deploy.decide import Remote, decide
from generator.deploy.hostfiles import manifest_doc
from generator.deploy.rendered import check_plan, target_from_dir
from generator.deploy.spec import HostSpec, Target, engine_unit, target_from
from generator.errors import SglGenError

#: where the synthetic hosts have their unit files (root's system manager)
UNIT_DIR = "/etc/systemd/system"
#: the review's names of what happens to a unit, in the order summaries list them
CHANGES = ("added", "removed", "moved", "restarted", "updated", "unchanged")
ROLES = ("encoder", "prefill", "decode", "regular", "placeholder")


class _Conn:
    """What the decision reads of a connection: its spec."""

    def __init__(self, spec: HostSpec):
        self.spec, self.name = spec, spec.host


def running_probe(spec: HostSpec, target: Target, supervisor: str) -> dict[str, Any]:
    """The probe of a host where ``spec``'s render is deployed and every unit runs, as a deploy
    whose host runs under ``supervisor`` finds it (its units under the other supervisor when
    the host changes supervisor)."""
    units = {u.name: spec.unit_hash(u) for u in spec.units}
    man = manifest_doc(_Conn(spec), target, units, UNIT_DIR)  # type: ignore[arg-type]
    names = [rel.split("/", 1)[1] for rel in spec.systemd_files] \
        if spec.supervisor == "systemd" else []
    states = {u.name: {"state": "running", "enabled": "enabled", "active": "active (running)",
                       "restarts": 0} for u in spec.units}
    same = spec.supervisor == supervisor
    return {
        "files": {rel: [spec.sha(rel), mode] for rel, (_, mode) in spec.files.items()},
        "manifest": man,
        "units": states if same else {},
        "other_units": {} if same else states,
        "systemd": {"booted": True, "mode": "system", "user": "root", "unit_dir": UNIT_DIR,
                    "installed": {n: [spec.sha(f"systemd/{n}"), 0o644] for n in names},
                    "enabled": {n: "enabled" for n in names}, "need_reload": []},
    }


def fresh_probe() -> dict[str, Any]:
    """The probe of a host that runs nothing of the deployment yet."""
    return {"files": {}, "manifest": None, "units": {}, "other_units": {},
            "systemd": {"booted": True, "mode": "system", "user": "root", "unit_dir": UNIT_DIR,
                        "installed": {}, "enabled": {}, "need_reload": []}}


# -- what plan.json says of each unit -----------------------------------------------------------

@dataclass(frozen=True)
class Facts:
    model: str
    kind: str  # engine | router
    role: str  # engines: their worker_type; routers: ""
    host: str
    gpus: tuple[int, ...]
    argv: tuple[str, ...]
    entry: dict[str, Any] = field(compare=False, hash=False)  # what plan.json records of it


def _token(t: Any) -> str:
    return t if isinstance(t, str) else json.dumps(t, sort_keys=True)


def unit_facts(plan: dict[str, Any]) -> dict[str, Facts]:
    """Unit name -> what a plan.json document says of it."""
    nodes = {n["index"]: n for n in plan["nodes"]}
    out: dict[str, Facts] = {}
    for m in plan["models"]:
        for e in m["engines"]:
            for p in e["placements"]:
                node = nodes[p["node"]]
                argv = tuple(_token(t) for t in p.get("argv") or e.get("argv") or ())
                entry = {"engine": {k: v for k, v in e.items() if k != "placements"},
                         "placement": p, "node": node, "runtime": plan.get("runtime")}
                out[engine_unit(e, p["node_rank"])] = Facts(
                    m["name"], "engine", e["worker_type"], node["host"],
                    tuple(p["gpus"]), argv, entry)
        r = m["router"]
        node = nodes[r["node"]]
        out[f"router-{m['name']}"] = Facts(
            m["name"], "router", "", node["host"], (), tuple(_token(t) for t in r["argv"]),
            {"router": r, "node": node, "runtime": plan.get("runtime")})
    return out


def plan_files(plan: dict[str, Any]) -> dict[str, tuple[bytes, int]]:
    """Stand-ins for a render's ``hosts/`` files made of plan.json alone: each unit's script
    (and systemd unit) is what plan.json records of it, one JSON token per line, so that a
    router's worker URLs are lines of their own (as in its script)."""
    name = plan["deployment"]["name"]
    sup = {n["host"]: n.get("supervisor", "bash") for n in plan["nodes"]}
    files: dict[str, tuple[bytes, int]] = {}
    for unit, f in unit_facts(plan).items():
        text = json.dumps(f.entry, indent=1, sort_keys=True).encode()
        files[f"hosts/{f.host}/bin/{unit}.sh"] = (text, 0o755)
        if sup[f.host] == "systemd":
            files[f"hosts/{f.host}/systemd/sgl-{name}-{unit}.service"] = (text, 0o644)
    for host, s in sup.items():
        if s == "systemd":
            files[f"hosts/{host}/systemd/sgl-{name}.target"] = (b"", 0o644)
    return files


def _plan_target(plan: dict[str, Any]) -> Target:
    return target_from(plan, plan_files(plan), plan["runtime"]["python"], False,
                       plan["runtime"].get("secrets_env_file"))


# -- OLD ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Old:
    plan: dict[str, Any]
    target: Target | None  # a rendered directory's; None for a bare plan.json
    rehearse: bool


def read_old(source: str) -> Old:
    """OLD: a rendered directory (checked as deploy checks one) or a plan.json."""
    p = Path(source)
    if p.is_dir():
        if not (p / "plan.json").is_file():
            raise SglGenError(f"{source}: not a rendered deployment directory (no plan.json "
                              f"in it; hint: --against out/<deployment>/)")
        target = target_from_dir(p)
        plan = json.loads((p / "plan.json").read_text(encoding="utf-8"))
        return Old(plan, target, target.rehearse)
    if not p.is_file():
        raise SglGenError(f"{source}: no such rendered directory or plan.json")
    try:
        plan = json.loads(p.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise SglGenError(f"{source}: not a plan.json: {str(exc)[:200]}") from None
    problems = check_plan(plan, source)
    if problems:
        raise SglGenError("\n".join(problems[:20]))
    try:
        _plan_target(plan)
    except (KeyError, TypeError, ValueError, StopIteration) as exc:
        raise SglGenError(f"{source}: not a usable plan.json ({type(exc).__name__}: "
                          f"{exc})") from None
    return Old(plan, None, False)


# -- the review ---------------------------------------------------------------------------------

def flag_changes(old: tuple[str, ...], new: tuple[str, ...]) -> dict[str, Any]:
    """The flags of two argvs that differ: {"added": {flag: value}, "removed": {...},
    "changed": {flag: [old, new]}} (a repeated flag's values joined by "; ")."""
    def flags(argv: tuple[str, ...]) -> dict[str, str]:
        out: dict[str, list[list[str]]] = {}
        cur: list[str] | None = None
        for t in argv:
            if t.startswith("--"):
                flag, eq, value = t.partition("=")
                cur = [value] if eq else []
                out.setdefault(flag, []).append(cur)
            elif cur is not None:
                cur.append(t)
            else:  # (argv starts with a flag: nothing comes before one)
                out.setdefault(t, [[]])
        return {k: "; ".join(" ".join(v) for v in vs) for k, vs in out.items()}
    a, b = flags(old), flags(new)
    return {"added": {k: b[k] for k in sorted(b) if k not in a},
            "removed": {k: a[k] for k in sorted(a) if k not in b},
            "changed": {k: [a[k], b[k]] for k in sorted(a) if k in b and a[k] != b[k]}}


def _files_changed(new: HostSpec, old: HostSpec | None, rels: tuple[str, ...]) -> list[str]:
    return [rel for rel in rels if old is None or rel not in old.files
            or old.sha(rel) != new.sha(rel)]


def capacity(plan: dict[str, Any]) -> dict[str, dict[str, dict[str, int]]]:
    """Per model, per role: its engines and their GPUs (placeholders: the GPUs they hold)."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for m in plan["models"]:
        roles: dict[str, dict[str, int]] = {}
        for e in m["engines"]:
            r = roles.setdefault(e["worker_type"], {"engines": 0, "gpus": 0})
            r["engines"] += 1
            r["gpus"] += sum(len(p["gpus"]) for p in e["placements"])
        for ph in m.get("placeholders") or ():
            r = roles.setdefault("placeholder", {"engines": 0, "gpus": 0})
            r["gpus"] += len(ph["gpus"])
        out[m["name"]] = roles
    return out


def review(new_plan: dict[str, Any], new: Target, old: Old, against: str) -> dict[str, Any]:
    """The review document (``plan --against --output json``) of deploying ``new`` (a Target
    whose plan.json is ``new_plan``) onto hosts that run ``old``."""
    basis = "files" if old.target is not None else "plan.json"
    if old.target is None:
        new = _plan_target(new_plan)
    before = old.target if old.target is not None else _plan_target(old.plan)
    old_hosts = {h.host: h for h in before.hosts}
    new_hosts = {h.host: h for h in new.hosts}
    remotes = {h.host: Remote(_Conn(h), running_probe(old_hosts[h.host], before, h.supervisor)  # type: ignore[arg-type]
                              if h.host in old_hosts else fresh_probe())
               for h in new.hosts}
    ch: Changes = decide(new, remotes)
    facts_new, facts_old = unit_facts(new_plan), unit_facts(old.plan)
    stops = {a.unit: a.host for a in ch.units if a.action == "stop"}
    for h in before.hosts:  # a host no longer in the plan: deploy leaves it, its units go
        if h.host not in new_hosts:
            stops.update({u.name: h.host for u in h.units})
    units: list[dict[str, Any]] = []
    for a in ch.units:
        if a.action == "stop":
            continue
        f = facts_new[a.unit]
        was = facts_old.get(a.unit)
        rec: dict[str, Any] = {"model": f.model, "unit": a.unit, "kind": a.kind, "role": f.role,
                               "host": a.host, "gpus": list(f.gpus), "reason": a.reason}
        if a.action == "start":
            rec["change"] = "moved" if a.unit in stops else "added"
        elif a.action == "restart":
            rec["change"] = "moved" if was is not None and was.host == a.host \
                and was.gpus != f.gpus else "restarted"
        else:
            rec["change"] = "updated" if a.action == "update" else "unchanged"
        if was is not None and rec["change"] != "added":
            rec["host_before"], rec["gpus_before"] = stops.get(a.unit, was.host), list(was.gpus)
            rec["flags"] = flag_changes(was.argv, f.argv)
            if basis == "files":
                spec = next(u for u in new_hosts[a.host].units if u.name == a.unit)
                rec["files"] = _files_changed(new_hosts[a.host], old_hosts.get(was.host),
                                              spec.files) if rec["change"] != "unchanged" else []
        units.append(rec)
    for name, host in stops.items():
        if name in facts_new:
            continue  # moved: reported where it goes
        was = facts_old[name]
        units.append({"model": was.model, "unit": name, "kind": was.kind, "role": was.role,
                      "host": host, "gpus": list(was.gpus), "change": "removed",
                      "reason": "no longer in the plan"})
    names = [m["name"] for m in new_plan["models"]]
    order = names + [m["name"] for m in old.plan["models"] if m["name"] not in names]
    cap_new, cap_old = capacity(new_plan), capacity(old.plan)
    models = []
    for name in order:
        mine = sorted((u for u in units if u["model"] == name),
                      key=lambda u: (u["kind"] != "engine", u["unit"]))
        roles = sorted(set(cap_new.get(name, {})) | set(cap_old.get(name, {})),
                       key=lambda r: ROLES.index(r) if r in ROLES else len(ROLES))
        empty = {"engines": 0, "gpus": 0}
        models.append({"name": name, "units": mine, "capacity": {
            r: {"before": cap_old.get(name, {}).get(r, empty),
                "after": cap_new.get(name, {}).get(r, empty)} for r in roles}})
    summary = {c: sum(1 for u in units if u["change"] == c) for c in CHANGES}
    return {"deployment": new_plan["deployment"]["name"], "ok": True, "against": against,
            "basis": basis,
            "changed": any(summary[c] for c in CHANGES if c != "unchanged"),
            "summary": summary, "models": models}



# -- the review as text and as Markdown (a pull request's comment) ------------------------------

def _short(value: str, limit: int = 60) -> str:
    return value if len(value) <= limit else value[:limit - 3] + "..."


def _gpus(ids: list[int]) -> str:
    return ",".join(map(str, ids)) or "-"


def _flags_text(flags: dict[str, Any], code: str = "") -> list[str]:
    out = [f"{code}{k}{code} {_short(a) or '(set)'} -> {_short(b) or '(set)'}"
           for k, (a, b) in flags.get("changed", {}).items()]
    out += [f"+{code}{k}{code}" + (f" {_short(v)}" if v else "")
            for k, v in flags.get("added", {}).items()]
    out += [f"-{code}{k}{code}" for k in flags.get("removed", {})]
    return out


def why(u: dict[str, Any], code: str = "") -> str:
    """Why a unit changes, in one line: the decision's reason, then the flags and files."""
    c = u["change"]
    parts: list[str] = []
    if c == "added":
        return "new in the plan"
    if c == "removed":
        return "no longer in the plan"
    if c == "moved" and u.get("host_before") != u["host"]:
        parts.append(f"host {u.get('host_before')} -> {u['host']}")
    elif c == "moved":
        parts.append(f"GPUs {_gpus(u.get('gpus_before') or [])} -> {_gpus(u['gpus'])}")
    else:
        parts.append(u["reason"])
    flags = _flags_text(u.get("flags") or {}, code)
    if flags:
        parts.append("flags " + ", ".join(flags))
    if u.get("files"):
        parts.append("files " + ", ".join(f"{code}{f}{code}" for f in u["files"]))
    return "; ".join(parts)


def _totals(doc: dict[str, Any]) -> str:
    return ", ".join(f"{doc['summary'][c]} {c}" for c in CHANGES)


def _capacity_cells(cap: dict[str, Any]) -> tuple[str, str]:
    b, a = cap["before"], cap["after"]
    return f"{b['engines']} -> {a['engines']}", f"{b['gpus']} -> {a['gpus']}"


def review_text(doc: dict[str, Any]) -> str:
    """The review for a terminal."""
    lines = [f"{doc['deployment']} against {doc['against']}: {_totals(doc)}"]
    if not doc["changed"]:
        lines.append("no changes")
    for m in doc["models"]:
        changed = [u for u in m["units"] if u["change"] != "unchanged"]
        same = len(m["units"]) - len(changed)
        lines.append(f"model {m['name']}: {len(changed)} changed, {same} unchanged")
        for u in changed:
            lines.append(f"  {u['change']:<9} {u['unit']}  {u['host']}  GPUs {_gpus(u['gpus'])}"
                         f"  {why(u)}")
        for role, cap in m["capacity"].items():
            engines, gpus = _capacity_cells(cap)
            if cap["before"] != cap["after"] or changed:
                lines.append(f"  capacity  {role}: engines {engines}, GPUs {gpus}")
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def review_markdown(doc: dict[str, Any]) -> str:
    """The review as Markdown, for a pull request's comment."""
    out = [f"### sgl-gen plan `{doc['deployment']}` against `{_md(doc['against'])}`", "",
           f"**{_totals(doc)}**", ""]
    if not doc["changed"]:
        out += ["No changes: a deploy would restart nothing.", ""]
        return "\n".join(out)
    for m in doc["models"]:
        changed = [u for u in m["units"] if u["change"] != "unchanged"]
        same = len(m["units"]) - len(changed)
        if not changed and all(c["before"] == c["after"] for c in m["capacity"].values()):
            out += [f"#### `{m['name']}`: unchanged ({same} unit(s))", ""]
            continue
        out += [f"#### `{m['name']}`", "", "| unit | change | host | GPUs | why |",
                "|---|---|---|---|---|"]
        out += [f"| `{u['unit']}` | {u['change']} | {_md(u['host'])} | {_gpus(u['gpus'])} | "
                f"{_md(why(u, '`'))} |" for u in changed]
        out += ["", f"{same} unit(s) unchanged.", "", "| role | engines | GPUs |",
                "|---|---|---|"]
        for role, cap in m["capacity"].items():
            engines, gpus = _capacity_cells(cap)
            out.append(f"| {role} | {engines} | {gpus} |")
        out.append("")
    return "\n".join(out)
