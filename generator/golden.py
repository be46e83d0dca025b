"""Committed renders of every example (``out/``): check, refresh, add.

``check`` fails when an example has no committed render or when a committed render differs from a
fresh one (with a unified diff); ``refresh`` rewrites the existing ones; ``add`` creates one for a
new example. Refresh never creates a missing render: a new golden is a deliberate act.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

from generator.paths import EXAMPLES, ROOT
from generator.pipeline import compile_plan
from generator.render import Artifact, default_targets, render
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
        for c in diff_tree(root, arts):
            if c.action == "identical":
                continue
            problems += 1
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
        changes = [c for c in write_tree(root, arts) if c.action != "identical"]
        print(f"{root.relative_to(ROOT)}: {len(changes)} file(s) changed")


def main(argv: list[str]) -> int:
    if argv[:1] == ["check"]:
        return 1 if check() else 0
    if argv[:1] == ["refresh"]:
        refresh()
        return 0
    if argv[:1] == ["add"] and len(argv) == 2:
        refresh(add=argv[1])
        return 0
    print("usage: python -m generator.golden check | refresh | add EXAMPLE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
