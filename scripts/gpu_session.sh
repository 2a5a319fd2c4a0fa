#!/usr/bin/env bash
# The GPU runs recorded in docs/: run on a 2-GPU machine from the repo root.
#   scripts/gpu_session.sh checks     smoke, CUDA tests, Stage 1 benchmark (seed), DDP 2 ranks vs 1, verify ci (-n 2)
#   scripts/gpu_session.sh thorough   muse verify --profile thorough on CUDA
# Needs pre-tokenised WikiText-2 in .devcarry/ (muse data export --split valid|test --out ...).
# Writes logs and reports to $OUT (or ./gpu-out) as one tarball, without checkpoints.
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-$PWD/gpu-out}"
W="$PWD/runs/gpu"
mkdir -p "$OUT" "$W"
DATA=(--tokens-npy .devcarry/wikitext2-valid.npy --eval-tokens-npy .devcarry/wikitext2-test.npy --train-split valid)
step() { echo; echo "=== $(date -u +%FT%TZ) $*"; }

nvidia-smi -L
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())"

case "${1:-checks}" in
checks)
  step "smoke (seed preset, CUDA)"
  timeout 120 python3 -m muse smoke --device cuda --json "$W/smoke-cuda.json"
  step "CUDA unit tests"
  timeout 150 python3 -m pytest -q -m cuda -n 2 tests -p no:cacheprovider 2>&1 | tail -5
  step "Stage 1 benchmark, seed preset, GPU 0 alone"
  CUDA_VISIBLE_DEVICES=0 timeout 300 python3 -m muse bench stage1 --preset seed --device cuda "${DATA[@]}" \
    --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --out "$W/bench-seed" | tail -40
  step "DDP: Stage 1 seed, 2 ranks x batch 4 vs 1 rank x batch 8, dropout 0"
  COMMON=(--model stage1 --preset seed --dropout 0.0 --max-steps 30 --warmup 5 --eval-every 0
          --final-eval-tokens 65536 --log-every 1 --no-progress "${DATA[@]}")
  timeout 120 torchrun --standalone --nproc_per_node 2 -m muse train "${COMMON[@]}" --batch-size 4 --out "$W/ddp-2rank" | tail -3
  CUDA_VISIBLE_DEVICES=0 timeout 120 python3 -m muse train "${COMMON[@]}" --batch-size 8 --out "$W/ddp-1rank" | tail -3
  python3 - "$W" <<'EOF'
import json, sys
w = sys.argv[1]
def losses(run):
    return [r["loss"] for r in map(json.loads, open(f"{w}/{run}/log.jsonl")) if r.get("type") == "train"]
a, b = losses("ddp-2rank"), losses("ddp-1rank")
rel = [abs(x - y) / abs(y) for x, y in zip(a, b)]
print(f"DDP steps compared: {len(rel)}; max relative loss difference {max(rel):.3e}; "
      f"first {a[0]:.5f} vs {b[0]:.5f}; last {a[-1]:.5f} vs {b[-1]:.5f}")
EOF
  step "verify ci on CUDA with pytest -n 2 (one worker per GPU)"
  timeout 240 python3 -m muse verify --profile ci --device cuda -n 2 --out "$W/verify-ci-cuda" | tail -25
  ;;
thorough)
  step "verify thorough on CUDA"
  timeout 560 python3 -m muse verify --profile thorough --device cuda -n "$(( $(nproc) - 2 ))" \
    --out "$W/verify-thorough-cuda" | tail -40
  ;;
esac
step "pack"
tar --exclude='*.safetensors' -czf "$OUT/runs-${1:-checks}.tgz" -C "$W" .
ls -la "$OUT"
