"""Per-token statistics of a language-model policy: log-prob of the sampled token, entropy, surprisal.

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

Speed. A chunk's logits come from one matmul into a reused buffer (``CHUNK_ELEMENTS``, 64 MiB in fp32);
the element-wise work after it runs over blocks of rows small enough to stay in the CPU's cache
(``BLOCK_ELEMENTS``, 4 MiB), so each of its passes reads cache instead of memory. On other devices a
block is the whole chunk. Inputs in bf16 / fp16 keep their dtype for the matmuls (the logits are
converted to float32 after it; on CUDA the matmul writes float32 directly when torch supports it).

Numerics: each block is computed in float32 (float64 when the inputs are float64, for gradcheck). With
logits shifted by their row maximum (z <= 0, the maximum exactly 0) and r = sum of exp(z) over the other
entries, the log-normaliser is log1p(r) and the entropy is

    H = log1p(r) + sum_v exp(z_v) * (-z_v) / (1 + r),

a sum of non-negative terms (no cancellation, unlike logsumexp - sum p z on unshifted logits) whose
long sum is a cascade reduction (``torch.linalg.vecdot``), not a sequential dot product: within 3e-6
absolute of float64 on the core benchmark's batch (V = 32000, H ~ 6-9 nats), and the log-probability of
a dominant token, -log1p(r), keeps its relative precision (tests/test_stats.py checks 1e-5 relative
against float64 on near-uniform, typical and peaked distributions). The formula is ours; it is the
textbook identity H = log Z - E_p[z] evaluated on max-shifted logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.utils.checkpoint
from torch import Tensor

__all__ = [
    "TokenStats",
    "token_stats_from_logits",
    "token_stats_from_hidden",
    "token_stats_reference",
    "default_chunk_rows",
    "logit_statistics",
]

# Logits per chunk buffer: 2**24 fp32 values = 64 MiB (one matmul per chunk).
CHUNK_ELEMENTS = 1 << 24
# Logits per block of element-wise work on the CPU: 2**20 fp32 values = 4 MiB, cache-resident.
BLOCK_ELEMENTS = 1 << 20
# Log-probabilities below this are clamped before they enter products (the probability is exactly 0 in
# float32 and float64 there, so nothing changes except that -inf logits of a masked vocabulary stay finite).
_LOG_FLOOR = -1.0e4


@dataclass(frozen=True)
class TokenStats:
    """Per-token statistics, each shaped like the ``targets`` passed in (``extra``: named statistics of
    the full logits from ``logit_statistics``, shaped like ``targets`` or with a trailing dimension)."""

    log_prob: Tensor
    entropy: Tensor | None
    extra: Mapping[str, Tensor] = field(default_factory=dict)

    @property
    def surprisal(self) -> Tensor:
        return -self.log_prob


def default_chunk_rows(vocab_size: int) -> int:
    """Tokens per chunk so that one [chunk, V] buffer holds about ``CHUNK_ELEMENTS`` values."""
    return max(1, CHUNK_ELEMENTS // max(1, vocab_size))


def _block_rows(vocab_size: int, device: torch.device, chunk_rows: int) -> int:
    """Rows per block of element-wise work: cache-sized on the CPU, the whole chunk elsewhere."""
    if device.type != "cpu":
        return chunk_rows
    return max(1, min(chunk_rows, BLOCK_ELEMENTS // max(1, vocab_size)))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


_cuda_out_dtype = {"ok": True}  # torch.mm(..., out_dtype=) on CUDA; switched off after a first failure


def _raw_buffer_dtype(a: Tensor, b: Tensor, dtype: torch.dtype) -> torch.dtype | None:
    """dtype of the reusable buffer a chunk's ``a @ b`` is written into: the compute dtype when the operands
    have it, their own 16-bit dtype on the CPU (converted block by block later), none on CUDA (there the
    product comes back in the compute dtype, see ``_matmul``)."""
    if a.dtype == b.dtype == dtype:
        return dtype
    if a.dtype == b.dtype and not a.is_cuda:
        return a.dtype
    return None


def _matmul(a: Tensor, b: Tensor, dtype: torch.dtype, out: Tensor | None) -> Tensor:
    """``a @ b``: into ``out`` when it has the operands' dtype, else a new tensor.

    16-bit operands keep their dtype for the matmul (their fast path); on CUDA the product is requested
    in ``dtype`` (float32 accumulators written out, no rounding to 16 bits), elsewhere it comes back in
    the operands' dtype and each block is converted to ``dtype`` where it is used, in cache.
    """
    if out is not None and a.dtype == b.dtype == out.dtype:
        return torch.matmul(a, b, out=out)
    if a.is_cuda and a.dtype == b.dtype != dtype and _cuda_out_dtype["ok"]:
        try:
            return torch.mm(a, b, out_dtype=dtype)
        except (RuntimeError, NotImplementedError, TypeError):
            _cuda_out_dtype["ok"] = False
    return a @ b


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


def _block_forward(z: Tensor, tgt: Tensor, inv_t: float, e_buf: Tensor, with_entropy: bool):
    """Statistics of one block. ``z``: [r, V] unscaled logits in the compute dtype (overwritten).

    Returns log_prob [r], row max [r], log-normaliser log1p(r) [r] and entropy [r] (or None), all of the
    temperature-scaled distribution.
    """
    if inv_t != 1.0:
        z.mul_(inv_t)
    m, arg = z.max(dim=-1, keepdim=True)
    z.sub_(m)  # shifted logits: <= 0, the maximum exactly 0
    z_tgt = z.gather(1, tgt.unsqueeze(1))  # before the floor: a -inf target logit gives log_prob -inf
    z.clamp_(min=_LOG_FLOOR)
    e = torch.exp(z, out=e_buf[: z.shape[0]])
    e.scatter_(1, arg, 0.0)  # the maximum's 1 is kept out of the sum, so a tiny rest keeps its precision
    rest = e.sum(-1, keepdim=True)
    log_norm = torch.log1p(rest)
    log_prob = (z_tgt - log_norm).squeeze(1)
    entropy = None
    if with_entropy:
        # H = log1p(r) + sum_v e_v (-z_v) / (1 + r); e_v (-z_v) >= 0 (the maximum contributes 0).
        entropy = log_norm.squeeze(1) - torch.linalg.vecdot(e, z) / (1.0 + rest.squeeze(1))
    return log_prob, m.squeeze(1), log_norm.squeeze(1), entropy


def _block_grad(z: Tensor, tgt: Tensor, m: Tensor, log_norm: Tensor, entropy: Tensor | None, g_lp: Tensor | None,
                g_ent: Tensor | None, inv_t: float, e_buf: Tensor) -> Tensor:
    """Gradient of sum(g_lp * log_prob + g_ent * entropy) w.r.t. the *unscaled* logits of one block.

    d log p_o / dz_j = [j == o] - p_j ;  d H / dz_j = -p_j (log p_j + H)   (z = scaled logits, chain 1/T).
    ``z`` ([r, V] unscaled logits in the compute dtype) is overwritten with the gradient and returned.
    """
    if inv_t != 1.0:
        z.mul_(inv_t)
    log_q = z.sub_(m.unsqueeze(1)).sub_(log_norm.unsqueeze(1)).clamp_(min=_LOG_FLOOR)
    p = torch.exp(log_q, out=e_buf[: z.shape[0]])
    c_lp = None if g_lp is None else (g_lp * inv_t).unsqueeze(1)
    if g_ent is not None:
        # -(1/T) p_j (g_lp + g_ent (log p_j + H)) = p_j (a + b log p_j), a and b per row
        b = (g_ent * -inv_t).unsqueeze(1)
        a = b * entropy.unsqueeze(1)
        if c_lp is not None:
            a = a - c_lp
        grad = log_q.mul_(b).add_(a).mul_(p)  # (three in-place passes are faster than a broadcast addcmul)
    else:
        grad = torch.mul(p, -c_lp, out=z)
    if c_lp is not None:
        grad.scatter_add_(1, tgt.unsqueeze(1), c_lp)
    return grad


class _Blocks:
    """Walks a [n, V] logits source chunk by chunk and block by block, in the compute dtype.

    ``chunk_logits(i0, i1, buf)`` returns the logits of rows i0:i1, written into ``buf`` (a reused [rows, V]
    buffer of dtype ``buffer_dtype``; None when that is None) or as a new tensor. Blocks of logits not in
    the compute dtype (16-bit matmul output) are converted into a block-sized buffer, so the conversion
    too runs in cache. ``bias`` is added per block.
    """

    def __init__(self, chunk_logits, n: int, vocab: int, rows: int, dtype: torch.dtype, device, bias=None,
                 buffer_dtype: torch.dtype | None = None):
        self.chunk_logits, self.n, self.rows, self.dtype, self.bias = chunk_logits, n, rows, dtype, bias
        self.block = _block_rows(vocab, device, rows)
        self.buf = None if buffer_dtype is None else torch.empty(min(rows, n), vocab, dtype=buffer_dtype, device=device)
        self.z_buf = None  # allocated on the first 16-bit chunk
        self.e_buf = torch.empty(min(self.block, n), vocab, dtype=dtype, device=device)  # exp / probabilities

    def __iter__(self):
        """Yields (i0, i1, chunk tensor) per chunk after its blocks; per block (slice, block tensor) via ``blocks``."""
        for i0 in range(0, self.n, self.rows):
            i1 = min(self.n, i0 + self.rows)
            yield i0, i1, self.chunk_logits(i0, i1, None if self.buf is None else self.buf[: i1 - i0])

    def blocks(self, i0: int, raw: Tensor):
        for b0 in range(0, raw.shape[0], self.block):
            b1 = min(raw.shape[0], b0 + self.block)
            z = raw[b0:b1]
            if z.dtype != self.dtype:
                if self.z_buf is None:
                    self.z_buf = torch.empty_like(self.e_buf)
                z = self.z_buf[: b1 - b0].copy_(z)
            if self.bias is not None:
                z.add_(self.bias)
            yield slice(i0 + b0, i0 + b1), z


def _forward_loop(blocks: _Blocks, targets: Tensor, inv_t: float, with_entropy: bool):
    n, dtype, device = blocks.n, blocks.dtype, targets.device
    log_prob = torch.empty(n, dtype=dtype, device=device)
    shift = torch.empty(2, n, dtype=dtype, device=device)  # row max, log-normaliser: all the backward needs
    entropy = torch.empty(n if with_entropy else 0, dtype=dtype, device=device)
    for i0, _, raw in blocks:
        for s, z in blocks.blocks(i0, raw):
            lp, m, ln, ent = _block_forward(z, targets[s], inv_t, blocks.e_buf, with_entropy)
            log_prob[s] = lp
            shift[0, s] = m
            shift[1, s] = ln
            if with_entropy:
                entropy[s] = ent
    return log_prob, shift, entropy


def _grad_loop(blocks: _Blocks, use_grad: Callable[[int, int, Tensor], None], targets: Tensor, shift: Tensor,
               entropy: Tensor, g_lp: Tensor | None, g_ent: Tensor | None, inv_t: float,
               grad_into: Callable[[int, int], Tensor] | None = None) -> None:
    """Recompute each chunk's logits and turn them into their gradient block by block, then hand the chunk's
    gradient to ``use_grad(i0, i1, grad)``. The gradient is written into ``grad_into(i0, i1)`` (converted to
    its dtype block by block) when given, else in place of the logits (which must then be of the compute dtype).
    """
    for i0, i1, raw in blocks:
        grad = raw if grad_into is None else grad_into(i0, i1)
        for s, z in blocks.blocks(i0, raw):
            gz = _block_grad(z, targets[s], shift[0, s], shift[1, s], entropy[s] if g_ent is not None else None,
                             None if g_lp is None else g_lp[s], None if g_ent is None else g_ent[s], inv_t,
                             blocks.e_buf)
            if grad_into is not None:
                grad[s.start - i0: s.stop - i0] = gz
        use_grad(i0, i1, grad)


class _FromHidden(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, rows, with_entropy):  # type: ignore[override]
        dtype = _compute_dtype(hidden.dtype)
        inv_t = 1.0 / temperature
        w_t = weight.T

        def chunk_logits(i0: int, i1: int, buf: Tensor) -> Tensor:
            return _matmul(hidden[i0:i1], w_t, dtype, buf)

        blocks = _Blocks(chunk_logits, hidden.shape[0], weight.shape[0], rows, dtype, hidden.device, bias,
                         buffer_dtype=_raw_buffer_dtype(hidden, weight, dtype))
        log_prob, shift, entropy = _forward_loop(blocks, targets, inv_t, with_entropy)
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
        w_t = weight.T
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=dtype, device=weight.device) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=dtype, device=weight.device) if need_b else None

        def chunk_logits(i0: int, i1: int, buf: Tensor) -> Tensor:
            return _matmul(hidden[i0:i1], w_t, dtype, buf)

        # the gradient goes to the matmuls in the weight's dtype (16-bit matmuls for 16-bit inputs)
        grad_buf = None if weight.dtype == dtype else torch.empty(min(ctx.rows, hidden.shape[0]), weight.shape[0],
                                                                   dtype=weight.dtype, device=weight.device)
        w_buf = None  # the chunk's 16-bit weight-gradient product, reused (CPU)

        def use_grad(i0: int, i1: int, g: Tensor) -> None:
            if need_h:
                if grad_h.dtype == g.dtype:
                    torch.matmul(g, weight, out=grad_h[i0:i1])
                else:
                    grad_h[i0:i1] = g @ weight
            if need_w:
                h = hidden[i0:i1] if hidden.dtype == g.dtype else hidden[i0:i1].to(g.dtype)
                if g.dtype == dtype:
                    grad_w.addmm_(g.T, h)
                else:
                    nonlocal w_buf
                    if w_buf is None and not g.is_cuda:
                        w_buf = torch.empty(weight.shape, dtype=g.dtype, device=g.device)
                    grad_w.add_(_matmul(g.T, h, dtype, w_buf))
            if need_b:
                grad_b.add_(g.sum(0, dtype=dtype))

        blocks = _Blocks(chunk_logits, hidden.shape[0], weight.shape[0], ctx.rows, dtype, hidden.device, bias,
                         buffer_dtype=_raw_buffer_dtype(hidden, weight, dtype))
        _grad_loop(blocks, use_grad, targets, shift, entropy, g_lp, g_ent, ctx.inv_t,
                   None if grad_buf is None else (lambda i0, i1: grad_buf[: i1 - i0]))
        return (
            grad_h,
            None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None else grad_b.to(bias.dtype),
            None, None, None, None,
        )


def _logits_chunks(logits: Tensor, dtype: torch.dtype):
    """Chunks of given logits: copied into the buffer when of the compute dtype (they are overwritten),
    handed on as views otherwise (each block is then converted into its own buffer)."""

    def chunk_logits(i0: int, i1: int, buf: Tensor) -> Tensor:
        return buf.copy_(logits[i0:i1]) if logits.dtype == dtype else logits[i0:i1]

    return chunk_logits


class _FromLogits(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, targets, temperature, rows, with_entropy):  # type: ignore[override]
        dtype = _compute_dtype(logits.dtype)
        inv_t = 1.0 / temperature
        vocab = logits.shape[1]
        # no matmul to amortise: a chunk is one cache-sized block (each is copied once into the buffer)
        rows = min(rows, _block_rows(vocab, logits.device, rows))

        blocks = _Blocks(_logits_chunks(logits, dtype), logits.shape[0], vocab, rows, dtype, logits.device,
                         buffer_dtype=dtype if logits.dtype == dtype else None)
        log_prob, shift, entropy = _forward_loop(blocks, targets, inv_t, with_entropy)
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
        grad_logits = torch.empty_like(logits)

        blocks = _Blocks(_logits_chunks(logits, shift.dtype), logits.shape[0], logits.shape[1], ctx.rows, shift.dtype,
                         logits.device, buffer_dtype=shift.dtype if logits.dtype == shift.dtype else None)
        _grad_loop(blocks, lambda i0, i1, g: None, targets, shift, entropy, g_lp, g_ent, ctx.inv_t,
                   lambda i0, i1: grad_logits[i0:i1])
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
        with_entropy: also compute the full-vocabulary entropy (skip it to save one pass per block).
        chunk_size: tokens per chunk (one matmul each); default keeps one [chunk, V] fp32 buffer near 64 MiB.

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


def logit_statistics(
    fns: Mapping[str, Callable[[Tensor, Tensor], Tensor]],
    targets: Tensor,
    *,
    hidden: Tensor | None = None,
    lm_head_weight: Tensor | None = None,
    lm_head_bias: Tensor | None = None,
    logits: Tensor | None = None,
    temperature: float = 1.0,
    chunk_size: int | None = None,
) -> dict[str, Tensor]:
    """Named statistics of the full next-token distribution at every position, one chunk at a time.

    Each ``fn(z, ids)`` receives one chunk's logits divided by the temperature (``z`` [c, V], float32, or
    float64 for float64 inputs) and the sampled ids [c], and returns [c] or [c, k]: the log-prob of the
    token under a min-p renormalised distribution, the top-k log-probs, a nucleus entropy. The logits
    come from ``hidden`` and the LM head, or from ``logits``. Under autograd each chunk runs inside
    ``torch.utils.checkpoint``, so its logits are recomputed in the backward instead of being kept: the
    statistics are differentiable and [N, V] never exists at once. Returns tensors shaped like
    ``targets`` (plus any trailing dimension).
    """
    if not fns:
        return {}
    if (logits is None) == (hidden is None or lm_head_weight is None):
        raise ValueError("logit_statistics needs either logits, or hidden and lm_head_weight")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    names = list(fns)
    if logits is not None:
        source, vocab = logits.reshape(-1, logits.shape[-1]), logits.shape[-1]
    else:
        source, vocab = hidden.reshape(-1, hidden.shape[-1]), lm_head_weight.shape[0]
    dtype = _compute_dtype(source.dtype)
    ids = targets.reshape(-1).long()
    rows = chunk_size or default_chunk_rows(vocab)

    def chunk(x: Tensor, w: Tensor | None, b: Tensor | None, tgt: Tensor) -> tuple[Tensor, ...]:
        z = x if w is None else (x @ w.T if b is None else x @ w.T + b)
        z = z.to(dtype) / temperature
        return tuple(fns[name](z, tgt) for name in names)

    grad = torch.is_grad_enabled() and (source.requires_grad or (lm_head_weight is not None and lm_head_weight.requires_grad))
    parts: list[tuple[Tensor, ...]] = []
    for i0 in range(0, source.shape[0], rows):
        args = (source[i0:i0 + rows], None if logits is not None else lm_head_weight,
                None if logits is not None else lm_head_bias, ids[i0:i0 + rows])
        if grad:
            parts.append(torch.utils.checkpoint.checkpoint(chunk, *args, use_reentrant=False))
        else:
            parts.append(chunk(*args))
    out = {}
    for k, name in enumerate(names):
        value = torch.cat([p[k] for p in parts]) if parts else torch.zeros(0, dtype=dtype, device=source.device)
        out[name] = value.view(*targets.shape, *value.shape[1:])
    return out
