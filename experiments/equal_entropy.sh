#!/usr/bin/env bash
# Comparison at equal entropy (docs/results.md, "Does held entropy pay?"), on one testbed and one setting:
#  1. every method on 3 seeds, with the base model's evaluation: GRPO-ds (no entropy control), STARE-O1 and
#     the adaptive entropy bonus (each holds the band with its own controller: target half the first step's
#     batch entropy), and each peer with a strength knob as <peer>_band (its knob held at the same band by an
#     integral controller, stare.train.knobs); one held-out evaluation, at the end;
#  2. the fixed strength each peer's band runs settled at (stare calibrate reads them off the runs above; no
#     training);
#  3. with FIXED=1 only: each peer that reached the band, trained at that fixed strength on seed 0 (does the
#     fixed strength hold the band?);
#  4. the archive in experiments/results/.
#
#   bash experiments/equal_entropy.sh explore on       # the exploration testbed, on-policy (27 runs, ~50 min)
#   bash experiments/equal_entropy.sh explore off      # two mini-batches per step (off-policy updates)
#   bash experiments/equal_entropy.sh addition on      # the addition testbed (200-step cut; 21 runs, ~22 min)
#   bash experiments/equal_entropy.sh addition off
#
# Off-policy, the grid is cut to the peers whose clip and KL terms act only there (Clip-Cov, KL-Cov); STEER
# and 80/20 are on-policy rows only. Resumable (rerun the same command). Two runs at a time, one thread each.
set -euo pipefail
TESTBED=${1:?testbed: explore or addition}
SETTING=${2:?setting: on (one optimizer step per batch) or off (algorithm.mini_batches=2)}
OUT=${OUT:-runs/ee}/${TESTBED}_${SETTING}
export OMP_WAIT_POLICY=PASSIVE
PKG=$(python -c "import stare, pathlib; print(pathlib.Path(stare.__file__).parent / 'configs')")
case $TESTBED in
  explore) CFG=$PKG/explore.yaml; OV=(trainer.eval_every=300) ;;
  # the addition testbed's 400-step study cut to 200 steps (GRPO-ds's entropy has fallen ~3x by then and
  # STARE's gate engages by step 70); held-out 64 prompts x 64 samples at the end
  addition) CFG=$PKG/testbed.yaml
            OV=(trainer.steps=200 trainer.eval_every=200 trainer.save_every=50 trainer.eval_prompts=64 trainer.eval_n=64) ;;
  *) echo "unknown testbed $TESTBED" >&2; exit 2 ;;
esac
case $SETTING in
  on) PEERS=(clip_cov steer forking)
      # the new methods' knobs (Lp-Reg, SIREN) ran on the exploration testbed only
      if [ "$TESTBED" = explore ]; then PEERS+=(lp_reg siren); fi ;;
  off) OV+=(algorithm.mini_batches=2); PEERS=(clip_cov kl_cov) ;;   # KL-Cov's penalty has no gradient on-policy
  *) echo "unknown setting $SETTING" >&2; exit 2 ;;
esac
METHODS=(base grpo_ds stare_o1 adaptive_entropy "${PEERS[@]/%/_band}")
stare compare "$CFG" "${OV[@]}" --methods "${METHODS[@]}" --seeds 0 1 2 --out "$OUT" --workers 2 --baseline grpo_ds
stare calibrate "$CFG" "${OV[@]}" --methods "${PEERS[@]}" --seeds 0 1 2 --out "$OUT"
if [ "${FIXED:-0}" = 1 ]; then
  REACHED=$(python -c "import json, sys; d = json.load(open(sys.argv[1]))['methods']; print(' '.join(m for m, c in d.items() if c['reached']))" "$OUT/calibration.json")
  if [ -n "$REACHED" ]; then
    stare compare "$OUT/calibrated.yaml" --methods $REACHED --seeds 0 --out "$OUT/fixed" --workers 2
  fi
fi
python experiments/archive_results.py --group "equal_entropy__${TESTBED}_${SETTING}" "$OUT"
