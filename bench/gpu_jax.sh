#!/usr/bin/env bash
# Issue 23's GPU rows, as one prepared script for the device tool's H200 (JAX 0.11 on
# CUDA 13, no TensorFlow, no network). Keras, namex and optree travel as wheels; atlas runs
# from the working tree; everything else it needs is already there.
#
# Here, once per session:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     keras==3.15.1 namex==0.1.0 optree==0.20.0
# Then: run(command="bash bench/gpu_jax.sh", carry=[".whl"], timeout_s=570), copy
# $OUT/scale_jax.md into BENCHMARKS.md ("Backends"), the device named, and project a build
# from $OUT/throughput.json with `atlas plan` (BENCHMARKS.md says how).
#
# Budget: the table stops starting rows after DEADLINE seconds (float32 for every
# architecture first, then mixed_bfloat16); the capped default-site build afterwards gets
# what is left of TOTAL, and is cut off (its log says how far it got) rather than overrun.
set -uo pipefail
DEADLINE="${DEADLINE:-380}"
TOTAL="${TOTAL:-540}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" KERAS_BACKEND=jax PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import jax, keras; print('jax', jax.__version__, jax.devices(), 'keras', keras.__version__,
'default matmul precision', jax.config.jax_default_matmul_precision)" 2>&1 | tee -a "$OUT/gpu.txt"
python3 -c "import tensorflow" 2>&1 | tail -1 | tee -a "$OUT/gpu.txt"
# 32 lucid steps, 64 units a batch: long enough to time, short enough for ten architectures
# in both precisions inside the call's limit.
timeout $((DEADLINE + 150)) python3 bench/scale.py --backend jax --steps 32 --units 64 \
  --deadline "$DEADLINE" --throughput "$OUT/throughput.json" 2>"$OUT/scale.err" | tee "$OUT/scale_jax.md"
echo "scale: exit $? after $SECONDS s" | tee -a "$OUT/gpu.txt"
tail -5 "$OUT/scale.err"

# What is left: the default site, capped (2 units a layer, 2 steps: .ci/wheel-check's build)
# with render.backend: jax, on a machine without TensorFlow.
left=$((TOTAL - SECONDS))
if [ "$left" -gt 60 ]; then
  work=$(mktemp -d)
  (
    cd "$work" && python3 -m atlas new proj >/dev/null && cd proj && python3 - <<'PY'
import yaml

data = yaml.safe_load(open("site_config.yaml"))
data["render"]["units_per_layer"] = 2
data["render"]["backend"] = "jax"
open("site_config.yaml", "w").write(yaml.safe_dump(data, sort_keys=False))
PY
    start=$SECONDS
    timeout "$((left - 20))" python3 -m atlas build --no-progress --max-steps 2 >"$OUT/build.log" 2>&1
    echo "capped build: exit $? after $((SECONDS - start)) s" | tee -a "$OUT/gpu.txt"
    find _site -name '*.html' | wc -l | sed 's/^/pages: /' | tee -a "$OUT/gpu.txt"
    cp .atlas-cache/throughput.json "$OUT/build_throughput.json" 2>/dev/null
    cp _site/build.html "$OUT/build.html" 2>/dev/null
  )
fi
tail -3 "$OUT/build.log" 2>/dev/null
