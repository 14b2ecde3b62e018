"""The contract every method is written against: what a loss call receives and returns, the parameters
every objective shares, the controller interface, and the step-level hooks with the data they see.

Pure data and protocols; the registry is ``registry.py``, the loss driver ``driver.py``; docs/core.md
explains each hook with a worked example. A method is one file in ``stare/objectives/`` holding its
parameter dataclass, its functions and (if it has one) its controller, registered as an ``Objective``.

Where a method acts, per training step (``ACTS_AT`` names each kind):

    rollout            ROLLOUT              rollout(request, sampler, params, state) -> [RolloutRow]
    group rewards      UNSUPERVISED-REWARD  group_rewards(preds, texts, params) -> rewards of one group
    old-policy pass    (input)              logit_stats(params) -> {name: fn(logits, ids)}  -> aux[name]
    reward shaping     REWARD-SHAPING       shape_rewards(data, params, state) -> rewards [B]
    controller         CTRL                 controller(params); .update(data); .state() -> dict
    advantages         ADV                  advantages(data, params, state) -> [B] or [B, T]
    update schedule    UPDATE-SCHEDULE      schedule(params) -> one state overlay per optimizer pass
    logging            (output)             step_metrics(data, params, state) -> {name: number}
    loss               LOSS, WEIGHT, MASK,  fit(view, params, state, group) -> plan
                       LOSS-TERM, AGG       terms(batch, view, params, state, plan) -> Terms

``shape_rewards`` and ``advantages`` may return ``(value, metrics)`` instead of the value alone, to log
numbers they computed on the way (``split_metrics``); ``step_metrics`` measures the step once its rewards
and advantages are final. Every hook is optional; a method that only changes the loss has ``terms`` (and
``fit``) alone. The
loss-side pieces are pure tensor functions, so they run unchanged inside verl and TRL; the step-level
hooks need the trainer (``stare.train``), and the plug-ins refuse methods that use them, by name.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from ..checks import check_choice
from ..metrics import Stat
from ..selection import SCOPES
from ..surrogate import AGG_MODES, KL_ESTIMATORS

__all__ = [
    "ACTS_AT",
    "ClipParams",
    "Controller",
    "ControllerState",
    "Generation",
    "LogitStat",
    "LossParams",
    "PolicyBatch",
    "PolicyLoss",
    "RolloutRequest",
    "RolloutRow",
    "Sampler",
    "SelectionView",
    "StepData",
    "Terms",
    "clip_inert_knobs",
    "load_controller",
    "save_controller",
    "split_metrics",
]

#: Where a method acts; ``Objective.acts_at`` draws from these (docs/methods.md §0 for the loss-side ones).
ACTS_AT: dict[str, str] = {
    "LOSS": "the per-token surrogate itself",
    "WEIGHT": "a per-token multiplier on the surrogate",
    "MASK": "tokens removed from the policy gradient",
    "LOSS-TERM": "a term added to the loss (per token or per call)",
    "AGG": "how per-token losses are reduced to one number",
    "ADV": "the advantages, per sequence or per token",
    "CTRL": "a controller that moves the method's strength across steps",
    "REWARD-SHAPING": "rewards, after the old-policy pass (may read policy statistics)",
    "UNSUPERVISED-REWARD": "rewards from the group's own answers, without ground truth",
    "ROLLOUT": "how responses are generated (branching, temperature, auxiliary rows)",
    "UPDATE-SCHEDULE": "how many optimizer passes a step makes and over which tokens",
}


# --------------------------------------------------------------------------------------------------
# One loss call


@dataclass(frozen=True)
class PolicyBatch:
    """Per-token inputs of one loss call. All tensors are [B, T] (``advantages`` may be [B]).

    Attributes:
        log_prob: log pi_theta(o_t | s_t) of the sampled tokens, from the forward with gradients.
        advantages: per-token (or per-sequence) advantages.
        mask: 1 on response tokens (EOS included), 0 on padding; bool or 0/1 float.
        old_log_prob: log-probs of the policy that produced/re-scored the rollout (no grad). ``None``
            means on-policy.
        entropy: current-policy entropy per token; keep its graph for an entropy bonus.
        old_entropy: old-policy entropy per token (from the no-grad old-log-prob pass).
        on_policy: ``True`` uses ``log_prob.detach()`` as the ratio's denominator (ratio == 1), as verl
            does with one mini-batch and one epoch, even when ``old_log_prob`` is given (it then only
            feeds global-scope selection). Default: on-policy iff ``old_log_prob`` is None.
        row_ids: [B] int64 index of each row in the mini-batch; makes ties split-invariant in global
            scope (default: 0..B-1).
        ref_log_prob: log-probs of the reference model (no grad), for the KL term (``kl_coef > 0``).
        aux: named extra per-token inputs, each [B, T] (or [B, T, k]): old-pass logit statistics,
            segment / turn ids, the sampler's log-probs, values a rollout hook attached to its rows, and
            differentiable training-forward statistics (``Objective.train_stats``). An objective
            declares the names it reads in ``needs``.
    """

    log_prob: Tensor
    advantages: Tensor
    mask: Tensor
    old_log_prob: Tensor | None = None
    entropy: Tensor | None = None
    old_entropy: Tensor | None = None
    on_policy: bool | None = None
    row_ids: Tensor | None = None
    ref_log_prob: Tensor | None = None
    aux: Mapping[str, Tensor] = field(default_factory=dict)

    @property
    def is_on_policy(self) -> bool:
        return self.old_log_prob is None if self.on_policy is None else self.on_policy

    @property
    def valid(self) -> Tensor:
        return self.mask.bool()

    @property
    def token_advantages(self) -> Tensor:
        a = self.advantages
        return a.unsqueeze(-1).expand_as(self.log_prob) if a.dim() == 1 else a

    @property
    def ratio_denominator(self) -> Tensor:
        """The log-prob the importance ratio divides by."""
        return self.log_prob.detach() if self.is_on_policy else self.old_log_prob


@dataclass(frozen=True)
class SelectionView:
    """Detached per-token numbers a token selection may read. In ``micro`` scope these are the current
    forward's (as in the official verl code); in ``global`` scope the old policy's, fixed for the whole
    mini-batch, so the selection does not depend on the micro-batch split."""

    log_prob: Tensor
    old_log_prob: Tensor
    entropy: Tensor | None
    old_entropy: Tensor | None
    advantages: Tensor
    valid: Tensor
    ids: Tensor
    aux: Mapping[str, Tensor] = field(default_factory=dict)

    @property
    def surprisal(self) -> Tensor:
        return -self.log_prob


@dataclass
class Terms:
    """What an objective's ``terms`` returns for one call."""

    pg_loss: Tensor  # [B, T] per-token policy-gradient loss, weights already applied
    weights: Tensor | None = None  # [B, T] per-token multiplier that was applied (None: all ones)
    extra: dict[str, Tensor] = field(default_factory=dict)  # per-token additive terms, aggregated like pg_loss
    scalar: dict[str, Tensor] = field(default_factory=dict)  # per-call terms added after aggregation (below)
    stats: dict[str, Stat] = field(default_factory=dict)


