"""The exploration testbed: reach a target from three numbers, where the hard split needs a strategy the
base model rarely samples, so that collapsing onto the dominant one costs pass@k (docs/testbed.md).

Prompt ``"17,5,12>34:"``: reach 34 from some of 17, 5 and 12, each used at most once. A response writes
one or two steps and the answer, e.g. ``"17+5=22;22+12=34;A:34"``.

* **Easy split**: the target is the sum of the three numbers; adding all of them in any order solves it
  (the dominant strategy: 12 orders x 3 answer forms, as in the addition testbed).
* **Hard split**: the target is the sum of two of the numbers; only adding that pair and answering at
  once solves it (``"17+12=29;A:29"``): the right pair first (1 of 3), then stopping early.

The base model (the same tiny Llama, character tokenizer) is trained by supervised learning on attempts
whose choices ignore the target: a trace adds a pair drawn uniformly, then answers at once with
probability ``early_rate`` (15%) or adds the third number, and ``corrupt_frac`` (20%) of traces carry an
arithmetic slip in the first sum whose rate depends on the pair (``pair_risk``, as in the addition
testbed). So the base model solves the easy split mostly by adding all three (stopping early is always
wrong there) and samples the hard split's solution in about ``early_rate / 3`` of its attempts (measured
base model: hard pass@1 0.03, pass@64 0.78; docs/testbed.md). This is the situation in which RL with verifiable
rewards is reported to narrow what a model can solve (Yue et al. 2025, arXiv 2504.13837): training
mostly on problems the dominant strategy solves sharpens it, and a rarely rewarded strategy is lost.
``hard_frac`` (25%) of the training prompts are hard, so exploration can find the rare strategy and
narrowing can lose it. (Earlier versions are in docs/testbed.md: a subtraction on the hard split, which the
base model learned too poorly from its 10% of traces, hard pass@64 0.19; the early answer at 10% with 30%
slips, hard pass@64 0.44.)

The verifier checks the whole derivation, not only the answer (the target is in the prompt, so an
answer-only check could be gamed by copying it): one or two steps ``u op v = w`` (op ``+`` or ``-``,
integers, possibly negative), the first on two of the three numbers, the second (if any) on the first
step's result and the remaining number (either order), every result right, and an answer in the last
segment (``A:34``, ``A: 34`` or ``=34``) equal to the last result and to the target. Anything else is a
format failure (unparseable) or wrong (accuracy 0). Deterministic given the seed.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Sequence

from ..base import Example, Score
from .task import check_build_fields, check_fraction

__all__ = ["EXPLORE_CHARSET", "ExploreConfig", "ExploreTask", "check_derivation", "make_explore_trace"]

EXPLORE_CHARSET = list("0123456789+-=;A: ,>")
ANSWER_FORMS = ("A:{}", "A: {}", "={}")
_STEP_RE = re.compile(r"\s*(-?\d+)\s*([+-])\s*(-?\d+)\s*=\s*(-?\d+)\s*")
_ANSWER_RE = re.compile(r"\s*(?:A:|=)\s*(-?\d+)\s*")
PAIRS = ((0, 1, 2), (0, 2, 1), (1, 2, 0))  # (first, second, the third number) by pair index
SOURCES = ("explore_easy", "explore_hard")


@dataclass(frozen=True)
class ExploreConfig:
    """Everything that defines the exploration testbed and its base model (hashed for the cache, except
    ``train_hard_frac``, which changes the RL training prompts only)."""

    max_value: int = 20  # numbers in [1, max_value], as the addition testbed's operands
    hard_frac: float = 0.25  # share of hard prompts among the training prompts (SFT and, by default, RL)
    early_rate: float = 0.15  # share of SFT attempts that answer after the first pair (the rare strategy)
    corrupt_frac: float = 0.2  # share of SFT traces with an arithmetic slip (mean over pairs)
    pair_risk: tuple[float, float, float] = (0.25, 1.0, 1.75)  # slip-rate multipliers of the three pairs
    sft_examples: int = 40000
    sft_steps: int = 800
    sft_batch: int = 64
    sft_lr: float = 3e-3
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    seed: int = 0
    train_prompts: int = 20000
    test_prompts: int = 256  # per split; the test list alternates easy and hard
    # share of hard prompts among the RL training prompts, when it should differ from the SFT mix; the base
    # model does not depend on it (None: hard_frac, the same prompts as the SFT data)
    train_hard_frac: float | None = None

    kind = "explore"
    NOT_HASHED = ("train_hard_frac",)

    def __post_init__(self) -> None:
        check_build_fields(self)
        for name in ("hard_frac", "early_rate", "corrupt_frac", "train_hard_frac"):
            check_fraction(self, name)
        if self.max_value < 2:
            raise ValueError(f"model.testbed.max_value must be >= 2, got {self.max_value}")
        if max(self.pair_risk) * self.corrupt_frac > 1:
            raise ValueError(f"model.testbed.pair_risk needs 3 multipliers with corrupt_frac x each <= 1, "
                             f"got {self.pair_risk}")

    def digest(self) -> str:
        """Hash of what defines the base model (every field but ``NOT_HASHED``)."""
        fields = {k: v for k, v in asdict(self).items() if k not in self.NOT_HASHED}
        return hashlib.sha256(json.dumps({"kind": self.kind, **fields}, sort_keys=True).encode()).hexdigest()[:16]

    def cache_name(self) -> str:
        return f"testbed-explore-{self.digest()}"

    def make_task(self) -> "ExploreTask":
        return ExploreTask(self)

    @property
    def charset(self) -> list[str]:
        return EXPLORE_CHARSET


def make_explore_trace(numbers: Sequence[int], rng: random.Random, early_rate: float, corrupt_frac: float,
                       pair_risk: Sequence[float] = (1.0, 1.0, 1.0), *, pair: int | None = None,
                       early: bool | None = None, corrupt: bool | None = None) -> str:
    """One attempt on ``numbers``: add a pair (drawn uniformly, either order), then answer at once
    (probability ``early_rate``) or add the third number (on either side); the first sum slips by 1-3
    with probability ``corrupt_frac * pair_risk[pair]``, the rest consistent with it. The target plays no
    part (the base model's attempts ignore it). ``pair``, ``early``, ``corrupt`` force a choice."""
    pair = rng.randrange(3) if pair is None else pair
    i, j, k = PAIRS[pair]
    x, y, z = numbers[i], numbers[j], numbers[k]
    if rng.random() < 0.5:
        x, y = y, x
    s1 = x + y
    if corrupt is None:
        corrupt = rng.random() < corrupt_frac * pair_risk[pair]
    if corrupt:
        s1 = max(0, s1 + rng.choice([-3, -2, -1, 1, 2, 3]))
    if early is None:
        early = rng.random() < early_rate
    steps = f"{x}+{y}={s1};"
    result = s1
    if not early:
        result = s1 + z
        steps += (f"{s1}+{z}" if rng.random() < 0.5 else f"{z}+{s1}") + f"={result};"
    return steps + rng.choice(ANSWER_FORMS).format(result)


def _step(text: str) -> tuple[int, str, int, int] | None:
    m = _STEP_RE.fullmatch(text)
    return None if m is None else (int(m.group(1)), m.group(2), int(m.group(3)), int(m.group(4)))


def check_derivation(numbers: Sequence[int], target: int, response: str) -> tuple[bool, bool, int | None]:
    """(format_ok, correct, answer) of a response (module docstring). Never raises."""
    parts = response.split(";")
    if len(parts) not in (2, 3):
        return False, False, None
    steps = [_step(p) for p in parts[:-1]]
    m = _ANSWER_RE.fullmatch(parts[-1])
    if any(st is None for st in steps) or m is None:
        return False, False, None
    answer = int(m.group(1))
    arith = lambda p, op, q: p + q if op == "+" else p - q  # noqa: E731
    u, op1, v, w1 = steps[0]
    rest = Counter(numbers)
    rest.subtract([u, v])
    if min(rest.values()) < 0 or arith(u, op1, v) != w1:  # the first step: two of the numbers, right
        return True, False, answer
    last = w1
    if len(steps) == 2:
        a, op2, b, w2 = steps[1]
        third = next(n for n, c in rest.items() if c > 0)
        if sorted((a, b)) != sorted((w1, third)) or arith(a, op2, b) != w2:
            return True, False, answer
        last = w2
    return True, answer == last == target, answer


class ExploreTask:
    """Task interface (``stare.env.Task``) for the exploration testbed (module docstring)."""

    name = "testbed_explore"

    def __init__(self, cfg: ExploreConfig | None = None) -> None:
        self.cfg = cfg or ExploreConfig()
        self._splits: dict[str, list[Example]] = {}

    def _instance(self, rng: random.Random, hard: bool) -> tuple[tuple[int, int, int], int]:
        m = self.cfg.max_value
        while True:
            nums = (rng.randint(1, m), rng.randint(1, m), rng.randint(1, m))
            if not hard:
                return nums, sum(nums)
            k = rng.randrange(3)
            return nums, sum(nums) - nums[k]  # the other two

    def examples(self, split: str) -> list[Example]:
        if split not in ("train", "test", "sft"):
            raise ValueError(f"unknown split '{split}'; valid: train, test (and sft: the base model's prompts)")
        if not self._splits:
            c = self.cfg
            rng = random.Random(f"{c.seed}-explore-prompts")
            test_set: set = set()

            def draw(hard: bool, test: bool):
                # test instances are distinct; training ones avoid them and may repeat (as the addition
                # testbed's: there are only max_value^3 easy instances)
                while True:
                    inst = self._instance(rng, hard)
                    if inst not in test_set:
                        if test:
                            test_set.add(inst)
                        return inst, hard

            def mix(frac: float, order: str):
                n_hard = round(c.train_prompts * frac)
                items = [draw(True, False) for _ in range(n_hard)] + [draw(False, False)
                                                                      for _ in range(c.train_prompts - n_hard)]
                random.Random(order).shuffle(items)
                return items

            test = [draw(hard, True) for _ in range(c.test_prompts) for hard in (False, True)]  # alternating
            sft = mix(c.hard_frac, f"{c.seed}-explore-order")
            train = sft
            if c.train_hard_frac is not None and c.train_hard_frac != c.hard_frac:
                rng = random.Random(f"{c.seed}-explore-train-{c.train_hard_frac}")
                train = mix(c.train_hard_frac, f"{c.seed}-explore-train-order")
            for name, items in (("test", test), ("train", train), ("sft", sft)):
                self._splits[name] = [
                    Example(prompt=f"{a},{b},{cc}>{t}:", answer=str(t), source=SOURCES[hard], uid=f"{name}-{i}",
                            meta={"numbers": [a, b, cc]})
                    for i, (((a, b, cc), t), hard) in enumerate(items)]
        return self._splits[split]

    def score(self, example: Example, response: str) -> Score:
        try:
            numbers = example.meta.get("numbers") or parse_prompt(example.prompt)[0]
            fmt, ok, answer = check_derivation(numbers, int(example.answer), response)
        except (ValueError, TypeError, AttributeError):
            return Score(reward=0.0, acc=0.0, format_ok=False, pred=None)
        acc = float(ok)
        return Score(reward=acc, acc=acc, format_ok=fmt, pred=None if answer is None else str(answer))

    def sft_texts(self) -> list[tuple[str, str]]:
        """(prompt, response) pairs for supervised training of the base model: attempts on training
        prompts of both splits (``make_explore_trace``), mixed as ``hard_frac`` says."""
        c = self.cfg
        rng = random.Random(f"{c.seed}-explore-sft")
        train = self.examples("sft")
        out = []
        for _ in range(c.sft_examples):
            ex = train[rng.randrange(len(train))]
            out.append((ex.prompt, make_explore_trace(ex.meta["numbers"], rng, c.early_rate, c.corrupt_frac,
                                                      c.pair_risk)))
        return out


def parse_prompt(prompt: str) -> tuple[list[int], int]:
    """``"17,5,12>34:"`` -> ([17, 5, 12], 34)."""
    head, _, tail = prompt.partition(">")
    return [int(x) for x in head.split(",")], int(tail.rstrip(":"))
