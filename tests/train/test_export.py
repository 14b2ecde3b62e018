"""`stare export`: a run's checkpoint becomes a Hugging Face folder whose model computes the trained model's
logits (full fine-tuning, LoRA merged, LoRA as an adapter); `stare eval --model` evaluates such a folder
exactly as the run's own checkpoint is evaluated. Tiny testbed model (conftest), CPU, seconds."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from stare.cli import main as cli
from stare.train.config import load_config
from stare.train.export import ExportError, export_run, push_to_hub
from stare.train.trainer import Trainer

from conftest import tiny_overrides


def _train(tmp_path, **extra):
    over = tiny_overrides(tmp_path, **extra)
    over["trainer"].update(steps=2, save_every=1, keep_last=2)
    tr = Trainer(load_config(None, over), log=lambda m: None)
    tr.train()
    return tr, tmp_path / "run"


def _logits(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (3, 9), generator=g)
    with torch.no_grad():
        return model.eval()(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    # a large learning rate, so that two steps change what the model samples (the eval test needs it)
    return _train(tmp_path_factory.mktemp("full"), optim={"lr": 0.05})


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("lora"), model={"lora": {"enabled": True, "r": 4, "alpha": 8}})


def test_full_finetune_export_has_the_trained_logits_and_sampling_config(full_run):
    tr, run = full_run
    res = export_run(run, log=None)
    assert res.step == 2 and res.folder == run / "export" / "global_step_2" and not res.merged
    loaded = AutoModelForCausalLM.from_pretrained(res.folder)
    assert torch.equal(_logits(loaded), _logits(tr.model))
    assert (res.folder / "model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(res.folder)
    assert tok("1+2=", add_special_tokens=False).input_ids == tr.tokenizer("1+2=", add_special_tokens=False).input_ids
    gen = loaded.generation_config
    assert gen.do_sample and gen.temperature == tr.cfg.rollout.temperature and gen.eos_token_id == tok.eos_token_id
    assert gen.max_new_tokens == tr.cfg.rollout.max_new_tokens
    info = json.loads((res.folder / "stare_export.json").read_text())
    assert info["step"] == 2 and info["checkpoint"] == "global_step_2"


def test_an_older_step_exports_that_checkpoint(full_run):
    tr, run = full_run
    res = export_run(run, step=1, log=None)
    assert res.folder.name == "global_step_1"
    old = AutoModelForCausalLM.from_pretrained(res.folder)
    new = AutoModelForCausalLM.from_pretrained(export_run(run, log=None).folder)  # re-export over the earlier one
    assert not torch.equal(_logits(old), _logits(new))  # a training step lies between them
    from safetensors.torch import load_file

    saved = load_file(run / "checkpoints" / "global_step_1" / "model.safetensors")
    exported = dict(old.named_parameters())
    for name, value in saved.items():
        assert torch.equal(exported[name], value), name


def test_lora_run_merged_and_as_adapter(lora_run):
    tr, run = lora_run
    assert type(tr.model).__name__.startswith("Peft")
    want = _logits(tr.model)
    merged = export_run(run, log=None)
    assert merged.merged and (merged.folder / "model.safetensors").is_file()
    m = AutoModelForCausalLM.from_pretrained(merged.folder)
    assert not any("lora" in n for n, _ in m.named_parameters())
    torch.testing.assert_close(_logits(m), want, rtol=0, atol=1e-5)  # merging rounds W + BA once

    ad = export_run(run, adapter=True, log=None)
    assert ad.folder.name == "global_step_2-adapter"
    assert (ad.folder / "adapter_config.json").is_file() and (ad.folder / "adapter_model.safetensors").is_file()
    assert not (ad.folder / "model.safetensors").exists()
    a = AutoModelForCausalLM.from_pretrained(ad.folder)
    torch.testing.assert_close(_logits(a), want, rtol=0, atol=1e-6)


def test_lora_update_is_not_a_no_op(lora_run):
    # guards the two tests above against a LoRA whose B stayed 0 (then base == trained and they prove nothing)
    tr, run = lora_run
    with tr.model.disable_adapter():
        base = _logits(tr.model)
    assert (base - _logits(tr.model)).abs().max() > 1e-4


def _eval_json(args, capsys):
    assert cli(args) == 0
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


def test_eval_model_flag_and_override(full_run, capsys):
    tr, run = full_run
    folder = export_run(run, log=None).folder
    cfg = str(run / "config.yaml")
    from_checkpoint = _eval_json(["eval", cfg], capsys)
    from_folder = _eval_json(["eval", cfg, "--model", str(folder)], capsys)
    from_override = _eval_json(["eval", cfg, f"model.name_or_path={folder}"], capsys)
    assert from_checkpoint == from_folder == from_override
    assert "val/acc/mean@4" in from_folder
    # the folder is what gets evaluated: the step-1 export evaluates differently from the run's newest
    # checkpoint (step 2), and so does the base model (no checkpoint)
    step1 = export_run(run, step=1, log=None).folder
    assert _eval_json(["eval", cfg, "--model", str(step1)], capsys) != from_checkpoint
    assert _eval_json(["eval", cfg, "trainer.resume=false"], capsys) != from_checkpoint


def test_errors_are_one_clear_line(full_run, lora_run, tmp_path, capsys, monkeypatch):
    _, run = full_run
    with pytest.raises(ExportError, match="no config.yaml"):
        export_run(tmp_path, log=None)
    with pytest.raises(ExportError, match="--adapter needs a LoRA run"):
        export_run(run, adapter=True, log=None)
    with pytest.raises(ExportError, match=r"--step 7: .*available steps: \[1, 2\]"):
        export_run(run, step=7, log=None)
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="exists and is not an earlier stare export"):
        export_run(run, out=tmp_path / "taken", log=None)
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"
    # push offline: a clear error, the export itself stays on disk; nothing is contacted
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli(["export", str(run), "--out", str(tmp_path / "pushed"), "--push-to-hub", "someone/model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "HF_HUB_OFFLINE" in err[0] and "someone/model" in err[0]
    assert (tmp_path / "pushed" / "model.safetensors").is_file()
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(ExportError, match="no Hugging Face token"):
        push_to_hub(tmp_path / "pushed", "someone/model")
    assert cli(["export", str(tmp_path / "nowhere")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_export_at_the_end_of_a_run(tmp_path):
    tr, run = _train(tmp_path, trainer={"export": "merged"}, optim={"lr": 0.05})
    folder = run / "export" / "global_step_2"
    exported = AutoModelForCausalLM.from_pretrained(folder)
    assert torch.equal(_logits(exported), _logits(tr.model))  # the trained model, as a Hugging Face folder
    assert AutoTokenizer.from_pretrained(folder).eos_token_id == tr.tokenizer.eos_token_id


def test_vllm_backend_without_vllm_is_a_one_line_error(tmp_path):
    pytest.importorskip("transformers")
    try:
        import vllm  # noqa: F401
        pytest.skip("vLLM is installed here")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="rollout.backend=vllm"):
        Trainer(load_config(None, tiny_overrides(tmp_path, rollout={"backend": "vllm"})), log=lambda m: None)
