#!/usr/bin/env bash
# The prepared GPU run (docs/engines.md, "The GPU run"). On the GPU machine, from anywhere:
#   OUT=/path/to/empty/folder bash bench/gpu/run.sh [--budget-s 400] [--init W.safetensors]
# 1. installs the wheels carried in $CARRY/wheels (no network; `make gpu-carry` fills the folder here),
# 2. installs this checkout without dependencies (editable) unless tagtrack already imports from it,
# 3. runs `python -m tagtrack.bench.gpu.run` under a hard time limit; everything printed is also in $OUT/run.log.
# Variables: PYTHON (python3), CARRY (bench/gpu/carry), TIME_LIMIT (440 s: the run's own budget is 400 s; pip takes seconds before it).
# Extra arguments go to the run, e.g. --dry for the CPU dry run (as the test suite does).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 2
if [ -z "${OUT:-}" ]; then echo "error: set OUT to the folder for the results" >&2; exit 2; fi
PYTHON=${PYTHON:-python3}
CARRY=${CARRY:-bench/gpu/carry}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" || exit 2
{
  echo "gpu run $(date -u +%Y-%m-%dT%H:%M:%SZ) in $(pwd) with $("$PYTHON" -V 2>&1)"
  if compgen -G "$CARRY/wheels/*.whl" > /dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile "$CARRY"/wheels/*.whl \
      || { echo "error: installing the carried wheels failed"; exit 3; }
  fi
  here=$(pwd -P)
  if ! "$PYTHON" -c "import sys, tagtrack; sys.exit(tagtrack.__file__ != '$here/__init__.py')" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
      || { echo "error: installing this checkout (pip install -e .) failed"; exit 3; }
  fi
  timeout --kill-after=15 "${TIME_LIMIT:-440}" "$PYTHON" -m tagtrack.bench.gpu.run --out "$OUT" --carry "$CARRY" "$@"
} 2>&1 | tee "$OUT/run.log"
