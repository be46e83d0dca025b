"""The layout is the architecture (README "Architecture"): one folder per layer, no import
cycles, every module importable on its own, no module that has grown into several things.

The import graph is read from the sources with ``ast`` (module-level and function-level imports
alike), so a lazy import inside a function cannot hide a cycle or a layer violation.
"""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "generator"

#: modules allowed over MAX_LINES, and why
LONG_MODULES = {
    # the rehearsal engine is copied to hosts as one stdlib-only file (lib/rehearsal.py): it
    # cannot be split into a package
    "generator.rehearsal": "shipped to hosts as a single stdlib file",
    # the host agent runs on hosts as one stdlib-only program (python -c <its source>)
    "generator.hostagent": "runs on hosts as a single stdlib file",
    # the Slurm job's supervisor is shipped next to the sbatch as one stdlib-only file
    # (slurm/lib/sgljob.py) and runs with the job's python, where sgl-gen is not installed
    "generator.slurmjob": "shipped to Slurm jobs as a single stdlib file",
}
MAX_LINES = 650

#: layer -> the layers it must not import (README "Architecture"). generator.errors,
#: generator.paths and the package itself are the shared base every layer may use.
FORBIDDEN = {
    "generator.compile": ("generator.targets", "generator.cli", "generator.bridges",
                          "generator.deploy", "generator.local", "generator.devtools",
                          "generator.write", "generator.redact", "generator.routerauth",
                          "generator.hostagent"),
    "generator.targets": ("generator.cli", "generator.bridges", "generator.deploy",
                          "generator.local", "generator.write", "generator.devtools"),
    "generator.errors": ("generator.",),  # the base imports nothing of generator but paths
    "generator.paths": ("generator.",),
    "generator.rehearsal": ("generator.",),  # a stdlib-only leaf (shipped to hosts)
    "generator.hostagent": ("generator.",),  # a stdlib-only leaf (its source runs on the hosts)
}
#: what the base modules may import after all
BASE_ALLOWED = {"generator.errors": {"generator.paths"}, "generator.paths": {"generator.errors"}}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> set[str]:
    """The generator modules ``name`` imports anywhere in its source; ``from generator.x import
    y`` counts as generator.x.y when y is a module, else as generator.x."""
    path = MODULES[name]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "generator")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if _is_package(name) else name.split(".")[:-1]
                pkg = pkg[:len(pkg) - node.level + 1]
                base = ".".join(pkg + ([base] if base else []))
            if base.split(".")[0] != "generator":
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in MODULES else base)
    # ``import generator.x.y`` also imports the packages above it; the graph keeps the module
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports(name) for name in MODULES}


def _cycle() -> list[str] | None:
    """One import cycle of GRAPH (package __init__ imports of its parent count too), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(GRAPH[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(GRAPH):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_the_graph_sees_the_imports() -> None:
    """The graph is not vacuous: known edges, a lazy (function-level) one included."""
    assert "generator.compile.model" in GRAPH["generator.compile.pipeline"]
    assert "generator.cli.common" in GRAPH["generator.cli.compile"]
    assert "generator.local" in GRAPH["generator.cli.local"]  # imported inside `up`
    assert "generator.deploy" in GRAPH["generator.cli.deploy"]  # `from generator import deploy`


def test_no_import_cycle() -> None:
    # breaks when, e.g., targets/common.py imports targets/render.py (render imports common), or
    # compile/validate.py imports compile/resolve.py again (resolve imports validate)
    cycle = _cycle()
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _in(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


def test_layer_rules() -> None:
    # breaks when, e.g., compile/resolve.py imports generator.targets, or a target imports
    # generator.write, or errors.py imports compile/resolve.py
    problems = []
    for name, deps in sorted(GRAPH.items()):
        for layer, forbidden in FORBIDDEN.items():
            if not _in(name, layer):
                continue
            for dep in sorted(deps - BASE_ALLOWED.get(name, set())):
                if any(dep.startswith(f) if f.endswith(".") else _in(dep, f) for f in forbidden):
                    problems.append(f"{name} imports {dep} ({layer} must not)")
        for dep in sorted(deps):
            # devtools run by hand (make outcheck, golden, extract): no command imports them
            if _in(dep, "generator.devtools") and not _in(name, "generator.devtools"):
                problems.append(f"{name} imports {dep} (devtools are not imported at run time)")
            # the CLI is the top: nothing below imports it (its own package aside)
            if _in(dep, "generator.cli") and not _in(name, "generator.cli"):
                problems.append(f"{name} imports {dep} (nothing imports the CLI)")
            # inside the CLI, common is the bottom and the package (main) the top
            if name == "generator.cli.common" and _in(dep, "generator.cli"):
                problems.append(f"{name} imports {dep} (cli.common imports nothing of cli)")
            if name.startswith("generator.cli.") and dep == "generator.cli" \
                    and name != "generator.cli.__main__":
                problems.append(f"{name} imports {dep} (command modules do not import main)")
            # write.py, the one writer, takes only the Artifact type and the manifest format
            if name == "generator.write" and _in(dep, "generator.targets") \
                    and dep not in ("generator.targets.common", "generator.targets.manifest"):
                problems.append(f"{name} imports {dep} (write needs only Artifact, manifest)")
    assert not problems, "\n".join(problems)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


IMPORTABLE = sorted(n for n in MODULES if n != "generator.cli.__main__")  # __main__ runs main()


def test_every_module_imports_on_its_own() -> None:
    # breaks when a module only imports after another one did (a cycle resolved by luck of
    # order: `from generator.targets.render import x` at the top of targets/common.py)
    failed = []
    for start in range(0, len(IMPORTABLE), 4):  # a fresh interpreter per module, 4 at a time
        procs = [(name, subprocess.Popen([sys.executable, "-c", f"import {name}"], cwd=REPO,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         text=True))
                 for name in IMPORTABLE[start:start + 4]]
        for name, proc in procs:
            _, err = proc.communicate(timeout=120)
            if proc.returncode:
                failed.append(f"{name}:\n{err.strip()}")
    assert not failed, "\n\n".join(failed)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_modules_import_in_shuffled_orders(seed: int) -> None:
    order = list(IMPORTABLE)
    random.Random(seed).shuffle(order)
    r = _run("import importlib\n"
             f"for n in {order!r}:\n"
             "    importlib.import_module(n)\n")
    assert r.returncode == 0, f"order {order}:\n{r.stderr}"


def test_no_module_is_several_things() -> None:
    # breaks when a module grows past MAX_LINES (e.g. the wheel extractor back in
    # compile/catalog.py): split it into coherent modules, or add it here with a reason
    long = {name: len(path.read_text(encoding="utf-8").splitlines())
            for name, path in MODULES.items()}
    over = {n: c for n, c in long.items() if c > MAX_LINES and n not in LONG_MODULES}
    assert not over, f"modules over {MAX_LINES} lines: {over}"
    stale = [n for n in LONG_MODULES if n not in MODULES or long[n] <= MAX_LINES]
    assert not stale, f"allowlisted but not long (drop them from LONG_MODULES): {stale}"


def test_no_module_imports_another_modules_private_names() -> None:
    # breaks when, e.g., targets/slurm.py goes back to `from generator.targets.common import
    # _tmpl`: what layers share is public (tests may reach into privates; generator may not)
    problems = []
    for name, path in sorted(MODULES.items()):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("generator"):
                problems += [f"{name}: from {node.module} import {a.name}"
                             for a in node.names if a.name.startswith("_")
                             and a.name != "__version__"]
    assert not problems, "\n".join(problems)
