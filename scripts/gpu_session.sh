#!/usr/bin/env bash
# The GPU runs recorded in docs/: one CUDA GPU, from the repo root, each phase under 10 minutes.
#   scripts/gpu_session.sh checks   CUDA tests (complex, kernels, fullgraph, fused loss), verify on CUDA
#                                   (layer_norm/modrelu under eager, compiled, triton; the loss), the fused
#                                   loss's memory at the seed preset (B2 and B8, both measures), smoke
#   scripts/gpu_session.sh bench    muse bench stage1 at the seed preset (1,572,864 tokens per run, with the
#                                   Phase 2 mixer-free and GPT reference runs), then Stage 1 'mix' trained the same way
#   scripts/gpu_session.sh speed    muse bench speed at the seed preset, B=4, S=1024
#   scripts/gpu_session.sh extra    CUDA tests again, Stage 1 compiled speed, the criteria with Stage 1 'mix', two mix ablations
# Needs pre-tokenised WikiText-2 in .devcarry/ (muse data export --split valid|test --out ...), which is
# gitignored: the device call must carry it (carry: [".devcarry"]) or every training run fails at once.
# Phases that read the text (s49a on, for bits per byte and word-level PPL) also need .devcarry/wikitext-2-raw/
# wiki.{valid,test}.raw and .devcarry/gpt2-tokenizer/tokenizer.json, copied from ../shared/data.
# Runs write under runs/gpu/<phase>; the phase ends by packing them (without checkpoints) into
# $OUT/<phase>.tgz (or ./gpu-out).
set -uo pipefail
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PHASE="${1:-checks}"
FINAL_OUT="${OUT:-$PWD/gpu-out}"
OUT="$PWD/runs/gpu/$PHASE"
mkdir -p "$OUT" "$FINAL_OUT"
DATA=(--tokens-npy .devcarry/wikitext2-valid.npy --eval-tokens-npy .devcarry/wikitext2-test.npy --train-split valid)
BUDGET=(--tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --seed 1337)
# each step first packs what the phase has written so far: a call killed at the device's time limit
# still returns the outputs of its finished steps (keep a phase's step limits under 600 s in all)
pack() { tar --exclude='*.safetensors' -czf "$FINAL_OUT/$PHASE.tgz" -C "$OUT" . 2>/dev/null; }
step() { pack; echo; echo "=== $(date -u +%FT%TZ) $*"; }
# sweep P LIMIT FILE: `muse train "${TRAIN[@]}" ARGS --out $OUT/NAME` for each line NAME|ARGS of FILE,
# P at a time; whatever still runs after LIMIT seconds is killed (its log so far is kept)
# (each run gets a `timeout` to the common deadline: no background killer whose `sleep` would hold the
# call's output open after the runs end; other background jobs of the phase count towards P)
sweep() {
  local p=$1 limit=$2 file=$3 name args deadline=$(( $(date +%s) + $2 ))
  while IFS='|' read -r name args; do
    while [ "$(jobs -rp | wc -l)" -ge "$p" ]; do wait -n; done
    mkdir -p "$OUT/$name"
    # shellcheck disable=SC2086
    ( timeout $(( deadline - $(date +%s) )) python3 -m muse train "${TRAIN[@]}" $args --out "$OUT/$name" \
        > "$OUT/$name/stdout.txt" 2>&1
      echo "$name rc=$? $(date -u +%T)" ) &
  done < "$file"
  wait
}

nvidia-smi -L
python3 -c "import torch, triton; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__)"

case "$PHASE" in
checks)
  step "CUDA tests"
  timeout 200 python3 -m pytest -q -n 4 -p no:cacheprovider --muse-device cuda tests/complex tests/kernels \
    tests/models/test_models_fullgraph.py tests/models/test_model_contract.py tests/train/test_fused_loss.py \
    2>&1 | tee "$OUT/cuda-tests.txt" | tail -6
  step "verify on CUDA: layer_norm / modrelu under eager, compiled, triton; the fused loss; stability"
  MUSE_VERIFY_IMPL=eager,compiled,triton timeout 240 python3 -m muse verify --profile ci --device cuda -n 4 \
    -k "layer_norm or modrelu or layers_finite or loss or stability" --out "$OUT/verify-cuda" 2>&1 | tail -8
  step "fused loss memory, seed preset (tracker vs cuda.max_memory_allocated)"
  timeout 120 python3 scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 \
    --throughput-batch 4 --steps 10 --impl chunked | tee "$OUT/loss-memory-b2.jsonl"
  timeout 90 python3 scripts/loss_memory.py --preset seed --device cuda --batch 8 --seq 1024 --steps 0 \
    --impl chunked | tee "$OUT/loss-memory-b8.jsonl"
  step "smoke, seed preset"
  timeout 90 python3 -m muse smoke --device cuda --no-compile --json "$OUT/smoke-cuda.json" | tail -25
  ;;
bench)
  step "Stage 1 benchmark, seed preset (eager; compile is measured by the speed phase)"
  timeout 390 python3 -m muse bench stage1 --preset seed --device cuda --no-compile "${DATA[@]}" "${BUDGET[@]}" \
    --out "$OUT/bench-seed" | tail -45
  step "Stage 1 'mix' (recurrence + complex FFN), same budget"
  timeout 190 python3 -m muse train --model stage1 --preset mix --device cuda --no-compile "${DATA[@]}" "${BUDGET[@]}" \
    --eval-stride 512 --eval-every 24 --eval-tokens 16384 --ckpt-every 0 --no-progress --out "$OUT/train-mix" | tail -8
  ;;
speed)
  step "muse bench speed, seed preset, B=4, S=1024"
  timeout 540 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --out "$OUT/speed" \
    2>&1 | tee "$OUT/speed.txt" | tail -60
  ;;
extra)
  step "CUDA model/kernel tests"
  timeout 120 python3 -m pytest -q -n 4 -p no:cacheprovider --muse-device cuda tests/complex/test_complex_devices.py \
    tests/kernels 2>&1 | tail -3
  step "speed: Stage 1 compiled with the kernels switched off inside compiled graphs"
  timeout 150 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1 \
    --variants eager,kernels,compiled,compiled+kernels --out "$OUT/speed-stage1" 2>&1 | grep -E "^\| stage1|ceilings"
  step "Stage 1 criteria with the 'mix' Stage 1 (Phase 2 and its mixer-free variant trained the same way)"
  timeout 260 python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix --device cuda \
    --no-compile "${DATA[@]}" "${BUDGET[@]}" --out "$OUT/bench-mix" | sed -n '/all_pass/,/inference tok/p'
  for arg in omega_init=uniform ffn=none; do
    step "Stage 1 mix ablation: $arg"
    timeout 100 python3 -m muse train --model stage1 --preset mix --model-arg "$arg" --device cuda --no-compile \
      "${DATA[@]}" "${BUDGET[@]}" --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress \
      --out "$OUT/train-mix-${arg%%=*}" | grep -E "final eval PPL|train tok/s|parameters"
  done
  ;;
loss)
  python3 -c "import torch; a = torch.ones(8, 8, device='cuda', dtype=torch.half); print('mm out_dtype:', torch.mm(a, a, out_dtype=torch.float32).dtype)" 2>&1 | tail -1
  step "CUDA tests: fused loss"
  timeout 120 python3 -m pytest -q -n 4 -p no:cacheprovider --muse-device cuda tests/train/test_fused_loss.py 2>&1 | tail -3
  step "verify on CUDA: the fused loss"
  timeout 150 python3 -m muse verify --profile ci --device cuda -n 4 -k "loss" --out "$OUT/verify-loss" 2>&1 | grep -E "linear_cross|passed|failed"
  step "profile: loss, compiled Stage 1, Phase 2"
  timeout 200 python3 scripts/profile_gpu.py --out "$OUT/profile" --sections loss,compiled,phase2 > "$OUT/profile.log" 2>&1; grep -E "ms|FAILED" "$OUT/profile/loss.txt" | grep -v "^ *[a-z_:]*  " | head -20
  step "fused loss memory, seed preset, B2 (throughput at B4, eager)"
  timeout 120 python3 scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 \
    --throughput-batch 4 --steps 10 --impl chunked | tee "$OUT/loss-memory-b2.jsonl"
  step "muse bench speed: stage1 and gpt, eager and compiled (training loss = the fused loss)"
  timeout 240 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt,complex64 \
    --variants eager,compiled --out "$OUT/speed" 2>&1 | grep -E "^\| (stage1|gpt|complex64)|ceilings|Complex linear"
  ;;
final)
  step "CUDA tests: fused loss, fast decoding"
  timeout 200 python3 -m pytest -q -n 4 -p no:cacheprovider --muse-device cuda tests/train/test_fused_loss.py \
    tests/train/test_generate_fast_path.py tests/models/test_stage1_decode_step.py tests/models/test_generate_incremental.py \
    2>&1 | tail -4
  step "verify on CUDA: the fused loss (compiled chunk bodies)"
  timeout 150 python3 -m muse verify --profile ci --device cuda -n 4 -k "loss" --out "$OUT/verify-loss" 2>&1 | grep -E "linear_cross|passed|failed"
  step "profile: the loss alone and in an eager Stage 1 step"
  timeout 150 python3 scripts/profile_gpu.py --out "$OUT/profile" --sections loss > "$OUT/profile.log" 2>&1; grep -E " ms|FAILED" "$OUT/profile/loss.txt" | grep -v "^ *[a-z_:]*  " | head -12
  step "fused loss memory, seed preset, B2 (throughput at B4, eager)"
  timeout 120 python3 scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 \
    --throughput-batch 4 --steps 10 --impl chunked | tee "$OUT/loss-memory-b2.jsonl"
  step "muse bench speed: stage1 and gpt, eager and compiled (training loss = the fused loss)"
  timeout 200 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt \
    --variants eager,compiled --out "$OUT/speed" 2>&1 | grep -E "^\| (stage1|gpt)|ceilings|Complex linear"
  step "generation speed, seed size, batch 1, greedy: eager step vs compiled CUDA graph"
  timeout 200 python3 scripts/gen_speed.py --device cuda --preset seed --tokens 1000 --models stage1:mix,stage1,gpt \
    | tee "$OUT/gen-speed.jsonl"
  ;;
last)
  step "CUDA tests: fused loss, fast decoding, generate CLI"
  timeout 150 python3 -m pytest -q -n 4 -p no:cacheprovider --tb=line --muse-device cuda tests/train/test_fused_loss.py \
    tests/train/test_generate_fast_path.py tests/models/test_stage1_decode_step.py tests/models/test_generate_incremental.py \
    > "$OUT/cuda-tests.txt" 2>&1; grep -E "^/|^E |Error|passed|failed" "$OUT/cuda-tests.txt" | tail -14
  step "verify on CUDA: the fused loss"
  timeout 120 python3 -m muse verify --profile ci --device cuda -n 4 -k "loss" --out "$OUT/verify-loss" 2>&1 | grep -E "linear_cross|passed|failed"
  step "fused loss memory B2, throughput B4 eager, Stage 1 and Phase 2"
  timeout 90 python3 scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 \
    --throughput-batch 4 --steps 10 --impl chunked | tee "$OUT/loss-memory-b2.jsonl"
  step "throughput B4 compiled (model and loss), Stage 1"
  timeout 150 python3 scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 --models stage1 \
    --throughput-batch 4 --steps 10 --impl chunked --compile | tee "$OUT/loss-compiled-b4.jsonl"
  ;;
sweep1)
  step "CUDA tests: fused loss, fast decoding"
  timeout 130 python3 -m pytest -q -n 4 -p no:cacheprovider --tb=line --muse-device cuda tests/train/test_fused_loss.py \
    tests/train/test_generate_fast_path.py tests/models/test_stage1_decode_step.py tests/models/test_generate_incremental.py \
    tests/models/test_phase2_incremental_state.py > "$OUT/cuda-tests.txt" 2>&1; grep -E "^/|^E |passed|failed" "$OUT/cuda-tests.txt" | tail -8
  step "verify on CUDA: the fused loss (online log-sum-exp)"
  timeout 100 python3 -m muse verify --profile ci --device cuda -n 4 -k "loss" --out "$OUT/verify-loss" 2>&1 | grep -E "linear_cross|passed|failed"
  step "fused loss memory B2, throughput B4 eager, Stage 1 and Phase 2"
  timeout 80 python3 scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 \
    --throughput-batch 4 --steps 10 --impl chunked | tee "$OUT/loss-memory-b2.jsonl"
  step "generation speed, Phase 2 O(1) step, seed size"
  timeout 60 python3 scripts/gen_speed.py --device cuda --preset seed --tokens 300 --models phase2 | tee "$OUT/gen-speed-phase2.jsonl"
  for args in "" "--model-arg lambda_kind=real" "--model-arg r_min=0.0 --model-arg r_max=0.99" \
              "--model-arg r_min=0.99 --model-arg r_max=0.9999" "--model-arg embedding_init=normal"; do
    name=$(echo "mix $args" | tr -c 'a-z0-9_.=\n' '-')
    step "Stage 1 mix at the benchmark budget: ${args:-as is}"
    timeout 75 python3 -m muse train --model stage1 --preset mix $args --device cuda --no-compile \
      "${DATA[@]}" "${BUDGET[@]}" --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress \
      --out "$OUT/train-$name" 2>&1 | grep -E "final eval PPL|train tok/s|parameters|Error"
  done
  ;;
sweep2)
  B="--model-arg r_min=0.0 --model-arg r_max=0.99 --model-arg embedding_init=normal"
  for args in "$B" "$B --model-arg conv_kernel=4" "$B --model-arg gate=true" "$B --model-arg conv_kernel=4 --model-arg gate=true" \
              "$B --model-arg conv_kernel=4 --model-arg gate=true --model-arg omega_init=uniform" \
              "$B --model-arg conv_kernel=4 --model-arg gate=true --model-arg head_init=normal" \
              "$B --model-arg conv_kernel=4 --model-arg gate=true --lr 2e-3 --min-lr 2e-4"; do
    name=$(echo "mix $args" | sed 's/--model-arg //g' | tr -c 'a-z0-9_.=\n' '-')
    step "Stage 1 mix at the benchmark budget: $args"
    timeout 75 python3 -m muse train --model stage1 --preset mix --device cuda --no-compile \
      "${DATA[@]}" "${BUDGET[@]}" $args --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress \
      --out "$OUT/train-$name" 2>&1 | grep -E "final eval PPL|train tok/s|parameters|Error"
  done
  ;;
final2)
  step "CUDA tests: whole-loss compile, fullgraph models, fast decoding of the gated mix"
  timeout 110 python3 -m pytest -q -n 4 -p no:cacheprovider --tb=line --muse-device cuda tests/train/test_compiled_model_loss.py \
    tests/models/test_models_fullgraph.py tests/train/test_generate_fast_path.py tests/models/test_stage1_decode_step.py \
    > "$OUT/cuda-tests.txt" 2>&1; grep -E "^/|^E |passed|failed" "$OUT/cuda-tests.txt" | tail -8
  step "muse bench speed: Stage 1 eager vs compiled (model + chunked loss as one graph)"
  timeout 150 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1 \
    --variants eager,compiled --out "$OUT/speed" 2>&1 | grep -E "^\| stage1|ceilings"
  step "Stage 1 criteria with the best Stage 1 (mix preset), Phase 2, its mixer-free variant and the GPT"
  timeout 330 python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix,gpt --device cuda \
    --no-compile "${DATA[@]}" "${BUDGET[@]}" --out "$OUT/bench-mix" | sed -n '/all_pass/,$p' | head -60
  ;;
final3)
  step "CUDA tests: Phase 2 scan kernels, whole-loss compile"
  timeout 120 python3 -m pytest -q -n 4 -p no:cacheprovider --tb=line --muse-device cuda tests/kernels/test_kernels_bk_resolvent.py \
    tests/kernels/test_kernels_hebbian_scan.py tests/kernels/test_kernels_phase2_model.py tests/train/test_compiled_model_loss.py \
    > "$OUT/cuda-tests.txt" 2>&1; grep -E "^/|^E |passed|failed" "$OUT/cuda-tests.txt" | tail -8
  step "muse bench speed: Stage 1 compiled (model + chunked loss as one graph)"
  timeout 130 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1 \
    --variants compiled --out "$OUT/speed" 2>&1 | grep -E "^\| stage1|ceilings"
  step "Phase 2 scans and model, PyTorch scans vs Triton kernels, seed preset, B=4, S=1024 (eager)"
  timeout 120 python3 scripts/bench_phase2_scans.py --sections scans,mixers,model --out "$OUT/phase2-scans.json" \
    2>&1 | tee "$OUT/phase2-scans.txt" | tail -16
  step "Phase 2 model compiled, kernels vs PyTorch scans"
  timeout 170 python3 scripts/bench_phase2_scans.py --sections model --compile --out "$OUT/phase2-compiled.json" \
    2>&1 | tee "$OUT/phase2-compiled.txt" | tail -8
  ;;
final4)
  step "CUDA tests: the Hebbian scan kernel"
  timeout 60 python3 -m pytest -q -n 4 -p no:cacheprovider --tb=line --muse-device cuda tests/kernels/test_kernels_hebbian_scan.py \
    > "$OUT/cuda-tests.txt" 2>&1; grep -E "^/|^E |passed|failed" "$OUT/cuda-tests.txt" | tail -6
  step "muse bench speed: Stage 1 and GPT compiled, same process (model + loss as one graph)"
  timeout 200 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt \
    --variants compiled --out "$OUT/speed" 2>&1 | grep -E "^\| (stage1|gpt)|ceilings"
  ;;
next)
  step "CUDA tests: scan kernels (the fixed Hebbian test), whole-loss compile incl. Phase 2, saved-bytes tests"
  timeout 100 python3 -m pytest -q -n 4 -p no:cacheprovider --tb=line --muse-device cuda tests/kernels \
    tests/train/test_compiled_model_loss.py tests/models/test_saved_activation_bytes.py \
    > "$OUT/cuda-tests.txt" 2>&1; grep -E "^/|^E |passed|failed" "$OUT/cuda-tests.txt" | tail -6
  step "fused loss memory B2 (bool dropout masks), throughput B4 eager"
  timeout 80 python3 scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 \
    --throughput-batch 4 --steps 10 --impl chunked | tee "$OUT/loss-memory-b2.jsonl"
  step "muse bench speed: Stage 1 and GPT compiled in one process (model + loss as one graph)"
  timeout 200 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt \
    --variants eager,compiled --out "$OUT/speed" 2>&1 | grep -E "^\| (stage1|gpt)|ceilings"
  step "Phase 2 with kernels under bf16 autocast and TF32"
  timeout 90 python3 scripts/bench_phase2_scans.py --sections model --amp bf16 2>&1 | grep phase2
  timeout 90 python3 scripts/bench_phase2_scans.py --sections model --tf32 2>&1 | grep phase2
  ;;
s4a)
  step "CUDA tests: scan kernels, whole-loss compile incl. Phase 2, saved-bytes tests"
  timeout 100 python3 -m pytest -q -n 4 -p no:cacheprovider --tb=line --muse-device cuda tests/kernels \
    tests/train/test_compiled_model_loss.py tests/models/test_saved_activation_bytes.py \
    > "$OUT/cuda-tests.txt" 2>&1; grep -E "^/|^E |passed|failed" "$OUT/cuda-tests.txt" | tail -6
  step "fused loss memory B2 (warm, the step's own peak), eager throughput B4"
  timeout 90 python3 scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 \
    --throughput-batch 4 --steps 10 --impl chunked | tee "$OUT/loss-memory-b2.jsonl"
  step "profile: Stage 1 compiled (one-graph loss; default vs reduce-overhead)"
  timeout 200 python3 scripts/profile_gpu.py --out "$OUT/profile" --sections compiled 2>&1 | grep -E "^\[|compile|tok/s" | head -20
  step "Phase 2 model under bf16 autocast, eager and compiled (one graph); TF32 eager"
  timeout 150 python3 scripts/bench_phase2_scans.py --sections model --compile --amp bf16 --out "$OUT/phase2-bf16.json" 2>&1 | grep phase2
  timeout 60 python3 scripts/bench_phase2_scans.py --sections model --tf32 --out "$OUT/phase2-tf32.json" 2>&1 | grep phase2
  ;;
s4b)
  step "CUDA tests: recomputed activations (bit-identity), whole-loss compile incl. CUDA graphs, fullgraph, decoding"
  timeout 110 python3 -m pytest -q -n 4 -p no:cacheprovider --tb=line --muse-device cuda tests/models/test_saved_activation_bytes.py \
    tests/train/test_compiled_model_loss.py tests/kernels/test_kernels_layers.py tests/models/test_models_fullgraph.py \
    tests/models/test_stage1_decode_step.py tests/train/test_generate_fast_path.py \
    tests/kernels/test_kernels_hebbian_scan.py tests/kernels/test_kernels_phase2_model.py \
    > "$OUT/cuda-tests.txt" 2>&1; grep -E "^/|^E |passed|failed" "$OUT/cuda-tests.txt" | tail -8
  step "Hebbian scan (value-tiled kernel), PyTorch vs kernel"
  timeout 40 python3 scripts/bench_phase2_scans.py --sections scans --out "$OUT/scans.json" 2>&1 | grep -i hebb
  step "verify on CUDA: the ops whose saved tensors changed"
  timeout 80 python3 -m muse verify --profile ci --device cuda -n 4 -k "linear or layer_norm or modrelu or complex_diag or dropout" \
    --out "$OUT/verify-cuda" 2>&1 | tail -4
  step "memory B2 (warm measure) + compiled throughput B4, fused vs full, seed preset"
  timeout 190 python3 scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 \
    --throughput-batch 4 --steps 10 --impl chunked --compile | tee "$OUT/loss-memory-b2-compiled.jsonl"
  step "memory B2, Stage 1 mix"
  timeout 50 python3 scripts/loss_memory.py --preset mix --models stage1 --device cuda --batch 2 --seq 1024 \
    --throughput-batch 4 --steps 5 --impl chunked | tee "$OUT/loss-memory-mix.jsonl"
  step "Phase 2 bf16, kernels, compiled with CUDA graphs"
  timeout 80 python3 scripts/bench_phase2_scans.py --sections model --compile --compile-mode reduce-overhead --amp bf16 \
    --modes kernels --out "$OUT/phase2-bf16-cg.json" 2>&1 | grep phase2
  ;;
