"""Model plumbing for the trainer: loading, the packed prompt+response layout, and per-token statistics.

Layout. Prompts are left-padded to a common width P and responses right-padded to T, then concatenated,
so every prompt ends at column P - 1 and the hidden state at column P - 1 + j predicts response token j.
Position ids follow the attention mask (as generation does with left padding).

Statistics come from the final hidden states and the LM-head weight through the chunked
``stare.stats.token_stats_from_hidden``, so the [B, T, V] logits are never formed. Architectures whose
logits are not a plain linear map of the hidden state (soft-capped or scaled logits) take the logits
path instead (``token_stats_from_logits``), which is still chunked after the model's own logits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping

import torch
from torch import Tensor

from .stats import TokenStats, logit_statistics, token_stats_from_hidden, token_stats_from_logits

__all__ = ["PackedBatch", "pack", "response_stats", "uses_plain_lm_head", "lm_head_and_backbone"]

# Config attributes that make logits more than lm_head(hidden).
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale", "logits_scaling")


@dataclass
class PackedBatch:
    """Token tensors of a batch of (prompt, response) pairs. Response tensors are [B, T]."""

    input_ids: Tensor  # [B, P + T]
    attention_mask: Tensor  # [B, P + T]
    prompt_width: int  # P
    response_ids: Tensor  # [B, T]
    response_mask: Tensor  # [B, T] float, 1 on response tokens the loss sees (EOS included)

    def rows(self, index: Tensor | slice) -> "PackedBatch":
        """Sub-batch of rows, trimmed of all-padding response columns at the right."""
        resp_mask = self.response_mask[index]
        width = int(resp_mask.sum(0).nonzero().max()) + 1 if bool(resp_mask.any()) else 1
        p = self.prompt_width
        return PackedBatch(
            self.input_ids[index][:, : p + width], self.attention_mask[index][:, : p + width], p,
            self.response_ids[index][:, :width], resp_mask[:, :width],
        )


def pack(prompt_ids: list[list[int]], response_ids: list[list[int]], pad_id: int,
         loss_masks: list[list[int]] | None = None, device: torch.device | str = "cpu") -> PackedBatch:
    """Left-pad prompts, right-pad responses. ``loss_masks`` marks response tokens the loss sees (tool
    output tokens are 0); by default every response token counts."""
    b = len(prompt_ids)
    p = max(len(x) for x in prompt_ids)
    t = max(1, max(len(x) for x in response_ids))
    ids = torch.full((b, p + t), pad_id, dtype=torch.long)
    attn = torch.zeros((b, p + t), dtype=torch.long)
    resp_mask = torch.zeros((b, t))
    for i, (pr, rs) in enumerate(zip(prompt_ids, response_ids)):
        ids[i, p - len(pr): p] = torch.tensor(pr, dtype=torch.long)
        attn[i, p - len(pr): p] = 1
        if rs:
            ids[i, p: p + len(rs)] = torch.tensor(rs, dtype=torch.long)
            attn[i, p: p + len(rs)] = 1
            lm = loss_masks[i] if loss_masks is not None else [1] * len(rs)
            resp_mask[i, : len(rs)] = torch.tensor(lm, dtype=torch.float32)
    return PackedBatch(ids.to(device), attn.to(device), p, ids[:, p:].to(device), resp_mask.to(device))


def uses_plain_lm_head(model) -> bool:
    cfg = model.config
    return not any(getattr(cfg, a, None) not in (None, 1, 1.0) for a in _LOGIT_TRANSFORMS)


def lm_head_and_backbone(model):
    """(output embedding module, decoder stack) of a Hugging Face causal LM (PEFT-wrapped or not)."""
    return model.get_output_embeddings(), model.get_decoder()


Stat = Callable[[Tensor, Tensor], Tensor]


def response_stats(model, batch: PackedBatch, temperature: float, with_entropy: bool = True,
                   chunk_size: int | None = None, logit_stats: Mapping[str, Stat] | None = None,
                   train_stats: Mapping[str, Stat] | None = None) -> TokenStats:
    """log pi and entropy of each response token under ``model`` at ``temperature`` ([B, T] each), and in
    ``extra`` the named statistics of the full logits (``stare.stats.logit_statistics``) from the same
    forward: ``logit_stats`` without gradient, ``train_stats`` with it."""
    position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    p, t = batch.prompt_width, batch.response_ids.shape[1]
    if uses_plain_lm_head(model):
        head, backbone = lm_head_and_backbone(model)
        hidden = backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          position_ids=position_ids, use_cache=False).last_hidden_state
        hidden = hidden[:, p - 1: p - 1 + t]
        stats = token_stats_from_hidden(hidden, head.weight, batch.response_ids, lm_head_bias=head.bias,
                                        temperature=temperature, with_entropy=with_entropy, chunk_size=chunk_size)
        source = {"hidden": hidden, "lm_head_weight": head.weight, "lm_head_bias": head.bias}
    else:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=position_ids,
                       use_cache=False).logits[:, p - 1: p - 1 + t]
        stats = token_stats_from_logits(logits, batch.response_ids, temperature=temperature,
                                        with_entropy=with_entropy, chunk_size=chunk_size)
        source = {"logits": logits}
    if not (logit_stats or train_stats):
        return stats
    extra = {}
    if logit_stats:
        with torch.no_grad():
            extra.update(logit_statistics(logit_stats, batch.response_ids, temperature=temperature,
                                          chunk_size=chunk_size, **source))
    if train_stats:
        extra.update(logit_statistics(train_stats, batch.response_ids, temperature=temperature, chunk_size=chunk_size,
                                      **source))
    return replace(stats, extra=extra)
