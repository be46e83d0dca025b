"""``--inventory FILE``: the hosts of a plain host list or an Ansible inventory, as
``cluster.hosts`` (so a slime ``--sglang-config`` file can stay as it is).

Three forms, told apart by the file name: ``.yaml``/``.yml``/``.json`` is an Ansible YAML
inventory (groups with ``hosts``, ``children`` and ``vars``); anything else is an Ansible INI
inventory, of which a plain list, one host per line, is the simplest case. A host line is
``NAME[:PORT] [ansible_host=ADDRESS] [ansible_user=USER] [ansible_port=PORT]``; a plain line may
also be ``USER@HOST[:PORT]``. ``[group]`` sections list hosts, ``[group:vars]`` give their
variables (``ansible_user``, ``ansible_port`` apply to hosts that set none), ``[group:children]``
name its child groups, whose hosts get its variables (a child's own win, as in Ansible).
Every host of the file is taken, in the order of first appearance. Variables other than the
three are Ansible's business and ignored (those for how to connect, a key file or ProxyJump
arguments, with a warning: sgl-gen's SSH reads ssh's own config); ``sgl_gen_workdir`` and
``sgl_gen_supervisor`` give a host's ``workdir`` and ``supervisor``. Errors name the file, line
and column.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from generator.compile.loader import (
    MAX_ITEMS,
    Origin,
    PathT,
    SourceMap,
    parse_text,
    raw_text_problems,
    read_regular_file,
)
from generator.compile.options import Setting
from generator.errors import Diagnostic, TopologyError

#: Ansible's variable -> the host field it gives (the ``ansible_ssh_*`` forms are its old names)
_VARS = {"ansible_host": "address", "ansible_ssh_host": "address",
         "ansible_user": "user", "ansible_ssh_user": "user",
         "ansible_port": "port", "ansible_ssh_port": "port",
         # sgl-gen's own, for what differs per host: cluster.hosts[].workdir and .supervisor
         "sgl_gen_workdir": "workdir", "sgl_gen_supervisor": "supervisor"}
#: Ansible's variables for how to connect that sgl-gen's SSH does not take (it reads ssh's own
#: config): each is warned about once, its value never shown
_SSH_IGNORED = frozenset({
    "ansible_ssh_private_key_file", "ansible_private_key_file", "ansible_ssh_common_args",
    "ansible_ssh_extra_args", "ansible_ssh_args", "ansible_connection", "ansible_password",
    "ansible_ssh_pass", "ansible_ssh_password", "ansible_ssh_executable"})
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
        #: where each host's and group's variables are written: (line, col) by host field
        self.own_at: dict[str, dict[str, tuple[int, int]]] = {}
        self.group_at: dict[str, dict[str, tuple[int, int]]] = {}
        #: (cluster.hosts path, position) for every value of :meth:`hosts`, so a value the
        #: topology's checks refuse is named at its line of the inventory
        self.origins: list[tuple[PathT, Origin]] = []
        self.errors: list[Diagnostic] = []
        self.warnings: list[Diagnostic] = []
        self.warned: set[str] = set()
        self.found: list[dict[str, Any]] = []

    def err(self, line: int, col: int, message: str, hint: str = "") -> None:
        self.errors.append(Diagnostic(self.file, line, col, "", message, hint))

    def ignored(self, key: str, line: int, col: int) -> None:
        """Warn (once per variable) that an Ansible connection variable is not used."""
        if key in _SSH_IGNORED and key not in self.warned:
            self.warned.add(key)
            self.warnings.append(Diagnostic(
                self.file, line, col, "", f"{key} is not used: sgl-gen connects as ssh does, "
                "with ~/.ssh/config (or --ssh-config)",
                "put IdentityFile, ProxyJump, ... in a Host block for these hosts", "warning"))

    def add(self, name: str, fields: dict[str, Any], chain: tuple[str, ...],
            at: tuple[int, int], fields_at: dict[str, tuple[int, int]]) -> bool:
        """Add (or add to) host ``name``; False when the inventory has too many hosts."""
        if name not in self.own and len(self.own) == MAX_ITEMS:
            self.err(*at, f"more than {MAX_ITEMS:,} hosts",
                     f"no topology needs this many: cluster.hosts lists at most {MAX_ITEMS:,}")
            return False
        self.own.setdefault(name, {}).update(fields)
        self.own_at.setdefault(name, {}).update(fields_at)
        self.where.setdefault(name, at)
        self.chains.setdefault(name, []).append(chain)
        return True

    def add_group_vars(self, group: str, fields: dict[str, Any],
                       fields_at: dict[str, tuple[int, int]]) -> None:
        self.group_vars.setdefault(group, {}).update(fields)
        self.group_at.setdefault(group, {}).update(fields_at)

    def hosts(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        names: dict[str, str] = {}
        for inv_name, fields in self.own.items():
            merged: dict[str, Any] = dict(self.group_vars.get("all", {}))
            merged_at: dict[str, tuple[int, int]] = dict(self.group_at.get("all", {}))
            for chain in self.chains[inv_name]:
                for group in chain:
                    merged.update(self.group_vars.get(group, {}))
                    merged_at.update(self.group_at.get(group, {}))
            merged.update(fields)
            merged_at.update(self.own_at.get(inv_name, {}))
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
            item: PathT = ("cluster", "hosts", len(out))
            self.origins += [(item, Origin(self.file, line, col))] + [
                ((*item, key), Origin(self.file, *merged_at.get(key, (line, col))))
                for key in host]
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
    if text.isascii() and text.isdigit() and 1 <= int(text) <= 65535:  # (isdigit: also '²')
        return int(text)
    hosts.err(line, col, f"port {text!r} is not a number from 1 to 65535")
    return None


def _variables(tokens: list[tuple[str, int]], hosts: _Hosts, line: int,
               at: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """``key=value`` words -> host fields (``address``, ``user``, ``port``); each field's
    position goes to ``at``."""
    out: dict[str, Any] = {}
    for word, col in tokens:
        key, eq, value = word.partition("=")
        if not eq:
            hosts.err(line, col, f"expected key=value, got {word!r}",
                      "one host per line: NAME [ansible_host=ADDRESS] [ansible_user=USER] "
                      "[ansible_port=PORT]")
            continue
        hosts.ignored(key, line, col)
        field = _VARS.get(key)
        if field is not None:
            at[field] = (line, col)
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
        lexer.commenters = "#"  # (";" only at the start of a line, as for Ansible)
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
    parents: dict[str, list[tuple[str, int, int]]] = {}  # group -> (parent, line, col)
    # lines end at LF (CRLF's CR is stripped), as grep and an editor count them: splitlines()
    # would also break at U+2028, form feed, NEL..., which _check_text refuses first
    for line_no, raw in enumerate(text.split("\n"), 1):
        raw = raw.removesuffix("\r")
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
        words = _words(raw, hosts, line_no)
        if not words:
            continue
        if kind == "children":  # one group per line: ``section`` is its parent
            parents.setdefault(words[0][0], []).append((section, line_no, words[0][1]))
            continue
        if kind == "vars":
            at: dict[str, tuple[int, int]] = {}
            hosts.add_group_vars(section, _variables(words, hosts, line_no, at), at)
            continue
        (first, col), rest = words[0], words[1:]
        if _RANGE.search(first):
            hosts.err(line_no, col, f"host ranges ({first!r}) are not supported",
                      "list each host on its own line")
            continue
        fields: dict[str, Any] = {}
        fields_at: dict[str, tuple[int, int]] = {}
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
        fields.update(_variables(rest, hosts, line_no, fields_at))
        if not hosts.add(first, fields, (section,), (line_no, col), fields_at):
            break
    if parents:
        chains: dict[str, tuple[str, ...]] = {}
        for name, groups in hosts.chains.items():
            hosts.chains[name] = [_ancestry(g[-1], parents, chains, hosts) for g in groups]


def _ancestry(group: str, parents: dict[str, list[tuple[str, int, int]]],
              done: dict[str, tuple[str, ...]], hosts: _Hosts) -> tuple[str, ...]:
    """``group`` and every group it is a child of (``[parent:children]``), outermost first:
    the order their variables apply in (the innermost wins). Each group is visited once
    (groups nested as diamonds are many paths, not many groups); a group that is its own
    ancestor is an error."""
    if group in done:
        return done[group]
    order: list[str] = []
    seen: set[str] = set()
    stack: list[tuple[str, int]] = [(group, 0)]  # (group, index of the next parent to visit)
    on_path: list[str] = []
    while stack:
        g, i = stack.pop()
        if i == 0:
            if g in on_path:
                continue
            on_path.append(g)
        ups = parents.get(g, [])
        if i < len(ups):
            stack.append((g, i + 1))
            parent, line, col = ups[i]
            if parent in on_path:
                hosts.err(line, col, f"group {g!r} is its own child (through {parent!r})")
                return (group,)
            if parent not in seen:
                stack.append((parent, 0))
            continue
        on_path.pop()
        if g not in seen:
            seen.add(g)
            order.append(g)
    done[group] = tuple(order)
    return done[group]


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
    gvars = _mapping(node, "vars", path, smap, hosts, "vars is a mapping: NAME: VALUE")
    fields, at = _yaml_vars(gvars, path + ("vars",), smap, hosts)
    hosts.add_group_vars(group, fields, at)
    members = _mapping(node, "hosts", path, smap, hosts, "hosts is a mapping: NAME: {vars}")
    for name, hvars in members.items():
        o = smap.at(path + ("hosts", name), key=True)
        if hvars is not None and not isinstance(hvars, dict):
            hosts.errors.append(smap.diag(path + ("hosts", name), "a host's value is a "
                                          "mapping of its variables (or nothing)"))
            continue
        fields, at = _yaml_vars(hvars or {}, path + ("hosts", name), smap, hosts)
        if not hosts.add(str(name), fields, chain, (o.line, o.col), at):
            return
    children = _mapping(node, "children", path, smap, hosts,
                        "children is a mapping: GROUP: {hosts, children, vars}")
    for child, sub in children.items():
        _yaml_group(str(child), sub, path + ("children", child), smap, hosts, chain)


def _mapping(node: dict[str, Any], key: str, path: tuple[Any, ...], smap: SourceMap,
             hosts: _Hosts, message: str) -> dict[str, Any]:
    """A group's ``vars``/``hosts``/``children``: a mapping, or nothing (an error otherwise)."""
    value = node.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        hosts.errors.append(smap.diag(path + (key,), message))
        return {}
    return value