s4c)
  step "muse bench speed: Stage 1 and GPT compiled with CUDA graphs, same process"
  timeout 150 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt \
    --variants compiled+cudagraphs --out "$OUT/speed" 2>&1 | grep -E "^\| (stage1|gpt)|ceilings"
  step "Stage 1 criteria with the mix Stage 1 (recomputed activations), Phase 2, references"
  timeout 330 python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix,gpt --device cuda \
    --no-compile "${DATA[@]}" "${BUDGET[@]}" --out "$OUT/bench-mix" | sed -n '/all_pass/,$p' | head -40
  ;;
s4d)
  step "muse bench speed: Stage 1 and GPT compiled with CUDA graphs, same process"
  timeout 150 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt \
    --variants compiled+cudagraphs --out "$OUT/speed" 2>&1 | grep -E "^\| (stage1|gpt)|ceilings"
  ;;
s5a)
  step "CUDA tests: the fused loss (bias gradient from the GEMM), whole-loss compile incl. CUDA graphs, speed CLI"
  timeout 120 python3 -m pytest -q -n 4 -p no:cacheprovider --tb=line --muse-device cuda tests/train/test_fused_loss.py \
    tests/train/test_compiled_model_loss.py tests/cli/test_cli_compile_speed.py tests/models/test_model_contract.py \
    > "$OUT/cuda-tests.txt" 2>&1; grep -E "^/|^E |passed|failed" "$OUT/cuda-tests.txt" | tail -8
  step "verify on CUDA: the fused loss"
  timeout 90 python3 -m muse verify --profile ci --device cuda -n 4 -k "loss" --out "$OUT/verify-cuda" 2>&1 | tail -4
  step "what is alive at the peak, B2 S1024 fused: Stage 1 seed, Phase 2 seed"
  for m in stage1 phase2; do
    timeout 60 python3 scripts/peak_composition.py --model $m --device cuda --batch 2 --seq 1024 | tee "$OUT/peak-$m.txt"
  done
  step "fused loss memory B2 (warm measure), both models"
  timeout 90 python3 scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 --steps 0 \
    --impl chunked | tee "$OUT/loss-memory-b2.jsonl"
  step "muse bench speed: Stage 1 and GPT, compiled and compiled with CUDA graphs, same process"
  timeout 280 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt \
    --variants compiled,compiled+cudagraphs --out "$OUT/speed" 2>&1 | grep -E "^\| (stage1|gpt)|ceilings"
  ;;
s5b)
  step "CUDA tests: embedding backward, the loss under autocast, fused loss, whole-loss compile, fullgraph, kernels"
  timeout 130 python3 -m pytest -q -n 4 -p no:cacheprovider --tb=line --muse-device cuda tests/complex/test_complex_embedding_backward.py \
    tests/train/test_fused_loss_autocast.py tests/train/test_fused_loss.py tests/train/test_compiled_model_loss.py \
    tests/models/test_models_fullgraph.py tests/kernels > "$OUT/cuda-tests.txt" 2>&1
  grep -E "^/|^E |passed|failed" "$OUT/cuda-tests.txt" | tail -8
  step "verify on CUDA: the fused loss, the embedding"
  timeout 90 python3 -m muse verify --profile ci --device cuda -n 4 -k "loss or embedding" --out "$OUT/verify-cuda" 2>&1 | tail -3
  step "what is alive at the peak, Stage 1 seed B2 S1024 fused; memory B2 both models"
  timeout 40 python3 scripts/peak_composition.py --model stage1 --device cuda --batch 2 --seq 1024 | tee "$OUT/peak-stage1.txt"
  timeout 60 python3 scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 --steps 0 \
    --impl chunked | tee "$OUT/loss-memory-b2.jsonl"
  step "Phase 2 seed: eager fp32 PyTorch scans, then bf16 + kernels eager and compiled with CUDA graphs (one process)"
  timeout 150 python3 scripts/bench_phase2_scans.py --sections baseline,model --compile --compile-mode reduce-overhead \
    --amp bf16 --modes kernels --out "$OUT/phase2.json" 2>&1 | grep phase2
  step "muse bench speed: Stage 1 and GPT compiled with CUDA graphs, same process"
  timeout 170 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt \
    --variants compiled+cudagraphs --out "$OUT/speed" 2>&1 | grep -E "^\| (stage1|gpt)|ceilings"
  ;;
s5c)
  step "CUDA tests: BK prefetch kernels (bit-identical), tracker sees kernel scratch, Phase 2 kernels, loss under autocast, embedding"
  timeout 150 python3 -m pytest -q -n 4 -p no:cacheprovider --tb=line --muse-device cuda tests/kernels/test_kernels_bk_prefetch.py \
    tests/kernels/test_kernels_bk_resolvent.py tests/kernels/test_kernels_phase2_model.py tests/kernels/test_tracker_sees_kernel_scratch.py \
    tests/train/test_fused_loss_autocast.py tests/complex/test_complex_embedding_backward.py > "$OUT/cuda-tests.txt" 2>&1
  grep -E "^/|^E |passed|failed" "$OUT/cuda-tests.txt" | tail -8
  step "memory B2 (tracker now sees kernel scratch): seed both models, Stage 1 mix"
  timeout 60 python3 scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 --steps 0 --impl chunked \
    | tee "$OUT/loss-memory-b2.jsonl"
  timeout 40 python3 scripts/loss_memory.py --preset mix --models stage1 --device cuda --batch 2 --seq 1024 --steps 0 \
    --impl chunked | tee "$OUT/loss-memory-mix.jsonl"
  step "scans: BK-Core with prefetch rings, Hebbian"
  timeout 40 python3 scripts/bench_phase2_scans.py --sections scans --out "$OUT/scans.json" 2>&1 | grep -iE "bk|hebb"
  step "Phase 2 seed: baseline, then bf16 + kernels compiled with CUDA graphs"
  timeout 110 python3 scripts/bench_phase2_scans.py --sections baseline,model --compile --compile-mode reduce-overhead \
    --amp bf16 --modes kernels --out "$OUT/phase2.json" 2>&1 | grep phase2
  step "generation, batch 1: the gated mix Stage 1 (fast path)"
  timeout 60 python3 scripts/gen_speed.py --device cuda --preset seed --tokens 1000 --models stage1:mix --paths fast \
    | tee "$OUT/gen-speed-mix.jsonl"
  step "compiled training with CUDA graphs, fused vs full logits, B4 (memory B2)"
  timeout 200 python3 scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 --throughput-batch 4 \
    --steps 10 --impl chunked --compile --compile-mode reduce-overhead | tee "$OUT/loss-graphs.jsonl"
  ;;
s6a)
  step "memory B2: the tracker's agreement after the kernel-scratch change, both seed models"
  timeout 70 python3 scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 --steps 0 --impl chunked \
    | tee "$OUT/loss-memory-b2.jsonl"
  step "muse bench speed: Stage 1 and GPT with CUDA graphs (same process); Phase 2 bf16 + kernels + CUDA graphs"
  timeout 150 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt \
    --variants compiled+cudagraphs --out "$OUT/speed" 2>&1 | grep -E "^\| (stage1|gpt)|ceilings|Complex linear"
  timeout 110 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models phase2 --amp bf16 \
    --variants compiled+kernels+cudagraphs --out "$OUT/speed-phase2" 2>&1 | grep -E "^\| phase2"
  step "compiled training with CUDA graphs, fused vs full logits, B4 (memory B2)"
  timeout 200 python3 scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 --throughput-batch 4 \
    --steps 10 --impl chunked --compile --compile-mode reduce-overhead | tee "$OUT/loss-graphs.jsonl"
  ;;
s6b)
  step "Stage 1 criteria with the mix Stage 1, Phase 2, references (the current tree)"
  timeout 400 python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix,gpt --device cuda \
    --no-compile "${DATA[@]}" "${BUDGET[@]}" --out "$OUT/bench-mix" | sed -n '/all_pass/,$p' | head -40
  step "what is alive at the peak, Stage 1 seed"
  timeout 60 python3 scripts/peak_composition.py --model stage1 --device cuda --batch 2 --seq 1024 | tee "$OUT/peak-stage1.txt"
  ;;
s7a)
  step "CUDA tests: the complex-linear kernel, the fused loss paths"
  timeout 60 python3 -m pytest -q -n 4 -p no:cacheprovider --muse-device cuda tests/kernels/test_kernels_complex_linear.py \
    tests/train/test_fused_loss.py tests/complex/test_complex_linalg.py 2>&1 | tee "$OUT/cuda-tests.txt" | tail -4
  step "verify on CUDA: linear (eager, triton), the loss paths"
  MUSE_VERIFY_IMPL=eager,triton timeout 50 python3 -m muse verify --profile ci --device cuda -n 4 \
    -k "linear or loss" --out "$OUT/verify-cuda" 2>&1 | tail -4
  step "fused (each model's path) vs full logits: memory B2, compiled training with CUDA graphs B4"
  timeout 170 python3 scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 --throughput-batch 4 \
    --steps 10 --compile --compile-mode reduce-overhead | tee "$OUT/loss-graphs.jsonl"
  step "Stage 1 criteria with the mix Stage 1, Phase 2, references (the current tree)"
  timeout 290 python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix,gpt --device cuda \
    --no-compile "${DATA[@]}" "${BUDGET[@]}" --out "$OUT/bench-mix" | sed -n '/all_pass/,$p' | head -40
  ;;
s7b)
  step "ops as CUDA graphs: layer_norm, modrelu, complex linear (eager, kernels, compiled, compiled+kernels)"
  timeout 90 python3 -c "from benchmarks.speed import time_ops; print(time_ops(4096, 512))" 2>&1 \
    | grep -v Warning | tee "$OUT/ops.txt"
  step "CUDA tests of the complex-linear kernel"
  timeout 45 python3 -m pytest -q -n 8 -p no:cacheprovider --muse-device cuda tests/kernels/test_kernels_complex_linear.py \
    2>&1 | tee "$OUT/cuda-tests.txt" | tail -3
  step "issue 12 sweep: the 4x budget trend and mix ablations, eager, 6 runs at a time on the one GPU"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --seed 1337
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress)
  export OMP_NUM_THREADS=2
  printf '%s\n' \
    "x4-mix|--model stage1 --preset mix --tokens 6291456" \
    "x4-phase2|--model phase2 --preset seed --tokens 6291456" \
    "x4-gpt|--model gpt --preset seed --tokens 6291456" \
    "x4-stage1-seed|--model stage1 --preset seed --tokens 6291456" \
    "mix-tied|--model stage1 --preset mix --tokens 1572864 --model-arg tie_head=true" \
    "mix-dropout0.2|--model stage1 --preset mix --tokens 1572864 --dropout 0.2" \
    "mix-tied-dropout0.2|--model stage1 --preset mix --tokens 1572864 --model-arg tie_head=true --dropout 0.2" \
    "mix-ffn-only|--model stage1 --preset mix --tokens 1572864 --model-arg mixer=none" \
    "mix-real-lambda|--model stage1 --preset mix --tokens 1572864 --model-arg lambda_kind=real" \
    "mix-dropout0.3|--model stage1 --preset mix --tokens 1572864 --dropout 0.3" \
    "mix-tied-lr2e-3|--model stage1 --preset mix --tokens 1572864 --model-arg tie_head=true --lr 2e-3 --min-lr 2e-4" \
    > "$OUT/runs.txt"
  sweep 6 420 "$OUT/runs.txt"
  ;;
s8a)
  step "CUDA tests: the loss as custom ops (compiled, CUDA graphs), the complex-linear kernel, modReLU backward"
  timeout 120 python3 -m pytest -q -n 4 -p no:cacheprovider --tb=line --muse-device cuda tests/train/test_compiled_model_loss.py \
    tests/train/test_fused_loss.py tests/kernels/test_kernels_complex_linear.py tests/complex/test_complex_autograd.py \
    tests/kernels/test_kernels_layers.py > "$OUT/cuda-tests.txt" 2>&1; grep -E "^/|^E |passed|failed" "$OUT/cuda-tests.txt" | tail -8
  step "fused (each model's path) vs full logits: memory B2, compiled training with CUDA graphs B4"
  timeout 170 python3 scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 --throughput-batch 4 \
    --steps 10 --compile --compile-mode reduce-overhead | tee "$OUT/loss-graphs.jsonl"
  step "the loss compiled vs eager on CUDA: peak above the start (seed shapes, B4 S1024)"
  timeout 50 python3 scripts/compiled_loss_memory.py --device cuda --impl chunked --dtype float16 --tokens 4096 --d 512 \
    --vocab 50257 --chunk 0 2>&1 | grep peak | tee "$OUT/compiled-loss-memory.txt"
  timeout 50 python3 scripts/compiled_loss_memory.py --device cuda --impl chunked-tokens --dtype float32 --tokens 4096 \
    --d 512 --vocab 50257 --chunk 0 2>&1 | grep peak | tee -a "$OUT/compiled-loss-memory.txt"
  step "stability at S=8192: 100 random-input trials, Stage 1 mix (complex and real lambda)"
  for arg in lambda_kind=complex lambda_kind=real; do
    timeout 50 python3 scripts/long_trials.py --preset mix --model-arg "$arg" --seq 8192 --trials 100 --device cuda \
      2>&1 | tail -1 | tee -a "$OUT/long-trials.jsonl"
  done
  step "what is alive at the peak, B2 S1024, fused loss: Stage 1 mix, Phase 2, Stage 1 seed"
  for m in "stage1 --preset mix" "phase2 --preset seed" "stage1 --preset seed"; do
    # shellcheck disable=SC2086
    timeout 40 python3 scripts/peak_composition.py --model $m --device cuda --batch 2 --seq 1024 2>&1 | head -16
  done | tee "$OUT/peaks.txt"
  ;;
s8b)
  step "Stage 1 criteria with the mix Stage 1 at real lambda (in the background, sharing the GPU with the sweep: its tok/s is not a speed measurement)"
  ( timeout 560 python3 -m muse bench stage1 --preset seed --stage1-preset mix --stage1-arg lambda_kind=real \
      --references phase2_nomix,gpt --device cuda --no-compile "${DATA[@]}" "${BUDGET[@]}" --out "$OUT/bench-mix-real" \
      > "$OUT/bench-mix-real.txt" 2>&1 ) &
  step "issue 12 sweep: seeds of complex vs real lambda, Phase 2 seeds, weight decay and the short convolution on real lambda"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --seed 1337 --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress)
  export OMP_NUM_THREADS=2
  printf '%s\n' \
    "mix-seed1|--model stage1 --preset mix --seed 1" \
    "mix-real-seed1|--model stage1 --preset mix --model-arg lambda_kind=real --seed 1" \
    "phase2-seed1|--model phase2 --preset seed --seed 1" \
    "mix-seed2|--model stage1 --preset mix --seed 2" \
    "mix-real-seed2|--model stage1 --preset mix --model-arg lambda_kind=real --seed 2" \
    "phase2-seed2|--model phase2 --preset seed --seed 2" \
    "mix-real-wd0.3|--model stage1 --preset mix --model-arg lambda_kind=real --weight-decay 0.3" \
    "mix-real-wd1.0|--model stage1 --preset mix --model-arg lambda_kind=real --weight-decay 1.0" \
    "mix-real-conv4|--model stage1 --preset mix --model-arg lambda_kind=real --model-arg conv_kernel=4" \
    > "$OUT/runs.txt"
  sweep 6 480 "$OUT/runs.txt"  # 5 runs at a time beside the criteria job
  wait
  grep -H "final eval PPL" "$OUT"/*/stdout.txt
  sed -n '/all_pass/,$p' "$OUT/bench-mix-real.txt" | head -40
  ;;
s8c)
  step "CUDA tests and verify of the loss: chunk bodies as Triton kernels (default) and in PyTorch"
  timeout 90 python3 -m pytest -q -n 4 -p no:cacheprovider --tb=line --muse-device cuda tests/kernels/test_kernels_loss.py \
    tests/train/test_fused_loss.py tests/train/test_compiled_model_loss.py > "$OUT/cuda-tests.txt" 2>&1
  grep -E "^/|^E |passed|failed" "$OUT/cuda-tests.txt" | tail -6
  MUSE_VERIFY_IMPL=eager,triton timeout 70 python3 -m muse verify --profile ci --device cuda -n 4 -k "loss" \
    --out "$OUT/verify-loss" 2>&1 | tail -3
  step "compiled training with CUDA graphs, Stage 1 seed B4: full logits vs the loss's loops as custom ops (bodies: Triton kernels, nested compile) vs traced; budgets 1/16, 1/8, 1/4"
  timeout 280 python3 scripts/compiled_loss_speed.py --model stage1 --preset seed --batch 4 --seq 1024 \
    --variants 0,1,2,3,4,5 --profile 1,2 2>&1 | grep "^{" | tee "$OUT/compiled-loss-speed.jsonl"
  step "Phase 2 compiled with CUDA graphs, B4: full logits vs custom-op loops with Triton bodies"
  timeout 100 python3 scripts/compiled_loss_speed.py --model phase2 --preset seed --batch 4 --seq 1024 \
    --variants 0,1 2>&1 | grep "^{" | tee "$OUT/compiled-loss-speed-phase2.jsonl"
  ;;
s9a)
  step "CUDA tests: loss kernels (target column in the kernel, one-tile log-sum-exp), complex diagonal scan"
  timeout 50 python3 -m pytest -q -n 4 -p no:cacheprovider --tb=line --muse-device cuda tests/kernels/test_kernels_loss.py \
    tests/scan/test_complex_diag_scan.py > "$OUT/cuda-tests.txt" 2>&1
  grep -E "^/|^E |passed|failed" "$OUT/cuda-tests.txt" | tail -6
  step "compiled training with CUDA graphs, Stage 1 seed B4: full logits vs custom-op loops with Triton bodies, budgets 1/16 and 1/8"
  TORCH_LOGS=perf_hints timeout 150 python3 scripts/compiled_loss_speed.py --model stage1 --preset seed --batch 4 --seq 1024 \
    --variants 0,1,4 --profile 1 > "$OUT/compiled-loss-speed.log" 2>&1
  grep "^{" "$OUT/compiled-loss-speed.log" | tee "$OUT/compiled-loss-speed.jsonl"; grep -i "skipping cudagraph" "$OUT/compiled-loss-speed.log" | sort | uniq -c | head -5
  step "what is alive at the peak, B2 S1024, fused loss: Stage 1 mix (real lambda, powers gathered), Phase 2, Stage 1 seed"
  for m in "stage1 --preset mix" "phase2 --preset seed" "stage1 --preset seed"; do
    # shellcheck disable=SC2086
    timeout 40 python3 scripts/peak_composition.py --model $m --device cuda --batch 2 --seq 1024 2>&1 | head -14
  done | tee "$OUT/peaks.txt"
  ;;
s10a)
  step "CUDA tests and verify of the loss after the last kernel changes (target column in the kernel, GEMM-epilogue d(hidden))"
  timeout 50 python3 -m pytest -q -n 4 -p no:cacheprovider --tb=line --muse-device cuda tests/kernels/test_kernels_loss.py \
    tests/train/test_fused_loss.py > "$OUT/cuda-tests.txt" 2>&1
  grep -E "^/|^E |passed|failed" "$OUT/cuda-tests.txt" | tail -6
  MUSE_VERIFY_IMPL=eager,triton timeout 60 python3 -m muse verify --profile ci --device cuda -n 4 -k "loss" \
    --out "$OUT/verify-loss" 2>&1 | tail -3
  step "Phase 2 compiled with CUDA graphs, B4: full logits vs the token-chunked loss (Triton bodies)"
  timeout 90 python3 scripts/compiled_loss_speed.py --model phase2 --preset seed --batch 4 --seq 1024 \
    --variants 0,1 2>&1 | grep "^{" | tee "$OUT/compiled-loss-speed-phase2.jsonl"
  step "Stage 1 criteria with the mix Stage 1 (real lambda), Phase 2, references: the current tree, alone on the GPU"
  timeout 370 python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix,gpt --device cuda \
    --no-compile "${DATA[@]}" "${BUDGET[@]}" --out "$OUT/bench-mix" | sed -n '/all_pass/,$p' | head -40
  ;;
s10b)
  step "what is alive at the peak, B2 S1024, fused loss: Stage 1 mix (powers gathered)"
  timeout 80 python3 scripts/peak_composition.py --model stage1 --preset mix --device cuda --batch 2 --seq 1024 2>&1 \
    | head -16 | tee "$OUT/peak-mix.txt"
  step "Stage 1 criteria at the seed preset (in the background, sharing the GPU with the sweep: its tok/s are not speed figures)"
  ( timeout 450 python3 -m muse bench stage1 --preset seed --references phase2_nomix,gpt --device cuda --no-compile \
      "${DATA[@]}" "${BUDGET[@]}" --out "$OUT/bench-seed" > "$OUT/bench-seed.txt" 2>&1 ) &
  step "issue 12 sweep: weight decay 1.0 for every model, more seeds of the GPT"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress)
  export OMP_NUM_THREADS=2
  printf '%s\n' \
    "phase2-wd1.0|--model phase2 --preset seed --weight-decay 1.0 --seed 1337" \
    "gpt-wd1.0|--model gpt --preset seed --weight-decay 1.0 --seed 1337" \
    "mix-wd1.0-seed1|--model stage1 --preset mix --weight-decay 1.0 --seed 1" \
    "phase2-wd1.0-seed1|--model phase2 --preset seed --weight-decay 1.0 --seed 1" \
    "gpt-seed1|--model gpt --preset seed --seed 1" \
    "mix-wd1.0-seed2|--model stage1 --preset mix --weight-decay 1.0 --seed 2" \
    "phase2-wd1.0-seed2|--model phase2 --preset seed --weight-decay 1.0 --seed 2" \
    "gpt-seed2|--model gpt --preset seed --seed 2" \
    > "$OUT/runs.txt"
  sweep 6 440 "$OUT/runs.txt"  # 5 runs at a time beside the criteria job
  wait
  grep -H "final eval PPL" "$OUT"/*/stdout.txt
  sed -n '/all_pass/,$p' "$OUT/bench-seed.txt" | head -40
  ;;
