"""``--inventory FILE``: the hosts of a plain host list or an Ansible inventory, as
``cluster.hosts`` (so a slime ``--sglang-config`` file can stay as it is).

Three forms, told apart by the file name: ``.yaml``/``.yml``/``.json`` is an Ansible YAML
inventory (groups with ``hosts``, ``children`` and ``vars``); anything else is an Ansible INI
inventory, of which a plain list, one host per line, is the simplest case. A host line is
``NAME[:PORT] [ansible_host=ADDRESS] [ansible_user=USER] [ansible_port=PORT]``; a plain line may
also be ``USER@HOST[:PORT]``. ``[group]`` sections list hosts, ``[group:vars]`` give their
variables (``ansible_user``, ``ansible_port`` apply to hosts that set none), ``[group:children]``
are skipped (their hosts are listed in their own sections). Every host of the file is taken,
in the order of first appearance. Variables other than the three are Ansible's business and
ignored; ``sgl_gen_workdir`` and ``sgl_gen_supervisor`` give a host's ``workdir`` and
``supervisor``. Errors name the file, line and column.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from pathlib import Path
from typing import Any

from generator.compile.loader import SourceMap, parse_text, read_regular_file
from generator.compile.options import Setting
from generator.errors import Diagnostic, TopologyError

#: Ansible's variable -> the host field it gives (the ``ansible_ssh_*`` forms are its old names)
_VARS = {"ansible_host": "address", "ansible_ssh_host": "address",
         "ansible_user": "user", "ansible_ssh_user": "user",
         "ansible_port": "port", "ansible_ssh_port": "port",
         # sgl-gen's own, for what differs per host: cluster.hosts[].workdir and .supervisor
         "sgl_gen_workdir": "workdir", "sgl_gen_supervisor": "supervisor"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_RANGE = re.compile(r"\[[^\]]*:[^\]]*\]")


class _Hosts:
    """Hosts in order of first appearance, each with its own variables and the chains of
    groups it is in (outermost first: the innermost group's variables win, the host's own
    over all of them)."""

    def __init__(self, file: str):
        self.file = file
        self.own: dict[str, dict[str, Any]] = {}
        self.chains: dict[str, list[tuple[str, ...]]] = {}
        self.group_vars: dict[str, dict[str, Any]] = {}
        self.where: dict[str, tuple[int, int]] = {}
        self.errors: list[Diagnostic] = []

    def err(self, line: int, col: int, message: str, hint: str = "") -> None:
        self.errors.append(Diagnostic(self.file, line, col, "", message, hint))

    def add(self, name: str, fields: dict[str, Any], chain: tuple[str, ...],
            at: tuple[int, int]) -> None:
        self.own.setdefault(name, {}).update(fields)
        self.where.setdefault(name, at)
        self.chains.setdefault(name, []).append(chain)

    def hosts(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        names: dict[str, str] = {}
        for inv_name, fields in self.own.items():
            merged: dict[str, Any] = dict(self.group_vars.get("all", {}))
            for chain in self.chains[inv_name]:
                for group in chain:
                    merged.update(self.group_vars.get(group, {}))
            merged.update(fields)
            name = host_name(inv_name)
            line, col = self.where[inv_name]
            if name in names:
                self.err(line, col, f"hosts {names[name]!r} and {inv_name!r} both get the "
                         f"sgl-gen host name {name!r}",
                         "give one of them a short name and ansible_host=ADDRESS")
                continue
            names[name] = inv_name
            host: dict[str, Any] = {"name": name, "address": merged.get("address", inv_name)}
            for key in ("user", "port", "workdir", "supervisor"):
                if key in merged:
                    host[key] = merged[key]
            out.append(host)
        return out


def host_name(inventory_name: str) -> str:
    """The sgl-gen host name (``[A-Za-z0-9][A-Za-z0-9_-]*``) of an inventory host: itself when
    it is one, else the first label of a DNS name (``gpu1.example.com`` -> ``gpu1``), else the
    address with dashes (``10.0.0.1`` -> ``10-0-0-1``)."""
    if _NAME.fullmatch(inventory_name):
        return inventory_name
    try:
        ipaddress.ip_address(inventory_name)
    except ValueError:
        first = inventory_name.split(".", 1)[0]
        if _NAME.fullmatch(first):
            return first
    dashed = re.sub(r"[^A-Za-z0-9_-]+", "-", inventory_name).strip("-_")[:63]
    return dashed or "host"


def _port(text: str, hosts: _Hosts, line: int, col: int) -> int | None:
    if text.isdigit() and 1 <= int(text) <= 65535:
        return int(text)
    hosts.err(line, col, f"port {text!r} is not a number from 1 to 65535")
    return None


def _variables(tokens: list[tuple[str, int]], hosts: _Hosts, line: int) -> dict[str, Any]:
    """``key=value`` words -> host fields (``address``, ``user``, ``port``)."""
    out: dict[str, Any] = {}
    for word, col in tokens:
        key, eq, value = word.partition("=")
        if not eq:
            hosts.err(line, col, f"expected key=value, got {word!r}",
                      "one host per line: NAME [ansible_host=ADDRESS] [ansible_user=USER] "
                      "[ansible_port=PORT]")
            continue
        field = _VARS.get(key)
        if field == "port":
            port = _port(value, hosts, line, col)
            if port is not None:
                out[field] = port
        elif field is not None:
            out[field] = value
    return out


def _words(text: str, hosts: _Hosts, line: int) -> list[tuple[str, int]] | None:
    """The shell-like words of an INI line with their 1-based columns (None: bad quoting)."""
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=False)
        lexer.whitespace_split = True
        lexer.commenters = "#;"
        words = list(lexer)
    except ValueError as exc:
        hosts.err(line, 1, f"cannot read this line: {exc}")
        return None
    out: list[tuple[str, int]] = []
    pos = 0
    for w in words:
        first = w[:1]
        found = text.find(first, pos) if first else pos
        col = (found if found >= 0 else pos) + 1
        out.append((w, col))
        pos = max(col, pos + 1)
    return out


def _ini(text: str, hosts: _Hosts) -> None:
    section, kind = "ungrouped", "hosts"
    for line_no, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("[") and stripped.endswith("]"):
            section, _, kind = stripped[1:-1].strip().partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children"):
                hosts.err(line_no, 1, f"unknown section kind {kind!r}",
                          "sections are [group], [group:vars] and [group:children]")
            continue
        if kind == "children":
            continue
        words = _words(raw, hosts, line_no)
        if not words:
            continue
        if kind == "vars":
            hosts.group_vars.setdefault(section, {}).update(_variables(words, hosts, line_no))
            continue
        (first, col), rest = words[0], words[1:]
        if _RANGE.search(first):
            hosts.err(line_no, col, f"host ranges ({first!r}) are not supported",
                      "list each host on its own line")
            continue
        fields: dict[str, Any] = {}
        if "@" in first:
            user, _, first = first.rpartition("@")
            fields["user"] = user
        if first.count(":") == 1:
            first, _, port_text = first.partition(":")
            port = _port(port_text, hosts, line_no, col)
            if port is not None:
                fields["port"] = port
        if not first:
            hosts.err(line_no, col, "a host line needs a host name or address")
            continue
        fields.update(_variables(rest, hosts, line_no))
        hosts.add(first, fields, (section,), (line_no, col))


def _yaml_group(group: str, node: Any, path: tuple[Any, ...], smap: SourceMap,
                hosts: _Hosts, chain: tuple[str, ...]) -> None:
    if node is None:
        return
    if not isinstance(node, dict):
        hosts.errors.append(smap.diag(path, "a group is a mapping of hosts, children and vars"))
        return
    if group in chain:
        hosts.errors.append(smap.diag(path, f"group {group!r} is its own child"))
        return
    chain = (*chain, group)
    gvars = node.get("vars") or {}
    if isinstance(gvars, dict):
        fields = {_VARS[k]: v for k, v in gvars.items() if k in _VARS}
        hosts.group_vars.setdefault(group, {}).update(_yaml_fields(fields, path + ("vars",),
                                                                   smap, hosts))
    members = node.get("hosts") or {}
    if not isinstance(members, dict):
        hosts.errors.append(smap.diag(path + ("hosts",), "hosts is a mapping: NAME: {vars}"))
        members = {}
    for name, hvars in members.items():
        o = smap.at(path + ("hosts", name), key=True)
        fields = {_VARS[k]: v for k, v in hvars.items() if k in _VARS} \
            if isinstance(hvars, dict) else {}
        hosts.add(str(name), _yaml_fields(fields, path + ("hosts", name), smap, hosts), chain,
                  (o.line, o.col))
    children = node.get("children") or {}
    if isinstance(children, dict):
        for child, sub in children.items():
            _yaml_group(str(child), sub, path + ("children", child), smap, hosts, chain)


def _yaml_fields(fields: dict[str, Any], path: tuple[Any, ...], smap: SourceMap,
                 hosts: _Hosts) -> dict[str, Any]:
    """A YAML inventory's values as host fields: a port written as text is a number."""
    port = fields.get("port")
    if isinstance(port, str) and port.isdigit():
        fields["port"] = int(port)
    for key, value in fields.items():
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            hosts.errors.append(smap.diag(path, f"{key} must be a string or a number"))
    return fields


def read_inventory(path: str) -> list[dict[str, Any]]:
    """The ``cluster.hosts`` list of an inventory file; TopologyError on any problem."""
    hosts = _Hosts(path)
    raw = read_regular_file(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TopologyError([Diagnostic(path, 1, 1, "", f"not UTF-8 text (byte {exc.start})")]) \
            from None
    if Path(path).suffix.lower() in (".yaml", ".yml", ".json"):
        data, smap = parse_text(text, path)
        for group, node in data.items():
            _yaml_group(str(group), node, (group,), smap, hosts, ())
    else:
        _ini(text, hosts)
    found = hosts.hosts()
    if not found and not hosts.errors:
        hosts.err(1, 1, "no hosts in this inventory",
                  "one host per line: NAME [ansible_host=ADDRESS] [ansible_user=USER]")
    if hosts.errors:
        raise TopologyError(hosts.errors)
    return found


def inventory_setting(path: str) -> Setting:
    """``--inventory FILE`` as the setting of ``cluster.hosts``."""
    return Setting(("cluster", "hosts"), read_inventory(path), f"--inventory {path}")
