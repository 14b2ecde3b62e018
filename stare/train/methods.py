"""Named method presets: each is a set of config overrides applied before the user's file.

A preset fixes what makes the method the method (objective, its parameters and its controller's,
advantage normalisation, dynamic sampling) and leaves everything else (model, task, optimiser, steps) to the config.
Values follow docs/methods.md; where a method needs a target entropy, presets use
``target_entropy_ratio`` (a fraction of the first step's batch entropy) so that they transfer across
models whose entropy scales differ; the paper's absolute 0.3 nats is kept in ``configs/`` for real models.
"""

from __future__ import annotations

import copy

from ..checks import unknown_name_error

__all__ = ["METHODS", "method_overrides"]

_DAPO_CLIP = {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 10.0}

METHODS: dict[str, dict] = {
    # GRPO (DeepSeekMath) with verl's defaults: symmetric clip 0.2, dual clip 3, no dynamic sampling.
    "grpo": {"algorithm": {"objective": "ppo", "params": {}}, "rollout": {"dynamic_sampling": False}},
    # The STARE paper's baseline: clip-higher 0.28, dual clip 10, dynamic sampling on acc, token-mean.
    "grpo_ds": {"algorithm": {"objective": "ppo", "params": dict(_DAPO_CLIP)}, "rollout": {"dynamic_sampling": True}},
    # DAPO = GRPO-ds + overlong soft punishment (docs/methods.md §1.5).
    "dapo": {"algorithm": {"objective": "ppo", "params": dict(_DAPO_CLIP)},
             "rollout": {"dynamic_sampling": True}, "reward": {"overlong_shaping": True}},
    # Dr.GRPO: no std division, sum / (sequences x max length).
    "dr_grpo": {"algorithm": {"objective": "ppo", "params": {"loss_agg_mode": "seq-mean-token-sum-norm"},
                              "advantage": {"norm_by_std": False}}, "rollout": {"dynamic_sampling": False}},
    "gspo": {"algorithm": {"objective": "gspo", "params": {}}, "rollout": {"dynamic_sampling": True}},
    "stare_o1": {"algorithm": {"objective": "stare", "params": {"variant": "O1", "target_entropy_ratio": 0.5}},
                 "rollout": {"dynamic_sampling": True}},
    "stare_c2": {"algorithm": {"objective": "stare", "params": {"variant": "C2", "target_entropy_ratio": 0.5}},
                 "rollout": {"dynamic_sampling": True}},
    "steer": {"algorithm": {"objective": "steer", "params": {}}, "rollout": {"dynamic_sampling": True}},
    "stapo": {"algorithm": {"objective": "stapo", "params": {}}, "rollout": {"dynamic_sampling": True}},
    "clip_cov": {"algorithm": {"objective": "clip_cov", "params": {}}, "rollout": {"dynamic_sampling": True}},
    "kl_cov": {"algorithm": {"objective": "kl_cov", "params": {}}, "rollout": {"dynamic_sampling": True}},
    "forking": {"algorithm": {"objective": "forking", "params": dict(_DAPO_CLIP)}, "rollout": {"dynamic_sampling": True}},
    "entropy_bonus": {"algorithm": {"objective": "entropy_bonus", "params": dict(_DAPO_CLIP)},
                      "rollout": {"dynamic_sampling": True}},
    # Skywork-OR1 / TRL adaptive coefficient, target relative to the initial entropy like STARE's presets.
    "adaptive_entropy": {"algorithm": {"objective": "entropy_bonus",
                                       "params": {**_DAPO_CLIP, "adaptive": True, "entropy_coeff": 0.0,
                                                  "target_entropy_ratio": 0.5}},
                         "rollout": {"dynamic_sampling": True}},
    "entroadv": {"algorithm": {"objective": "entroadv", "params": dict(_DAPO_CLIP)}, "rollout": {"dynamic_sampling": True}},
    # --- issue 13, part A (docs/methods.md §9.1-§9.11, §10.1-§10.5). Each preset names its strength knob: the
    # parameter an equal-entropy comparison sweeps. Recipes without dynamic sampling keep it off.
    # Lp-Reg, 14B on-policy script (no dynamic sampling). Strength: rho_neg (share of negative tokens examined).
    "lp_reg": {"algorithm": {"objective": "lp_reg", "params": {}}, "rollout": {"dynamic_sampling": False}},
    # SIREN on its Dr.GRPO base. Strength: entropy_coeff (weight of the squared deviation from the anchor).
    "siren": {"algorithm": {"objective": "siren", "params": {}, "advantage": {"norm_by_std": False}},
              "rollout": {"dynamic_sampling": False}},
    # Advantage reweighting alone (K&K GRPO scripts). Strength: reweight_k (alpha).
    "ar": {"algorithm": {"objective": "ar", "params": {}}, "rollout": {"dynamic_sampling": False}},
    # Lopti alone: two passes, low-probability tokens first. Strength: separate_prob (eta).
    "lopti": {"algorithm": {"objective": "lopti", "params": {}}, "rollout": {"dynamic_sampling": False}},
    # AR + Lopti (the paper's combination). Strength: reweight_k (alpha), with separate_prob 0.5.
    "ar_lopti": {"algorithm": {"objective": "lopti", "params": {"reweight_k": 0.3, "separate_prob": 0.5}},
                 "rollout": {"dynamic_sampling": False}},
    # AEPO (agentic): entropy-balanced tool-call rollout + gradient-preserving clip. Strength: entropy_adv_coef.
    "aepo_agentic": {"algorithm": {"objective": "aepo_agentic", "params": {}}, "rollout": {"dynamic_sampling": True}},
    # BAPO, example-script bounds. Strength: target (positive / negative loss mass the bounds are widened for).
    "bapo": {"algorithm": {"objective": "bapo", "params": {}}, "rollout": {"dynamic_sampling": True}},
    # ASPO (Archer2.0). Strength: eps_high_entropy (bound width on high-entropy tokens).
    "aspo": {"algorithm": {"objective": "aspo", "params": {}}, "rollout": {"dynamic_sampling": True}},
    # DPPO, binary TV. Strength: clip_ratio_high (the TV delta for A > 0).
    "dppo": {"algorithm": {"objective": "dppo", "params": {}}, "rollout": {"dynamic_sampling": True}},
    # 1-shot RLVR's entropy loss. Strength: entropy_coeff.
    "one_shot_entropy": {"algorithm": {"objective": "one_shot_entropy", "params": {}},
                         "rollout": {"dynamic_sampling": False}},
    # EPO as its official code trains: the entropy bonus at EPO's coefficient (its smoothing term is a constant
    # with no gradient; docs/methods.md §10.4). Strength: entropy_coeff.
    "epo": {"algorithm": {"objective": "entropy_bonus", "params": {"entropy_coeff": 0.001}},
            "rollout": {"dynamic_sampling": False}},
    # --- end of issue 13, part A
    # --- Methods with step-level hooks (trainer only; docs/methods.md §9.5-§9.7, §9.10, §10.7-§10.9). Each names
    # its strength knob, the parameter an equal-entropy comparison sweeps.
    # HAPO as its recipes: clip 0.2 / 0.2, dual clip 10, DAPO overlong shaping; no dynamic sampling (the recipes'
    # filter_groups keys are read by no code of the official trainer). Strength knob: temperature_tau (acts
    # on-policy; clip_alpha and adv_beta act only with several mini-batches per step).
    "hapo": {"algorithm": {"objective": "hapo", "params": {}}, "rollout": {"dynamic_sampling": False},
             "reward": {"overlong_shaping": True}},
    # EMPG on GRPO-ds. Strength knob: confidence_k (clarity_bonus acts only on multi-turn episodes).
    "empg": {"algorithm": {"objective": "empg", "params": dict(_DAPO_CLIP)}, "rollout": {"dynamic_sampling": True}},
    # GTPO and GRPO-S on DAPO's clip and dynamic sampling (the paper's baseline). Strength knob: entropy_weight.
    "gtpo": {"algorithm": {"objective": "gtpo", "params": dict(_DAPO_CLIP)}, "rollout": {"dynamic_sampling": True}},
    "grpo_s": {"algorithm": {"objective": "grpo_s", "params": dict(_DAPO_CLIP)}, "rollout": {"dynamic_sampling": True}},
    # CURE stage 1 on DAPO (its scripts: clip 0.2 / 0.28 / 10, dynamic sampling on acc, overlong buffer); rows per
    # prompt stay rollout.n. Strength knob: branches (continuations per critical prefix; 0 is DAPO).
    "cure": {"algorithm": {"objective": "cure", "params": {}}, "rollout": {"dynamic_sampling": True},
             "reward": {"overlong_shaping": True}},
    # TTRL (aime.sh): GRPO on majority-vote rewards, KL 0.001 to the initial policy, no dynamic sampling.
    # Strength knob: votes_per_prompt (None: every sample votes and trains).
    "ttrl": {"algorithm": {"objective": "ttrl", "params": {"kl_coef": 0.001}}, "rollout": {"dynamic_sampling": False}},
    # EMPO (its TRL recipes): semantic-cluster rewards, seq-mean-token-mean, std epsilon 1e-4, no KL, no dynamic
    # sampling. No strength knob: the reward itself is replaced.
    "empo": {"algorithm": {"objective": "empo", "params": {}, "advantage": {"eps": 1e-4}},
             "rollout": {"dynamic_sampling": False}},
    # SEED-GRPO on GRPO. Strength knob: alpha (0 is GRPO).
    "seed_grpo": {"algorithm": {"objective": "seed_grpo", "params": {}}, "rollout": {"dynamic_sampling": False}},
}


def method_overrides(name: str) -> dict:
    if name not in METHODS:
        raise unknown_name_error("method", name, METHODS)
    preset = METHODS[name]
    if "band_of" in preset:  # built (and its tuned objective registered) when selected
        from .knobs import band_preset

        preset = band_preset(preset["band_of"], METHODS[preset["band_of"]])
    return copy.deepcopy({**preset, "method": name})


# Equal-entropy variants (docs/results.md): each peer with a strength knob (stare.train.knobs.KNOBS), the knob
# held by an integral controller at the band STARE's presets hold (half the first step's batch entropy).
BAND_METHODS = ("clip_cov", "kl_cov", "steer", "forking", "lp_reg", "siren")  # the entropy bonus has its own: adaptive_entropy
METHODS.update({f"{m}_band": {"band_of": m} for m in BAND_METHODS})
