"""Ownership on disk (issue 13): `render -o DIR` and `up --local` touch only the files that the
directory's MANIFEST.sha256 says sgl-gen wrote. Anything else is kept and reported (`foreign`)
or the command refuses; symlinks on a path sgl-gen writes are refused, never followed; a
manifest entry cannot point outside its directory. And `--local` runs the rendered scripts with
the interpreter running sgl-gen unless runtime.python says otherwise."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import socket
import stat
import sys
import urllib.request
from pathlib import Path

import pytest

from generator import write as write_mod
from generator.compile.pipeline import compile_plan
from generator.targets.render import render
from generator.write import write_tree
from tests.helpers import EXAMPLES, not_warnings, run_cli, write_topo

MANIFEST = "MANIFEST.sha256"


def _topo(tmp_path: Path, name: str, engines: int = 1, gpus_per_node: int = 8,
          extra: str = "") -> Path:
    """``name``.yaml: one model of ``engines`` 1-GPU regular engines (deployment = the file
    name); no runtime.python."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    return write_topo(tmp_path, f"""
        deployment: {{hf_checkpoint: /models/m, num_gpus_per_engine: 1}}
        cluster: {{gpus_per_node: {gpus_per_node}}}
        {extra}
        sglang:
          - name: m
            router: {{port: 30950, prometheus_port: 29950}}
            server_groups: [{{worker_type: regular, num_gpus: {engines}, port: 31950}}]
        """, name=f"{name}.yaml")


def _files(root: Path) -> dict[str, bytes]:
    """Every regular file under root (not following symlinks), by relative path."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = Path(dirpath) / n
            if p.is_file() and not p.is_symlink():
                out[p.relative_to(root).as_posix()] = p.read_bytes()
    return out


def _listed(root: Path) -> set[str]:
    lines = (root / MANIFEST).read_text().splitlines()
    assert lines[0] == write_mod.MANIFEST_HEADER
    return {line.split("  ", 1)[1] for line in lines[1:]}


# --- render -o DIR -----------------------------------------------------------------------------

def test_render_into_a_directory_of_user_files_refuses_and_deletes_nothing(tmp_path):
    """`render src.yaml -o .` deleted ./src/main.py: a non-empty DIR/<deployment>/ without a
    MANIFEST.sha256 holds nothing of sgl-gen's, so it is refused (exit 1, named, with a hint)."""
    topo = _topo(tmp_path, "src")
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "main.py").write_text("print('mine')\n")
    (src / "pkg" / "util.py").write_text("X = 1\n")
    before = _files(src)
    for extra in ((), ("--check",)):
        r = run_cli("render", str(topo), "-o", str(tmp_path), *extra)
        assert r.exit_code == 1, r.output
        assert (f"{src}: not empty and has no MANIFEST.sha256, so none of its files are "
                f"sgl-gen's; refusing to write there (hint: render into an empty or new "
                f"directory (-o DIR)") in r.stderr
        assert "stale" not in r.output and "Traceback" not in r.output
        assert _files(src) == before
        assert sorted(p.name for p in src.iterdir()) == ["main.py", "pkg"]


def test_check_over_a_system_directory_reports_the_refusal_not_stale_files(tmp_path):
    """`render etc.yaml -o / --check` listed 1,144 files of /etc as stale and suggested running
    it without --check."""
    topo = _topo(tmp_path, "etc")
    etc = tmp_path / "etc"
    for i in range(60):
        (etc / f"d{i % 6}").mkdir(parents=True, exist_ok=True)
        (etc / f"d{i % 6}" / f"conf{i}").write_text(f"{i}\n")
    before = _files(etc)
    r = run_cli("render", str(topo), "-o", str(tmp_path), "--check")
    assert r.exit_code == 1
    assert r.stdout == ""
    assert not_warnings(r.stderr)[0].startswith(f"{etc}: not empty and has no MANIFEST.sha256")
    assert "run: sgl-gen render" not in r.stderr  # no suggestion to "fix" it by rendering
    r = run_cli("render", str(topo), "-o", str(tmp_path))
    assert r.exit_code == 1
    assert _files(etc) == before


