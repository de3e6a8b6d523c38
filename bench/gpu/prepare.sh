#!/usr/bin/env bash
# Fill bench/gpu/carry/ (git-ignored) with what the GPU run needs and the GPU machine lacks, and check that
# it travels: the machine takes at most 64 MiB of files along with the working tree.
#   wheels/     filterpy, pycocotools, motmetrics, xmltodict for the GPU machine's Python (no network there)
#   vtest.avi   the pipeline's video
#   corpus/     the training corpus packed to CORPUS_BUDGET_MIB (python -m tagtrack.bench.gpu.pack)
# Variables: PYTHON (.venv/bin/python), GPU_PYTHON_VERSION (3.12, the GPU machine's), VTEST, ROOT (the
# default-model recipe's --root: the corpus defaults to ROOT/data/train_general.json and ROOT/data/images),
# or CORPUS_DATA and CORPUS_IMAGES, CORPUS_CONFIG (a TrainConfig JSON for the run; optional), CORPUS_BUDGET_MIB (40),
# CORPUS_MAX_IMAGES (keep this many images evenly spaced; optional).
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-.venv/bin/python}
GPU_PYTHON_VERSION=${GPU_PYTHON_VERSION:-3.12}
CARRY=bench/gpu/carry
VTEST=${VTEST:-../shared/data/videos/opencv_vtest_pets2009.avi}
if [ -z "${CORPUS_DATA:-}" ] && [ -z "${ROOT:-}" ]; then
  echo "error: set ROOT (the recipe's --root folder) or CORPUS_DATA and CORPUS_IMAGES" >&2; exit 2
fi
CORPUS_DATA=${CORPUS_DATA:-$ROOT/data/train_general.json}
CORPUS_IMAGES=${CORPUS_IMAGES:-$ROOT/data/images}
CORPUS_CONFIG=${CORPUS_CONFIG:-}
CORPUS_BUDGET_MIB=${CORPUS_BUDGET_MIB:-40}
CORPUS_MAX_IMAGES=${CORPUS_MAX_IMAGES:-}
LIMIT_BYTES=$((64 * 1024 * 1024))
# The versions this repository is tested with (.venv); only their own dependencies that the GPU image
# lacks are added (numpy, scipy, pandas and matplotlib are there).
WHEELS="filterpy==2.0.0 pycocotools==2.0.11 motmetrics==1.4.0 xmltodict==1.0.4"

mkdir -p "$CARRY/wheels"
rm -f "$CARRY"/wheels/*.whl
# shellcheck disable=SC2086
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$GPU_PYTHON_VERSION" \
  --implementation cp --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux_2_28_x86_64 -d "$CARRY/wheels" $WHEELS 2>&1 | grep -v "^WARNING: Location" || true
count=$(ls "$CARRY"/wheels/*.whl 2>/dev/null | wc -l)
if [ "$count" -ne 4 ]; then echo "error: expected 4 wheels in $CARRY/wheels, got $count" >&2; exit 2; fi

if [ -f "$VTEST" ]; then
  rm -f "$CARRY/vtest.avi"; cp "$VTEST" "$CARRY/vtest.avi"; chmod 644 "$CARRY/vtest.avi"
elif [ -f "${TAGTRACK_CACHE:-$HOME/.cache/tagtrack}/vtest.avi" ]; then
  rm -f "$CARRY/vtest.avi"; cp "${TAGTRACK_CACHE:-$HOME/.cache/tagtrack}/vtest.avi" "$CARRY/vtest.avi"; chmod 644 "$CARRY/vtest.avi"
else
  echo "warning: no vtest.avi at $VTEST (make vtest fetches one); the pipeline will use generated frames" >&2
fi

if [ -f "$CORPUS_DATA" ]; then
  "$PYTHON" -m tagtrack.bench.gpu.pack --data "$CORPUS_DATA" --images "$CORPUS_IMAGES" --out "$CARRY/corpus" \
    --budget-mib "$CORPUS_BUDGET_MIB" ${CORPUS_CONFIG:+--train-config "$CORPUS_CONFIG"} \
    ${CORPUS_MAX_IMAGES:+--max-images "$CORPUS_MAX_IMAGES"}
else
  echo "warning: no corpus at $CORPUS_DATA; set CORPUS_DATA and CORPUS_IMAGES (the training section will fail)" >&2
fi

# What travels: the tracked and untracked-not-ignored files of the working tree, plus the carried folder.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
wheels=$(du -cb "$CARRY"/wheels/*.whl | tail -1 | cut -f1)
carry=$(du -sb "$CARRY" | cut -f1)
total=$((tree + carry))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "wheels $(mib "$wheels"), carry folder $(mib "$carry") (video, corpus, wheels), working tree $(mib "$tree"): $(mib "$total") of 64 MiB"
if [ "$total" -gt "$LIMIT_BYTES" ]; then
  echo "error: over the 64 MiB the GPU machine takes; lower CORPUS_BUDGET_MIB" >&2
  exit 2
fi
