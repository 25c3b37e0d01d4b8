#!/usr/bin/env bash
# Issue 16's GPU comparison, prepared to run once on a lent GPU (about 5 minutes on one H100/H200):
# generation with a different user's LoRA adapter on every row, bf16, at batch 32 and 64, on the bare model,
# through peft's mixed path and through batched LoRA, with one and eight batches of adapters in rotation.
# Needs the project installed (`make install`); writes JSON beside the CPU results (or under $OUT).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-docs/results/adapters}
mkdir -p "$out"
export PLLM_DEVICE=${PLLM_DEVICE:-cuda} PLLM_DTYPE=${PLLM_DTYPE:-bfloat16}
py=${PYTHON:-.venv/bin/python}
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
for b in 32 64; do
  "$py" benchmarks/adapters.py --batched --batch "$b" --rotation "$b" $((b * 8)) --rotation-repeats 3 \
    --budget-mb 4096 --out "$out/batched_lora_gpu_b$b.json"
done
