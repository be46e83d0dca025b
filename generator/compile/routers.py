"""Router catalogs (sglang-router 0.3.2, smg 1.13.0) and exact router argv.

Each catalog under ``schemas/routers/`` is the live argparse parser of the router package dumped
by ``generator/devtools/argdump.py`` (``make router-catalogs`` regenerates them; a test re-dumps and
compares). Routers are started as ``python -m <module>`` — sglang-router 0.3.2 installs console
scripts named ``smg`` and ``sglang-router`` that clash with the smg package.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generator.compile.catalog import ArgSpec, Catalog
from generator.paths import SCHEMAS

#: implementation -> module run with ``python -m``
IMPLEMENTATIONS: dict[str, str] = {
    "sglang-router": "sglang_router.launch_router",
    "smg": "smg.launch_router",
}
#: implementation -> the version whose parser the committed catalog is
VERSIONS: dict[str, str] = {"sglang-router": "0.3.2", "smg": "1.13.0"}
#: implementation -> ``module:Class`` whose ``add_cli_args`` builds the parser
PARSERS: dict[str, str] = {
    "sglang-router": "sglang_router.router_args:RouterArgs",
    "smg": "smg.router_args:RouterArgs",
}


@dataclass(frozen=True)
class EnvRef:
    """An argv value read from an environment variable on the host at launch (a secret)."""

    name: str


def catalog_file(impl: str) -> Path:
    return SCHEMAS / "routers" / f"{impl}-{VERSIONS[impl]}.json"


@dataclass(frozen=True)
class RouterCatalog:
    """The flags of one router implementation, with its policy choices."""

    implementation: str
    catalog: Catalog

    @property
    def version(self) -> str:
        return self.catalog.version

    def _choices(self, name: str) -> tuple[str, ...]:
        spec = self.catalog.get(name)
        return tuple(spec.choices or ()) if spec is not None else ()

    @property
    def policies(self) -> tuple[str, ...]:
        return self._choices("policy")

    @property
    def prefill_policies(self) -> tuple[str, ...]:
        return self._choices("prefill_policy")

    @property
    def decode_policies(self) -> tuple[str, ...]:
        return self._choices("decode_policy")

    @property
    def names(self) -> tuple[str, ...]:
        return self.catalog.names

    def get(self, key: str) -> ArgSpec | None:
        return self.catalog.get(key)

    def check_value(self, key: str, value: Any) -> str | None:
        spec = self.catalog.get(key)
        if spec is None:
            return f"unknown {self.implementation} argument '{key}'"
        if spec.kind == "append":
            return f"{spec.flag} is set by sgl-gen from the topology"
        return spec.check_value(value)


@functools.cache
def load_router_catalog(impl: str) -> RouterCatalog:
    if impl not in IMPLEMENTATIONS:
        raise KeyError(f"unknown router implementation {impl!r}")
    data = json.loads(catalog_file(impl).read_text(encoding="utf-8"))
    return RouterCatalog(impl, Catalog.from_json(data))


def router_argv(impl: str, *, host: str, port: int, prometheus_port: int,
                policy: str | None = None, worker_urls: Iterable[str] | None = None,
                pd: tuple[list[tuple[str, int | None]], list[str]] | None = None,
                prefill_policy: str | None = None, decode_policy: str | None = None,
                extra_args: dict[str, Any] | None = None,
                secrets: dict[str, str] | None = None) -> list[Any]:
    """Tokens after ``python -m <module>``; ``secrets`` maps argument names to the environment
    variables that carry them (rendered as ``"${NAME}"``, never as the value)."""
    cat = load_router_catalog(impl)

    def flag(name: str) -> str:
        spec = cat.get(name)
        if spec is None:
            raise KeyError(f"{impl} {cat.version} has no argument {name!r}")
        return spec.flag

    out: list[Any] = [flag("host"), host, flag("port"), str(port),
                      flag("prometheus_port"), str(prometheus_port)]
    if pd is not None:
        prefill, decode = pd
        out.append(flag("pd_disaggregation"))
        for url, bootstrap in prefill:
            out += [flag("prefill"), url] + ([str(bootstrap)] if bootstrap is not None else [])
        for url in decode:
            out += [flag("decode"), url]
    elif worker_urls is not None:
        urls = list(worker_urls)
        if urls:
            out += [flag("worker_urls"), *urls]
    if policy is not None:
        out += [flag("policy"), policy]
    if prefill_policy is not None:
        out += [flag("prefill_policy"), prefill_policy]
    if decode_policy is not None:
        out += [flag("decode_policy"), decode_policy]
    for key, value in sorted((extra_args or {}).items()):
        spec = cat.get(key)
        if spec is None:
            raise KeyError(f"{impl} {cat.version} has no argument {key!r}")
        out += spec.to_argv(value)
    for key, env in sorted((secrets or {}).items()):
        out += [flag(key), EnvRef(env)]
    return out
