#!/usr/bin/env bash
# The reproduction study on the CPU testbed (docs/results.md, docs/testbed.md): 8 methods x 3 seeds on
# the packaged testbed config, two runs at a time, resumable (rerun the same command to continue), then
# KL-Cov for one seed (on-policy it is inert, see docs/results.md). ~100 minutes on 2 cores.
set -euo pipefail
OUT=${OUT:-runs/study}
export OMP_WAIT_POLICY=PASSIVE
CFG=$(python -c "import stare, pathlib; print(pathlib.Path(stare.__file__).parent / 'configs' / 'testbed.yaml')")
stare compare "$CFG" --methods grpo_ds stare_o1 dapo stare_c2 steer clip_cov forking entropy_bonus \
  --seeds 0 1 2 --out "$OUT" --workers 2
stare compare "$CFG" --methods kl_cov --seeds 0 --out "$OUT" --workers 1
# the two figures of docs/testbed.md and docs/results.md (aggregation only)
stare compare "$CFG" --methods grpo_ds stare_o1 --seeds 0 1 2 --out "$OUT" --no-run --report-dir "$OUT/report_grpo_stare"
stare compare "$CFG" --methods grpo_ds stare_o1 dapo stare_c2 steer clip_cov forking entropy_bonus --seeds 0 1 2 \
  --out "$OUT" --no-run --report-dir "$OUT/report_all"
