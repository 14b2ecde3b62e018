#!/usr/bin/env bash
# Tests of the framework plug-ins (stare.integrations), called by .ci/run after the core tests.
#
# 1. verl: verl 0.9.1 pins transformers < 5.11, which TRL 1.16 cannot use, so the verl tests run in their
#    own virtual environment (.venv-verl, git-ignored): torch 2.13.0, the package with its [verl] extra,
#    and the few modules verl's V1 trainer imports that verl's base install lacks (its "verl-core" extra,
#    without the GPU-only parts).
# 2. TRL: in the active (main) environment, after `pip install -e '.[trl]'`.
#
# Nothing here downloads model weights or data: the tests build a tiny model and tokenizer locally.
# Run from anywhere: bash ci/integrations.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE TOKENIZERS_PARALLELISM=false PIP_DISABLE_PIP_VERSION_CHECK=1
export VERL_LOGGING_LEVEL=WARN RAY_USAGE_STATS_ENABLED=0
start=$(date +%s)

# --- verl, in its own environment --------------------------------------------------------------------
if [ ! -x .venv-verl/bin/python ]; then
    python3 -m venv .venv-verl
fi
.venv-verl/bin/pip install -q torch==2.13.0
.venv-verl/bin/pip install -q -e '.[verl,test]' \
    TransferQueue==0.1.11 cachetools==8.0.1 fastapi==0.165.0 uvicorn==0.54.0 msgspec==0.22.0 pyzmq==27.3.0
echo "integrations: verl environment ready in $(( $(date +%s) - start )) s"
.venv-verl/bin/python -m pytest -q -p no:cacheprovider tests/integrations/test_verl.py

# --- TRL, in the main environment ---------------------------------------------------------------------
if [ -z "${VIRTUAL_ENV:-}" ]; then
    echo "integrations: activate the main virtual environment first (. .venv/bin/activate)" >&2
    exit 1
fi
pip install -q -e '.[test,trl]'
python -m pytest -q -p no:cacheprovider tests/integrations/test_trl.py

echo "integrations: done in $(( $(date +%s) - start )) s"
