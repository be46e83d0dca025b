"""Dump the ServerArgs catalog of the SGLang installed in this interpreter from its live parser
(``ServerArgs.add_cli_args``), in the catalog format (generator/devtools/argdump.py), with torch
stood in for (standin.py). What ``make sglang-catalog VERSION=...`` runs in that version's venv::

    python tests/realsglang/dump_catalog.py > schemas/sglang-<version>.json
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import standin  # noqa: E402

standin.install()


def _argdump():  # stdlib-only, loaded from its file: sgl-gen is not installed in this venv
    path = os.path.join(HERE, "..", "..", "generator", "devtools", "argdump.py")
    spec = importlib.util.spec_from_file_location("argdump", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser(add_help=True)
    ServerArgs.add_cli_args(parser)
    version = importlib.metadata.version("sglang")
    if dataclasses.is_dataclass(ServerArgs):  # before 0.5
        fields = frozenset(f.name for f in dataclasses.fields(ServerArgs))
    else:  # 0.5: a record of namespace classes
        from sglang.srt.server_args import record_fields

        fields = frozenset(f.name for f in record_fields(ServerArgs))
    doc = _argdump().dump_parser(parser, "sglang", version, fields)
    json.dump(doc, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
