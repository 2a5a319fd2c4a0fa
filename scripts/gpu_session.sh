#!/usr/bin/env bash
# The GPU runs recorded in docs/: run on a 2-GPU machine from the repo root.
#   scripts/gpu_session.sh checks     smoke, CUDA tests, Stage 1 benchmark (seed), DDP 2 ranks vs 1, verify ci (-n 2)
#   scripts/gpu_session.sh thorough   muse verify --profile thorough on CUDA
#   scripts/gpu_session.sh followup   CUDA tests on the final code, resume on CUDA, Phase 2 --amp bf16/fp16
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
followup)
  step "smoke + CUDA unit tests"
  timeout 120 python3 -m muse smoke --device cuda | tail -3
  timeout 150 python3 -m pytest -q -m cuda -n 2 tests -p no:cacheprovider 2>&1 | tail -2
  step "resume on CUDA: Stage 1 seed, 20 steps straight (GPU 0) vs 10 + resume + 10 (GPU 1)"
  R=(--model stage1 --preset seed --max-steps 20 --warmup 5 --eval-every 0 --final-eval-tokens 65536
     --log-every 1 --no-progress --batch-size 8 "${DATA[@]}")
  CUDA_VISIBLE_DEVICES=0 timeout 150 python3 -m muse train "${R[@]}" --out "$W/resume-straight" > "$W/straight.log" 2>&1 &
  CUDA_VISIBLE_DEVICES=1 timeout 150 python3 -m muse train "${R[@]}" --stop-after 10 --out "$W/resume-split" > "$W/split1.log" 2>&1
  CUDA_VISIBLE_DEVICES=1 timeout 150 python3 -m muse train "${R[@]}" --resume "$W/resume-split/last.safetensors" > "$W/split2.log" 2>&1
  wait
  python3 - "$W" <<'EOF2'
import json, sys
w = sys.argv[1]
def losses(run):
    return {r["step"]: r["loss"] for r in map(json.loads, open(f"{w}/{run}/log.jsonl")) if r.get("type") == "train"}
a, b = losses("resume-straight"), losses("resume-split")
steps = sorted(set(a) & set(b))
diff = [abs(a[s] - b[s]) / abs(a[s]) for s in steps]
print(f"resume: {len(steps)} steps compared; steps 1-10 max rel diff {max(diff[:10]):.3e}; "
      f"steps 11-20 max rel diff {max(diff[10:]):.3e}; step 20: {a[20]:.6f} vs {b[20]:.6f}")
EOF2
  step "Phase 2 seed through the trainer with --amp bf16 (GPU 0) and --amp fp16 (GPU 1)"
  A=(--model phase2 --preset seed --max-steps 30 --warmup 5 --eval-every 0 --final-eval-tokens 65536
     --log-every 10 --no-progress --batch-size 8 "${DATA[@]}")
  CUDA_VISIBLE_DEVICES=0 timeout 200 python3 -m muse train "${A[@]}" --amp bf16 --out "$W/amp-bf16" 2>&1 | tail -12 &
  CUDA_VISIBLE_DEVICES=1 timeout 200 python3 -m muse train "${A[@]}" --amp fp16 --out "$W/amp-fp16" 2>&1 | tail -12
  wait
  ;;
esac
step "pack"
tar --exclude='*.safetensors' -czf "$OUT/runs-${1:-checks}.tgz" -C "$W" .
ls -la "$OUT"
