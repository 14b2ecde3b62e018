"""HAPO: Heterogeneous Adaptive Policy Optimization (arXiv 2509.16591). docs/methods.md §9.6.

Official code: starriver030515/HAPO (verl fork): ``verl/trainer/ppo/core_algos.py`` (``compute_entropy_h``,
``ada_clip``, ``ada_advantage``, ``compute_hapo_outcome_advantage``), ``ray_trainer.py`` (the statistics
handed to the next rollout), its patched vLLM sampler (``compute_entropy_based_temperature``) and
``recipe/*.sh``. HAPO acts in four places, all driven by one entropy signal:

    l     = log(max(H, 1e-8))                      H: per-token entropy over the loss tokens of a batch
    med   = the ``entropy_pivot`` quantile of l (nearest rank);   rms = sqrt(mean((l - med)^2))
    h     = (l - med) / rms;   h_hat = h / max(h > 0) above the pivot, h / min(h < 0) at or below it

1. Adaptive temperature (rollout hook + ``HapoController``): at each decoding step, with this token's
   entropy H of the raw logits and the (med, rms, scales) of the *previous* step's old pass,
   T_t = T (1 + tau h_hat_t), h_hat_t clamped to [-1, 1]; then top-p. The first step samples at T.
2. Token-level group average (advantage hook): per group, the reward's mean and population std over all
   loss tokens of the group (length-weighted); A = (r - mean) / (std + 1e-6). If any |A| >= 5 in the
   group, the group keeps the default (GRPO) advantages.
3. Adaptive clip (loss): eps_low (1 - alpha h_hat) where h_hat <= 0, eps_high (1 + alpha h_hat) where
   h_hat > 0, per token, from the current forward's entropy (micro scope) or the old one (global scope).
4. Advantage redistribution (loss): A_ent = A (1 + beta h_hat); with r inside (1 - eps_low/2,
   1 + eps_high/2), tokens with h_hat > 0 keep A and the others take A_ent; outside it, the reverse.
   Then the dual-clipped surrogate with the per-token bounds.

**Signed or unsigned h_hat.** The paper describes h_hat in [-1, 1] (negative below the pivot). The code
divides the negative side by min(h < 0), a negative number, so h_hat is in [0, 1] for every token: the
"low-entropy" branches of 3 and 4 then fire only exactly at the pivot, and the temperature can only rise.
We follow the code by default (``signed_h=False``); ``signed_h=True`` gives the paper's reading.
Consequence on-policy (one mini-batch, ratio 1): every token is inside the neutral zone, so with the
unsigned signal the redistribution changes nothing, and the adaptive clip never acts in either reading;
``policy_loss`` warns about both (``InertKnobWarning``). The official recipes take 16 mini-batches per
step, where they act.

Deviations: the group-average fallback tests |A| >= 5 on loss tokens only (the code also tests padded
positions, whose value equals that of a zero-reward token; identical for 0/1 rewards); the temperature
is applied by a logits processor of our sampler, not a patched vLLM; with several ranks, the global
scope is not supported (one process fits the whole mini-batch). The recipes' ``filter_groups`` keys are
read by no code of the official trainer (``verl.trainer.main_ppo``), so the ``hapo`` preset samples
without dynamic sampling. The rollout and advantage parts need the stare trainer; the loss part alone
(3 and 4) is the ``hapo_loss`` objective, which the verl and TRL plug-ins run.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor

from ..advantages import group_index
from ..checks import check_fraction
from ..metrics import mean_stat
from ..surrogate import LOG_RATIO_CLAMP, clipped_surrogate, surrogate_stats
from .contract import ClipParams, ControllerState, RolloutRequest, StepData, Terms, clip_inert_knobs
from .registry import Objective, register_objective

__all__ = [
    "EntropyStats",
    "HapoController",
    "HapoLossParams",
    "HapoParams",
    "entropy_signal",
    "hapo_fit",
    "hapo_rollout",
    "hapo_step_advantages",
    "hapo_terms",
    "temperature_processor",
    "token_group_average",
]

LOG_EPS = 1e-8  # compute_entropy_h's eps: floor of H before the log, of the variance, of the scales
SAMPLER_EPS = 1e-6  # compute_entropy_based_temperature's eps (entropy floor and std offset)
FALLBACK_ABS = 5.0  # compute_hapo_outcome_advantage: |A| >= 5 in a group -> GRPO advantages


@dataclass(frozen=True)
class HapoLossParams(ClipParams):
    """HAPO's loss (clip bounds and redistribution). Defaults from starriver030515/HAPO
    ``recipe/qwen2.5_math_7b.sh`` and ``verl/trainer/config/ppo_trainer.yaml``.

    entropy_pivot: quantile of log-entropy that separates high from low (0.8, every recipe).
    signed_h: the paper's signed h_hat (True) or the code's unsigned one (False, default).
    clip_alpha: strength of the per-token clip bounds (1.0). 0 keeps the plain bounds.
    adv_beta: strength of the advantage redistribution (1.0). 0 keeps the plain advantages.
    Clip: 0.2 / 0.2 with dual clip 10 (the recipes).
    """

    clip_ratio_c: float | None = 10.0
    entropy_pivot: float = 0.8
    signed_h: bool = False
    clip_alpha: float = 1.0
    adv_beta: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fraction("entropy_pivot", self.entropy_pivot)
        if self.clip_alpha < 0 or self.adv_beta < 0:
            raise ValueError(f"clip_alpha and adv_beta must be >= 0, got {self.clip_alpha}, {self.adv_beta}")


@dataclass(frozen=True)
class HapoParams(HapoLossParams):
    """The whole of HAPO: the loss's parameters and those of the sampler and the advantages.

    temperature_tau: strength of the per-token temperature (0.05, every recipe; ``recipe/train.md`` advises
        lowering it if training collapses). 0 samples at the plain temperature.
    token_level_advantage: the token-level group average (``adv_estimator=hapo`` in the recipes, True) or
        the trainer's default advantages (False).
    """

    temperature_tau: float = 0.05
    token_level_advantage: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.temperature_tau < 1:
            raise ValueError("temperature_tau must be in [0, 1) so that every temperature stays > 0, got "
                             f"{self.temperature_tau}")


# ---------------------------------------------------------------------------------------------------
# The entropy signal


@dataclass(frozen=True)
class EntropyStats:
    """What the signal of one batch is made of; the sampler of the next step reuses it."""

    median: Tensor  # 0-d: the pivot quantile of log H
    std: Tensor  # 0-d: RMS of log H about the pivot
    scale_pos: Tensor  # 0-d: 1 / max(h > 0)
    scale_neg: Tensor  # 0-d: 1 / min(h < 0) (negative: unsigned h_hat) or 1 / |min(h < 0)| (signed)


def fit_entropy_stats(entropy: Tensor, valid: Tensor, pivot: float, signed: bool) -> EntropyStats:
    """The signal's statistics over the ``valid`` tokens, with no host synchronisation."""
    log_h = torch.log(entropy.detach().to(torch.float64).clamp(min=LOG_EPS))
    flat = torch.where(valid, log_h, math.inf).reshape(-1)
    n = valid.sum()
    if flat.numel():
        at = torch.round(pivot * (n.to(torch.float64) - 1)).clamp(min=0).to(torch.int64).reshape(1)
        median = torch.sort(flat).values.index_select(0, at).reshape(())
        median = torch.where(n > 0, median, 0.0)  # no valid token: the code's nan_to_num(0)
    else:
        median = log_h.new_zeros(())
    d = torch.where(valid, log_h - median, 0.0)
    std = torch.sqrt(((d * d).sum() / n.clamp(min=1)).clamp(min=LOG_EPS))
    h = d / std
    pos_max = torch.where(valid & (h > 0), h, 0.0).amax().clamp(min=LOG_EPS) if h.numel() else h.new_tensor(LOG_EPS)
    neg_min = torch.where(valid & (h < 0), h, 0.0).amin().clamp(max=-LOG_EPS) if h.numel() else h.new_tensor(-LOG_EPS)
    return EntropyStats(median, std, 1.0 / pos_max, (-1.0 if signed else 1.0) / neg_min)


