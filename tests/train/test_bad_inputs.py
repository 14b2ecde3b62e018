"""Issue 15: every user error, from any layer, is one line on stderr naming the field and what is valid
(exit 2); nothing is accepted that trains nothing. The full table of bad inputs, each in its own
process, is experiments/bad_inputs.py (docs/training.md)."""

import importlib.util
import json

import pytest
import torch

from stare.cli import main
from stare.env.base import Example
from stare.train.config import ConfigError, load_config

from conftest import TINY_TESTBED, ContainsOneTask

TINY = "model.testbed={" + ", ".join(f"{k}: {v}" for k, v in TINY_TESTBED.items()) + "}"


def _run(capsys, tmp_path, *args, config="{}\n"):
    f = tmp_path / "c.yaml"
    f.write_text(config)
    rc = main(["train", str(f), TINY, f"output_dir={tmp_path / 'run'}", "trainer.steps=1", "trainer.threads=1",
               "logging.progress=false", "logging.tensorboard=false", *args])
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("args, config, field", [
    ((), "rollout: {n: 4\noptim: [\n", "c.yaml: not valid YAML: line 2, column 6"),  # traceback before
    (("rollout.n=[1,",), "{}\n", "override 'rollout.n=[1,'"),  # traceback before
    (("optim.betas=[0.9, 1.5]",), "{}\n", "optim.betas: each beta must be in [0, 1)"),  # torch error at the optimizer
    (("trainer.threads=-1",), "{}\n", "trainer.threads: must be an integer >= 1"),  # torch error
    (("rollout.gen_prompts_per_round=-4",), "{}\n", "rollout.gen_prompts_per_round: must be an integer >= 1"),  # trained nothing, exit 0
    (("rollout.batch_size=-2",), "{}\n", "rollout.batch_size: must be an integer >= 1"),  # misleading message
    (("model.name_or_path=/nonexistent/model",), "{}\n", "model.name_or_path: no folder '/nonexistent/model'"),
    (("model.name_or_path=not/a/valid/id",), "{}\n", "model.name_or_path: no folder 'not/a/valid/id'"),
    (("model.testbed.heads=3",), "{}\n", "model.testbed.heads: must divide model.testbed.hidden_size (32)"),
    (("model.testbed.test_prompts=100000",), "{}\n", "model.testbed.test_prompts: must be below the 9,261"),  # hung
    (("task.name=nope",), "{}\n", "task.name: unknown task 'nope'"),
    (("task.name=math",), "{}\n", "task.options.train: task 'math' needs training data"),  # traceback
    (("task.name=math", "task.options={train: /nonexistent.jsonl}"), "{}\n", "task.options.train: no such file"),
    (("task.options={foo: 1}",), "{}\n", "task.options: task 'testbed' takes no options"),
])
def test_bad_input_is_one_line_naming_the_field(capsys, tmp_path, args, config, field):
    rc, err = _run(capsys, tmp_path, *args, config=config)
    assert rc == 2 and len(err) == 1 and err[0].startswith("stare: ") and field in err[0], err


def test_a_bad_data_row_is_one_line_naming_file_row_and_field(capsys, tmp_path):
    data = _jsonl(tmp_path / "d.jsonl", [{"problem": "1+1?", "answer": "2"}, {"problem": "2+2?"}])
    rc, err = _run(capsys, tmp_path, "task.name=math", f"task.options={{train: {data}}}")
    assert rc == 2 and len(err) == 1, err  # a traceback before
    assert err[0].startswith("stare: data error: ") and "d.jsonl: line 2: field 'answer': missing" in err[0]


def test_a_task_option_error_from_the_task_itself_names_the_option(capsys, tmp_path):
    data = _jsonl(tmp_path / "d.jsonl", [{"problem": "p", "answer": "1"}])
    rc, err = _run(capsys, tmp_path, "task.name=tool_use", f"task.options={{train: {data}, max_turns: -1}}")
    assert rc == 2 and len(err) == 1 and "task.options.max_turns: must be an integer >= 0" in err[0], err


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_a_missing_logging_package_is_named_before_anything_loads(capsys, tmp_path):
    rc, err = _run(capsys, tmp_path, "logging.wandb=true")  # an ImportError traceback after the model loaded
    assert rc == 2 and len(err) == 1 and "logging.wandb: true needs the 'wandb' package" in err[0], err


@pytest.mark.skipif(torch.cuda.device_count() > 7, reason="this machine has a cuda:7")
def test_a_device_that_does_not_exist(capsys, tmp_path):
    rc, err = _run(capsys, tmp_path, "model.device=cuda:7")
    assert rc == 2 and len(err) == 1 and "model.device: 'cuda:7' but torch sees" in err[0], err


class LongPromptTask(ContainsOneTask):
    def __init__(self):
        super().__init__()
        self._ex["test"] = self._ex["test"] + [Example(prompt="1+" * 40 + "1=", answer="", uid="long",
                                                       meta={"origin": "long.jsonl: line 9"})]


def test_a_prompt_longer_than_the_context_is_refused_naming_it(capsys, tmp_path, monkeypatch):
    from stare.train import tasks

    monkeypatch.setitem(tasks.TASKS, "long_prompt", lambda cfg: LongPromptTask())
    rc, err = _run(capsys, tmp_path, "task.name=long_prompt", "rollout.max_new_tokens=8")
    assert rc == 2 and len(err) == 1, err  # generated past the model's 64 positions before (a 1 MB prompt hung)
    assert "prompt too long: long.jsonl: line 9 has 83 tokens" in err[0] and "allows at most 56" in err[0]


def test_the_library_raises_config_error_for_config_checks():
    with pytest.raises(ConfigError, match=r"optim.betas: each beta must be in \[0, 1\)"):
        load_config(None, ["optim.betas=[0.9, 1.0]"])
    assert load_config(None, ["optim.betas=[0.0, 0.99]"]).optim.betas == (0.0, 0.99)
