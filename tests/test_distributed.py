"""Global selection scope across ranks: two gloo processes on the CPU, each holding half of a mini-batch,
fit one plan over both and get exactly the weights a single process computes on the whole mini-batch.
Also checks the exact cross-rank loss normaliser and statistics reduction. About 10 s."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from stare import LossNormalizer, PolicyBatch, StatAccumulator, fit_plan, policy_loss

CASES = [
    ("stare", dict(variant="C2", top_p_ratio=0.15, reweight_w=2.0, reweight_m=0.5), None),
    ("steer", dict(mapping="linear"), None),
    ("stapo", dict(prob_threshold=0.2, entropy_quantile=0.5), None),
    ("clip_cov", dict(clip_cov_ratio=0.05, clip_cov_lb=0.0, clip_cov_ub=10.0), {"seed": 5}),
    ("kl_cov", dict(kl_cov_ratio=0.1), None),
    ("forking", dict(top_entropy_ratio=0.2), None),
    ("forking", dict(top_entropy_ratio=0.3, threshold="quantile", denominator="all"), None),
]


def make_minibatch():
    g = torch.Generator().manual_seed(7)
    b, t = 10, 8
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = (torch.arange(t).unsqueeze(0) < lengths.unsqueeze(1)).float()
    old = -torch.rand(b, t, generator=g) * 5
    old[6, :3] = old[1, :3]  # ties across the two ranks
    return dict(
        log_prob=old + 0.2 * torch.randn(b, t, generator=g), old_log_prob=old, advantages=torch.randn(b, generator=g),
        mask=mask, old_entropy=torch.rand(b, t, generator=g) * 2,
    )


def batch(mb, rows):
    return PolicyBatch(mb["log_prob"][rows], mb["advantages"][rows], mb["mask"][rows], old_log_prob=mb["old_log_prob"][rows],
                       old_entropy=mb["old_entropy"][rows], entropy=mb["old_entropy"][rows], row_ids=torch.as_tensor(rows))


def worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    mb = make_minibatch()
    rows = list(range(0, 5)) if rank == 0 else list(range(5, 10))
    results = {}
    for i, (name, params, state) in enumerate(CASES):
        params = dict(params, selection_scope="global")
        b = batch(mb, rows)
        plan = fit_plan(name, b, params, state=state, group=True)
        norm = LossNormalizer.from_masks(b.mask, group=True)
        out = policy_loss(name, b, params, state=state, plan=plan, normalizer=norm)
        loss = out.loss.detach().clone()
        dist.all_reduce(loss)
        acc = StatAccumulator()
        acc.add(out.stats)
        acc.all_reduce()
        results[i] = (out.weights, out.per_token_loss, loss, acc.result())
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
def test_two_ranks_equal_one_process(tmp_path):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=False)
    mb = make_minibatch()
    full = batch(mb, list(range(10)))
    for i, (name, params, state) in enumerate(CASES):
        params = dict(params, selection_scope="global")
        ref = policy_loss(name, full, params, state=state)
        weights = torch.cat([r0[i][0], r1[i][0]])
        m = mb["mask"].bool()
        assert torch.equal(weights[m], ref.weights[m]), name
        assert torch.equal(torch.cat([r0[i][1], r1[i][1]])[m], ref.per_token_loss[m]), name
        torch.testing.assert_close(r0[i][2], ref.loss, rtol=1e-5, atol=1e-6)
        acc = StatAccumulator()
        acc.add(ref.stats)
        single = acc.result()
        for key, value in single.items():
            assert r0[i][3][key] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, key)