# ``Terms.scalar``: a term that is not a sum over tokens (e.g. a squared penalty on a batch entropy) is
# computed per call. With a mini-batch normaliser, the driver weights it by the call's share of the
# mini-batch tokens, so that the micro-batch terms add up to their token-weighted mean.


@dataclass
class PolicyLoss:
    """Result of ``policy_loss``."""

    loss: Tensor  # scalar to backpropagate (policy-gradient part + extra and scalar terms)
    pg_loss: Tensor  # scalar, aggregated policy-gradient part
    extra_losses: dict[str, Tensor]  # scalar, each aggregated extra or scalar term
    per_token_loss: Tensor  # [B, T] detached policy-gradient loss per token, before aggregation
    weights: Tensor  # [B, T] per-token weights (1 where the objective does not reweight)
    stats: dict[str, Stat]  # raw statistics; merge with StatAccumulator
    plan: Any  # the fitted selection statistics that were used


# --------------------------------------------------------------------------------------------------
# Parameters every objective has


@dataclass(frozen=True)
class LossParams:
    """Parameters every objective has.

    loss_agg_mode: one of ``surrogate.AGG_MODES``; token-mean is DAPO's token-level loss, the default
        of every recipe in docs/methods.md.
    loss_scale_factor: the constant C of ``seq-mean-token-sum-norm`` (Dr.GRPO: max response length).
    selection_scope: ``micro`` (official verl behaviour, the reproduction default) or ``global``.
    kl_coef: weight of a KL penalty to a reference model (the initial policy), added per token and
        aggregated like the policy-gradient loss; 0 (off) as in the STARE and DAPO recipes (verl
        ``use_kl_loss=False``). > 0 makes the trainer keep a frozen reference model.
    kl_estimator: ``low_var_kl`` (verl's default ``kl_loss_type``: k3 clamped to [-10, 10]), ``k1``,
        ``k2``, ``k3`` (TRL's, unclamped) or ``abs`` (``surrogate.kl_penalty``).
    """

    loss_agg_mode: str = "token-mean"
    loss_scale_factor: float | None = None
    selection_scope: str = "micro"
    kl_coef: float = 0.0
    kl_estimator: str = "low_var_kl"

    def __post_init__(self) -> None:
        check_choice("loss_agg_mode", self.loss_agg_mode, AGG_MODES)
        check_choice("selection_scope", self.selection_scope, SCOPES)
        check_choice("kl_estimator", self.kl_estimator, KL_ESTIMATORS)
        if self.loss_scale_factor is not None and not self.loss_scale_factor > 0:
            raise ValueError(f"loss_scale_factor must be > 0, got {self.loss_scale_factor}")
        if not self.kl_coef >= 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")


