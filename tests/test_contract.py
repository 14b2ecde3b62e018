"""The contract's loss-side hooks on hand-made tensors: per-token clip bounds, the KL term to a reference,
scalar (per-call) terms with micro-batch shares, named aux inputs, logit statistics (chunked, with and
without gradient), controllers with tensor state, and the registry's bookkeeping."""

import dataclasses
import math

import pytest
import torch

from stare import LossNormalizer, PolicyBatch, StepData, policy_loss
from stare.objectives import (
    ClipParams,
    ControllerState,
    Objective,
    Terms,
    get_objective,
    load_controller,
    make_controller,
    register_objective,
    save_controller,
    unregister_objective,
)
from stare.stats import logit_statistics
from stare.surrogate import clipped_surrogate, kl_penalty


@pytest.fixture
def registered():
    names = []

    def add(obj):
        names.append(obj.name)
        return register_objective(obj)

    yield add
    for n in names:
        unregister_objective(n)


# ------------------------------------------------------------------------------------ per-token clip bounds


def test_per_token_clip_bounds_by_hand():
    # ratios exp(lp - old): 1.5, 1.5, 0.5 ; A = +1, +1, -1
    lp = torch.log(torch.tensor([[1.5, 1.5, 0.5]]))
    old = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, 1.0, -1.0]])
    high = torch.tensor([[0.2, 0.8, 0.2]])  # token 2 gets a wide upper bound
    low = torch.tensor([[0.2, 0.2, 0.6]])  # token 3 a wide lower bound
    s = clipped_surrogate(lp, old, adv, low, high)
    # token 1: max(-1.5, -min(1.5, 1.2)) = -1.2 (clipped); token 2: max(-1.5, -1.5) = -1.5 (inside 1.8)
    # token 3: A < 0: max(0.5, clip(0.5, 0.4, 1.2) = 0.5) = 0.5 (inside 0.4); with low 0.2 it would be 0.8
    assert s.loss[0].tolist() == pytest.approx([-1.2, -1.5, 0.5])
    assert s.clipped.tolist() == [[True, False, False]]
    scalar = clipped_surrogate(lp, old, adv, 0.2, 0.2)
    assert scalar.loss[0].tolist() == pytest.approx([-1.2, -1.2, 0.8])
    same = clipped_surrogate(lp, old, adv, torch.full((1, 3), 0.2), torch.full((1, 3), 0.2))
    assert torch.equal(same.loss, scalar.loss)  # constant tensors are the scalar bounds, bit for bit


# ------------------------------------------------------------------------------------ KL to a reference


def test_kl_estimators_by_hand():
    lp, ref = torch.log(torch.tensor([0.5])), torch.log(torch.tensor([0.25]))
    d = math.log(0.5)  # log ref - log pi
    assert kl_penalty(lp, ref, "k1").item() == pytest.approx(-d)  # log 2
    assert kl_penalty(lp, ref, "k2").item() == pytest.approx(0.5 * d * d)
    assert kl_penalty(lp, ref, "k3").item() == pytest.approx(0.5 - d - 1)  # e^d - d - 1 = 0.1931
    assert kl_penalty(lp, ref, "low_var_kl").item() == pytest.approx(0.5 - d - 1)
    assert kl_penalty(lp, ref, "abs").item() == pytest.approx(-d)
    far = kl_penalty(torch.tensor([0.0]), torch.tensor([30.0]), "low_var_kl")  # clamped: d to 20, k3 to 10
    assert far.item() == 10.0
    assert kl_penalty(lp, lp, "k3").item() == 0.0


def test_kl_term_is_added_like_the_loss_and_needs_the_reference():
    lp = torch.log(torch.tensor([[0.5, 0.5, 0.9]])).requires_grad_()
    ref = torch.log(torch.tensor([[0.25, 0.5, 0.9]]))
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    b = PolicyBatch(lp, torch.tensor([1.0]), mask, ref_log_prob=ref)
    base = policy_loss("ppo", b)
    out = policy_loss("ppo", b, {"kl_coef": 0.1, "kl_estimator": "k3"})
    k3 = 0.5 - math.log(0.5) - 1
    # token-mean over the two valid tokens: (k3 + 0) / 2, times the coefficient
    assert out.extra_losses["kl"].item() == pytest.approx(0.1 * k3 / 2)
    assert out.loss.item() == pytest.approx(base.loss.item() + 0.1 * k3 / 2)
    assert out.stats["kl_loss"].value.item() / out.stats["kl_loss"].count.item() == pytest.approx(k3 / 2)
    with pytest.raises(ValueError, match="reference model's log-probs"):
        policy_loss("ppo", PolicyBatch(lp, torch.tensor([1.0]), mask), {"kl_coef": 0.1})


