"""Checks of a whole config and of the prompts, with one-line errors that name the field and what is valid.

``load_config`` validates types and single-field ranges through pydantic; ``check_config`` adds what a
field constraint cannot say or what would otherwise surface later as a raw torch, tokenizer or hub
error: AdamW's betas in [0, 1), positive thread and batch counts, a model path that exists (or a hub id
that can be reached or is cached), a device that exists, the optional logging packages. The YAML
readers turn parse errors into ``ConfigError`` naming the file (line and column) or the override.
``check_prompt_lengths`` bounds every prompt by the model's context before any generation (a 1 MB
prompt used to hang the rollout). ``preflight`` runs it once the model has loaded, and waits for the
task's worker processes (verifiers, sandbox), which have been starting since the task was built: a
check's time limit counts a worker's start-up, so the first step must not find them cold.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any, Sequence

import yaml

__all__ = ["check_config", "check_prompt_lengths", "parse_yaml_value", "preflight", "read_yaml_file", "seed_numpy"]

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.\-]*(?:/[A-Za-z0-9][\w.\-]*)?")
_DEVICE = re.compile(r"auto|cpu|mps|cuda(?::\d+)?")


def _error(message: str):
    from ..checks import ConfigError

    return ConfigError(message)


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"{where}{problem}"


def read_yaml_file(path: Path) -> Any:
    """The parsed YAML of a config file; ConfigError naming the file and the line of a syntax error."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise _error(f"config file {path}: cannot be read ({type(e).__name__}: {e})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise _error(f"config file {path}: not valid YAML: {_yaml_problem(e)}") from None


def parse_yaml_value(key: str, raw: str) -> Any:
    """The value of a ``key=value`` override, parsed as YAML; ConfigError naming the key."""
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise _error(f"override '{key}={raw}': the value is not valid YAML ({_yaml_problem(e)}); quote "
                     f"it or fix the brackets") from None


# ------------------------------------------------------------------------------------------ the config


def _check_model_path(name: str) -> None:
    if name in ("testbed", "smollm2"):
        return
    field = "model.name_or_path"
    valid = "give 'testbed', 'smollm2', a folder written by save_pretrained (with config.json), or a hub id owner/name"
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _error(f"{field}: folder '{name}' has no config.json; {valid}")
        return
    if path.exists():
        raise _error(f"{field}: '{name}' is a file, not a model folder; {valid}")
    if name.startswith(("/", ".", "~")) or not _HUB_ID.fullmatch(name):
        raise _error(f"{field}: no folder '{name}', and it is not a hub id of the form owner/name; {valid}")
    # a hub id: usable when cached, or when the hub can be reached
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except Exception:  # noqa: BLE001 - an invalid id for the hub library: let the loader report it
        cached = None
    if isinstance(cached, str):
        return
    offline = any(os.environ.get(k, "").lower() in ("1", "true", "yes", "on")
                  for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if offline:
        raise _error(f"{field}: '{name}' is not a local folder and not in the Hugging Face cache, and "
                     f"HF_HUB_OFFLINE is set; {valid}")
    from ..env.data.loaders import _reachable

    if not _reachable(endpoint, 5.0):
        raise _error(f"{field}: '{name}' is not a local folder, not in the Hugging Face cache, and the hub "
                     f"({endpoint}) is not reachable within 5 s; {valid}")


def _check_device(name: str) -> None:
    if not _DEVICE.fullmatch(name):
        raise _error(f"model.device: '{name}' is not a device; valid: auto, cpu, cuda, cuda:N, mps")
    if name.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.split(":", 1)[1]) if ":" in name else 0
        if index >= count:
            have = f"{count} CUDA device(s)" if count else "no CUDA device"
            raise _error(f"model.device: '{name}' but torch sees {have}; use auto or cpu")


