"""The files sgl-gen owns on a host: its manifest there (``.sgl-gen/manifest.json``), what to
upload, chmod, remove and keep under the root, and the systemd unit files it installs outside
it. sgl-gen removes or overwrites only what its manifest lists; anything else is kept and
reported, or the deploy is refused."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from generator import __version__
from generator.deploy.changes import Changes
from generator.deploy.rendered import safe_rel
from generator.deploy.spec import MANIFEST, Echo, HostSpec, Target
from generator.deploy.transport import TMP_SUFFIX, Host

# sgl-gen's own temporary upload names: <dest>.<8 hex>.sgl-gen-tmp (Host.put)
_TMP_NAME = re.compile(r"(.+)\.[0-9a-f]{8}" + re.escape(TMP_SUFFIX))
_UNIT_NAME = re.compile(r"sgl-[A-Za-z0-9][A-Za-z0-9_.-]{0,200}\.(service|target)")


def owned_files(probe: dict[str, Any]) -> set[str] | None:
    """The files the host's manifest says sgl-gen wrote there, or None without a (valid) one."""
    man = probe.get("manifest")
    files = man.get("files") if isinstance(man, dict) else None
    if not isinstance(files, dict):
        return None
    return {rel for rel in files if isinstance(rel, str) and safe_rel(rel)}


def owned_unit_files(probe: dict[str, Any], deployment: str) -> dict[str, str]:
    """The systemd unit files the host's manifest says sgl-gen installed: name -> sha256. Only
    names of this deployment (``sgl-<deployment>-*.service``, ``sgl-<deployment>.target``) in
    the unit directory the host has now (a manifest written by another SSH user, root's system
    units against a user's, owns nothing here)."""
    if owned_files(probe) is None:
        return {}
    sd = (probe.get("manifest") or {}).get("systemd")
    files = sd.get("files") if isinstance(sd, dict) else None
    if not isinstance(sd, dict) or not isinstance(files, dict) \
            or sd.get("dir") != (probe.get("systemd") or {}).get("unit_dir"):
        return {}
    return {n: str(v) for n, v in files.items() if isinstance(n, str) and _UNIT_NAME.fullmatch(n)
            and (n == f"sgl-{deployment}.target"
                 or (n.startswith(f"sgl-{deployment}-") and n.endswith(".service")))}


def _prior(probe: dict[str, Any]) -> dict[str, str]:
    """Unit files an interrupted deploy recorded with their new checksum before writing them:
    name -> the checksum of the version sgl-gen wrote before (still its own)."""
    sd = (probe.get("manifest") or {}).get("systemd")
    prior = sd.get("prior") if isinstance(sd, dict) else None
    return {str(n): str(v) for n, v in prior.items()} if isinstance(prior, dict) else {}


def foreign_unit_dir(probe: dict[str, Any]) -> str | None:
    """The unit directory the host's manifest records when it is not the one this SSH user has
    (the deployment was installed by another user, e.g. root), else None."""
    if owned_files(probe) is None:
        return None
    sd = (probe.get("manifest") or {}).get("systemd")
    have = (probe.get("systemd") or {}).get("unit_dir")
    if isinstance(sd, dict) and sd.get("files") and sd.get("dir") and have \
            and sd.get("dir") != have:
        return str(sd["dir"])
    return None


def host_files(h: HostSpec, probe: dict[str, Any], adopt: bool, ch: Changes) -> None:
    """What to upload, chmod, remove and keep under one host's root."""
    have = dict(probe.get("files") or {})
    links = set(probe.get("links") or ())
    owned = owned_files(probe)
    mine = owned or set()
    up: list[str] = []
    chmod: list[str] = []
    remove: list[str] = []
    keep: list[str] = []
    adopted: list[str] = []
    conflicts: list[str] = []
    tmp = {rel for rel in have if (m := _TMP_NAME.fullmatch(rel)) is not None
           and (m.group(1) in mine or m.group(1) in h.files)}  # left by an interrupted upload
    for rel in sorted(h.files):
        parts = rel.split("/")
        through = next((p for p in ("/".join(parts[:i]) for i in range(1, len(parts) + 1))
                        if p in links), None)
        if through is not None:
            conflicts.append(f"{rel} (goes through the symlink {through})" if through != rel
                             else f"{rel} (a symlink)")
        elif rel not in have:
            up.append(rel)
        elif rel in mine:
            if have[rel][0] != h.sha(rel):
                up.append(rel)
            elif have[rel][1] != h.files[rel][1]:
                chmod.append(rel)
        elif have[rel][0] == h.sha(rel) and adopt:
            adopted.append(rel)
            if have[rel][1] != h.files[rel][1]:
                chmod.append(rel)
        else:
            conflicts.append(rel + ("" if have[rel][0] != h.sha(rel) else " (identical)"))
    for rel in sorted(have):
        if rel in h.files:
            continue
        (remove if rel in mine or rel in tmp else keep).append(rel)
    refused = []
    if owned is None and keep and not adopt:
        refused.append(
            f"{h.host}: {h.root} is not empty and has no sgl-gen manifest ({MANIFEST}): "
            f"{len(keep) + int(probe.get('more') or 0)} file(s) that sgl-gen did not write, "
            f"e.g. {', '.join(keep[:3])} (hint: give this host a workdir of its own, or pass "
            f"--adopt to deploy into it: files sgl-gen did not write are kept and reported)")
    if conflicts:
        refused.append(
            f"{h.host}: {len(conflicts)} file(s) the render writes exist under {h.root} but were "
            f"not written by sgl-gen: {', '.join(conflicts[:5])}"
            f"{', ...' if len(conflicts) > 5 else ''} (hint: sgl-gen never overwrites a file it "
            f"did not write: move them away"
            + ("; --adopt takes over identical ones" if not adopt else "") + ")")
    ch.upload[h.host], ch.chmod[h.host], ch.remove[h.host] = up, chmod, remove
    ch.keep[h.host], ch.adopt[h.host], ch.refused[h.host] = keep, adopted, refused