def test_a_path_the_render_would_write_that_is_not_sgl_gens_is_refused(tmp_path):
    """A render that adds files (here: systemd units) never writes over a user's file at one of
    their paths; it refuses, naming it, and writes nothing at all."""
    ex = str(EXAMPLES / "basic.yaml")
    assert run_cli("render", ex, "-o", str(tmp_path), "--target", "bash").exit_code == 0
    root = tmp_path / "basic"
    unit = root / "hosts/node0/systemd/sgl-basic-engine-default-regular-0.service"
    unit.parent.mkdir()
    unit.write_text("[Unit]\nDescription=the user's own\n")
    before = _files(root)
    for extra in ((), ("--check",)):
        r = run_cli("render", ex, "-o", str(tmp_path), *extra)
        assert r.exit_code == 1, r.output
        assert (f"{unit}: exists and is not sgl-gen's (not listed in {root}/MANIFEST.sha256); "
                f"refusing to overwrite it") in r.stderr
        assert f"{root}: nothing written" in r.stderr
        assert _files(root) == before  # not one unit, not the manifest


@pytest.mark.parametrize("where", ["root", "directory", "file", "manifest"])
def test_symlinks_on_a_path_sgl_gen_writes_are_refused_not_followed(tmp_path, where):
    ex = str(EXAMPLES / "basic.yaml")
    out = tmp_path / "out"
    root = out / "basic"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep\n")
    if where == "root":  # DIR/<deployment> itself
        out.mkdir()
        root.symlink_to(elsewhere)
        link = root
    else:
        assert run_cli("render", ex, "-o", str(out)).exit_code == 0
        if where == "directory":  # a directory inside it
            for p in sorted((root / "hosts").rglob("*"), reverse=True):
                p.rmdir() if p.is_dir() else p.unlink()
            (root / "hosts").rmdir()
            link = root / "hosts"
            link.symlink_to(elsewhere)
        else:  # a file inside it (the manifest too)
            link = root / ("README.md" if where == "file" else MANIFEST)
            (elsewhere / "keep.txt").write_bytes(link.read_bytes())
            link.unlink()
            link.symlink_to(elsewhere / "keep.txt")
    kept = (elsewhere / "keep.txt").read_bytes()
    for extra in (("--check",), ()):
        r = run_cli("render", ex, "-o", str(out), *extra)
        assert r.exit_code == 1, r.output
        assert f"{link}: is a symlink" in r.stderr if where != "manifest" else (
            f"{link}: is not a regular file (link); refusing to use it" in r.stderr)
        assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"]
        assert (elsewhere / "keep.txt").read_bytes() == kept
        assert link.is_symlink()


def test_a_symlink_elsewhere_in_the_tree_is_kept_reported_and_not_entered(tmp_path):
    ex = str(EXAMPLES / "basic.yaml")
    assert run_cli("render", ex, "-o", str(tmp_path)).exit_code == 0
    root = tmp_path / "basic"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "model.safetensors").write_text("weights\n")
    (root / "data").symlink_to(elsewhere)
    r = run_cli("render", ex, "-o", str(tmp_path))
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines() == [f"foreign   {root}/data",
                                     f"{root}: 1 foreign, 18 identical"]
    assert (root / "data").is_symlink()
    assert (elsewhere / "model.safetensors").read_text() == "weights\n"


@pytest.mark.parametrize("entry", ["../victim.txt", "/VICTIM", "hosts/../../victim.txt",
                                   "./README.md", "hosts//node0"])
def test_a_manifest_entry_that_leaves_the_directory_is_refused(tmp_path, entry):
    """The manifest decides what sgl-gen deletes: a doctored one is refused as a whole, and
    nothing outside the directory (or in it) is removed."""
    ex = str(EXAMPLES / "basic.yaml")
    out = tmp_path / "out"
    assert run_cli("render", ex, "-o", str(out)).exit_code == 0
    root = out / "basic"
    victim = out / "victim.txt"
    victim.write_text("the user's\n")
    entry = entry.replace("/VICTIM", str(victim))
    lines = (root / MANIFEST).read_text().splitlines()
    with (root / MANIFEST).open("a") as f:
        f.write(f"{'0' * 64}  {entry}\n")
    before = _files(root)
    r = run_cli("render", ex, "-o", str(out))
    assert r.exit_code == 1, r.output
    assert (f"{root}/MANIFEST.sha256:{len(lines) + 1}: path {entry!r} is not a relative path "
            f"inside the directory; refusing to use this manifest") in r.stderr
    assert victim.read_text() == "the user's\n"
    assert _files(root) == before