def apply_entropy_stats(log_h: Tensor, s: EntropyStats) -> Tensor:
    """h_hat of log-entropies under fitted statistics."""
    h = (log_h - s.median) / s.std
    return torch.where(h > 0, h * s.scale_pos, h * s.scale_neg)


def entropy_signal(entropy: Tensor, valid: Tensor, pivot: float = 0.8,
                   signed: bool = False) -> tuple[Tensor, EntropyStats]:
    """(h_hat [B, T], its statistics) of one batch (module docstring)."""
    s = fit_entropy_stats(entropy, valid, pivot, signed)
    log_h = torch.log(entropy.detach().to(torch.float64).clamp(min=LOG_EPS))
    return apply_entropy_stats(log_h, s), s


# ---------------------------------------------------------------------------------------------------
# 1. Adaptive temperature: the controller keeps last step's statistics; the rollout hook samples with them


def _top_p(logits: Tensor, top_p: float) -> Tensor:
    """Keep the smallest set of most likely tokens whose probability reaches ``top_p`` (at least one)."""
    if top_p >= 1.0:
        return logits
    probs = torch.softmax(logits, -1)
    sorted_p, order = probs.sort(-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p  # mass of the more likely tokens
    drop = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, order, before >= top_p)
    return logits.masked_fill(drop, -math.inf)


