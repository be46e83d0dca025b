"""Hypothesis runs the same examples on every run (CI must not fail on a lucky draw); set
SGLGEN_HYPOTHESIS_RANDOM=1 to explore new ones locally."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile("explore" if os.environ.get("SGLGEN_HYPOTHESIS_RANDOM") == "1" else "ci")


@pytest.fixture(autouse=True)
def _own_run_records(tmp_path_factory, monkeypatch):
    """`up` records its runs per user ($XDG_STATE_HOME/sgl-gen/runs): each test gets its own
    state home, so no test reads another's records (or the machine user's)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
