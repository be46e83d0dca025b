"""The pure pipeline, file to Plan: load -> (CLI settings) -> validate/resolve -> place."""

from __future__ import annotations

import os

from generator.compile.authcheck import check_router_auth
from generator.compile.loader import load_file
from generator.compile.model import Plan, Topology
from generator.compile.modelcheck import check_models
from generator.compile.options import Setting, apply_settings
from generator.compile.place import place
from generator.compile.resolve import resolve


def load_topology(path: str | os.PathLike[str], settings: list[Setting] | None = None,
                  *, local: bool = False) -> Topology:
    """Read, merge CLI settings, validate and resolve a topology file."""
    data, smap = load_file(path)
    apply_settings(data, smap, settings or [])
    # a router must send the key its engines require (checked once the topology is whole);
    # then what the model's own config.json says (where it is readable)
    return check_models(check_router_auth(resolve(data, smap, local=local)))


def compile_plan(path: str | os.PathLike[str], settings: list[Setting] | None = None,
                 *, local: bool = False) -> Plan:
    """Everything up to the Plan; raises TopologyError with every positioned problem."""
    return place(load_topology(path, settings, local=local))