# ------------------------------------------------------------------------------------ scalar terms


def _scalar_objective(registered):
    def terms(batch, view, p, state, plan):
        """Scalar: a per-call squared penalty on the mean log-prob."""
        m = batch.valid
        mean_lp = (batch.log_prob * m).sum() / m.sum()
        return Terms(pg_loss=torch.zeros_like(batch.log_prob), scalar={"penalty": (mean_lp + 1.0) ** 2})

    return registered(Objective("scalar_test", params=ClipParams, terms=terms, acts_at=("LOSS-TERM",)))


def test_scalar_terms_weighted_by_the_calls_share_of_tokens(registered):
    _scalar_objective(registered)
    a = PolicyBatch(torch.full((1, 3), -2.0), torch.tensor([1.0]), torch.ones(1, 3))  # 3 tokens, penalty (−2+1)^2 = 1
    b = PolicyBatch(torch.full((1, 3), -3.0), torch.tensor([1.0]), torch.tensor([[1.0, 0.0, 0.0]]))  # 1 token, 4
    norm = LossNormalizer.from_masks(a.mask, b.mask)
    total = policy_loss("scalar_test", a, normalizer=norm).loss + policy_loss("scalar_test", b, normalizer=norm).loss
    assert total.item() == pytest.approx(0.75 * 1.0 + 0.25 * 4.0)  # the token-weighted mean of the two calls
    alone = policy_loss("scalar_test", b)  # without a normaliser: the call's own value
    assert alone.extra_losses["penalty"].item() == pytest.approx(4.0)


# ------------------------------------------------------------------------------------ aux inputs


def test_aux_inputs_are_declared_checked_and_detached_in_the_view(registered):
    seen = {}

    def terms(batch, view, p, state, plan):
        """Proxy: weight each token by exp(proxy log-prob - log-prob), a stand-in for Lp-Reg's min-p proxy."""
        seen["view_grad"] = view.aux["proxy"].requires_grad
        w = torch.exp(batch.aux["proxy"] - batch.log_prob.detach())
        s = clipped_surrogate(batch.log_prob, batch.ratio_denominator, batch.token_advantages, 0.2, 0.2)
        return Terms(pg_loss=s.loss * w, weights=w)

    registered(Objective("proxy_test", params=ClipParams, terms=terms, needs=("proxy",), acts_at=("WEIGHT",)))
    lp = torch.log(torch.tensor([[0.5, 0.25]]))
    proxy = torch.log(torch.tensor([[0.5, 0.5]])).requires_grad_()
    with pytest.raises(ValueError, match=r"needs aux inputs \['proxy'\]"):
        policy_loss("proxy_test", PolicyBatch(lp, torch.tensor([1.0]), torch.ones(1, 2)))
    with pytest.raises(ValueError, match=r"aux\['proxy'\] must be a tensor of shape"):
        policy_loss("proxy_test", PolicyBatch(lp, torch.tensor([1.0]), torch.ones(1, 2), aux={"proxy": torch.ones(3)}))
    out = policy_loss("proxy_test", PolicyBatch(lp, torch.tensor([1.0]), torch.ones(1, 2), aux={"proxy": proxy}))
    assert out.weights[0].tolist() == pytest.approx([1.0, 2.0]) and seen["view_grad"] is False
    assert get_objective("proxy_test").aux_needs == {"proxy"}


# ------------------------------------------------------------------------------------ logit statistics


def top2(z, ids):
    return torch.log_softmax(z, -1).topk(2, -1).values


def sampled_minus_max(z, ids):
    lq = torch.log_softmax(z, -1)
    return lq.gather(1, ids.unsqueeze(1)).squeeze(1) - lq.max(-1).values


def test_logit_statistics_chunked_equal_the_direct_computation():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    w = torch.randn(11, 8, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 11, (2, 5), generator=g)
    fns = {"top2": top2, "gap": sampled_minus_max}
    out = logit_statistics(fns, ids, hidden=hidden, lm_head_weight=w, temperature=0.7, chunk_size=3)
    z = (hidden @ w.T) / 0.7
    assert out["top2"].shape == (2, 5, 2)
    torch.testing.assert_close(out["top2"], torch.log_softmax(z, -1).topk(2, -1).values)
    lq = torch.log_softmax(z, -1)
    torch.testing.assert_close(out["gap"], lq.gather(-1, ids.unsqueeze(-1)).squeeze(-1) - lq.max(-1).values)
    from_logits = logit_statistics(fns, ids, logits=hidden @ w.T, temperature=0.7, chunk_size=4)
    torch.testing.assert_close(from_logits["gap"], out["gap"])


