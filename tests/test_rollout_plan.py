"""The rollout planner (generator/deploy/rollout.py) without hosts: real renders of
examples/ssh-rollout.yaml (chat: 2 prefill + 2 decode on node-a; judge: 4 regular on node-b;
big: 2 regular on node-c / node-d) and examples/ssh-4hosts.yaml (a multi-node engine
big-regular-0 with ranks on node-b and node-c, one prefill and one decode engine), the
decisions ``decide`` takes on synthetic probes of a deployed render (or actions written out
directly), and the routers' ``GET /workers`` answers written out as sglang-router gives them."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import pytest

from generator.deploy import target_from_plan
from generator.deploy.changes import Changes, UnitAction
from generator.deploy.commands import _deployed_urls
from generator.deploy.decide import Remote, decide
from generator.deploy.rollout import Item, Rollout, parse_max_unavailable, plan_rollout, resolve
from generator.deploy.spec import HostSpec, Target
from tests.helpers import EXAMPLES, plan_of
from tests.test_deploy_decide import deployed

ROLLOUT = "ssh-rollout.yaml"
FOUR = "ssh-4hosts.yaml"
MEM = "defaults.mem_fraction_static=0.7"  # a change of defaults: every engine without override
JUDGE_3 = (("total_gpus: 16", "total_gpus: 15"),  # ssh-rollout with 3 judge engines, not 4
           ("        num_gpus: 4\n", "        num_gpus: 3\n"))
BIG_1 = (("total_gpus: 16", "total_gpus: 12"),  # ssh-rollout with 1 big engine, not 2
         ("num_gpus: 8, num_gpus_per_engine: 4", "num_gpus: 4, num_gpus_per_engine: 4"))
JUDGE_2_OVERRIDE = (("total_gpus: 16", "total_gpus: 14"),  # 2 judge engines, a new override
                    ("        num_gpus: 4\n", "        num_gpus: 2\n"),
                    ("mem_fraction_static: 0.8", "mem_fraction_static: 0.7"))
JUDGE_OVERRIDE = (("mem_fraction_static: 0.8", "mem_fraction_static: 0.7"),)
JUDGE_POLICY = (("    model_path: /models/judge\n",
                 "    model_path: /models/judge\n    router: {policy: round_robin}\n"),)


@functools.cache
def render(example: str, *sets: str, edit: tuple[tuple[str, str], ...] = ()) -> Target:
    """The Target of an example (edited: each (old, new) replaced once) as deploy builds it."""
    text = (EXAMPLES / example).read_text()
    for old, new in edit:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / example
        path.write_text(text)
        return target_from_plan(plan_of(path, *sets), ("bash", "systemd"), rehearse=True)


class _Host:  # what decide() reads of a connection: its spec
    def __init__(self, spec: HostSpec):
        self.spec, self.name = spec, spec.host


def decided(old: Target, new: Target, hosts: set[str] | None = None,
            states: dict[tuple[str, str], str] | None = None
            ) -> tuple[Changes, dict[tuple[str, str], str | None]]:
    """What deploy decides for ``new`` on hosts running ``old`` (only ``hosts``: --hosts), and
    the URLs their manifests record; ``states``: (host, unit) -> its state instead of running."""
    probes = {h.host: deployed(h, old) for h in old.hosts if hosts is None or h.host in hosts}
    for (host, unit), state in (states or {}).items():
        probes[host]["units"][unit]["state"] = state
    remotes = {h.host: Remote(_Host(h), probes[h.host])  # type: ignore[arg-type]
               for h in new.hosts if h.host in probes}
    return decide(new, remotes), _deployed_urls(remotes)


def acts(t: Target, **changed: str) -> Changes:
    """Every unit of ``t`` running; ``changed``: unit name (with _ for -) -> its action (one
    that starts is not running: stopped)."""
    names = {k.replace("_", "-"): v for k, v in changed.items()}
    assert set(names) <= {u.name for u in t.units()}, set(names) - {u.name for u in t.units()}
    return Changes([UnitAction(u.host, u.name, u.kind, names.get(u.name, "none"), "", u.url,
                               "stopped" if names.get(u.name) == "start" else "running")
                    for u in t.units()])


def gone(ch: Changes, host: str, unit: str, kind: str = "engine") -> Changes:
    ch.units.append(UnitAction(host, unit, kind, "stop", "no longer in the plan", "", "running"))
    return ch


def worker(url: str, role: str, healthy: bool = True, port: int | None = None) -> dict[str, Any]:
    w: dict[str, Any] = {"id": f"w-{url.rsplit(':', 1)[1]}", "url": url, "worker_type": role,
                         "is_healthy": healthy, "load": 0}
    if port is not None:
        w["bootstrap_port"] = port
    return w


def live_of(t: Target, unhealthy: tuple[str, ...] = (), absent: tuple[str, ...] = (),
            routers: tuple[str, ...] | None = None,
            extra: dict[str, list[dict[str, Any]]] | None = None) -> dict[str, dict[str, Any]]:
    """The routers' GET /workers answers for a fleet running ``t`` (engine ids ``unhealthy``
    listed unhealthy, ``absent`` not listed; only ``routers`` answer; ``extra`` workers)."""
    out: dict[str, dict[str, Any]] = {}
    for r in t.units():
        if r.kind != "router" or routers is not None and r.name not in routers:
            continue
        ws = [worker(e.url, e.role, e.engine not in unhealthy, e.bootstrap_port)
              for e in t.units() if e.kind == "engine" and e.node_rank == 0
              and e.url in r.expected_workers and e.engine not in absent]
        ws += (extra or {}).get(r.name, [])
        out[r.name] = {"workers": ws, "total": len(ws)}
    return out


def plan(t: Target, ch: Changes, live: dict[str, dict[str, Any]],
         urls: dict[tuple[str, str], str | None] | None = None, selected: set[str] | None = None,
         max_unavailable: int | str = 1, **kw: Any) -> Rollout:
    return plan_rollout(t, ch, urls or {}, live,
                        {h.host for h in t.hosts} if selected is None else selected,
                        max_unavailable=max_unavailable, drain=kw.pop("drain", 30.0),
                        allow_downtime=kw.pop("allow_downtime", False), **kw)


def steps(ro: Rollout) -> list[tuple[str, list[str], str]]:
    return [(s.kind, [i.id for i in s.items], s.serving) for s in ro.steps]


def item(ro: Rollout, eid: str) -> Item:
    return next(i for s in ro.steps for i in s.items if i.id == eid)


# -- max_unavailable ----------------------------------------------------------------------------

@pytest.mark.parametrize("mu,total,want", [
    (1, 4, 1), (4, 4, 4), (3, 2, 3), ("2", 4, 2),
    ("25%", 4, 1), ("50%", 4, 2), ("75%", 4, 3), ("100%", 4, 4), ("100%", 1, 1),
    ("50%", 3, 1), ("30%", 10, 3), ("99%", 10, 9),  # rounded down
    ("25%", 2, 1), ("1%", 16, 1), ("10%", 0, 1),  # at least one
])
def test_resolve_is_n_or_p_percent_rounded_down_at_least_one(mu, total, want):
    assert resolve(mu, total) == want


@pytest.mark.parametrize("text,want", [
    ("1", 1), ("4", 4), (" 16 ", 16), ("007", 7), ("25%", "25%"), ("1%", "1%"),
    ("100%", "100%"), ("050%", "50%"),
])
def test_parse_max_unavailable_accepts(text, want):
    assert parse_max_unavailable(text) == want


@pytest.mark.parametrize("text", ["0", "0%", "101%", "-1", "abc", "1.5", "", "%", "25 %",
                                  "25%%", "1e3", "+2", "2.5%"])
def test_parse_max_unavailable_rejects(text):
    with pytest.raises(ValueError) as exc:
        parse_max_unavailable(text)
    assert str(exc.value) == (f"{text!r} is not a positive number of engines or a percentage "
                              f"(1%..100%), e.g. 1, 4 or 25%")


# -- batches ------------------------------------------------------------------------------------

def test_a_change_of_defaults_rolls_one_engine_per_role_in_sorted_order():
    old, new = render(ROLLOUT), render(ROLLOUT, MEM)
    ch, urls = decided(old, new)
    assert sorted(a.unit for a in ch.units if a.action != "none") == [
        "engine-big-regular-0", "engine-big-regular-1", "engine-chat-decode-0",
        "engine-chat-decode-1", "engine-chat-prefill-0", "engine-chat-prefill-1"]
    ro = plan(new, ch, live_of(old), urls, drain=30.0)
    assert ro.mode == "rolling" and ro.max_unavailable == 1
    assert steps(ro) == [
        ("batch", ["big-regular-0"], "1/2 regular engines serving"),
        ("batch", ["big-regular-1"], "1/2 regular engines serving"),
        ("batch", ["chat-decode-0"], "1/2 decode engines serving"),
        ("batch", ["chat-decode-1"], "1/2 decode engines serving"),
        ("batch", ["chat-prefill-0"], "1/2 prefill engines serving"),
        ("batch", ["chat-prefill-1"], "1/2 prefill engines serving"),
    ]
    assert [(s.model, s.role) for s in ro.batches] == [
        ("big", "regular"), ("big", "regular"), ("chat", "decode"), ("chat", "decode"),
        ("chat", "prefill"), ("chat", "prefill")]
    assert (ro.update, ro.restart, ro.start, ro.warnings, ro.refused) == ([], [], [], [], [])
    p0 = item(ro, "chat-prefill-0")
    assert (p0.model, p0.role, p0.action, p0.units, p0.url, p0.old_url, p0.router, p0.serving,
            p0.bootstrap_port) == ("chat", "prefill", "restart",
                                   [("node-a", "engine-chat-prefill-0")],
                                   "http://10.207.6.11:31000", None, "router-chat", True, 8998)
    assert [u.name for u in p0.specs] == ["engine-chat-prefill-0"]
    assert item(ro, "chat-decode-1").bootstrap_port is None
    assert ro.text() == [
        "rollout: rolling, at most 1 engine of a role out at once, drain up to 30s",
        "  1. big regular: restart big-regular-0 (1/2 regular engines serving)",
        "  2. big regular: restart big-regular-1 (1/2 regular engines serving)",
        "  3. chat decode: restart chat-decode-0 (1/2 decode engines serving)",
        "  4. chat decode: restart chat-decode-1 (1/2 decode engines serving)",
        "  5. chat prefill: restart chat-prefill-0 (1/2 prefill engines serving)",
        "  6. chat prefill: restart chat-prefill-1 (1/2 prefill engines serving)",
    ]


@pytest.mark.parametrize("mu,batches,serving", [
    (1, [["judge-regular-0"], ["judge-regular-1"], ["judge-regular-2"], ["judge-regular-3"]],
     ["3/4"] * 4),
    (2, [["judge-regular-0", "judge-regular-1"], ["judge-regular-2", "judge-regular-3"]],
     ["2/4", "2/4"]),
    ("50%", [["judge-regular-0", "judge-regular-1"], ["judge-regular-2", "judge-regular-3"]],
     ["2/4", "2/4"]),
    ("75%", [["judge-regular-0", "judge-regular-1", "judge-regular-2"], ["judge-regular-3"]],
     ["1/4", "3/4"]),
    ("25%", [["judge-regular-0"], ["judge-regular-1"], ["judge-regular-2"], ["judge-regular-3"]],
     ["3/4"] * 4),
])
def test_one_groups_override_restarts_that_group_in_batches_of_max_unavailable(mu, batches,
                                                                             serving):
    old, new = render(ROLLOUT), render(ROLLOUT, edit=JUDGE_OVERRIDE)
    ch, urls = decided(old, new)
    assert sorted(a.unit for a in ch.units if a.action != "none") == [
        f"engine-judge-regular-{k}" for k in range(4)]
    ro = plan(new, ch, live_of(old), urls, max_unavailable=mu)
    assert ro.json()["batches"] == batches
    assert [s.serving for s in ro.batches] == [f"{s} regular engines serving" for s in serving]
    assert ro.warnings == [] and ro.refused == []


@pytest.mark.parametrize("mu", [4, "100%", 9])
def test_a_batch_never_takes_the_last_serving_engine_of_a_role(mu):
    old, new = render(ROLLOUT), render(ROLLOUT, edit=JUDGE_OVERRIDE)
    ch, urls = decided(old, new)
    ro = plan(new, ch, live_of(old), urls, max_unavailable=mu)
    want = resolve(mu, 4)
    assert steps(ro) == [
        ("batch", ["judge-regular-0", "judge-regular-1", "judge-regular-2"],
         "1/4 regular engines serving"),
        ("batch", ["judge-regular-3"], "3/4 regular engines serving")]
    assert ro.warnings == [f"judge regular: {want} at once would leave no serving regular "
                           f"engine: 3 at a time"]
    assert ro.refused == []
    assert ro.text()[0] == (f"rollout: rolling, at most {mu} engines of a role out at once, "
                            f"drain up to 30s")
    assert ro.text()[-1] == f"warning: {ro.warnings[0]}"


def test_pd_roles_are_capped_separately_with_a_warning_each():
    old, new = render(ROLLOUT), render(ROLLOUT, MEM)
    ch, urls = decided(old, new)
    ro = plan(new, ch, live_of(old), urls, max_unavailable=2)
    assert ro.json()["batches"] == [["big-regular-0"], ["big-regular-1"], ["chat-decode-0"],
                                    ["chat-decode-1"], ["chat-prefill-0"], ["chat-prefill-1"]]
    assert ro.warnings == [
        "big regular: 2 at once would leave no serving regular engine: 1 at a time",
        "chat decode: 2 at once would leave no serving decode engine: 1 at a time",
        "chat prefill: 2 at once would leave no serving prefill engine: 1 at a time"]


def test_engines_not_serving_get_a_first_batch_of_their_own():
    """judge-regular-2 listed unhealthy, judge-regular-3 not listed at all: both restart first,
    together (nothing is lost), then the serving ones one by one."""
    t = render(ROLLOUT)
    ch = acts(t, **{f"engine_judge_regular_{k}": "restart" for k in range(4)})
    live = live_of(t, unhealthy=("judge-regular-2",), absent=("judge-regular-3",))
    ro = plan(t, ch, live)
    assert [b[:2] for b in steps(ro)] == [
        ("batch", ["judge-regular-2", "judge-regular-3"]),
        ("batch", ["judge-regular-0"]),
        ("batch", ["judge-regular-1"])]
    assert ro.batches[0].serving == "2/4 regular engines serving"
    assert [(i.router, i.serving) for i in ro.batches[0].items] == [
        ("router-judge", False), ("router-judge", False)]
    assert item(ro, "judge-regular-0").serving is True
    assert ro.warnings == [] and ro.refused == []


def test_the_only_serving_engine_of_a_role_is_refused():
    """ssh-4hosts: one prefill, one decode, one (multi-node) big engine: a change of defaults
    cannot roll them (judge has its own override: unchanged)."""
    old, new = render(FOUR), render(FOUR, MEM)
    ch, urls = decided(old, new)
    ro = plan(new, ch, live_of(old), urls)
    assert ro.refused == [
        "big: big-regular-0 would restart, but it is the only serving regular engine of big: "
        "its router would have no regular worker meanwhile (hint: pass --allow-downtime to "
        "restart it anyway, or give big another regular engine)",
        "chat: chat-decode-0 would restart, but it is the only serving decode engine of chat: "
        "its router would have no decode worker meanwhile (hint: pass --allow-downtime to "
        "restart it anyway, or give chat another decode engine)",
        "chat: chat-prefill-0 would restart, but it is the only serving prefill engine of chat: "
        "its router would have no prefill worker meanwhile (hint: pass --allow-downtime to "
        "restart it anyway, or give chat another prefill engine)"]
    assert ro.steps == [] and ro.warnings == []
    assert ro.text()[-3:] == [f"refused: {m}" for m in ro.refused]
    assert ro.json()["refused"] == ro.refused


def test_force_restarts_the_only_serving_engine_in_one_batch_with_a_warning():
    old, new = render(FOUR), render(FOUR, MEM)
    ch, urls = decided(old, new)
    ro = plan(new, ch, live_of(old), urls, force=True)
    assert ro.refused == []
    assert steps(ro) == [("batch", ["big-regular-0"], "0/1 regular engines serving"),
                         ("batch", ["chat-decode-0"], "0/1 decode engines serving"),
                         ("batch", ["chat-prefill-0"], "0/1 prefill engines serving")]
    assert ro.warnings == [
        "big: big-regular-0: no other serving regular engine: restarted together, with downtime",
        "chat: chat-decode-0: no other serving decode engine: restarted together, with downtime",
        "chat: chat-prefill-0: no other serving prefill engine: restarted together, with "
        "downtime"]


def test_a_multi_node_engine_is_one_item_with_every_rank_rank_0_first():
    old, new = render(FOUR), render(FOUR, MEM)
    ch, urls = decided(old, new)
    assert {a.unit: a.action for a in ch.units if a.unit.startswith("engine-big")} == {
        "engine-big-regular-0-r0": "restart", "engine-big-regular-0-r1": "restart"}
    ro = plan(new, ch, live_of(old), urls, force=True)
    big = ro.batches[0].items
    assert [i.id for i in big] == ["big-regular-0"]
    assert big[0].units == [("node-b", "engine-big-regular-0-r0"),
                            ("node-c", "engine-big-regular-0-r1")]
    assert [(u.name, u.node_rank) for u in big[0].specs] == [("engine-big-regular-0-r0", 0),
                                                             ("engine-big-regular-0-r1", 1)]
    assert big[0].url == "http://10.207.6.12:31000" and big[0].router == "router-big"


def test_restart_rolling_restarts_exactly_the_chosen_engines():
    """``restart --rolling``: nothing changed (decide says none), only_engines chooses."""
    t = render(ROLLOUT)
    ch, _ = decided(t, t)
    assert ch.noop()
    ro = plan(t, ch, live_of(t), only_engines={"judge-regular-1", "judge-regular-3",
                                               "chat-decode-0", "chat-decode-1"})
    assert steps(ro) == [("batch", ["chat-decode-0"], "1/2 decode engines serving"),
                         ("batch", ["chat-decode-1"], "1/2 decode engines serving"),
                         ("batch", ["judge-regular-1"], "3/4 regular engines serving"),
                         ("batch", ["judge-regular-3"], "3/4 regular engines serving")]
    assert {i.action for s in ro.steps for i in s.items} == {"restart"}
    # an engine that is not there any more is not restart's business
    ro = plan(t, gone(acts(t), "node-b", "engine-judge-regular-9"), live_of(t),
              {("node-b", "engine-judge-regular-9"): "http://10.207.6.12:31009"},
              only_engines={"judge-regular-0"})
    assert steps(ro) == [("batch", ["judge-regular-0"], "3/4 regular engines serving")]


def test_encoders_roll_by_their_running_state_not_through_a_router():
    """examples/epd-encoder.yaml: two encoders (not router workers: a running one serves), one
    prefill and one decode engine; a change of defaults rolls the encoders one by one."""
    old, new = render("epd-encoder.yaml"), render("epd-encoder.yaml", MEM)
    ch, urls = decided(old, new)
    ro = plan(new, ch, live_of(old), urls)
    assert steps(ro) == [("batch", ["vlm-encoder-0"], "1/2 encoder engines serving"),
                         ("batch", ["vlm-encoder-1"], "1/2 encoder engines serving")]
    assert [(i.router, i.serving) for s in ro.steps for i in s.items] == [(None, True)] * 2
    assert ro.refused == [
        f"vlm: vlm-{r}-0 would restart, but it is the only serving {r} engine of vlm: its "
        f"router would have no {r} worker meanwhile (hint: pass --allow-downtime to restart it "
        f"anyway, or give vlm another {r} engine)" for r in ("decode", "prefill")]
    # a stopped encoder starts in the start step
    ch, urls = decided(old, new, states={("node0", "engine-vlm-encoder-0"): "stopped"})
    ro = plan(new, ch, live_of(old), urls, force=True)
    assert ro.steps[0].kind == "start" and [i.id for i in ro.steps[0].items] == ["vlm-encoder-0"]
    assert ro.steps[0].items[0].router is None


# -- routers not live, new engines, routers that change ---------------------------------------

def test_a_model_whose_router_does_not_answer_restarts_in_the_start_step():
    old, new = render(ROLLOUT), render(ROLLOUT, MEM)
    ch, urls = decided(old, new)
    ro = plan(new, ch, live_of(old, routers=("router-judge", "router-big")), urls)
    assert steps(ro) == [
        ("start", ["chat-prefill-0", "chat-prefill-1", "chat-decode-0", "chat-decode-1"], ""),
        ("batch", ["big-regular-0"], "1/2 regular engines serving"),
        ("batch", ["big-regular-1"], "1/2 regular engines serving")]
    assert [(i.action, i.router, i.serving) for i in ro.steps[0].items] == [
        ("restart", None, False)] * 4
    assert ro.text()[1] == "  1. start chat-prefill-0, chat-prefill-1, chat-decode-0, chat-decode-1"
    assert ro.json()["steps"][0] == {
        "step": "start", "model": None, "role": None, "serving": None,
        "engines": ["chat-prefill-0", "chat-prefill-1", "chat-decode-0", "chat-decode-1"]}


def test_a_router_that_is_not_running_starts_after_its_engines():
    old, new = render(ROLLOUT), render(ROLLOUT, MEM)
    ch, urls = decided(old, new, states={("node-a", "router-chat"): "stopped"})
    assert next(a for a in ch.units if a.unit == "router-chat").action == "start"
    # a router that does not run does not answer either; but even one that does is not used
    ro = plan(new, ch, live_of(old), urls)
    assert ro.start == ["router-chat"]
    assert ro.steps[0].kind == "start" and [i.id for i in ro.steps[0].items] == [
        "chat-prefill-0", "chat-prefill-1", "chat-decode-0", "chat-decode-1"]
    assert all(i.router is None for i in ro.steps[0].items)
    assert "  router-chat: starts once its engines are healthy" in ro.text()


def test_a_new_engine_starts_first_and_joins_its_live_router():
    old, new = render(ROLLOUT, edit=JUDGE_3), render(ROLLOUT)
    ch, urls = decided(old, new)
    assert {a.unit: a.action for a in ch.units if a.action != "none"} == {
        "engine-judge-regular-3": "start", "router-judge": "update"}
    ro = plan(new, ch, live_of(old), urls)
    assert steps(ro) == [("start", ["judge-regular-3"], "")]
    new3 = ro.steps[0].items[0]
    assert (new3.action, new3.router, new3.serving, new3.url, new3.units) == (
        "start", "router-judge", False, "http://10.207.6.12:31003",
        [("node-b", "engine-judge-regular-3")])
    assert (ro.update, ro.restart, ro.start) == (["router-judge"], [], [])
    assert ro.text() == [
        "rollout: rolling, at most 1 engine of a role out at once, drain up to 30s",
        "  1. start judge-regular-3 (then join their routers: judge-regular-3)",
        "  router-judge: worker list updated live (not restarted)"]
    assert ro.json()["routers"] == {"update": ["router-judge"], "restart": [], "start": []}
    # its router does not answer: it starts, and joins nothing
    ro = plan(new, ch, live_of(old, routers=("router-chat", "router-big")), urls)
    assert ro.steps[0].items[0].router is None
    assert ro.text()[1] == "  1. start judge-regular-3"


def test_a_new_engine_counts_as_serving_for_the_role_it_joins():
    """big had one engine: adding a second and changing defaults rolls the old one after the
    new one has joined (alone, it would be refused)."""
    old, new = render(ROLLOUT, edit=BIG_1), render(ROLLOUT, MEM)
    ch, urls = decided(old, new)
    assert {a.unit: a.action for a in ch.units if a.unit.endswith("big") or "big-" in a.unit} == {
        "engine-big-regular-0": "restart", "router-big": "update",
        "engine-big-regular-1": "start"}
    ro = plan(new, ch, live_of(old), urls)
    assert steps(ro)[:2] == [("start", ["big-regular-1"], ""),
                             ("batch", ["big-regular-0"], "1/2 regular engines serving")]
    assert ro.refused == [] and ro.update == ["router-big"]


def test_a_router_whose_own_settings_change_restarts_last():
    old, new = render(ROLLOUT), render(ROLLOUT, edit=JUDGE_POLICY)
    ch, urls = decided(old, new)
    assert {a.unit: a.action for a in ch.units if a.action != "none"} == {
        "router-judge": "restart"}
    ro = plan(new, ch, live_of(old), urls)
    assert ro.steps == [] and (ro.update, ro.restart, ro.start) == ([], ["router-judge"], [])
    assert ro.text()[1:] == ["  router-judge: restarts last, once"]
    # and engines that restart meanwhile roll through it (it is live until it restarts)
    ch2 = acts(new, router_judge="restart", engine_judge_regular_0="restart")
    ro = plan(new, ch2, live_of(old))
    assert steps(ro) == [("batch", ["judge-regular-0"], "3/4 regular engines serving")]
    assert item(ro, "judge-regular-0").router == "router-judge"


# -- engines that leave -------------------------------------------------------------------------

def test_an_engine_that_leaves_is_removed_first():
    old, new = render(ROLLOUT), render(ROLLOUT, edit=JUDGE_3)
    ch, urls = decided(old, new)
    assert {a.unit: a.action for a in ch.units if a.action != "none"} == {
        "engine-judge-regular-3": "stop", "router-judge": "update"}
    assert urls[("node-b", "engine-judge-regular-3")] == "http://10.207.6.12:31003"
    ro = plan(new, ch, live_of(old), urls)
    assert steps(ro) == [("remove", ["engine-judge-regular-3"], "")]
    it = ro.steps[0].items[0]
    assert (it.action, it.model, it.role, it.url, it.router, it.serving, it.units) == (
        "stop", "", "regular", "http://10.207.6.12:31003", "router-judge", True,
        [("node-b", "engine-judge-regular-3")])
    assert ro.refused == [] and ro.update == ["router-judge"]
    assert ro.text()[1:] == [
        "  1. remove engine-judge-regular-3 (out of its router, drained, stopped)",
        "  router-judge: worker list updated live (not restarted)"]
    # no router lists it: nothing to take out (deploy's stop phase stops it)
    ro = plan(new, ch, live_of(old, absent=("judge-regular-3",)), urls)
    assert ro.steps == []


def test_removal_goes_before_the_new_engines_start():
    t = render(ROLLOUT)
    ch = gone(acts(t, engine_judge_regular_0="restart"), "node-b", "engine-judge-old")
    live = live_of(t, absent=("judge-regular-0",), extra={"router-judge": [
        worker("http://10.207.6.12:31009", "regular")]})
    ro = plan(t, ch, live, {("node-b", "engine-judge-old"): "http://10.207.6.12:31009"})
    assert [s[:2] for s in steps(ro)] == [("remove", ["engine-judge-old"]),
                                          ("batch", ["judge-regular-0"])]


def test_removing_the_only_serving_engine_of_a_role_is_refused():
    """ssh-4hosts chat: the prefill engine deployed on port 31005 leaves, the plan's own
    prefill engine (not listed yet) starts after it."""
    t = render(FOUR)
    ch = gone(acts(t, engine_chat_prefill_0="start"), "node-a", "engine-chat-prefill-old")
    live = live_of(t, absent=("chat-prefill-0",), extra={"router-chat": [
        worker("http://10.207.6.11:31005", "prefill", port=8990)]})
    urls = {("node-a", "engine-chat-prefill-old"): "http://10.207.6.11:31005"}
    ro = plan(t, ch, live, urls)
    assert ro.refused == [
        "chat: removing engine-chat-prefill-old first would leave it no serving prefill engine "
        "until the new ones start (hint: deploy the new engines first and remove the old ones "
        "in a second deploy, or pass --allow-downtime)"]
    assert steps(ro) == [("remove", ["engine-chat-prefill-old"], ""),
                         ("start", ["chat-prefill-0"], "")]
    # with another prefill engine serving, it goes
    live["router-chat"]["workers"].append(worker("http://10.207.6.11:31000", "prefill", port=8998))
    assert plan(t, ch, live, urls).refused == []
    # an unhealthy one leaving takes nothing away
    live = live_of(t, absent=("chat-prefill-0",), extra={"router-chat": [
        worker("http://10.207.6.11:31005", "prefill", healthy=False)]})
    assert plan(t, ch, live, urls).refused == []


def test_a_multi_node_engine_that_leaves_is_one_removal_rank_0_first():
    t = render(FOUR)
    ch = acts(t)
    gone(ch, "node-c", "engine-big-old-r1")  # rank 1 first in the decision's order
    gone(ch, "node-b", "engine-big-old-r0")
    urls = {("node-b", "engine-big-old-r0"): "http://10.207.6.12:31005",
            ("node-c", "engine-big-old-r1"): "(rank 1 of http://10.207.6.12:31005)"}
    live = live_of(t, extra={"router-big": [worker("http://10.207.6.12:31005", "regular")]})
    ro = plan(t, ch, live, urls)
    assert steps(ro) == [("remove", ["engine-big-old-r0"], "")]
    it = ro.steps[0].items[0]
    assert it.units == [("node-b", "engine-big-old-r0"), ("node-c", "engine-big-old-r1")]
    assert (it.url, it.router, it.serving, it.role) == (
        "http://10.207.6.12:31005", "router-big", True, "regular")
    assert ro.refused == []


# -- partial fleets (--hosts) -------------------------------------------------------------------

def test_hosts_must_name_every_rank_of_a_multi_node_engine():
    old, new = render(FOUR), render(FOUR, MEM)
    for hosts, missing in (({"node-b"}, "node-c"), ({"node-c"}, "node-b")):
        ch, urls = decided(old, new, hosts=hosts)
        ro = plan(new, ch, live_of(old), urls, selected=hosts)
        assert ro.refused == [
            f"engine big-regular-0 has ranks on node-b, node-c: they start together, so --hosts "
            f"must name all of them (missing: {missing})"]
        assert ro.steps == []
    ch, urls = decided(old, new, hosts={"node-b", "node-c"})
    ro = plan(new, ch, live_of(old), urls, selected={"node-b", "node-c"}, force=True)
    assert steps(ro) == [("batch", ["big-regular-0"], "0/1 regular engines serving")]


def test_a_router_on_a_host_left_out_whose_workers_change_warns():
    """--hosts node-d adds big-regular-1 there; router-big runs on node-c, not deployed: its
    workers change live, its launch file keeps the old list."""
    old, new = render(ROLLOUT, edit=BIG_1), render(ROLLOUT)
    ch, urls = decided(old, new, hosts={"node-d"})
    assert [(a.unit, a.action) for a in ch.units] == [("engine-big-regular-1", "start")]
    ro = plan(new, ch, live_of(old, routers=("router-big",)), urls, selected={"node-d"})
    assert steps(ro) == [("start", ["big-regular-1"], "")]
    assert item(ro, "big-regular-1").router == "router-big"
    assert ro.warnings == [
        "router-big runs on node-c, which this deploy does not change (--hosts): its workers "
        "change live, but its launch file there keeps the old list until node-c is deployed too"]
    assert (ro.update, ro.restart, ro.start) == ([], [], [])
    # its workers already are the plan's: nothing to say
    ro = plan(new, ch, live_of(new, routers=("router-big",)), urls, selected={"node-d"})
    assert ro.warnings == []


# -- --allow-downtime ---------------------------------------------------------------------------

def test_allow_downtime_stops_what_changes_at_once():
    old, new = render(FOUR), render(FOUR, MEM)
    ch, urls = decided(old, new)
    gone(ch, "node-d", "engine-judge-old")
    urls[("node-d", "engine-judge-old")] = "http://10.207.6.14:31009"
    ro = plan(new, ch, live_of(old), urls, allow_downtime=True)
    assert ro.mode == "downtime"
    assert steps(ro) == [
        ("remove", ["engine-judge-old"], ""),
        ("start", ["chat-prefill-0", "chat-decode-0", "big-regular-0"], "")]
    assert ro.refused == [] and ro.warnings == [] and ro.batches == []
    assert ro.text()[0] == ("rollout: --allow-downtime: what changes stops at once (routers, "
                            "then engines) and starts again")
    assert ro.text()[1:3] == [
        "  1. remove engine-judge-old (out of its router, drained, stopped)",
        "  2. start chat-prefill-0, chat-decode-0, big-regular-0 (then join their routers: "
        "chat-prefill-0, chat-decode-0, big-regular-0)"]


def test_json_of_a_rollout():
    t = render(ROLLOUT)
    ch = gone(acts(t, engine_judge_regular_0="restart", engine_judge_regular_1="restart",
                   router_chat="restart", router_big="update"), "node-b", "engine-judge-old")
    live = live_of(t, extra={"router-judge": [worker("http://10.207.6.12:31009", "regular")]})
    ro = plan(t, ch, live, {("node-b", "engine-judge-old"): "http://10.207.6.12:31009"},
              max_unavailable="50%", drain=12.5)
    assert ro.json() == {
        "mode": "rolling", "max_unavailable": "50%", "drain": 12.5,
        "steps": [
            {"step": "remove", "model": None, "role": None, "engines": ["engine-judge-old"],
             "serving": None},
            {"step": "batch", "model": "judge", "role": "regular",
             "engines": ["judge-regular-0", "judge-regular-1"],
             "serving": "2/4 regular engines serving"}],
        "batches": [["judge-regular-0", "judge-regular-1"]],
        "routers": {"update": ["router-big"], "restart": ["router-chat"], "start": []},
        "warnings": [], "refused": []}
    assert ro.text() == [
        "rollout: rolling, at most 50% engines of a role out at once, drain up to 12.5s",
        "  1. remove engine-judge-old (out of its router, drained, stopped)",
        "  2. judge regular: restart judge-regular-0, judge-regular-1 (2/4 regular engines "
        "serving)",
        "  router-big: worker list updated live (not restarted)",
        "  router-chat: restarts last, once"]


def test_engines_removed_first_do_not_count_as_serving_for_the_restarts():
    """judge goes from 4 engines to 2 with a new override: regular-2 and -3 are removed first,
    then regular-0 and -1 restart: the two removed do not count as serving (with 100%, both
    restarting at once would leave judge none; the batches say 1/2, not 3/2)."""
    old, new = render(ROLLOUT), render(ROLLOUT, edit=JUDGE_2_OVERRIDE)
    ch, urls = decided(old, new)
    assert {a.unit: a.action for a in ch.units if a.action != "none"} == {
        "engine-judge-regular-0": "restart", "engine-judge-regular-1": "restart",
        "engine-judge-regular-2": "stop", "engine-judge-regular-3": "stop",
        "router-judge": "update"}
    ro = plan(new, ch, live_of(old), urls, max_unavailable="100%")
    assert steps(ro) == [
        ("remove", ["engine-judge-regular-2", "engine-judge-regular-3"], ""),
        ("batch", ["judge-regular-0"], "1/2 regular engines serving"),
        ("batch", ["judge-regular-1"], "1/2 regular engines serving")]
    assert ro.warnings == ["judge regular: 2 at once would leave no serving regular engine: "
                           "1 at a time"]
    ro = plan(new, ch, live_of(old), urls, max_unavailable=1)
    assert [s.serving for s in ro.batches] == ["1/2 regular engines serving"] * 2
    assert ro.warnings == [] and ro.refused == []


# -- found in review (each failed before its fix) -------------------------------------------------

def test_engines_restarted_first_count_as_serving_for_the_next_batches():
    """chat-prefill-0 is down (listed unhealthy): restarting it first brings it back, then
    chat-prefill-1 can go (the plan used to refuse: 'give chat another prefill engine')."""
    t = render(ROLLOUT)
    ch = acts(t, engine_chat_prefill_0="restart", engine_chat_prefill_1="restart")
    ro = plan(t, ch, live_of(t, unhealthy=("chat-prefill-0",)))
    assert ro.refused == []
    assert steps(ro) == [("batch", ["chat-prefill-0"], "1/2 prefill engines serving"),
                         ("batch", ["chat-prefill-1"], "1/2 prefill engines serving")]


def test_force_says_only_that_the_role_goes_down():
    t = render(FOUR)
    ch = acts(t, engine_big_regular_0_r0="restart", engine_big_regular_0_r1="restart")
    ro = plan(t, ch, live_of(t), max_unavailable=2, force=True)
    assert ro.json()["batches"] == [["big-regular-0"]]
    assert ro.warnings == ["big: big-regular-0: no other serving regular engine: restarted "
                           "together, with downtime"]


def test_a_new_encoder_counts_as_serving_for_the_encoders_that_restart():
    old, new = render("epd-encoder.yaml"), render("epd-encoder.yaml", MEM)
    ch, urls = decided(old, new, states={("node0", "engine-vlm-encoder-0"): "stopped"})
    ro = plan(new, ch, live_of(old), urls)
    assert [b[:2] for b in steps(ro)][:2] == [("start", ["vlm-encoder-0"]),
                                              ("batch", ["vlm-encoder-1"])]
    assert ro.batches[0].serving == "1/2 encoder engines serving"
    assert not any("encoder" in m for m in ro.refused)


def test_restart_rolling_plans_no_router_actions():
    t = render(ROLLOUT)
    ch = acts(t, router_judge="restart", router_big="update", router_chat="start")
    ro = plan(t, ch, live_of(t), only_engines={"judge-regular-0"})
    assert steps(ro) == [("batch", ["judge-regular-0"], "3/4 regular engines serving")]
    assert ro.json()["routers"] == {"update": [], "restart": [], "start": []}
    assert ro.text() == [
        "rollout: rolling, at most 1 engine of a role out at once, drain up to 30s",
        "  1. judge regular: restart judge-regular-0 (3/4 regular engines serving)"]


def test_restart_rolling_refuses_router_names_before_connecting(tmp_path):
    from tests.helpers import EXAMPLES, run_cli

    r = run_cli("restart", str(EXAMPLES / "ssh-rollout.yaml"), "--rolling", "router-judge",
                "--rehearse",
                "--ssh-config", str(tmp_path / "none"))
    assert r.exit_code == 2, r.output
    assert "restart --rolling restarts engines; router-judge is a router" in r.output
    assert "connecting" not in r.output
