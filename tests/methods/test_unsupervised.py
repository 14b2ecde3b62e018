"""TTRL, EMPO and SEED-GRPO on hand inputs: the answer normal form and clusters, majority-vote rewards
(ties, missing answers), vote-only rows and their advantages, EMPO's cluster-share rewards and its
all-distinct filter, SEED-GRPO's semantic-entropy scales and its GRPO identity, and the monitors."""

import math

import pytest
import torch

from stare import StepData
from stare.advantages import group_advantages
from stare.objectives import RolloutRequest, RolloutRow
from stare.objectives.answer_clusters import answer_key, cluster_entropy, cluster_ids, cluster_sizes
from stare.objectives.empo import EmpoParams, empo_step_metrics, semantic_cluster_rewards
from stare.objectives.seed_grpo import SeedGrpoParams, seed_grpo_advantages, semantic_entropy_scales
from stare.objectives.ttrl import TtrlParams, majority_vote_rewards, ttrl_advantages, ttrl_rollout, ttrl_step_metrics


@pytest.mark.parametrize("a, b", [
    ("\\boxed{\\dfrac{1}{2}}", "\\frac{1}{2}"),
    ("$ 42 $", "42"),
    ("007", "7"),
    ("2.50", "2.5"),
    ("-0", "0"),
    ("1,000", "1000"),
    ("\\left( 1, 2 \\right)", "(1,2)"),
    ("x = 3.", "x=3"),
    ("\\text{yes}", "yes"),
])
def test_answer_key_equates(a, b):
    assert answer_key(a) == answer_key(b)


@pytest.mark.parametrize("a, b", [("0.5", "\\frac{1}{2}"), ("12", "21"), ("\\boxed{1}+\\boxed{2}", "1+2")])
def test_answer_key_keeps_apart(a, b):
    assert answer_key(a) != answer_key(b)  # no evaluation: only the normal form is compared


def test_missing_answers_have_no_key_and_no_cluster():
    assert answer_key(None) is None and answer_key("  ") is None and answer_key("$$") is None
    ids = cluster_ids(["4", None, "4.0", "5", ""])
    assert ids == [0, None, 0, 1, None] and cluster_sizes(ids) == [2, 1]


def test_majority_vote_rewards():
    # answers 3, 3, 4, none, 4, 3.0: "3" has three votes -> reward 1 for rows 0, 1, 5
    assert majority_vote_rewards(["3", "3", "4", None, "4", "3.0"]) == [1, 1, 0, 0, 0, 1]
    # a tie: the answer seen first wins (the code's Counter.most_common)
    assert majority_vote_rewards(["5", "4", "4", "5"]) == [1, 0, 0, 1]
    # no answer at all: no label, no reward (a missing answer is not a vote)
    assert majority_vote_rewards([None, None]) == [0, 0] and majority_vote_rewards([]) == []


class Sampler:
    tokenizer = None

    def episodes(self, examples, contexts, *, max_new_tokens, temperature, top_p, logits_processors=()):
        return [RolloutRow(i, [1, 2], "x") for i in range(len(contexts))]


def test_vote_only_rows_vote_but_do_not_train():
    req = RolloutRequest(["a", "b"], [[1], [2]], n=2, max_new_tokens=4, temperature=1.0, top_p=1.0)
    rows = ttrl_rollout(req, Sampler(), TtrlParams(votes_per_prompt=3), {})
    assert [r.prompt_index for r in rows] == [0, 0, 0, 1, 1, 1]
    vote_only = [r.row_values.get("ttrl_vote_only", 0.0) for r in rows]
    assert vote_only == [0, 0, 1, 0, 0, 1] and rows[2].loss_mask == [0, 0] and rows[0].loss_mask is None
    assert len(ttrl_rollout(req, Sampler(), TtrlParams(), {})) == 4  # V = n: every row trains


def test_advantages_over_the_trained_rows_only():
    # group 0: rewards [1, 0 | 1] (the third votes only): GRPO over [1, 0] -> [0.707107, -0.707107], vote-only 0
    # group 1: [1, 1 | 0] -> [0, 0], 0
    rewards = torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1])
    only = torch.tensor([0.0, 0, 1, 0, 0, 1]).unsqueeze(1).expand(6, 3)
    data = StepData(batch_entropy=0.5, rewards=rewards, group_ids=groups, advantages=group_advantages(rewards, groups),
                    aux={"ttrl_vote_only": only})
    torch.testing.assert_close(ttrl_advantages(data, TtrlParams(), {}),
                               torch.tensor([0.7071063, -0.7071063, 0.0, 0.0, 0.0, 0.0]), rtol=1e-5, atol=1e-5)
    plain = StepData(batch_entropy=0.5, advantages=torch.tensor([0.3, -0.3]))
    assert torch.equal(ttrl_advantages(plain, TtrlParams(), {}), plain.advantages)


