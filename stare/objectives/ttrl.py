"""TTRL: Test-Time Reinforcement Learning (arXiv 2504.16084). docs/methods.md §10.7.

Official code: PRIME-RL/TTRL, ``verl/verl/workers/reward_manager/ttrl.py`` (``TTRLRewardManager``),
``verl/verl/utils/reward_score/ttrl/ttt_metrics.py`` (``test_time_train_metrics``),
``verl/verl/trainer/ppo/ray_trainer.py`` (``_select_top_k_per_prompt``), ``verl/examples/ttrl/aime.sh``.

No ground truth: the group's most common final answer is taken as the label.

    sample V >= n responses per prompt (V = ``votes_per_prompt``); extract each final answer
    label    = the most common answer among the V (ties: the one seen first)
    reward_i = 1 if answer_i is the label, else 0
    train on the first n of the V with GRPO advantages computed over those n

With V = n (the reward manager's default) every response trains. With V > n (aime.sh: 64 votes, 32
trained) the rollout hook samples V per prompt and marks the last V - n of each prompt as vote-only
(loss mask 0, ``aux["ttrl_vote_only"]`` = 1); they vote but do not train, and the advantage hook
computes the group baseline over the trained rows only, as the official code does after dropping them.
Dynamic sampling, if on, filters on these rewards. The verifier's accuracy against the ground truth,
when there is one, is still reported (``critic/acc/mean``), and ``TtrlMonitor`` logs how often the
label is right.

Deviations: answers are compared in the light normal form of ``answer_clusters`` (the code uses its math
checker, which also equates forms such as 0.5 and 1/2); a response with no answer is not a vote (in
the code an empty extraction counts as one). The KL term to the reference (aime.sh: ``use_kl_loss``
with verl's 0.001 ``low_var_kl``) is our ``kl_coef``, set by the ``ttrl`` preset. It needs the stare
trainer: the verl and TRL plug-ins refuse it (group rewards, rollout and advantage hooks).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import Tensor

from ..advantages import group_advantages
from .answer_clusters import answer_key
from .contract import ClipParams, RolloutRequest, RolloutRow, StepData, Terms, clip_inert_knobs
from .ppo import ppo_terms
from .registry import Objective, register_objective

__all__ = ["ttrl_step_metrics", "TtrlParams", "majority_vote_rewards", "ttrl_advantages", "ttrl_rollout"]

VOTE_ONLY = "ttrl_vote_only"


@dataclass(frozen=True)
class TtrlParams(ClipParams):
    """Defaults from PRIME-RL/TTRL ``verl/examples/ttrl/aime.sh`` and its verl config.

    votes_per_prompt: V, responses that vote per prompt; None: rollout.n (the reward manager's default
        n_votes = n_samples). aime.sh: 64 votes, rollout.n = 32 trained.
    KL: aime.sh turns on verl's KL loss (``use_kl_loss``, coefficient 0.001, ``low_var_kl``); ``kl_coef``
        stays 0 here like every objective's, and the ``ttrl`` preset sets 0.001.
    Clip: verl's 0.2 / 0.2, dual clip 3.
    """

    votes_per_prompt: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.votes_per_prompt is not None and self.votes_per_prompt < 1:
            raise ValueError(f"votes_per_prompt must be >= 1 (or null), got {self.votes_per_prompt}")


def majority_vote_rewards(preds: Sequence[str | None], texts: Sequence[str] = (), params: Any = None) -> list[float]:
    """The group reward: 1 for responses whose answer is the group's most common one, else 0."""
    keys = [answer_key(a) for a in preds]
    votes = Counter(k for k in keys if k is not None)
    if not votes:
        return [0.0] * len(preds)
    label = votes.most_common(1)[0][0]  # ties: the answer seen first (Counter keeps insertion order)
    return [float(k is not None and k == label) for k in keys]


def ttrl_rollout(request: RolloutRequest, sampler: Any, p: TtrlParams, state: dict) -> list[RolloutRow]:
    """V responses per prompt; all but the first ``request.n`` of each prompt vote only."""
    n, v = request.n, max(request.n, p.votes_per_prompt or request.n)
    rows = sampler.episodes([e for e in request.examples for _ in range(v)],
                            [list(q) for q in request.prompt_ids for _ in range(v)],
                            max_new_tokens=request.max_new_tokens, temperature=request.temperature, top_p=request.top_p)
    for i, row in enumerate(rows):
        row.prompt_index = i // v
        if i % v >= n:
            row.loss_mask = [0] * len(row.response_ids)
            row.row_values = {**row.row_values, VOTE_ONLY: 1.0}
    return rows


def ttrl_advantages(data: StepData, p: TtrlParams, state) -> Tensor:
    """GRPO advantages over the trained rows of each group; vote-only rows get 0. Without vote-only rows,
    the trainer's default advantages."""
    vote_only = data.aux.get(VOTE_ONLY)
    if vote_only is None:
        return data.advantages
    data.require("ttrl", "rewards", "group_ids", "advantages")
    only = vote_only.amax(-1).cpu() > 0
    trained = (~only).nonzero().squeeze(1)
    out = torch.zeros_like(data.advantages)
    if trained.numel():
        adv = group_advantages(data.rewards[trained], data.group_ids[trained])
        out[trained.to(out.device)] = adv.to(out.device, out.dtype)
    return out


def ttrl_step_metrics(data: StepData, p: TtrlParams, state) -> dict[str, float]:
    """Logs the majority share and, where the verifier knows the truth, how good the pseudo-labels are:
    ``ttrl/label_accuracy`` (groups whose majority answer is correct), ``ttrl/reward_accuracy`` (rows
    whose reward equals their verifier accuracy)."""
    if data.rewards is None or data.acc is None or data.group_ids is None:
        return {}
    rewards, acc, groups = data.rewards.cpu(), data.acc.cpu(), data.group_ids.cpu()
    shares, right = [], []
    for g in groups.unique():
        members = groups == g
        winners = members & (rewards > 0)
        shares.append(float(winners.sum()) / float(members.sum()))
        right.append(float(bool(winners.any()) and float(acc[winners].min()) == 1.0))
    return {"ttrl/majority_ratio": sum(shares) / len(shares), "ttrl/label_accuracy": sum(right) / len(right),
            "ttrl/reward_accuracy": float((rewards == acc).float().mean())}


def ttrl_terms(batch, view, p: TtrlParams, state, plan) -> Terms:
    """TTRL: GRPO on majority-vote pseudo-rewards (no ground truth), with a KL term to the initial policy."""
    return ppo_terms(batch, view, p, state, plan)


TTRL = register_objective(Objective(
    "ttrl", params=TtrlParams, terms=ttrl_terms, group_rewards=majority_vote_rewards,
    rollout=ttrl_rollout, advantages=ttrl_advantages, step_metrics=ttrl_step_metrics,
    acts_at=("LOSS",), inert_on_policy=clip_inert_knobs,
))
