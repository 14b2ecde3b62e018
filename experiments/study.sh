#!/usr/bin/env bash
# The reproduction study on the CPU testbed (docs/results.md, docs/testbed.md): 8 methods x 3 seeds on
# the packaged testbed config (400 steps), two runs at a time, resumable (rerun the same command to continue), then
# the check that KL-Cov is GRPO-ds on-policy (docs/results.md). About 4 hours on 2 cores.
set -euo pipefail
OUT=${OUT:-runs/study}
export OMP_WAIT_POLICY=PASSIVE
CFG=$(python -c "import stare, pathlib; print(pathlib.Path(stare.__file__).parent / 'configs' / 'testbed.yaml')")
stare compare "$CFG" --methods grpo_ds stare_o1 dapo stare_c2 steer clip_cov forking entropy_bonus \
  --seeds 0 1 2 --out "$OUT" --workers 2
# KL-Cov: on-policy (one optimizer step per batch) its KL term has zero gradient and its unclipped
# surrogate equals the clipped one at ratio 1, so it is GRPO-ds; checked on 30 steps against seed 0
stare train "$CFG" method=kl_cov seed=0 trainer.steps=30 trainer.threads=1 trainer.save_every=0 \
  output_dir="$OUT/kl_cov_30_steps"
python - "$OUT" <<'PY'
import sys
from stare.report.runs import read_metrics
out = sys.argv[1]
a = read_metrics(f"{out}/kl_cov_30_steps/metrics.jsonl")
b = read_metrics(f"{out}/grpo_ds/seed_0/metrics.jsonl")[:30]
keys = ["actor/entropy", "actor/pg_loss", "actor/grad_norm", "critic/score/mean", "response_length/mean"]
same = len(a) == len(b) == 30 and all(x[k] == y[k] for x, y in zip(a, b) for k in keys)
print("KL-Cov == GRPO-ds bit for bit over 30 steps:", same)
sys.exit(0 if same else 1)
PY
# the two figures of docs/testbed.md and docs/results.md (aggregation only)
stare compare "$CFG" --methods grpo_ds stare_o1 --seeds 0 1 2 --out "$OUT" --no-run --report-dir "$OUT/report_grpo_stare"
stare compare "$CFG" --methods grpo_ds stare_o1 dapo stare_c2 steer clip_cov forking entropy_bonus --seeds 0 1 2 \
  --out "$OUT" --no-run --report-dir "$OUT/report_all"
# the archive in experiments/results/ (configs, final values, curves of every run)
python experiments/archive_results.py --study "$OUT"
