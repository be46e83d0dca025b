#!/usr/bin/env bash
# The pre-commit hooks of .pre-commit-hooks.yaml, run with the `sgl-gen` on PATH:
#   sgl-gen-hook.sh validate [OPTION... --] FILE...      sgl-gen validate FILE, for each FILE
#   sgl-gen-hook.sh render-check [OPTION... --] FILE...  sgl-gen render FILE --check, for each
# Every file is checked (every problem of each on stderr); the exit code is the worst one:
# 1 invalid or out of date, 2 a usage error. A hook's args up to a `--` are options given to
# every call, e.g. args: [--hf-checkpoint, /models/Qwen3-8B, --] or args: [-o, deploy/out, --].
set -uo pipefail
case "${1:-}" in
  validate) cmd=(sgl-gen validate) ;;
  render-check) cmd=(sgl-gen render --check) ;;
  *) echo "usage: $0 validate|render-check [OPTION... --] FILE..." >&2; exit 2 ;;
esac
shift
opts=()
if [[ " $* " == *" -- "* ]]; then
  while [[ $# -gt 0 && "$1" != "--" ]]; do opts+=("$1"); shift; done
  shift
fi
rc=0
for f in "$@"; do
  "${cmd[@]}" "$f" ${opts[@]+"${opts[@]}"}
  got=$?
  (( got > rc )) && rc=$got
done
exit "$rc"
