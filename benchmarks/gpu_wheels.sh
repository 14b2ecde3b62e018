#!/usr/bin/env bash
# Download the small wheels benchmarks/gpu_check.sh installs where the GPU machine lacks them, into .whl/
# (git-ignored; about 10 MiB, within what a device call may carry): pydantic and its compiled core for
# CPython 3.10-3.13 (the GPU machine's Python is not known in advance), and liger-kernel (pure Python +
# triton). Run here, where PyPI is reachable; then carry .whl to the GPU machine with the source tree.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
pip download -q -d .whl --no-deps pydantic==2.14.3 annotated-types==0.8.0 typing-inspection==0.4.5 liger-kernel==0.8.5
for v in 3.10 3.11 3.12 3.13; do
    pip download -q -d .whl --no-deps --only-binary=:all: --python-version "$v" \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 pydantic-core==2.50.4
done
ls -la .whl