def temperature_processor(stats: dict, temperature: float, tau: float,
                          top_p: float) -> Callable[[Tensor, Tensor], Tensor]:
    """A logits processor for a sampler run at temperature 1 and top-p 1: the entropy of each row's raw
    logits sets its own temperature T (1 + tau h_hat), h_hat clamped to [-1, 1] (``stats``: the
    controller's state); then top-p."""
    median, std, scale_pos, scale_neg = (float(stats[k]) for k in STATE_KEYS)

    def process(input_ids: Tensor, logits: Tensor) -> Tensor:
        z = logits.float()
        logp = torch.log_softmax(z, -1)
        p = logp.exp()
        entropy = -(p * torch.where(p > 0, logp, 0.0)).sum(-1)
        h = (torch.log(entropy.to(torch.float64).clamp(min=SAMPLER_EPS)) - median) / (std + SAMPLER_EPS)
        h_hat = torch.where(h > 0, h * scale_pos, h * scale_neg).clamp(-1.0, 1.0)
        t = (temperature * (1.0 + tau * h_hat)).to(z.dtype)
        return _top_p(z / t.unsqueeze(-1), top_p)

    return process


STATE_KEYS = ("entropy_median", "entropy_std", "scale_pos", "scale_neg")


@dataclass
class HapoController(ControllerState):
    """Keeps the entropy statistics of the last old pass for the next step's sampler (the code hands
    step k's statistics to step k + 1's rollout), and logs them and the share of groups whose
    token-level average fell back to GRPO.

    Its state is ``has_stats`` and the four statistics (before the first update there are none and the
    sampler uses the plain temperature). A step without old entropies (an engine that does not provide
    them) leaves them unchanged, counted in ``skipped_updates`` with a warning."""

    params: HapoParams = field(default_factory=HapoParams)
    has_stats: bool = False
    entropy_median: float = 0.0
    entropy_std: float = 0.0
    scale_pos: float = 0.0
    scale_neg: float = 0.0
    fallback_group_frac: float = 0.0
    skipped_updates: int = 0

    def update(self, data: StepData) -> None:
        if data.old_entropy is None or data.mask is None:
            self.skipped_updates += 1
            warnings.warn("HapoController: the step has no old-policy entropies; the sampler keeps the last "
                          "statistics", RuntimeWarning)
            return
        s = fit_entropy_stats(data.old_entropy, data.mask.bool(), self.params.entropy_pivot, self.params.signed_h)
        self.entropy_median, self.entropy_std = float(s.median), float(s.std)
        self.scale_pos, self.scale_neg = float(s.scale_pos), float(s.scale_neg)
        self.has_stats = True
        if data.rewards is not None and data.group_ids is not None and data.advantages is not None:
            _, fallback = token_group_average(data.rewards, data.group_ids, data.mask, data.advantages)
            self.fallback_group_frac = float(fallback)

    def state(self) -> dict:
        return {"has_stats": self.has_stats, **{k: getattr(self, k) for k in STATE_KEYS}}

    def metrics(self) -> dict[str, float]:
        if not self.has_stats:
            return {}
        return {"hapo/entropy_median": self.entropy_median, "hapo/entropy_std": self.entropy_std,
                "hapo/scale_pos": self.scale_pos, "hapo/scale_neg": self.scale_neg,
                "hapo/fallback_group_frac": self.fallback_group_frac}


