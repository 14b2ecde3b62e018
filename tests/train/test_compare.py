"""stare compare: a tiny grid runs in parallel processes, aggregates with confidence bands and tests,
and an interrupted comparison resumes (finished runs are skipped, unfinished ones continue)."""

import json
import math

import pytest

from stare.report.aggregate import aggregate, final_values
from stare.report.runs import plan_runs, read_metrics
from stare.train.scheduler import run_grid

from conftest import TINY_TESTBED


def _overrides(tmp_path):
    return [
        "task.name=conftest:make_contains_one",
        "model.testbed=" + json.dumps(TINY_TESTBED),
        "rollout.prompts_per_step=4", "rollout.n=4", "rollout.max_new_tokens=8",
        "algorithm.micro_batch_size=8", "trainer.steps=3", "trainer.eval_every=0", "trainer.eval_prompts=4",
        "trainer.eval_n=4", "trainer.save_every=1", "logging.tensorboard=false",
    ]


def test_grid_aggregate_and_resume(tmp_path, monkeypatch):
    import os

    # the runs are spawned processes: they find the test task through an import path on PYTHONPATH
    monkeypatch.setenv("PYTHONPATH", os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    specs = plan_runs(tmp_path / "cmp", ["grpo_ds", "stare_o1"], [0, 1])
    # an interrupted comparison: one run finished earlier, one stopped after its first checkpoint
    done, partial = specs[0], specs[3]
    assert run_grid(None, [done], _overrides(tmp_path), workers=1) == []
    first_metrics = read_metrics(done.out_dir / "metrics.jsonl")
    ov_partial = _overrides(tmp_path)
    ov_partial[ov_partial.index("trainer.steps=3")] = "trainer.steps=1"
    run_grid(None, [partial], ov_partial, workers=1)
    (partial.out_dir / "DONE").unlink()  # as if killed before finishing
    failed = run_grid(None, specs, _overrides(tmp_path), workers=2)
    assert failed == []
    assert all(s.done for s in specs)
    assert read_metrics(done.out_dir / "metrics.jsonl") == first_metrics  # skipped, untouched
    assert [r["step"] for r in read_metrics(partial.out_dir / "metrics.jsonl")] == [1, 2, 3]  # resumed
    result = aggregate(specs, baseline="grpo_ds")
    assert result["methods"] == ["grpo_ds", "stare_o1"]
    s = result["summary"]["stare_o1"]["final_entropy"]
    assert s["n"] == 2 and math.isfinite(s["ci95"]) and "p_vs_baseline" in s
    steps = [row[0] for row in result["curves"]["grpo_ds"]["actor/entropy"]]
    assert steps == [1, 2, 3]


def test_grid_prints_each_inert_knob_warning_once(tmp_path, monkeypatch):
    """The runs' warnings reach the user: on-policy, GRPO-ds's clip bounds cannot act (stare.inert); two
    seeds give the same warning, printed once, and each run keeps its own in warnings.log."""
    import io
    import os

    from rich.console import Console

    monkeypatch.setenv("PYTHONPATH", os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    specs = plan_runs(tmp_path / "cmp", ["grpo_ds"], [0, 1])
    ov = _overrides(tmp_path)
    ov[ov.index("trainer.steps=3")] = "trainer.steps=1"
    out = io.StringIO()
    assert run_grid(None, specs, ov, workers=2, console=Console(file=out, width=400)) == []
    printed = [line for line in out.getvalue().splitlines() if line.startswith("warning (grpo_ds)")]
    assert len(printed) >= 1 and len(printed) == len(set(printed))
    assert any("no effect on-policy" in line for line in printed)
    assert all(line.startswith("warning (grpo_ds): [") for line in printed)  # the warning's own "[objective]" prefix
    for spec in specs:
        assert "no effect on-policy" in (spec.out_dir / "warnings.log").read_text()


def test_final_values_and_confidence_band():
    recs = [{"step": i + 1, "actor/entropy": e, "response_length/mean": 10.0} for i, e in enumerate([1.0, 0.5, 0.25])]
    recs[-1].update({"val/acc/mean@4": 0.5, "val/pass@1": 0.5, "val/pass@4": 0.9})
    fv = final_values(recs, tail=2)
    assert fv["final_entropy"] == pytest.approx(0.375) and fv["entropy_ratio"] == pytest.approx(1 / 0.375)
    assert fv["heldout_acc"] == 0.5 and fv["pass@4"] == 0.9
    from stare.report.aggregate import mean_ci

    m, ci = mean_ci([1.0, 2.0, 3.0])
    # sd = 1, t(0.975, 2) = 4.3027: ci = 4.3027 / sqrt(3) = 2.4841
    assert m == 2.0 and ci == pytest.approx(2.4841, abs=1e-4)


def test_html_report_embeds_figures_and_names_every_method(tmp_path):
    import base64

    from stare.report.runs import RunSpec
    from stare.report.html import write_report
    from stare.report.plots import plot_aggregate

    # two methods x two seeds of short synthetic runs (the report reads metrics files only)
    specs = []
    for method, slope in (("grpo_ds", 0.1), ("stare_o1", 0.02)):
        for seed in (0, 1):
            d = tmp_path / method / f"seed_{seed}"
            d.mkdir(parents=True)
            recs = [{"step": i, "actor/entropy": 1.0 - slope * i + 0.01 * seed, "critic/acc/mean": 0.5,
                     "response_length/mean": 20.0} for i in range(1, 6)]
            recs[-1].update({"val/acc/mean@4": 0.6 + 0.05 * seed, "val/pass@1": 0.6, "val/pass@4": 0.9})
            (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
            specs.append(RunSpec(method, seed, d))
    result = aggregate(specs, baseline="grpo_ds")
    png = plot_aggregate(result["curves"], tmp_path / "curves.png")
    page = write_report(result, {"curves": png}, tmp_path / "report.html", title="t", command="stare compare x").read_text()
    assert base64.b64encode(png.read_bytes()).decode()[:200] in page  # the figure is inside the file
    assert "<script" not in page and "http://" not in page and "https://" not in page
    for method in ("grpo_ds", "stare_o1"):
        assert page.count(method) >= 3  # named in the header, the summary and the per-seed table
    assert "p = " in page  # the Welch test against the baseline


def test_band_adherence():
    from stare.report.aggregate import band_adherence

    # target 1.0; the gate first engages at step 2; entropies from there: 0.8, 1.2, 1.5 -> deviations
    # -0.2, +0.2, +0.5: two of three within +-35%, largest 0.5; window 2 moving means: -0.2, 0, 0.35
    ent = [1.4, 0.8, 1.2, 1.5]
    gate = [0, 1, 1, 0]
    recs = [{"step": i + 1, "actor/entropy": e, "stare/gate_on": g, "stare/target_entropy": 1.0}
            for i, (e, g) in enumerate(zip(ent, gate))]
    out = band_adherence(recs, band=0.35, window=2)
    assert out["gate_first_step"] == 2.0
    assert out["band_frac"] == pytest.approx(2 / 3)
    assert out["band_max_dev"] == pytest.approx(0.5)
    assert out["band_max_dev_smoothed"] == pytest.approx(0.35)
    # a run whose gate never engages, or an ungated method, reports nothing
    assert band_adherence([{**r, "stare/gate_on": 0} for r in recs]) == {}
    assert band_adherence([{"step": 1, "actor/entropy": 1.0}]) == {}
    assert "band_frac" in final_values(recs)


def test_series_smoothing_and_pass_at_max():
    from stare.report.aggregate import _smooth
    from stare.report.runs import series

    recs = [{"step": 1, "x": 1.0}, {"step": 2, "x": 3.0}, {"step": 3, "x": 5.0, "val/pass@1": 0.2, "val/pass@16": 0.9,
                                                          "val/pass@4": 0.5}]
    # trailing window 2: 1, (1+3)/2, (3+5)/2
    assert _smooth(series(recs, "x"), 2) == {1: 1.0, 2: 2.0, 3: 4.0}
    assert series(recs, "val/pass@max") == {3: 0.9}  # the largest k, not the first key
    assert _smooth({}, 5) == {}


def _per_source_runs(tmp_path):
    """Two methods x two seeds, each with a last evaluation per data source (easy / hard) up to k = 4."""
    from stare.report.runs import RunSpec

    specs = []
    for method, hard in (("base", 0.5), ("grpo_ds", 0.25)):
        for seed in (0, 1):
            d = tmp_path / method / f"seed_{seed}"
            d.mkdir(parents=True)
            rec = {"step": 0 if method == "base" else 5, "val/acc/mean@4": 0.5, "val/pass@1": 0.5, "val/pass@4": 0.8,
                   "val/easy/acc/mean@4": 0.8, "val/easy/pass@1": 0.8, "val/easy/pass@4": 1.0,
                   "val/hard/acc/mean@4": 0.1, "val/hard/pass@1": 0.1, "val/hard/pass@2": 0.2,
                   "val/hard/pass@4": hard + 0.05 * seed}
            recs = [rec] if method == "base" else [{"step": i, "actor/entropy": 1.0 / i} for i in range(1, 5)] + [
                {**rec, "actor/entropy": 0.2}]
            (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
            specs.append(RunSpec(method, seed, d))
    return specs


def test_per_source_final_values_pass_at_k_curves_and_columns(tmp_path):
    from stare.report.tables import markdown_table, table_columns

    specs = _per_source_runs(tmp_path)
    fv = final_values(read_metrics(specs[2].out_dir / "metrics.jsonl"))
    assert fv["hard/heldout_acc"] == 0.1 and fv["hard/pass@4"] == 0.25 and fv["easy/pass@4"] == 1.0
    assert fv["heldout_acc"] == 0.5 and "hard/acc/mean@4" not in fv
    result = aggregate(specs, baseline="grpo_ds")
    pk = result["pass_at_k"]
    assert set(pk) == {"all", "easy", "hard"}
    hard = pk["hard"]["grpo_ds"]
    assert [row[0] for row in hard] == [1, 2, 4] and hard[-1][1] == pytest.approx(0.275) and hard[-1][3] == 2
    assert pk["hard"]["base"][-1][1] == pytest.approx(0.525)
    assert result["summary"]["base"]["hard/pass@4"]["p_vs_baseline"] is not None  # Welch test per source too
    cols = [k for k, _ in table_columns(result)]
    assert cols[-6:] == ["easy/heldout_acc", "easy/pass@1", "easy/pass@4", "hard/heldout_acc", "hard/pass@1",
                         "hard/pass@4"]
    assert "| hard pass@4 |" in markdown_table(result)
    # held-out curves per source, the base model's single evaluation at step 0
    assert result["curves"]["grpo_ds"]["val/hard/pass@max"][0][:2] == (5, pytest.approx(0.275))
    assert result["curves"]["base"]["val/hard/acc/mean@"][0][0] == 0


def test_pass_at_k_figure_and_per_source_panels(tmp_path):
    from stare.report.plots import aggregate_panels, plot_aggregate, plot_pass_at_k, plot_runs

    result = aggregate(_per_source_runs(tmp_path), baseline="grpo_ds")
    png = plot_pass_at_k(result["pass_at_k"], tmp_path / "pk.png", title="t")
    assert png.stat().st_size > 5000
    panels = [p[0] for p in aggregate_panels(result["curves"])]
    assert "val/hard/acc/mean@" in panels and "val/hard/pass@max" in panels
    assert plot_aggregate(result["curves"], tmp_path / "c.png", panels=aggregate_panels(result["curves"])).exists()
    runs = {s.method: read_metrics(s.out_dir / "metrics.jsonl") for s in _per_source_runs(tmp_path / "again")[::2]}
    assert plot_runs(runs, tmp_path / "r.png").exists()