s10c)
  step "eager training throughput B4, fused vs full logits, both seed models, alone on the GPU (20 steps)"
  timeout 100 python3 scripts/loss_memory.py --preset seed --device cuda --batch 2 --seq 1024 --throughput-batch 4 \
    --steps 20 --impl chunked | tee "$OUT/loss-eager-b4.jsonl"
  step "compiled Stage 1 seed training with CUDA graphs, B4: layer_norm and modReLU compiled vs as Triton kernels in the graph"
  timeout 110 python3 scripts/compiled_loss_speed.py --model stage1 --preset seed --batch 4 --seq 1024 --steps 20 \
    --variants 0,1 2>&1 | grep "^{" | tee "$OUT/compiled-default.jsonl"
  MUSE_KERNELS_IN_COMPILE=layer_norm,modrelu timeout 110 python3 scripts/compiled_loss_speed.py --model stage1 \
    --preset seed --batch 4 --seq 1024 --steps 20 --variants 1 2>&1 | grep "^{" | tee "$OUT/compiled-ln-kernels.jsonl"
  step "issue 12 sweep at weight decay 1.0: the mix Stage 1's width, state, learning rate, dropout, ring, positions"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --seed 1337 --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress)
  export OMP_NUM_THREADS=2
  M="--model stage1 --preset mix --weight-decay 1.0"
  printf '%s\n' \
    "mix-wd3.0|--model stage1 --preset mix --weight-decay 3.0" \
    "mix-wd1.0-dstate2048|$M --model-arg d_state=2048" \
    "mix-wd1.0-dffn2048|$M --model-arg d_ffn=2048" \
    "mix-wd1.0-dffn512|$M --model-arg d_ffn=512" \
    "mix-wd1.0-dropout0|$M --dropout 0.0" \
    "mix-wd1.0-lr2e-3|$M --lr 2e-3 --min-lr 2e-4" \
    "mix-wd1.0-lr5e-4|$M --lr 5e-4 --min-lr 5e-5" \
    "mix-wd1.0-rmax0.999|$M --model-arg r_max=0.999" \
    "mix-wd1.0-zeta0.25|$M --model-arg zeta_scale=0.25" \
    "phase2-wd3.0|--model phase2 --preset seed --weight-decay 3.0" \
    > "$OUT/runs.txt"
  sweep 6 300 "$OUT/runs.txt"
  grep -H "final eval PPL" "$OUT"/*/stdout.txt
  ;;
s10d)
  step "Stage 1 criteria with the mix Stage 1 at zeta_scale 0.25 (in the background beside the sweep: its tok/s are not speed figures)"
  ( timeout 330 python3 -m muse bench stage1 --preset seed --stage1-preset mix --stage1-arg zeta_scale=0.25 \
      --references phase2_nomix,gpt --device cuda --no-compile "${DATA[@]}" "${BUDGET[@]}" --out "$OUT/bench-mix-zeta0.25" \
      > "$OUT/bench-mix-zeta0.25.txt" 2>&1 ) &
  step "issue 12 sweep: the position table's amplitude (zeta_scale) with weight decay, seeds; Phase 2 at 0.25"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress)
  export OMP_NUM_THREADS=2
  M="--model stage1 --preset mix --seed 1337"
  printf '%s\n' \
    "mix-wd1.0-zeta0|$M --weight-decay 1.0 --model-arg zeta_scale=0.0" \
    "mix-wd1.0-zeta0.1|$M --weight-decay 1.0 --model-arg zeta_scale=0.1" \
    "mix-wd1.0-zeta0.5|$M --weight-decay 1.0 --model-arg zeta_scale=0.5" \
    "mix-wd3.0-zeta0.25|$M --weight-decay 3.0 --model-arg zeta_scale=0.25" \
    "mix-wd3.0-zeta0.1|$M --weight-decay 3.0 --model-arg zeta_scale=0.1" \
    "mix-wd1.0-zeta0.25-seed1|--model stage1 --preset mix --seed 1 --weight-decay 1.0 --model-arg zeta_scale=0.25" \
    "mix-wd1.0-zeta0.25-seed2|--model stage1 --preset mix --seed 2 --weight-decay 1.0 --model-arg zeta_scale=0.25" \
    "phase2-zeta0.25|--model phase2 --preset seed --seed 1337 --model-arg zeta_scale=0.25" \
    "phase2-wd1.0-zeta0.25|--model phase2 --preset seed --seed 1337 --weight-decay 1.0 --model-arg zeta_scale=0.25" \
    > "$OUT/runs.txt"
  sweep 6 320 "$OUT/runs.txt"
  wait
  grep -H "final eval PPL" "$OUT"/*/stdout.txt
  sed -n '/all_pass/,$p' "$OUT/bench-mix-zeta0.25.txt" | head -40
  ;;
s10e)
  step "Stage 1 criteria with the mix Stage 1, both presets at zeta_scale 0.25 (Phase 2's default now), alone on the GPU"
  timeout 245 python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix --device cuda \
    --no-compile "${DATA[@]}" "${BUDGET[@]}" --eval-every 0 --out "$OUT/bench-mix" | sed -n '/all_pass/,$p' | head -32
  ;;
s11a)
  step "Stage 1 criteria with the current presets (mix Stage 1 and Phase 2 both at zeta_scale 0.25), alone on the GPU"
  timeout 300 python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix,gpt --device cuda \
    --no-compile "${DATA[@]}" "${BUDGET[@]}" --out "$OUT/bench-mix" | sed -n '/all_pass/,$p' | head -40
  step "Stage 1 mix and Phase 2 compiled with CUDA graphs: layer_norm/modReLU kernels in the graph, alternating"
  timeout 150 python3 scripts/compiled_loss_speed.py --model stage1 --preset seed --batch 4 --seq 1024 --steps 20 \
    --variants 1,7,1,7 2>&1 | grep "^{" | tee "$OUT/compiled-ln-kernels.jsonl"
  ;;
s11b)
  step "Stage 1 criteria at weight decay 1.0, current presets (in the background beside the sweep: its tok/s are not speed figures)"
  ( timeout 450 python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix --device cuda \
      --no-compile "${DATA[@]}" "${BUDGET[@]}" --weight-decay 1.0 --out "$OUT/bench-mix-wd1.0" > "$OUT/bench-mix-wd1.0.txt" 2>&1 ) &
  step "issue 12 sweep: seeds and position amplitudes at the budget (wd 0.1), both models"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress)
  export OMP_NUM_THREADS=2
  printf '%s\n' \
    "mix-seed1|--model stage1 --preset mix --seed 1" \
    "phase2-seed1|--model phase2 --preset seed --seed 1" \
    "mix-seed2|--model stage1 --preset mix --seed 2" \
    "phase2-seed2|--model phase2 --preset seed --seed 2" \
    "mix-zeta0.1|--model stage1 --preset mix --seed 1337 --model-arg zeta_scale=0.1" \
    "phase2-zeta0.1|--model phase2 --preset seed --seed 1337 --model-arg zeta_scale=0.1" \
    "mix-zeta0|--model stage1 --preset mix --seed 1337 --model-arg zeta_scale=0.0" \
    "phase2-zeta0|--model phase2 --preset seed --seed 1337 --model-arg zeta_scale=0.0" \
    > "$OUT/runs.txt"
  sweep 6 440 "$OUT/runs.txt"
  wait
  grep -H "final eval PPL" "$OUT"/*/stdout.txt
  sed -n '/all_pass/,$p' "$OUT/bench-mix-wd1.0.txt" | head -30
  ;;
s12a)
  step "ComplexRetention tests on CUDA (the Hebbian Triton kernel behind the layer)"
  timeout 60 python3 -m pytest -q -p no:cacheprovider tests/nn/test_complex_retention.py 2>&1 | tail -3
  step "issue 12: the content-addressed complex mixer (ComplexRetention) in the mix Stage 1, at the budget"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress --seed 1337)
  export OMP_NUM_THREADS=2
  printf '%s\n' \
    "mix|--model stage1 --preset mix" \
    "retention|--model stage1 --preset mix --model-arg mixer=retention" \
    "hybrid|--model stage1 --preset mix --model-arg mixer=hybrid" \
    "retention-zeta|--model stage1 --preset mix --model-arg mixer=retention --model-arg phase_init=zeta" \
    "retention-h4|--model stage1 --preset mix --model-arg mixer=retention --model-arg n_heads=4" \
    "retention-nophase|--model stage1 --preset mix --model-arg mixer=retention --model-arg phase_init=none" \
    > "$OUT/runs.txt"
  sweep 6 500 "$OUT/runs.txt"
  grep -H "final eval PPL\|tokens/s\|peak" "$OUT"/*/stdout.txt | head -40
  ;;
s12b)
  step "Stage 1 criteria with the current presets (mix Stage 1 and Phase 2 both at zeta_scale 0.25; in the background beside the seeds: its tok/s are not speed figures)"
  ( timeout 540 python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix --device cuda \
      --no-compile "${DATA[@]}" "${BUDGET[@]}" --out "$OUT/bench-mix" > "$OUT/bench-mix.txt" 2>&1 ) &
  step "issue 12: seeds 1 and 2 of mix, hybrid, retention and Phase 2 at the budget"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress)
  export OMP_NUM_THREADS=1
  : > "$OUT/runs.txt"
  for seed in 1 2; do
    printf '%s\n' \
      "mix-seed$seed|--model stage1 --preset mix --seed $seed" \
      "hybrid-seed$seed|--model stage1 --preset mix --model-arg mixer=hybrid --seed $seed" \
      "retention-seed$seed|--model stage1 --preset mix --model-arg mixer=retention --seed $seed" \
      "phase2-seed$seed|--model phase2 --preset seed --seed $seed" >> "$OUT/runs.txt"
  done
  sweep 9 530 "$OUT/runs.txt"
  wait
  grep -H "final eval PPL" "$OUT"/*/stdout.txt
  sed -n '/all_pass/,$p' "$OUT/bench-mix.txt" | head -40
  ;;
s12c)
  step "Stage 1 criteria at weight decay 3.0 for every run, current presets (in the background beside the sweep)"
  ( timeout 540 python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix --device cuda \
      --no-compile "${DATA[@]}" "${BUDGET[@]}" --weight-decay 3.0 --out "$OUT/bench-mix-wd3" > "$OUT/bench-mix-wd3.txt" 2>&1 ) &
  step "issue 12: weight decay 3.0 for both models, seeds and the position amplitude"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress --weight-decay 3.0)
  export OMP_NUM_THREADS=1
  printf '%s\n' \
    "phase2-wd3-seed1|--model phase2 --preset seed --seed 1" \
    "phase2-wd3-seed2|--model phase2 --preset seed --seed 2" \
    "mix-wd3-seed1|--model stage1 --preset mix --seed 1" \
    "mix-wd3-seed2|--model stage1 --preset mix --seed 2" \
    "mix-wd3-zeta0.1|--model stage1 --preset mix --seed 1337 --model-arg zeta_scale=0.1" \
    "mix-wd3-zeta0.1-seed1|--model stage1 --preset mix --seed 1 --model-arg zeta_scale=0.1" \
    "phase2-wd3-zeta0.1|--model phase2 --preset seed --seed 1337 --model-arg zeta_scale=0.1" \
    "hybrid-wd3|--model stage1 --preset mix --seed 1337 --model-arg mixer=hybrid" \
    > "$OUT/runs.txt"
  sweep 9 530 "$OUT/runs.txt"
  wait
  grep -H "final eval PPL" "$OUT"/*/stdout.txt
  sed -n '/all_pass/,$p' "$OUT/bench-mix-wd3.txt" | head -40
  ;;
s12d)
  step "issue 12: weight decay 3.0: the GPT reference, more seeds at zeta 0.1, retention"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress --weight-decay 3.0)
  export OMP_NUM_THREADS=1
  printf '%s\n' \
    "gpt-wd3|--model gpt --preset seed --seed 1337" \
    "gpt-wd3-seed1|--model gpt --preset seed --seed 1" \
    "phase2-wd3-zeta0.1-seed1|--model phase2 --preset seed --seed 1 --model-arg zeta_scale=0.1" \
    "phase2-wd3-zeta0.1-seed2|--model phase2 --preset seed --seed 2 --model-arg zeta_scale=0.1" \
    "mix-wd3-zeta0.1-seed2|--model stage1 --preset mix --seed 2 --model-arg zeta_scale=0.1" \
    "retention-wd3|--model stage1 --preset mix --seed 1337 --model-arg mixer=retention" \
    "seed-wd3|--model stage1 --preset seed --seed 1337" \
    > "$OUT/runs.txt"
  sweep 8 400 "$OUT/runs.txt"
  grep -H "final eval PPL" "$OUT"/*/stdout.txt
  ;;
s12e)
  step "Stage 1 criteria with the current defaults (mix and Phase 2 at zeta_scale 0.1), weight decay 3.0, alone on the GPU"
  timeout 400 python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix,gpt --device cuda \
    --no-compile "${DATA[@]}" "${BUDGET[@]}" --weight-decay 3.0 --out "$OUT/bench-mix" | sed -n '/all_pass/,$p' | head -45
  ;;
s13a)
  step "Stage 1 criteria of the current presets at weight decay 3.0, seeds 1 and 2 (side by side: tok/s are not speed figures)"
  SEEDLESS=(--tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20)
  for seed in 1 2; do
    ( timeout 540 python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix --device cuda \
        --no-compile "${DATA[@]}" "${SEEDLESS[@]}" --seed $seed --weight-decay 3.0 --out "$OUT/bench-mix-seed$seed" \
        > "$OUT/bench-mix-seed$seed.txt" 2>&1 ) &
  done
  wait
  for seed in 1 2; do sed -n '/all_pass/,/planar layout/p' "$OUT/bench-mix-seed$seed.txt"; done
  ;;
s14a)
  step "CUDA tests of the kernels (the backward kernels' next-tile prefetch, launch shapes of 0b51fbe)"
  timeout 120 python3 -m pytest --muse-device cuda tests/kernels -q -p no:cacheprovider 2>&1 | tail -3
  step "the complex linear's backward pieces, db variants included"
  timeout 90 python3 scripts/kernel_sweep.py --part linear | tee "$OUT/linear.txt"
  step "compiled Stage 1 seed training with CUDA graphs, B4: layer_norm and modReLU compiled (1) vs their kernels in the graph (7), alternating"
  timeout 200 python3 scripts/compiled_loss_speed.py --model stage1 --preset seed --batch 4 --seq 1024 --steps 20 \
    --variants 1,7,1 2>&1 | grep "^{" | tee "$OUT/compiled-kernels-seed.jsonl"
  step "muse bench speed, Stage 1 vs GPT compiled with CUDA graphs (the fused loss as it is now)"
  timeout 300 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt \
    --variants compiled+cudagraphs --out "$OUT/speed" 2>&1 | tail -30
  ;;
s15a)
  step "CUDA tests: the complex linear (third accumulator, sum_rows for db) and the layer kernels (next-tile prefetch)"
  timeout 170 python3 -m pytest --muse-device cuda -n 4 tests/kernels/test_kernels_complex_linear.py \
    tests/kernels/test_kernels_layers.py -q -p no:cacheprovider 2>&1 | tail -4 | tee "$OUT/cuda-tests.txt"
  step "the complex linear's pieces: the third accumulator vs the negated tile, dW per split-K, db forms"
  timeout 130 python3 scripts/kernel_sweep.py --part linear 2>&1 | tee "$OUT/linear.txt"
  step "the complex linear's op rows (muse bench speed's), kernels and compiled + kernels"
  timeout 80 python3 -c "from benchmarks.speed import time_complex_linear as t; print(t(variants=('kernels', 'compiled+kernels')))" \
    2>&1 | tail -4 | tee "$OUT/linear-rows.txt"
  step "numerics of linear on CUDA under eager and triton"
  MUSE_VERIFY_IMPL=eager,triton timeout 170 python3 -m muse verify --profile ci --device cuda -n 4 -k linear \
    --out "$OUT/verify-cuda" 2>&1 | tail -12
  ;;
s15b)
  step "CUDA tests: sum_rows (one-shot finishing kernel) and the complex linear through the kernels"
  timeout 100 python3 -m pytest --muse-device cuda -n 4 tests/kernels/test_kernels_complex_linear.py -k "sum_rows or linear_kernel" \
    -q -p no:cacheprovider 2>&1 | tail -3 | tee "$OUT/cuda-tests.txt"
  step "the complex linear's pieces again (sum_rows launch shapes)"
  timeout 100 python3 scripts/kernel_sweep.py --part linear 2>&1 | tee "$OUT/linear.txt"
  step "the complex linear's op rows, kernels and compiled + kernels"
  timeout 60 python3 -c "from benchmarks.speed import time_complex_linear as t; print(t(variants=('kernels', 'compiled+kernels')))" \
    2>&1 | tail -4 | tee "$OUT/linear-rows.txt"
  step "muse bench speed, Stage 1 vs GPT: eager kernels and compiled with CUDA graphs"
  timeout 300 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt \
    --variants kernels,compiled+cudagraphs --out "$OUT/speed" 2>&1 | tail -30
  ;;
s15c)
  step "compiled Stage 1 training with CUDA graphs, B4: full-logits loss (0), the fused loss (1), with layer_norm and modReLU kernels in the graph (7); profile of 1"
  timeout 380 python3 scripts/compiled_loss_speed.py --model stage1 --preset seed --batch 4 --seq 1024 --steps 20 \
    --variants 0,1,7 --profile 1 2>&1 | grep -v Warning | tail -40 | tee "$OUT/compiled-stage1.txt"
  ;;
s16a)
  step "the complex linear's op rows with sum_rows' final launch shape (eager kernels, compiled + kernels)"
  timeout 60 python3 -c "from benchmarks.speed import time_complex_linear as t; print(t(variants=('kernels', 'compiled+kernels')))" \
    2>&1 | tail -4 | tee "$OUT/linear-rows.txt"
  step "muse bench speed, Stage 1 vs GPT with kernels on (the GPT's: the loss's chunk bodies), compiled with CUDA graphs, one process"
  timeout 300 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt \
    --variants compiled+kernels+cudagraphs,compiled+cudagraphs --out "$OUT/speed" 2>&1 | tail -14
  ;;
s16b)
  step "(branch finish) CUDA tests of the layer kernels and sum_rows with the finishing kernel"
  timeout 150 python3 -m pytest --muse-device cuda -n 4 tests/kernels/test_kernels_layers.py tests/kernels/test_kernels_complex_linear.py \
    -k "not benchmark_shape" -q -p no:cacheprovider 2>&1 | tail -3 | tee "$OUT/cuda-tests.txt"
  step "(branch finish) op rows with the partial rows summed by the finishing kernel vs torch's sum and cast, alternating"
  timeout 120 python3 scripts/kernel_sweep.py --part ops 2>&1 | tee "$OUT/ops.txt"
  step "(branch finish) numerics of layer_norm and modReLU on CUDA under triton"
  MUSE_VERIFY_IMPL=eager,triton timeout 170 python3 -m muse verify --profile ci --device cuda -n 4 -k "layer_norm or modrelu" \
    --out "$OUT/verify-cuda" 2>&1 | tail -3
  ;;
s17a)
  step "muse bench speed, Stage 1 vs GPT, kernels + CUDA graphs, the loss opaque (default) and traced by the compiler, one process"
  timeout 330 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt \
    --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+traced-loss --out "$OUT/speed" 2>&1 | tail -12
  step "profile: compiled inference, Stage 1 beside the GPT"
  timeout 150 python3 scripts/profile_gpu.py --out "$OUT/profile" --sections infer > "$OUT/profile.log" 2>&1
  grep -E "compiled inference|FAILED" "$OUT/profile/infer.txt"
  ;;
s17b)
  step "muse bench speed, Stage 1 vs GPT, kernels + CUDA graphs, the loss opaque and traced (the traced loss's addmm fixed for torch 2.11), one process"
  timeout 330 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt \
    --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+traced-loss --out "$OUT/speed" 2>&1 | tail -8
  step "inductor's code for compiled Stage 1 inference: what the head's extra kernel is"
  TORCH_LOGS=output_code timeout 120 python3 -c "
import torch
from muse.models import build_model
m = build_model('stage1', 'seed', device='cuda').eval()
f = torch.compile(m, fullgraph=True)
with torch.no_grad():
    f(torch.randint(0, 50257, (4, 1024), device='cuda'))
" > "$OUT/output_code.txt" 2>&1
  grep -n "addmm_t\|extern_kernels\|def call" "$OUT/output_code.txt" | head -40
  ;;
s17c)
  step "issue 12: weight decay on the embedding tables too (--decay-embeddings, nanoGPT's rule), at the budget, six runs sharing the GPU"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress --seed 1337)
  export OMP_NUM_THREADS=2
  printf '%s\n' \
    "mix|--model stage1 --preset mix --weight-decay 3.0" \
    "mix-emb|--model stage1 --preset mix --weight-decay 3.0 --decay-embeddings" \
    "phase2|--model phase2 --preset seed --weight-decay 3.0" \
    "phase2-emb|--model phase2 --preset seed --weight-decay 3.0 --decay-embeddings" \
    "gpt-emb|--model gpt --preset seed --weight-decay 3.0 --decay-embeddings" \
    "mix-emb-wd1|--model stage1 --preset mix --weight-decay 1.0 --decay-embeddings" \
    > "$OUT/runs.txt"
  sweep 6 480 "$OUT/runs.txt"
  grep -H "final eval PPL\|peak" "$OUT"/*/stdout.txt | head -40
  ;;