def _yaml_vars(variables: dict[str, Any], path: tuple[Any, ...], smap: SourceMap,
               hosts: _Hosts) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
    """A YAML inventory's variables as host fields, with where each is written."""
    fields = {_VARS[k]: v for k, v in variables.items() if k in _VARS}
    at: dict[str, tuple[int, int]] = {}
    for k in variables:
        o = smap.at(path + (k,), key=True)
        hosts.ignored(str(k), o.line, o.col)
        if k in _VARS:
            o = smap.at(path + (k,))
            at[_VARS[k]] = (o.line, o.col)
    return _yaml_fields(fields, path, smap, hosts), at


def _yaml_fields(fields: dict[str, Any], path: tuple[Any, ...], smap: SourceMap,
                 hosts: _Hosts) -> dict[str, Any]:
    """A YAML inventory's values as host fields: a port written as text is a number."""
    port = fields.get("port")
    if isinstance(port, str) and port.isascii() and port.isdigit():
        fields["port"] = int(port)
    for key, value in fields.items():
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            hosts.errors.append(smap.diag(path, f"{key} must be a string or a number"))
    return fields


def _check_text(text: str, hosts: _Hosts) -> None:
    """Refuse the characters a topology's text may not hold raw (hidden line breaks, controls,
    bidi), positioned as an editor counts (lines end at LF)."""
    for n, (i, _ch, msg, hint) in enumerate(raw_text_problems(text)):
        line = text.count("\n", 0, i) + 1
        col = i - (text.rfind("\n", 0, i) + 1) + 1
        if n == 20:
            hosts.err(line, col, "more such characters from here on (only the first 20 are "
                      "listed)")
            break
        hosts.err(line, col, msg, hint)
    if hosts.errors:
        raise TopologyError(hosts.errors)


