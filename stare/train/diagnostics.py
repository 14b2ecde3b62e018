"""Per-step entropy diagnostics: quadrants, sensitivity, predicted vs realised entropy change, token dumps,
and the paper's training-dynamics signals (reflection words).

Switched on by ``diagnostics.enabled``; nothing here runs when it is off. On a fixed subset of the step's
rows (``diagnostics.rows``), before the update:

* S(o) exact and leading-term (``stare.theory``), entropy H and surprisal s of every response token;
* the quadrant of each token, sign(A) x (s above / at-or-below H).

During the update the trainer records the per-token weights the objective applied. After it, the same
rows are re-scored under the updated policy, which gives

* realised change: token-mean entropy after minus before, on the same tokens;
* predicted change, first order in logit space (stare.theory): -sum_t w_t A_t S_t / N per step of unit
  size. It ignores how one token's gradient moves other tokens' logits through shared weights, so its
  scale is arbitrary and only its correlation with the realised change across steps is meaningful
  (reported by ``stare compare`` / docs/results.md);
* predicted change, first order in parameter space: g . (theta_after - theta_before), with g the gradient
  of the rows' mean entropy w.r.t. the trainable weights before the update. It includes what the
  logit-space prediction leaves out (shared weights, the optimizer's preconditioning and step size), so
  it should match the realised change up to second-order terms, i.e. at small learning rates; where it
  stops matching measures where first-order reasoning about the update stops holding. Costs one extra
  forward and backward on the rows and one gradient-sized buffer;
* per quadrant: token fraction and its share of the (logit-space) predicted change.

Token dumps (``diagnostics.dump_every``) write per-token records (token text, surprisal, entropy,
advantage, weight, quadrant) of a few responses as JSONL and as one self-contained HTML page.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Sequence

import torch

from ..stats import token_stats_from_hidden, token_stats_from_logits
from ..theory import QUADRANTS, entropy_sensitivity, entropy_sensitivity_from_hidden, quadrant
from ..lm import PackedBatch, lm_head_and_backbone, response_stats, uses_plain_lm_head

__all__ = ["reflection_stats", "sensitivity_of", "StepDiagnostics", "write_token_dump"]


def reflection_stats(texts: Sequence[str], words: Sequence[str], num_tokens: float) -> dict[str, float]:
    """Occurrences of reflection words (whole words, case-insensitive) per response and per 1k tokens."""
    if not words or not texts:
        return {}
    pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    count = sum(len(pattern.findall(t)) for t in texts)
    return {"batch/reflection_per_response": count / len(texts),
            "batch/reflection_per_1k_tokens": 1000 * count / max(num_tokens, 1.0)}


def sensitivity_of(model, batch: PackedBatch, temperature: float, entropy_grad: bool = False):
    """``stare.theory.Sensitivity`` of every response token of ``batch`` under ``model``; with
    ``entropy_grad`` also the entropies [B, T] with their graph to the weights, from the same forward."""
    position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    p, t = batch.prompt_width, batch.response_ids.shape[1]
    with torch.set_grad_enabled(entropy_grad):
        if uses_plain_lm_head(model):
            head, backbone = lm_head_and_backbone(model)
            hidden = backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                              position_ids=position_ids, use_cache=False).last_hidden_state[:, p - 1: p - 1 + t]
            sens = entropy_sensitivity_from_hidden(hidden.detach(), head.weight.detach(), batch.response_ids,
                                                   lm_head_bias=None if head.bias is None else head.bias.detach(),
                                                   temperature=temperature)
            ent = (token_stats_from_hidden(hidden, head.weight, batch.response_ids, lm_head_bias=head.bias,
                                           temperature=temperature).entropy if entropy_grad else None)
        else:
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=position_ids,
                           use_cache=False).logits[:, p - 1: p - 1 + t]
            sens = entropy_sensitivity(logits.detach(), batch.response_ids, temperature=temperature)
            ent = (token_stats_from_logits(logits, batch.response_ids, temperature=temperature).entropy
                   if entropy_grad else None)
    return (sens, ent) if entropy_grad else sens


class StepDiagnostics:
    """Collects the diagnostics of one step on ``rows`` of its batch (see the module docstring)."""

    def __init__(self, model, packed: PackedBatch, rows: torch.Tensor, advantages: torch.Tensor, temperature: float,
                 params: Sequence[torch.Tensor] = ()):
        self.rows = rows
        self.temperature = temperature
        self.sub = packed.rows(rows)
        was = model.training
        model.eval()
        # parameter-space first order: gradient g of these rows' mean entropy w.r.t. the trainable weights
        # (from the same forward as the sensitivities); after the update, g . (theta_after - theta_before).
        # Only g and the scalar g . theta_before are kept (float64, so the difference of two large dot
        # products keeps its precision).
        self.params = [p for p in params if p.requires_grad]
        self.grads = None
        if self.params:
            self.sens, ent = sensitivity_of(model, self.sub, temperature, entropy_grad=True)
            m = self.sub.response_mask[:, : ent.shape[1]].to(ent.dtype)
            h = (ent * m).sum() / m.sum().clamp(min=1)
            grads = torch.autograd.grad(h, self.params, allow_unused=True)
            self.grads = [None if g is None else g.detach() for g in grads]
            self.g_dot_before = self._g_dot_params()
        else:
            self.sens = sensitivity_of(model, self.sub, temperature)
        model.train(was)
        self.adv = advantages[rows].unsqueeze(-1).expand_as(self.sub.response_mask).to(self.sens.exact.dtype)
        self.mask = self.sub.response_mask.bool()
        self.weights = torch.ones_like(self.adv)

    def _g_dot_params(self) -> float:
        return float(sum((g.double() * p.detach().double()).sum() for g, p in zip(self.grads, self.params)
                         if g is not None))

    def record_weights(self, rows: torch.Tensor, weights: torch.Tensor) -> None:
        """Per-token weights the objective applied to ``rows`` of the step (called per micro-batch)."""
        for i, r in enumerate(rows.tolist()):
            hit = (self.rows == r).nonzero()
            if hit.numel():
                w = weights[i, : self.weights.shape[1]]
                self.weights[hit.item(), : w.shape[0]] = w.to(self.weights.dtype)

    @torch.no_grad()
    def finish(self, model) -> tuple[dict[str, float], dict]:
        """Metrics after the update; also returns the per-token tensors for a token dump."""
        was = model.training
        model.eval()
        after = response_stats(model, self.sub, self.temperature).entropy
        model.train(was)
        m = self.mask
        n = m.sum().clamp(min=1)
        s = self.sens
        h_before = (s.entropy * m).sum() / n
        h_after = (after.to(s.entropy.dtype) * m).sum() / n
        contrib = -(self.weights * self.adv * s.exact) * m / n  # first-order, per token, unit logit step
        q = quadrant(self.adv, s.surprisal, s.entropy)
        out = {
            "diag/realised_dH": float(h_after - h_before),
            "diag/predicted_dH": float(contrib.sum()),
            "diag/predicted_dH_leading": float((-(self.weights * self.adv * s.leading) * m / n).sum()),
            **({"diag/predicted_dH_param": self._g_dot_params() - self.g_dot_before} if self.grads is not None else {}),
            "diag/sensitivity_abs_mean": float((s.exact.abs() * m).sum() / n),
            "diag/sensitivity_leading_abs_mean": float((s.leading.abs() * m).sum() / n),
            "diag/tokens": float(n),
        }
        for i, name in enumerate(QUADRANTS):
            sel = (q == i) & m
            out[f"diag/quadrant/{name}/frac"] = float(sel.sum() / n)
            out[f"diag/quadrant/{name}/predicted_dH"] = float((contrib * sel).sum())
        tensors = {"entropy": s.entropy, "surprisal": s.surprisal, "sensitivity": s.exact, "advantage": self.adv,
                   "weight": self.weights, "quadrant": q, "mask": m}
        return out, tensors


_QUADRANT_COLORS = {0: "#1f77b4", 1: "#aec7e8", 2: "#d62728", 3: "#ff9896", -1: "#dddddd"}


def write_token_dump(folder: Path, step: int, tokenizer, sub: PackedBatch, tensors: dict, texts: Sequence[str],
                     limit: int) -> Path:
    """Write ``token_dumps/step_<N>.jsonl`` and ``.html`` for the first ``limit`` responses."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records, blocks = [], []
    for i in range(min(limit, sub.response_ids.shape[0])):
        n = int(tensors["mask"][i].sum())
        ids = sub.response_ids[i, :n].tolist()
        toks = [tokenizer.decode([t]) for t in ids]
        spans = []
        for j, tok in enumerate(toks):
            rec = {"response": i, "position": j, "token": tok,
                   **{k: float(tensors[k][i, j]) for k in ("surprisal", "entropy", "sensitivity", "advantage", "weight")},
                   "quadrant": QUADRANTS[int(tensors["quadrant"][i, j])] if int(tensors["quadrant"][i, j]) >= 0 else "zero_advantage"}
            records.append(rec)
            alpha = min(1.0, 0.15 + rec["surprisal"] / 3)
            color = _QUADRANT_COLORS[int(tensors["quadrant"][i, j])]
            title = (f"s={rec['surprisal']:.3f} H={rec['entropy']:.3f} S={rec['sensitivity']:+.4f} "
                     f"A={rec['advantage']:+.3f} w={rec['weight']:.3f} {rec['quadrant']}")
            border = "border-bottom:3px solid #000;" if rec["weight"] != 1.0 else ""
            spans.append(f'<span title="{html.escape(title)}" style="background:{color};opacity:{alpha:.2f};{border}">'
                         f"{html.escape(tok) or '&#9251;'}</span>")
        adv = float(tensors["advantage"][i, 0]) if n else 0.0
        blocks.append(f"<div class='r'><b>response {i}</b> (A = {adv:+.3f}, {n} tokens, text: "
                      f"{html.escape(texts[i] if i < len(texts) else '')})<br><code>{''.join(spans)}</code></div>")
    jsonl = folder / f"step_{step}.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    legend = " ".join(f'<span style="background:{_QUADRANT_COLORS[i]}">{name}</span>' for i, name in enumerate(QUADRANTS))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>token dump, step {step}</title><style>"
            "body{font-family:sans-serif;font-size:14px;max-width:1100px;margin:1em auto} code{font-size:15px;"
            "line-height:2} .r{margin:1em 0;padding:.5em;border:1px solid #ccc}</style></head><body>"
            f"<h2>Token dump, step {step}</h2><p>Colour: quadrant sign(A) x surprisal vs entropy ({legend}); "
            "opacity: surprisal; underline: reweighted token (weight != 1). Hover a token for its numbers."
            f"</p>{''.join(blocks)}</body></html>")
    out = folder / f"step_{step}.html"
    out.write_text(page)
    return out