@dataclass(frozen=True)
class ClipParams(LossParams):
    """PPO clip bounds. Defaults are verl's (clip_ratio 0.2 both sides, clip_ratio_c 3.0).

    clip_ratio_c: dual-clip constant (> 1), or None for no dual clip. Per-token bounds are a matter for
    the objective: ``surrogate.clipped_surrogate`` accepts [B, T] tensors for both bounds.
    """

    clip_ratio_low: float = 0.2
    clip_ratio_high: float = 0.2
    clip_ratio_c: float | None = 3.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.clip_ratio_low <= 1:
            raise ValueError(f"clip_ratio_low must be in [0, 1], got {self.clip_ratio_low}")
        if not self.clip_ratio_high >= 0:
            raise ValueError(f"clip_ratio_high must be >= 0, got {self.clip_ratio_high}")
        if self.clip_ratio_c is not None and not self.clip_ratio_c > 1:
            raise ValueError(f"clip_ratio_c must be > 1 (or None to disable dual clip), got {self.clip_ratio_c}")


def clip_inert_knobs(p: ClipParams) -> list[tuple[str, str]]:
    """Knobs of ``ClipParams`` that cannot act on-policy (ratio == 1)."""
    out = [("clip_ratio", f"clip_ratio_low={p.clip_ratio_low} / clip_ratio_high={p.clip_ratio_high} have no "
            "effect on-policy: the importance ratio is identically 1, so the clip never triggers")]
    if p.clip_ratio_c is not None:
        out.append(("clip_ratio_c", f"clip_ratio_c={p.clip_ratio_c} (dual clip) has no effect on-policy"))
    return out


# --------------------------------------------------------------------------------------------------
# One training step, as the step-level hooks and the controllers see it


@dataclass(frozen=True)
class StepData:
    """The training batch of one step after the old-policy pass, detached. Rows are grouped by prompt.

    The trainer fills every field. The verl and TRL plug-ins fill ``batch_entropy`` and ``step`` (what
    their controllers need); a hook or controller that reads more calls ``require`` first, which names
    what is missing instead of failing on ``None``.

    Attributes:
        batch_entropy: token mean of the old policy's entropy over the loss tokens of the whole step
            (the quantity STARE's gate compares with its target).
        step: index of this training step, from 0.  seed: the run's seed.
        rewards / acc / group_ids: [B] reward (verifier, or group reward, plus shaping), verifier
            accuracy in {0, 1}, and the group (prompt) of each row.
        mask / old_log_prob / old_entropy: [B, T] loss tokens and the old policy's statistics.
        advantages: the default estimator's advantages (``algorithm.advantage``), [B].
        aux: [B, T] extras by name (old-pass logit statistics, ``segment_ids``, ``rollout_log_prob``,
            values attached by a rollout hook), as ``PolicyBatch.aux``.
        texts / preds: each row's response text and the answer the verifier extracted (None if none).
    """

    batch_entropy: float
    step: int = 0
    seed: int = 0
    rewards: Tensor | None = None
    acc: Tensor | None = None
    group_ids: Tensor | None = None
    mask: Tensor | None = None
    old_log_prob: Tensor | None = None
    old_entropy: Tensor | None = None
    advantages: Tensor | None = None
    aux: Mapping[str, Tensor] = field(default_factory=dict)
    texts: Sequence[str] = ()
    preds: Sequence[str | None] = ()

    def require(self, who: str, *names: str) -> None:
        """Raise a ValueError naming every field in ``names`` this engine did not fill."""
        missing = [n for n in names if n not in self.aux and _empty(getattr(self, n, None))]
        if missing:
            raise ValueError(f"{who} needs {', '.join(missing)} from the training step, which this engine does "
                             "not provide (the stare trainer provides every field of StepData)")


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (tuple, list)) and not value)


