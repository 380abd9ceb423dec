#!/usr/bin/env bash
# The GPU measurement that README "Speed" waits for (issue 20), on a machine with one NVIDIA GPU:
#     bash results/bench/gpu_check.sh [OUT_DIR]          # default OUT_DIR: runs/bench
# Two processes, so that each stays under ten minutes: the kernels (the recompilation check first, then the
# copy and matmul ceilings, the scan against its floor, the four top-k thresholds) and the training steps
# (SPEN and GPT-2 at T = 1024, 4096, 8192, then the profile of a step at T = 1024). About 4 and 7 minutes on
# an H200, most of it torch.compile (an estimate; nothing of this commit has run on a GPU yet).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-runs/bench}
mkdir -p "$out"
stamp=$(date -u +%F)
python bench.py --device cuda --parts recompile,ceilings,scan,topk --out "$out/bench-cuda-$stamp-kernels.json" --overwrite
python bench.py --device cuda --parts model,profile --out "$out/bench-cuda-$stamp-steps.json" --overwrite
