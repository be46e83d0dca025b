"""Run router argvs through a router's own parser and its ``_validate_router_args()`` (what its
``launch_router`` does before the router starts): ``sglang_router`` (0.3.x) or ``smg``, whichever
package this interpreter has, named by argv[1].

stdin: ``[{"id": str, "argv": [str, ...]}, ...]``; stdout: ``[{"id", "stage": "ok" | "parse" |
"validate", "error": str | None, "warnings": [str, ...]}]``. Both routers' validation only logs
(a policy the PD mode ignores, for one), so what it logs at WARNING or above is reported too.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import sys
from typing import Any


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def check(package: str, argv: list[str]) -> dict[str, Any]:
    launch = importlib.import_module(f"{package}.launch_router")
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = launch.parse_router_args(argv)
    except SystemExit:
        lines = [x for x in err.getvalue().splitlines() if x.strip()]
        return {"stage": "parse", "error": lines[-1] if lines else "argparse exited",
                "warnings": []}
    except Exception as e:  # noqa: BLE001 - the parser's own conversions (bootstrap ports)
        return {"stage": "parse", "error": f"{type(e).__name__}: {e}", "warnings": []}
    collect = _Collect()
    logging.getLogger().addHandler(collect)
    try:
        args._validate_router_args()
    except Exception as e:  # noqa: BLE001 - every failure of validation is the finding
        return {"stage": "validate", "error": f"{type(e).__name__}: {e}",
                "warnings": collect.messages}
    finally:
        logging.getLogger().removeHandler(collect)
    return {"stage": "ok", "error": None, "warnings": collect.messages}


def main() -> int:
    package = sys.argv[1]
    cases = json.load(sys.stdin)
    json.dump([{"id": c["id"], **check(package, [str(a) for a in c["argv"]])} for c in cases],
              sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