def test_pruning_removes_only_directories_that_held_only_sgl_gens_files(tmp_path):
    """Two nodes, then one: node1's files are stale and go, and so do the directories they
    alone filled; a foreign file keeps its directory, and a user's empty directory stays."""
    big = _topo(tmp_path / "a", "prune", engines=2, gpus_per_node=1)
    small = _topo(tmp_path / "b", "prune", engines=1, gpus_per_node=1)
    out = tmp_path / "out"
    assert run_cli("render", str(big), "-o", str(out)).exit_code == 0
    root = out / "prune"
    (root / "hosts/node1/notes.txt").write_text("mine\n")
    (root / "hosts/node0/mine").mkdir()
    (root / "hosts/node1/bin/mine").mkdir()
    r = run_cli("render", str(small), "-o", str(out))
    assert r.exit_code == 0, r.output
    assert f"stale     {root}/hosts/node1/bin/engine-m-regular-1.sh" in r.stdout
    assert f"foreign   {root}/hosts/node1/notes.txt" in r.stdout
    assert (root / "hosts/node1/notes.txt").read_text() == "mine\n"
    assert (root / "hosts/node0/mine").is_dir()
    assert (root / "hosts/node1/bin/mine").is_dir()  # the user's: it keeps bin/ too
    assert not (root / "hosts/node1/systemd").exists()  # sgl-gen's files only: pruned
    assert sorted(p.relative_to(root).as_posix() for p in (root / "hosts/node1").rglob("*")) \
        == ["hosts/node1/bin", "hosts/node1/bin/mine", "hosts/node1/notes.txt"]


def test_a_write_that_fails_midway_leaves_every_file_of_sgl_gens_listed(tmp_path, monkeypatch):
    """The manifest on disk lists every sgl-gen file on disk at every moment: written first,
    keeping a stale file's entry until the file is gone. After a crash the next render still
    knows its files (and neither refuses nor leaves a stale file behind as foreign)."""
    big = _topo(tmp_path / "a", "crash", engines=2, gpus_per_node=1)
    small = _topo(tmp_path / "b", "crash", engines=1, gpus_per_node=1)
    out = tmp_path / "out"
    root = out / "crash"
    assert run_cli("render", str(big), "-o", str(out)).exit_code == 0
    real = write_mod._atomic_write
    for fail_at in range(1, 6):  # the n-th file write fails (disk full)
        assert run_cli("render", str(big), "-o", str(out)).exit_code == 0
        calls = []

        def failing(path, data, mode, umask, fail_at=fail_at, calls=calls):
            calls.append(path)
            if len(calls) == fail_at:
                raise OSError(28, "No space left on device", path)
            return real(path, data, mode, umask)

        monkeypatch.setattr(write_mod, "_atomic_write", failing)
        r = run_cli("render", str(small), "-o", str(out))
        monkeypatch.setattr(write_mod, "_atomic_write", real)
        assert r.exit_code == 1 and "No space left on device" in r.stderr, r.output
        on_disk = set(_files(root))
        assert on_disk - _listed(root) == {MANIFEST}, fail_at
        r = run_cli("render", str(small), "-o", str(out))
        assert r.exit_code == 0, r.output
        assert "foreign" not in r.stdout
        fresh = tmp_path / f"fresh{fail_at}"
        assert run_cli("render", str(small), "-o", str(fresh)).exit_code == 0
        assert _files(root) == _files(fresh / "crash")


def test_write_tree_without_a_manifest_artifact_writes_its_own(tmp_path):
    """Any caller of write_tree gets ownership: a manifest is added when the artifacts lack
    one, and the next write knows what it wrote."""
    plan = compile_plan(EXAMPLES / "basic.yaml")
    arts = {k: v for k, v in render(plan, ("bash",)).items() if k != MANIFEST}
    root = tmp_path / "t"
    write_tree(root, arts)
    assert _listed(root) == set(arts)
    (root / "mine.txt").write_text("x\n")
    changes = write_tree(root, dict(list(arts.items())[1:]))
    gone = next(iter(arts))
    assert {(c.action, c.path) for c in changes if c.action not in ("identical",)} == {
        ("stale", gone), ("update", MANIFEST), ("foreign", "mine.txt")}
    assert not (root / gone).exists() and (root / "mine.txt").exists()


