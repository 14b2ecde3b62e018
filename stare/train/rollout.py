"""Rollout: sampling responses with a KV cache (Hugging Face ``generate``), temperature and top-p.

``sample`` returns, per prompt and sample, the response token ids up to and including the first EOS,
and whether it was cut off at ``max_new_tokens`` (truncated responses have no EOS; DAPO's overlong
shaping and masking read this flag). Randomness comes from torch's global generator, which the trainer
seeds and checkpoints, so a resumed run samples exactly what an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Samples", "sample"]


@dataclass
class Samples:
    prompt_index: list[int]  # which prompt each response answers
    response_ids: list[list[int]]
    truncated: list[bool]


@torch.no_grad()
def sample(model, tokenizer, prompt_ids: list[list[int]], *, n: int, max_new_tokens: int, temperature: float = 1.0,
           top_p: float = 1.0, use_cache: bool = True, batch_size: int | None = None) -> Samples:
    """``n`` samples for each prompt (token ids, already with any BOS / chat template applied)."""
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    flat = [i for i in range(len(prompt_ids)) for _ in range(n)]
    out_ids: list[list[int]] = []
    truncated: list[bool] = []
    step = batch_size or len(flat)
    was_training = model.training
    model.eval()
    for s in range(0, len(flat), step):
        rows = flat[s: s + step]
        width = max(len(prompt_ids[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for r, i in enumerate(rows):
            p = prompt_ids[i]
            ids[r, width - len(p):] = torch.tensor(p)
            attn[r, width - len(p):] = 1
        gen = model.generate(
            input_ids=ids.to(device), attention_mask=attn.to(device), do_sample=True, temperature=temperature,
            top_p=top_p, top_k=0, max_new_tokens=max_new_tokens, use_cache=use_cache, eos_token_id=eos,
            pad_token_id=pad,
        )[:, width:].tolist()
        for seq in gen:
            if eos in seq:
                out_ids.append(seq[: seq.index(eos) + 1])
                truncated.append(False)
            else:
                out_ids.append(seq)
                truncated.append(True)
    model.train(was_training)
    return Samples(flat, out_ids, truncated)
