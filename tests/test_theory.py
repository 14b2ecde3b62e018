"""First-order theory: one small SGD step on a softmax's logits with per-token loss -A log pi(o) changes
the entropy by -eta A S(o) (S exact, with the per-state constant C), and the quadrant signs follow."""


import pytest
import torch

from stare.theory import ENTROPY_RAISING, QUADRANTS, entropy_sensitivity, predicted_entropy_change, quadrant


def entropy(z):
    lq = torch.log_softmax(z, -1)
    return -(lq.exp() * lq).sum(-1)


def realised_change(z, o, a, lr):
    """One SGD step on loss = -A log softmax(z)[o] in logit space; returns H(z') - H(z)."""
    z = z.clone().requires_grad_()
    loss = -a * torch.log_softmax(z, -1)[o]
    (g,) = torch.autograd.grad(loss, z)
    with torch.no_grad():
        return (entropy(z - lr * g) - entropy(z)).item()


def test_worked_example_from_the_spec():
    # pi = [0.9, 0.05, 0.05]: H = 0.394, C = 0.221, S(top) = +0.039, S(rare) = -0.351 (docs/methods.md §2.3)
    z = torch.log(torch.tensor([0.9, 0.05, 0.05], dtype=torch.float64))
    s = entropy_sensitivity(z.expand(3, 3), torch.tensor([0, 1, 2]))
    assert s.entropy[0].item() == pytest.approx(0.394, abs=1e-3)
    assert s.constant[0].item() == pytest.approx(0.221, abs=1e-3)
    assert s.exact[0].item() == pytest.approx(0.039, abs=1e-3)
    assert s.exact[1].item() == pytest.approx(-0.351, abs=1e-3)
    # zero mean under the policy: 0.9 * 0.039 + 0.1 * (-0.351) = 0
    assert (torch.tensor([0.9, 0.05, 0.05], dtype=torch.float64) * s.exact).sum().item() == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("adv", [1.0, -1.0])
@pytest.mark.parametrize("token", [0, 1])  # 0: confident (s < H), 1: rare (s > H)
def test_first_order_change_all_four_quadrants(adv, token):
    z = torch.log(torch.tensor([0.9, 0.05, 0.05], dtype=torch.float64))
    lr = 1e-4
    s = entropy_sensitivity(z.unsqueeze(0), torch.tensor([token]))
    predicted = predicted_entropy_change(s.exact, torch.tensor([adv], dtype=torch.float64), lr).item()
    realised = realised_change(z, token, adv, lr)
    assert realised == pytest.approx(predicted, rel=0.01)
    # quadrant sign pattern of the spec (§2.3): entropy rises for (A > 0, rare) and (A < 0, confident)
    q = QUADRANTS[quadrant(torch.tensor([adv]), s.surprisal, s.entropy).item()]
    assert (realised > 0) == (q in ENTROPY_RAISING)
    assert q == {(1.0, 1): "pos_high_surprisal", (1.0, 0): "pos_low_surprisal",
                 (-1.0, 1): "neg_high_surprisal", (-1.0, 0): "neg_low_surprisal"}[(adv, token)]


def test_first_order_on_random_distributions_and_the_leading_term_is_not_enough():
    g = torch.Generator().manual_seed(0)
    lr = 1e-5
    worst_exact, worst_leading = 0.0, 0.0
    for _ in range(20):
        z = torch.randn(40, generator=g, dtype=torch.float64) * 2.5
        targets = torch.arange(40)
        s = entropy_sensitivity(z.expand(40, 40), targets)
        for o in range(0, 40, 3):
            if abs(s.exact[o]) < 1e-3:
                continue  # near the critical surprisal the change is second order
            realised = realised_change(z, o, 1.0, lr)
            worst_exact = max(worst_exact, abs(realised + lr * s.exact[o].item()) / abs(lr * s.exact[o].item()))
            worst_leading = max(worst_leading, abs(realised + lr * s.leading[o].item()) / abs(lr * s.exact[o].item()))
    assert worst_exact < 0.01
    assert worst_leading > 0.05  # dropping C is a real approximation


def test_sensitivity_is_zero_mean_and_chunking_is_exact():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(7, 30, generator=g, dtype=torch.float64)
    p = torch.softmax(z, -1)
    for row in range(7):
        s = entropy_sensitivity(z[row].expand(30, 30), torch.arange(30))
        assert (p[row] * s.exact).sum().item() == pytest.approx(0.0, abs=1e-12)
    t = torch.randint(0, 30, (7,), generator=g)
    a = entropy_sensitivity(z, t, chunk_size=2)
    b = entropy_sensitivity(z, t)
    torch.testing.assert_close(a.exact, b.exact)
    # critical surprisal: leading term changes sign at s = H
    assert torch.all((a.leading > 0) == (a.surprisal < a.entropy))


def test_quadrant_labels():
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0, 0.0])
    s = torch.tensor([2.0, 0.1, 2.0, 0.1, 5.0])
    h = torch.ones(5)
    assert quadrant(adv, s, h).tolist() == [0, 1, 2, 3, -1]
