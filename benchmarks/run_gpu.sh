#!/usr/bin/env bash
# The GPU measurements of benchmarks/RESULTS.md, in priority order, each under its own timeout, one JSON
# line per run appended to $OUT/results.jsonl (stderr to $OUT/log.txt). A global deadline skips what is
# left (re-run with the skipped group names). Usage: benchmarks/run_gpu.sh GROUP... (smoke train sampleB
# rngB sampleL sampleH trainL32 sampleLbf16 sampleLfp32; fast paths: fasttest fastB32 fastB64 fastL64 fasttrain
# graphB64 graphB32 graphL64 trainBend; compile and evaluation: compileB compileL compileB128
# compileBend graphH64 features; issue 20, three calls of <= 560 s: t20test t20B t20Bcompile | t20L
# t20Lcompile | graphL64 features graphH64); OUT defaults to /tmp/djepa_bench, DEADLINE (seconds from start) to 540.
set -u
OUT=${OUT:-/tmp/djepa_bench}; mkdir -p "$OUT"
DEADLINE=${DEADLINE:-540}
START=$(date +%s)
export PYTHONUNBUFFERED=1 PYTHONPATH=".:${PYTHONPATH:-}"
R="$OUT/results.jsonl"; L="$OUT/log.txt"

job() {  # job TIMEOUT SCRIPT ARGS...
  local t=$1; shift
  local left=$(( DEADLINE - ($(date +%s) - START) ))
  if (( left < 20 )); then echo "{\"skipped\": \"$*\"}" >> "$R"; return; fi
  (( t > left )) && t=$left
  echo "=== $(date +%T) [$t s] $*" >> "$L"
  local line rc
  timeout "$t" python3 "$@" > "$OUT/.last" 2>>"$L"; rc=$?
  line=$(tail -1 "$OUT/.last")
  if [[ "$line" == \{* ]]; then echo "$line" >> "$R"; else echo "{\"failed\": \"$*\", \"rc\": $rc}" >> "$R"; fi
  echo "    rc=$rc $(date +%T)" >> "$L"
}

S=benchmarks/sample_speed.py; T=benchmarks/train_speed.py
B=configs/djepa-b.yaml; LL=configs/djepa-l.yaml; H=configs/djepa-h.yaml
for g in "$@"; do case $g in
  smoke) job 120 benchmarks/gpu_smoke.py ;;
  train)
    for d in bf16 fp32; do
      job 90 $T --config $B --batch-size 64 --dtype $d
      job 120 $T --config $LL --batch-size 64 --dtype $d
    done ;;
  sampleB)
    for d in bf16 fp32; do
      job 90 $S --config $B --batch-size 256 --ar-steps 32 --cfg 1.0 --dtype $d
      job 180 $S --config $B --batch-size 256 --ar-steps 64 --cfg 3.1 --dtype $d
    done ;;
  rngB) job 90 $S --config $B --batch-size 256 --ar-steps 64 --cfg 3.1 --dtype bf16 --rng single ;;
  sampleL)
    job 150 $S --config $LL --batch-size 256 --ar-steps 64 --dtype bf16
    job 330 $S --config $LL --batch-size 256 --ar-steps 64 --dtype fp32 ;;
  trainL32) for d in fp32 bf16; do job 90 $T --config $LL --batch-size 32 --dtype $d; done ;;
  sampleLbf16) job 150 $S --config $LL --batch-size 256 --ar-steps 64 --dtype bf16 ;;
  sampleLfp32) job 400 $S --config $LL --batch-size 256 --ar-steps 64 --dtype fp32 --warmup-batch-size 32 ;;
  sampleH) job 240 $S --config $H --batch-size 256 --ar-steps 64 --dtype bf16 ;;
  # the fast paths (issue 8): the new default sample.dtype=auto (bf16 on CUDA), then CUDA graphs
  fasttest) echo "=== pytest" >> "$L"; timeout 90 python3 -m pytest -q -s tests/test_fast_paths.py >> "$L" 2>&1 ;;
  fastB32) job 60 $S --config $B --batch-size 256 --ar-steps 32 --cfg 1.0 --no-cuda-graphs ;;
  fastB64) job 90 $S --config $B --batch-size 256 --ar-steps 64 --cfg 3.1 --no-cuda-graphs ;;
  fastL64) job 110 $S --config $LL --batch-size 256 --ar-steps 64 --no-cuda-graphs ;;
  fasttrain)
    job 60 $T --config $B --batch-size 64 --dtype bf16 --no-flops
    job 60 $T --config $LL --batch-size 64 --dtype bf16 --no-flops ;;
  graphB64) job 90 $S --config $B --batch-size 256 --ar-steps 64 --cfg 3.1 --cuda-graphs --batches 2 ;;
  graphB32) job 60 $S --config $B --batch-size 256 --ar-steps 32 --cfg 1.0 --cuda-graphs --batches 2 ;;
  graphL64) job 150 $S --config $LL --batch-size 256 --ar-steps 64 --cuda-graphs --batches 2 ;;
  trainBend) job 60 $T --config $B --batch-size 64 --dtype bf16 --no-flops --read end --compile off ;;
  # train.compile (torch.compile of the blocks; the warm-up pays the compile) and the evaluator's other parts
  compileB) job 240 $T --config $B --batch-size 64 --dtype bf16 --no-flops --compile on --warmup 4 ;;
  compileL) job 300 $T --config $LL --batch-size 64 --dtype bf16 --no-flops --compile on --warmup 4 ;;
  compileB128) job 240 $T --config $B --batch-size 128 --dtype bf16 --no-flops --compile on --warmup 4 ;;
  compileBend) job 240 $T --config $B --batch-size 64 --dtype bf16 --no-flops --compile on --warmup 4 --read end ;;
  graphH64) job 300 $S --config $H --batch-size 256 --ar-steps 64 --cfg 4.3 --cuda-graphs --batches 2 ;;
  features) job 150 benchmarks/feature_speed.py --device cuda --images 5000 --batch-sizes 200 500 ;;
  # issue 20: batch 64 / 128 (/ 256 with checkpointing), with and without compile and grad checkpointing.
  # FLOPs are counted on the eager runs; a compiled / checkpointed run's MFU = its img/s x the eager run's flops_per_img
  # at the same batch (same seeds: same --warmup and --steps).
  t20test) echo "=== pytest issue 20" >> "$L"
    timeout 150 python3 -m pytest -q tests/test_grad_checkpointing.py tests/test_op_count.py \
      "tests/test_fast_paths.py::test_compiled_blocks_give_the_eager_losses_and_weights" >> "$L" 2>&1 ;;
  t20B)
    for bs in 64 128; do job 70 $T --config $B --batch-size $bs --warmup 4 --steps 8; done
    for bs in 128 256; do
      job 70 $T --config $B --batch-size $bs --warmup 4 --steps 8 --no-flops --grad-checkpointing on
    done ;;
  t20Bcompile)
    job 200 $T --config $B --batch-size 64 --warmup 5 --steps 8 --no-flops --compile on
    job 160 $T --config $B --batch-size 128 --warmup 5 --steps 8 --no-flops --compile on --grad-checkpointing on ;;
  t20L)
    for bs in 64 128; do job 90 $T --config $LL --batch-size $bs --warmup 4 --steps 8; done  # 128: OOM on 80 GB
    job 90 $T --config $LL --batch-size 128 --warmup 4 --steps 8 --no-flops --grad-checkpointing on ;;
  t20Lcompile)
    job 240 $T --config $LL --batch-size 64 --warmup 5 --steps 8 --no-flops --compile on
    job 200 $T --config $LL --batch-size 128 --warmup 5 --steps 8 --no-flops --compile on --grad-checkpointing on ;;
  *) echo "unknown group $g" >&2 ;;
esac; done
echo "total $(( $(date +%s) - START )) s" >> "$L"
