"""Benchmark models built locally (nothing downloaded): a model with SmolLM2-135M's architecture and random
weights, with a synthetic word-level tokenizer of the same vocabulary size, saved as a Hugging Face folder
that transformers and vLLM both load.

SmolLM2-135M's configuration (a Llama): hidden 576, intermediate 1536, 30 layers, 9 attention heads,
3 key-value heads, vocabulary 49152, tied embeddings, RoPE theta 100000, RMSNorm eps 1e-5. Speed depends on
the shapes, not on the values, so random weights measure the same tokens/s as the trained model.
"""

from __future__ import annotations

from pathlib import Path

SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0,
                    rms_norm_eps=1e-5, tie_word_embeddings=True)
# the same architecture scaled down, for smoke runs (seconds on a CPU)
TINY = dict(SMOLLM2_135M, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=512)


def word_tokenizer(vocab_size: int):
    """A fast tokenizer with specials <pad> <bos> <eos> and words w3 ... w{V-1}, split on spaces."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, **{f"w{i}": i for i in range(3, vocab_size)}}
    core = Tokenizer(WordLevel(vocab=vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    tok.padding_side = "left"
    return tok


def build_folder(path: str | Path, shape: dict | None = None, dtype: str = "bfloat16", seed: int = 0) -> Path:
    """Write a random-weight Llama of ``shape`` (default SmolLM2-135M's) and its tokenizer to ``path`` (once)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(path)
    if (path / "config.json").exists() and (path / "model.safetensors").exists():
        return path
    shape = dict(shape or SMOLLM2_135M)
    tok = word_tokenizer(shape["vocab_size"])
    torch.manual_seed(seed)
    cfg = LlamaConfig(**shape, bos_token_id=1, eos_token_id=2, pad_token_id=0, dtype=dtype)
    model = LlamaForCausalLM(cfg).to(getattr(torch, dtype))
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


def random_prompts(n: int, length: int, vocab_size: int, seed: int = 0) -> list[list[int]]:
    """``n`` prompts of ``length`` token ids drawn from the word range (no special tokens)."""
    import random

    g = random.Random(seed)
    return [[1] + [g.randrange(3, vocab_size) for _ in range(length - 1)] for _ in range(n)]