def test_ttrl_step_metrics():
    # group 0: majority rows 0, 1 (rewards 1), correct (acc 1); group 1: majority row 2 wrong; row 3 right but no vote
    data = StepData(batch_entropy=0.5, rewards=torch.tensor([1.0, 1.0, 1.0, 0.0]), acc=torch.tensor([1.0, 1.0, 0.0, 1.0]),
                    group_ids=torch.tensor([0, 0, 1, 1]))
    assert ttrl_step_metrics(data, TtrlParams(), {}) == {"ttrl/majority_ratio": pytest.approx(0.75),
                                                       "ttrl/label_accuracy": 0.5, "ttrl/reward_accuracy": 0.5}


def test_empo_rewards_by_hand():
    # keys 4, 4, 5, none, 4, 7, 7 (G = 7): clusters {4: 3, 5: 1, 7: 2}, the missing answer a cluster of its own.
    # Some answers agree (SE < log 7), so reward = the share of the response's cluster; none -> 0
    preds = ["4", "4", "5", None, "4.0", "07", "7"]
    assert semantic_cluster_rewards(preds) == pytest.approx([3 / 7, 3 / 7, 1 / 7, 0, 3 / 7, 2 / 7, 2 / 7])
    # SE = -(3/7 ln 3/7 + 2 * 1/7 ln 1/7 + 2/7 ln 2/7) = 1.277034
    assert cluster_entropy(cluster_ids(preds)) == pytest.approx(1.2770343)
    # all different (SE = log G): no reward; all missing: seven singleton clusters, no reward either
    assert semantic_cluster_rewards(["1", "2", "3"]) == [0, 0, 0]
    assert semantic_cluster_rewards([None, None]) == [0, 0] and cluster_entropy([None, None]) == pytest.approx(math.log(2))


def test_empo_step_metrics():
    data = StepData(batch_entropy=0.5, group_ids=torch.tensor([0, 0, 1, 1]), preds=["1", "1", "1", "2"])
    assert empo_step_metrics(data, EmpoParams(), {}) == {"empo/semantic_entropy_mean": pytest.approx(math.log(2) / 2),
                                                       "empo/all_distinct_group_frac": 0.5}


def test_seed_grpo_scales_by_hand():
    # group 0: answers 1, 1, 2, 3: p = [1/2, 1/4, 1/4], SE = 1.039721, log 4 = 1.386294, x = 0.75:
    #   linear f = 0.25, exp f = exp(-0.75) = 0.472367
    # group 1: all agree: SE 0, f = 1.  A group of one: SE_max = log 1 = 0, f = 1
    preds = ["1", "1", "2", "3", "5", "5", "5", "5", "9"]
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 2])
    scale, se = semantic_entropy_scales(preds, groups)
    torch.testing.assert_close(scale, torch.tensor([0.25] * 4 + [1.0] * 5, dtype=torch.float64))
    assert float(se[0]) == pytest.approx(1.0397208)
    scale, _ = semantic_entropy_scales(preds, groups, modulation="exp")
    assert float(scale[0]) == pytest.approx(math.exp(-0.75))
    scale, _ = semantic_entropy_scales(preds, groups, alpha=2.0)
    assert float(scale[0]) == 0.0  # linear f is floored at 0


def test_seed_grpo_alpha_zero_is_grpo_and_the_hook_scales_the_defaults():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0])
    groups = torch.zeros(4)
    adv = group_advantages(rewards, groups)
    data = StepData(batch_entropy=0.5, advantages=adv, group_ids=groups, preds=["1", "1", "2", "3"])
    assert torch.equal(seed_grpo_advantages(data, SeedGrpoParams(alpha=0.0), {})[0], adv)
    scaled, metrics = seed_grpo_advantages(data, SeedGrpoParams(), {})
    torch.testing.assert_close(scaled, adv * 0.25)
    assert metrics["seed_grpo/scale_mean"] == pytest.approx(0.25)


def test_bad_parameters_name_the_field():
    with pytest.raises(ValueError, match="modulation"):
        SeedGrpoParams(modulation="focal")
    with pytest.raises(ValueError, match="votes_per_prompt"):
        TtrlParams(votes_per_prompt=0)
