#!/usr/bin/env bash
# The GPU check in one command: token statistics vs the matmul bound (and Liger), a 20-step testbed run on
# CUDA, rollout tokens/s (HF generate; vLLM if installed). At most 8 minutes (timeout); sized for ~5 on one H200.
#
#   bash benchmarks/gpu_check.sh --out "$OUT"              # on the GPU machine, from the source tree
#   bash benchmarks/gpu_check.sh --cpu-smoke --out /tmp/x  # reduced, on the CPU (what the tests run)
#
# Uses the machine's own torch / transformers / triton (no network, nothing installed system-wide). This
# package is used from the source tree (PYTHONPATH). Modules the machine lacks are installed from carried
# wheels in .whl/ (git-ignored; benchmarks/gpu_wheels.sh downloads them, a few MiB) into a temporary
# folder on PYTHONPATH: pydantic (the trainer's configuration needs it) and liger-kernel (optional).
# Writes gpu_check.json, summary.txt and the testbed run under --out; see docs/speed.md for how to read them.
set -uo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1
PY=${PYTHON:-python3}
deps=""
if [ -d .whl ]; then
    deps=$(mktemp -d)
    if ! "$PY" -c "import pydantic" 2>/dev/null; then
        "$PY" -m pip install -q --no-index --find-links .whl --no-deps --target "$deps" \
            pydantic pydantic-core annotated-types typing-inspection \
            || echo "gpu_check: pydantic from .whl/ failed to install (a wheel for this Python?)" >&2
    fi
    if ! "$PY" -c "import liger_kernel" 2>/dev/null && ls .whl/liger_kernel-*.whl >/dev/null 2>&1; then
        "$PY" -m pip install -q --no-index --find-links .whl --no-deps --target "$deps" liger-kernel \
            || echo "gpu_check: liger-kernel from .whl/ failed to install" >&2
    fi
fi
export PYTHONPATH="${deps:+$deps:}$PWD${PYTHONPATH:+:$PYTHONPATH}"
timeout "${GPU_CHECK_TIMEOUT_S:-480}" "$PY" benchmarks/gpu_check.py "$@"
rc=$?
[ -n "$deps" ] && rm -rf "$deps"
exit $rc
