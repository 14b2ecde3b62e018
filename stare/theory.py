"""First-order entropy dynamics of a softmax policy (docs/methods.md §2): the quantities STARE's argument uses.

For pi = softmax(z) at one state, dH/dz_j = -pi_j (log pi_j + H). One policy-gradient step on the
per-token objective A log pi(o) moves the logits by dz_j = eta A ([j == o] - pi_j), so to first order

    dH(o) = -eta A S(o),    S(o) = pi_o (log pi_o + H) - C,    C = sum_j pi_j^2 (log pi_j + H)

S is the *entropy sensitivity* of the next-token distribution at the sampled token o; C is a
per-state constant and E_{o~pi}[S(o)] = 0 exactly. The leading term pi_o (log pi_o + H) = pi_o (H - s_o)
(s_o the surprisal) changes sign at s_o = H, which gives the four quadrants:

    A > 0, s > s*  : entropy rises  (STARE's L+, amplified by W > 1)
    A > 0, s < s*  : entropy falls
    A < 0, s > s*  : entropy falls  (STARE's L-, attenuated by M < 1 in C2)
    A < 0, s < s*  : entropy rises

With C included the critical surprisal s* solves exp(-s)(H - s) = C and lies below H for peaked
distributions. Everything here is computed without gradients and chunked over tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .stats import default_chunk_rows

__all__ = [
    "Sensitivity", "entropy_sensitivity", "entropy_sensitivity_from_hidden", "predicted_entropy_change", "quadrant",
    "QUADRANTS", "ENTROPY_RAISING",
]

QUADRANTS = ("pos_high_surprisal", "pos_low_surprisal", "neg_high_surprisal", "neg_low_surprisal")
ENTROPY_RAISING = ("pos_high_surprisal", "neg_low_surprisal")


@dataclass(frozen=True)
class Sensitivity:
    """Per-token quantities, each shaped like ``targets``."""

    exact: Tensor  # S(o) = pi_o (log pi_o + H) - C
    leading: Tensor  # pi_o (log pi_o + H)
    constant: Tensor  # C, per state
    entropy: Tensor  # H
    surprisal: Tensor  # -log pi_o


def _sensitivity_chunk(z: Tensor, tgt: Tensor, temperature: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(leading term, C, H, log pi_o) for one chunk of logits [c, V]."""
    log_q = torch.log_softmax(z / temperature, dim=-1)
    q = log_q.exp()
    h = -(q * log_q).sum(-1)
    c = (q * q * (log_q + h.unsqueeze(1))).sum(-1)
    lp = log_q.gather(1, tgt.unsqueeze(1)).squeeze(1)
    return lp.exp() * (lp + h), c, h, lp


def _sensitivity(chunk_logits, targets: Tensor, n: int, rows: int, dtype: torch.dtype, temperature: float) -> Sensitivity:
    tgt = targets.reshape(-1).long()
    out = torch.empty(4, n, dtype=dtype, device=targets.device)
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        for k, v in enumerate(_sensitivity_chunk(chunk_logits(i0, i1).to(dtype), tgt[i0:i1], temperature)):
            out[k, i0:i1] = v
    shape = targets.shape
    lead, c, h, lp = (x.view(shape) for x in out)
    return Sensitivity(lead - c, lead, c, h, -lp)


@torch.no_grad()
def entropy_sensitivity(
    logits: Tensor, targets: Tensor, *, temperature: float = 1.0, chunk_size: int | None = None
) -> Sensitivity:
    """S(o) exact and leading-term for logits ``[..., V]`` and sampled ``targets [...]``."""
    vocab = logits.shape[-1]
    z = logits.reshape(-1, vocab)
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    return _sensitivity(lambda a, b: z[a:b], targets, z.shape[0], chunk_size or default_chunk_rows(vocab), dtype,
                        temperature)


@torch.no_grad()
def entropy_sensitivity_from_hidden(
    hidden: Tensor, lm_head_weight: Tensor, targets: Tensor, *, lm_head_bias: Tensor | None = None,
    temperature: float = 1.0, chunk_size: int | None = None,
) -> Sensitivity:
    """As ``entropy_sensitivity``, forming each chunk's logits from hidden states and the LM head."""
    h = hidden.reshape(-1, hidden.shape[-1])
    vocab = lm_head_weight.shape[0]

    def chunk(a: int, b: int) -> Tensor:
        z = h[a:b] @ lm_head_weight.T
        return z if lm_head_bias is None else z + lm_head_bias

    dtype = torch.float64 if hidden.dtype == torch.float64 else torch.float32
    return _sensitivity(chunk, targets, h.shape[0], chunk_size or default_chunk_rows(vocab), dtype, temperature)


def predicted_entropy_change(sensitivity: Tensor, advantages: Tensor, lr: float) -> Tensor:
    """First-order per-token entropy change -eta A S(o) of one logit-space step on A log pi(o)."""
    return -lr * advantages * sensitivity


def quadrant(advantages: Tensor, surprisal: Tensor, entropy: Tensor) -> Tensor:
    """int64 quadrant index into ``QUADRANTS`` (-1 where A == 0), splitting surprisal at the entropy."""
    high = surprisal > entropy
    q = torch.full(advantages.shape, -1, dtype=torch.int64, device=advantages.device)
    q = torch.where((advantages > 0) & high, 0, q)
    q = torch.where((advantages > 0) & ~high, 1, q)
    q = torch.where((advantages < 0) & high, 2, q)
    return torch.where((advantages < 0) & ~high, 3, q)
