"""Config: unknown keys name the key and suggest the nearest valid one; values are validated; method
presets apply before the file and overrides after it."""

import pytest

from stare.train.config import ConfigError, load_config, parse_overrides
from stare.train.methods import METHODS


def test_defaults_and_method_preset():
    cfg = load_config(None, ["method=stare_o1", "algorithm.params.reweight_w=5", "seed=3"])
    assert cfg.algorithm.objective == "stare" and cfg.algorithm.params == {"variant": "O1", "reweight_w": 5}
    assert cfg.algorithm.controller.type == "stare" and cfg.seed == 3
    assert load_config(None).algorithm.objective == "ppo"


def test_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("method: grpo_ds\noptim: {lr: 0.01}\nrollout: {n: 4}\n")
    cfg = load_config(f, ["rollout.n=2"])
    assert cfg.optim.lr == 0.01 and cfg.rollout.n == 2 and cfg.algorithm.params["clip_ratio_c"] == 10.0


@pytest.mark.parametrize(
    "override, names, suggests",
    [
        ("optim.lrr=1", "optim.lrr", "optim.lr"),
        ("algorithm.lr=1", "algorithm.lr", "optim.lr"),  # right name, wrong section
        ("rollout.temprature=0.7", "rollout.temprature", "rollout.temperature"),
        ("trainer.step=3", "trainer.step", "trainer.steps"),
        ("model.testbed.layer=2", "model.testbed.layer", "model.testbed.layers"),
    ],
)
def test_unknown_key_names_it_and_suggests(override, names, suggests):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    msg = str(e.value)
    assert f"'{names}'" in msg and f"Did you mean '{suggests}'" in msg


@pytest.mark.parametrize(
    "override, match",
    [
        ("optim.lr=-1", "optim.lr"),
        ("rollout.top_p=1.5", "rollout.top_p"),
        ("algorithm.objective=starr", "Did you mean 'stare'"),
        ("algorithm.params={reweigth_w: 2}", "reweigth_w"),
        ("method=stare_o3", "unknown method 'stare_o3'"),
        ("algorithm.controller.type=pid", "algorithm.controller.type"),
        ("model.dtype=float8", "model.dtype"),
        ("optim=3", "'optim' is a section"),
        ("stepz", "key=value"),
    ],
)
def test_bad_values(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    f = tmp_path / "list.yaml"
    f.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(f)


def test_every_method_preset_validates():
    for name in METHODS:
        load_config(None, [f"method={name}"])


def test_override_parsing():
    assert parse_overrides(["a.b=1", "c=[1, 2]", "d=true", "e=text"]) == {"a": {"b": 1}, "c": [1, 2], "d": True, "e": "text"}
