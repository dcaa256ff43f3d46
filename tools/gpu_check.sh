#!/usr/bin/env bash
# The GPU check (README: "GPU check"): tools/gpu_check.py on the first CUDA GPU, in under 8 minutes.
# Results: $OUT/gpu_check.json (or ./gpu_check_out/), and the console output in gpu_check.log beside it.
#   tools/gpu_check.sh                      # every section
#   tools/gpu_check.sh --only bench         # some of them (see tools/gpu_check.py --help)
#   PYTHON=.venv/bin/python tools/gpu_check.sh
set -o pipefail
cd "$(dirname "$0")/.." || exit 2
out="${OUT:-gpu_check_out}"
mkdir -p "$out" || exit 2
PYTHONUNBUFFERED=1 "${PYTHON:-python3}" tools/gpu_check.py --device cuda --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