def unit_file_changes(h: HostSpec, probe: dict[str, Any], adopt: bool, ch: Changes) -> None:
    """The systemd unit files to install into the unit directory (system: /etc/systemd/system;
    user: ~/.config/systemd/user), to remove (sgl-gen's, no longer rendered, or the host moved
    to bash) and the units to enable. A file there that sgl-gen did not install is refused
    (``--adopt``: an identical one is taken over)."""
    sd = dict(probe.get("systemd") or {})
    owned = owned_unit_files(probe, h.deployment)
    want = [rel.split("/", 1)[1] for rel in h.systemd_files] if h.supervisor == "systemd" else []
    have = dict(sd.get("installed") or {})
    enabled = dict(sd.get("enabled") or {})
    install, adopted, conflicts = [], [], []
    if h.supervisor == "systemd" and sd.get("unit_dir_link"):
        ch.refused.setdefault(h.host, []).append(
            f"{h.host}: the unit directory {sd.get('unit_dir')} is a symlink (hint: sgl-gen "
            f"writes unit files only into a real directory)")
    other = foreign_unit_dir(probe)
    if other is not None:
        ch.refused.setdefault(h.host, []).append(
            f"{h.host}: {h.root} was deployed with unit files in {other}, but this SSH user's "
            f"unit directory is {sd.get('unit_dir')} (hint: run `sgl-gen down` as the user that "
            f"deployed it, then deploy again)")
    for name in want:
        sha, got = h.sha(f"systemd/{name}"), have.get(name)
        if got is None:
            install.append(name)
        elif len(got) > 2:
            conflicts.append(f"{name} (a symlink)")
        elif name in owned:
            if got[0] != sha or got[1] != 0o644:
                install.append(name)
        elif got[0] == sha and adopt:
            adopted.append(name)
        else:
            conflicts.append(name + (" (identical)" if got[0] == sha else ""))
    units = {u.service for u in h.units} | {h.systemd_target}
    ch.install[h.host] = install
    gone = sorted(n for n in owned if n not in want)
    # removed only while it is what sgl-gen wrote there (now, or before an interrupted deploy
    # recorded its next version): an edited one is kept, and reported, but disabled
    prior = _prior(probe)
    edited = [n for n in gone if n in have and (len(have[n]) > 2 or have[n][0] not in (
        owned[n], prior.get(n)))]
    ch.uninstall[h.host] = [n for n in gone if n not in edited]
    ch.disable[h.host] = edited
    ch.keep[h.host] = ch.keep.get(h.host, []) + [f"{sd.get('unit_dir')}/{n}" for n in edited]
    ch.enable[h.host] = sorted(n for n in want if n in units and enabled.get(n) != "enabled")
    ch.reload[h.host] = bool(sd.get("need_reload")) and h.supervisor == "systemd"
    ch.adopt[h.host] = ch.adopt.get(h.host, []) + [f"{sd.get('unit_dir')}/{n}" for n in adopted]
    if conflicts:
        ch.refused.setdefault(h.host, []).append(
            f"{h.host}: {len(conflicts)} unit file(s) sgl-gen installs exist in "
            f"{sd.get('unit_dir')} but were not installed by sgl-gen: {', '.join(conflicts[:5])}"
            f"{', ...' if len(conflicts) > 5 else ''} (hint: sgl-gen never overwrites a file it "
            f"did not write: remove them (systemctl disable first)"
            + ("; --adopt takes over identical ones" if not adopt else "") + ")")


# ---------------------------------------------------------------------------------------------
# The host's manifest


