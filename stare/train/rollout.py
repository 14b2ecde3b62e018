"""Rollout: sampling responses with a KV cache, temperature, top-p, stop strings and logits processors;
single- and multi-turn; the sampler's own log-probs.

A *backend* turns token contexts into ``Generation`` objects (token ids, text, finish reason "eos" /
"stop" / "length", and the sampler's log-prob of each token); ``HFBackend`` wraps Hugging Face
``generate`` (KV cache on). ``TrainerSampler`` binds a backend to the task's tool environment and is
what rollout hooks receive (``stare.objectives.contract.Sampler``): ``generate`` for one turn,
``episodes`` for whole episodes (the agent loop of ``stare.env.tasks.tool_use.run_tool_episodes`` when
the task has tools; tool output tokens get loss mask 0). ``default_rollout`` is the rollout of every
method without a rollout hook: ``n`` episodes per prompt.

Randomness comes from torch's global generator, which the trainer seeds and checkpoints, so a resumed
run samples exactly what an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from ..env.tasks.tool_use import run_tool_episodes
from ..objectives.contract import Generation, RolloutRequest, RolloutRow

__all__ = ["HFBackend", "TrainerSampler", "default_rollout", "make_backend"]


class _StopOnStrings(StoppingCriteria):
    """Stopping criterion: a row is done once its generated text contains one of the stop strings.

    Our own instead of ``generate(stop_strings=...)``, whose vocabulary preprocessing assumes the tokenizer
    can encode arbitrary letters (the testbed's character tokenizer cannot). Each step decodes only the
    last few generated tokens of each row.
    """

    def __init__(self, tokenizer, stop_strings: Sequence[str], prompt_width: int):
        self.tokenizer, self.stops, self.width = tokenizer, tuple(stop_strings), prompt_width
        self.tail = max(len(s) for s in self.stops) + 2  # tokens are at least one character

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        gen = input_ids[:, self.width:]
        tails = self.tokenizer.batch_decode(gen[:, -self.tail:].tolist(), skip_special_tokens=False)
        return torch.tensor([any(s in t for s in self.stops) for t in tails], device=input_ids.device)


class _Callable(LogitsProcessor):
    """A plain ``(input_ids, scores) -> scores`` function as a Hugging Face logits processor."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, input_ids, scores):
        return self.fn(input_ids, scores)


class _RecordLogProbs(LogitsProcessor):
    """Last in the processor chain: keeps log_softmax of the final scores of each step, and on the next
    step (whose ``input_ids`` end with the token just sampled) the log-prob of that token. Scores are
    not modified, so sampling is unchanged; one [b, V] log-softmax is kept at a time."""

    def __init__(self):
        self.prev: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def _take(self, last: torch.Tensor) -> None:
        if self.prev is not None:
            self.steps.append(self.prev.gather(1, last.unsqueeze(1)).squeeze(1).float().cpu())

    def __call__(self, input_ids, scores):
        self._take(input_ids[:, -1])
        self.prev = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """[b, steps] log-probs of the generated tokens, given the final sequences."""
        self._take(sequences[:, -1])
        self.prev = None
        return torch.stack(self.steps, 1) if self.steps else torch.zeros(sequences.shape[0], 0)


class HFBackend:
    """Generation with ``model.generate`` (KV cache), left-padded batches of at most ``batch_size`` rows."""

    def __init__(self, model, tokenizer, batch_size: int | None = None, use_cache: bool = True):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.use_cache = use_cache
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos

    def sync_weights(self, model) -> None:
        """Nothing to do: ``generate`` runs the trained model itself (a separate engine copies weights here)."""

    def _finish(self, seq: list[int], log_probs: list[float], stop_strings: Sequence[str]) -> Generation:
        eos_at = seq.index(self.eos) if self.eos in seq else None
        head = seq if eos_at is None else seq[:eos_at]
        if stop_strings:
            text = self.tokenizer.decode(head, skip_special_tokens=False)
            if any(s in text for s in stop_strings):
                # shortest prefix whose text contains a stop string (binary search over token counts)
                lo, hi = 1, len(head)
                while lo < hi:
                    mid = (lo + hi) // 2
                    if any(s in self.tokenizer.decode(head[:mid], skip_special_tokens=False) for s in stop_strings):
                        hi = mid
                    else:
                        lo = mid + 1
                ids = head[:lo]
                return Generation(ids, self.tokenizer.decode(ids, skip_special_tokens=True), "stop", log_probs[:lo])
        if eos_at is not None:
            ids = seq[: eos_at + 1]
            return Generation(ids, self.tokenizer.decode(ids, skip_special_tokens=True), "eos", log_probs[: eos_at + 1])
        return Generation(seq, self.tokenizer.decode(seq, skip_special_tokens=True), "length", log_probs[: len(seq)])

    @torch.no_grad()
    def generate(self, contexts: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int], *, temperature: float,
                 top_p: float, stop_strings: Sequence[str] = (), logits_processors: Sequence = ()) -> list[Generation]:
        """One ``Generation`` per context; ``logits_processors`` run after temperature and top-p, and the
        returned log-probs are those of the distribution sampled from (after them)."""
        budgets = [max_new_tokens] * len(contexts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out: list[Generation] = []
        step = self.batch_size or max(1, len(contexts))
        for s in range(0, len(contexts), step):
            rows = contexts[s: s + step]
            width = max(len(c) for c in rows)
            ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
            attn = torch.zeros_like(ids)
            for r, c in enumerate(rows):
                ids[r, width - len(c):] = torch.tensor(list(c), dtype=torch.long)
                attn[r, width - len(c):] = 1
            kwargs = {}
            if stop_strings:
                kwargs["stopping_criteria"] = StoppingCriteriaList([_StopOnStrings(self.tokenizer, stop_strings, width)])
            recorder = _RecordLogProbs()
            processors = LogitsProcessorList([*(_Callable(f) for f in logits_processors), recorder])
            seqs = self.model.generate(
                input_ids=ids.to(device), attention_mask=attn.to(device), do_sample=True, temperature=temperature,
                top_p=top_p, top_k=0, max_new_tokens=max(budgets[s: s + step]), use_cache=self.use_cache,
                eos_token_id=self.eos, pad_token_id=self.pad, logits_processor=processors, **kwargs,
            )
            log_probs = recorder.finish(seqs).tolist()
            for r, seq in enumerate(seqs[:, width:].tolist()):
                g = self._finish(seq, log_probs[r], stop_strings)
                budget = budgets[s + r]
                if len(g.token_ids) > budget:  # a longer row of the batch set max_new_tokens
                    ids_ = list(g.token_ids)[:budget]
                    g = Generation(ids_, self.tokenizer.decode(ids_, skip_special_tokens=True), "length",
                                   list(g.log_probs)[:budget])
                out.append(g)
        self.model.train(was_training)
        return out


def make_backend(cfg, model, tokenizer):
    """The rollout backend the config asks for (``rollout.backend``), holding the model's current weights."""
    r = cfg.rollout
    if r.backend == "hf":
        return HFBackend(model, tokenizer, batch_size=r.batch_size)
    try:
        from .vllm_backend import VLLMBackend
    except ImportError as e:  # vllm itself is imported when the engine is built
        raise ImportError(f"rollout.backend=vllm: {e}") from None
    try:
        return VLLMBackend(model, tokenizer, seed=cfg.seed, gpu_memory_utilization=r.vllm_gpu_memory_utilization,
                           kv_cache_memory_bytes=None if r.vllm_kv_cache_gib is None else int(r.vllm_kv_cache_gib * 2**30))
    except ModuleNotFoundError as e:
        raise ImportError(f"rollout.backend=vllm needs vLLM ({e}): `pip install vllm` on a GPU machine, or "
                          "`bash ci/vllm.sh` for the CPU build") from None


class TrainerSampler:
    """The trainer's ``Sampler``: a backend bound to the task's tool environment (None: single-turn)."""

    def __init__(self, backend, tool_env=None):
        self.backend, self.tool_env = backend, tool_env
        self.tokenizer = backend.tokenizer

    def generate(self, contexts, max_new_tokens, *, temperature, top_p, stop_strings=(), logits_processors=()):
        return self.backend.generate(contexts, max_new_tokens, temperature=temperature, top_p=top_p,
                                     stop_strings=stop_strings, logits_processors=logits_processors)

    def episodes(self, examples: Sequence[Any], contexts: Sequence[Sequence[int]], *, max_new_tokens: int,
                 temperature: float, top_p: float, logits_processors: Sequence = ()) -> list[RolloutRow]:
        """One episode per context: multi-turn with the tool environment, else one generation."""
        if len(examples) != len(contexts):
            raise ValueError(f"{len(examples)} examples but {len(contexts)} contexts")
        if self.tool_env is None:
            gens = self.generate(contexts, max_new_tokens, temperature=temperature, top_p=top_p,
                                 logits_processors=logits_processors)
            return [RolloutRow(i, list(g.token_ids), g.text, g.finish_reason == "length",
                               log_probs=None if g.log_probs is None else list(g.log_probs))
                    for i, g in enumerate(gens)]

        def generate(ctx, budgets, stops):
            return self.generate(ctx, budgets, temperature=temperature, top_p=top_p, stop_strings=stops,
                                 logits_processors=logits_processors)

        tok = self.tokenizer
        episodes = run_tool_episodes(generate, lambda text: tok(text, add_special_tokens=False).input_ids,
                                     self.tool_env, list(examples), [list(c) for c in contexts],
                                     max_new_tokens=max_new_tokens)
        return [RolloutRow(i, e.response_ids, e.text, e.truncated, loss_mask=e.loss_mask, log_probs=e.log_probs,
                           token_values={"segment_ids": [float(x) for x in e.segment_ids]}, tool_calls=e.tool_calls)
                for i, e in enumerate(episodes)]


def default_rollout(request: RolloutRequest, sampler: TrainerSampler, params: Any = None,
                    state: Any = None) -> list[RolloutRow]:
    """``request.n`` episodes for each prompt, in prompt order; each row's group is its prompt."""
    n = request.n
    rows = sampler.episodes([e for e in request.examples for _ in range(n)],
                            [p for p in request.prompt_ids for _ in range(n)],
                            max_new_tokens=request.max_new_tokens, temperature=request.temperature,
                            top_p=request.top_p)
    for i, row in enumerate(rows):
        row.prompt_index = i // n
    return rows
