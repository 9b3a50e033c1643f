#!/usr/bin/env bash
# Issue 23's GPU rows, as one prepared script for the device tool's H200 (JAX 0.11 on
# CUDA 13, no TensorFlow, no network). Keras, namex and optree travel as wheels; atlas runs
# from the working tree; everything else it needs is already there.
#
# Here, once per session:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0
# Then: run(command="bash bench/gpu_jax.sh", carry=[".whl"], timeout_s=540), and copy
# $OUT/scale_jax.md into BENCHMARKS.md ("Backends"), the device named.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" KERAS_BACKEND=jax PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import jax; print(jax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"
# 32 lucid steps, 64 units a batch: long enough to time, short enough for ten architectures
# in both precisions inside the call's limit.
timeout 480 python3 bench/scale.py --backend jax --steps 32 --units 64 | tee "$OUT/scale_jax.md"