#: parse_text's words for a top level that is no mapping, said for an inventory
_NOT_GROUPS = ("file is empty", "top level must be a mapping")


def _parse_yaml(text: str, path: str) -> tuple[dict[str, Any], SourceMap]:
    try:
        return parse_text(text, path)
    except TopologyError as exc:
        if exc.diagnostics and exc.diagnostics[0].message.startswith(_NOT_GROUPS):
            d = exc.diagnostics[0]
            raise TopologyError([Diagnostic(
                d.file, d.line, d.col, "", "an Ansible YAML inventory is a mapping of groups "
                f"({d.message})", "all: {hosts: {NAME: {ansible_host: ADDRESS}}}")]) from None
        raise


def _read(path: str) -> _Hosts:
    hosts = _Hosts(path)
    if os.path.isdir(path):
        raise TopologyError([Diagnostic(path, 0, 0, "", "is a directory, not an inventory file",
                                        "an Ansible inventory directory: pass its hosts file")])
    raw = read_regular_file(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = len(raw[raw.rfind(b"\n", 0, exc.start) + 1:exc.start].decode("utf-8", "replace"))
        raise TopologyError([Diagnostic(path, line, col + 1, "", "not UTF-8 text",
                                        "save the file as UTF-8")]) from None
    text = text.removeprefix("\ufeff")  # a BOM (Windows editors) is no part of the first line
    if Path(path).suffix.lower() in (".yaml", ".yml", ".json"):
        data, smap = _parse_yaml(text, path)
        for group, node in data.items():
            _yaml_group(str(group), node, (group,), smap, hosts, ())
    else:
        _check_text(text, hosts)
        _ini(text, hosts)
    found = hosts.hosts()
    if not found and not hosts.errors:
        hosts.err(1, 1, "no hosts in this inventory",
                  "one host per line: NAME [ansible_host=ADDRESS] [ansible_user=USER]")
    if hosts.errors:
        raise TopologyError(hosts.errors)
    hosts.found = found
    return hosts


def read_inventory(path: str) -> list[dict[str, Any]]:
    """The ``cluster.hosts`` list of an inventory file; TopologyError on any problem."""
    return _read(path).found


def inventory_setting(path: str, warn: Callable[[str], None] | None = None) -> Setting:
    """``--inventory FILE`` as the setting of ``cluster.hosts``, each value positioned in the
    file (a value the topology's checks refuse is named at its line and column); ``warn``
    gets each warning's line (connection variables sgl-gen does not use)."""
    hosts = _read(path)
    for w in hosts.warnings:
        if warn is not None:
            warn(w.format())
    return Setting(("cluster", "hosts"), hosts.found, f"--inventory {path}",
                   tuple(hosts.origins))
