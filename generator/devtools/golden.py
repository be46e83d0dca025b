"""Committed renders of every example (``out/``): check, refresh, add.

``check`` fails when an example has no committed render or when a committed render differs from a
fresh one (with a unified diff; a file there that is not sgl-gen's counts too); ``refresh``
rewrites the existing ones (keeping, and naming, files that are not sgl-gen's; adopting a
manifest written before manifest format 1, since out/ is sgl-gen's own tree); ``add`` creates
one for a new example. Refresh never creates a missing render: a new golden is a deliberate act.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

from generator.compile.pipeline import compile_plan
from generator.errors import SglGenError
from generator.paths import EXAMPLES, ROOT
from generator.targets.render import Artifact, default_targets, render
from generator.write import diff_tree, write_tree

OUT = ROOT / "out"


def example_renders() -> dict[str, tuple[Path, dict[str, Artifact]]]:
    """deployment name -> (example file, artifacts) for every example."""
    out: dict[str, tuple[Path, dict[str, Artifact]]] = {}
    for ex in sorted(EXAMPLES.glob("*.yaml")):
        plan = compile_plan(ex)
        targets = default_targets(plan)
        if plan.name in out:
            raise SystemExit(f"{ex}: deployment name {plan.name!r} is used by two examples")
        out[plan.name] = (ex, render(plan, targets))
    return out


def check() -> int:
    """Print every difference; return the number of stale files or missing renders."""
    problems = 0
    renders = example_renders()
    for name, (ex, arts) in renders.items():
        root = OUT / name
        if not root.is_dir():
            print(f"missing golden {root} for {ex.relative_to(ROOT)}: run "
                  f"make golden-add EXAMPLE={ex.relative_to(ROOT)}")
            problems += 1
            continue
        try:
            # (out/ is sgl-gen's own tree: a manifest of an sgl-gen before the header counts)
            changes = diff_tree(root, arts, adopt_legacy=True)
        except SglGenError as exc:  # a file in the way, a manifest it cannot trust...
            print(exc.message)
            problems += 1
            continue
        for c in changes:
            if c.action == "identical":
                continue
            problems += 1
            # (a foreign file too: out/ holds nothing but the renders, and refresh keeps it)
            print(f"{c.action}: {root / c.path}")
            if c.action == "update":
                old = (root / c.path).read_text(encoding="utf-8", errors="replace")
                sys.stdout.writelines(difflib.unified_diff(
                    old.splitlines(keepends=True), arts[c.path].content.splitlines(keepends=True),
                    f"committed/{c.path}", f"rendered/{c.path}"))
    for d in sorted(OUT.iterdir()) if OUT.is_dir() else []:
        if d.is_dir() and d.name not in renders:
            print(f"stale golden {d}: no example renders it")
            problems += 1
    if problems:
        print(f"{problems} problem(s); refresh with: make golden (then review git diff)")
    else:
        print(f"out/ is current: {len(renders)} example render(s)")
    return problems


def refresh(add: str | None = None) -> None:
    """Rewrite existing goldens (or create the one for ``add``)."""
    for name, (ex, arts) in example_renders().items():
        root = OUT / name
        if add is None and not root.is_dir():
            print(f"skipped {ex.relative_to(ROOT)}: no golden yet (make golden-add EXAMPLE=...)")
            continue
        if add is not None and Path(add).resolve() != ex.resolve():
            continue
        try:
            done = write_tree(root, arts, adopt_legacy=True)
        except SglGenError as exc:
            raise SystemExit(exc.message) from None
        changes = [c for c in done if c.action not in ("identical", "foreign", "modified")]
        print(f"{root.relative_to(ROOT)}: {len(changes)} file(s) changed")
        for c in done:
            if c.action == "foreign":
                print(f"  kept {root / c.path}: not sgl-gen's (remove it by hand)")
            elif c.action == "modified":
                print(f"  kept {root / c.path}: no longer rendered, but edited since sgl-gen "
                      f"wrote it (remove it by hand)")


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:
        return 1 if check() else 0
    if argv[:1] == ["refresh"]:
        refresh()
        return 0
    if argv[:1] == ["add"] and len(argv) == 2:
        refresh(add=argv[1])
        return 0
    print("usage: python -m generator.devtools.golden check | refresh | add EXAMPLE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