@runtime_checkable
class Controller(Protocol):
    """A cross-step controller, built from the method's parameters: ``controller_class(params)``.

    ``update`` runs once per training step, after the old-policy pass and any reward shaping, before
    the advantages and the update (same step, no lag); ``state()`` is what the method's functions read
    this step (a dict of numbers, booleans or small tensors); ``metrics()`` what gets logged;
    ``state_dict()`` / ``load_state_dict()`` round-trip through a checkpoint (values must load with
    ``torch.load(weights_only=True)``: numbers, strings, lists, dicts, tensors).
    """

    def update(self, data: StepData) -> None: ...

    def state(self) -> dict: ...

    def metrics(self) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


class ControllerState:
    """``state_dict`` / ``load_state_dict`` for a dataclass controller: every field except ``params``
    (the parameters come from the configuration, the rest is what a checkpoint must restore)."""

    def state_dict(self) -> dict:
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "params"}

    def load_state_dict(self, state: dict) -> None:
        valid = {f.name for f in fields(self) if f.name != "params"}
        unknown, missing = set(state) - valid, valid - set(state)
        if unknown or missing:
            raise ValueError(f"{type(self).__name__}.load_state_dict: unknown keys {sorted(unknown)}, "
                             f"missing keys {sorted(missing)}")
        for key, value in state.items():
            setattr(self, key, copy.deepcopy(value))


def check_entropy_target(target: float | None, ratio: float | None) -> None:
    """The parameters of a target-entropy controller: an absolute target or a ratio of the first batch's
    entropy, not both."""
    if target is not None and ratio is not None:
        raise ValueError("set target_entropy or target_entropy_ratio, not both (set the other to null)")
    if target is not None and not target >= 0:
        raise ValueError(f"target_entropy must be >= 0 nats, got {target}")
    if ratio is not None and not ratio > 0:
        raise ValueError(f"target_entropy_ratio must be > 0, got {ratio}")


def initial_target(target: float | None, ratio: float | None, default: float) -> float:
    """The target before the first update: the absolute one (or ``default``); NaN until the first batch
    when it is a ratio (``resolve_target`` then fixes it)."""
    return math.nan if ratio is not None else (default if target is None else target)


def resolve_target(current: float, ratio: float | None, batch_entropy: float) -> float:
    return ratio * batch_entropy if math.isnan(current) else current


def finite_entropy(controller: Any, data: StepData) -> float | None:
    """The step's batch entropy, or None when it is NaN or infinite: then ``controller.skipped_updates``
    counts it, a warning says so, and the controller leaves its state as it was."""
    h = float(data.batch_entropy)
    if math.isfinite(h):
        return h
    controller.skipped_updates += 1
    warnings.warn(f"{type(controller).__name__}: batch entropy is {h}; state left unchanged", RuntimeWarning)
    return None


