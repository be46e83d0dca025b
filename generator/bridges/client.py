"""Client helpers for code that talks to a rendered deployment (a trainer, an agent loop).

``endpoints`` is the content of ``endpoints.json`` (or of ``endpoints-<jobid>.json`` on Slurm), or
slime's ``sglang_model_routers`` mapping ``{model: (ip, port)}``. Unlike slime's helper of the same
name, an unknown model is an error, never a silent fall back to another model's router.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: the header smg's consistent_hashing policy reads the routing key from (case-insensitive)
ROUTING_KEY_HEADER = "X-SMG-Routing-Key"


class UnknownModelError(KeyError):
    """The model is not served by this deployment."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def load_endpoints(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _router_base(endpoints: Mapping[str, Any], model: str) -> str:
    models = endpoints.get("models") if isinstance(endpoints.get("models"), Mapping) else endpoints
    assert isinstance(models, Mapping)
    entry = models.get(model)
    if entry is None:
        known = ", ".join(sorted(str(k) for k in models)) or "none"
        raise UnknownModelError(f"unknown model {model!r} (models: {known})")
    if isinstance(entry, Mapping):
        return str(entry["router"]).rstrip("/")
    host, port = entry  # slime's (ip, port)
    host = f"[{host}]" if ":" in str(host) else str(host)
    return f"http://{host}:{int(port)}"


def get_model_url(endpoints: Mapping[str, Any], model: str, path: str = "") -> str:
    """The URL of ``path`` on ``model``'s router, e.g. ``get_model_url(ep, "actor", "/generate")``.

    Raises UnknownModelError for a model the deployment does not serve, ValueError for a path that
    does not start with ``/``.
    """
    if path and not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")
    return _router_base(endpoints, model) + path


def routing_headers(session_id: str | int) -> dict[str, str]:
    """Headers that keep every turn of a session on one engine (smg ``consistent_hashing``)."""
    key = str(session_id)
    if not key or any(c in key for c in "\r\n"):
        raise ValueError(f"session id must be a non-empty single-line string, got {key!r}")
    return {ROUTING_KEY_HEADER: key}
