"""The ``Authorization`` header of sgl-gen's own calls to a router started with ``--api-key``.

A router whose argv has ``--api-key {env: NAME}`` answers ``GET /workers`` (and every other
non-health path) with 401 without ``Authorization: Bearer <key>`` (sglang-router 0.3.2, smg 1.13).
The key is read where the router runs, the way its unit script reads it: the environment, then
``runtime.secrets_env_file`` sourced by bash (``set -a; . FILE``), so a value in that file wins.
The value travels only through a pipe from that bash into this process: never in argv, a file, a
log or an SSH command line.

This file runs on the hosts too: deploy.py puts its source in front of its host-side programs
(``python -c``), so it imports nothing but the standard library and has no top-level effects.
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

# bash does the reading so that quoting, `export`, comments and `$OTHER` references in the file
# mean what they mean to the unit scripts; the file is sourced only when readable, as they do
_READ = ('if [[ -n "$1" && -r "$1" ]]; then set -a; . "$1" >/dev/null 2>&1 </dev/null; set +a; fi; '
         'printf %s "${!2-}"')
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def api_key_env(argv: Any) -> str | None:
    """The variable a router reads ``--api-key`` from: the plan's router argv holds it as
    ``{"env": NAME}`` (plan.json) or an object with ``.name`` (an EnvRef); None without one."""
    tokens = list(argv or ())
    for i, flag in enumerate(tokens[:-1]):
        if flag == "--api-key":
            value = tokens[i + 1]
            name = value.get("env") if isinstance(value, dict) else getattr(value, "name", None)
            return name if isinstance(name, str) and _ENV_NAME.fullmatch(name) else None
    return None


def router_api_key(env: str | None, secrets_env_file: str | None) -> str:
    """The value of the router's ``--api-key`` here ("" when it has none or it is unset)."""
    if not env or not _ENV_NAME.fullmatch(env):
        return ""
    try:
        r = subprocess.run(["bash", "-c", _READ, "sgl-gen-router-auth", secrets_env_file or "",
                            env], capture_output=True, stdin=subprocess.DEVNULL, timeout=30,
                           check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    # latin-1 maps each byte to one character, which http.client sends back as that byte
    return r.stdout.decode("latin-1")


def router_auth(env: str | None, secrets_env_file: str | None) -> dict[str, str]:
    """The headers that authenticate sgl-gen to the router: ``{}`` when the router has no
    ``--api-key`` or its variable is empty here (the router then answers 401, and the caller
    reports that)."""
    value = router_api_key(env, secrets_env_file)
    return {"Authorization": "Bearer " + value} if value else {}
