"""Token statistics: chunked results equal a float64 reference, gradients pass gradcheck, and the
chunked path never depends on the chunk size. CPU only, a few seconds."""

import math

import pytest
import torch

from stare.stats import token_stats_from_hidden, token_stats_from_logits, token_stats_reference


def _case(n=53, d=16, v=97, scale=3.0, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g, dtype=torch.float64)
    w = torch.randn(v, d, generator=g, dtype=torch.float64) * scale / math.sqrt(d)
    b = torch.randn(v, generator=g, dtype=torch.float64)
    t = torch.randint(0, v, (n,), generator=g)
    return h.to(dtype), w.to(dtype), b.to(dtype), t


@pytest.mark.parametrize("scale", [0.5, 3.0, 12.0])  # near-uniform, typical, peaked next-token distributions
@pytest.mark.parametrize("temperature", [1.0, 0.6, 1.7])
def test_fp32_matches_float64_reference(scale, temperature):
    h, w, b, t = _case(scale=scale)
    ref = token_stats_reference((h.double() @ w.double().T + b.double()), t, temperature=temperature)
    got = token_stats_from_hidden(h, w, t, lm_head_bias=b, temperature=temperature, chunk_size=7)
    assert got.log_prob.dtype == torch.float32
    # 1e-5 relative; the absolute floor 1e-6 only matters for log-probs within 1e-6 of 0, which fp32
    # cannot resolve relatively whatever the algorithm (the naive fp32 computation shares it).
    torch.testing.assert_close(got.entropy.double(), ref.entropy, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got.log_prob.double(), ref.log_prob, rtol=1e-5, atol=1e-6)
    logits = (h @ w.T + b)
    got2 = token_stats_from_logits(logits, t, temperature=temperature, chunk_size=11)
    torch.testing.assert_close(got2.entropy.double(), ref.entropy, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got2.log_prob.double(), ref.log_prob, rtol=1e-5, atol=1e-6)


def test_peaked_entropy_keeps_relative_precision():
    # One logit 30 above the rest: H ~ 1e-11 and log p(top) ~ -4.6e-12. With the normaliser written as
    # max + log1p(rest) and H as -sum p log p (non-negative terms) both keep relative precision, where
    # logsumexp(z) - sum p z (or z - logsumexp(z)) would cancel to noise in fp32.
    logits = torch.zeros(2, 50)
    logits[:, 0] = 30.0
    t = torch.tensor([0, 3])
    # Closed form (a float64 log_softmax is itself too coarse here): with e = exp(-30) and r = 49 e,
    # log p_top = -log1p(r), log p_other = -30 - log1p(r), H = -p_top log p_top - 49 p_other log p_other.
    e = math.exp(-30.0)
    lp_top, lp_other = -math.log1p(49 * e), -30.0 - math.log1p(49 * e)
    h = -math.exp(lp_top) * lp_top - 49 * math.exp(lp_other) * lp_other
    got = token_stats_from_logits(logits, t)
    torch.testing.assert_close(got.entropy.double(), torch.tensor([h, h], dtype=torch.float64), rtol=1e-5, atol=0)
    torch.testing.assert_close(
        got.log_prob.double(), torch.tensor([lp_top, lp_other], dtype=torch.float64), rtol=1e-5, atol=0
    )


def test_surprisal_is_minus_log_prob():
    h, w, b, t = _case()
    s = token_stats_from_hidden(h, w, t)
    torch.testing.assert_close(s.surprisal, -s.log_prob)
    assert (s.surprisal >= 0).all() and (s.entropy >= 0).all()


def test_gradcheck_from_hidden_float64():
    h, w, b, t = _case(n=13, d=5, v=11, dtype=torch.float64)
    args = tuple(x.clone().requires_grad_() for x in (h, w, b))

    def f(h, w, b):
        s = token_stats_from_hidden(h, w, t, lm_head_bias=b, temperature=0.8, chunk_size=4)
        return s.log_prob, s.entropy

    assert torch.autograd.gradcheck(f, args)


def test_gradcheck_from_logits_float64():
    h, w, b, t = _case(n=13, d=5, v=11, dtype=torch.float64)
    logits = (h @ w.T).requires_grad_()

    def f(z):
        s = token_stats_from_logits(z, t, temperature=1.3, chunk_size=5)
        return s.log_prob, s.entropy

    assert torch.autograd.gradcheck(f, (logits,))
    # log-prob only, and entropy only (the other output unused)
    assert torch.autograd.gradcheck(lambda z: token_stats_from_logits(z, t, with_entropy=False).log_prob, (logits,))
    assert torch.autograd.gradcheck(lambda z: token_stats_from_logits(z, t, chunk_size=3).entropy, (logits,))


