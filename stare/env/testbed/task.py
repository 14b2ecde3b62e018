"""The CPU testbed: three-number addition with many valid solution paths, where GRPO collapses entropy
in minutes.

Prompt ``"17+5+42="``. A response writes two partial sums and the answer, e.g. ``"17+42=59;59+5=64;A:64"``.
There are 12 valid orders (which pair to add first: 3, its internal order: 2, which side the third term
goes: 2), and three answer forms (``A:64``, ``A: 64``, ``=64``); every one of them is correct. So the
next-token distribution of a model trained on varied traces has real entropy at the choice points, and
GRPO's self-reinforcement ("confident tokens rewarded") collapses it onto one path.

The base model is a tiny Llama (Hugging Face architecture, ~1M parameters, character tokenizer built
here) trained by supervised learning on traces of which ``corrupt_frac`` (40%) carry an arithmetic slip
(one partial sum off by a few units, and the answer consistent with it), so its accuracy is well below
the ceiling and RL has something to learn. Slips are likelier on some paths than others (``pair_risk``:
the first pair chosen sets the slip rate to 10%, 40% or 70%), like reasoning strategies that differ in
reliability: all paths stay valid, but reward favours some, which is what drives a policy to collapse
onto one (a first version with uniform slips collapsed entropy only 3-4x in 300 steps; docs/testbed.md). Built once per configuration and cached by the hash of that
configuration; deterministic given the seed.

The verifier reads the answer from the last ``;``-separated segment in any of the three forms, allows
surrounding spaces and leading zeros, and returns accuracy in {0, 1}; a response with no answer is a format failure.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import asdict, dataclass
from typing import Sequence

from ..base import Example, Score

__all__ = ["TestbedConfig", "AdditionTask", "make_trace", "build_tokenizer", "CHARSET"]

CHARSET = list("0123456789+=;A: ")
ANSWER_FORMS = ("A:{}", "A: {}", "={}")
_ANSWER_RE = re.compile(r"\s*(?:A:|=)\s*(\d+)\s*")


def _bad(cfg, key: str, why: str) -> ValueError:
    return ValueError(f"model.testbed.{key}: {why}, got {getattr(cfg, key)!r}")


def check_fraction(cfg, key: str) -> None:
    """``cfg.<key>`` is a number in [0, 1] (or None where the field allows it: not checked then)."""
    value = getattr(cfg, key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1):
        raise _bad(cfg, key, "must be a number in [0, 1]")


def check_build_fields(cfg) -> None:
    """The checks every testbed configuration shares (the fields of the SFT data, the model and the prompt
    lists): positive integers, an integer seed, a learning rate in (0, 1], three non-negative slip-rate
    multipliers, and heads that split the hidden size into even head sizes; each error names the key."""
    for key in ("max_value", "sft_examples", "sft_steps", "sft_batch", "hidden_size", "layers", "heads",
                "train_prompts", "test_prompts"):
        value = getattr(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _bad(cfg, key, "must be an integer >= 1")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise _bad(cfg, "seed", "must be an integer")
    lr = cfg.sft_lr
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr <= 1:
        raise _bad(cfg, "sft_lr", "must be a number in (0, 1]")
    risk = cfg.pair_risk
    if not isinstance(risk, (list, tuple)) or len(risk) != 3 or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in risk):
        raise _bad(cfg, "pair_risk", "must be three numbers >= 0 (slip-rate multipliers of the three first pairs)")
    if cfg.hidden_size % cfg.heads or (cfg.hidden_size // cfg.heads) % 2:
        raise _bad(cfg, "heads", f"must divide model.testbed.hidden_size ({cfg.hidden_size}) into an even head "
                   f"size (rotary embeddings)")


@dataclass(frozen=True)
class TestbedConfig:
    """Everything that defines the testbed task and its base model (hashed for the cache)."""

    max_value: int = 20  # operands in [0, max_value]: sums up to 60, learnable by a ~1M model in minutes
    corrupt_frac: float = 0.4  # share of SFT traces with an arithmetic slip (the prototype's 40%)
    # Slip-rate multipliers of the three possible first pairs (mean 1): some solution paths are riskier,
    # as reasoning strategies are, so RL has a reason to prefer some paths and collapse onto them.
    pair_risk: tuple[float, float, float] = (0.25, 1.0, 1.75)
    sft_examples: int = 40000
    sft_steps: int = 800  # base accuracy ~35% at T = 1 (docs/testbed.md)
    sft_batch: int = 64
    sft_lr: float = 3e-3
    hidden_size: int = 128
    layers: int = 4  # 0.86M parameters
    heads: int = 4
    seed: int = 0
    train_prompts: int = 20000
    test_prompts: int = 512

    kind = "addition"  # the testbed's name in ``model.testbed.task`` (a class attribute: not hashed)

    def __post_init__(self) -> None:
        """Refuse values the build would fail on (a raw torch error) or hang on (more distinct test prompts
        than exist), naming the ``model.testbed`` key."""
        check_build_fields(self)
        check_fraction(self, "corrupt_frac")
        distinct = (self.max_value + 1) ** 3
        if self.test_prompts >= distinct:
            raise _bad(self, "test_prompts", f"must be below the {distinct:,} distinct prompts of max_value "
                       f"{self.max_value} (the training prompts are drawn from the rest)")

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    def cache_name(self) -> str:
        return f"testbed-{self.digest()}"

    def make_task(self) -> "AdditionTask":
        return AdditionTask(self)

    @property
    def charset(self) -> list[str]:
        return CHARSET


def make_trace(terms: Sequence[int], rng: random.Random, corrupt_frac: float,
               pair_risk: Sequence[float] = (1.0, 1.0, 1.0), *, corrupt: bool | None = None) -> str:
    """One solution trace for ``terms`` (3 numbers) in a random valid order and answer form.

    The first pair (first two, first and last, last two terms) is drawn uniformly; the trace has a slip
    with probability ``corrupt_frac * pair_risk[pair]`` (``corrupt`` forces it on or off).
    """
    a, b, c = terms
    pair = rng.randrange(3)
    x, y, z = [(a, b, c), (a, c, b), (b, c, a)][pair]
    if rng.random() < 0.5:
        x, y = y, x
    s1 = x + y
    if corrupt is None:
        corrupt = rng.random() < corrupt_frac * pair_risk[pair]
    if corrupt:
        s1 = max(0, s1 + rng.choice([-3, -2, -1, 1, 2, 3]))
    second = f"{s1}+{z}" if rng.random() < 0.5 else f"{z}+{s1}"
    s2 = s1 + z
    form = rng.choice(ANSWER_FORMS)
    return f"{x}+{y}={s1};{second}={s2};" + form.format(s2)


def parse_answer(response: str) -> int | None:
    """The answer in the last ``;``-separated segment (``A:64``, ``A: 64`` or ``=64``), else None."""
    m = _ANSWER_RE.fullmatch(response.rsplit(";", 1)[-1])
    return int(m.group(1)) if m else None


class AdditionTask:
    """Task interface (``stare.env.Task``) for three-number addition."""

    name = "testbed_addition"

    def __init__(self, cfg: TestbedConfig | None = None) -> None:
        self.cfg = cfg or TestbedConfig()
        self._splits: dict[str, list[Example]] = {}

    def _terms(self, rng: random.Random) -> tuple[int, int, int]:
        m = self.cfg.max_value
        return rng.randint(0, m), rng.randint(0, m), rng.randint(0, m)

    def examples(self, split: str) -> list[Example]:
        if split not in ("train", "test"):
            raise ValueError(f"unknown split '{split}'; valid: train, test")
        if split not in self._splits:
            # disjoint: test prompts are drawn first and excluded from train
            rng = random.Random(f"{self.cfg.seed}-prompts")
            test, seen = [], set()
            while len(test) < self.cfg.test_prompts:
                t = self._terms(rng)
                if t not in seen:
                    seen.add(t)
                    test.append(t)
            train = []
            while len(train) < self.cfg.train_prompts:
                t = self._terms(rng)
                if t not in seen:
                    train.append(t)
            for name, terms in (("test", test), ("train", train)):
                self._splits[name] = [
                    Example(prompt=f"{a}+{b}+{c}=", answer=str(a + b + c), source=self.name, uid=f"{name}-{i}")
                    for i, (a, b, c) in enumerate(terms)
                ]
        return self._splits[split]

    def score(self, example: Example, response: str) -> Score:
        pred = parse_answer(response)
        if pred is None:
            return Score(reward=0.0, acc=0.0, format_ok=False, pred=None)
        acc = float(pred == int(example.answer))
        return Score(reward=acc, acc=acc, format_ok=True, pred=str(pred))

    def sft_texts(self) -> list[tuple[str, str]]:
        """(prompt, response) pairs for supervised training of the base model."""
        rng = random.Random(f"{self.cfg.seed}-sft")
        train = self.examples("train")
        out = []
        for _ in range(self.cfg.sft_examples):
            ex = train[rng.randrange(len(train))]
            terms = [int(t) for t in ex.prompt[:-1].split("+")]
            out.append((ex.prompt, make_trace(terms, rng, self.cfg.corrupt_frac, self.cfg.pair_risk)))
        return out


def build_tokenizer(charset: Sequence[str] = tuple(CHARSET)):
    """A character-level ``PreTrainedTokenizerFast`` over ``charset`` (default the addition testbed's
    ``CHARSET``) plus pad/bos/eos, built offline."""
    from tokenizers import Regex, Tokenizer, decoders
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Split
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>"]
    vocab = {tok: i for i, tok in enumerate(specials + list(charset))}
    core = Tokenizer(WordLevel(vocab=vocab, unk_token="<pad>"))
    core.pre_tokenizer = Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()  # characters join without separators
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    tok.padding_side = "left"
    return tok