s17d)
  step "issue 12: depth and width of the mix Stage 1 and of Phase 2 at the budget (weight decay 3.0), six runs sharing the GPU"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress --seed 1337 --weight-decay 3.0)
  export OMP_NUM_THREADS=2
  printf '%s\n' \
    "mix-l4|--model stage1 --preset mix --model-arg n_layers=4" \
    "mix-l8|--model stage1 --preset mix --model-arg n_layers=8" \
    "mix-d384|--model stage1 --preset mix --model-arg d_model=384 --model-arg d_ffn=768" \
    "mix-d768|--model stage1 --preset mix --model-arg d_model=768 --model-arg d_ffn=1536" \
    "phase2-l4|--model phase2 --preset seed --model-arg n_layers=4" \
    "phase2-d384|--model phase2 --preset seed --model-arg d_model=384" \
    > "$OUT/runs.txt"
  sweep 6 420 "$OUT/runs.txt"
  grep -H "final eval PPL\|peak" "$OUT"/*/stdout.txt | head -40
  ;;
s18a)
  step "the head GEMM's forms (is the pass over the weight before it inductor's padding?)"
  timeout 150 python3 scripts/profile_gpu.py --out "$OUT/profile" --sections head > "$OUT/profile.log" 2>&1
  grep -E " ms|FAILED" "$OUT/profile/head.txt" | grep -v "^ *[a-z_:]*  " | head -12
  step "a second process for the fair ratio: Stage 1 and the GPT each at its fastest, model rows only"
  timeout 300 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+traced-loss --out "$OUT/speed" 2>&1 | tail -9
  ;;
s19a)
  step "issue 12: the decay per token (Griffin's RG-LRU form, decay=input) on the mix Stage 1 at the budget, six runs sharing the GPU"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress --weight-decay 3.0)
  export OMP_NUM_THREADS=2
  printf '%s\n' \
    "sel|--model stage1 --preset mix --seed 1337 --model-arg decay=input" \
    "sel-s1|--model stage1 --preset mix --seed 1 --model-arg decay=input" \
    "sel-s2|--model stage1 --preset mix --seed 2 --model-arg decay=input" \
    "sel-c2|--model stage1 --preset mix --seed 1337 --model-arg decay=input --model-arg decay_scale=2" \
    "sel-griffin|--model stage1 --preset mix --seed 1337 --model-arg decay=input --model-arg r_min=0.987 --model-arg r_max=0.9999" \
    "sel-conv4|--model stage1 --preset mix --seed 1337 --model-arg decay=input --model-arg conv_kernel=4" \
    > "$OUT/runs.txt"
  sweep 6 480 "$OUT/runs.txt"
  grep -H "final eval PPL\|peak" "$OUT"/*/stdout.txt | head -40
  ;;
s19b)
  step "CUDA tests of the selective scan kernels and of the input-decay Stage 1"
  timeout 150 python3 -m pytest -q -n 4 -p no:cacheprovider --muse-device cuda tests/kernels/test_kernels_selective_scan.py \
    tests/scan/test_selective_diag_scan.py tests/models/test_stage1_decode_step.py 2>&1 | tail -4
  step "Stage 1 criteria, the mix with decay=input (kernels on), weight decay 3.0, alone on the GPU"
  timeout 420 python3 -m muse bench stage1 --preset seed --stage1-preset mix --stage1-arg decay=input \
    --references phase2_nomix,gpt --device cuda --no-compile "${DATA[@]}" "${BUDGET[@]}" --weight-decay 3.0 \
    --out "$OUT/bench-sel" | sed -n '/all_pass/,$p' | head -45
  ;;
s19c)
  step "issue 12: the decay per token with no full-size rate kept for backward (decay_rank=32: low-rank, Mamba's dt; decay=drive: from B x): two criteria runs and four training runs sharing the GPU"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress --weight-decay 3.0)
  export OMP_NUM_THREADS=2
  for v in "rank32|--stage1-arg decay=input --stage1-arg decay_rank=32" "drive|--stage1-arg decay=drive"; do
    name=${v%%|*}; args=${v#*|}
    # shellcheck disable=SC2086
    ( timeout 520 python3 -m muse bench stage1 --preset seed --stage1-preset mix $args --references phase2_nomix \
        --device cuda --no-compile "${DATA[@]}" "${BUDGET[@]}" --weight-decay 3.0 --out "$OUT/bench-$name" \
        > "$OUT/bench-$name.txt" 2>&1; echo "bench-$name rc=$?" ) &
  done
  printf '%s\n' \
    "rank32-s1|--model stage1 --preset mix --seed 1 --model-arg decay=input --model-arg decay_rank=32" \
    "rank128|--model stage1 --preset mix --seed 1337 --model-arg decay=input --model-arg decay_rank=128" \
    "drive-s1|--model stage1 --preset mix --seed 1 --model-arg decay=drive" \
    "drive-s2|--model stage1 --preset mix --seed 2 --model-arg decay=drive" \
    > "$OUT/runs.txt"
  sweep 6 500 "$OUT/runs.txt"
  wait
  grep -H "final eval PPL\|peak" "$OUT"/*/stdout.txt | head -40
  for name in rank32 drive; do sed -n '/all_pass/,/planar layout/p' "$OUT/bench-$name.txt"; grep "eval PPL\|peak memory fwd" "$OUT/bench-$name.txt"; done
  ;;
s19d)
  step "issue 12: the mix preset with the low-rank per-token decay (decay_rank 32): seed 2 at the budget, in the background"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress --weight-decay 3.0)
  export OMP_NUM_THREADS=2
  printf '%s\n' "mix-s2|--model stage1 --preset mix --seed 2" > "$OUT/runs.txt"
  ( sweep 1 230 "$OUT/runs.txt" ) &
  step "CUDA tests of the selective scan kernels and of the input-decay Stage 1"
  timeout 100 python3 -m pytest -q -n 4 -p no:cacheprovider --muse-device cuda tests/kernels/test_kernels_selective_scan.py \
    tests/scan/test_selective_diag_scan.py tests/models/test_stage1_decode_step.py 2>&1 | tail -4
  step "generation speed of the mix preset (fast path: compiled step in a CUDA graph)"
  timeout 120 python3 scripts/gen_speed.py --device cuda --preset seed --tokens 1000 --models stage1:mix --paths fast 2>&1 | tail -8
  wait
  grep -H "final eval PPL\|peak" "$OUT"/*/stdout.txt | head
  ;;
s20a)
  step "verify on CUDA: the selective scan (the Triton kernel) against its float64 definition"
  timeout 120 python3 -m muse verify --profile ci --device cuda -n 4 -k selective --out "$OUT/verify-selective" 2>&1 | tail -6
  step "stability at S=8192: 100 random-input trials, the mix preset (the per-token decay, the kernel)"
  timeout 120 python3 scripts/long_trials.py --preset mix --seq 8192 --trials 100 --device cuda 2>&1 | tail -1 \
    | tee "$OUT/long-trials.jsonl"
  ;;
s20c)
  step "speed of the mix preset, model rows only (and of the constant-decay mix when _mixold/ holds d9c6c8c's tree:"
  echo "   git archive d9c6c8c --prefix=_mixold/ | tar -x, before the call)"
  timeout 150 python3 -m muse bench speed --preset mix --batch-size 4 --device cuda --models stage1 --no-ops \
    --variants eager,compiled+kernels+cudagraphs --out "$OUT/speed-mix" 2>&1 | grep "^| stage1"
  if [ -d _mixold ]; then
    ( cd _mixold && PYTHONPATH=. timeout 150 python3 -m muse bench speed --preset mix --batch-size 4 --device cuda \
        --models stage1 --no-ops --variants eager,compiled+kernels+cudagraphs --out "$OUT/speed-mixold" 2>&1 \
        | grep "^| stage1" )
  fi
  ;;
s20b)
  step "issue 12: the per-token decay's range c (decay_scale 16 and 32) on the mix preset at the budget, three seeds, six runs sharing the GPU"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress --weight-decay 3.0)
  export OMP_NUM_THREADS=2
  for c in 16 32; do for seed in 1337 1 2; do
    echo "c$c-s$seed|--model stage1 --preset mix --seed $seed --model-arg decay_scale=$c"
  done; done > "$OUT/runs.txt"
  sweep 6 480 "$OUT/runs.txt"
  grep -H "final eval PPL\|peak" "$OUT"/*/stdout.txt | head -40
  ;;
s21a)
  step "the tiled selective-scan kernel: CUDA tests and verify, beside one mix training run at the budget (seed 1337)"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress --weight-decay 3.0)
  export OMP_NUM_THREADS=2
  printf '%s\n' "tiled-s1337|--model stage1 --preset mix --seed 1337" > "$OUT/runs.txt"
  ( sweep 1 240 "$OUT/runs.txt" ) &
  timeout 120 python3 -m pytest -q -n 4 -p no:cacheprovider --muse-device cuda tests/kernels/test_kernels_selective_scan.py \
    tests/scan/test_selective_diag_scan.py tests/models/test_stage1_decode_step.py 2>&1 | tail -3
  timeout 90 python3 -m muse verify --profile ci --device cuda -n 4 -k selective --out "$OUT/verify-selective" 2>&1 \
    | grep "numerics report\|selective_diag"
  wait
  grep -H "final eval PPL\|peak" "$OUT"/*/stdout.txt
  step "the kernels alone: this tree, then the sequential kernel's (_selold/ from git archive 9e34ffb, when present)"
  timeout 60 python3 scripts/bench_selective_scan.py | tee "$OUT/kernel-tiled.jsonl"
  if [ -d _selold ]; then
    ( cd _selold && PYTHONPATH=. timeout 60 python3 ../scripts/bench_selective_scan.py | tee "$OUT/kernel-seq.jsonl" )
  fi
  step "speed of the mix preset, this tree, then _selold/"
  timeout 150 python3 -m muse bench speed --preset mix --batch-size 4 --device cuda --models stage1 --no-ops \
    --variants eager,compiled+kernels+cudagraphs --out "$OUT/speed-mix" 2>&1 | grep "^| stage1"
  if [ -d _selold ]; then
    ( cd _selold && PYTHONPATH=. timeout 150 python3 -m muse bench speed --preset mix --batch-size 4 --device cuda \
        --models stage1 --no-ops --variants eager,compiled+kernels+cudagraphs --out "$OUT/speed-selold" 2>&1 \
        | grep "^| stage1" )
  fi
  ;;
s22a)
  step "the tiled selective scan's channels per program and tokens per tile (B 4 and 8, S 1024, d_state 512)"
  timeout 240 python3 scripts/bench_selective_scan.py --block 8 --block 16 --block 32 --tile 32 --tile 64 --tile 128 \
    | tee "$OUT/selective-sweep.jsonl"
  ;;
s22b)
  step "issue 12: the same token budget in more, smaller steps (batch 4: 384 steps, batch 2: 768), mix and Phase 2, seed 1337, weight decay scaled with the batch (lr x wd x steps fixed), six runs sharing the GPU"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --min-lr 1e-4 --eval-stride 512 --eval-every 0
         --ckpt-every 0 --no-progress --seed 1337)
  export OMP_NUM_THREADS=2
  printf '%s\n' \
    "mix-b4|--model stage1 --preset mix --batch-size 4 --lr 1e-3 --warmup 40 --weight-decay 1.5" \
    "mix-b2|--model stage1 --preset mix --batch-size 2 --lr 1e-3 --warmup 80 --weight-decay 0.75" \
    "phase2-b4|--model phase2 --preset seed --batch-size 4 --lr 1e-3 --warmup 40 --weight-decay 1.5" \
    "phase2-b2|--model phase2 --preset seed --batch-size 2 --lr 1e-3 --warmup 80 --weight-decay 0.75" \
    "mix-b2-lr5|--model stage1 --preset mix --batch-size 2 --lr 5e-4 --min-lr 5e-5 --warmup 80 --weight-decay 1.5" \
    "phase2-b2-lr5|--model phase2 --preset seed --batch-size 2 --lr 5e-4 --min-lr 5e-5 --warmup 80 --weight-decay 1.5" \
    > "$OUT/runs.txt"
  sweep 6 520 "$OUT/runs.txt"
  grep -H "final eval PPL\|peak" "$OUT"/*/stdout.txt | head -40
  ;;
s22d)
  step "issue 12: the same token budget in fewer, larger steps (batch 16: 96 steps, batch 32: 48), mix and Phase 2, seed 1337, weight decay scaled with the batch, four runs sharing the GPU"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --lr 1e-3 --min-lr 1e-4 --eval-stride 512
         --eval-every 0 --ckpt-every 0 --no-progress --seed 1337)
  export OMP_NUM_THREADS=2
  printf '%s\n' \
    "mix-b16|--model stage1 --preset mix --batch-size 16 --warmup 10 --weight-decay 6.0" \
    "mix-b32|--model stage1 --preset mix --batch-size 32 --warmup 5 --weight-decay 12.0" \
    "phase2-b16|--model phase2 --preset seed --batch-size 16 --warmup 10 --weight-decay 6.0" \
    "phase2-b32|--model phase2 --preset seed --batch-size 32 --warmup 5 --weight-decay 12.0" \
    > "$OUT/runs.txt"
  sweep 4 520 "$OUT/runs.txt"
  grep -H "final eval PPL\|peak" "$OUT"/*/stdout.txt | head -40
  ;;
s23a)
  step "the selective scan kernel's launch: 32 channels x 64 tokens (before) against 16 x 128 (now), alternating, twice"
  for rep in 1 2; do for bt in "32 64" "16 128"; do set -- $bt
    timeout 60 python3 scripts/bench_selective_scan.py --block "$1" --tile "$2" | tee -a "$OUT/selective-ab.jsonl"
  done; done
  step "CUDA tests and verify of the selective scan at the new launch"
  timeout 120 python3 -m pytest -q -n 4 -p no:cacheprovider --muse-device cuda tests/kernels/test_kernels_selective_scan.py \
    tests/scan/test_selective_diag_scan.py tests/models/test_stage1_decode_step.py 2>&1 | tail -3
  timeout 90 python3 -m muse verify --profile ci --device cuda -n 4 -k selective --out "$OUT/verify-selective" 2>&1 \
    | grep "numerics report\|selective_diag"
  step "speed of the mix preset at the new launch"
  timeout 200 python3 -m muse bench speed --preset mix --batch-size 4 --device cuda --models stage1 --no-ops \
    --variants eager,compiled+kernels+cudagraphs --out "$OUT/speed-mix" 2>&1 | grep "^| stage1"
  ;;
s23b)
  step "where eager time goes: one fwd+bwd of the mix and seed Stage 1 under torch.profiler"
  timeout 70 python3 scripts/profile_gpu.py --out "$OUT/profile" --sections eager 2>&1 | grep "eager fwd+bwd\|FAILED"
  step "Stage 1 criteria, the mix preset at the selective kernel's new launch, alone on the GPU"
  timeout 400 python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix \
    --device cuda --no-compile "${DATA[@]}" "${BUDGET[@]}" --weight-decay 3.0 --out "$OUT/bench-mix" \
    | sed -n '/all_pass/,/planar layout/p' | head -30
  grep -h "eval PPL\|peak memory fwd" "$OUT"/bench-mix/*.md 2>/dev/null | head -6
  step "stability at S=8192: 100 random-input trials, the mix preset"
  timeout 100 python3 scripts/long_trials.py --preset mix --seq 8192 --trials 100 --device cuda 2>&1 | tail -1 \
    | tee "$OUT/long-trials.jsonl"
  ;;
s23c)
  step "eager host overhead: the kernels' direct call (this tree) against the custom op every call (_old/, when present)"
  timeout 60 python3 scripts/launch_overhead.py | tee "$OUT/launch-overhead.jsonl"
  for tree in . _old .; do [ -d "$tree" ] || continue
    ( cd "$tree" && PYTHONPATH=. timeout 80 python3 scripts/profile_gpu.py --out "$OUT/profile-$tree" --sections eager 2>&1 \
        | grep "eager fwd+bwd\|FAILED" | sed "s|^|$tree: |" )
  done
  step "CUDA tests of the kernels (the direct call's bits included)"
  timeout 150 python3 -m pytest -q -n 4 -p no:cacheprovider --muse-device cuda tests/kernels 2>&1 | tail -3
  ;;
s22c)
  step "the complex linear's backward pieces (dx, dW per split-K, db: torch's sums, a ones-row GEMM, sum_rows)"
  timeout 200 python3 scripts/kernel_sweep.py --part linear | tee "$OUT/linear-pieces.txt"
  ;;
s24a)
  step "the whole numerics suite on CUDA under eager, compiled and triton (the selective scan's per-implementation bounds included)"
  MUSE_VERIFY_IMPL=eager,compiled,triton timeout 420 python3 -m muse verify --profile ci --device cuda -n 8 \
    --out "$OUT/verify-cuda" 2>&1 | tail -12
  grep -h "selective" "$OUT"/verify-cuda/*.md 2>/dev/null | head -12
  step "CUDA tests of the kernels and scans"
  timeout 150 python3 -m pytest -q -n 8 -p no:cacheprovider --muse-device cuda tests/kernels tests/scan 2>&1 | tail -3
  ;;
s24b)
  step "the whole numerics suite on CUDA under eager, compiled and triton, the retention bound with its underflow term"
  MUSE_VERIFY_IMPL=eager,compiled,triton timeout 480 python3 -m muse verify --profile ci --device cuda -n 12 \
    --out "$OUT/verify-cuda" 2>&1 | grep "numerics report\|passed\|failed" | tail -4
  grep -h "retention\|FAILED" "$OUT"/verify-cuda/report.md 2>/dev/null | head -12
  ;;
s24c)
  step "CUDA tests of the kernels and scans"
  timeout 420 python3 -m pytest -q -n 12 -p no:cacheprovider --muse-device cuda tests/kernels tests/scan 2>&1 | tail -4
  ;;
s24d)
  step "issue 12: the learning rate of the current presets at lr x wd fixed (2e-3 / 1.5 and 5e-4 / 6.0), mix and Phase 2, and a longer warm-up for mix, seed 1337, six runs sharing the GPU; the complex diagonal scan's verify under eager and compiled beside them"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --eval-stride 512 --eval-every 0
         --ckpt-every 0 --no-progress --seed 1337)
  export OMP_NUM_THREADS=2
  ( MUSE_VERIFY_IMPL=eager,compiled timeout 300 python3 -m muse verify --profile ci --device cuda -n 2 \
      -k complex_diag_scan_accuracy --out "$OUT/verify-cdiag" > "$OUT/verify-cdiag.txt" 2>&1 ) &
  printf '%s\n' \
    "mix-lr2|--model stage1 --preset mix --lr 2e-3 --min-lr 2e-4 --warmup 20 --weight-decay 1.5" \
    "mix-lr05|--model stage1 --preset mix --lr 5e-4 --min-lr 5e-5 --warmup 20 --weight-decay 6.0" \
    "mix-wu40|--model stage1 --preset mix --lr 1e-3 --min-lr 1e-4 --warmup 40 --weight-decay 3.0" \
    "phase2-lr2|--model phase2 --preset seed --lr 2e-3 --min-lr 2e-4 --warmup 20 --weight-decay 1.5" \
    "phase2-lr05|--model phase2 --preset seed --lr 5e-4 --min-lr 5e-5 --warmup 20 --weight-decay 6.0" \
    > "$OUT/runs.txt"
  sweep 6 330 "$OUT/runs.txt"
  wait
  grep -H "final eval PPL\|peak" "$OUT"/*/stdout.txt | head -40
  grep "numerics report\|complex_diag_scan \|passed" "$OUT/verify-cdiag.txt" "$OUT"/verify-cdiag/report.md 2>/dev/null | head -8
  ;;
s25a)
  step "issue 12: the learned copy path (pointer_dim 64) on mix, Phase 2 and the GPT at the budget, beside each without it, seed 1337, six runs sharing the GPU"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress --seed 1337)
  export OMP_NUM_THREADS=2
  printf '%s\n' \
    "mix-ptr|--model stage1 --preset mix --model-arg pointer_dim=64" \
    "phase2-ptr|--model phase2 --preset seed --model-arg pointer_dim=64" \
    "mix|--model stage1 --preset mix" \
    "phase2|--model phase2 --preset seed" \
    "gpt-ptr|--model gpt --preset seed --model-arg pointer_dim=64" \
    "gpt|--model gpt --preset seed" \
    > "$OUT/runs.txt"
  sweep 6 420 "$OUT/runs.txt"
  grep -H "final eval PPL\|peak\|parameters" "$OUT"/*/stdout.txt | head -40
  ;;
s25b)
  step "issue 12: Stage 1 criteria for mix + the copy path, against Phase 2 as the seed defines it and against Phase 2 with the same copy path; seeds 1 and 2 of mix and Phase 2 with it; six processes sharing the GPU"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress)
  export OMP_NUM_THREADS=2
  for ref in plain ptr; do
    extra=(); [ "$ref" = ptr ] && extra=(--phase2-arg pointer_dim=64)
    ( timeout 520 python3 -m muse bench stage1 --preset seed --stage1-preset mix --stage1-arg pointer_dim=64 \
        "${extra[@]}" --references none --device cuda --no-compile "${DATA[@]}" "${BUDGET[@]}" --weight-decay 3.0 \
        --out "$OUT/bench-mixptr-vs-$ref" > "$OUT/bench-mixptr-vs-$ref.txt" 2>&1; echo "bench $ref rc=$?" ) &
  done
  printf '%s\n' \
    "mix-ptr-s1|--model stage1 --preset mix --model-arg pointer_dim=64 --seed 1" \
    "mix-ptr-s2|--model stage1 --preset mix --model-arg pointer_dim=64 --seed 2" \
    "phase2-ptr-s1|--model phase2 --preset seed --model-arg pointer_dim=64 --seed 1" \
    "phase2-ptr-s2|--model phase2 --preset seed --model-arg pointer_dim=64 --seed 2" \
    > "$OUT/runs.txt"
  sweep 4 500 "$OUT/runs.txt"
  wait
  grep -H "final eval PPL\|peak" "$OUT"/*/stdout.txt | head -20
  for ref in plain ptr; do echo "--- vs $ref"; sed -n '/all_pass/,/planar layout/p' "$OUT/bench-mixptr-vs-$ref.txt" | head -30; done
  step "generation speed of mix with and without the copy path (the static step in a CUDA graph), alone on the GPU"
  timeout 150 python3 scripts/gen_speed.py --device cuda --preset seed --tokens 1000 --models stage1:mix \
    --model-arg pointer_dim=64 --paths fast | tee "$OUT/gen-speed.jsonl"
  timeout 100 python3 scripts/gen_speed.py --device cuda --preset seed --tokens 1000 --models stage1:mix \
    --paths fast | tee -a "$OUT/gen-speed.jsonl"
  ;;
