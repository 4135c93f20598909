#!/usr/bin/env bash
# Issue 16, item 6: the GPU comparison as one prepared run, for a session that is lent a GPU
# (the device tool; about 6 minutes on an H200, under its 10-minute limit per command).
#
#   here:   mkdir -p bench/.peers && cp -r /path/to/nanoGPT bench/.peers/nanogpt   (git ignores bench/.peers)
#   there:  bash bench/gpu.sh bench/.peers/nanogpt          (device tool: carry ["bench/.peers"])
#
# nanoGPT's GPU recipe shape (12 layers, 12 heads, d 768, block 1024, batch 12, vocabulary 50304):
# the training step of glassformer, Hugging Face GPT-2 and nanoGPT's model.py with the same weights,
# in bf16 autocast, 50 timed steps each taking turns, eager and then with torch.compile (nanoGPT's
# recipe compiles): tokens/s and MFU against the GPU's measured bf16 matmul peak. Then generation
# against Hugging Face generate (6/6/384, batch 1 and 8). Every JSON line goes to stdout and to
# $OUT/gpu.jsonl (the device tool brings $OUT back), else /tmp/gpu.jsonl.
set -euo pipefail
nanogpt=${1:?usage: bash bench/gpu.sh NANOGPT_CHECKOUT}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
log="${OUT:-/tmp}/gpu.jsonl"
: > "$log"
run() { python3 "$@" 2>&1 | tee -a "$log"; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
run bench/train_step.py --shape gpu --device cuda --dtype bf16 --repeat 50 --nanogpt "$nanogpt"
run bench/generate.py --device cuda --options float,bf16 --batch 1
run bench/generate.py --device cuda --options float,bf16 --batch 8
run bench/train_step.py --shape gpu --device cuda --dtype bf16 --repeat 50 --compile --nanogpt "$nanogpt"
