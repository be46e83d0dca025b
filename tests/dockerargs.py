"""The options of `docker run` and `podman run`, read from the real clients' own `run --help`,
and a check of an argv against them: what tests use where no docker daemon with NVIDIA's
runtime exists (docker's `--gpus` needs it to run at all), so that the argv sgl-gen emits is at
least one the client parses as meant: every option known, every value where one is due, the
image where it is expected."""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache

#: "  -v, --volume list      Bind mount..." / "      --rm       Automatically...": a value
#: type follows the long name after one space (list, string, gpu-request, stringArray...)
_LINE = re.compile(r"^\s+(?:(-[A-Za-z0-9]), )?(--[A-Za-z0-9][A-Za-z0-9-]*)(?: ([a-zA-Z][\w-]*))?(?:\s{2,}|$)")


@cache
def options(kind: str) -> dict[str, bool]:
    """Every option of ``<kind> run`` (long and short names) -> whether it takes a value."""
    if shutil.which(kind) is None:
        raise FileNotFoundError(f"{kind} is not installed")
    text = subprocess.run([kind, "run", "--help"], capture_output=True, text=True, timeout=60,
                          check=True).stdout
    out: dict[str, bool] = {}
    for line in text.splitlines():
        m = _LINE.match(line)
        if m:
            short, long, value = m.groups()
            takes = value is not None
            out[long] = takes
            if short:
                out[short] = takes
    if len(out) < 50:
        raise RuntimeError(f"{kind} run --help: only {len(out)} options read; has its format "
                           "changed?")
    return out


def check(kind: str, argv: list[str]) -> tuple[list[tuple[str, str | None]], str, list[str]]:
    """``[kind, "run", OPTIONS..., IMAGE, COMMAND...]`` -> (options with their values, image,
    command), as the client parses it; ValueError on an unknown option or a missing value."""
    if argv[:2] != [kind, "run"]:
        raise ValueError(f"not a `{kind} run` argv: {argv[:2]}")
    known = options(kind)
    opts: list[tuple[str, str | None]] = []
    i = 2
    while i < len(argv) and argv[i].startswith("-"):
        tok = argv[i]
        name, eq, inline = tok.partition("=")
        if name not in known:
            raise ValueError(f"{kind} run: unknown option {name!r} (argv[{i}])")
        if known[name] and not eq:
            if i + 1 >= len(argv):
                raise ValueError(f"{kind} run: {name} needs a value")
            opts.append((name, argv[i + 1]))
            i += 2
            continue
        opts.append((name, inline if eq else None))
        i += 1
    if i >= len(argv):
        raise ValueError(f"{kind} run: no image after the options")
    return opts, argv[i], argv[i + 1:]