def test_logit_statistics_are_differentiable_through_checkpointed_chunks():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(7, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, 6, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 9, (7,), generator=g)
    out = logit_statistics({"gap": sampled_minus_max}, ids, hidden=hidden, lm_head_weight=w, chunk_size=2)["gap"]
    gh, gw = torch.autograd.grad(out.square().sum(), (hidden, w))
    direct = sampled_minus_max(hidden @ w.T, ids)
    dh, dw = torch.autograd.grad(direct.square().sum(), (hidden, w))
    torch.testing.assert_close(gh, dh)
    torch.testing.assert_close(gw, dw)
    with torch.no_grad():  # without autograd: a plain loop, nothing kept
        assert not logit_statistics({"gap": sampled_minus_max}, ids, hidden=hidden, lm_head_weight=w)["gap"].requires_grad


# ------------------------------------------------------------------------------------ controllers


@dataclasses.dataclass(frozen=True)
class HistoryParams(ClipParams):
    window: int = 3


@dataclasses.dataclass
class EntropyHistory(ControllerState):
    """Vector state: the last ``window`` batch entropies, and their mean as the state the loss reads."""

    params: HistoryParams = dataclasses.field(default_factory=HistoryParams)
    history: torch.Tensor = dataclasses.field(default_factory=lambda: torch.zeros(0))

    def update(self, data: StepData) -> None:
        self.history = torch.cat([self.history, torch.tensor([data.batch_entropy])])[-self.params.window:]

    def state(self) -> dict:
        return {"mean_entropy": float(self.history.mean()) if len(self.history) else 0.0}

    def metrics(self) -> dict:
        return {"history/mean_entropy": self.state()["mean_entropy"]}


def test_controller_with_tensor_state_round_trips(tmp_path, registered):
    def terms(batch, view, p, state, plan):
        """History: the surrogate scaled by 1 + the mean of recent batch entropies."""
        s = clipped_surrogate(batch.log_prob, batch.ratio_denominator, batch.token_advantages, 0.2, 0.2)
        return Terms(pg_loss=s.loss * (1 + state["mean_entropy"]))

    registered(Objective("history_test", params=HistoryParams, terms=terms, controller=EntropyHistory,
                         acts_at=("WEIGHT", "CTRL")))
    c = make_controller("history_test")
    for h in (0.1, 0.2, 0.3, 0.4):
        c.update(StepData(batch_entropy=h))
    assert c.history.tolist() == pytest.approx([0.2, 0.3, 0.4])
    fresh = make_controller("history_test")
    load_controller(save_controller(tmp_path / "c.pt", c), fresh)
    assert torch.equal(fresh.history, c.history) and fresh.state() == c.state()
    b = PolicyBatch(torch.tensor([[-1.0]]), torch.tensor([1.0]), torch.ones(1, 1))
    assert policy_loss("history_test", b, state=c.state()).loss.item() == pytest.approx(-1.3)
    assert policy_loss("history_test", b).loss.item() == pytest.approx(-1.0)  # initial state: empty history


def test_step_data_require_names_what_an_engine_did_not_fill():
    d = StepData(batch_entropy=0.5, step=3)
    d.require("x", "batch_entropy", "step")
    with pytest.raises(ValueError, match="rewards, texts"):
        d.require("my hook", "rewards", "texts")


# ------------------------------------------------------------------------------------ registry


def test_registry_derives_kinds_and_refuses_clashes(registered):
    from stare.objectives.ppo import PPOParams, ppo_terms

    obj = registered(Objective("hooked_test", params=PPOParams, terms=ppo_terms, advantages=lambda d, p, s: d.advantages,
                               rollout=lambda *a: [], acts_at=("LOSS",)))
    assert obj.acts_at == ("LOSS", "ROLLOUT", "ADV") and obj.step_hooks == ("rollout", "advantages")
    with pytest.raises(ValueError, match="already registered"):
        register_objective(Objective("hooked_test", params=PPOParams, terms=ppo_terms))
    register_objective(obj)  # the same record again: a no-op
    with pytest.raises(ValueError, match="Did you mean 'ROLLOUT'"):
        Objective("bad_kind", params=PPOParams, terms=ppo_terms, acts_at=("ROLOUT",))
    with pytest.raises(TypeError, match="dataclass"):
        Objective("bad_params", params=dict, terms=ppo_terms)