# --- --local: the interpreter ------------------------------------------------------------------

def test_render_local_defaults_to_the_interpreter_running_sgl_gen(tmp_path):
    topo = _topo(tmp_path, "interp")
    for local, python in ((True, sys.executable), (False, "python3")):
        out = tmp_path / f"out-{local}"
        r = run_cli("render", str(topo), "-o", str(out), *(["--local"] if local else []))
        assert r.exit_code == 0, r.output
        bin_dir = out / "interp/hosts/node0/bin"
        for script, module in (("engine-m-regular-0.sh", "sglang.launch_server"),
                               ("router-m.sh", "sglang_router.launch_router")):
            assert f"exec {shlex.quote(python)} -m {module} " in (bin_dir / script).read_text()
    # runtime.python, when given, wins over the default
    r = run_cli("render", str(topo), "-o", str(tmp_path / "set"), "--local",
                "--set", "runtime.python=/opt/venv/bin/python")
    assert r.exit_code == 0, r.output
    text = (tmp_path / "set/interp/hosts/node0/bin/router-m.sh").read_text()
    assert "exec /opt/venv/bin/python -m sglang_router.launch_router " in text


# --- up --local --------------------------------------------------------------------------------

@pytest.fixture
def downs():
    """Stop every `up` a test started (also one that should have been refused)."""
    started: list[tuple[Path, Path]] = []
    yield lambda topo, out: started.append((topo, out))
    for topo, out in started:
        run_cli("down", str(topo), "--local", "-o", str(out))


def _stub_python3(tmp_path: Path, monkeypatch) -> None:
    """PATH's python3 (and python) cannot run anything: as in a shell where sgl-gen was installed
    with pipx, or into a venv that is not activated."""
    stub = tmp_path / "stub-bin"
    stub.mkdir()
    for name in ("python3", "python"):
        p = stub / name
        p.write_text("#!/bin/sh\necho 'stub python3 from PATH: No module named sglang_router' >&2\n"
                     "exit 97\n")
        p.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stub}:{os.environ['PATH']}")


