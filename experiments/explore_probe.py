"""What a run holds of the exploration testbed's rare strategy (docs/results.md): for the base model and
each run's last checkpoint in a `stare compare` folder on the exploration testbed, on the held-out prompts,

* P(stop | right pair): after a correct first step on the pair that solves a hard prompt (``x+y=s;``,
  teacher-forced), the probability that the next token starts the answer (``A`` or ``=``), i.e. that the
  policy stops early, the rare strategy, on the hard split; the same after a correct first step on easy
  prompts (where stopping is wrong);
This is the probability of the one decision the hard split needs (the other, the right pair first, is
1 in 3 in the base model and not probed), which a batch-entropy target does not see: the batch entropy
also counts the choice of order and of answer form, which are free on both splits.

    python experiments/explore_probe.py runs/equal_entropy/explore_on [--prompts 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch


def _prob_next(model, tok, contexts: list[list[int]], targets: list[set[int]]) -> list[float]:
    """P(next token in targets[i] | contexts[i]) for each i (one padded forward)."""
    width = max(map(len, contexts))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(c)) + c for c in contexts])
    mask = (ids != tok.pad_token_id).long()
    with torch.no_grad():
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1].float()
    p = torch.softmax(logits, -1)
    return [float(p[i, list(t)].sum()) for i, t in enumerate(targets)]


def probe(model, tok, examples) -> dict[str, float]:
    from stare.train.tasks import encode_prompt

    out = {}
    for split in ("explore_easy", "explore_hard"):
        exs = [e for e in examples if e.source == split]
        stop_ctx, stop_tgt = [], []
        for e in exs:
            nums, target = e.meta["numbers"], int(e.answer)
            if split == "explore_hard":
                k = next(i for i in range(3) if sum(nums) - nums[i] == target)
                pair = [nums[i] for i in range(3) if i != k]
            else:
                pair = nums[:2]
            prompt = encode_prompt(tok, e)
            step = f"{pair[0]}+{pair[1]}={pair[0] + pair[1]};"
            stop_ctx.append(prompt + tok(step, add_special_tokens=False).input_ids)
            stop_tgt.append({tok.convert_tokens_to_ids("A"), tok.convert_tokens_to_ids("=")})
        out[f"{split}/p_stop_after_pair"] = sum(_prob_next(model, tok, stop_ctx, stop_tgt)) / len(exs)
    return out


def main() -> int:
    from safetensors.torch import load_file

    from stare.train.config import load_config
    from stare.train.trainer import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("--prompts", type=int, default=64, help="held-out prompts per split")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = {}
    runs = sorted(p for p in args.root.glob("*/seed_*") if (p / "checkpoints").is_dir())
    if not runs:
        print(f"no run folders with checkpoints under {args.root}", file=sys.stderr)
        return 2
    cfg = load_config(runs[0] / "config.yaml")
    model, tok = load_model(cfg, log=lambda m: None)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    task = cfg.model.testbed_config().make_task()
    test = task.examples("test")[: 2 * args.prompts]
    model.eval()
    rows["base"] = probe(model, tok, test)
    for run in runs:
        ckpts = sorted((run / "checkpoints").glob("global_step_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]))
        if not ckpts:
            continue
        model.load_state_dict(base_state)
        model.load_state_dict(load_file(ckpts[-1] / "model.safetensors"), strict=False)
        rows[f"{run.parent.name}/{run.name}@{ckpts[-1].name.rsplit('_', 1)[1]}"] = probe(model, tok, test)
    keys = list(rows["base"])
    print("run".ljust(36) + "".join(k.split("/", 1)[0][8:] + " " + k.split("/", 1)[1] + "  " for k in keys))
    for name, r in rows.items():
        print(name.ljust(36) + "".join(f"{r[k]:.4f}".rjust(len(k) - 6) + "  " for k in keys))
    by_method: dict = {}
    for name, r in rows.items():
        by_method.setdefault(name.split("/", 1)[0], []).append(r)
    print("\nmean over seeds:")
    for m, rs in by_method.items():
        print(m.ljust(20) + "  ".join(f"{k}: {sum(r[k] for r in rs) / len(rs):.4f}" for k in keys))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all(math.isfinite(v) for r in rows.values() for v in r.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
