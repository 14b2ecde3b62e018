#!/usr/bin/env bash
# Predicted vs realised entropy change at four learning rates, and the cost of the diagnostics
# (docs/results.md). 60-step runs with diagnostics on, token dumps every 30 steps.
set -euo pipefail
OUT=${OUT:-runs/diagnostics}
export OMP_WAIT_POLICY=PASSIVE
CFG=$(python -c "import stare, pathlib; print(pathlib.Path(stare.__file__).parent / 'configs' / 'testbed.yaml')")
common="trainer.steps=60 trainer.eval_every=0 trainer.save_every=0 trainer.threads=1"
for lr in 3e-5 1e-4 3e-4 1e-3; do
  stare train "$CFG" method=grpo_ds optim.lr=$lr $common diagnostics.enabled=true diagnostics.rows=32 \
    diagnostics.dump_every=30 output_dir="$OUT/grpo_ds_lr$lr"
done
stare train "$CFG" method=stare_o1 $common diagnostics.enabled=true diagnostics.rows=32 diagnostics.dump_every=30 \
  output_dir="$OUT/stare_o1_lr3e-4"
# cost: share of step time (timing_s/diagnostics / timing_s/step), 30 steps each
cost="method=grpo_ds trainer.steps=30 trainer.eval_every=0 trainer.save_every=0 trainer.threads=1"
stare train "$CFG" $cost diagnostics.enabled=true diagnostics.rows=32 output_dir="$OUT/cost_param_rows32"
stare train "$CFG" $cost diagnostics.enabled=true diagnostics.rows=32 diagnostics.param_space=false \
  output_dir="$OUT/cost_noparam_rows32"
stare train "$CFG" $cost diagnostics.enabled=true diagnostics.rows=16 output_dir="$OUT/cost_param_rows16"
stare train "$CFG" $cost output_dir="$OUT/cost_off"
python experiments/summarize_diagnostics.py "$OUT"
# the archive in experiments/results/
python experiments/archive_results.py --diagnostics "$OUT"
