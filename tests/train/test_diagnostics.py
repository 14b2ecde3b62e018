"""Diagnostics: reflection-word counts, per-quadrant predicted entropy change with the theory's signs,
token dumps (JSONL + self-contained HTML), and nothing computed when they are off."""

import json

import pytest

from stare.train.config import load_config
from stare.train.diagnostics import reflection_stats
from stare.train.trainer import Trainer

from conftest import tiny_overrides


def test_reflection_stats_counts_whole_words_case_insensitively():
    texts = ["Wait, let me check. wait", "waiting is not a match; CHECK", ""]
    out = reflection_stats(texts, ["wait", "check"], num_tokens=500)
    # 'Wait', 'check', 'wait' | 'CHECK' -> 4 occurrences over 3 responses and 500 tokens
    assert out["batch/reflection_per_response"] == pytest.approx(4 / 3)
    assert out["batch/reflection_per_1k_tokens"] == pytest.approx(8.0)
    assert reflection_stats(texts, [], 10) == {}


def test_diagnostics_on(tmp_path):
    cfg = load_config(None, tiny_overrides(
        tmp_path, method="stare_o1", algorithm={"params": {"target_entropy_ratio": 2.0, "reweight_w": 3.0}},
        diagnostics={"enabled": True, "rows": 8, "dump_every": 2, "dump_samples": 3}, trainer={"steps": 2}))
    history = Trainer(cfg, log=lambda m: None).train()
    last = history[-1]
    quads = ["pos_high_surprisal", "pos_low_surprisal", "neg_high_surprisal", "neg_low_surprisal"]
    fracs = [last[f"diag/quadrant/{q}/frac"] for q in quads]
    assert 0 < sum(fracs) <= 1 + 1e-6
    parts = [last[f"diag/quadrant/{q}/predicted_dH"] for q in quads]
    assert sum(parts) == pytest.approx(last["diag/predicted_dH"], abs=1e-6)
    # first-order signs (with the exact sensitivity these hold per token except near the critical
    # surprisal; summed over a quadrant they hold here): entropy-raising quadrants predict an increase
    for rec in history:
        if rec["diag/quadrant/pos_high_surprisal/frac"] > 0:
            assert rec["diag/quadrant/pos_high_surprisal/predicted_dH"] > 0
        if rec["diag/quadrant/neg_high_surprisal/frac"] > 0:
            assert rec["diag/quadrant/neg_high_surprisal/predicted_dH"] < 0
    assert "diag/realised_dH" in last and "timing_s/diagnostics" in last
    dump = tmp_path / "run" / "token_dumps"
    records = [json.loads(line) for line in (dump / "step_2.jsonl").read_text().splitlines()]
    assert {r["response"] for r in records} == {0, 1, 2}
    assert set(records[0]) >= {"token", "surprisal", "entropy", "advantage", "weight", "quadrant"}
    page = (dump / "step_2.html").read_text()
    assert page.startswith("<!doctype html>") and "<script" not in page and "http" not in page
    assert not (dump / "step_1.jsonl").exists()


def test_diagnostics_off_compute_nothing(tmp_path, monkeypatch):
    import stare.train.trainer as T

    def boom(*a, **k):
        raise AssertionError("diagnostics ran while disabled")

    monkeypatch.setattr(T, "StepDiagnostics", boom)
    history = Trainer(load_config(None, tiny_overrides(tmp_path, trainer={"steps": 1})), log=lambda m: None).train()
    assert not any(k.startswith("diag/") for k in history[-1])


def test_diagnostics_do_not_depend_on_the_fused_old_pass(tmp_path):
    # one micro-batch holds the whole step, so the old pass can be fused into the update's forward; the
    # diagnostics (and everything else) must come out the same with and without the fusion
    def run(fuse, sub):
        cfg = load_config(None, tiny_overrides(
            tmp_path / sub, method="stare_o1", algorithm={"micro_batch_size": 64, "fuse_old_pass": fuse,
                                                          "params": {"reweight_w": 3.0}},
            diagnostics={"enabled": True, "rows": 8}, trainer={"steps": 2}))
        return Trainer(cfg, log=lambda m: None).train()

    fused, separate = run(True, "a"), run(False, "b")
    assert "timing_s/old_log_prob" in separate[-1] and "timing_s/old_log_prob" not in fused[-1]
    for a, b in zip(fused, separate):
        for k in a:
            if k.startswith(("diag/", "actor/entropy", "actor/pg_loss", "stare/")):
                assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), k


def test_parameter_space_prediction_matches_the_realised_change_at_a_small_learning_rate(tmp_path):
    # g . (theta_after - theta_before) is the first-order Taylor term of the realised entropy change in the
    # weights, so at a small step it must agree with the realised change up to second-order terms
    cfg = load_config(None, tiny_overrides(
        tmp_path, method="grpo_ds", optim={"lr": 3e-5}, diagnostics={"enabled": True, "rows": 16},
        trainer={"steps": 3}))
    history = Trainer(cfg, log=lambda m: None).train()
    for rec in history:
        pred, real = rec["diag/predicted_dH_param"], rec["diag/realised_dH"]
        assert abs(real) > 1e-6  # the step moved the entropy measurably
        assert pred == pytest.approx(real, rel=0.1)  # measured: within 3.1%
