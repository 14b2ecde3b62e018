"""The per-micro-batch hot path (every objective, with a precomputed plan or in micro scope) issues no
operator that synchronises with the host. Checked on the CPU by watching dispatched ATen operators."""

import pytest
import torch

from stare import LossNormalizer, PolicyBatch, fit_plan, get_objective, list_objectives, policy_loss
from stare.debug import record_host_syncs
from stare.stats import token_stats_from_hidden


def test_detector_sees_syncs():
    x = torch.tensor([1.0, 2.0])
    with record_host_syncs() as found:
        x.sum().item()
        x[x > 1]
        x.nonzero()
        x.tolist()
    assert found == ["aten::_local_scalar_dense", "aten::index (boolean mask)", "aten::nonzero", "Tensor.tolist"]


def _batch(requires_grad=True, aux_names=()):
    g = torch.Generator().manual_seed(0)
    lp = -torch.rand(8, 32, generator=g) * 3
    ent = torch.rand(8, 32, generator=g) * 2
    mask = torch.ones(8, 32)
    mask[3, 20:] = 0
    # aux inputs an objective needs (old-pass or training-forward statistics): values in the log-prob range
    aux = {n: (-torch.rand(8, 32, generator=g) * 3).requires_grad_(requires_grad) for n in sorted(aux_names)}
    return PolicyBatch(lp.requires_grad_(requires_grad), torch.randn(8, generator=g), mask,
                       old_log_prob=lp.detach() - 0.1, entropy=ent.requires_grad_(requires_grad), old_entropy=ent.detach(),
                       aux=aux)


@pytest.mark.parametrize("name", list_objectives())
@pytest.mark.parametrize("scope", ["micro", "global"])
def test_objectives_do_not_sync(name, scope):
    b = _batch(aux_names=get_objective(name).aux_needs)
    plan = fit_plan(name, b, dict(selection_scope=scope)) if scope == "global" else None
    norm = LossNormalizer.from_masks(b.mask)
    with record_host_syncs() as found:
        out = policy_loss(name, b, dict(selection_scope=scope), plan=plan, normalizer=norm, validate=False)
        out.loss.backward()
    assert found == [], found


def test_validation_is_the_only_sync():
    with record_host_syncs() as found:
        policy_loss("stare", _batch(), validate=True)
    assert found == ["Tensor.tolist"]  # the single fused value check


def test_token_stats_do_not_sync():
    h = torch.randn(64, 16, requires_grad=True)
    w = torch.randn(50, 16, requires_grad=True)
    t = torch.randint(0, 50, (64,))
    with record_host_syncs() as found:
        s = token_stats_from_hidden(h, w, t, chunk_size=10)
        (s.log_prob.sum() + s.entropy.sum()).backward()
    assert found == []