s25c)
  step "issue 12: Stage 1 criteria of the mix-copy preset against Phase 2 as the seed defines it and against Phase 2 with the same copy path (each with its mixer-free reference), and the stability trials of mix-copy at S = 1024 and 8192, all sharing the GPU"
  export OMP_NUM_THREADS=2
  for ref in plain ptr; do
    extra=(); [ "$ref" = ptr ] && extra=(--phase2-arg pointer_dim=64)
    ( timeout 560 python3 -m muse bench stage1 --preset seed --stage1-preset mix-copy "${extra[@]}" \
        --references phase2_nomix --device cuda --no-compile "${DATA[@]}" "${BUDGET[@]}" --weight-decay 3.0 \
        --out "$OUT/bench-mixcopy-vs-$ref" > "$OUT/bench-mixcopy-vs-$ref.txt" 2>&1; echo "bench $ref rc=$?" ) &
  done
  ( timeout 300 python3 scripts/long_trials.py --preset mix-copy --seq 8192 --trials 100 --device cuda \
      > "$OUT/long-trials-8192.jsonl" 2>&1; timeout 200 python3 scripts/long_trials.py --preset mix-copy --seq 1024 \
      --trials 100 --batch 2 --device cuda > "$OUT/long-trials-1024.jsonl" 2>&1 ) &
  wait
  tail -n 1 "$OUT"/long-trials-*.jsonl
  for ref in plain ptr; do echo "--- vs $ref"; sed -n '/all_pass/,/planar layout/p' "$OUT/bench-mixcopy-vs-$ref.txt" | head -30
    grep "eval PPL\|peak memory" "$OUT/bench-mixcopy-vs-$ref/report.md" | head -4; done
  ;;
s25d)
  step "the copy path's numerics property on CUDA"
  MUSE_VERIFY_IMPL=eager timeout 120 python3 -m muse verify --profile ci --device cuda -n 2 -k pointer \
    --out "$OUT/verify-pointer" 2>&1 | grep "numerics report\|passed\|failed" | tail -3
  grep -h "pointer" "$OUT"/verify-pointer/report.md 2>/dev/null | head -4
  step "speed of mix with and without the copy path, compiled with CUDA graphs, B 4, S 1024, one after the other"
  for preset in mix-copy mix; do
    timeout 200 python3 -m muse bench speed --preset "$preset" --batch-size 4 --device cuda \
      --models stage1 --no-ops --variants compiled+kernels+cudagraphs --out "$OUT/speed-$preset" 2>&1 | grep "^| stage1\|Error\|error" | head -6
  done
  ;;
s26a)
  step "issue 12: Stage 1 criteria of mix-copy in the sentinel form against Phase 2 as the seed defines it (with its mixer-free reference); seeds 1 and 2 of it, Phase 2 with the sentinel copy path, and mix-copy, mix, Phase 2 with and without the copy path for the loss breakdown; eight processes sharing the GPU"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress)
  export OMP_NUM_THREADS=2
  ( timeout 420 python3 -m muse bench stage1 --preset seed --stage1-preset mix-copy --stage1-arg pointer_mode=sentinel \
      --references phase2_nomix --device cuda --no-compile "${DATA[@]}" "${BUDGET[@]}" --weight-decay 3.0 \
      --out "$OUT/bench-sentinel" > "$OUT/bench-sentinel.txt" 2>&1; echo "bench rc=$?" ) &
  printf '%s\n' \
    "sent-s1|--model stage1 --preset mix-copy --model-arg pointer_mode=sentinel --seed 1" \
    "sent-s2|--model stage1 --preset mix-copy --model-arg pointer_mode=sentinel --seed 2" \
    "phase2-sent|--model phase2 --preset seed --model-arg pointer_dim=64 --model-arg pointer_mode=sentinel --seed 1337" \
    "mixcopy|--model stage1 --preset mix-copy --seed 1337" \
    "phase2-ptr|--model phase2 --preset seed --model-arg pointer_dim=64 --seed 1337" \
    "mix|--model stage1 --preset mix --seed 1337" \
    "phase2|--model phase2 --preset seed --seed 1337" \
    > "$OUT/runs.txt"
  sweep 8 420 "$OUT/runs.txt"
  wait
  grep -H "final eval PPL\|peak" "$OUT"/*/stdout.txt | head -20
  step "where Stage 1 and Phase 2 differ: the test loss per target by bucket, with and without the copy path"
  for pair in "mixcopy phase2-ptr" "mix phase2"; do
    set -- $pair
    timeout 75 python3 scripts/loss_breakdown.py "stage1=$OUT/$1/last.safetensors" "phase2=$OUT/$2/last.safetensors" \
      --eval-tokens-npy .devcarry/wikitext2-test.npy --train-tokens-npy .devcarry/wikitext2-valid.npy --stride 512 --batch-size 16 \
      --device cuda --out "$OUT/breakdown-$1.json" | tee "$OUT/breakdown-$1.md"
  done
  sed -n '/all_pass/,/planar layout/p' "$OUT/bench-sentinel.txt" | head -30
  grep "eval PPL\|peak memory\|offender" "$OUT/bench-sentinel/report.md" | head -8
  step "generation speed of mix-copy (sparse mixture since d556e59), the static step in a CUDA graph, alone on the GPU"
  timeout 120 python3 scripts/gen_speed.py --device cuda --preset seed --tokens 1000 --models stage1:mix-copy \
    --paths fast | tee "$OUT/gen-speed.jsonl"
  ;;
s26b)
  step "the copy path's numerics property on CUDA, both mixtures (cache and sentinel)"
  MUSE_VERIFY_IMPL=eager timeout 120 python3 -m muse verify --profile ci --device cuda -n 2 -k pointer \
    --out "$OUT/verify-pointer" 2>&1 | grep "numerics report\|passed\|failed" | tail -3
  grep -h "pointer" "$OUT"/verify-pointer/report.md 2>/dev/null | head -4
  step "speed of mix-copy (sparse mixture) and mix, compiled with CUDA graphs, B 4, S 1024, one after the other"
  for preset in mix-copy mix; do
    timeout 240 python3 -m muse bench speed --preset "$preset" --batch-size 4 --device cuda \
      --models stage1 --no-ops --variants compiled+kernels+cudagraphs --out "$OUT/speed-$preset" 2>&1 | grep "^| stage1\|Error\|error" | head -6
  done
  ;;
s26c)
  step "issue 12: the per-token rotation (mix with lambda_kind=complex: a_t = lambda^(c r_t) with lambda complex) at the budget: its criteria run (seed 1337; VRAM included), seeds 1 and 2, beside mix seed 1337; four processes sharing the GPU"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress)
  export OMP_NUM_THREADS=4
  ( timeout 420 python3 -m muse bench stage1 --preset seed --stage1-preset mix --stage1-arg lambda_kind=complex \
      --references phase2_nomix --device cuda --no-compile "${DATA[@]}" "${BUDGET[@]}" --weight-decay 3.0 \
      --out "$OUT/bench-rotation" > "$OUT/bench-rotation.txt" 2>&1; echo "bench rc=$?" ) &
  printf '%s\n' \
    "rot-1|--model stage1 --preset mix --model-arg lambda_kind=complex --seed 1" \
    "rot-2|--model stage1 --preset mix --model-arg lambda_kind=complex --seed 2" \
    "mix|--model stage1 --preset mix --seed 1337" \
    > "$OUT/runs.txt"
  sweep 3 420 "$OUT/runs.txt"
  wait
  grep -H "final eval PPL\|peak" "$OUT"/*/stdout.txt | head -12
  sed -n '/all_pass/,/planar layout/p' "$OUT/bench-rotation.txt" | head -30
  ;;
s27a)
  step "CUDA tests: the selective scan, the rotation compiled by inductor (the short float64 scans of the running angle)"
  timeout 150 python3 -m pytest -q -p no:cacheprovider --muse-device cuda tests/scan/test_selective_diag_scan.py \
    -k "inductor_on_cuda or running_angle or phase" 2>&1 | tail -3
  step "the selective scan's property on CUDA under inductor, with the phase (ci profile)"
  MUSE_VERIFY_IMPL=compiled timeout 150 python3 -m muse verify --profile ci --device cuda -n 2 -k selective \
    --out "$OUT/verify-selective-compiled" 2>&1 | grep "passed\|failed" | tail -2
  grep -h "selective" "$OUT/verify-selective-compiled/report.md" 2>/dev/null | head -4
  step "the selective scan's thorough property on CUDA (10,000 cases), eager and the Triton kernel"
  MUSE_VERIFY_IMPL=eager,triton timeout 240 python3 -m muse verify --profile thorough --device cuda -n 4 -k selective \
    --out "$OUT/verify-selective-thorough" 2>&1 | grep "passed\|failed" | tail -2
  grep -h "selective" "$OUT/verify-selective-thorough/report.md" 2>/dev/null | head -6
  ;;
s27b)
  # before the call: git archive 64d60d2 --prefix=_lnold/ | tar -x (the tree before either inference fusion)
  step "the two fusions alone, fused against separate ops, 4096 x 512 (CUDA graphs)"
  timeout 120 python3 -c "from benchmarks.speed import time_fused; print(time_fused())" 2>&1 | tail -6
  step "Stage 1 seed and the GPT, B 4, S 1024, compiled with the kernels and CUDA graphs: this tree (LN2 reads the residual)"
  timeout 200 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+traced-loss \
    --out "$OUT/speed-fused-ln" 2>&1 | grep "^| stage1\|^| gpt\|versus\|Error\|error" | head -12
  if [ -d _lnold ]; then
    step "the same, _lnold/ (add, then LN2)"
    ( cd _lnold && PYTHONPATH=. TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-lnold timeout 200 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda \
        --models stage1,gpt --no-ops --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+traced-loss \
        --out "$OUT/speed-add-ln" 2>&1 | grep "^| stage1\|^| gpt\|versus\|Error\|error" | head -12 )
  fi
  ;;
s27c)
  step "Stage 1 seed and the GPT, B 4, S 1024: max-autotune (inductor's GEMM templates), one process"
  timeout 560 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+autotune,compiled+kernels+autotune+traced-loss \
    --out "$OUT/speed-autotune" 2>&1 | grep "^| stage1\|^| gpt\|versus\|Error\|error" | head -12
  ;;
s27d)
  step "where the time goes: compiled training and inference of Stage 1 seed and the GPT, kernel tables (B 4, S 1024)"
  timeout 400 python3 scripts/profile_gpu.py --out "$OUT/profile" --sections train,infer 2>&1 | grep "^\[" | head -12
  step "decoding mix and mix-copy with the fused GEMM epilogue (batch 1, 1,000 tokens, the fast path)"
  timeout 150 python3 scripts/gen_speed.py --device cuda --preset seed --tokens 1000 --models stage1:mix,stage1:mix-copy \
    --paths fast 2>&1 | tail -6
  ;;
s27e)
  # s27b's model rows in less time: one variant; _lnold/ with its own inductor cache (a shared cache hands the old
  # tree this tree's compiled graph, which calls muse::complex_mm with six arguments)
  step "Stage 1 seed and the GPT, B 4, S 1024, compiled with the kernels and CUDA graphs: this tree (both fusions)"
  timeout 230 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs --out "$OUT/speed-fused" 2>&1 | grep "^| stage1\|^| gpt\|Error\|error" | head -8
  if [ -d _lnold ]; then
    step "Stage 1 seed, the same, _lnold/ (64d60d2: neither fusion), its own inductor cache"
    ( cd _lnold && PYTHONPATH=. TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-lnold timeout 160 python3 -m muse bench speed \
        --preset seed --batch-size 4 --device cuda --models stage1 --no-ops --variants compiled+kernels+cudagraphs \
        --out "$OUT/speed-old" 2>&1 | grep "^| stage1\|Error\|error" | head -6 )
  fi
  step "Stage 1 seed, this tree with modReLU left to the compiler (MUSE_KERNELS_IN_COMPILE=layer_norm: no GEMM epilogue)"
  MUSE_KERNELS_IN_COMPILE=layer_norm TORCHINDUCTOR_CACHE_DIR=/tmp/inductor-noact timeout 150 python3 -m muse bench speed \
    --preset seed --batch-size 4 --device cuda --models stage1 --no-ops --variants compiled+kernels+cudagraphs \
    --out "$OUT/speed-noact" 2>&1 | grep "^| stage1\|Error\|error" | head -6
  ;;
s27f)
  step "the seed block's inference fusions A/B in one process: three compiled forms, CUDA graphs, replayed in turn (B 4, S 1024)"
  timeout 210 python3 scripts/fusion_ab.py --device cuda --rounds 7 --out "$OUT/fusion-ab.json" 2>&1 | tail -4
  step "CUDA tests: the rotation compiled by inductor (the short float64 scans of the running angle)"
  timeout 120 python3 -m pytest -q -p no:cacheprovider --muse-device cuda tests/scan/test_selective_diag_scan.py \
    -k "inductor_on_cuda or running_angle" 2>&1 | tail -3
  step "the selective scan's property on CUDA under inductor, with the phase (ci profile)"
  MUSE_VERIFY_IMPL=compiled timeout 150 python3 -m muse verify --profile ci --device cuda -n 2 -k selective \
    --out "$OUT/verify-selective-compiled" 2>&1 | grep "passed\|failed" | tail -2
  grep -h "selective" "$OUT/verify-selective-compiled/report.md" 2>/dev/null | head -4
  ;;
s28a)
  step "the ratio after the epilogue's removal: Stage 1 seed and the GPT, B 4, S 1024, compiled + kernels + CUDA graphs, both loss forms, one process"
  timeout 330 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+traced-loss \
    --out "$OUT/speed-ratio" 2>&1 | grep "^| stage1\|^| gpt\|Error\|error" | head -8
  step "the selective scan's property on CUDA under inductor, with the phase (ci profile; 135 s was too short on an H100)"
  MUSE_VERIFY_IMPL=compiled timeout 240 python3 -m muse verify --profile ci --device cuda -n 4 -k selective \
    --out "$OUT/verify-selective-compiled" 2>&1 | grep "passed\|failed" | tail -2
  grep -h "selective" "$OUT/verify-selective-compiled/report.md" 2>/dev/null | head -4
  ;;
s29a)
  step "where the time goes: compiled training and inference of Stage 1 seed and the GPT, kernel tables (B 4, S 1024)"
  timeout 300 python3 scripts/profile_gpu.py --out "$OUT/profile" --sections train,infer 2>&1 | grep "^\[" | head -12
  step "the ratio: Stage 1 seed and the GPT, B 4, S 1024, compiled + kernels + CUDA graphs, both loss forms, one process"
  timeout 270 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+traced-loss \
    --out "$OUT/speed-ratio" 2>&1 | grep "^| stage1\|^| gpt\|Error\|error" | head -8
  ;;
s29b)
  step "A/B in one process: modReLU in LN2 and the head's padded storage, each undone (CUDA graphs, 7 rounds)"
  timeout 330 python3 scripts/fusion_ab.py --device cuda --rounds 7 --out "$OUT/fusion-ab.json" 2>&1 | tail -5
  step "the ratio: Stage 1 seed and the GPT, B 4, S 1024, compiled + kernels + CUDA graphs, one process"
  timeout 230 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs --out "$OUT/speed-ratio" 2>&1 | grep "^| stage1\|^| gpt\|Error\|error" | head -8
  ;;
s29c)
  step "CUDA tests of the layer kernels and the models' inference (the fused LN2, the padded head)"
  timeout 150 python3 -m pytest -q -n 4 -p no:cacheprovider --muse-device cuda tests/kernels/test_kernels_layers.py \
    tests/nn/test_nn.py tests/models/test_stage1_seed_fidelity.py 2>&1 | tail -3
  step "verify on CUDA: layer_norm (with the modReLU prologue) under eager, compiled, triton"
  MUSE_VERIFY_IMPL=eager,compiled,triton timeout 150 python3 -m muse verify --profile ci --device cuda -n 4 \
    -k "layer_norm" --out "$OUT/verify-ln" 2>&1 | grep "passed\|failed" | tail -2
  grep -h "^| layer_norm" "$OUT/verify-ln/report.md" 2>/dev/null | cut -c1-120 | head -4
  step "where the time goes: compiled training and inference of Stage 1 seed and the GPT, kernel tables (B 4, S 1024)"
  timeout 280 python3 scripts/profile_gpu.py --out "$OUT/profile" --sections train,infer 2>&1 | grep "^\[" | head -12
  ;;
s29d)
  step "A/B in one process, the compiled training step: the token tables' gradient over the looked-up rows against embedding_dense_backward (CUDA graphs, 7 rounds)"
  timeout 240 python3 scripts/fusion_ab.py --device cuda --train --rounds 7 --out "$OUT/train-ab.json" 2>&1 | tail -3
  step "the selective scan's property on CUDA under inductor, with the phase (ci profile)"
  MUSE_VERIFY_IMPL=compiled timeout 200 python3 -m muse verify --profile ci --device cuda -n 4 -k selective \
    --out "$OUT/verify-selective-compiled" 2>&1 | grep "passed\|failed" | tail -2
  grep -h "selective" "$OUT/verify-selective-compiled/report.md" 2>/dev/null | cut -c1-160 | head -4
  ;;
s26d)
  step "the selective scan's property on CUDA with the phase (eager and triton)"
  for impl in eager triton; do
    MUSE_VERIFY_IMPL=$impl timeout 100 python3 -m muse verify --profile ci --device cuda -n 2 -k selective \
      --out "$OUT/verify-selective-$impl" 2>&1 | grep "passed\|failed" | tail -2
    grep -h "selective" "$OUT/verify-selective-$impl/report.md" 2>/dev/null | head -4
  done
  step "speed of mix with the rotation against mix, compiled with CUDA graphs, B 4, S 1024"
  for lk in complex real; do
    timeout 190 python3 -m muse bench speed --preset mix --stage1-arg lambda_kind=$lk --batch-size 4 --device cuda \
      --models stage1 --no-ops --variants compiled+kernels+cudagraphs --out "$OUT/speed-$lk" 2>&1 | grep "^| stage1\|Error\|error" | head -6
  done
  ;;
s30a)
  step "CUDA tests of the padded heads (PaddedLinear: GPT, Phase 2; RealLinear: Stage 1)"
  timeout 90 python3 -m pytest -q -p no:cacheprovider --muse-device cuda tests/nn/test_nn.py tests/models/test_model_contract.py \
    tests/models/test_gpt.py -k "padded or real_linear or head or autocast" 2>&1 | tail -2
  step "A/B in one process: the GPT reference's head over its padded storage against the plain nn.Linear GEMM (bf16 autocast, CUDA graphs, 7 rounds)"
  timeout 180 python3 scripts/fusion_ab.py --model gpt --device cuda --rounds 7 --out "$OUT/gpt-head-ab.json" 2>&1 | tail -2
  step "Stage 1 seed and the GPT (both heads padded), B 4, S 1024, compiled with the kernels and CUDA graphs, both loss forms, emulate_precision_casts on"
  timeout 290 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+traced-loss \
    --out "$OUT/speed" 2>&1 | grep "^| stage1\|^| gpt\|versus\|Error\|error" | head -12
  ;;
s30b)
  step "A/B in one process, Stage 1: the head over its padded storage against the plain GEMM (CUDA graphs, 7 rounds)"
  timeout 150 python3 scripts/fusion_ab.py --device cuda --rounds 7 --out "$OUT/stage1-head-ab.json" 2>&1 | tail -2
  step "the host-side copies of Stage 1's compiled training step, by input shape"
  timeout 150 python3 scripts/profile_gpu.py --out "$OUT/profile" --sections copies 2>&1 | head -40
  step "decoding mix with the padded head (batch 1, 1,000 tokens, the fast path)"
  timeout 150 python3 scripts/gen_speed.py --device cuda --preset seed --tokens 1000 --models stage1:mix,gpt:seed \
    --paths fast 2>&1 | tail -6
  ;;
s30c)
  # s30a and the copies profile of s30b in one call (device starts were scarce): the A/B, the ratio, the copies, the tests
  step "A/B in one process: the GPT reference's head over its padded storage against the plain nn.Linear GEMM (bf16 autocast, CUDA graphs, 7 rounds)"
  timeout 150 python3 scripts/fusion_ab.py --model gpt --device cuda --rounds 7 --out "$OUT/gpt-head-ab.json" 2>&1 | tail -2
  step "Stage 1 seed and the GPT (both heads padded), B 4, S 1024, compiled with the kernels and CUDA graphs, both loss forms, emulate_precision_casts on"
  timeout 250 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+traced-loss \
    --out "$OUT/speed" 2>&1 | grep "^| stage1\|^| gpt\|versus\|Error\|error" | head -12
  step "the host-side copies of Stage 1's compiled training step, by input shape"
  timeout 110 python3 scripts/profile_gpu.py --out "$OUT/profile" --sections copies 2>&1 | head -40
  step "CUDA tests of the padded heads"
  timeout 60 python3 -m pytest -q -p no:cacheprovider --muse-device cuda tests/nn/test_nn.py tests/models/test_model_contract.py \
    -k "padded or real_linear or head" 2>&1 | tail -2
  pack
  ;;
