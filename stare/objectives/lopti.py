"""Advantage Reweighting (AR) and Low-probability token isolation (Lopti) (Yang et al., arXiv 2505.12929).

Official code: zhyang2226/AR-Lopti (verl fork), ``verl/trainer/ppo/ray_trainer.py``
(``compute_reweight_advantage``; the ``seperate_updating`` block of ``fit``), scripts
``scripts/train_kklogic_{AR,Lopti,AR-Lopti}_4x80GB.sh``. docs/methods.md §9.4.

Low-probability tokens have large gradients and dominate the update of the high-probability ones. Two
remedies, usable alone or together:

* AR (``ar``; loss-side): scale each token's advantage by an affine function of its old probability,
  the official ``both_linear_normal`` rule,

      w = k pi_old(o_t) + tau        (the paper: k = alpha, tau = 1 - alpha)
      A' = w A  (A > 0),   A' = w A n  (A <= 0),   n = ``neg_adv_weight``

  so low-probability tokens count less. ``k = 0, tau = 1, n = 1`` is PPO bit for bit.
* Lopti (``lopti``; an update schedule, trainer only): two full optimizer passes over one old pass,
  the first on the low-probability tokens, the second on the others:

      ind = pi_old < eta  (eta > 0),   pi_old >= -eta  (eta < 0, high first),
            pi_old < the ``separate_quantile``-quantile of pi_old over the valid tokens  (eta = 0)
      pass 1: A1 = where(ind, A', 0);   pass 2: A2 = where(ind, 0, A')

  The other set's tokens stay in the loss denominator with advantage 0. Both passes read the same old
  log-probs, so pass 2's ratios see what pass 1 moved and its clip can act even when pass 1 was
  on-policy. ``lopti`` carries AR's parameters (``reweight_k > 0``: AR + Lopti).

pi_old is the old pass's probability (``old_log_prob``; the current one detached when a loss is called
on-policy without it). A ``lopti`` loss called without a pass in its state trains every token (both
passes at once). Deviations: with ``kl_coef > 0`` our KL term acts on every valid token in both passes
(the official code masks the KL and entropy terms to the pass's tokens); the eta = 0 quantile is taken
over the selection scope (one call, or the mini-batch in global scope), the official code over the whole
step's batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_fraction
from ..metrics import mean_stat
from ..selection import fit_quantile
from ..surrogate import clipped_surrogate, surrogate_stats
from .contract import ClipParams, Terms, clip_inert_knobs
from .registry import Objective, register_objective

__all__ = ["ARParams", "LoptiParams", "ar_terms", "ar_weights", "lopti_terms"]

PASS_KEY = "lopti_pass"  # the schedule's overlay: 0 trains the isolated set, 1 the rest


@dataclass(frozen=True)
class ARParams(ClipParams):
    """Defaults from zhyang2226/AR-Lopti ``scripts/train_kklogic_AR_4x80GB.sh``.

    reweight_k: k (the paper's alpha), 0.2 for AR alone (0.3 with Lopti).
    reweight_tau: tau; None means 1 - reweight_k, the paper's form and every script's value (0.8).
    neg_adv_weight: n, extra factor on A <= 0 (1.0, every script; the yaml default is 0.8).
    Clip: 0.2 / 0.24 with dual clip 10 (the scripts). The scripts also use a KL loss of 0.001
    (``low_var_kl``): set ``kl_coef=0.001`` to reproduce it (the trainer then keeps a reference model).
    """

    clip_ratio_high: float = 0.24
    clip_ratio_c: float | None = 10.0
    reweight_k: float = 0.2
    reweight_tau: float | None = None
    neg_adv_weight: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        tau = self.tau
        if not (tau >= 0 and self.reweight_k + tau >= 0) or (tau == 0 and self.reweight_k == 0):
            raise ValueError(f"reweight_k and reweight_tau must give a weight k pi + tau >= 0 on [0, 1], not all 0; "
                             f"got reweight_k={self.reweight_k}, reweight_tau={tau}")
        if not self.neg_adv_weight >= 0:
            raise ValueError(f"neg_adv_weight must be >= 0, got {self.neg_adv_weight}")

    @property
    def tau(self) -> float:
        return 1.0 - self.reweight_k if self.reweight_tau is None else self.reweight_tau


@dataclass(frozen=True)
class LoptiParams(ARParams):
    """Defaults from zhyang2226/AR-Lopti ``scripts/train_kklogic_Lopti_4x80GB.sh`` (Lopti alone).

    separate_prob: eta, 0.4 for Lopti alone (0.5 with AR; the code's ``seperate_prob``); > 0 trains
        pi_old < eta first, < 0 trains pi_old >= -eta first, 0 splits at a quantile.
    separate_quantile: the quantile for eta = 0 (ours: 0.5; the code's ``seperate_portion``, whose
        default the spec does not record).
    reweight_k: 0 (AR off; the AR + Lopti script uses 0.3 with eta 0.5: preset ``ar_lopti``).
    """

    reweight_k: float = 0.0
    separate_prob: float = 0.4
    separate_quantile: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not -1 <= self.separate_prob <= 1:
            raise ValueError(f"separate_prob must be in [-1, 1], got {self.separate_prob}")
        check_fraction("separate_quantile", self.separate_quantile)


def _old_log_prob(batch) -> torch.Tensor:
    return (batch.old_log_prob if batch.old_log_prob is not None else batch.log_prob).detach()


def ar_weights(old_prob: torch.Tensor, advantages: torch.Tensor, p: ARParams) -> torch.Tensor:
    """The factor A'/A of each token: (k pi_old + tau), times ``neg_adv_weight`` where A <= 0."""
    w = p.reweight_k * old_prob + p.tau
    return torch.where(advantages > 0, w, w * p.neg_adv_weight)


def _reweighted(batch, p: ARParams, active: torch.Tensor | None = None):
    adv = batch.token_advantages
    w = ar_weights(_old_log_prob(batch).exp(), adv, p)
    if active is not None:
        w = w * active
    s = clipped_surrogate(batch.log_prob, batch.ratio_denominator, adv * w, p.clip_ratio_low, p.clip_ratio_high,
                          p.clip_ratio_c)
    stats = surrogate_stats(s, batch.valid)
    stats["ar/weight_mean"] = mean_stat(w, batch.valid)
    return s, w, stats


def ar_terms(batch, view, p: ARParams, state, plan) -> Terms:
    """AR: advantages scaled by k pi_old + tau (and n on A <= 0) inside the clipped surrogate."""
    s, w, stats = _reweighted(batch, p)
    return Terms(pg_loss=s.loss, weights=w, stats=stats)


def lopti_fit(view, p: LoptiParams, state, group):
    if p.separate_prob != 0:
        return None
    return {"threshold": fit_quantile(view.old_log_prob.exp(), view.valid, p.separate_quantile, group)}


def isolated(view, p: LoptiParams, plan) -> torch.Tensor:
    """bool [B, T]: the tokens the first pass trains."""
    prob = view.old_log_prob.exp()
    if p.separate_prob > 0:
        return prob < p.separate_prob
    if p.separate_prob < 0:
        return prob >= -p.separate_prob
    return prob.to(torch.float64) < plan["threshold"]


def lopti_terms(batch, view, p: LoptiParams, state, plan) -> Terms:
    """Lopti: two optimizer passes per step, low-probability tokens first (with AR's weights if k > 0)."""
    first = isolated(view, p, plan)
    part = state.get(PASS_KEY)
    active = None if part is None else (first if int(part) == 0 else ~first)
    s, w, stats = _reweighted(batch, p, active)
    stats["lopti/isolated_frac"] = mean_stat(first, view.valid)
    if active is not None:
        stats["lopti/trained_frac"] = mean_stat(active, view.valid)
    return Terms(pg_loss=s.loss, weights=w, stats=stats)


AR = register_objective(Objective(
    "ar", params=ARParams, terms=ar_terms, acts_at=("ADV", "WEIGHT"), inert_on_policy=clip_inert_knobs,
))

LOPTI = register_objective(Objective(
    "lopti", params=LoptiParams, terms=lopti_terms, fit=lopti_fit,
    schedule=lambda p: [{PASS_KEY: 0}, {PASS_KEY: 1}],
    acts_at=("ADV", "WEIGHT"), inert_on_policy=clip_inert_knobs,
))
