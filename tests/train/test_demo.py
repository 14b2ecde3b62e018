"""stare demo on a tiny config: the base model's row and the two methods' rows, held-out curves over steps
starting from the base model, pass@k curves, and the figures."""

import json
import os

from conftest import TINY_TESTBED


def test_demo_tiny(tmp_path, monkeypatch):
    from stare.train.demo import run_demo

    monkeypatch.setenv("PYTHONPATH", os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({
        "task": {"name": "tiny_tasks:make_contains_one"}, "model": {"testbed": TINY_TESTBED},
        "rollout": {"prompts_per_step": 4, "n": 4, "max_new_tokens": 8}, "algorithm": {"micro_batch_size": 8},
        "trainer": {"eval_prompts": 4, "eval_n": 4}, "logging": {"tensorboard": False}}))
    summary = run_demo(["trainer.steps=4", "trainer.eval_every=2"], out_dir=str(tmp_path / "demo"), config=cfg)
    assert set(summary["runs"]) == {"base", "grpo_ds", "stare_o1"}
    assert "final_entropy" in summary["runs"]["grpo_ds"] and "final_entropy" not in summary["runs"]["base"]
    assert set(summary["runs"]["base"]["pass_at_k"]) == {"1", "2", "3", "4"}
    curve = summary["heldout_curves"]["stare_o1"]
    assert [r["step"] for r in curve] == [0, 2, 4]  # the base model, then every evaluation
    assert curve[0] == {k: v for k, v in json.loads((tmp_path / "demo" / "base" / "seed_0" / "metrics.jsonl")
                                                    .read_text()).items() if k == "step" or k.startswith("val/")}
    assert set(summary["pass_at_k_curves"]["all"]) == {"base", "grpo_ds", "stare_o1"}
    for name in ("curves.png", "pass_at_k.png", "summary.json"):
        assert (tmp_path / "demo" / name).stat().st_size > 0
