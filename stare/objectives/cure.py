"""CURE: critical-token-guided re-concatenation (arXiv 2508.11016). docs/methods.md §9.7.

Official code: bytedance/CURE, ``recipe/CURE_First_Stage/dapo_ray_trainer.py``
(``get_critic_key_token_mask`` and the generation block of ``fit``), ``run_cure_stage_1.sh`` and
``run_cure_stage_2.sh``. Stage 1 changes only the rollout; the loss is DAPO's:

    1. sample n1 responses per prompt, recording the old policy's entropy at each of their tokens
    2. per response: walk its positions from the highest entropy down, skipping position 0, special
       tokens and tokens whose text (stripped) is shorter than ``min_token_chars``; keep the first
       ``critical_top_k`` that survive and pick one of them uniformly at random: idx (0 if none survives)
    3. the new context is prompt + response[:idx] (the critical token itself is re-sampled)
    4. sample n2 continuations of each new context
    5. the n1 responses and the n1 n2 continuations form one group (one prompt); a continuation trains
       on its own tokens only, its context (prompt + prefix) is not trained

Stage 2 (from ``stage_switch_step`` on) is plain DAPO: ``request.n`` samples per prompt. The switch is
``CureStage``, a controller that counts steps; the rollout of step k reads the stage decided after step
k - 1, so steps 0 .. switch - 1 branch.

n1 n (1 + n2) must equal ``rollout.n`` (the code asserts the same, with 4 + 4 x 3 = 16); leave
``first_samples`` unset and n1 = n / (1 + n2) keeps the rows per prompt of the configuration.

Entropies in step 1 come from the sampler itself, not from a second pass: the rollout samples at
temperature 1 and top-p 1 through a logits processor that records the entropy of softmax(z / T) (the
old pass's definition, at the rollout temperature) and then applies T and top-p, so the distribution
sampled from is the configured one.

Deviations. A continuation is scored on prefix + continuation by default (``score_prefix=True``: the
complete answer it forms); the code scores the continuation alone, which marks a branch taken inside
the final answer as unanswered (on the testbed, where answers are short, that is common);
``score_prefix=False`` reproduces it. The code's filter of one-character tokens (``min_token_chars=2``)
removes every token of a character-level tokenizer (the testbed's), so that every branch restarts from
the prompt; the testbed configuration sets 1 (an ``InertKnobWarning`` says when no token survives).
Entropy ties go to the earlier position (the code: ``argsort``'s order). The prompt buffer of the code
(1500 tokens, longer contexts cut at the end) does not exist here. Branching is defined for single-turn
responses: a task with tools is refused. It needs the stare trainer: the verl and TRL plug-ins refuse
it (rollout hook); its loss is ``ppo``'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from ..checks import check_choice
from ..inert import warn_inert
from ..metrics import mean_stat
from .contract import ClipParams, ControllerState, RolloutRequest, RolloutRow, StepData, Terms, clip_inert_knobs
from .ppo import ppo_terms
from .registry import Objective, register_objective

__all__ = ["CureParams", "CureStage", "EntropyRecorder", "critical_position", "cure_rollout", "cure_terms"]

MODES = ("entropy", "random")


@dataclass(frozen=True)
class CureParams(ClipParams):
    """Defaults from bytedance/CURE ``recipe/CURE_First_Stage/run_cure_stage_1.sh``.

    branches: n2, continuations per critical prefix (3). 0 makes stage 1 plain DAPO.
    first_samples: n1, first-stage responses per prompt (4 with rollout.n = 16); None: rollout.n / (1 + n2).
    critical_top_k: how many of the highest-entropy tokens the critical one is drawn from (20).
    critical_token: ``entropy`` (the method) or ``random`` (the code's ablation: a random order).
    min_token_chars: a candidate's text, stripped, must have at least this many characters (2: the
        code's "longer than one character"); the testbed configuration sets 1.
    stage_switch_step: first step of stage 2, plain sampling (300: stage 2 starts from the stage-1
        checkpoint at step 300); None stays in stage 1.
    score_prefix: score a continuation on prefix + continuation (True, ours) or alone (False, the code).
    Clip: DAPO's 0.2 / 0.28, dual clip 10 (the scripts).
    """

    clip_ratio_high: float = 0.28
    clip_ratio_c: float | None = 10.0
    branches: int = 3
    first_samples: int | None = None
    critical_top_k: int = 20
    critical_token: str = "entropy"
    min_token_chars: int = 2
    stage_switch_step: int | None = 300
    score_prefix: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("critical_token", self.critical_token, MODES)
        if self.branches < 0:
            raise ValueError(f"branches must be >= 0, got {self.branches}")
        if self.first_samples is not None and self.first_samples < 1:
            raise ValueError(f"first_samples must be >= 1 (or null), got {self.first_samples}")
        if self.critical_top_k < 1:
            raise ValueError(f"critical_top_k must be >= 1, got {self.critical_top_k}")
        if self.min_token_chars < 0:
            raise ValueError(f"min_token_chars must be >= 0, got {self.min_token_chars}")
        if self.stage_switch_step is not None and self.stage_switch_step < 0:
            raise ValueError(f"stage_switch_step must be >= 0 (or null), got {self.stage_switch_step}")


@dataclass
class CureStage(ControllerState):
    """Stage 1 (branching) before ``stage_switch_step``, stage 2 (plain sampling) from it on."""

    params: CureParams = field(default_factory=CureParams)
    next_step: int = 0  # the step whose rollout comes next

    def update(self, data: StepData) -> None:
        self.next_step = int(data.step) + 1

    def state(self) -> dict:
        switch = self.params.stage_switch_step
        return {"stage": 1 if switch is None or self.next_step < switch else 2}

    def metrics(self) -> dict[str, float]:
        return {"cure/stage": float(self.state()["stage"])}


# ---------------------------------------------------------------------------------------------------
# Step 1: the sampler's own entropies


class EntropyRecorder:
    """A logits processor for a sampler run at temperature 1 and top-p 1: records the entropy of
    softmax(z / T) at every generation step, then returns z / T after top-p.

    A backend generates its contexts in order, in batches; each batch calls the processor once per step
    with the rows' ids so far. A call whose ids extend the previous call's by one column continues the
    batch, any other starts the next one. ``entropies`` maps them back to the contexts and checks that
    each batch's first ids end with its contexts."""

    def __init__(self, temperature: float, top_p: float):
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.batches: list[tuple[Tensor, list[Tensor]]] = []  # (first ids [b, w], per-step entropies [b])
        self._last: Tensor | None = None

    def __call__(self, input_ids: Tensor, logits: Tensor) -> Tensor:
        last = self._last
        same = (last is not None and input_ids.shape[0] == last.shape[0] and input_ids.shape[1] == last.shape[1] + 1
                and torch.equal(input_ids[:, :-1], last))
        if not same:
            self.batches.append((input_ids.detach().cpu(), []))
        self._last = input_ids.detach().clone()
        z = logits.float() / self.temperature
        logp = torch.log_softmax(z, -1)
        p = logp.exp()
        self.batches[-1][1].append((-(p * torch.where(p > 0, logp, 0.0)).sum(-1)).cpu())
        if self.top_p >= 1.0:
            return z
        sorted_p, order = p.sort(-1, descending=True)
        drop = torch.zeros_like(z, dtype=torch.bool).scatter(-1, order, sorted_p.cumsum(-1) - sorted_p >= self.top_p)
        return z.masked_fill(drop, -math.inf)

    def entropies(self, contexts: Sequence[Sequence[int]], lengths: Sequence[int]) -> list[list[float]]:
        """The entropy at each generated token of each context (``lengths``: tokens kept per context)."""
        out: list[list[float]] = []
        for first, steps in self.batches:
            for r in range(first.shape[0]):
                i = len(out)
                if i >= len(contexts):
                    raise RuntimeError("cure: the sampler generated more rows than contexts")
                ctx = list(contexts[i])
                if first.shape[1] < len(ctx) or first[r, first.shape[1] - len(ctx):].tolist() != ctx:
                    raise RuntimeError("cure: the sampler's batches do not follow the order of the contexts; "
                                       "entropies cannot be attributed")
                n = min(lengths[i], len(steps))
                out.append([float(steps[j][r]) for j in range(n)])
        if len(out) != len(contexts):
            raise RuntimeError(f"cure: recorded {len(out)} rows for {len(contexts)} contexts")
        return out


# ---------------------------------------------------------------------------------------------------
# Step 2: the critical position


def critical_position(entropies: Sequence[float], token_ids: Sequence[int], *, special_ids: set[int],
                      decode: Callable[[list[int]], str], top_k: int = 20, min_chars: int = 2, mode: str = "entropy",
                      generator: torch.Generator | None = None) -> tuple[int, bool]:
    """(idx, found): the critical position of one response (module docstring, step 2); (0, False) when
    no token survives the filters. Randomness from ``generator`` (default: torch's global one)."""
    n = min(len(entropies), len(token_ids))
    if mode == "entropy":
        order = sorted(range(n), key=lambda j: (-entropies[j], j))  # ties: the earlier position
    else:
        order = torch.randperm(n, generator=generator).tolist()
    candidates = []
    for j in order:
        if len(candidates) >= top_k:
            break
        if j == 0 or int(token_ids[j]) in special_ids:
            continue
        if len(decode([int(token_ids[j])]).strip()) < min_chars:
            continue
        candidates.append(j)
    if not candidates:
        return 0, False
    return candidates[int(torch.randint(len(candidates), (1,), generator=generator))], True


# ---------------------------------------------------------------------------------------------------
# The rollout hook


def cure_rollout(request: RolloutRequest, sampler: Any, p: CureParams, state: dict) -> list[RolloutRow]:
    """Stage 1: n1 responses per prompt and n2 continuations from a critical prefix of each, one group
    per prompt. Stage 2: ``request.n`` plain responses per prompt."""
    if getattr(sampler, "tool_env", None) is not None:
        raise ValueError("cure: branching at a critical token is defined for single-turn responses; "
                         "this task has tools")
    n = request.n
    prompts = [list(q) for q in request.prompt_ids]
    if int(state.get("stage", 1)) == 2 or p.branches == 0:
        return _plain(request, sampler, prompts, n)
    n1 = p.first_samples if p.first_samples is not None else n // (1 + p.branches)
    if n1 < 1 or n1 * (1 + p.branches) != n:
        raise ValueError(f"cure samples n1 (1 + n2) responses per prompt: rollout.n={n} does not equal "
                         f"first_samples={n1} x (1 + branches={p.branches}); set rollout.n, "
                         "algorithm.params.branches or algorithm.params.first_samples")
    tok = sampler.tokenizer
    recorder = EntropyRecorder(request.temperature, request.top_p)
    contexts = [q for q in prompts for _ in range(n1)]
    first = sampler.generate(contexts, request.max_new_tokens, temperature=1.0, top_p=1.0, logits_processors=[recorder])
    entropies = recorder.entropies(contexts, [len(g.token_ids) for g in first])
    special = {int(x) for x in getattr(tok, "all_special_ids", [])}

    def decode(ids: list[int]) -> str:
        return tok.decode(ids, skip_special_tokens=False)

    rows, branch_contexts, cut = [], [], []
    for i, (g, ent) in enumerate(zip(first, entropies)):
        prompt_index = i // n1
        ids = list(g.token_ids)
        rows.append(RolloutRow(prompt_index, ids, g.text, g.finish_reason == "length",
                               log_probs=None if g.log_probs is None else list(g.log_probs)))
        idx, found = critical_position(ent, ids, special_ids=special, decode=decode, top_k=p.critical_top_k,
                                       min_chars=p.min_token_chars, mode=p.critical_token)
        cut.append((idx, found))
        branch_contexts += [prompts[prompt_index] + ids[:idx]] * p.branches
    if not any(found for _, found in cut):
        warn_inert("cure.min_token_chars", f"[cure] no first-stage token passed the filters (min_token_chars="
                   f"{p.min_token_chars}, special tokens, position 0): every branch restarts from the prompt, so "
                   "stage 1 is plain sampling with extra rows; a character-level tokenizer needs min_token_chars=1")
    second = sampler.generate(branch_contexts, request.max_new_tokens, temperature=request.temperature,
                              top_p=request.top_p)
    for j, g in enumerate(second):
        i = j // p.branches
        idx, found = cut[i]
        prefix = list(first[i].token_ids)[:idx]
        text = (tok.decode(prefix, skip_special_tokens=True) + g.text) if p.score_prefix else g.text
        rows.append(RolloutRow(i // n1, list(g.token_ids), text, g.finish_reason == "length",
                               context_ids=branch_contexts[j],
                               log_probs=None if g.log_probs is None else list(g.log_probs),
                               row_values={"cure_branch": 1.0, "cure_prefix_len": float(idx),
                                           "cure_no_candidate": float(not found)}))
    rows.sort(key=lambda r: r.prompt_index)  # stable: each prompt's first-stage rows, then its branches
    return rows


def _plain(request: RolloutRequest, sampler: Any, prompts: list[list[int]], n: int) -> list[RolloutRow]:
    rows = sampler.episodes([e for e in request.examples for _ in range(n)], [q for q in prompts for _ in range(n)],
                            max_new_tokens=request.max_new_tokens, temperature=request.temperature, top_p=request.top_p)
    for i, row in enumerate(rows):
        row.prompt_index = i // n
    return rows


def cure_terms(batch, view, p: CureParams, state, plan) -> Terms:
    """CURE: DAPO on groups widened by continuations re-sampled from high-entropy critical tokens."""
    terms = ppo_terms(batch, view, p, state, plan)
    branch = batch.aux.get("cure_branch")
    if branch is not None:
        v = batch.valid
        is_branch = branch > 0
        terms.stats["cure/branch_token_frac"] = mean_stat(is_branch, v)
        terms.stats["cure/prefix_len_mean"] = mean_stat(batch.aux["cure_prefix_len"], v & is_branch)
        terms.stats["cure/no_candidate_frac"] = mean_stat(batch.aux["cure_no_candidate"] > 0, v & is_branch)
    return terms


CURE = register_objective(Objective(
    "cure", params=CureParams, terms=cure_terms, controller=CureStage, rollout=cure_rollout,
    acts_at=("CTRL",), inert_on_policy=clip_inert_knobs,
))
