"""EMPO: Entropy Minimized Policy Optimization (arXiv 2504.05812). docs/methods.md §10.8.

Official code: QingyangZhang/EMPO, ``trl/src/open_r1/rewards.py`` (``get_empo_math_reward``),
``trl/src/open_r1/semantic_uncertainty.py`` (``get_semantic_ids_by_rule``), recipes
``trl/recipes/Qwen2.5/rl/config_EMPO_*.yaml``.

No ground truth: responses are rewarded by how much of the group shares their meaning, which pushes the
policy toward low *semantic* entropy. Per group of G responses:

    cluster the final answers by equivalence; a missing answer is a cluster of its own
    p(c) = |c| / G;   SE = -sum_c p(c) log p(c)
    reward_i = p(cluster of i)   if SE < log G (some answers agree) and i has an answer, else 0

then GRPO advantages (the recipes: TRL, on-policy, std + 1e-4, loss averaged per sequence, no KL).
SE < log G exactly when some cluster has two or more members; we test that count instead of comparing
floats. For math the code clusters with math_verify's ``verify``, which never equates two empty answers
(so each missing answer is its own cluster, as here); ours compares the light normal form of
``answer_clusters`` (so 0.5 and 1/2 are two clusters where math_verify makes one). Free-form tasks, which
the code clusters with an LLM judge, are not covered. ``EmpoMonitor`` logs the mean SE and the share of
groups whose answers all differ. It needs the stare trainer: the verl and TRL plug-ins refuse it
(group rewards).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .answer_clusters import cluster_entropy, cluster_ids, cluster_sizes
from .contract import ClipParams, StepData, Terms, clip_inert_knobs
from .ppo import ppo_terms
from .registry import Objective, register_objective

__all__ = ["empo_step_metrics", "EmpoParams", "semantic_cluster_rewards"]


@dataclass(frozen=True)
class EmpoParams(ClipParams):
    """Defaults from QingyangZhang/EMPO ``trl/recipes/Qwen2.5/rl/config_EMPO_NM_COT_20K_1.5B.yaml``:
    G = 7 generations, beta = 0 (no KL), and TRL's GRPO loss averaged per sequence
    (``loss_agg_mode=seq-mean-token-mean``; the ``empo`` preset also sets the std epsilon 1e-4).
    Clip: TRL's 0.2 both sides; on-policy, so it does not act."""

    loss_agg_mode: str = "seq-mean-token-mean"
    clip_ratio_c: float | None = None


def semantic_cluster_rewards(preds: Sequence[str | None], texts: Sequence[str] = (), params: Any = None) -> list[float]:
    """The group reward: the share of the group in the response's answer cluster (module docstring)."""
    ids = cluster_ids(preds)
    sizes = cluster_sizes(ids)
    g = len(ids)
    if not sizes or max(sizes) < 2:  # every answer differs (or none): SE = log G, no reward
        return [0.0] * g
    return [0.0 if i is None else sizes[i] / g for i in ids]


def empo_step_metrics(data: StepData, p: EmpoParams, state) -> dict[str, float]:
    """Logs the mean semantic entropy of the groups and the share whose answers all differ."""
    if not data.preds or data.group_ids is None:
        return {}
    groups: dict[int, list] = {}
    for g, pred in zip(data.group_ids.tolist(), data.preds):
        groups.setdefault(int(g), []).append(pred)
    entropies, distinct = [], []
    for preds in groups.values():
        ids = cluster_ids(preds)
        entropies.append(cluster_entropy(ids))
        distinct.append(float(max(cluster_sizes(ids), default=0) < 2))
    return {"empo/semantic_entropy_mean": sum(entropies) / len(entropies),
            "empo/all_distinct_group_frac": sum(distinct) / len(distinct)}


def empo_terms(batch, view, p: EmpoParams, state, plan) -> Terms:
    """EMPO: GRPO on semantic-cluster rewards (no ground truth): minimises the entropy of the answers' meaning."""
    return ppo_terms(batch, view, p, state, plan)


EMPO = register_objective(Objective(
    "empo", params=EmpoParams, terms=empo_terms, group_rewards=semantic_cluster_rewards, step_metrics=empo_step_metrics,
    acts_at=("LOSS",), inert_on_policy=clip_inert_knobs,
))
