"""Global selection scope: a plan fitted once on the mini-batch gives the same per-token weights however
the mini-batch is split into micro-batches (and however each micro-batch is padded), and with the
mini-batch normaliser the micro-batch losses add up to the mini-batch loss."""

import pytest
import torch

from stare import LossNormalizer, PolicyBatch, fit_plan, policy_loss

CASES = [
    ("stare", dict(variant="O1", top_p_ratio=0.2, reweight_w=2.0), None),
    ("stare", dict(variant="C2", top_p_ratio=0.3, reweight_w=2.0, reweight_m=0.5), None),
    ("steer", dict(mapping="linear"), None),
    ("steer", dict(mapping="exp"), None),
    ("stapo", dict(prob_threshold=0.2, entropy_quantile=0.5), None),
    ("clip_cov", dict(clip_cov_ratio=0.05, clip_cov_lb=0.0, clip_cov_ub=10.0), {"seed": 11}),
    ("kl_cov", dict(kl_cov_ratio=0.1), None),
    ("forking", dict(top_entropy_ratio=0.2), None),
    ("forking", dict(top_entropy_ratio=0.2, threshold="quantile", denominator="all"), None),
]


def minibatch(seed=0, b=12, t=10):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = (torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)).float()
    old = -torch.rand(b, t, generator=g) * 5
    old[3, :4] = old[0, :4]  # ties across rows (and so across micro-batches)
    cur = old + 0.3 * torch.randn(b, t, generator=g)
    adv = torch.randn(b, generator=g)
    adv[5] = 0.0
    old_ent = torch.rand(b, t, generator=g) * 2
    old_ent[7, :3] = old_ent[1, :3]
    return dict(log_prob=cur, old_log_prob=old, old_entropy=old_ent, advantages=adv, mask=mask)


def micro(mb, rows, trim=True):
    sl = {k: v[rows] for k, v in mb.items()}
    width = int(sl["mask"].sum(0).nonzero().max()) + 1 if trim and sl["mask"].any() else sl["mask"].shape[1]
    sl = {k: (v[:, :width] if v.dim() == 2 else v) for k, v in sl.items()}
    lp = sl.pop("log_prob").clone().requires_grad_()
    return PolicyBatch(lp, sl["advantages"], sl["mask"], old_log_prob=sl["old_log_prob"],
                       old_entropy=sl["old_entropy"], entropy=sl["old_entropy"], row_ids=torch.as_tensor(rows))


SPLITS = [[list(range(12))], [list(range(6)), list(range(6, 12))], [[0, 1, 2], [3], [4, 5, 6, 7, 8, 9, 10], [11]],
          [[i] for i in range(12)]]


@pytest.mark.parametrize("name, params, state", CASES)
def test_weights_do_not_depend_on_the_split(name, params, state):
    mb = minibatch()
    params = dict(params, selection_scope="global")
    full = micro(mb, list(range(12)), trim=False)
    plan = fit_plan(name, full, params, state=state)
    ref = policy_loss(name, full, params, state=state, plan=plan)
    valid = mb["mask"].bool()
    # something is actually selected or reweighted, otherwise the test would be vacuous
    ppo = policy_loss("ppo", full, dict(clip_ratio_c=None))
    assert not (torch.equal(ref.weights[valid], torch.ones(int(valid.sum())))
                and torch.allclose(ref.per_token_loss[valid], ppo.per_token_loss[valid]))
    norm = LossNormalizer.from_masks(mb["mask"])
    for split in SPLITS:
        total = 0.0
        for rows in split:
            b = micro(mb, rows)
            out = policy_loss(name, b, params, state=state, plan=plan, normalizer=norm)
            width, m = b.mask.shape[1], b.mask.bool()
            for got, want in ((out.weights, ref.weights), (out.per_token_loss, ref.per_token_loss)):
                torch.testing.assert_close(got[m], want[rows][:, :width][m], rtol=0, atol=0)
            total = total + out.loss
        torch.testing.assert_close(total, ref.loss, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, params, state", CASES[:2] + CASES[5:6])
def test_micro_scope_does_depend_on_the_split(name, params, state):
    # The official (micro) behaviour, for contrast: per-micro-batch top-k picks different tokens.
    mb = minibatch()
    full = policy_loss(name, micro(mb, list(range(12)), trim=False), params, state=state)
    parts = [policy_loss(name, micro(mb, rows, trim=False), params, state=state).weights for rows in SPLITS[3]]
    assert not torch.equal(torch.cat(parts), full.weights)


def test_global_without_plan_treats_the_batch_as_the_scope():
    mb = minibatch(3)
    b = micro(mb, list(range(12)), trim=False)
    p = dict(top_p_ratio=0.2, reweight_w=2.0, selection_scope="global")
    assert torch.equal(policy_loss("stare", b, p).weights, policy_loss("stare", b, p, plan=fit_plan("stare", b, p)).weights)