def manifest_doc(host: Host, target: Target, units: dict[str, str],
                 unit_dir: str | None = None, before: Any = None) -> dict[str, Any]:
    """``units``: name -> the checksum of what runs; a unit whose files changed but that has
    not restarted yet keeps the record ``before`` (the manifest's units as deployed) has."""
    spec = host.spec
    before = before if isinstance(before, dict) else {}

    def record(u: Any) -> dict[str, Any]:
        rec = before.get(u.name)
        rec = rec if isinstance(rec, dict) else {}
        if units[u.name] == spec.unit_hash(u):
            url, settings, image = u.url, u.settings, spec.image.get("id")
        else:  # still what it ran before: its URL, settings and image as deployed
            url, settings, image = str(rec.get("url") or u.url), rec.get("settings"), \
                rec.get("image")
        return {"kind": u.kind, "hash": units[u.name], "url": url,
                **({"settings": str(settings)} if settings else {}),
                **({"image": str(image)} if image and spec.container is not None else {})}
    doc: dict[str, Any] = {
        "deployment": target.name,
        "generator": f"sgl-gen {__version__}",
        "host": spec.host,
        "rehearse": target.rehearse,
        "supervisor": spec.supervisor,
        "files": {rel: spec.sha(rel) for rel in sorted(spec.files)},
        "units": {u.name: record(u) for u in spec.units if u.name in units},
    }
    if spec.container is not None:  # the image its units run: by name, and what it was here
        doc["container"] = {"kind": spec.container["kind"], "image": spec.container["image"],
                            "id": spec.image.get("id")}
    if spec.supervisor == "systemd" and unit_dir:
        doc["systemd"] = {"dir": unit_dir, "files": {
            rel.split("/", 1)[1]: spec.sha(rel) for rel in spec.systemd_files}}
    return doc


def intent_manifest(host: Host, target: Target, have: Any, probe: dict[str, Any],
                    unit_dir: str | None) -> dict[str, Any] | None:
    """The manifest to write before the first change: what the host's says, its files and unit
    files extended by every one this deploy writes or adopts (None: it lists them all already)."""
    spec = host.spec
    old = have.get("files") if isinstance(have, dict) else None
    files = dict(old) if isinstance(old, dict) and owned_files(probe) is not None else {}
    units_old = owned_unit_files(probe, target.name)
    units_new = {rel.split("/", 1)[1]: spec.sha(rel) for rel in spec.systemd_files} \
        if spec.supervisor == "systemd" and unit_dir else {}
    if all(rel in files for rel in spec.files) and all(n in units_old for n in units_new):
        return None
    doc = dict(have) if isinstance(have, dict) and files else manifest_doc(host, target, {})
    doc["files"] = dict(sorted({**files, **{rel: spec.sha(rel) for rel in spec.files}}.items()))
    if units_new or units_old:
        prior = {**_prior(probe), **{n: units_old[n] for n in units_new
                                     if n in units_old and units_old[n] != units_new[n]}}
        doc["systemd"] = {"dir": unit_dir or (have.get("systemd") or {}).get("dir"),
                          "files": dict(sorted({**units_old, **units_new}.items())),
                          **({"prior": dict(sorted(prior.items()))} if prior else {})}
    return doc


def manifest_text(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def write_manifest(host: Host, doc: dict[str, Any], have: Any = None) -> dict[str, Any]:
    """Upload the host's manifest unless ``have`` (what the host has) is the same; return it."""
    if doc != have:
        host.put(MANIFEST, manifest_text(doc).encode(), 0o644)
    return doc


def upload(h: Host, ch: Changes, manifest: Any, probe: dict[str, Any], target: Target,
           unit_dir: str | None, echo: Echo) -> Any:
    """Write what ``ch`` says under the host's root (the intent manifest first); return the
    manifest the host has afterwards."""
    rels = ch.upload.get(h.name, [])
    if not rels and not ch.chmod.get(h.name) and not ch.remove.get(h.name) \
            and not ch.adopt.get(h.name) and not ch.install.get(h.name) and manifest is not None:
        return manifest  # nothing to change, and the directories exist
    root = h.spec.root
    dirs = sorted({f"{root}/{rel}".rsplit("/", 1)[0] for rel in rels} | {
        f"{root}/.sgl-gen", f"{root}/run", f"{root}/logs"})
    h.run("mkdir -p " + " ".join(shlex.quote(d) for d in dirs), "mkdir")
    # Ownership is recorded before the first byte lands: a deploy interrupted from here on
    # leaves a root whose manifest lists every file it may have written.
    intent = intent_manifest(h, target, manifest, probe, unit_dir)
    if intent is not None:
        h.put(MANIFEST, manifest_text(intent).encode(), 0o644)
        manifest = intent
    for rel in rels:
        data, mode = h.spec.files[rel]
        h.put(rel, data, mode)
    for rel in ch.chmod.get(h.name, []):
        # uploaded again, not chmod-ed: the path may be a hard link to a file outside the root
        # (sftp chmod changes that file too); a rename leaves the other be
        h.put(rel, *h.spec.files[rel])
    if ch.remove.get(h.name):
        h.run("rm -f " + " ".join(shlex.quote(f"{root}/{rel}") for rel in ch.remove[h.name]),
              "remove stale files")
    if rels or ch.remove.get(h.name):
        echo(f"  upload  {h.name}: {len(rels)} file(s)"
             + (f", removed {len(ch.remove[h.name])}" if ch.remove.get(h.name) else ""))
    return manifest
