"""Run engine argvs through SGLang's own ``prepare_server_args`` and ``ServerArgs.resolve_once``
(what ``python -m sglang.launch_server`` does before anything starts), in the sglang virtualenv.
Releases before 0.5 have no ``resolve_once``: their ``ServerArgs.__post_init__`` (run by
``prepare_server_args``) is the whole check, and asks ``nvidia-smi`` for the GPU memory
(tests/standins/nvidia-smi on PATH).

stdin: ``[{"id": str, "argv": [str, ...]}, ...]``; stdout: one result per case, in order:
``{"id", "stage": "ok" | "parse" | "resolve", "error": str | None, "resolved": {...}}``. A parse
error is argparse's own message; a resolve error is the exception's type and text.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import standin  # noqa: E402

standin.install()

#: fields reported back, so the test can see the argv meant what sgl-gen meant
FIELDS = ("model_path", "host", "port", "tp_size", "pp_size", "dp_size", "ep_size", "nnodes",
          "node_rank", "dist_init_addr", "nccl_port", "disaggregation_mode",
          "mem_fraction_static", "context_length", "encoder_only", "language_only")


def _view(args: Any) -> Any:
    try:
        from sglang.srt.arg_groups.overrides import resolving_view
    except ImportError:  # before 0.5: the record itself holds the checked values
        return args
    return resolving_view(args)


def check(argv: list[str]) -> dict[str, Any]:
    from sglang.srt.server_args import prepare_server_args

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = prepare_server_args(argv)
    except SystemExit:
        lines = [x for x in err.getvalue().splitlines() if x.strip()]
        return {"stage": "parse", "error": lines[-1] if lines else "argparse exited",
                "resolved": None}
    except Exception as e:  # noqa: BLE001 - before 0.5, construction is the validation
        return {"stage": "resolve", "error": f"{type(e).__name__}: {e}", "resolved": None}
    try:
        if hasattr(args, "resolve_once"):
            args.resolve_once()
    except Exception as e:  # noqa: BLE001 - every failure of resolution is the finding
        return {"stage": "resolve", "error": f"{type(e).__name__}: {e}", "resolved": None}
    view = _view(args)
    resolved = {f: getattr(view, f, None) for f in FIELDS}
    return {"stage": "ok", "error": None,
            "resolved": {k: v if isinstance(v, (str, int, float, bool, type(None))) else str(v)
                         for k, v in resolved.items()}}


def main() -> int:
    logging.disable(logging.WARNING)
    cases = json.load(sys.stdin)
    import sglang.srt.server_args  # noqa: F401 - import cost once, before the first case

    out = [{"id": c["id"], **check([str(a) for a in c["argv"]])} for c in cases]
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
