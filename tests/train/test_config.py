"""Config: unknown keys name the key and suggest the nearest valid one; values are validated; method
presets apply before the file and overrides after it."""

import pytest

from stare.train.config import ConfigError, load_config, parse_overrides
from stare.train.methods import METHODS


def test_defaults_and_method_preset():
    cfg = load_config(None, ["method=stare_o1", "algorithm.params.reweight_w=5", "seed=3"])
    assert cfg.algorithm.objective == "stare" and cfg.seed == 3
    assert cfg.algorithm.params == {"variant": "O1", "target_entropy_ratio": 0.5, "reweight_w": 5}
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
        ("algorithm.controller.target_entropy=0.3", "target_entropy -> algorithm.params.target_entropy"),
        ("model.dtype=float8", "model.dtype"),
        ("optim=3", "'optim' is a section"),
        ("stepz", "key=value"),
    ],
)
def test_bad_values(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override])


def test_controller_settings_are_checked_with_the_method_before_any_model_loads():
    with pytest.raises(ConfigError, match="target_entropy_ratio must be > 0"):
        load_config(None, ["method=stare_o1", "algorithm.params.target_entropy_ratio=-1"])
    with pytest.raises(ConfigError, match="not both"):
        load_config(None, ["method=stare_o1", "algorithm.params.target_entropy=0.3"])


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


def test_method_overrides_apply_only_to_their_method_and_before_the_command_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("method: grpo_ds\nmethod_overrides:\n  stare_o1: {algorithm: {params: {reweight_w: 5.0}}}\n")
    assert load_config(f).algorithm.params == {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28, "clip_ratio_c": 10.0}
    assert load_config(f, ["method=stare_o1"]).algorithm.params["reweight_w"] == 5.0
    assert load_config(f, ["method=stare_o1", "algorithm.params.reweight_w=2"]).algorithm.params["reweight_w"] == 2


@pytest.mark.parametrize("text, match", [
    ("method_overrides:\n  stare_o3: {}\nmethod: grpo\n", "unknown method 'stare_o3'"),
    ("method_overrides:\n  stare_o1: {optim: {lrr: 1}}\nmethod: grpo\n", "'method_overrides.stare_o1.optim.lrr'"),
])
def test_bad_method_overrides(tmp_path, text, match):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(f)


def test_packaged_testbed_config_loads_for_every_method():
    from stare.train.demo import DEMO_CONFIG

    for name in METHODS:
        cfg = load_config(DEMO_CONFIG, [f"method={name}"])
        assert cfg.model.name_or_path == "testbed"
