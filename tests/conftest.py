"""Hypothesis runs the same examples on every run (CI must not fail on a lucky draw); set
SGLGEN_HYPOTHESIS_RANDOM=1 to explore new ones locally."""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("explore" if os.environ.get("SGLGEN_HYPOTHESIS_RANDOM") == "1" else "ci")