s30d)
  step "A/B in one process, the compiled training step: the loss's gradient chunks scaled and rounded into place in one kernel against scale-then-cast (CUDA graphs, 7 rounds), Stage 1 then the GPT"
  timeout 200 python3 scripts/fusion_ab.py --device cuda --train --rounds 7 --out "$OUT/train-ab-stage1.json" 2>&1 | tail -2
  timeout 200 python3 scripts/fusion_ab.py --model gpt --device cuda --train --rounds 7 --out "$OUT/train-ab-gpt.json" 2>&1 | tail -2
  step "Stage 1 seed and the GPT, B 4, S 1024, compiled with the kernels and CUDA graphs, default loss"
  timeout 190 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs --out "$OUT/speed" 2>&1 | grep "^| stage1\|^| gpt\|versus\|Error\|error" | head -8
  pack
  ;;
s31a)
  step "Stage 1 inference: each block's second norm paired with the next norm against block after block (CUDA graphs, 7 rounds)"
  timeout 100 python3 scripts/fusion_ab.py --device cuda --rounds 7 --out "$OUT/pair-ab-stage1.json" 2>&1 | tail -2
  step "Stage 1 seed and the GPT, B 4, S 1024, compiled with the kernels and CUDA graphs, default and traced loss"
  timeout 200 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+traced-loss --out "$OUT/speed" 2>&1 \
    | grep "^| stage1\|^| gpt\|versus\|Error\|error" | head -8
  step "Stage 1's training step: the log-sum-exp kernel reading a chunk row once against twice (CUDA graphs, 7 rounds)"
  timeout 90 python3 scripts/fusion_ab.py --device cuda --train --lse --rounds 7 --out "$OUT/lse-ab-stage1.json" 2>&1 | tail -2
  step "the GPT's training step (bf16 autocast): the loss's chunk logits kept bf16 against widened to fp32 (CUDA graphs, 7 rounds)"
  timeout 90 python3 scripts/fusion_ab.py --model gpt --device cuda --train --rounds 7 --out "$OUT/train-ab-gpt.json" 2>&1 | tail -2
  step "CUDA tests of the paired norms and the log-sum-exp kernel"
  timeout 60 python3 -m pytest -q -p no:cacheprovider --muse-device cuda tests/kernels/test_kernels_layers.py \
    tests/kernels/test_kernels_loss.py -k "pair or seed_block or residual or lse" 2>&1 | tail -2
  pack
  ;;
s32a)
  step "Stage 1 inference: each block's second norm paired with the next norm against block after block (CUDA graphs, 7 rounds)"
  timeout 90 python3 scripts/fusion_ab.py --device cuda --rounds 7 --out "$OUT/pair-ab-stage1.json" 2>&1 | tail -2
  step "Stage 1's training step: the loss keeping its chunks' logits against recomputing them (CUDA graphs, 5 rounds)"
  timeout 80 python3 scripts/fusion_ab.py --device cuda --train --keep --rounds 5 --out "$OUT/keep-ab-stage1.json" 2>&1 | tail -2
  step "the GPT's training step: the loss keeping its chunks' logits against recomputing them (CUDA graphs, 5 rounds)"
  timeout 90 python3 scripts/fusion_ab.py --model gpt --device cuda --train --keep --rounds 5 --out "$OUT/keep-ab-gpt.json" 2>&1 | tail -2
  step "Stage 1 seed and the GPT, B 4, S 1024, compiled with the kernels and CUDA graphs, default loss and kept logits"
  timeout 260 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+keep-logits --out "$OUT/speed" 2>&1 \
    | grep "^| stage1\|^| gpt\|versus\|Error\|error" | head -8
  pack
  ;;
s32c)
  step "Stage 1 seed and the GPT, B 4, S 1024, compiled with the kernels and CUDA graphs (a second process for the ratio)"
  timeout 170 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs --out "$OUT/speed" 2>&1 | grep "^| stage1\|^| gpt\|versus\|Error\|error" | head -6
  step "where training time goes with kept logits: Stage 1 and the GPT (both losses opaque, keeping logits)"
  timeout 180 python3 scripts/profile_gpu.py --sections train --keep-logits --out "$OUT/profile" 2>&1 \
    | grep "tok/s\|FAILED" | head -4
  pack
  ;;
s33a)
  # fusion_ab.py --lse-tile was removed with the 8,192 tile it measured (08a55ff): these two steps now stop at once
  step "Stage 1's training step: the log-sum-exp kernel's widest tile 8192 against 4096 (CUDA graphs, 7 rounds)"
  timeout 90 python3 scripts/fusion_ab.py --device cuda --train --lse-tile --rounds 7 --out "$OUT/lse-tile-ab-stage1.json" 2>&1 | tail -2
  step "the GPT's training step: the same A/B (bf16 autocast, default loss)"
  timeout 90 python3 scripts/fusion_ab.py --model gpt --device cuda --train --lse-tile --rounds 7 --out "$OUT/lse-tile-ab-gpt.json" 2>&1 | tail -2
  step "CUDA tests of the loss kernels, verify the loss on CUDA (eager and triton bodies)"
  timeout 60 python3 -m pytest -q -p no:cacheprovider --muse-device cuda tests/kernels/test_kernels_loss.py 2>&1 | tail -2
  MUSE_VERIFY_IMPL=eager,triton timeout 120 python3 -m muse verify --profile ci --device cuda -n 4 -k "linear_cross_entropy" \
    --out "$OUT/verify-loss" 2>&1 | tail -3
  step "Stage 1 seed and the GPT, compiled with the kernels and CUDA graphs, default and kept logits"
  timeout 150 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+keep-logits --out "$OUT/speed" 2>&1 \
    | grep "^| stage1\|^| gpt\|versus\|Error\|error" | head -8
  pack
  ;;
s34a)
  step "CUDA tests of the padded head (its rows as buffers; max-autotune compiles it) and the loss kernels"
  timeout 120 python3 -m pytest -q -p no:cacheprovider --muse-device cuda tests/nn/test_nn.py tests/models/test_model_contract.py \
    -k "padded or Padded or padding or real_linear or untied or autotune" 2>&1 | tail -2
  step "Stage 1 seed and the GPT, B 4, S 1024, compiled with the kernels and CUDA graphs (the head's rows as buffers)"
  timeout 170 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs --out "$OUT/speed" 2>&1 | grep "^| stage1\|^| gpt\|versus\|Error\|error" | head -6
  step "Stage 1 seed under max-autotune (inductor's GEMM templates timed against cuBLAS)"
  timeout 300 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1 --no-ops \
    --variants compiled+kernels+autotune --out "$OUT/speed-autotune" 2>&1 | grep "^| stage1\|Error\|error" | head -6
  pack
  ;;
s36b)
  step "Where Stage 1's and the GPT's inference calls spend their GPU time (the logits bound's kernels: vector_norm, amax)"
  timeout 240 python3 scripts/profile_gpu.py --out "$OUT/profile" --sections infer > "$OUT/profile.log" 2>&1
  grep -iE "norm|amax|abs|max|ms" "$OUT/profile/infer.txt" | head -40
  pack
  ;;
s41a|s41b)
  # the pytest suite on the device in two halves (each under the call's 10 minutes), with ../shared/data from
  # .devcarry/shared (cp -r ../shared/data .devcarry/shared/ before the call; carry [".devcarry"])
  [ -e ../shared ] || ln -s "$PWD/.devcarry/shared" ../shared
  if [ "$PHASE" = s41a ]; then HALF=(tests/cli tests/complex tests/data tests/kernels tests/test_bad_input.py
    tests/test_cache_probe.py tests/test_io_json.py tests/test_layering.py); else HALF=(tests/models tests/nn tests/scan tests/train); fi
  step "pytest on the device (torch 2.11, --muse-device cuda, 16 workers): ${HALF[*]}"
  timeout 540 python3 -m pytest -v -n 16 -p no:cacheprovider --muse-device cuda "${HALF[@]}" > "$OUT/pytest-v.txt" 2>&1
  echo "pytest rc=$?"
  grep -E "(FAILED|ERROR) tests" "$OUT/pytest-v.txt" | head -20
  tail -1 "$OUT/pytest-v.txt"
  echo "finished: $(grep -cE '(PASSED|FAILED|SKIPPED|ERROR) tests' "$OUT/pytest-v.txt")"
  pack
  ;;
s54a)
  step "issue 12: Muon (complex polar factor for planar weights) on the hidden matrices at the budget, eager, label smoothing 0.1, three step sizes per model around its best at the tiny size (docs/experiments.md 28), each model with AdamW beside it; ${S54A_P:-8} at a time"
  TRAIN=(--device cuda "${DATA[@]}" --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --label-smoothing 0.1 --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress --no-compile --tokens 1572864 --seed 1337)
  printf '%s\n' \
    "mix-muon-r1|--model stage1 --preset mix --optimizer muon --muon-rms 1" \
    "mix-muon-r2|--model stage1 --preset mix --optimizer muon --muon-rms 2" \
    "mix-muon-r4|--model stage1 --preset mix --optimizer muon --muon-rms 4" \
    "phase2-muon-r2|--model phase2 --preset seed --optimizer muon --muon-rms 2" \
    "phase2-muon-r4|--model phase2 --preset seed --optimizer muon --muon-rms 4" \
    "phase2-muon-r8|--model phase2 --preset seed --optimizer muon --muon-rms 8" \
    "mix|--model stage1 --preset mix" \
    "phase2|--model phase2 --preset seed" \
    > "$OUT/runs.txt"
  sweep "${S54A_P:-8}" "${S54A_S:-540}" "$OUT/runs.txt"
  grep -H "final eval\|PPL" "$OUT"/*/stdout.txt | head -20
  pack
  ;;
s54b)
  step "issue 12: Muon at the budget, seeds 1 and 2 for mix (step RMS ${MIX_RMS:-2}) and Phase 2 (${P2_RMS:-4}), eager, label smoothing 0.1"
  TRAIN=(--device cuda "${DATA[@]}" --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --label-smoothing 0.1 --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress --no-compile --tokens 1572864)
  printf '%s\n' \
    "mix-muon-seed1|--model stage1 --preset mix --optimizer muon --muon-rms ${MIX_RMS:-2} --seed 1" \
    "mix-muon-seed2|--model stage1 --preset mix --optimizer muon --muon-rms ${MIX_RMS:-2} --seed 2" \
    "phase2-muon-seed1|--model phase2 --preset seed --optimizer muon --muon-rms ${P2_RMS:-4} --seed 1" \
    "phase2-muon-seed2|--model phase2 --preset seed --optimizer muon --muon-rms ${P2_RMS:-4} --seed 2" \
    ${S54B_EXTRA:+"$S54B_EXTRA"} \
    > "$OUT/runs.txt"
  sweep "${S54B_P:-5}" "${S54B_S:-420}" "$OUT/runs.txt"
  grep -H "final eval\|PPL" "$OUT"/*/stdout.txt | head -20
  pack
  ;;
s55a)
  step "issue 12: label smoothing 0.2 and 0.3 at the budget for mix and Phase 2 (eager; 0.1 beside them); ${S55A_P:-6} at a time"
  TRAIN=(--device cuda "${DATA[@]}" --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress --no-compile --tokens 1572864 --seed 1337)
  printf '%s\n' \
    "mix-ls0.1|--model stage1 --preset mix --label-smoothing 0.1" \
    "mix-ls0.2|--model stage1 --preset mix --label-smoothing 0.2" \
    "mix-ls0.3|--model stage1 --preset mix --label-smoothing 0.3" \
    "phase2-ls0.1|--model phase2 --preset seed --label-smoothing 0.1" \
    "phase2-ls0.2|--model phase2 --preset seed --label-smoothing 0.2" \
    "phase2-ls0.3|--model phase2 --preset seed --label-smoothing 0.3" \
    > "$OUT/runs.txt"
  sweep "${S55A_P:-6}" "${S55A_S:-480}" "$OUT/runs.txt"
  grep -H "final eval\|PPL" "$OUT"/*/stdout.txt | head -20
  pack
  ;;
s54d)
  step "issue 11: Muon's optimizer-step cost at the seed size: mix trained alone, eager, 40 steps of B8 S1024, AdamW then Muon (step RMS 2)"
  for opt in adamw muon; do
    timeout 200 python3 -m muse train --model stage1 --preset mix --device cuda "${DATA[@]}" --batch-size 8 --lr 1e-3 \
      --min-lr 1e-4 --warmup 5 --weight-decay 3.0 --label-smoothing 0.1 --eval-every 0 --ckpt-every 0 --no-progress \
      --no-compile --max-steps 40 --log-every 10 --final-eval-tokens 8192 --optimizer "$opt" --muon-rms 2 --seed 1337 \
      --out "$OUT/time-$opt" > "$OUT/time-$opt.txt" 2>&1
    echo "$opt rc=$?"; grep "step 40/\|step 30/\|step 20/" "$OUT/time-$opt.txt"
  done
  pack
  ;;
s54c)
  step "issue 12: the criteria run with Muon for every model, label smoothing 0.1 (compiled, CUDA graphs)"
  timeout "${S54C_BENCH_S:-560}" python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix \
    --device cuda "${DATA[@]}" "${BUDGET[@]}" --weight-decay 3.0 --label-smoothing 0.1 --optimizer muon --muon-rms "${MUON_RMS:-2}" --out "$OUT/bench-muon-ls" \
    > "$OUT/bench-muon-ls.txt" 2>&1
  echo "bench rc=$?"
  grep -A12 "^| criterion" "$OUT"/bench-muon-ls/report.md 2>/dev/null | head -14
  grep -h "eval PPL\|^| model" "$OUT"/bench-muon-ls/report.md 2>/dev/null | head -6
  tail -3 "$OUT/bench-muon-ls.txt"
  pack
  ;;
s53a)
  step "issue 12: the complex head (head=complex: a real linear over [Re z, Im z]) at the budget, eager, label smoothing 0.1 (the forty-seventh session's form); ${S53A_P:-5} at a time"
  TRAIN=(--device cuda "${DATA[@]}" --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --label-smoothing 0.1 --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress --no-compile --tokens 1572864)
  CH="--model stage1 --preset mix --model-arg head=complex"
  printf '%s\n' \
    "chr-mix|$CH --model-arg token_table=real --seed 1337" \
    "chr-mix-seed1|$CH --model-arg token_table=real --seed 1" \
    "chr-mix-seed2|$CH --model-arg token_table=real --seed 2" \
    "ch-mix|$CH --seed 1337" \
    "mix|--model stage1 --preset mix --seed 1337" \
    > "$OUT/runs.txt"
  sweep "${S53A_P:-5}" "${S53A_S:-330}" "$OUT/runs.txt"
  grep -H "final eval\|PPL" "$OUT"/*/stdout.txt | head -20
  pack
  ;;
s53c)
  step "issue 12: the complex head with the learned copy path (sentinel form, no smoothing: the mixture has no vocabulary mean), beside mix-copy and Phase 2 with the same path; eager, 3 at a time"
  TRAIN=(--device cuda "${DATA[@]}" --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress --no-compile --tokens 1572864 --seed 1337)
  printf '%s\n' \
    "chr-mix-copy|--model stage1 --preset mix-copy --model-arg head=complex --model-arg token_table=real" \
    "mix-copy|--model stage1 --preset mix-copy" \
    "phase2-copy|--model phase2 --preset seed --model-arg pointer_dim=64 --model-arg pointer_mode=sentinel" \
    > "$OUT/runs.txt"
  sweep 3 "${S53C_S:-330}" "$OUT/runs.txt"
  grep -H "final eval\|PPL" "$OUT"/*/stdout.txt | head -12
  pack
  ;;
s53b)
  step "issue 12: the criteria run of mix with the complex head and the real token table (the same parameter count), label smoothing 0.1 (compiled, CUDA graphs)"
  timeout "${S53B_BENCH_S:-560}" python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix \
    --stage1-arg head=complex --stage1-arg token_table=real \
    --device cuda "${DATA[@]}" "${BUDGET[@]}" --weight-decay 3.0 --label-smoothing 0.1 --out "$OUT/bench-chr-ls" \
    > "$OUT/bench-chr-ls.txt" 2>&1
  echo "bench rc=$?"
  grep -A12 "^| criterion" "$OUT"/bench-chr-ls/report.md 2>/dev/null | head -14
  grep -h "eval PPL\|^| model" "$OUT"/bench-chr-ls/report.md 2>/dev/null | head -6
  tail -3 "$OUT/bench-chr-ls.txt"
  pack
  ;;
s52a)
  step "issue 12: embedding dropout at the budget (scripts/word_dropout_probe.py, eager, label smoothing 0.1 as s51a): p ${S52A_P:-0.1 0.2}, seeds ${S52A_SEEDS:-1337}"
  TRAIN=(--device cuda "${DATA[@]}" --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --label-smoothing 0.1 --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress --no-compile --tokens 1572864)
  for m in "mix|--model stage1 --preset mix" "phase2|--model phase2 --preset seed"; do
    for p in ${S52A_P:-0.1 0.2}; do for seed in ${S52A_SEEDS:-1337}; do
      name="wd${p}-${m%%|*}"; [ "$seed" = 1337 ] || name="$name-seed$seed"; mkdir -p "$OUT/$name"
      # shellcheck disable=SC2086
      ( timeout "${S52A_S:-200}" python3 scripts/word_dropout_probe.py --p "$p" -- train ${m#*|} "${TRAIN[@]}" \
          --seed "$seed" --out "$OUT/$name" > "$OUT/$name/stdout.txt" 2>&1
        echo "$name rc=$?" ) &
    done; done
  done
  wait
  grep -h '^{"model"' "$OUT"/wd*/stdout.txt
  pack
  ;;
s51a)
  step "issue 12: the criteria run of mix with every model trained with label smoothing 0.1 (compiled, CUDA graphs)"
  # the forty-eighth session's run with the GPT beside it stopped at 480 s (cold compiles) after the four trainings,
  # before the criteria measurements: the GPT (737.47 there) is left out
  timeout "${S51A_BENCH_S:-560}" python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix \
    --device cuda "${DATA[@]}" "${BUDGET[@]}" --weight-decay 3.0 --label-smoothing 0.1 --out "$OUT/bench-mix-ls" \
    > "$OUT/bench-mix-ls.txt" 2>&1
  echo "bench rc=$?"
  grep -A12 "^| criterion" "$OUT"/bench-mix-ls/report.md 2>/dev/null | head -14
  grep -h "eval PPL\|^| model" "$OUT"/bench-mix-ls/report.md 2>/dev/null | head -6
  tail -3 "$OUT/bench-mix-ls.txt"
  pack
  ;;
s50b)
  step "issue 12: label smoothing at the budget (scripts/smoothing_probe.py, eager, as s50a's 0 and 0.1): eps ${S50B_EPS:-0.05 0.2}, seeds ${S50B_SEEDS:-1337}"
  TRAIN=(--device cuda "${DATA[@]}" --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0 --seed 1337
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress --no-compile --tokens 1572864)
  # S50B_EPS / S50B_SEEDS pick other runs (the same form), e.g. S50B_EPS=0.1 S50B_SEEDS="1 2"
  for m in "mix|--model stage1 --preset mix" "phase2|--model phase2 --preset seed"; do
    for eps in ${S50B_EPS:-0.05 0.2}; do for seed in ${S50B_SEEDS:-1337}; do
      name="ls${eps}-${m%%|*}"; [ "$seed" = 1337 ] || name="$name-seed$seed"; mkdir -p "$OUT/$name"
      # shellcheck disable=SC2086
      ( timeout "${S50B_LS_S:-150}" python3 scripts/smoothing_probe.py --eps "$eps" -- train ${m#*|} "${TRAIN[@]}" \
          --seed "$seed" --out "$OUT/$name" > "$OUT/$name/stdout.txt" 2>&1
        echo "$name rc=$?" ) &
    done; done
  done
  wait
  grep -h '^{"model"' "$OUT"/ls*/stdout.txt
  pack
  ;;
s50a)
  step "issue 12: the 4x budget trend at the current presets (weight decay 3.0 for every model, compiled, CUDA graphs), each beside its 1x run; 2 runs at a time on the one GPU"
  TRAIN=(--device cuda "${DATA[@]}" --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0 --seed 1337
         --eval-stride 512 --eval-every 96 --eval-tokens 65536 --ckpt-every 0 --no-progress)
  printf '%s\n' \
    "x4-phase2|--model phase2 --preset seed --tokens 6291456" \
    "x4-mix|--model stage1 --preset mix --tokens 6291456" \
    "x4-gpt|--model gpt --preset seed --tokens 6291456" \
    "x1-phase2|--model phase2 --preset seed --tokens 1572864" \
    "x1-mix|--model stage1 --preset mix --tokens 1572864" \
    "x1-gpt|--model gpt --preset seed --tokens 1572864" \
    > "$OUT/runs.txt"
  sweep 2 "${S50A_SWEEP_S:-400}" "$OUT/runs.txt"
  grep -H "final eval\|PPL" "$OUT"/*/stdout.txt | head -24
  step "issue 12: label smoothing 0.1 at the budget (scripts/smoothing_probe.py, eager), beside eps 0 in the same form; 4 at a time"
  for m in "mix|--model stage1 --preset mix" "phase2|--model phase2 --preset seed"; do
    for eps in 0 0.1; do
      name="ls${eps}-${m%%|*}"; mkdir -p "$OUT/$name"
      # shellcheck disable=SC2086
      ( timeout "${S50A_LS_S:-150}" python3 scripts/smoothing_probe.py --eps "$eps" -- train ${m#*|} "${TRAIN[@]}" \
          --no-compile --eval-every 0 --tokens 1572864 --out "$OUT/$name" > "$OUT/$name/stdout.txt" 2>&1
        echo "$name rc=$?" ) &
    done
  done
  wait
  grep -h '^{"model"' "$OUT"/ls*/stdout.txt
  pack
  ;;
