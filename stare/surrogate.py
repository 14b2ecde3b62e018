"""Per-token policy-gradient surrogates and the loss aggregation modes.

* ``clipped_surrogate``: PPO/GRPO clipped ratio objective with decoupled bounds (DAPO's clip-higher)
  and the dual clip of Ye et al. (arXiv 1912.09729) for negative advantages, as in verl's ``vanilla``
  policy loss (docs/methods.md §1.2): log-ratio clamped to [-20, 20], ``l = max(-A r, -A clip(r))``, then
  for A < 0 ``min(l, -A c)``.
* ``gradient_preserving_surrogate``: the clipped surrogate's value with a gradient kept on clipped
  tokens (CE-GPPO, arXiv 2509.20712; AEPO's entropy-balanced clip, arXiv 2510.14545).
* ``gspo_surrogate``: GSPO's length-normalised sequence ratio in its token form (arXiv 2507.18071).
* ``kl_penalty``: per-token KL estimators between the policy and a reference model (verl's
  ``kl_penalty``; ``k3`` is TRL's ``beta`` term).
* ``aggregate``: verl's ``loss_agg_mode`` reductions. Given a ``LossNormalizer`` computed once for the
  whole mini-batch, each micro-batch is divided by the *mini-batch* denominators, so summing the
  micro-batch losses gives the exact mini-batch token mean (verl's legacy actor instead averages
  micro-batch means, which is not the token mean when micro-batches hold different token counts).

``seq-mean-token-sum-norm`` (Dr.GRPO) divides by (number of sequences x C), with C the constant
``loss_scale_factor`` (max response length), as Dr.GRPO and TRL define it. verl 0.9's ``agg_loss`` with
global batch info does the same; its legacy actor had no 1/N_seq factor, so its scale depended on the
micro-batch size (docs/methods.md §1.3). Our sequence counts skip fully masked rows; verl's
``global_batch_size`` counts every row (the verl plug-in passes verl's number).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .metrics import Stat, mean_stat
from .selection import _all_reduce

__all__ = [
    "AGG_MODES",
    "KL_ESTIMATORS",
    "Surrogate",
    "clipped_surrogate",
    "gradient_preserving_surrogate",
    "gspo_surrogate",
    "kl_penalty",
    "surrogate_stats",
    "LossNormalizer",
    "aggregate",
]

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
KL_ESTIMATORS = ("low_var_kl", "k1", "k2", "k3", "abs")
LOW_VAR_KL_CLAMP = 10.0  # verl clamps its low-variance KL estimate to [-10, 10]
LOG_RATIO_CLAMP = 20.0  # verl clamps log(pi/pi_old) to [-20, 20] before exp
GSPO_LOG_RATIO_CLAMP = 10.0  # verl's GSPO clamps the sequence log-ratio at 10


@dataclass(frozen=True)
class Surrogate:
    """Per-token surrogate loss and the quantities behind it (all [B, T])."""

    loss: Tensor  # to be minimised; not yet masked
    ratio: Tensor
    log_ratio: Tensor
    clipped: Tensor  # bool: the clipped branch is the active one (verl's pg_clipfrac)
    dual_clipped: Tensor  # bool: the dual-clip cap is active (A < 0 and ratio beyond c)


def clipped_surrogate(
    log_prob: Tensor,
    old_log_prob: Tensor,
    advantages: Tensor,
    clip_ratio_low: float | Tensor,
    clip_ratio_high: float | Tensor,
    clip_ratio_c: float | None = None,
) -> Surrogate:
    """``max(-A r, -A clip(r, 1 - eps_low, 1 + eps_high))`` per token, dual-clipped at ``-A c`` for A < 0.

    The bounds are numbers or tensors broadcastable to [B, T] (per-token bounds, e.g. wider for
    high-entropy tokens).

    With ``old_log_prob = log_prob.detach()`` (on-policy) the ratio is exactly 1, clipping never
    triggers and the gradient is ``-A grad(log_prob)``.
    """
    log_ratio = torch.clamp(log_prob - old_log_prob, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    loss = torch.maximum(unclipped, clipped)
    is_clipped = clipped > unclipped
    if clip_ratio_c is None:
        return Surrogate(loss, ratio, log_ratio, is_clipped, torch.zeros_like(is_clipped))
    cap = -advantages * clip_ratio_c
    negative = advantages < 0
    dual = negative & (loss > cap)
    loss = torch.where(negative, torch.minimum(loss, cap), loss)
    return Surrogate(loss, ratio, log_ratio, is_clipped, dual)


def gradient_preserving_surrogate(
    log_prob: Tensor,
    old_log_prob: Tensor,
    advantages: Tensor,
    clip_ratio_low: float | Tensor,
    clip_ratio_high: float | Tensor,
    clip_ratio_c: float | None = None,
    grad_coef_low: float = 0.0,
    grad_coef_high: float = 1.0,
) -> Surrogate:
    """``clipped_surrogate``'s value, with a gradient on the tokens whose clipped branch is active.

    Where PPO's clip is active (A > 0 and r > 1 + eps_high, or A < 0 and r < 1 - eps_low) its loss
    -A * bound is a constant, so those tokens get no gradient. Here the clipped loss is written as
    ``-A * bound * exp(beta * (log_prob - sg(log_prob)))``: the same value, and the gradient
    ``-A * bound * beta * grad(log_prob)``, with ``beta = grad_coef_high`` above the upper bound and
    ``grad_coef_low`` below the lower one. ``beta = 1`` is the stop-gradient bound
    ``clip(r, 1 - eps_low, (1 + eps_high) r / sg(r))``; ``beta = 0`` gives ``clipped_surrogate`` bit for
    bit, loss and gradient. The dual clip (A < 0, ratio beyond c) stays a constant, as in verl.
    """
    s = clipped_surrogate(log_prob, old_log_prob, advantages, clip_ratio_low, clip_ratio_high, None)
    # on a clipped token the clamped ratio is the bound itself, so -A * bound is the clipped loss to the bit
    bound_loss = -advantages * torch.clamp(s.ratio.detach(), 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    beta = torch.where(advantages > 0, grad_coef_high, grad_coef_low).to(log_prob.dtype)
    kept = bound_loss * torch.exp(beta * (log_prob - log_prob.detach()))
    loss = torch.where(s.clipped, kept, s.loss)
    if clip_ratio_c is None:
        return Surrogate(loss, s.ratio, s.log_ratio, s.clipped, s.dual_clipped)
    cap = -advantages * clip_ratio_c
    negative = advantages < 0
    dual = negative & (loss > cap)
    loss = torch.where(negative, torch.minimum(loss, cap), loss)
    return Surrogate(loss, s.ratio, s.log_ratio, s.clipped, dual)


def gspo_surrogate(
    log_prob: Tensor, old_log_prob: Tensor, advantages: Tensor, mask: Tensor, clip_ratio_low: float,
    clip_ratio_high: float,
) -> Surrogate:
    """GSPO: s_i = exp(mean_t log(pi/pi_old)) per sequence, used per token as sg[s_i] * pi / sg[pi]."""
    m = mask.to(log_prob.dtype)
    log_ratio = log_prob - old_log_prob
    seq_log_ratio = (log_ratio.detach() * m).sum(-1) / m.sum(-1).clamp(min=1)
    token_log_ratio = seq_log_ratio.unsqueeze(-1) + log_prob - log_prob.detach()
    token_log_ratio = torch.clamp(token_log_ratio, max=GSPO_LOG_RATIO_CLAMP)
    ratio = torch.exp(token_log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_ratio_low, 1.0 + clip_ratio_high)
    loss = torch.maximum(unclipped, clipped)
    is_clipped = clipped > unclipped
    return Surrogate(loss, ratio, token_log_ratio, is_clipped, torch.zeros_like(is_clipped))


def kl_penalty(log_prob: Tensor, ref_log_prob: Tensor, estimator: str = "low_var_kl") -> Tensor:
    """Per-token estimate of KL(pi || pi_ref) from the sampled token's log-probs (Schulman's k1, k2, k3).

    With d = log pi_ref - log pi:  k1 = -d;  k2 = d^2 / 2;  k3 = exp(d) - d - 1 (non-negative, unbiased,
    TRL's ``beta`` term);  ``low_var_kl`` = k3 of d clamped to [-20, 20], itself clamped to [-10, 10]
    (verl's ``kl_penalty``);  ``abs`` = |d|.
    """
    d = ref_log_prob - log_prob
    if estimator == "k1":
        return -d
    if estimator == "k2":
        return 0.5 * d * d
    if estimator == "abs":
        return d.abs()
    if estimator == "k3":
        return torch.exp(d) - d - 1
    if estimator == "low_var_kl":
        d = torch.clamp(d, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        return torch.clamp(torch.exp(d) - d - 1, -LOW_VAR_KL_CLAMP, LOW_VAR_KL_CLAMP)
    from .checks import unknown_name_error

    raise unknown_name_error("kl_estimator", estimator, KL_ESTIMATORS)


def surrogate_stats(s: Surrogate, valid: Tensor) -> dict[str, Stat]:
    """verl's pg_clipfrac, pg_clipfrac_lower and ppo_kl (= mean of -log ratio), as mergeable Stats."""
    return {
        "pg_clipfrac": mean_stat(s.clipped, valid),
        "pg_clipfrac_lower": mean_stat(s.dual_clipped, valid),
        "ppo_kl": mean_stat(-s.log_ratio, valid),
    }


@dataclass(frozen=True)
class LossNormalizer:
    """Denominators of one whole mini-batch (all its micro-batches, all ranks), fixed before the update.

    Attributes:
        num_tokens: valid response tokens (token-mean).
        num_seqs: sequences with at least one valid token (seq-mean-*).
        max_len: padded response length, the fallback C of seq-mean-token-sum-norm.
        grad_scale: multiplies every loss; set it to the data-parallel world size when the gradients
            of the ranks are averaged (DDP), so that the average is the global token mean.
    """

    num_tokens: Tensor
    num_seqs: Tensor
    max_len: int
    grad_scale: float = 1.0

    @classmethod
    def from_masks(cls, *masks: Tensor, group=None, grads_averaged_over_ranks: bool = False) -> "LossNormalizer":
        """Build from the masks of every micro-batch of the mini-batch (this rank's; ``group`` sums ranks)."""
        if not masks:
            raise ValueError("LossNormalizer.from_masks needs at least one mask")
        tokens = sum(m.to(torch.float64).sum() for m in masks)
        seqs = sum((m.sum(-1) > 0).to(torch.float64).sum() for m in masks)
        max_len = max(m.shape[-1] for m in masks)
        world = 1
        if group is not None:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                tokens, seqs = _all_reduce(tokens, "sum", group), _all_reduce(seqs, "sum", group)
                world = dist.get_world_size(None if group is True else group)
        return cls(tokens, seqs, int(max_len), float(world) if grads_averaged_over_ranks else 1.0)


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    mode: str = "token-mean",
    normalizer: LossNormalizer | None = None,
    loss_scale_factor: float | None = None,
) -> Tensor:
    """Reduce a per-token loss [B, T] to a scalar (see the module docstring and docs/methods.md §1.3).

    Without ``normalizer`` the denominators come from ``mask`` itself (verl semantics for one call).
    Empty selections give 0, never NaN.
    """
    valid = mask.bool()
    m = valid.to(per_token.dtype)
    masked = torch.where(valid, per_token, torch.zeros((), dtype=per_token.dtype, device=per_token.device))
    scale = 1.0 if normalizer is None else normalizer.grad_scale
    if mode == "token-mean":
        den = m.sum() if normalizer is None else normalizer.num_tokens.to(per_token.dtype)
        return masked.sum() / den.clamp(min=1) * scale
    seq_tokens = m.sum(-1)
    den = (seq_tokens > 0).to(per_token.dtype).sum() if normalizer is None else normalizer.num_seqs.to(per_token.dtype)
    den = den.clamp(min=1)
    if mode == "seq-mean-token-mean":
        return (masked.sum(-1) / seq_tokens.clamp(min=1)).sum() / den * scale
    if mode == "seq-mean-token-sum":
        return masked.sum(-1).sum() / den * scale
    if mode == "seq-mean-token-sum-norm":
        c = loss_scale_factor or (per_token.shape[-1] if normalizer is None else normalizer.max_len)
        return masked.sum() / (den * c) * scale
    from .checks import unknown_name_error

    raise unknown_name_error("loss_agg_mode", mode, AGG_MODES)
