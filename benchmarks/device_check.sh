#!/usr/bin/env bash
# The GPU lease's one command (BENCHMARKS.md, "On a GPU"): run from the repository root
# with .carry/cifar10-30k.tar.gz carried (benchmarks/pack_device_data.sh makes it).
# Writes $OUT/device_check.json, the four variants' snapshots and this log; arguments
# go to device_check.py (e.g. --budget 300 --skip tests for a shorter rerun).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-results/device_check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee "$out/device_check.log"
PYTHONUNBUFFERED=1 python3 benchmarks/device_check.py --out "$out" "$@" 2>&1 | tee -a "$out/device_check.log"
