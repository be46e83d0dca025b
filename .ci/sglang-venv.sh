#!/usr/bin/env bash
# Builds the virtualenv of one SGLang version's own parser: its wheel (downloaded once into
# .cache/wheels) and the pinned light libraries of .ci/sglang-parser-VERSION.txt, all --no-deps
# (torch and the GPU kernels are stood in for by tests/realsglang/standin.py). Idempotent: kept
# while the requirements file is unchanged.
#   bash .ci/sglang-venv.sh VERSION [ROOT]   ->   ROOT/VERSION/bin/python (ROOT: /opt/sgl-gen-sglang)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
version="$1"
root="${2:-${SGLANG_VENVS:-/opt/sgl-gen-sglang}}"
reqs=".ci/sglang-parser-$version.txt"
venv="$root/$version"
[[ -f "$reqs" ]] || { echo "no $reqs: write the pinned light libraries of sglang $version first" >&2; exit 2; }
mkdir -p .cache/wheels
wheel="$(ls .cache/wheels/sglang-"$version"-*.whl 2>/dev/null | head -n1 || true)"
if [[ -z "$wheel" ]]; then
  "$PY" -m pip download -q --disable-pip-version-check --no-deps "sglang==$version" -d .cache/wheels
  wheel="$(ls .cache/wheels/sglang-"$version"-*.whl | head -n1)"
fi
want="$(cat "$reqs" "$wheel" | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$venv/.sgl-gen-requirements" 2>/dev/null)" != "$want" ]]; then
  rm -rf "$venv"
  "$PY" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "$wheel" -r "$reqs"
  echo "$want" > "$venv/.sgl-gen-requirements"
fi
echo "$venv/bin/python"
