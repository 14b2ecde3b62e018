"""FROZEN COPY of stare/stats.py as of commit 3c37178 (before issue 14), kept only so that
benchmarks/bench_stats.py can measure the previous implementation side by side with the current one.
Not imported by the library. The original docstring follows.

Per-token statistics of a language-model policy: log-prob of the sampled token, entropy, surprisal.

Every entropy intervention in this library reads some of these three numbers for each response token:

* ``log_prob``  = log pi(o_t | s_t), the log-probability of the token that was actually sampled;
* ``entropy``   = H_t = -sum_v pi(v | s_t) log pi(v | s_t), over the *full* vocabulary;
* ``surprisal`` = -log_prob. Surprisal is a property of one sampled token, entropy of the whole
  next-token distribution; they are not interchangeable (STARE ranks tokens by surprisal).

All three come from the temperature-scaled distribution softmax(z / T), as verl does before its
log-softmax (the rollout temperature must be used, or entropy is off by up to a nat at T != 1).

The work is chunked over tokens, so the full [N, V] matrix of logits, probabilities or their gradient
is never materialised: ``token_stats_from_hidden`` takes hidden states and the LM-head weight and forms
the logits one chunk at a time, in the forward and again in the backward (a custom autograd function
that recomputes each chunk instead of saving it). Both outputs carry gradients, so an entropy bonus or
SIREN trains through the entropy and still stays chunked. ``token_stats_from_logits`` does the same for
logits that a model already produced (the input [N, V] tensor exists, but no second one is made).

Numerics: each chunk is computed in float32 (float64 when the inputs are float64, for gradcheck).
The log-normaliser is max(z) + log1p(sum of the other exp(z - max)), and the entropy -sum_v p_v log p_v
(a sum of non-negative terms), so both keep their relative precision on peaked distributions where the
common logsumexp(z) - sum_v p_v z_v cancels to noise (tests/test_stats.py checks 1e-5 relative against
float64 on near-uniform, typical and peaked distributions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "TokenStats",
    "token_stats_from_logits",
    "token_stats_from_hidden",
    "token_stats_reference",
    "default_chunk_rows",
]

# Elements per chunk buffer: 2**24 fp32 values = 64 MiB. The backward holds two such buffers.
CHUNK_ELEMENTS = 1 << 24


@dataclass(frozen=True)
class TokenStats:
    """Per-token statistics, each shaped like the ``targets`` passed in."""

    log_prob: Tensor
    entropy: Tensor | None

    @property
    def surprisal(self) -> Tensor:
        return -self.log_prob


def default_chunk_rows(vocab_size: int) -> int:
    """Tokens per chunk so that one [chunk, V] buffer holds about ``CHUNK_ELEMENTS`` values."""
    return max(1, CHUNK_ELEMENTS // max(1, vocab_size))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _check_common(targets: Tensor, lead_shape: torch.Size, vocab: int, temperature: float, name: str) -> None:
    if targets.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"targets must be an integer tensor of token ids, got dtype {targets.dtype}")
    if targets.shape != lead_shape:
        raise ValueError(
            f"targets has shape {tuple(targets.shape)} but {name} has leading shape {tuple(lead_shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if vocab < 1:
        raise ValueError(f"{name} has an empty vocabulary dimension")


def _chunk_forward(z: Tensor, tgt: Tensor, with_entropy: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """z: [c, V] scaled logits (overwritten). Returns log_prob [c], (max, log-normaliser) [2, c], entropy.

    The normaliser is split as logsumexp(z) = max(z) + log1p(sum over non-max entries of exp(z - max)),
    so the log-probability of a dominant token, -log1p(rest), keeps full relative precision in fp32
    (a plain logsumexp returns it as the difference of two nearly equal numbers).
    """
    m, arg = z.max(dim=-1, keepdim=True)
    z.sub_(m)  # shifted logits, the max entry is exactly 0
    e = z.exp()
    e.scatter_(1, arg, 0.0)
    log_norm = torch.log1p(e.sum(-1, keepdim=True))
    log_prob = (z.gather(1, tgt.unsqueeze(1)) - log_norm).squeeze(1)
    shift = torch.cat([m, log_norm], dim=1).T.contiguous()
    if not with_entropy:
        return log_prob, shift, None
    log_q = z.sub_(log_norm).clamp_(min=torch.finfo(z.dtype).min)  # log-softmax, -inf made finite
    p = e.mul_(torch.exp(-log_norm)).scatter_(1, arg, torch.exp(-log_norm))
    # -sum_v p log p as a batched row-wise dot product: no third [c, V] temporary.
    entropy = -torch.bmm(p.unsqueeze(1), log_q.unsqueeze(2)).view(-1)
    return log_prob, shift, entropy


def _chunk_grad(
    z: Tensor, tgt: Tensor, shift: Tensor, entropy: Tensor | None, g_lp: Tensor | None, g_ent: Tensor | None,
    inv_t: float,
) -> Tensor:
    """Gradient of sum(g_lp * log_prob + g_ent * entropy) w.r.t. the *unscaled* logits of one chunk.

    d log p_o / dz_j = [j == o] - p_j ;  d H / dz_j = -p_j (log p_j + H)   (z = scaled logits, chain 1/T).
    ``z`` is overwritten and reused as the output buffer.
    """
    log_q = z.sub_(shift[0].unsqueeze(1)).sub_(shift[1].unsqueeze(1)).clamp_(min=torch.finfo(z.dtype).min)
    p = log_q.exp()
    c_lp = None if g_lp is None else (g_lp * inv_t).unsqueeze(1)
    if g_ent is not None:
        grad = log_q.add_(entropy.unsqueeze(1)).mul_(-(g_ent * inv_t).unsqueeze(1))
        if c_lp is not None:
            grad.sub_(c_lp)
        grad.mul_(p)
    else:
        grad = p.mul_(-c_lp)
    if c_lp is not None:
        grad.scatter_add_(1, tgt.unsqueeze(1), c_lp)
    return grad


def _forward_loop(
    chunk_logits: Callable[[int, int], Tensor], targets: Tensor, n: int, rows: int, dtype: torch.dtype,
    with_entropy: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    device = targets.device
    log_prob = torch.empty(n, dtype=dtype, device=device)
    shift = torch.empty(2, n, dtype=dtype, device=device)
    entropy = torch.empty(n if with_entropy else 0, dtype=dtype, device=device)
    for i0 in range(0, n, rows):
        i1 = min(n, i0 + rows)
        lp, sh, ent = _chunk_forward(chunk_logits(i0, i1), targets[i0:i1], with_entropy)
        log_prob[i0:i1] = lp
        shift[:, i0:i1] = sh
        if with_entropy:
            entropy[i0:i1] = ent
    return log_prob, shift, entropy


class _FromHidden(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, rows, with_entropy):  # type: ignore[override]
        dtype = _compute_dtype(hidden.dtype)
        inv_t = 1.0 / temperature

        def chunk_logits(i0: int, i1: int) -> Tensor:
            z = hidden[i0:i1] @ weight.T
            if bias is not None:
                z = z + bias
            return z.to(dtype).mul_(inv_t)

        log_prob, shift, entropy = _forward_loop(chunk_logits, targets, hidden.shape[0], rows, dtype, with_entropy)
        ctx.save_for_backward(hidden, weight, bias, targets, shift, entropy)
        ctx.inv_t, ctx.rows, ctx.with_entropy = inv_t, rows, with_entropy
        ctx.set_materialize_grads(False)
        return log_prob, entropy

    @staticmethod
    def backward(ctx, g_lp, g_ent):  # type: ignore[override]
        hidden, weight, bias, targets, shift, entropy = ctx.saved_tensors
        if not ctx.with_entropy:
            g_ent = None
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        if g_lp is None and g_ent is None:
            return None, None, None, None, None, None, None
        dtype = shift.dtype
        n = hidden.shape[0]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=dtype, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=dtype, device=weight.device) if need_b else None
        for i0 in range(0, n, ctx.rows):
            i1 = min(n, i0 + ctx.rows)
            h = hidden[i0:i1]
            z = h @ weight.T
            if bias is not None:
                z = z + bias
            z = z.to(dtype).mul_(ctx.inv_t)
            grad = _chunk_grad(
                z, targets[i0:i1], shift[:, i0:i1], entropy[i0:i1] if g_ent is not None else None,
                None if g_lp is None else g_lp[i0:i1], None if g_ent is None else g_ent[i0:i1], ctx.inv_t,
            )
            if need_h:
                grad_h[i0:i1] = grad.to(weight.dtype) @ weight
            if need_w:
                grad_w.addmm_(grad.T, h.to(dtype))
            if need_b:
                grad_b.add_(grad.sum(0))
        return (
            grad_h,
            None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None else grad_b.to(bias.dtype),
            None, None, None, None,
        )


class _FromLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, temperature, rows, with_entropy):  # type: ignore[override]
        dtype = _compute_dtype(logits.dtype)
        inv_t = 1.0 / temperature

        def chunk_logits(i0: int, i1: int) -> Tensor:
            return logits[i0:i1].to(dtype, copy=True).mul_(inv_t)

        log_prob, shift, entropy = _forward_loop(chunk_logits, targets, logits.shape[0], rows, dtype, with_entropy)
        ctx.save_for_backward(logits, targets, shift, entropy)
        ctx.inv_t, ctx.rows, ctx.with_entropy = inv_t, rows, with_entropy
        ctx.set_materialize_grads(False)
        return log_prob, entropy

    @staticmethod
    def backward(ctx, g_lp, g_ent):  # type: ignore[override]
        logits, targets, shift, entropy = ctx.saved_tensors
        if not ctx.with_entropy:
            g_ent = None
        if g_lp is None and g_ent is None:
            return None, None, None, None, None
        n = logits.shape[0]
        grad_logits = torch.empty_like(logits)
        for i0 in range(0, n, ctx.rows):
            i1 = min(n, i0 + ctx.rows)
            z = logits[i0:i1].to(shift.dtype, copy=True).mul_(ctx.inv_t)
            grad = _chunk_grad(
                z, targets[i0:i1], shift[:, i0:i1], entropy[i0:i1] if g_ent is not None else None,
                None if g_lp is None else g_lp[i0:i1], None if g_ent is None else g_ent[i0:i1], ctx.inv_t,
            )
            grad_logits[i0:i1] = grad
        return grad_logits, None, None, None, None


def token_stats_from_hidden(
    hidden: Tensor,
    lm_head_weight: Tensor,
    targets: Tensor,
    *,
    lm_head_bias: Tensor | None = None,
    temperature: float = 1.0,
    with_entropy: bool = True,
    chunk_size: int | None = None,
) -> TokenStats:
    """Token statistics from final hidden states and the LM-head weight, never forming all logits at once.

    Args:
        hidden: ``[..., d]`` final hidden states at the positions that predict ``targets``.
        lm_head_weight: ``[V, d]`` output embedding (``model.get_output_embeddings().weight``).
        targets: ``[...]`` sampled token ids.
        lm_head_bias: optional ``[V]`` bias.
        temperature: sampling temperature T; statistics are those of softmax(logits / T).
        with_entropy: also compute the full-vocabulary entropy (skip it to save one pass per chunk).
        chunk_size: tokens per chunk; default keeps one [chunk, V] fp32 buffer near 64 MiB.

    Returns ``TokenStats`` shaped like ``targets`` (float32, or float64 for float64 inputs); both
    fields are differentiable w.r.t. ``hidden``, ``lm_head_weight`` and ``lm_head_bias``.
    """
    if hidden.dim() < 1 or lm_head_weight.dim() != 2 or hidden.shape[-1] != lm_head_weight.shape[1]:
        raise ValueError(
            f"hidden [..., d] and lm_head_weight [V, d] disagree: {tuple(hidden.shape)} vs "
            f"{tuple(lm_head_weight.shape)}"
        )
    vocab = lm_head_weight.shape[0]
    _check_common(targets, hidden.shape[:-1], vocab, temperature, "hidden")
    if lm_head_bias is not None and lm_head_bias.shape != (vocab,):
        raise ValueError(f"lm_head_bias must have shape ({vocab},), got {tuple(lm_head_bias.shape)}")
    rows = chunk_size or default_chunk_rows(vocab)
    flat_t = targets.reshape(-1).long()
    log_prob, entropy = _FromHidden.apply(
        hidden.reshape(-1, hidden.shape[-1]), lm_head_weight, lm_head_bias, flat_t, float(temperature), rows,
        with_entropy,
    )
    shape = targets.shape
    return TokenStats(log_prob.view(shape), entropy.view(shape) if with_entropy else None)


def token_stats_from_logits(
    logits: Tensor,
    targets: Tensor,
    *,
    temperature: float = 1.0,
    with_entropy: bool = True,
    chunk_size: int | None = None,
) -> TokenStats:
    """Token statistics from logits ``[..., V]`` without a second ``[..., V]`` tensor in forward or backward.

    The gradient w.r.t. ``logits`` is written chunk by chunk into one tensor of the logits' shape.
    See ``token_stats_from_hidden`` for the arguments.
    """
    if logits.dim() < 1:
        raise ValueError("logits must have a trailing vocabulary dimension")
    vocab = logits.shape[-1]
    _check_common(targets, logits.shape[:-1], vocab, temperature, "logits")
    rows = chunk_size or default_chunk_rows(vocab)
    log_prob, entropy = _FromLogits.apply(
        logits.reshape(-1, vocab), targets.reshape(-1).long(), float(temperature), rows, with_entropy
    )
    shape = targets.shape
    return TokenStats(log_prob.view(shape), entropy.view(shape) if with_entropy else None)


def token_stats_reference(logits: Tensor, targets: Tensor, *, temperature: float = 1.0) -> TokenStats:
    """Unchunked textbook implementation (materialises log-softmax and softmax); for tests and benchmarks."""
    z = logits.to(_compute_dtype(logits.dtype)) / temperature
    log_q = torch.log_softmax(z, dim=-1)
    log_prob = log_q.gather(-1, targets.long().unsqueeze(-1)).squeeze(-1)
    entropy = -(log_q.exp() * log_q).sum(-1)
    return TokenStats(log_prob, entropy)