def hapo_rollout(request: RolloutRequest, sampler: Any, p: HapoParams, state: dict) -> list:
    """``request.n`` episodes per prompt, each token at its own temperature once statistics exist."""
    from_stats = bool(state.get("has_stats", False))
    n = request.n
    examples = [e for e in request.examples for _ in range(n)]
    contexts = [list(q) for q in request.prompt_ids for _ in range(n)]
    if from_stats and p.temperature_tau > 0:
        proc = temperature_processor(state, request.temperature, p.temperature_tau, request.top_p)
        rows = sampler.episodes(examples, contexts, max_new_tokens=request.max_new_tokens, temperature=1.0, top_p=1.0,
                                logits_processors=[proc])
    else:  # the first step (no statistics yet), or tau = 0: plain sampling
        rows = sampler.episodes(examples, contexts, max_new_tokens=request.max_new_tokens,
                                temperature=request.temperature, top_p=request.top_p)
    for i, row in enumerate(rows):
        row.prompt_index = i // n
    return rows


# ---------------------------------------------------------------------------------------------------
# 2. Token-level group average


def token_group_average(rewards: Tensor, group_ids: Tensor, mask: Tensor, fallback: Tensor,
                        eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """(advantages [B], share of groups that fell back): per group, (r - mean) / (std + eps) with the
    length-weighted mean and population std over the group's loss tokens; a group with any |A| >= 5
    (on a response with loss tokens), or without loss tokens, takes ``fallback`` [B] instead."""
    if rewards.numel() == 0:
        return fallback.clone(), torch.zeros(())
    dev = mask.device
    idx = group_index(group_ids).to(dev)
    r = rewards.to(dev, torch.float64)
    length = mask.to(torch.float64).sum(-1)
    g = int(idx.max()) + 1
    tokens = torch.zeros(g, dtype=torch.float64, device=dev).index_add_(0, idx, length)
    mean = torch.zeros_like(tokens).index_add_(0, idx, length * r) / tokens.clamp(min=1)
    var = torch.zeros_like(tokens).index_add_(0, idx, length * (r - mean[idx]) ** 2) / tokens.clamp(min=1)
    adv = (r - mean[idx]) / (var.sqrt()[idx] + eps)
    large = torch.zeros(g, dtype=torch.float64, device=dev).index_add_(
        0, idx, ((adv.abs() >= FALLBACK_ABS) & (length > 0)).to(torch.float64)) > 0
    use_fallback = (large | (tokens == 0))[idx]
    out = torch.where(use_fallback, fallback.to(dev, torch.float64), adv)
    return out.to(torch.float32), (large | (tokens == 0)).to(torch.float64).mean()


def hapo_step_advantages(data: StepData, p: HapoParams, state) -> Tensor:
    """The advantage hook: the token-level group average (or the default advantages)."""
    if not p.token_level_advantage:
        return data.advantages
    data.require("hapo", "rewards", "group_ids", "mask", "advantages")
    return token_group_average(data.rewards, data.group_ids, data.mask, data.advantages)[0]


# ---------------------------------------------------------------------------------------------------
# 3 + 4. The loss: per-token clip bounds and advantage redistribution


def hapo_fit(view, p: HapoLossParams, state, group) -> EntropyStats:
    if group is not None and torch.distributed.is_available() and torch.distributed.is_initialized() and \
            torch.distributed.get_world_size(None if group is True else group) > 1:
        raise ValueError("hapo: selection_scope='global' across several ranks is not supported; use 'micro'")
    if view.entropy is None:
        raise ValueError("hapo needs per-token entropy: pass entropy= (or old_entropy=)")
    return fit_entropy_stats(view.entropy, view.valid, p.entropy_pivot, p.signed_h)


def hapo_terms(batch, view, p: HapoLossParams, state, plan: EntropyStats) -> Terms:
    """HAPO: per-token clip bounds and advantage redistribution by the entropy signal h_hat."""
    log_h = torch.log(view.entropy.to(torch.float64).clamp(min=LOG_EPS))
    h_hat = apply_entropy_stats(log_h, plan).to(batch.log_prob.dtype)
    low = torch.where(h_hat <= 0, p.clip_ratio_low * (1 - p.clip_alpha * h_hat), p.clip_ratio_low)
    high = torch.where(h_hat > 0, p.clip_ratio_high * (1 + p.clip_alpha * h_hat), p.clip_ratio_high)
    adv = batch.token_advantages
    ratio = torch.exp(torch.clamp(batch.log_prob.detach() - batch.ratio_denominator, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
    inside = (ratio > 1 - low / 2) & (ratio < 1 + high / 2)
    adv_ent = adv * (1 + p.adv_beta * h_hat)
    use_ent = torch.where(h_hat > 0, ~inside, inside)
    shaped = torch.where(use_ent, adv_ent, adv)
    s = clipped_surrogate(batch.log_prob, batch.ratio_denominator, shaped, low, high, p.clip_ratio_c)
    v = batch.valid
    stats = surrogate_stats(s, v)
    stats.update({
        "hapo/h_hat_mean": mean_stat(h_hat, v),
        "hapo/above_pivot_frac": mean_stat(log_h > plan.median, v),
        "hapo/clip_low_mean": mean_stat(low, v),
        "hapo/clip_high_mean": mean_stat(high, v),
        "hapo/redistributed_frac": mean_stat(use_ent & (adv_ent != adv), v),
    })
    return Terms(pg_loss=s.loss, stats=stats)


def hapo_inert_knobs(p: HapoLossParams) -> list[tuple[str, str]]:
    out = clip_inert_knobs(p)
    if p.clip_alpha:
        out.append(("clip_alpha", f"clip_alpha={p.clip_alpha} (HAPO's per-token clip bounds) has no effect on-policy: "
                    "the ratio is 1, so no bound is reached"))
    if p.adv_beta and not p.signed_h:
        out.append(("adv_beta", f"adv_beta={p.adv_beta} (HAPO's advantage redistribution) has no effect on-policy with "
                    "the unsigned h_hat (signed_h=False): every token is inside the neutral zone and keeps A"))
    return out


HAPO = register_objective(Objective(
    "hapo", params=HapoParams, terms=hapo_terms, fit=hapo_fit, controller=HapoController, needs=("entropy",),
    advantages=hapo_step_advantages, rollout=hapo_rollout, acts_at=("LOSS", "CTRL"), inert_on_policy=hapo_inert_knobs,
))


def hapo_loss_terms(batch, view, p: HapoLossParams, state, plan: EntropyStats) -> Terms:
    """HAPO's loss alone: per-token clip bounds and advantage redistribution (no rollout or advantage hook)."""
    return hapo_terms(batch, view, p, state, plan)


HAPO_LOSS = register_objective(Objective(
    "hapo_loss", params=HapoLossParams, terms=hapo_loss_terms, fit=hapo_fit, needs=("entropy",), acts_at=("LOSS",),
    inert_on_policy=hapo_inert_knobs,
))