def check_config(cfg):
    """Cross-field and environment checks of a validated ``Config``; returns it (ConfigError if not)."""
    o, r, t = cfg.optim, cfg.rollout, cfg.trainer
    for i, b in enumerate(o.betas):
        if not 0.0 <= b < 1.0:
            raise _error(f"optim.betas: each beta must be in [0, 1), got {list(o.betas)} (beta {i + 1} = {b})")
    if t.threads is not None and t.threads < 1:
        raise _error(f"trainer.threads: must be an integer >= 1 (or null for torch's default), got {t.threads}")
    if r.gen_prompts_per_round is not None and r.gen_prompts_per_round < 1:
        raise _error(f"rollout.gen_prompts_per_round: must be an integer >= 1 (or null: just enough for the "
                     f"shortfall), got {r.gen_prompts_per_round}")
    if r.batch_size is not None and r.batch_size < 1:
        raise _error(f"rollout.batch_size: must be an integer >= 1 (or null: all sequences in one generate "
                     f"call), got {r.batch_size}")
    if cfg.trainer.overwrite and cfg.trainer.resume:
        cfg.trainer.resume = False  # replacing the run in output_dir: start afresh, do not load its checkpoint
    _check_device(cfg.model.device)
    _check_model_path(cfg.model.name_or_path)
    for name in ("wandb", "trackio"):
        if getattr(cfg.logging, name) and importlib.util.find_spec(name) is None:
            raise _error(f"logging.{name}: true needs the '{name}' package: pip install 'stare-rl[{name}]' "
                         f"(or set logging.{name}=false)")
    return cfg


# ------------------------------------------------------------------------------------------ the prompts


def _context(model) -> int | None:
    conf = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(conf, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_prompt_lengths(tokenizer, model, cfg, *splits: Sequence) -> None:
    """Every prompt of the given example lists must fit the model's context with ``rollout.max_new_tokens``
    of response; else a ``UserError`` naming the first prompt that does not, its length and the limit.

    Only prompts whose UTF-8 size could exceed the limit are tokenized (a token covers at least one byte
    with every tokenizer we know of; the chat template's own tokens are measured once)."""
    from ..checks import UserError
    from ..env.base import Example
    from .tasks import encode_prompt

    context = _context(model)
    if context is None:
        return
    r = cfg.rollout
    limit = context - r.max_new_tokens
    if limit < 1:
        raise UserError(f"rollout.max_new_tokens: {r.max_new_tokens} leaves no room for a prompt in the model's "
                        f"context of {context} positions; use at most {context - 1}")
    chat = cfg.model.chat_template

    def size(ex) -> int:
        return len(encode_prompt(tokenizer, ex, chat))

    empty = Example(prompt=[{"role": "user", "content": ""}], answer="")
    overhead = size(empty) + 8  # template tokens around one message, plus slack
    for examples in splits:
        for ex in examples:
            if isinstance(ex.prompt, str):
                nbytes, messages = len(ex.prompt.encode("utf-8", "replace")), 1
            else:
                nbytes = sum(len(str(m.get("content", "")).encode("utf-8", "replace")) for m in ex.prompt)
                messages = len(ex.prompt)
            if nbytes + overhead * messages <= limit:
                continue
            n = size(ex)
            if n > limit:
                where = ex.meta.get("origin") or ex.uid or ex.source or "a prompt"
                raise UserError(
                    f"prompt too long: {where} has {n:,} tokens, but the model's context of {context:,} positions "
                    f"minus rollout.max_new_tokens ({r.max_new_tokens}) allows at most {limit:,}; shorten or drop "
                    f"it, or lower rollout.max_new_tokens")


def preflight(task, tokenizer, model, cfg, *splits: Sequence) -> None:
    """Before the first step: prompts within the model's context, and the task's workers started."""
    check_prompt_lengths(tokenizer, model, cfg, *splits)
    wait_ready = getattr(task, "wait_ready", None)
    if callable(wait_ready):
        wait_ready()


def seed_numpy(seed: int) -> None:
    """Seed numpy's global generator too: checkpoints save and restore it with the others, so two runs
    with the same seed must start it alike (it was left to the OS's entropy)."""
    import numpy as np

    np.random.seed(seed % 2**32)