s49b)
  step "the two compiled gradient properties s48b stopped at its limit (complex retention: 60 of 100 examples; the Hebbian scan: 36), alone"
  MUSE_VERIFY_IMPL=compiled timeout "${S49B_VERIFY_S:-560}" python3 -m muse verify --profile ci --device cuda -n 2 \
    -k "test_complex_retention_gradients or test_hebbian_scan_and_gradients" \
    --out "$OUT/verify-cuda-compiled-grads" 2>&1 | grep "numerics report\|passed\|failed\|FAIL" | tail -6
  pack
  ;;
s49a)
  step "the criteria run of mix with the GPT reference, reading WikiText-2 text (not .npy ids) so every model is also scored in bits per byte and word-level PPL"
  python3 -c "import tokenizers; print('tokenizers', tokenizers.__version__)" || { echo "no tokenizers package here: text data cannot be read"; pack; exit 0; }
  TEXT=(--data-dir .devcarry/wikitext-2-raw --tokenizer-dir .devcarry/gpt2-tokenizer --cache-dir "$OUT/cache" --offline --train-split valid)
  timeout "${S49A_BENCH_S:-500}" python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix,gpt \
    --device cuda "${TEXT[@]}" "${BUDGET[@]}" --weight-decay 3.0 --out "$OUT/bench-mix-text" > "$OUT/bench-mix-text.txt" 2>&1
  echo "bench rc=$?"
  grep -A12 "^| criterion" "$OUT"/bench-mix-text/report.md 2>/dev/null | head -14
  grep -h "eval PPL\|bits per byte\|word-level\|tokens scored\|^| model" "$OUT"/bench-mix-text/report.md 2>/dev/null | head -8
  tail -3 "$OUT/bench-mix-text.txt"
  rm -rf "$OUT/cache"
  pack
  ;;
s48b)
  step "the seven tests s48a's whole-suite run on CUDA had not finished at 500 s (compiled/triton scan, retention and Hebbian gradients; ZetaEmbedding gradcheck; the compiled diagonal scan's accuracy)"
  MUSE_VERIFY_IMPL=eager,compiled,triton timeout "${S48B_VERIFY_S:-420}" python3 -m muse verify --profile ci --device cuda -n 8 \
    -k "test_complex_diag_scan_gradients or test_complex_retention_gradients or test_hebbian_scan_and_gradients or (test_gradcheck_modules and ZetaEmbedding) or test_complex_diag_scan_accuracy" \
    --out "$OUT/verify-cuda-rest" 2>&1 | grep "numerics report\|passed\|failed\|FAIL" | tail -6
  pack
  ;;
s48a)
  step "the whole numerics suite on CUDA under eager, compiled and triton at this tree (recompute switches, range checks under compile and the selective scan's output changed since 087750a)"
  MUSE_VERIFY_IMPL=eager,compiled,triton timeout "${S48A_VERIFY_S:-480}" python3 -m muse verify --profile ci --device cuda -n 16 \
    --out "$OUT/verify-cuda" 2>&1 | grep "numerics report\|passed\|failed" | tail -4
  grep -h "FAIL" "$OUT"/verify-cuda/report.md 2>/dev/null | head -12
  pack
  ;;
s47c)
  step "CUDA graphs now the default with gradient accumulation, and accepted under DDP: the CUDA trainer tests (accumulation under graphs against the default mode; DDP cuda and cuda-graphs on two gloo ranks sharing the GPU)"
  timeout "${S47C_TEST_S:-330}" python3 -m pytest -q -n 3 -p no:cacheprovider tests/train/test_train_compiled.py tests/train/test_train_ddp.py \
    -k "cuda" 2>&1 | tee "$OUT/cuda-train-tests.txt" | tail -4
  step "muse train mix, B 4 x 2 micro-batches (8 x 1024 tokens a step), 20 steps: the new default (CUDA graphs) against --compile-mode default"
  for mode in ${S47C_MODES:-auto default}; do
    extra=(); [ "$mode" != auto ] && extra=(--compile-mode "$mode")
    name="train-accum-$mode"
    timeout 110 python3 -m muse train --model stage1 --preset mix --device cuda --compile "${extra[@]}" "${DATA[@]}" \
      --max-steps 20 --batch-size 4 --grad-accum 2 --lr 1e-3 --min-lr 1e-4 --warmup 4 --weight-decay 3.0 \
      --eval-every 0 --final-eval-tokens 16384 --ckpt-every 0 --log-every 5 --no-progress --out "$OUT/$name" > "$OUT/$name.txt" 2>&1
    echo "$name rc=$?"; python3 - "$OUT/$name/results.json" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except OSError as e:
    print("  no results:", e); sys.exit()
t = r.get("steady_step_s"); fe = r.get("final_eval") or {}
print(f"  status {r.get('status')}, mode {r.get('compile_mode')}, steady step {t and round(t * 1e3, 1)} ms = "
      f"{t and round(8 * 1024 / t):,} tok/s, compile {r.get('compile_s') and round(r['compile_s'], 1)} s, "
      f"peak {r['peak_memory']['bytes'] / 2**20:,.1f} MiB, final eval loss {fe.get('loss')}, skipped {r.get('skipped_steps')}")
logged = [json.loads(l) for l in open(sys.argv[1].replace("results.json", "log.jsonl")) if '"tok_per_s"' in l]
print("  losses:", [round(x["loss"], 4) for x in logged])
PY
    [ -f "$OUT/$name/results.json" ] || tail -5 "$OUT/$name.txt"
  done
  pack
  ;;
s47b)
  step "s47a again with the accumulation that folds each micro-batch's gradients right after its backward (the full-precision optimizer's gradients start as zeros it owns): the tree's accumulation only, one process then DDP"
  timeout 200 python3 scripts/graph_accum_probe.py --folds copy --out "$OUT/single" 2>&1 | tee "$OUT/probe-single.txt" | grep "^{" | cut -c1-700
  step "the same under DDP"
  timeout 200 python3 scripts/graph_accum_probe.py --folds copy --ddp --out "$OUT/ddp" 2>&1 | tee "$OUT/probe-ddp.txt" | grep "^{" | cut -c1-900
  pack
  ;;
s47a)
  step "gradient accumulation under CUDA graphs (two micro-batches a step, tiny models, synthetic data): the tree's accumulation (copies) against the one before 2026-12-07 (gradients held in .grad, graph memory, across the next forward); one process, then DDP (two gloo ranks sharing the GPU) with its wrapper forced into reduce-overhead"
  timeout 330 python3 scripts/graph_accum_probe.py --out "$OUT/single" 2>&1 | tee "$OUT/probe-single.txt" | grep "^{" | cut -c1-600
  step "the same under DDP"
  timeout 250 python3 scripts/graph_accum_probe.py --ddp --out "$OUT/ddp" 2>&1 | tee "$OUT/probe-ddp.txt" | grep "^{" | cut -c1-900
  pack
  ;;
s46a)
  step "CUDA graphs as the compiled single-process CUDA default: the CUDA trainer tests (bitwise resume under the graphs), then muse train mix B 8 S 1024 with no --compile-mode (s45h: 105,035-108,950 tok/s in the default mode, 342,132-356,900 with reduce-overhead)"
  timeout 240 python3 -m pytest -q -p no:cacheprovider tests/train/test_train_compiled.py tests/train/test_compiled_model_loss.py \
    -k "cuda or cudagraph" 2>&1 | tee "$OUT/cuda-train-tests.txt" | tail -4
  S45H_RUNS="auto 0" bash "$0" s45h | grep -v "^===\|^GPU\|^torch"
  cp -r runs/gpu/s45h/train-auto-chain-0* "$OUT/" 2>/dev/null
  pack
  ;;
s46e)
  step "the CUDA tests at the session's final tree: complex, kernels, fullgraph, the fused loss, compiled training (CUDA graphs by default), evaluation's one shape"
  timeout 400 python3 -m pytest -q -n 4 -p no:cacheprovider --muse-device cuda tests/complex tests/kernels \
    tests/models/test_models_fullgraph.py tests/models/test_model_contract.py tests/train/test_fused_loss.py \
    tests/train/test_train_compiled.py tests/train/test_compiled_model_loss.py tests/train/test_train_evaluate.py \
    2>&1 | tee "$OUT/cuda-tests.txt" | tail -8
  pack
  ;;
s46d)
  step "DDP under CUDA graphs (tree 2a60227, which let DDP take --compile-mode reduce-overhead; reverted after this run failed): two gloo ranks share the GPU"
  timeout 450 python3 -m pytest -q -p no:cacheprovider tests/train/test_train_ddp.py -k "inductor and cuda-graphs" \
    2>&1 | tee "$OUT/ddp-cuda-graphs-test.txt" | tail -15
  pack
  ;;
s46c)
  step "s46b again after the eval batches got one shape (the tail padded): the final eval's time (s46b: Stage 1 22.19 s, Phase 2 12.48 s, mixer-free 3.49 s for 287,643 targets; the 16,384-target evals 0.02-0.05 s after the first) and the same verdicts"
  timeout 560 python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix \
    --device cuda "${DATA[@]}" "${BUDGET[@]}" --weight-decay 3.0 --out "$OUT/bench-mix" > "$OUT/bench-mix.txt" 2>&1
  echo "bench-mix rc=$?"
  grep "^| perplexity vs\|^| VRAM\|all_pass\|^| eval PPL\|compiled (" "$OUT/bench-mix/report.md" | cut -c1-220
  for r in phase2 stage1 phase2_nomix; do
    python3 - "$OUT/bench-mix/$r" <<'PY'
import json, sys
d = sys.argv[1]
r = json.load(open(d + "/results.json"))
ev = [json.loads(l) for l in open(d + "/log.jsonl") if '"eval"' in l]
print(d.rsplit("/", 1)[1], "wall", round(r["wall_time_s"], 1), "compile", round(r["compile_s"], 1), "steady step ms",
      round(r["steady_step_s"] * 1e3, 2), "evals s", [round(e["eval_s"], 2) for e in ev], "final loss", ev[-1]["loss"])
PY
  done
  pack
  ;;
s46b)
  step "the mix preset's criteria run under the new CUDA default (compiled training replaying CUDA graphs), alone on the GPU (s44e: the default mode, two processes sharing the GPU: mix 658.40, Phase 2 674.09, mixer-free 789.19, all_pass true)"
  timeout 560 python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix \
    --device cuda "${DATA[@]}" "${BUDGET[@]}" --weight-decay 3.0 --out "$OUT/bench-mix" > "$OUT/bench-mix.txt" 2>&1
  echo "bench-mix rc=$?"
  grep "^| perplexity vs\|^| VRAM\|^| NaN\|^| gradient\|^| planar\|all_pass\|^| eval PPL\|compiled\|tok/s" "$OUT/bench-mix/report.md" | cut -c1-220
  tail -3 "$OUT/bench-mix.txt"
  pack
  ;;
s45h)
  step "compiled training of mix at the seed size (muse train, B 8, S 1024, 20 steps, no eval): the default compile mode against reduce-overhead (CUDA graphs), the latter with MUSE_RECOMPUTE_CHAIN_IN_COMPILE 0 and 1; steady step time and the process peak (the compiled step without graphs is host-bound: s45e/f, 38 ms a B 2 step against ~4 ms of GPU work)"
  IFS=, read -ra runs <<< "${S45H_RUNS:-reduce-overhead 0,reduce-overhead 1,default 0}"
  for run in "${runs[@]}"; do
    set -- $run; mode=$1 flag=$2
    {
      extra=(); [ "$mode" != auto ] && extra=(--compile-mode "$mode")  # auto: the CUDA default (reduce-overhead since s46a)
      name="train-$mode-chain-$flag"; rm -rf "$OUT/$name"
      MUSE_RECOMPUTE_CHAIN_IN_COMPILE=$flag timeout 110 python3 -m muse train --model stage1 --preset mix --device cuda --compile \
        "${extra[@]}" "${DATA[@]}" --max-steps 20 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 4 --weight-decay 3.0 \
        --eval-every 0 --final-eval-tokens 16384 --ckpt-every 0 --log-every 5 --no-progress --out "$OUT/$name" > "$OUT/$name.txt" 2>&1
      echo "$name rc=$?"; python3 - "$OUT/$name/results.json" <<'PY'
import json, sys
try:
    r = json.load(open(sys.argv[1]))
except OSError as e:
    print("  no results:", e); sys.exit()
t = r.get("steady_step_s"); fe = r.get("final_eval") or {}
print(f"  status {r.get('status')}, steady step {t and round(t * 1e3, 1)} ms = {t and round(8 * 1024 / t):,} tok/s, "
      f"compile {r.get('compile_s') and round(r['compile_s'], 1)} s, peak {r['peak_memory']['bytes'] / 2**20:,.1f} MiB, "
      f"final eval loss {fe.get('loss')}, skipped {r.get('skipped_steps')}")
logged = [json.loads(l) for l in open(sys.argv[1].replace("results.json", "log.jsonl")) if '"tok_per_s"' in l]
print("  logged tok/s (each over the 5 steps before, synced):", [round(x["tok_per_s"]) for x in logged])
PY
      [ -f "$OUT/$name/results.json" ] || tail -5 "$OUT/$name.txt"
    }
  done
  pack
  ;;
s45g)
  step "where the chain switch's time goes: the profiler's kernel table of 5 compiled mix steps (B 2, S 1024), MUSE_RECOMPUTE_CHAIN_IN_COMPILE 0 then 1 (s45f: 54,156 / 53,863 against 40,742 / 47,443 tok/s)"
  for flag in 0 1; do
    MUSE_RECOMPUTE_CHAIN_IN_COMPILE=$flag timeout 110 python3 scripts/compiled_step_memory.py --device cuda --preset seed \
      --models stage1:mix --time-steps 40 --profile-steps 5 --profile-top 40 > "$OUT/profile-chain-$flag.txt" 2>&1
    echo "chain $flag rc=$?"; grep "^{" "$OUT/profile-chain-$flag.txt" | cut -c1-400
    grep -B2 -A48 "compiled step kernels" "$OUT/profile-chain-$flag.txt" | cut -c1-190
  done
  pack
  ;;
s45f)
  step "the compiled step's speed with MUSE_RECOMPUTE_CHAIN_IN_COMPILE=1 now checkpointing both branches of each mix block (mixer and FFN; s45e: mix 686.4 -> 470.4 MiB, eager 471.9; mix-copy 698.9 -> 483.0): each setting twice, alternated, 40 timed steps (s45e, 20 steps: 48,549 -> 38,299 tok/s; with the regions too 44,177)"
  for round in 1 2; do
    for cfg in "0 0" "1 0" "1 1"; do
      set -- $cfg
      MUSE_RECOMPUTE_CHAIN_IN_COMPILE=$1 MUSE_RECOMPUTE_IN_COMPILE=$2 timeout 75 python3 scripts/compiled_step_memory.py --device cuda \
        --preset seed --models stage1:mix --time-steps 40 --out "$OUT/chain-$1-regions-$2-round-$round.jsonl" 2>&1 | grep "^{" \
        | python3 -c "import json,sys; r=json.loads(sys.stdin.read()); print('chain $1 regions $2 round $round', round(r['compiled_mib'],1), 'MiB', round(r['compiled_tok_s']), 'tok/s; eager', round(r['eager_mib'],1), round(r['eager_tok_s']))"
    done
  done
  pack
  ;;
s45e)
  step "what is alive at the compiled mix step's peak (allocator history); then MUSE_RECOMPUTE_CHAIN_IN_COMPILE=1 (each block's FFN chain selectively checkpointed: GEMM outputs saved, the rest recomputed; CPU probe of the CUDA graph: -17 % saved bytes), alone and with MUSE_RECOMPUTE_IN_COMPILE=1: the compiled step's memory and speed (s45c without: mix 686.4 MiB, 60,672 tok/s; eager 471.0)"
  timeout 100 python3 scripts/compiled_step_snapshot.py --model stage1:mix --top 25 2>&1 | grep -v Warn | tail -60
  for flag in 0 1; do
    MUSE_RECOMPUTE_CHAIN_IN_COMPILE=$flag timeout 150 python3 scripts/compiled_step_memory.py --device cuda --preset seed \
      --models stage1:mix,stage1:mix-copy --time-steps 20 --out "$OUT/chain-$flag.jsonl" 2>&1 | grep "^{"
  done
  MUSE_RECOMPUTE_CHAIN_IN_COMPILE=1 MUSE_RECOMPUTE_IN_COMPILE=1 timeout 80 python3 scripts/compiled_step_memory.py --device cuda \
    --preset seed --models stage1:mix --time-steps 20 --out "$OUT/chain-and-regions.jsonl" 2>&1 | grep "^{"
  pack
  ;;
s45c)
  step "the compiled step's memory and speed at the seed size under the partitioner's activation memory budget 0.5 / 0.1 (mix, mix-copy, Phase 2, B 2, S 1024; 1.0 measured in s45a; on the CPU mix-tiny's compiled step goes 110.9 -> 77.0 -> 53.3 MiB, eager 71.7)"
  for b in ${BUDGETS:-0.5 0.1}; do
    timeout 170 python3 scripts/compiled_step_memory.py --device cuda --preset seed --models stage1:mix,stage1:mix-copy,phase2:seed --memory-budget $b \
      --time-steps 20 --out "$OUT/budget-$b.jsonl" > "$OUT/budget-$b.txt" 2>&1
    echo "budget $b rc=$?"; grep "^{" "$OUT/budget-$b.txt" || tail -5 "$OUT/budget-$b.txt"
  done
  step "mix's compiled speed with the range checks as the opaque op muse::assert_in_range (s45a, bare _assert_async: fwd+bwd 520,091, inference 1,946,250 tok/s)"
  timeout 115 python3 -m muse bench speed --preset mix --batch-size 4 --device cuda \
    --models stage1 --no-ops --variants compiled+kernels+cudagraphs --out "$OUT/speed-mix" 2>&1 | grep "^| stage1" | head -2
  pack
  ;;
s45b)
  step "DDP compiled by inductor on CUDA, two gloo ranks sharing the one GPU (--dist-backend gloo): the test, then mix-copy at the seed size, 24 steps of 4 x 1024 a rank, dropout 0, compiled and eager"
  timeout 240 python3 -m pytest -q -p no:cacheprovider tests/train/test_train_ddp.py -k "inductor_training or backend" 2>&1 | tail -30
  for mode in compiled eager; do
    flag=(--compile); [ "$mode" = eager ] && flag=(--no-compile)
    rm -rf "$OUT/ddp-gloo-$mode"
    OMP_NUM_THREADS=4 timeout 150 python3 -m torch.distributed.run --standalone --nproc_per_node 2 -m muse train \
      --model stage1 --preset mix-copy --device cuda --dist-backend gloo "${flag[@]}" "${DATA[@]}" --max-steps 24 \
      --batch-size 4 --lr 1e-3 --min-lr 1e-4 --warmup 4 --weight-decay 3.0 --dropout 0 --eval-every 0 --final-eval-tokens 65536 \
      --ckpt-every 0 --log-every 1 --no-progress --out "$OUT/ddp-gloo-$mode" > "$OUT/ddp-gloo-$mode.txt" 2>&1
    echo "ddp-gloo-$mode rc=$?"; grep "compiled\|world size\|final eval loss\|status" "$OUT/ddp-gloo-$mode/results.md" 2>/dev/null
  done
  python3 - "$OUT" <<'PY'
import json, sys
def losses(m): return [json.loads(l)["loss"] for l in open(f"{sys.argv[1]}/ddp-gloo-{m}/log.jsonl") if '"train"' in l]
c, e = losses("compiled"), losses("eager")
print("steps", len(c), len(e), "max rel diff", max(abs(a - b) / abs(b) for a, b in zip(c, e)))
print("compiled", [round(x, 4) for x in c]); print("eager   ", [round(x, 4) for x in e])
PY
  pack
  ;;
s45a)
  step "the compiled training step's memory against the eager one at the seed size, MUSE_RECOMPUTE_IN_COMPILE 0 and 1; then mix's compiled speed both ways (docs/results.md thirty-ninth session: on the CPU the switch takes mix-tiny's compiled step from 110.9 to 61.1 MiB, eager 71.7)"
  for flag in 0 1; do
    MUSE_RECOMPUTE_IN_COMPILE=$flag timeout 170 python3 scripts/compiled_step_memory.py --device cuda --preset seed \
      --models stage1:mix-copy,stage1:mix,phase2:seed,stage1:seed --out "$OUT/compiled-step-memory-$flag.jsonl" 2>&1 | grep -v Warning
  done
  for flag in 0 1; do
    MUSE_RECOMPUTE_IN_COMPILE=$flag timeout 115 python3 -m muse bench speed --preset mix --batch-size 4 --device cuda \
      --models stage1 --no-ops --variants compiled+kernels+cudagraphs --out "$OUT/speed-mix-$flag" 2>&1 | grep "^| stage1" | head -2
  done
  pack
  ;;
s44f)
  step "eager at HEAD beside s44c: mix-copy at seeds 1 and 2, Phase 2 at seeds 1 and 2, Phase 2 with the sentinel copy path at three seeds; seven processes sharing the GPU"
  export OMP_NUM_THREADS=2
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress)
  sed 's/^\([a-z0-9-]*\)|/\1-eager|/' <<'RUNS' > "$OUT/runs.txt"
