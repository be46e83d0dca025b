"""The rollout plan of a deploy: in which order engines start, restart and go, and what each
model's router serves meanwhile.

Rolling (the default): engines that leave the plan are taken out of their router, drained and
stopped (first: their units are not in the new render); new engines start and join their
routers (``POST /workers``); engines that restart go in batches per model and role, each batch
out of its router, drained, restarted (every rank of a multi-node engine together), healthy and
back before the next; a router whose worker list alone changed is updated live, one whose own
settings changed restarts last. A batch
holds at most ``max_unavailable`` engines of the role (a number, or a percentage of the role's
engines in the plan, at least one) and never takes the role's last serving engine: such a
change is refused unless ``allow_downtime``.

With ``allow_downtime`` (``--allow-downtime``): today's fastest way, with downtime: everything
that changes stops at once (routers, then engines), then starts again."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from generator.deploy.changes import Changes, UnitAction
from generator.deploy.spec import Target, UnitSpec


@dataclass
class Item:
    """One engine (all its ranks) that starts, restarts or stops."""

    id: str  # engine id (a removed engine: its rank-0 unit name)
    model: str  # "" for an engine no longer in the plan
    role: str
    action: str  # start | restart | stop
    units: list[tuple[str, str]]  # (host, unit), rank 0 first
    url: str  # its URL in the plan, or as deployed (stop)
    old_url: str | None = None  # as deployed, when it differs (a restart that moves)
    router: str | None = None  # the live router that lists it now (unit name)
    serving: bool = False  # that router lists it healthy
    specs: list[UnitSpec] = field(default_factory=list)  # the plan's ranks (start/restart)
    bootstrap_port: int | None = None


@dataclass
class Step:
    kind: str  # start | batch | remove
    items: list[Item]
    model: str = ""
    role: str = ""
    serving: str = ""  # e.g. "1/2 prefill engines serving"

    def json(self) -> dict[str, Any]:
        return {"step": self.kind, "model": self.model or None, "role": self.role or None,
                "engines": [i.id for i in self.items], "serving": self.serving or None}


@dataclass
class Rollout:
    mode: str  # rolling | downtime
    max_unavailable: int | str
    drain: float
    steps: list[Step] = field(default_factory=list)
    update: list[str] = field(default_factory=list)  # routers whose workers change live
    restart: list[str] = field(default_factory=list)  # routers that restart (last)
    start: list[str] = field(default_factory=list)  # routers that start
    warnings: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    live: dict[str, dict[str, Any]] = field(default_factory=dict)  # router -> GET /workers body

    @property
    def batches(self) -> list[Step]:
        return [s for s in self.steps if s.kind == "batch"]

    def json(self) -> dict[str, Any]:
        return {"mode": self.mode, "max_unavailable": self.max_unavailable, "drain": self.drain,
                "steps": [s.json() for s in self.steps],
                "batches": [[i.id for i in s.items] for s in self.batches],
                "routers": {"update": self.update, "restart": self.restart, "start": self.start},
                "warnings": self.warnings, "refused": self.refused}

    def text(self) -> list[str]:
        if self.mode == "downtime":
            head = ["rollout: --allow-downtime: what changes stops at once (routers, then "
                    "engines) and starts again"]
        else:
            mu = self.max_unavailable
            head = [f"rollout: rolling, at most {mu} engine{'s' if mu != 1 else ''} of a role "
                    f"out at once, drain up to {self.drain:g}s"]
        lines = head
        for n, st in enumerate(self.steps, 1):
            ids = ", ".join(i.id for i in st.items)
            if st.kind == "start":
                joins = [i.id for i in st.items if i.router]
                lines.append(f"  {n}. start {ids}" + (
                    f" (then join their routers: {', '.join(joins)})" if joins else ""))
            elif st.kind == "batch":
                lines.append(f"  {n}. {st.model} {st.role}: restart {ids} ({st.serving})")
            else:
                lines.append(f"  {n}. remove {ids} (out of its router, drained, stopped)")
        for r in self.update:
            lines.append(f"  {r}: worker list updated live (not restarted)")
        for r in self.restart:
            lines.append(f"  {r}: restarts last, once")
        for r in self.start:
            lines.append(f"  {r}: starts once its engines are healthy")
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [f"refused: {w}" for w in self.refused]
        return lines


def resolve(max_unavailable: int | str, total: int) -> int:
    """Engines of a role out at once: N, or P% of the role's engines (rounded down), at least 1."""
    if isinstance(max_unavailable, str) and max_unavailable.endswith("%"):
        return max(1, total * int(max_unavailable[:-1]) // 100)
    return max(1, int(max_unavailable))


def parse_max_unavailable(text: str) -> int | str:
    """``--max-unavailable``: a positive integer or ``P%`` (1..100); ValueError otherwise."""
    t = text.strip()
    m = re.fullmatch(r"([0-9]{1,3})%", t)
    if m and 1 <= int(m.group(1)) <= 100:
        return f"{int(m.group(1))}%"
    if re.fullmatch(r"[0-9]{1,6}", t) and int(t) >= 1:
        return int(t)
    raise ValueError(f"{text!r} is not a positive number of engines or a percentage "
                     f"(1%..100%), e.g. 1, 4 or 25%")


_RANK = re.compile(r"\(rank [0-9]+ of (.+)\)")


def _workers(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict):
        return []
    return [w for w in body.get("workers", []) if isinstance(w, dict)]


def plan_rollout(target: Target, ch: Changes, deployed_url: dict[tuple[str, str], str | None],
                 live: dict[str, dict[str, Any]], selected: set[str], *,
                 max_unavailable: int | str, drain: float, allow_downtime: bool,
                 only_engines: set[str] | None = None, force: bool = False) -> Rollout:
    """``deployed_url``: (host, unit) -> the URL its manifest records; ``live``: router unit ->
    its ``GET /workers`` answer, for the routers that answer; ``selected``: the hosts this run
    changes (``--hosts``); ``only_engines``: restart exactly these (``restart --rolling``);
    ``force``: a role that cannot roll restarts in one batch (its router has none of that
    role meanwhile) instead of being refused."""
    ro = Rollout("downtime" if allow_downtime else "rolling", max_unavailable, drain, live=live)
    act = {(a.host, a.unit): a for a in ch.units}
    routers = {u.model: u for u in target.units() if u.kind == "router"}
    by_name = {r.name: r for r in routers.values()}
    by_url: dict[str, tuple[str, dict[str, Any]]] = {}  # worker URL -> (router, its record)
    for rname, body in sorted(live.items()):
        for w in _workers(body):
            by_url.setdefault(str(w.get("url")), (rname, w))

    def router_live(model: str) -> str | None:
        r = routers.get(model)
        if r is None or r.name not in live:
            return None
        a = act.get((r.host, r.name))
        if a is not None and (a.action in ("start", "stop") or a.stop_with):
            return None  # (a router moving to the other supervisor stops before the upload)
        return r.name

    # the plan's engines, all ranks
    engines: dict[str, list[UnitSpec]] = {}
    for u in target.units():
        if u.engine is not None:
            engines.setdefault(u.engine, []).append(u)
    items: list[Item] = []
    for eid, ranks in engines.items():
        ranks.sort(key=lambda u: u.node_rank)
        acts = [act.get((u.host, u.name)) for u in ranks]
        chosen = [a for a in acts if a is not None and a.action in ("start", "restart")]
        if only_engines is not None:
            if eid not in only_engines:
                continue
        elif not chosen:
            continue
        outside = sorted({u.host for u in ranks} - selected)
        if outside:
            ro.refused.append(
                f"engine {eid} has ranks on {', '.join(sorted({u.host for u in ranks}))}: they "
                f"start together, so --hosts must name all of them (missing: "
                f"{', '.join(outside)})")
            continue
        r0 = ranks[0]
        old = deployed_url.get((r0.host, r0.name))
        action = "restart" if only_engines is not None or any(
            a.action == "restart" for a in chosen) or any(
            a is not None and a.state in ("running", "dead") for a in acts) else "start"
        it = Item(eid, r0.model, r0.role, action, [(u.host, u.name) for u in ranks], r0.url,
                  old if old and old != r0.url else None, specs=ranks,
                  bootstrap_port=r0.bootstrap_port)
        rl = router_live(r0.model)
        if rl is not None and r0.role != "encoder":
            it.router = rl
            for url in (r0.url, it.old_url):
                got = by_url.get(url or "")
                if got is not None and got[0] == rl:
                    it.serving = it.serving or bool(got[1].get("is_healthy"))
        if it.action == "restart" and r0.role == "encoder":
            it.serving = all(a is not None and a.state == "running" for a in acts)
        items.append(it)
    # engines no longer in the plan (rank 0 carries the URL; other ranks say "(rank k of URL)")
    gone: dict[str, Item] = {}
    for a in ch.units:
        if a.kind != "engine" or a.action != "stop" or only_engines is not None:
            continue
        url = deployed_url.get((a.host, a.unit)) or ""
        m = _RANK.fullmatch(url)
        key = m.group(1) if m else url or f"{a.host}/{a.unit}"
        it = gone.setdefault(key, Item(a.unit, "", "", "stop", [], key))
        if m:
            it.units.append((a.host, a.unit))
        else:
            it.units.insert(0, (a.host, a.unit))
            it.id = a.unit
        got = by_url.get(key)
        if got is not None:
            rname = got[0]
            ra = act.get((by_name[rname].host, rname)) if rname in by_name else None
            if ra is None or ra.action not in ("stop", "start"):
                it.router, it.serving = rname, bool(got[1].get("is_healthy"))
                it.role = str(got[1].get("worker_type") or "regular")
    for r in routers.values() if only_engines is None else ():  # restart: engines only
        ra = act.get((r.host, r.name))
        if ra is None:
            listed = {str(w.get("url")) for w in _workers(live.get(r.name))}
            if r.host not in selected and r.name in live and listed != set(r.expected_workers):
                ro.warnings.append(
                    f"{r.name} runs on {r.host}, which this deploy does not change (--hosts): "
                    f"its workers change live, but its launch file there keeps the old list "
                    f"until {r.host} is deployed too")
            continue
        if ra.action == "update":
            ro.update.append(r.name)
        elif ra.action == "restart":
            ro.restart.append(r.name)
        elif ra.action == "start":
            ro.start.append(r.name)
    if ro.mode == "downtime":
        starts = [i for i in items]
        if starts:
            ro.steps.append(Step("start", starts))
        stops = list(gone.values())
        if stops:
            ro.steps.insert(0, Step("remove", stops))
        return ro
    _rolling_steps(ro, target, items, list(gone.values()), act, force)
    return ro


def _rolling_steps(ro: Rollout, target: Target, items: list[Item], gone: list[Item],
                   act: dict[tuple[str, str], UnitAction], force: bool) -> None:
    # what starts at once: new engines, and every change where nothing is served anyway (its
    # router does not answer, or starts now)
    first = [i for i in items if i.action == "start" or i.router is None and i.role != "encoder"]
    if first:
        ro.steps.append(Step("start", first))
    model_of = {u.name: u.model for u in target.units() if u.kind == "router"}
    plan_total: dict[tuple[str, str], int] = {}
    for u in target.units():
        if u.engine is not None and u.node_rank == 0:
            plan_total[(u.model, u.role)] = plan_total.get((u.model, u.role), 0) + 1
    serving_now: dict[tuple[str, str], int] = {}
    for rname, body in ro.live.items():
        model = model_of.get(rname)
        for w in _workers(body):
            if w.get("is_healthy"):
                key = (str(model), str(w.get("worker_type") or "regular"))
                serving_now[key] = serving_now.get(key, 0) + 1
    for u in target.units():  # encoders are not router workers: running ones serve
        if u.role == "encoder" and u.node_rank == 0:
            a = act.get((u.host, u.name))
            if a is None or a.state == "running":
                key = (u.model, "encoder")
                serving_now[key] = serving_now.get(key, 0) + 1
    for i in gone:  # engines that leave go first: they serve nothing during the batches
        if i.serving and i.router is not None:
            key = (model_of.get(i.router, ""), i.role)
            serving_now[key] = serving_now.get(key, 0) - 1
    joined = {i.id for i in first}
    groups: dict[tuple[str, str], list[Item]] = {}
    for i in items:
        if i.id not in joined and i.action == "restart":
            groups.setdefault((i.model, i.role), []).append(i)
    for (model, role), group in sorted(groups.items()):
        total = plan_total.get((model, role), len(group))
        added = sum(1 for i in first if i.model == model and i.role == role
                    and (i.router or i.role == "encoder"))
        have = serving_now.get((model, role), 0) + added
        idle = [i for i in group if not i.serving]
        busy = [i for i in group if i.serving]
        want = resolve(ro.max_unavailable, total)
        before_idle = have
        have += len(idle)  # restarted first, they serve again before the next batch
        size = min(want, have - 1)
        if busy and size < 1 and force:
            ro.warnings.append(f"{model}: {', '.join(i.id for i in busy)}: no other serving "
                               f"{role} engine: restarted together, with downtime")
            size = len(busy)
        elif busy and size < 1:
            ro.refused.append(
                f"{model}: {', '.join(i.id for i in busy)} would restart, but "
                f"{'it is' if have == 1 else 'they are'} the only serving {role} engine"
                f"{'' if have == 1 else 's'} of {model}: its router would have no {role} "
                f"worker meanwhile (hint: pass --allow-downtime to restart "
                f"{'it' if have == 1 else 'them'} anyway, or give {model} another {role} "
                f"engine)")
            continue
        elif busy and size < want:
            ro.warnings.append(f"{model} {role}: {want} at once would leave no serving "
                               f"{role} engine: {size} at a time")
        if idle:
            ro.steps.append(Step("batch", idle, model, role,
                                 f"{before_idle}/{total} {role} engines serving"))
        for k in range(0, len(busy), max(size, 1)):
            chunk = busy[k:k + size]
            ro.steps.append(Step("batch", chunk, model, role,
                                 f"{have - len(chunk)}/{total} {role} engines serving"))
    # engines that leave go first, before the files change (their units are not in the new
    # render): out of their routers, drained, stopped
    leaving = [i for i in gone if i.router is not None]
    if leaving:
        ro.steps.insert(0, Step("remove", leaving))
        for (model, role), n in sorted(plan_total.items()):
            out = [i for i in leaving if i.serving and i.role == role
                   and ro.live.get(i.router or "") is not None
                   and model_of.get(i.router or "", "") == model]
            if out and n and serving_now.get((model, role), 0) < 1:
                ro.refused.append(
                    f"{model}: removing {', '.join(i.id for i in out)} first would leave it no "
                    f"serving {role} engine until the new ones start (hint: deploy the new "
                    f"engines first and remove the old ones in a second deploy, or pass "
                    f"--allow-downtime)")
