"""The examples in ``examples/`` run and show what they claim (seconds, CPU)."""

import importlib.util
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_toy_collapse_grpo_collapses_and_stare_holds_its_target():
    toy = _load("toy_collapse")
    cfg = toy.ToyConfig(steps=120)
    runs = toy.main(cfg)
    grpo, stare = runs["grpo_ds"], runs["stare_o1"]
    start = grpo[0]["entropy"]
    assert grpo[-1]["entropy"] < 0.2 * start  # GRPO-ds sharpens the table
    assert any(r["gate_on"] for r in stare)  # the gate engaged ...
    assert stare[-1]["entropy"] > 2 * grpo[-1]["entropy"]  # ... and held entropy well above GRPO-ds
