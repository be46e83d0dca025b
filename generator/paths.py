"""Where the project's data files live.

Templates and schemas sit at the top of the source tree (the owner's layout). An editable install
(`pip install -e .`) resolves them from there; this module is the one place that knows it.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
SCHEMAS = ROOT / "schemas"
EXAMPLES = ROOT / "examples"
