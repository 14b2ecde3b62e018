#!/usr/bin/env bash
# How STARE-O1's band depends on W on the testbed (docs/testbed.md), seed 0; W = 5 is the study's run.
set -euo pipefail
OUT=${OUT:-runs/w_sweep}
export OMP_WAIT_POLICY=PASSIVE
CFG=$(python -c "import stare, pathlib; print(pathlib.Path(stare.__file__).parent / 'configs' / 'testbed.yaml')")
common="method=stare_o1 seed=0 trainer.threads=1 trainer.save_every=0"
for w in 10.0 1.1; do
  stare train "$CFG" $common algorithm.params.reweight_w=$w output_dir="$OUT/w$w"
done
# the adaptive schedule from the paper's W = 1.1 with a larger step and upper bound than the paper's
# (alpha 0.01, W_max 1.5, which cannot reach W = 5)
stare train "$CFG" $common algorithm.params.reweight_w=1.1 algorithm.params.adaptive=true \
  algorithm.params.alpha=0.1 algorithm.params.w_max=10 output_dir="$OUT/adaptive_wide"
# the archive in experiments/results/
python experiments/archive_results.py --w-sweep "$OUT"
