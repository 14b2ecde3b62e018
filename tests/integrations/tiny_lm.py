"""A tiny causal LM and tokenizer built locally (no hub): a word-level tokenizer over a fixed vocabulary
and a two-layer Llama of about 30 K parameters. Shared by the TRL tests and the two-process script."""

from __future__ import annotations

WORDS = ["a", "b", "c", "d", "e", "f", "g", "h", "yes", "no", "one", "two", "three", "four", "five", "six"]
SPECIAL = ["<pad>", "<bos>", "<eos>", "<unk>"]


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL + WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>",
                                  unk_token="<unk>")
    tok.padding_side = "left"
    return tok


def tiny_model(tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def prompts_dataset(n: int = 8):
    from datasets import Dataset

    return Dataset.from_dict({"prompt": [f"{WORDS[i % 8]} {WORDS[8 + i % 8]}" for i in range(n)]})


def count_yes(completions, **kwargs):
    """A verifiable reward: how often the word 'yes' appears (varies within a group, so advantages are not 0)."""
    return [float(c.split().count("yes")) + 0.1 * len(c.split()) for c in completions]