def _generate(url: str) -> dict:
    req = urllib.request.Request(f"{url}/generate", method="POST", data=json.dumps(
        {"text": "hi", "sampling_params": {"max_new_tokens": 1}}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["sgl_gen"]


@pytest.mark.slow
def test_up_local_works_when_python3_on_path_lacks_the_router(tmp_path, monkeypatch, downs):
    _stub_python3(tmp_path, monkeypatch)
    topo = _topo(tmp_path, "venvless")
    out = tmp_path / "out"
    downs(topo, out)
    r = run_cli("up", str(topo), "--local", "--rehearse", "-o", str(out), "--timeout", "60")
    assert r.exit_code == 0, r.output
    assert _generate("http://127.0.0.1:30950")["engine_id"] == "m-regular-0"
    state = out / ".run/venvless/node0"
    assert f"exec {shlex.quote(sys.executable)} " in (
        state / "bin/router-m.sh").read_text()


@pytest.mark.slow
def test_up_local_installs_only_sgl_gens_files_and_keeps_the_rest(tmp_path, downs):
    """The state dir DIR/.run/<deployment>/<host>/ follows render's rules: only files the
    render's manifest lists are installed (a foreign file in the rendered tree is not smuggled
    in); the state dir has its own manifest; a unit that is gone is removed; logs and foreign
    files stay."""
    two = _topo(tmp_path / "a", "own", engines=2)
    one = _topo(tmp_path / "b", "own", engines=1)
    out = tmp_path / "out"
    downs(one, out)
    downs(two, out)
    assert run_cli("render", str(two), "--local", "--rehearse", "-o", str(out)).exit_code == 0
    extra = out / "own/hosts/node0/bin/extra.sh"
    extra.write_text("#!/bin/sh\necho smuggled\n")
    r = run_cli("up", str(two), "--local", "--rehearse", "-o", str(out), "--timeout", "60")
    assert r.exit_code == 0, r.output
    state = out / ".run/own/node0"
    assert not (state / "bin/extra.sh").exists()
    assert f"foreign   {extra}" in r.output
    assert {"sgl-gen-host.sh", "bin/engine-m-regular-1.sh"} <= _listed(state)
    assert "bin/extra.sh" not in _listed(state)
    assert run_cli("down", str(two), "--local", "-o", str(out)).exit_code == 0

    (state / "notes.txt").write_text("mine\n")
    log = state / "logs/engine-m-regular-1.log"
    assert log.exists()
    r = run_cli("up", str(one), "--local", "--rehearse", "-o", str(out), "--timeout", "60")
    assert r.exit_code == 0, r.output
    assert not (state / "bin/engine-m-regular-1.sh").exists()  # stale: sgl-gen's, removed
    assert (state / "notes.txt").read_text() == "mine\n"
    assert log.exists()  # logs are never sgl-gen's to remove
    assert "bin/engine-m-regular-1.sh" not in _listed(state)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["foreign-files", "symlinked-host-dir", "symlinked-run-dir"])
def test_up_local_refuses_a_state_dir_that_is_not_sgl_gens(tmp_path, downs, case):
    topo = _topo(tmp_path, "refuse")
    out = tmp_path / "out"
    downs(topo, out)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if case == "foreign-files":
        state = out / ".run/refuse/node0"
        state.mkdir(parents=True)
        (state / "notes.txt").write_text("mine\n")
        (state / "sgl-gen-host.sh").write_text("echo not sgl-gen's; exit 1\n")
        expect = f"{state}: not empty and has no MANIFEST.sha256"
        before = _files(state)
    else:
        link = out / ".run/refuse/node0" if case == "symlinked-host-dir" else out / ".run"
        link.parent.mkdir(parents=True)
        link.symlink_to(elsewhere)
        expect = f"{link}: is a symlink; sgl-gen does not write through symlinks"
    r = run_cli("up", str(topo), "--local", "--rehearse", "-o", str(out), "--timeout", "30")
    assert r.exit_code == 1, r.output
    assert expect in r.output
    assert "Traceback" not in r.output
    if case == "foreign-files":
        assert _files(state) == before
    assert list(elsewhere.iterdir()) == []
    # nothing was started: nothing listens on the router's or the engine's port
    for port in (30950, 31950):
        with socket.socket() as s:
            s.settimeout(1)
            assert s.connect_ex(("127.0.0.1", port)) != 0, port


def test_the_manifest_render_writes_matches_the_files(tmp_path):
    """(The ownership rules rest on it) every file but the manifest is listed, with its sha256,
    and modes are 0644 / 0755."""
    assert run_cli("render", str(EXAMPLES / "pd.yaml"), "-o", str(tmp_path)).exit_code == 0
    root = tmp_path / "pd"
    files = _files(root)
    header, *lines = (root / MANIFEST).read_text().splitlines()
    assert header == write_mod.MANIFEST_HEADER
    listed = dict(reversed(line.split("  ", 1)) for line in lines)
    assert set(listed) == set(files) - {MANIFEST}
    assert all(hashlib.sha256(files[p]).hexdigest() == d for p, d in listed.items())
    assert {stat.S_IMODE((root / p).stat().st_mode) for p in files} <= {0o644, 0o755}


def test_golden_check_counts_a_foreign_file_and_refresh_keeps_it(tmp_path, monkeypatch, capsys):
    from generator.devtools import golden

    plan = compile_plan(EXAMPLES / "basic.yaml")
    arts = render(plan, ("bash", "systemd"))
    monkeypatch.setattr(golden, "OUT", tmp_path)
    monkeypatch.setattr(golden, "ROOT", tmp_path)
    monkeypatch.setattr(golden, "example_renders",
                        lambda: {"basic": (EXAMPLES / "basic.yaml", arts)})
    write_tree(tmp_path / "basic", arts)
    assert golden.check() == 0
    (tmp_path / "basic" / "notes.md").write_text("mine\n")
    capsys.readouterr()
    assert golden.check() == 1
    assert f"foreign: {tmp_path}/basic/notes.md" in capsys.readouterr().out
    golden.refresh()
    assert f"kept {tmp_path}/basic/notes.md: not sgl-gen's" in capsys.readouterr().out
    assert (tmp_path / "basic" / "notes.md").read_text() == "mine\n"
    (tmp_path / "basic" / MANIFEST).unlink()
    assert golden.check() == 1
    assert "not empty and has no MANIFEST.sha256" in capsys.readouterr().out


# -- F1: only a manifest sgl-gen wrote makes files sgl-gen's; an edited stale file is kept --


def test_a_sha256sum_manifest_of_user_files_is_not_sgl_gens(tmp_path):
    """(F1) `sha256sum ... > MANIFEST.sha256` in a directory of the user's does not make its
    files sgl-gen's: the render refuses (exit 1, names the manifest, hint) and deletes nothing,
    also with --check; the digests all match, so only the header tells the two apart."""
    topo = _topo(tmp_path, "rt")
    root = tmp_path / "out" / "rt"
    root.mkdir(parents=True)
    (root / "model-00001.safetensors").write_bytes(os.urandom(1000))
    (root / "config.json").write_text("{}\n")
    listing = "".join(f"{hashlib.sha256((root / n).read_bytes()).hexdigest()}  {n}\n"
                      for n in ("model-00001.safetensors", "config.json"))
    (root / MANIFEST).write_text(listing)
    before = _files(root)
    for extra in ((), ("--check",)):
        r = run_cli("render", str(topo), "-o", str(tmp_path / "out"), *extra)
        assert r.exit_code == 1, r.output
        assert "\n".join(not_warnings(r.stderr)).startswith(
            f"{root}/{MANIFEST}:1: does not start with '{write_mod.MANIFEST_HEADER}'; refusing "
            f"to treat its files as sgl-gen's (hint: ")
        assert "render into a new directory" in r.stderr and "Traceback" not in r.output
        assert _files(root) == before


def test_the_manifest_is_sha256sum_compatible(tmp_path):
    """The header is a '#' line: GNU `sha256sum -c --strict` checks the manifest as it is."""
    import shutil
    import subprocess

    if shutil.which("sha256sum") is None:
        pytest.skip("no sha256sum")
    assert run_cli("render", str(EXAMPLES / "basic.yaml"), "-o", str(tmp_path)).exit_code == 0
    r = subprocess.run(["sha256sum", "-c", "--strict", "--quiet", MANIFEST],
                       cwd=tmp_path / "basic", capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp_path / "basic" / "README.md").write_text("edited\n")
    r = subprocess.run(["sha256sum", "-c", "--strict", "--quiet", MANIFEST],
                       cwd=tmp_path / "basic", capture_output=True, text=True)
    assert r.returncode == 1 and "README.md: FAILED" in r.stdout


def test_a_stale_file_edited_since_it_was_rendered_is_kept_as_modified(tmp_path):
    """(F1) A file an earlier render wrote and this one no longer writes is removed only while
    it is byte-for-byte what sgl-gen wrote; edited, it is the user's: kept, reported
    `modified`, dropped from the manifest (the next render calls it `foreign`)."""
    out = tmp_path / "out"
    two = _topo(tmp_path / "a", "rt", engines=2)
    one = _topo(tmp_path / "b", "rt", engines=1)
    assert run_cli("render", str(two), "-o", str(out)).exit_code == 0
    root = out / "rt"
    gone = sorted((root / "hosts/node0/bin").glob("engine-*-1.sh"))
    assert len(gone) == 1
    edited = gone[0]
    edited.write_text(edited.read_text() + "# my note\n")
    rel = edited.relative_to(root).as_posix()
    assert rel in _listed(root)
    r = run_cli("render", str(one), "-o", str(out), "--check")
    assert r.exit_code == 1
    assert f"modified  {edited}" in r.stdout.splitlines()
    r = run_cli("render", str(one), "-o", str(out))
    assert r.exit_code == 0, r.output
    assert f"modified  {edited}" in r.stdout.splitlines()
    assert edited.read_text().endswith("# my note\n")
    assert rel not in _listed(root)
    r = run_cli("render", str(one), "-o", str(out))
    assert r.exit_code == 0
    assert f"foreign   {edited}" in r.stdout.splitlines()
    assert edited.read_text().endswith("# my note\n")


def test_a_header_less_manifest_is_adopted_only_by_golden(tmp_path, monkeypatch, capsys):
    """Migration: a render of the sgl-gen before manifest format 1 (no header) is refused by
    render (hint: render anew); golden refresh, whose out/ is sgl-gen's own tree, adopts it
    and writes the header."""
    from generator.devtools import golden

    plan = compile_plan(EXAMPLES / "basic.yaml")
    arts = render(plan, ("bash", "systemd"))
    root = tmp_path / "basic"
    write_tree(root, arts)
    manifest = root / MANIFEST
    manifest.write_text(manifest.read_text().split("\n", 1)[1])  # as the older sgl-gen wrote
    before = _files(root)
    with pytest.raises(write_mod.SglGenError, match="does not start with"):
        write_tree(root, arts)
    assert _files(root) == before
    monkeypatch.setattr(golden, "OUT", tmp_path)
    monkeypatch.setattr(golden, "ROOT", tmp_path)
    monkeypatch.setattr(golden, "example_renders",
                        lambda: {"basic": (EXAMPLES / "basic.yaml", arts)})
    assert golden.check() == 1
    assert f"update: {manifest}" in capsys.readouterr().out
    golden.refresh()
    assert manifest.read_text().split("\n", 1)[0] == write_mod.MANIFEST_HEADER
    assert golden.check() == 0
    assert write_tree(root, arts)  # and render accepts it again


# -- F10: a mode change never reaches through a hard link --


def test_a_mode_change_does_not_chmod_through_a_hard_link(tmp_path):
    """(F10) README.md replaced by a hard link to a private file elsewhere (same content, mode
    0600): the render's `mode` change rewrites the path (a new inode, 0644); the other file
    keeps its mode and content."""
    ex = str(EXAMPLES / "basic.yaml")
    out = tmp_path / "out"
    assert run_cli("render", ex, "-o", str(out)).exit_code == 0
    readme = out / "basic" / "README.md"
    private = tmp_path / "private.md"
    private.write_bytes(readme.read_bytes())
    private.chmod(0o600)
    readme.unlink()
    os.link(private, readme)
    r = run_cli("render", ex, "-o", str(out))
    assert r.exit_code == 0, r.output
    assert f"mode      {readme}" in r.stdout.splitlines()
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.stat().st_nlink == 1
    assert stat.S_IMODE(readme.stat().st_mode) == 0o644
    assert readme.read_bytes() == private.read_bytes()


# -- F17: deploy OUT_DIR reads the manifest as render does --


def test_deploy_out_dir_uses_exactly_the_listed_files(tmp_path, capsys):
    """(F17) target_from_dir: a foreign file render kept (beside plan.json, or inside
    hosts/<host>/) is reported on stderr and is in no host's upload; a manifest without the
    header is refused with the parser render uses."""
    from generator.deploy import target_from_dir

    ex = str(EXAMPLES / "ssh-4hosts.yaml")
    assert run_cli("render", ex, "-o", str(tmp_path)).exit_code == 0
    root = tmp_path / "ssh-4hosts"
    host = sorted(p.name for p in (root / "hosts").iterdir())[0]
    (root / "NOTES.txt").write_text("mine\n")
    (root / "hosts" / host / "NOTES.txt").write_text("mine\n")
    (root / "hosts" / host / "bin" / "extra.sh").write_text("#!/bin/sh\nid\n")
    r = run_cli("render", ex, "-o", str(tmp_path))
    assert r.exit_code == 0 and f"foreign   {root}/NOTES.txt" in r.stdout.splitlines()
    capsys.readouterr()
    target = target_from_dir(root)
    err = capsys.readouterr().err
    for rel in ("NOTES.txt", f"hosts/{host}/NOTES.txt", f"hosts/{host}/bin/extra.sh"):
        assert (f"{root}/{rel}: warning: not in MANIFEST.sha256 (not sgl-gen's): ignored, not "
                f"uploaded") in err
    uploaded = {f"hosts/{h.host}/{rel}" for h in target.hosts for rel in h.files}
    listed = {r for r in _listed(root) if r.startswith("hosts/")}
    assert uploaded == listed
    manifest = root / MANIFEST
    manifest.write_text(manifest.read_text().split("\n", 1)[1])
    with pytest.raises(write_mod.SglGenError, match=r"MANIFEST.sha256:1: does not start with"):
        target_from_dir(root)