phase2-s1|--model phase2 --preset seed --seed 1
phase2-s2|--model phase2 --preset seed --seed 2
mixcopy-s1|--model stage1 --preset mix-copy --seed 1
mixcopy-s2|--model stage1 --preset mix-copy --seed 2
phase2-sent-s1337|--model phase2 --preset seed --model-arg pointer_dim=64 --model-arg pointer_mode=sentinel --seed 1337
phase2-sent-s1|--model phase2 --preset seed --model-arg pointer_dim=64 --model-arg pointer_mode=sentinel --seed 1
phase2-sent-s2|--model phase2 --preset seed --model-arg pointer_dim=64 --model-arg pointer_mode=sentinel --seed 2
RUNS
  sweep 7 250 "$OUT/runs.txt"
  grep -H "final eval PPL\|compiled = " "$OUT"/*/stdout.txt | head -20
  pack
  ;;
s44e)
  step "the mix preset's criteria run at HEAD, compiled (the CUDA default) and eager, two processes sharing the GPU"
  for mode in compiled eager; do
    flag=(); [ "$mode" = eager ] && flag=(--no-compile)
    ( timeout 330 python3 -m muse bench stage1 --preset seed --stage1-preset mix --references phase2_nomix \
        --device cuda "${flag[@]}" "${DATA[@]}" "${BUDGET[@]}" --weight-decay 3.0 --out "$OUT/bench-mix-$mode" \
        > "$OUT/bench-mix-$mode.txt" 2>&1; echo "bench-mix-$mode rc=$? $(date -u +%T)" ) &
  done
  wait
  for mode in compiled eager; do echo "--- $mode"; grep "^| perplexity vs\|^| VRAM\|^| NaN\|^| gradient\|^| planar\|all_pass\|^| eval PPL" "$OUT/bench-mix-$mode/report.md" | cut -c1-200; done
  pack
  ;;
s44d)
  step "the README's command as written (the seed's Stage 1, every reference, the CUDA default: compiled training) on the offline data"
  timeout 420 python3 -m muse bench stage1 --preset seed --device cuda --tokens 1572864 --batch-size 8 "${DATA[@]}" \
    --out "$OUT/bench-readme" > "$OUT/bench-readme.txt" 2>&1; echo "rc=$?"
  grep -A12 "^| criterion" "$OUT/bench-readme/report.md" 2>/dev/null | head -14
  grep "eval PPL\|all_pass\|compile" "$OUT/bench-readme/report.md" 2>/dev/null | head -8; tail -3 "$OUT/bench-readme.txt"
  pack
  ;;
s44c)
  step "the CUDA default (compiled training) at three seeds: Phase 2 at seeds 1 and 2, mix-copy at seeds 1 and 2 (seed 1337 of both: s44a's criteria run), Phase 2 with the sentinel copy path at three seeds; seven processes sharing the GPU"
  export OMP_NUM_THREADS=2
  TRAIN=(--device cuda "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress)
  printf '%s\n' \
    "phase2-s1|--model phase2 --preset seed --seed 1" \
    "phase2-s2|--model phase2 --preset seed --seed 2" \
    "mixcopy-s1|--model stage1 --preset mix-copy --seed 1" \
    "mixcopy-s2|--model stage1 --preset mix-copy --seed 2" \
    "phase2-sent-s1337|--model phase2 --preset seed --model-arg pointer_dim=64 --model-arg pointer_mode=sentinel --seed 1337" \
    "phase2-sent-s1|--model phase2 --preset seed --model-arg pointer_dim=64 --model-arg pointer_mode=sentinel --seed 1" \
    "phase2-sent-s2|--model phase2 --preset seed --model-arg pointer_dim=64 --model-arg pointer_mode=sentinel --seed 2" \
    > "$OUT/runs.txt"
  sweep 7 450 "$OUT/runs.txt"
  grep -H "final eval PPL\|compiled = " "$OUT"/*/stdout.txt | head -20
  pack
  ;;
s44b)
  step "beside s44a: mix and the GPT eager at seed 1337, mix compiled at seeds 1 and 2 (the CUDA default), four processes sharing the GPU"
  export OMP_NUM_THREADS=4
  TRAIN=(--device cuda "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress)
  printf '%s\n' \
    "mix-eager|--model stage1 --preset mix --seed 1337 --no-compile" \
    "gpt-eager|--model gpt --preset seed --seed 1337 --no-compile" \
    "mix-compiled-s1|--model stage1 --preset mix --seed 1" \
    "mix-compiled-s2|--model stage1 --preset mix --seed 2" \
    > "$OUT/runs.txt"
  sweep 4 400 "$OUT/runs.txt"
  grep -H "final eval PPL\|peak\|compiled = \|tokens/s" "$OUT"/*/stdout.txt | head -20
  pack
  ;;
s44a)
  step "reproduce at HEAD: the mix-copy criteria run eager (as docs/experiments.md section 18) and through the CUDA default (compiled training); mix and the GPT trained compiled; four processes sharing the GPU"
  export OMP_NUM_THREADS=4
  TRAIN=(--device cuda "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress)
  for mode in compiled eager; do
    flag=(); [ "$mode" = eager ] && flag=(--no-compile)
    ( timeout 560 python3 -m muse bench stage1 --preset seed --stage1-preset mix-copy --references phase2_nomix \
        --device cuda "${flag[@]}" "${DATA[@]}" "${BUDGET[@]}" --weight-decay 3.0 --out "$OUT/bench-$mode" \
        > "$OUT/bench-$mode.txt" 2>&1; echo "bench-$mode rc=$? $(date -u +%T)" ) &
  done
  printf '%s\n' \
    "mix-compiled|--model stage1 --preset mix --seed 1337" \
    "gpt-compiled|--model gpt --preset seed --seed 1337" \
    > "$OUT/runs.txt"
  sweep 4 560 "$OUT/runs.txt"
  wait
  grep -H "final eval PPL\|peak\|compile" "$OUT"/*/stdout.txt | head -20
  for mode in compiled eager; do echo "--- bench-$mode"; grep -A12 "^| criterion" "$OUT/bench-$mode/report.md" 2>/dev/null | head -14; grep -i "compile\|PPL" "$OUT/bench-$mode/report.md" 2>/dev/null | head -12; tail -3 "$OUT/bench-$mode.txt"; done
  pack
  ;;
s40b)
  step "the whole pytest suite on the device (torch 2.11): every device-parametrised test on CUDA, the rest on its CPU; tests/data/test_data.py needs ../shared/data, absent there"
  timeout 520 python3 -m pytest -q -n 16 -p no:cacheprovider --muse-device cuda tests --ignore tests/data/test_data.py \
    --junitxml "$OUT/pytest-cuda.xml" -rfE 2>&1 | tee "$OUT/pytest-cuda.txt" | tail -40
  pack
  ;;
s40a)
  step "issue 12: Phase 2 with the sentinel copy path, seeds 1 and 2 (seed 1337 is s26a's 238.32), two processes sharing the GPU"
  TRAIN=(--device cuda --no-compile "${DATA[@]}" --tokens 1572864 --batch-size 8 --lr 1e-3 --min-lr 1e-4 --warmup 20 --weight-decay 3.0
         --eval-stride 512 --eval-every 0 --ckpt-every 0 --no-progress)
  export OMP_NUM_THREADS=4
  printf '%s\n' \
    "phase2-sent-s1|--model phase2 --preset seed --model-arg pointer_dim=64 --model-arg pointer_mode=sentinel --seed 1" \
    "phase2-sent-s2|--model phase2 --preset seed --model-arg pointer_dim=64 --model-arg pointer_mode=sentinel --seed 2" \
    > "$OUT/runs.txt"
  sweep 2 420 "$OUT/runs.txt"
  grep -H "final eval PPL\|peak\|tokens/s" "$OUT"/*/stdout.txt | head -12
  pack
  ;;
s39a)
  step "Stage 1 seed and the GPT, B 4, S 1024: default and kept logits, the GPT also from bf16 weights (for an H200)"
  timeout 400 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+half-weights,compiled+kernels+cudagraphs+keep-logits,compiled+kernels+cudagraphs+keep-logits+half-weights \
    --out "$OUT/speed" 2>&1 | grep "^| stage1\|^| gpt\|versus\|fastest\|Error\|error" | head -12
  pack
  ;;
s38e)
  step "Stage 1 seed and the GPT, B 4, S 1024, both keeping their logits; the GPT also from bf16 weights"
  timeout 200 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs+keep-logits,compiled+kernels+cudagraphs+keep-logits+half-weights \
    --out "$OUT/speed" 2>&1 | grep "^| stage1\|^| gpt\|versus\|fastest\|Error\|error" | head -8
  pack
  ;;
s38d)
  step "Stage 1 seed and the GPT, B 4, S 1024: the GPT also run from bf16 weights, inference and fwd+bwd (bf16 chunked loss)"
  timeout 240 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+half-weights --out "$OUT/speed" 2>&1 \
    | grep "^| stage1\|^| gpt\|versus\|fastest\|Error\|error" | head -8
  step "verify on CUDA: the linear cross-entropy (fp16, bf16, fp32 inputs) under eager and triton"
  MUSE_VERIFY_IMPL=eager,triton timeout 200 python3 -m muse verify --profile ci --device cuda -n 8 \
    -k "linear_cross_entropy" --out "$OUT/verify-loss" 2>&1 | grep "numerics report\|passed\|failed" | tail -3
  grep -h "^| linear_cross" "$OUT"/verify-loss/report.md 2>/dev/null | cut -c1-110
  pack
  ;;
s38c)
  step "Where the GPT's inference call goes when served from bf16 weights (no autocast), beside Stage 1"
  timeout 200 python3 scripts/profile_gpu.py --half-weights --out "$OUT/profile-hw" --sections infer > "$OUT/profile-hw.log" 2>&1
  grep -E "^\[|Self CUDA time total" "$OUT/profile-hw/infer.txt" | head -8
  step "Stage 1 seed and the GPT, B 4, S 1024, a second process: the GPT also served from bf16 weights"
  timeout 200 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+half-weights --out "$OUT/speed" 2>&1 \
    | grep "^| stage1\|^| gpt\|versus\|fastest\|Error\|error" | head -8
  pack
  ;;
s38a)
  step "verify on CUDA: the complex diagonal scan under eager and compiled (its dynamic-length compile fix, 288f8f8)"
  MUSE_VERIFY_IMPL=eager,compiled timeout 200 python3 -m muse verify --profile ci --device cuda -n 8 \
    -k "complex_diag_scan" --out "$OUT/verify-diag" 2>&1 | grep "numerics report\|passed\|failed\|FAIL" | tail -4
  grep -h "^| complex_diag" "$OUT"/verify-diag/report.md 2>/dev/null | cut -c1-140
  step "Stage 1 inference: the logits bound per head row against the summed form (CUDA graphs, 5 rounds)"
  timeout 80 python3 scripts/fusion_ab.py --device cuda --bound-rows --rounds 5 --out "$OUT/bound-rows-ab.json" 2>&1 | tail -2
  step "Stage 1 seed and the GPT, B 4, S 1024, compiled with the kernels and CUDA graphs; the GPT also served from bf16 weights"
  timeout 200 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+half-weights --out "$OUT/speed" 2>&1 \
    | grep "^| stage1\|^| gpt\|versus\|fastest\|Error\|error" | head -8
  pack
  ;;
s42a)
  step "the gradient properties (verification/test_grads.py, test_hebbian.py, test_bk.py) on CUDA under eager, compiled and triton"
  MUSE_VERIFY_IMPL=eager,compiled,triton timeout 480 python3 -m muse verify --profile ci --device cuda -n 12 \
    -k "test_grads or test_hebbian or test_bk" --out "$OUT/verify-grads" 2>&1 | grep "numerics report\|passed\|failed" | tail -4
  grep -h "grad\|FAIL" "$OUT"/verify-grads/report.md 2>/dev/null | cut -c1-160 | head -24
  pack
  ;;
s43a)
  step "compiled gradients on CUDA alone (default: the Hebbian scan, the one left; SEL=\"<-k expression>\" for others), the report kept at the time limit; the inductor and Triton caches live in .devcache (gitignored), which stays on a warm machine, so a second call goes on faster (docs/results.md thirty-seventh session items 2 and 4; at about 0.5 GB they are too large to bring back or carry)"
  export TORCHINDUCTOR_CACHE_DIR="$PWD/.devcache/inductor" TRITON_CACHE_DIR="$PWD/.devcache/triton"
  # Dynamo's local profile-guided dynamism (PGO) keeps which dims went dynamic in the cache directory; a second call
  # then compiles dynamic graphs from the start, which the first call's caches do not hold. Off unless PGO=1.
  export TORCH_DYNAMO_AUTOMATIC_DYNAMIC_LOCAL_PGO="${PGO:-0}"
  du -sh .devcache 2>/dev/null || echo "no .devcache here: a cold start"
  MUSE_VERIFY_IMPL=compiled python3 -m muse verify --profile ci --device cuda -n 1 --time-limit "${LIMIT:-500}" \
    -k "compiled and (${SEL:-test_hebbian})" --out "$OUT/verify-grads-compiled" 2>&1 \
    | grep "numerics report\|passed\|failed" | tail -4
  grep -h "INCOMPLETE\|did not finish\|^- verification\|^| complex_retention\|^| hebbian" "$OUT"/verify-grads-compiled/report.md 2>/dev/null | cut -c1-160 | head -24
  ls .devcache/inductor/dynamo 2>/dev/null | head -3
  pack
  ;;
s42b)
  step "what s42a/the thirty-fifth session's second call left unfinished on CUDA: retention and Hebbian gradients compiled, BK and complex_diag eager"
  MUSE_VERIFY_IMPL=eager,compiled python3 -m muse verify --profile ci --device cuda -n 8 --time-limit 500 \
    -k "(compiled and (test_complex_retention_gradients or test_hebbian)) or (eager and (test_bk or test_complex_diag_scan_gradients))" \
    --out "$OUT/verify-grads-rest" 2>&1 | grep "numerics report\|passed\|failed" | tail -4
  grep -h "FAIL\|INCOMPLETE\|did not finish\|^- verification" "$OUT"/verify-grads-rest/report.md 2>/dev/null | head -12
  pack
  ;;
s38b)
  step "the whole numerics suite on CUDA under eager, compiled and triton (-n 16)"
  MUSE_VERIFY_IMPL=eager,compiled,triton timeout 560 python3 -m muse verify --profile ci --device cuda -n 16 \
    --out "$OUT/verify-cuda" 2>&1 | grep "numerics report\|passed\|failed" | tail -4
  grep -h "FAIL" "$OUT"/verify-cuda/report.md 2>/dev/null | head -12
  pack
  ;;
s37b)
  step "the head's GEMM alone again with a 32 MiB cuBLASLt workspace"
  CUBLASLT_WORKSPACE_SIZE=32768 timeout 30 python3 scripts/head_gemm_ab.py --out "$OUT/head-gemm-ab-ws32m.json" 2>&1 | grep -v Warning | tail -16
  step "verify on CUDA, every implementation: what s37a's whole-suite run had not finished at 360 s (retention, modrelu, scans, stability, pointer)"
  MUSE_VERIFY_IMPL=eager,compiled,triton timeout 420 python3 -m muse verify --profile ci --device cuda -n 12 \
    -k "retention or modrelu or diag_scan or stability or pointer" --out "$OUT/verify-cuda-rest" 2>&1 | grep "numerics report\|passed\|failed\|FAIL" | tail -6
  grep -h "^| complex_retention\|^| complex_diag\|^| modrelu\|FAIL" "$OUT"/verify-cuda-rest/report.md 2>/dev/null | cut -c1-160 | head -20
  pack
  ;;
s37a)
  step "the head's GEMM alone: fp16/bf16, bias epilogue or none or folded into K, cuBLAS and cuBLASLt"
  timeout 40 python3 scripts/head_gemm_ab.py --out "$OUT/head-gemm-ab.json" 2>&1 | tail -20
  step "the whole numerics suite on CUDA under eager, compiled and triton (compiled code keeps its fp16 roundings, 9cb016f)"
  MUSE_VERIFY_IMPL=eager,compiled,triton timeout 360 python3 -m muse verify --profile ci --device cuda -n 12 \
    --out "$OUT/verify-cuda" 2>&1 | grep "numerics report\|passed\|failed" | tail -4
  grep -h "FAIL" "$OUT"/verify-cuda/report.md 2>/dev/null | head -12
  step "Stage 1 seed and the GPT, B 4, S 1024, compiled with the kernels and CUDA graphs, default and kept logits"
  timeout 170 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+keep-logits --out "$OUT/speed" 2>&1 \
    | grep "^| stage1\|^| gpt\|versus\|Error\|error" | head -8
  pack
  ;;
s36a)
  step "The fp16 roundings compiled code keeps (torch 2.11): the CUDA test, then verify layer_norm/modrelu under eager, compiled, triton"
  timeout 90 python3 -m pytest -q -p no:cacheprovider --muse-device cuda tests/train/test_compiled_model_loss.py -k intermediate 2>&1 | tail -2
  MUSE_VERIFY_IMPL=eager,compiled,triton timeout 200 python3 -m muse verify --profile ci --device cuda -n 4 \
    -k "layer_norm or modrelu" --out "$OUT/verify-norms" 2>&1 | grep -i "passed\|failed\|PASS\|FAIL" | tail -4
  step "Stage 1 seed and the GPT, B 4, S 1024, compiled with the kernels and CUDA graphs, default and kept logits"
  timeout 200 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+keep-logits --out "$OUT/speed" 2>&1 \
    | grep "^| stage1\|^| gpt\|versus\|Error\|error" | head -8
  pack
  ;;
s35d)
  step "Stage 1 seed and the GPT, B 4, S 1024, compiled with the kernels and CUDA graphs, default and kept logits"
  timeout 200 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs,compiled+kernels+cudagraphs+keep-logits --out "$OUT/speed" 2>&1 \
    | grep "^| stage1\|^| gpt\|versus\|Error\|error" | head -8
  pack
  ;;
s35a)
  step "CUDA tests of the norms' flags and the seed block (the flag op apart from the plain norm op)"
  timeout 90 python3 -m pytest -q -p no:cacheprovider --muse-device cuda tests/kernels/test_kernels_layers.py \
    tests/kernels/test_kernels_direct_call.py -k "flag or nonfinite or seed_block or compiled or opcheck or direct or inductor" 2>&1 | tail -2
  step "Stage 1 inference: the first activations counted in the first norm's pass against a pass apart (CUDA graphs, 5 rounds)"
  timeout 80 python3 scripts/fusion_ab.py --device cuda --embedding-count --rounds 5 --out "$OUT/embedding-count-ab-stage1.json" 2>&1 | tail -2
  step "Stage 1 seed and the GPT, B 4, S 1024, compiled with the kernels and CUDA graphs"
  timeout 170 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs --out "$OUT/speed" 2>&1 | grep "^| stage1\|^| gpt\|versus\|Error\|error" | head -6
  pack
  ;;
s34b)
  step "Stage 1 inference: the padded head's rows from buffers against views past the parameters' ends (CUDA graphs, 5 rounds)"
  timeout 80 python3 scripts/fusion_ab.py --device cuda --head-view --rounds 5 --out "$OUT/head-view-ab-stage1.json" 2>&1 | tail -2
  step "Stage 1 inference: the first activations counted in the first norm's pass against a pass apart (CUDA graphs, 5 rounds)"
  timeout 80 python3 scripts/fusion_ab.py --device cuda --embedding-count --rounds 5 --out "$OUT/embedding-count-ab-stage1.json" 2>&1 | tail -2
  step "Stage 1 inference: the token ids' range checked once against twice (CUDA graphs, 5 rounds)"
  timeout 80 python3 scripts/fusion_ab.py --device cuda --id-check --rounds 5 --out "$OUT/id-check-ab-stage1.json" 2>&1 | tail -2
  step "CUDA tests of the norms' flags and the seed block"
  timeout 90 python3 -m pytest -q -p no:cacheprovider --muse-device cuda tests/kernels/test_kernels_layers.py \
    -k "flag or nonfinite or seed_block or compiled or opcheck" 2>&1 | tail -2
  step "Stage 1 seed and the GPT, B 4, S 1024, compiled with the kernels and CUDA graphs (a second process)"
  timeout 170 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs --out "$OUT/speed" 2>&1 | grep "^| stage1\|^| gpt\|versus\|Error\|error" | head -6
  pack
  ;;
s31c)
  step "Stage 1 inference: each block's second norm paired with the next norm against block after block (CUDA graphs, 7 rounds)"
  timeout 80 python3 scripts/fusion_ab.py --device cuda --rounds 7 --out "$OUT/pair-ab-stage1.json" 2>&1 | tail -2
  step "Stage 1 seed and the GPT, B 4, S 1024, compiled with the kernels and CUDA graphs, default loss"
  timeout 140 python3 -m muse bench speed --preset seed --batch-size 4 --device cuda --models stage1,gpt --no-ops \
    --variants compiled+kernels+cudagraphs --out "$OUT/speed" 2>&1 | grep "^| stage1\|^| gpt\|versus\|Error\|error" | head -6
  step "Stage 1's training step: the log-sum-exp kernel reading a chunk row once against twice (CUDA graphs, 5 rounds)"
  timeout 70 python3 scripts/fusion_ab.py --device cuda --train --lse --rounds 5 --out "$OUT/lse-ab-stage1.json" 2>&1 | tail -2
  pack
  ;;
s31b)
  step "Stage 1's training step at 3,072 and 4,096 vocabulary rows per loss chunk (CUDA graphs, 5 rounds)"
  timeout 150 python3 scripts/fusion_ab.py --device cuda --train --rounds 5 --chunks 3072,4096 \
    --out "$OUT/chunks-stage1.json" 2>&1 | grep "chunk\|library\|Error" | tail -4
  pack
  ;;
*) echo "usage: $0 checks|bench|speed|extra|loss|final|last|sweep1|sweep2|final2|final3|final4|next|s4a|s4b|s4c|s4d|s5a|s5b|s5c|s6a|s6b|s7a|s7b|s8a|s8b|s8c|s9a|s10a|s10b|s10c|s10d|s10e|s11a|s11b|s12a|s12b|s12c|s12d|s12e|s13a|s14a|s15a|s15b|s15c|s16a|s16b|s17a|s17b|s17c|s17d|s18a|s19a|s19b|s19c|s19d|s20a|s20b|s20c|s21a|s22a|s22b|s22c|s22d|s23a|s23b|s23c|s24a|s24b|s24c|s24d|s25a|s25b|s25c|s25d|s26a|s26b|s26c|s26d|s27a|s27b|s27c|s27d|s27e|s27f|s28a|s29a|s29b|s29c|s29d|s30a|s30b|s30c|s30d|s31a|s31b|s31c|s32c|s33a|s34a|s34b|s35a|s35d|s36a|s36b" >&2; exit 2 ;;
esac
step "pack"
ls -la "$FINAL_OUT"