def save_controller(path: str | os.PathLike, controller: Controller) -> Path:
    """Write a controller's ``state_dict`` to ``path`` (torch format, written to a temporary name and
    renamed, so an interrupted save leaves the previous file intact)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(controller.state_dict(), tmp)
    os.replace(tmp, path)
    return path


def load_controller(path: str | os.PathLike, controller: Controller) -> None:
    """Restore a controller saved by ``save_controller`` (``torch.load(weights_only=True)``)."""
    controller.load_state_dict(torch.load(Path(path), weights_only=True))


# --------------------------------------------------------------------------------------------------
# Rollout


@dataclass(frozen=True)
class Generation:
    """One sampled continuation of a context.

    finish_reason: ``eos``, ``stop`` (a stop string, included in the text) or ``length``.
    log_probs: the sampler's own log-probability of each token under the distribution it sampled from
        (after its temperature, top-p and logits processors); None when the backend does not give them.
    """

    token_ids: Sequence[int]
    text: str
    finish_reason: str
    log_probs: Sequence[float] | None = None


@dataclass
class RolloutRow:
    """One training row produced by a rollout: a response to one example of the request.

    prompt_index: which example of the request the row answers (its verifier and reference answer).
    response_ids: the tokens the row trains on, after ``context_ids``.
    text: what the verifier scores: the whole response, including any prefix that ``context_ids``
        holds beyond the prompt (a branch from a prefix is judged as the full answer it completes).
    context_ids: prompt plus any prefix the response continues; None means the example's prompt.
    loss_mask: 1 on tokens that train, 0 on tokens that do not (tool output); None: all 1.
    log_probs: the sampler's log-probs of ``response_ids`` (becomes ``aux["rollout_log_prob"]``).
    token_values: per-token numbers by name (e.g. ``segment_ids``), each as long as ``response_ids``;
        each becomes ``aux[name]``.
    row_values: per-row numbers by name (e.g. ``auxiliary`` = 1 for rows of an auxiliary batch), each
        broadcast over the row's tokens into ``aux[name]``.
    group: the group for advantages and dynamic sampling (None: ``prompt_index``); rows branched from
        one prefix can form their own group.
    """

    prompt_index: int
    response_ids: list[int]
    text: str
    truncated: bool = False
    context_ids: list[int] | None = None
    loss_mask: list[int] | None = None
    log_probs: list[float] | None = None
    token_values: dict[str, list[float]] = field(default_factory=dict)
    row_values: dict[str, float] = field(default_factory=dict)
    group: int | None = None
    tool_calls: int = 0


@dataclass(frozen=True)
class RolloutRequest:
    """What the trainer asks a rollout for: ``n`` responses to each of ``examples`` (opaque task
    objects, passed back to the sampler for multi-turn episodes), whose prompts are ``prompt_ids``."""

    examples: Sequence[Any]
    prompt_ids: Sequence[Sequence[int]]
    n: int
    max_new_tokens: int
    temperature: float
    top_p: float


#: A logits processor: ``(input_ids [b, t], logits [b, V]) -> logits [b, V]``, called at every
#: generation step after the sampler's temperature and top-p (Hugging Face's ``LogitsProcessor`` has
#: this signature). Per-token temperature is a processor that divides each row by its own temperature.
LogitsProcessor = Callable[[Tensor, Tensor], Tensor]


@runtime_checkable
class Sampler(Protocol):
    """What a rollout hook samples with (the trainer's backend, bound to the task's tools).

    ``generate`` continues token contexts (one turn). ``episodes`` runs one whole episode per context,
    multi-turn with the task's tool environment when it has one (tool output masked), single-turn
    otherwise; row ``i`` answers ``examples[i]`` (its ``prompt_index`` is ``i``). Both return the
    sampler's log-probs. ``tokenizer`` encodes and decodes text for hooks that edit contexts.
    """

    tokenizer: Any

    def generate(self, contexts: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int], *, temperature: float,
                 top_p: float, stop_strings: Sequence[str] = (),
                 logits_processors: Sequence[LogitsProcessor] = ()) -> list[Generation]: ...

    def episodes(self, examples: Sequence[Any], contexts: Sequence[Sequence[int]], *, max_new_tokens: int,
                 temperature: float, top_p: float,
                 logits_processors: Sequence[LogitsProcessor] = ()) -> list[RolloutRow]: ...


#: A statistic of the full next-token logits at each response position, computed chunk by chunk in
#: the old-policy pass (no gradient) or in the training forward (``Objective.train_stats``, with
#: gradient): ``(logits [n, V] at the rollout temperature, float32, sampled ids [n]) -> [n] or [n, k]``.
LogitStat = Callable[[Tensor, Tensor], Tensor]


def split_metrics(result: Any) -> tuple[Any, dict[str, float]]:
    """A step hook's result as (value, metrics): hooks return the value, or ``(value, {name: number})``."""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], Mapping):
        return result[0], {str(k): float(v) for k, v in result[1].items()}
    return result, {}


def detach_aux(aux: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in aux.items()}
