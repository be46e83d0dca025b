#!/usr/bin/env bash
# Installs everything the tests need on a fresh Debian machine (as root). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
SMG_VENV="${SMG_VENV:-/opt/sgl-gen-smg}"
SGLANG_VENVS="${SGLANG_VENVS:-/opt/sgl-gen-sglang}"

bash .ci/install-system.sh

echo "== pip: sgl-gen (editable) with test extras, and [suggest] (AIConfigurator 0.12.0 for sgl-gen suggest)"
# [suggest] adds ~810 MB to a fresh venv in ~30 s (~580 MB, ~22 s where numpy, scipy and pydantic
# already are): pandas, pyarrow, matplotlib, plotly, bokeh, aiconfigurator-core with its offline
# performance databases; no torch. The same line works in a venv ($PY a venv python) and
# system-wide; tests/test_suggest.py fails under CI=true when it is missing
"$PY" -m pip install -q --disable-pip-version-check -e '.[test,suggest]'

echo "== smg 1.13.0 in its own virtualenv ($SMG_VENV): its console scripts clash with sglang-router"
if [[ ! -x "$SMG_VENV/bin/python" ]]; then
  "$PY" -m venv "$SMG_VENV"
fi
"$SMG_VENV/bin/python" -m pip install -q --disable-pip-version-check 'smg==1.13.0'

echo "== sglang 0.5.23 wheel (read statically for the ServerArgs catalog; never installed)"
mkdir -p .cache/wheels
if ! ls .cache/wheels/sglang-0.5.23-*.whl >/dev/null 2>&1; then
  "$PY" -m pip download -q --disable-pip-version-check --no-deps 'sglang==0.5.23' -d .cache/wheels
fi

echo "== SGLang's own parsers, one virtualenv per version under $SGLANG_VENVS (.ci/sglang-venv.sh)"
for reqs in .ci/sglang-parser-*.txt; do
  version="${reqs#.ci/sglang-parser-}"
  bash .ci/sglang-venv.sh "${version%.txt}" "$SGLANG_VENVS"
done