def test_gradients_match_autograd_reference_fp32():
    h, w, b, t = _case(n=40, d=8, v=31)
    hr, wr = h.clone().requires_grad_(), w.clone().requires_grad_()
    hc, wc = h.clone().requires_grad_(), w.clone().requires_grad_()
    ref = token_stats_reference(hr @ wr.T, t, temperature=0.9)
    got = token_stats_from_hidden(hc, wc, t, temperature=0.9, chunk_size=6)
    g1, g2 = torch.randn(40), torch.randn(40)
    ((ref.log_prob * g1).sum() + (ref.entropy * g2).sum()).backward()
    ((got.log_prob * g1).sum() + (got.entropy * g2).sum()).backward()
    torch.testing.assert_close(hc.grad, hr.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(wc.grad, wr.grad, rtol=1e-4, atol=1e-5)


def test_chunk_size_does_not_change_results():
    h, w, b, t = _case(n=50)
    outs = [token_stats_from_hidden(h, w, t, chunk_size=c) for c in (1, 7, 50, 1000)]
    # Only the matmul's blocking differs between chunk shapes: agreement to fp32 rounding.
    for o in outs[1:]:
        torch.testing.assert_close(o.log_prob, outs[0].log_prob, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(o.entropy, outs[0].entropy, rtol=1e-6, atol=1e-7)


def test_leading_dims_preserved_and_frozen_head_gets_no_grad():
    h, w, b, t = _case(n=24)
    hb = h.view(4, 6, -1).clone().requires_grad_()
    s = token_stats_from_hidden(hb, w, t.view(4, 6))  # w does not require grad (frozen head, LoRA)
    assert s.log_prob.shape == (4, 6) and s.entropy.shape == (4, 6)
    s.entropy.sum().backward()
    assert hb.grad is not None and hb.grad.shape == hb.shape and w.grad is None


def test_bfloat16_inputs_compute_in_float32():
    h, w, b, t = _case(n=20)
    s = token_stats_from_hidden(h.bfloat16(), w.bfloat16(), t)
    ref = token_stats_reference((h.bfloat16() @ w.bfloat16().T).float(), t)
    assert s.entropy.dtype == torch.float32
    torch.testing.assert_close(s.entropy, ref.entropy, rtol=1e-4, atol=1e-4)


def test_without_entropy():
    h, w, b, t = _case()
    s = token_stats_from_hidden(h, w, t, with_entropy=False)
    assert s.entropy is None
    torch.testing.assert_close(s.log_prob, token_stats_from_hidden(h, w, t).log_prob)


def test_masked_vocabulary_entries_are_finite():
    logits = torch.randn(3, 9)
    logits[:, 5:] = -math.inf  # e.g. a vocabulary restricted by a filter
    s = token_stats_from_logits(logits.requires_grad_(), torch.tensor([0, 1, 2]))
    assert torch.isfinite(s.entropy).all()
    s.entropy.sum().backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(targets=torch.zeros(5, dtype=torch.long)), "targets has shape"),
        (dict(targets=torch.zeros(7)), "integer tensor"),
        (dict(temperature=0.0), "temperature"),
    ],
)
def test_bad_inputs_name_the_argument(kwargs, match):
    args = dict(targets=torch.zeros(7, dtype=torch.long), temperature=1.0)
    args.update(kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        token_stats_from_logits(torch.randn(7, 4), args["targets"], temperature=args["temperature"])


def test_hidden_and_head_shape_mismatch():
    with pytest.raises(ValueError, match="lm_head_weight"):
        token_stats_from_hidden(torch.randn(3, 4), torch.randn(10, 5), torch.zeros(3, dtype=torch.long))


def test_entropy_within_1e5_absolute_at_a_real_vocabulary_size():
    # V = 32000 as in the core benchmark: a long row sum. A sequential fp32 dot product (the previous
    # implementation) drifts to 3-5e-5 here; the shifted, cascade-summed form stays near 1e-6.
    g = torch.Generator().manual_seed(0)
    n, d, v = 32, 64, 32000
    h = torch.randn(n, d, generator=g)
    w = torch.randn(v, d, generator=g) * 2 / math.sqrt(d)
    t = torch.randint(0, v, (n,), generator=g)
    ref = token_stats_reference(h.double() @ w.double().T, t)
    got = token_stats_from_hidden(h, w, t)
    assert (got.entropy.double() - ref.entropy).abs().max() < 1e-5
    assert (got.log_prob.double() - ref.log_prob).abs().max() < 1e-5
    got2 = token_stats_from_logits(h @ w.T, t)
    assert (got2.entropy.double() - ref.entropy).abs().max() < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_several_blocks_per_chunk_give_the_same_results(monkeypatch, dtype):
    # The element-wise work runs over cache-sized blocks of a chunk; force 3-row blocks (the default
    # makes one block of these small chunks) and compare values and gradients of both paths.
    import stare.stats as stats_mod

    h, w, b, t = _case(n=40, d=8, v=31, dtype=dtype)

    def run(hidden_path):
        hh, ww, bb = (x.clone().requires_grad_() for x in (h, w, b))
        if hidden_path:
            s = token_stats_from_hidden(hh, ww, t, lm_head_bias=bb, temperature=0.7, chunk_size=16)
        else:
            z = (hh @ ww.T + bb).detach().requires_grad_()
            s = token_stats_from_logits(z, t, temperature=0.7, chunk_size=16)
            hh = z
        g1 = torch.linspace(-1, 1, 40)
        ((s.log_prob * g1).sum() + (s.entropy * g1.flip(0)).sum()).backward()
        grads = [hh.grad] + ([ww.grad, bb.grad] if hidden_path else [])
        return s.log_prob, s.entropy, grads

    for hidden_path in (True, False):
        one = run(hidden_path)
        monkeypatch.setattr(stats_mod, "BLOCK_ELEMENTS", 31 * 3)
        many = run(hidden_path)
        monkeypatch.undo()
        torch.testing.assert_close(many[0], one[0], rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(many[1], one[1], rtol=1e-6, atol=1e-7)
        for a, c in zip(many[2], one[2]):
            torch.testing.assert_close(a, c, rtol=1e-6, atol=1e-7)


def test_bfloat16_gradients_match_a_float32_computation_of_the_same_logits():
    # bf16 inputs: the matmuls stay in bf16 (logits rounded to bf16, as any bf16 model computes them),
    # everything after them in fp32. Reference: autograd through fp32 ops on the bf16-rounded logits.
    h, w, b, t = _case(n=40, d=16, v=53)
    hb, wb = h.bfloat16().requires_grad_(), w.bfloat16().requires_grad_()
    s = token_stats_from_hidden(hb, wb, t, temperature=0.8, chunk_size=9)
    gen = torch.Generator().manual_seed(1)
    g1, g2 = torch.randn(40, generator=gen), torch.randn(40, generator=gen)
    ((s.log_prob * g1).sum() + (s.entropy * g2).sum()).backward()
    hr, wr = h.bfloat16().float().requires_grad_(), w.bfloat16().float().requires_grad_()
    ref = token_stats_reference(hr @ wr.T, t, temperature=0.8)
    ((ref.log_prob * g1).sum() + (ref.entropy * g2).sum()).backward()
    assert hb.grad.dtype == torch.bfloat16 and wb.grad.dtype == torch.bfloat16
    torch.testing.assert_close(s.entropy, ref.entropy, rtol=2e-2, atol=2e-2)
    # bf16 rounds the gradient of every logit (2**-9 relative) before the matmuls: errors of a few 1e-3 of
    # the largest gradient entry, which the tolerance (2% of it) covers; a wrong term would not fit.
    for got, want in ((hb.grad, hr.grad), (wb.grad, wr.grad)):
        torch.testing.assert_close(got.float(), want, rtol=0, atol=0.02 * float(want.abs().max()))
    # the logits path with bf16 logits: the same numbers, gradient returned in bf16
    z = (h.bfloat16() @ w.bfloat16().T).requires_grad_()
    s2 = token_stats_from_logits(z, t, temperature=0.8, chunk_size=9)
    zr = z.detach().float().requires_grad_()
    ref2 = token_stats_reference(zr, t, temperature=0.8)
    ((s2.log_prob * g1).sum() + (s2.entropy * g2).sum()).backward()
    ((ref2.log_prob * g1).sum() + (ref2.entropy * g2).sum()).backward()
    torch.testing.assert_close(s2.entropy, ref2.entropy, rtol=1e-5, atol=1e-5)
    assert z.grad.dtype == torch.bfloat16
    torch.testing.assert_close(z.grad.float(), zr.grad, rtol=1e-2, atol=1e-3)
