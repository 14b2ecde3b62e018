"""AEPO (agentic): Agentic Entropy-Balanced Policy Optimization (Dong et al., arXiv 2510.14545).

Not the Arbitrary-Entropy AEPO of arXiv 2510.08141 (docs/methods.md §9.3). docs/methods.md §9.11.
No official AEPO code was available to us (the paper points to RUC-NLPIR/ARPO, whose snapshots we could
read predate AEPO). The rollout builds on ARPO's entropy-based branching (RUC-NLPIR/ARPO,
``vllm_rollout_with_tools.py``, read in code); AEPO's own formulas come from second-hand descriptions of
the paper, and none of their defaults were found. Our choices are marked "ours" in the parameters.

Two objectives share one parameter class:

* ``aepo_agentic_loss`` (loss-side, runs in verl and TRL): entropy-aware advantages inside a clipped
  surrogate that keeps the gradient of clipped tokens,

      z_t  = (H_t - mean H) / std H            over the valid tokens of the selection scope (unbiased std;
                                               std 0 or one token: std = 1)
      A~_t = A max(0, 1 + a z_t)               (ours: the floor at 0 keeps A's sign)
      loss = PPO's clipped value; on clipped tokens the gradient is -A~ (1 + eps_high) beta_high grad log pi
             (A~ > 0, r > 1 + eps_high) or -A~ (1 - eps_low) beta_low grad log pi (A~ < 0, r < 1 - eps_low)
             (``surrogate.gradient_preserving_surrogate``; the paper's stop-gradient bound is beta_high = 1,
             beta_low = 0)

  H is the current policy's entropy (micro scope) or the old one over the mini-batch (global scope).
* ``aepo_agentic`` (trainer only): the same loss plus the entropy-balanced rollout for tool-use
  episodes (``aepo_rollout``), budget ``n`` rows per prompt:

      1. probe: ``probe_roots`` episodes per prompt; the entropy of a turn is the mean entropy of the
         sampling distribution over its first ``entropy_window`` generated tokens (a logits processor
         records it); H_root = mean over the probes' first turns, H_tool = mean over their later turns
         (each starts right after a tool output)
      2. pre-monitoring: m = clamp(round(n sigmoid(beta (H_root - H_tool))), probe_roots, n) root episodes
         in all; no tool turn at all: m = n (nothing to branch from)
      3. branching, budget n - m: walking each path's tool turns in order,
             dH = H_turn - H_root(path),  P = (alpha + gamma dH) max(0, 1 - lambda l)
         where l counts the consecutive tool turns just branched on this path; P > tau branches
         ``branch_width`` new episodes from the context that ends with that tool output (the rest of the
         answer is re-sampled; the prefix is context, not trained). Branches are walked in turn.
      4. budget still left (no turn passed tau): fresh root episodes.

  All rows of a prompt form its group. Branch rows carry ``aux["aepo_branch"] = 1`` (logged as
  ``aepo/branch_token_frac``); their ``segment_ids`` count turns from the start of the full trajectory.
  On a task without tools there are no tool turns and the rollout is plain sampling (a warning says so);
  the loss still acts.

Deviations from ARPO's rollout: the turn entropy is a mean over the window (ARPO sums truncated top-10
entropies over it and normalises by log |V|), of the full sampling distribution; branching is a
threshold on P (AEPO's rule) instead of ARPO's uniform draw. Paper vs second-hand code: one third-party
verl re-implementation standardises entropy per micro-batch (as our micro scope does), fixes a = 0.2 and
keeps the gradient only on low-entropy clipped tokens; that looks inverted against the paper's
description, and we follow the paper (every clipped positive token).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

import torch

from ..inert import warn_inert
from ..metrics import mean_stat
from ..selection import masked_count, masked_sum
from ..surrogate import gradient_preserving_surrogate, surrogate_stats
from .contract import ClipParams, RolloutRow, Terms, clip_inert_knobs
from .registry import Objective, register_objective

__all__ = ["AepoLossParams", "AepoParams", "EntropyProbe", "aepo_rollout", "aepo_terms", "entropy_factor"]

BRANCH = "aepo_branch"


@dataclass(frozen=True)
class AepoLossParams(ClipParams):
    """The loss (no official default was found for any of these; "ours" marks our choice).

    entropy_adv_coef: a in A (1 + a z) (0.2, the value of a third-party re-implementation; the paper's
        value was not found).
    grad_coef_high / grad_coef_low: beta of the gradient kept on clipped tokens above / below the trust
        region (1 / 0: the paper's stop-gradient bound on the upper side, as in CE-GPPO with its upper
        coefficient 1; PPO is 0 / 0).
    Clip: 0.2 / 0.28 with dual clip 10 (ours: the DAPO / GRPO-ds base of this library's study; AEPO's
        were not found).
    """

    clip_ratio_high: float = 0.28
    clip_ratio_c: float | None = 10.0
    entropy_adv_coef: float = 0.2
    grad_coef_high: float = 1.0
    grad_coef_low: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("entropy_adv_coef", "grad_coef_high", "grad_coef_low"):
            if not getattr(self, key) >= 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")


@dataclass(frozen=True)
class AepoParams(AepoLossParams):
    """The loss's parameters plus the rollout's (module docstring, steps 1-4).

    entropy_window: tokens per turn whose entropy is averaged (20, ARPO's code).
    probe_roots: episodes per prompt sampled before pre-monitoring (2, ours; capped at n).
    monitor_beta: beta of the pre-monitoring sigmoid (1.0, ours: equal entropies give n / 2 roots, ARPO's
        14B script's 6 initial rollouts of 12).
    branch_base: alpha (0.5, ARPO's ``branch_probability``).
    branch_entropy_slope: gamma (0.2, ARPO's scripts' ``entropy_weight``).
    consecutive_penalty: lambda, per consecutive branched turn (0.2, ours).
    branch_threshold: tau (0.5, ours: with alpha = 0.5 a first branch needs a turn more uncertain than
        the path's first).
    branch_width: Z, new episodes per branch point (1, ours: ARPO's scripts' beam size 2 adds one).
    """

    entropy_window: int = 20
    probe_roots: int = 2
    monitor_beta: float = 1.0
    branch_base: float = 0.5
    branch_entropy_slope: float = 0.2
    consecutive_penalty: float = 0.2
    branch_threshold: float = 0.5
    branch_width: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        for key in ("entropy_window", "probe_roots", "branch_width"):
            if not (isinstance(getattr(self, key), int) and getattr(self, key) >= 1):
                raise ValueError(f"{key} must be an integer >= 1, got {getattr(self, key)}")
        if not self.consecutive_penalty >= 0:
            raise ValueError(f"consecutive_penalty must be >= 0, got {self.consecutive_penalty}")


# ----------------------------------------------------------------------------------------------- loss


def aepo_fit(view, p: AepoLossParams, state, group):
    """Mean and unbiased std of the entropy over the valid tokens of the scope (std 1 if undefined)."""
    n = masked_count(view.valid, group).to(torch.float64)
    h = view.entropy.to(torch.float64)
    total, square = masked_sum(h, view.valid, group), masked_sum(h * h, view.valid, group)
    mean = total / n.clamp(min=1)
    var = (square - n * mean * mean) / (n - 1).clamp(min=1)
    std = var.clamp(min=0).sqrt()
    return {"mean": mean, "std": torch.where((n > 1) & (std > 0), std, torch.ones_like(std))}


def entropy_factor(entropy: torch.Tensor, plan, coef: float) -> torch.Tensor:
    """max(0, 1 + a z) with z the entropy standardised by the plan."""
    z = (entropy.to(torch.float64) - plan["mean"]) / plan["std"]
    return (1.0 + coef * z).clamp(min=0.0).to(entropy.dtype)


def aepo_terms(batch, view, p: AepoLossParams, state, plan) -> Terms:
    """AEPO: entropy-scaled advantages in a clipped surrogate that keeps clipped tokens' gradients."""
    factor = entropy_factor(view.entropy, plan, p.entropy_adv_coef)
    s = gradient_preserving_surrogate(batch.log_prob, batch.ratio_denominator, batch.token_advantages * factor,
                                      p.clip_ratio_low, p.clip_ratio_high, p.clip_ratio_c, p.grad_coef_low,
                                      p.grad_coef_high)
    stats = surrogate_stats(s, batch.valid)
    stats["aepo/entropy_factor_mean"] = mean_stat(factor, view.valid)
    if BRANCH in batch.aux:
        stats["aepo/branch_token_frac"] = mean_stat(batch.aux[BRANCH] > 0, view.valid)
    return Terms(pg_loss=s.loss, weights=factor, stats=stats)


def _inert(p: AepoLossParams) -> list[tuple[str, str]]:
    out = clip_inert_knobs(p)
    out.append(("grad_coef", f"grad_coef_high={p.grad_coef_high} / grad_coef_low={p.grad_coef_low} have no effect "
                "on-policy: no token is clipped when the ratio is 1"))
    return out


# ------------------------------------------------------------------------------------------- rollout


class EntropyProbe:
    """A logits processor that records the entropy of the sampling distribution over the first ``window``
    generated tokens of every context it sees, retrievable by context (``take``).

    It relies only on the processor contract (called at every generation step with the sequences so far
    and the final scores): a call continues the previous one when the batch is the same rows one token
    longer; otherwise it starts a new batch, whose rows (leading ``pad_id`` stripped) are the contexts.
    Identical contexts are served in the order they were generated (first in, first out).
    """

    def __init__(self, window: int, pad_id: int | None):
        self.window, self.pad_id = window, pad_id
        self.prev: torch.Tensor | None = None
        self.rows: list[list[float]] = []
        self.steps = 0
        self.by_context: dict[tuple, deque] = defaultdict(deque)

    def key(self, ids) -> tuple:
        ids = list(ids)
        i = 0
        while self.pad_id is not None and i < len(ids) and ids[i] == self.pad_id:
            i += 1
        return tuple(ids[i:])

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        prev = self.prev
        same = (prev is not None and prev.shape[0] == input_ids.shape[0] and prev.shape[1] + 1 == input_ids.shape[1]
                and torch.equal(prev, input_ids[:, :-1]))
        if not same:
            self.rows, self.steps = [[] for _ in range(input_ids.shape[0])], 0
            for r, ids in enumerate(input_ids.tolist()):
                self.by_context[self.key(ids)].append(self.rows[r])
        self.prev = input_ids
        if self.steps < self.window:
            h = torch.special.entr(torch.softmax(scores.float(), -1)).sum(-1).tolist()
            for r, value in enumerate(h):
                self.rows[r].append(value)
        self.steps += 1
        return scores

    def take(self, context, generated: int) -> float:
        """Mean entropy over the first min(window, generated) tokens sampled after ``context`` (NaN if unseen)."""
        queue = self.by_context.get(self.key(context))
        n = min(self.window, generated)
        if not queue or n <= 0:
            return math.nan
        values = queue.popleft()[:n]
        return sum(values) / len(values) if values else math.nan


def _turn_starts(row: RolloutRow) -> list[int]:
    """Start of each model turn in the row's response: 0, then the first model token after each tool output.
    Read from the tool loop's ``segment_ids`` (turn k starts at the first model token of segment k, so a
    tool output of no tokens still ends a turn), else from the loss mask's 0 -> 1 transitions."""
    mask = row.loss_mask or [1] * len(row.response_ids)
    segments = row.token_values.get("segment_ids")
    starts = [0]
    if segments is not None:
        seen = {int(segments[0])} if segments else set()
        for i, (seg, m) in enumerate(zip(segments, mask)):
            if m == 1 and int(seg) not in seen:
                seen.add(int(seg))
                starts.append(i)
        return starts
    for i in range(1, len(mask)):
        if mask[i] == 1 and mask[i - 1] == 0:
            starts.append(i)
    return starts


@dataclasses.dataclass
class _Path:
    row: RolloutRow
    prompt: int
    context: list[int]  # what the episode continued: prompt (+ a parent's prefix)
    prefix_text: str
    turn_offset: int  # turns of the full trajectory before this episode's first
    consecutive: int  # l at this episode's first tool turn
    h_root: float = math.nan
    turns: list[tuple[int, float]] = dataclasses.field(default_factory=list)  # (start, entropy) per turn


def _measure(path: _Path, probe: EntropyProbe) -> None:
    starts = _turn_starts(path.row)
    mask = path.row.loss_mask or [1] * len(path.row.response_ids)
    for s in starts:
        generated = 0
        while s + generated < len(mask) and mask[s + generated] == 1:
            generated += 1
        ctx = path.context + list(path.row.response_ids[:s])
        path.turns.append((s, probe.take(ctx, generated) if generated else math.nan))


def _nanmean(values) -> float:
    v = [x for x in values if not math.isnan(x)]
    return sum(v) / len(v) if v else math.nan


def aepo_rollout(request, sampler, p: AepoParams, state: Any = None) -> list[RolloutRow]:
    """AEPO's entropy-balanced rollout: probe, pre-monitoring, entropy-triggered branching at tool turns."""
    n, prompts = request.n, list(range(len(request.prompt_ids)))
    probe = EntropyProbe(p.entropy_window, getattr(sampler.tokenizer, "pad_token_id", None))
    tok = sampler.tokenizer

    def run(owners: list[int], contexts: list[list[int]]) -> list[Any]:
        if not owners:
            return []
        return sampler.episodes([request.examples[i] for i in owners], contexts, max_new_tokens=request.max_new_tokens,
                                temperature=request.temperature, top_p=request.top_p, logits_processors=[probe])

    def roots(counts: dict[int, int]) -> list[_Path]:
        owners = [i for i in prompts for _ in range(counts.get(i, 0))]
        ctx = [list(request.prompt_ids[i]) for i in owners]
        paths = [_Path(r, i, c, "", 0, 0) for r, i, c in zip(run(owners, ctx), owners, ctx)]
        for path in paths:
            _measure(path, probe)
            path.h_root = path.turns[0][1]
        return paths

    # 1-2. probe roots, then pre-monitoring decides how many roots in all
    r0 = min(n, p.probe_roots)
    paths = roots({i: r0 for i in prompts})
    budget, extra = {}, {}
    for i in prompts:
        mine = [q for q in paths if q.prompt == i]
        h_root = _nanmean(q.h_root for q in mine)
        h_tool = _nanmean(h for q in mine for _, h in q.turns[1:])
        m = n if math.isnan(h_tool) or math.isnan(h_root) else \
            min(n, max(r0, round(n / (1.0 + math.exp(-p.monitor_beta * (h_root - h_tool))))))
        extra[i], budget[i] = m - r0, n - m
    paths += roots(extra)
    if not any(len(q.turns) > 1 for q in paths):
        warn_inert("aepo_agentic.rollout", "[aepo_agentic] no tool call in this rollout: nothing to branch from, "
                   "the rollout is plain sampling and only the loss acts (a task with tools makes the rollout act)")

    # 3. branching at tool turns, walking paths in the order they were made
    frontier = list(paths)
    while frontier and any(budget.values()):
        owners, contexts, meta = [], [], []
        for path in frontier:
            consecutive = path.consecutive
            for j, (start, h) in enumerate(path.turns):
                if j == 0:
                    continue
                chance = (p.branch_base + p.branch_entropy_slope * (h - path.h_root)) * \
                    max(0.0, 1.0 - p.consecutive_penalty * consecutive)
                if math.isnan(h) or not chance > p.branch_threshold or budget[path.prompt] <= 0:
                    consecutive = 0
                    continue
                consecutive += 1
                z = min(p.branch_width, budget[path.prompt])
                budget[path.prompt] -= z
                prefix = list(path.row.response_ids[:start])
                for _ in range(z):
                    owners.append(path.prompt)
                    contexts.append(path.context + prefix)
                    meta.append((path, prefix, path.turn_offset + j, consecutive))
        children = []
        for row, ctx, (parent, prefix, offset, consecutive) in zip(run(owners, contexts), contexts, meta):
            text = parent.prefix_text + tok.decode(prefix, skip_special_tokens=True)
            child = _Path(row, parent.prompt, ctx, text, offset, consecutive, parent.h_root)
            _measure(child, probe)
            children.append(child)
        paths += children
        frontier = children

    # 4. budget left: fresh roots
    paths += roots(budget)

    out = []
    for path in paths:
        row = path.row
        values = dict(row.token_values)
        if "segment_ids" in values:
            values["segment_ids"] = [s + path.turn_offset for s in values["segment_ids"]]
        branched = path.context is not None and len(path.context) > len(request.prompt_ids[path.prompt])
        out.append(dataclasses.replace(
            row, prompt_index=path.prompt, text=path.prefix_text + row.text, token_values=values,
            context_ids=path.context if branched else None,
            row_values={**row.row_values, BRANCH: float(branched)}))
    return out


AEPO_LOSS = register_objective(Objective(
    "aepo_agentic_loss", params=AepoLossParams, terms=aepo_terms, fit=aepo_fit, needs=("entropy",),
    acts_at=("LOSS", "WEIGHT"), inert_on_policy=_inert,
))

AEPO = register_objective(Objective(
    "aepo_agentic", params=AepoParams, terms=aepo_terms, fit=aepo_fit, needs=("entropy",), rollout=aepo_rollout,
    acts_at=("LOSS", "WEIGHT"), inert_on_policy=_inert,
))
