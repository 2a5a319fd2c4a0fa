#!/usr/bin/env bash
# Kernels / compile / speed checks on one CUDA GPU, from the repo root; logs and reports go to $OUT.
#   scripts/gpu_kernels.sh checks   kernel tests + fullgraph tests on CUDA, the verification suite's
#                                   layer_norm/modrelu under eager, compiled and triton on CUDA
#   scripts/gpu_kernels.sh speed    muse bench speed at the seed preset, B=4, S=1024
#   scripts/gpu_kernels.sh phase2   Phase 2's scans, mixers and model (eager and compiled) with MUSE_KERNELS=0 vs 1
#   scripts/gpu_kernels.sh all      both (about 10 minutes; run the two phases apart if the limit is tighter)
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
step() { echo; echo "=== $(date -u +%FT%TZ) $*"; }
nvidia-smi -L
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'git', end=' ')"
git rev-parse --short HEAD 2>/dev/null || echo unknown

checks() {
  step "kernel + fullgraph tests (CUDA and CPU cases)"
  timeout 240 python3 -m pytest -q -n 4 -p no:cacheprovider tests/kernels tests/models/test_models_fullgraph.py \
    2>&1 | tee "$OUT/kernel-tests.txt" | tail -8
  step "verification: layer_norm / modrelu under eager, compiled, triton on CUDA (ci profile)"
  MUSE_VERIFY_IMPL=eager,compiled,triton timeout 300 python3 -m muse verify --profile ci --device cuda \
    -n 4 -k "layer_norm or modrelu or layers_finite" --out "$OUT/verify-impls" 2>&1 | tail -12
}

speed() {
  step "muse bench speed, seed preset, B=4, S=1024"
  timeout 420 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --out "$OUT/speed" \
    2>&1 | tee "$OUT/speed.txt" | tail -45
}

phase2() {
  step "Phase 2 scans / mixers / model fwd+bwd, PyTorch scans vs kernels, seed preset, B=4, S=1024"
  timeout 540 python3 scripts/bench_phase2_scans.py --compile --out "$OUT/phase2-scans.json" \
    2>&1 | tee "$OUT/phase2-scans.txt" | tail -20
}

case "${1:-all}" in
checks) checks ;;
speed) speed ;;
phase2) phase2 ;;
all) checks; speed ;;
*) echo "usage: $0 checks|speed|phase2|all" >&2; exit 2 ;;
esac
