"""Rollout: sampling responses with a KV cache, temperature, top-p and stop strings; single- and multi-turn.

A *backend* turns token contexts into ``Generation`` objects (token ids, text, finish reason "eos" /
"stop" / "length"); ``HFBackend`` wraps Hugging Face ``generate`` (KV cache on). ``sample`` draws n
single-turn responses per prompt; ``sample_with_tools`` runs the agent loop of
``stare.env.tasks.tool_use.run_tool_episodes`` (tool output tokens get loss mask 0).

Randomness comes from torch's global generator, which the trainer seeds and checkpoints, so a resumed
run samples exactly what an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from ..env.tasks.tool_use import Generation, run_tool_episodes

__all__ = ["Samples", "HFBackend", "sample", "sample_with_tools"]


@dataclass
class Samples:
    prompt_index: list[int]  # which prompt each response answers
    response_ids: list[list[int]]
    truncated: list[bool]
    texts: list[str] = field(default_factory=list)
    loss_masks: list[list[int]] | None = None  # None: every response token counts
    tool_calls: list[int] | None = None


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


class HFBackend:
    """Generation with ``model.generate`` (KV cache), left-padded batches of at most ``batch_size`` rows."""

    def __init__(self, model, tokenizer, batch_size: int | None = None, use_cache: bool = True):
        self.model, self.tokenizer = model, tokenizer
        self.batch_size = batch_size
        self.use_cache = use_cache
        self.eos = tokenizer.eos_token_id
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos

    def _finish(self, seq: list[int], stop_strings: Sequence[str]) -> Generation:
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
                return Generation(ids, self.tokenizer.decode(ids, skip_special_tokens=True), "stop")
        if eos_at is not None:
            ids = seq[: eos_at + 1]
            return Generation(ids, self.tokenizer.decode(ids, skip_special_tokens=True), "eos")
        return Generation(seq, self.tokenizer.decode(seq, skip_special_tokens=True), "length")

    @torch.no_grad()
    def generate(self, contexts: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int], *, temperature: float,
                 top_p: float, stop_strings: Sequence[str] = ()) -> list[Generation]:
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
            gen = self.model.generate(
                input_ids=ids.to(device), attention_mask=attn.to(device), do_sample=True, temperature=temperature,
                top_p=top_p, top_k=0, max_new_tokens=max(budgets[s: s + step]), use_cache=self.use_cache,
                eos_token_id=self.eos, pad_token_id=self.pad, **kwargs,
            )[:, width:].tolist()
            for r, seq in enumerate(gen):
                g = self._finish(seq, stop_strings)
                budget = budgets[s + r]
                if len(g.token_ids) > budget:  # a longer row of the batch set max_new_tokens
                    ids_ = list(g.token_ids)[:budget]
                    g = Generation(ids_, self.tokenizer.decode(ids_, skip_special_tokens=True), "length")
                out.append(g)
        self.model.train(was_training)
        return out


def sample(backend: HFBackend, prompt_ids: list[list[int]], *, n: int, max_new_tokens: int, temperature: float = 1.0,
           top_p: float = 1.0) -> Samples:
    """``n`` single-turn samples for each prompt (token ids, already with any BOS / chat template)."""
    index = [i for i in range(len(prompt_ids)) for _ in range(n)]
    gens = backend.generate([prompt_ids[i] for i in index], max_new_tokens, temperature=temperature, top_p=top_p)
    return Samples(index, [list(g.token_ids) for g in gens], [g.finish_reason == "length" for g in gens],
                   [g.text for g in gens])


def sample_with_tools(backend: HFBackend, env, examples, prompt_ids: list[list[int]], *, n: int, max_new_tokens: int,
                      temperature: float = 1.0, top_p: float = 1.0) -> Samples:
    """``n`` multi-turn episodes per prompt with the task's ``ToolEnv``; tool output tokens are masked."""
    index = [i for i in range(len(prompt_ids)) for _ in range(n)]
    tok = backend.tokenizer

    def generate(contexts, budgets, stops):
        return backend.generate(contexts, budgets, temperature=temperature, top_p=top_p, stop_strings=stops)

    episodes = run_tool_episodes(generate, lambda text: tok(text, add_special_tokens=False).input_ids, env,
                                 [examples[i] for i in index], [prompt_ids[i] for i in index],
                                 max_new_tokens=max_new_tokens)
    return Samples(index, [e.response_ids for e in episodes], [e.truncated for e in episodes], [e.text for e in episodes],
                   [e.loss_mask for e in episodes], [e.tool_calls for e in episodes])
