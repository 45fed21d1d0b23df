#!/usr/bin/env bash
# Issue 7's GPU measurements as one prepared script for a lent GPU machine (benchmarks/README.md).
# Fetch the wheels right before the device call: the mtlbench wheel is the checkout as it is then.
# Rehearse here with: PATH=.venv/bin:$PATH DEVICE=cpu BUDGET_S=60 OUT=/tmp/rehearsal bash …
#
#   bash benchmarks/gpu_session.sh --fetch-wheels   # here, once: the packages the GPU image lacks
#                                                   # (smp, thop, MedPy, kornia) and mtlbench
#                                                   # itself as wheels in .whl/ (git-ignored)
#   bash benchmarks/gpu_session.sh                  # there (carry .whl): the suite on CUDA
#
# The suite rewrites its result files after every part, so a run cut short by BUDGET_S still
# brings back the parts it finished; results land in $OUT (the device tool) or benchmarks/results.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--fetch-wheels" ]]; then
    rm -rf .whl && mkdir -p .whl
    platforms=()
    for n in 28 27 17; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp "${platforms[@]}" --platform manylinux2014_x86_64 -d .whl \
        segmentation-models-pytorch==0.6.0 kornia==0.9.0 kornia-rs thop==0.1.1.post2209072238
    python3 -m pip wheel -q --no-deps -w .whl medpy==0.5.2 .
    ls -la .whl
    exit 0
fi
for wheel in .whl/*.whl; do  # one by one: a wheel for another Python (rehearsal) is skipped
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$wheel" || echo "skipped $wheel"
done
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MTLBENCH_OFFLINE=1
export MTLBENCH_CACHE=/tmp/mtlbench-cache
out="${OUT:-benchmarks/results}"
mkdir -p "$out"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv | tee "$out/nvidia-smi.txt"
# Order: what the issue's targets need first (metrics and throughput feed the projection).
timeout "${BUDGET_S:-450}" python3 benchmarks/suite.py --device "${DEVICE:-cuda}" --out "$out" \
    --only metrics,throughput,projection,overhead,augmentation,variants,default_job \
    2>&1 | tee "$out/suite-log.txt"
