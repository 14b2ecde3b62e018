"""reasoning-gym tasks by name, with a denylist of verifiers that are wrong or unsafe, scored with time
limits in worker processes.

``GymTask(["chain_sum", "word_sorting"], size=1000)`` generates ``size`` training and ``test_size``
test problems per task (separate seeds), as chat prompts that ask for the answer between
``<answer>`` and ``</answer>``. Scoring takes the last ``<answer>`` block (after ``</think>`` if there
is one) and calls the dataset's own ``score_answer`` in a ``ProcessPool`` worker with a wall-clock
limit; ``acc`` is 1 when that score is 1. The training reward is ``acc`` (the default) or, with
``partial_credit=True``, the library's partial score: several verifiers give 0.01-0.05 for any
non-empty answer, which is a format reward in disguise, hence off by default.

``DENYLIST`` names each excluded task and why: verifiers checked against reasoning-gym 0.1.25 (the
pinned version) that accept wrong answers, and verifiers or generators that ``eval``/``exec`` model
output or dataset strings (this project evaluates neither). ``tests/tasks/test_gym.py`` demonstrates
the two wrong-answer bugs on the pinned version, so that an upgrade that fixes them is noticed.

Prompts are ours: reasoning-gym's system prompts can be used instead by key
(``system_prompt="default"`` reads ``reasoning_gym.utils.SYSTEM_PROMPTS`` at run time).
"""

from __future__ import annotations

import re

import difflib
from pathlib import Path
from typing import Any, Mapping, Sequence

from ...checks import UserError
from ..procpool import CallTimeout, ProcessPool, WorkerDied, WorkerError
from ..answers import after_thinking, last_answer_tag, to_text
from ..base import Example, Score

__all__ = ["DENYLIST", "GymTask", "available_tasks", "extract_tagged_answer"]

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

_HANDLER = Path(__file__).with_name("_gym_handler.py")

DENYLIST: dict[str, str] = {
    # Verifiers that accept wrong answers.
    "game_of_life_halting": "score_answer compares bool(answer) with bool(oracle); the oracle is a non-empty "
    "string, so every non-empty answer scores 1.0",
    "coin_flip": "partial credit for a matching numeric prefix is divided by the shorter length: the answer "
    "'0' scores 1.0 for every probability below 1",
    "puzzle24": "checks that four in-range numbers were used, not the given four; evaluates the answer with "
    "sympy parse_expr (eval) and truncates with int()",
    # Verifiers that eval model output (directly or through sympy's parse_expr).
    "countdown": "scores by evaluating the answer with sympy parse_expr (eval)",
    "polynomial_multiplication": "scores by evaluating the answer with sympy parse_expr (eval)",
    "simple_integration": "scores by evaluating the answer with sympy parse_expr (eval)",
    "intermediate_integration": "scores by evaluating the answer with sympy parse_expr (eval)",
    "binary_matrix": "calls eval() on any answer that is not an exact match",
    "n_queens": "calls eval() on any answer that is not an exact match",
    "spiral_matrix": "calls eval() on any answer that is not an exact match",
    "string_insertion": "calls eval() on any answer that is not an exact match",
    "number_sorting": "falls back to eval() of the stored answer string",
    "bitwise_arithmetic": "verify_solution() eval()s the stored problem expression on every check",
    # Generators that exec dataset code.
    "codeio": "generation exec()s code stored in the dataset",
    # Not a task.
    "composite": "a mixture of other tasks: name them instead",
}

DEFAULT_INSTRUCTION = (
    "{question}\n\nThink it through, then give only the final answer between <answer> and </answer>."
)
TEST_SEED_OFFSET = 1_000_003  # test problems come from another seed than training problems



def available_tasks() -> list[str]:
    """Every registered reasoning-gym task that is not in ``DENYLIST``."""
    from reasoning_gym.factory import DATASETS

    return sorted(n for n in DATASETS if n not in DENYLIST)


def extract_tagged_answer(response: Any) -> str | None:
    """Content of the last ``<answer>...</answer>`` (after the last ``</think>``), stripped."""
    text, _ = after_thinking(to_text(response))
    found = last_answer_tag(text)
    return found.strip() if found is not None else None


class GymTask:
    """reasoning-gym problems; implements ``stare.env.Task`` (and ``score_batch``).

    names: task names, "all" (``available_tasks()``), or a mapping name -> config overrides.
    size / test_size: problems per task in each split. seed: the training seed.
    untagged_answer: "none" (a response without ``<answer>`` tags scores 0) or "last_number" (its last
        number is verified instead, format flag False; for small models that ignore the tags).
    instruction: user-message template with ``{question}``; system_prompt: a key of
        ``reasoning_gym.utils.SYSTEM_PROMPTS`` to send as a system message instead.
    """

    def __init__(
        self,
        names: str | Sequence[str] | Mapping[str, Mapping[str, Any]],
        *,
        size: int = 1000,
        test_size: int = 100,
        seed: int = 0,
        partial_credit: bool = False,
        untagged_answer: str = "none",
        instruction: str = DEFAULT_INSTRUCTION,
        system_prompt: str | None = None,
        timeout_s: float = 2.0,
        num_workers: int = 1,
        max_answer_chars: int = 10_000,
        name: str | None = None,
    ):
        from reasoning_gym.factory import DATASETS

        if names == "all":
            names = available_tasks()
        configs = {n: {} for n in ([names] if isinstance(names, str) else names)}
        if isinstance(names, Mapping):
            configs = {n: dict(c or {}) for n, c in names.items()}
        if not configs:
            raise UserError("names: no reasoning-gym task named")
        for n in configs:
            if n in DENYLIST:
                raise UserError(f"names: reasoning-gym task {n!r} is excluded: {DENYLIST[n]}")
            if n not in DATASETS:
                close = difflib.get_close_matches(n, list(DATASETS), n=3)
                hint = f"did you mean {close}? " if close else ""
                raise UserError(f"names: unknown reasoning-gym task {n!r}; {hint}"
                                f"({len(DATASETS) - len(DENYLIST)} available: see available_tasks())")
            for key in ("seed", "size"):
                if key in configs[n]:
                    raise UserError(f"names: {n}: set {key!r} through GymTask's own argument, not the config")
        if "{question}" not in instruction:
            raise UserError("instruction: must contain '{question}'")
        if system_prompt is not None:
            from reasoning_gym.utils import SYSTEM_PROMPTS

            if system_prompt not in SYSTEM_PROMPTS:
                raise UserError(f"system_prompt: unknown system_prompt {system_prompt!r}; valid: {sorted(SYSTEM_PROMPTS)}")
            self._system = SYSTEM_PROMPTS[system_prompt]
        else:
            self._system = None
        self.name = name or "gym:" + ",".join(configs)
        self.configs = configs
        self.sizes = {"train": size, "test": test_size}
        self.seeds = {"train": seed, "test": seed + TEST_SEED_OFFSET}
        self.partial_credit = partial_credit
        if untagged_answer not in ("none", "last_number"):
            raise UserError(f"untagged_answer: must be 'none' or 'last_number', got {untagged_answer!r}")
        self.untagged_answer = untagged_answer
        self.instruction = instruction
        self.max_answer_chars = max_answer_chars
        self._cache: dict[str, list[Example]] = {}
        self._pool_args = dict(num_workers=num_workers, timeout_s=timeout_s, memory_mb=2048)
        self._pool: ProcessPool | None = None
        self.pool  # the workers start now (a call's limit counts their start-up, so they start early)

    @property
    def pool(self) -> ProcessPool:
        if self._pool is None:
            self._pool = ProcessPool(_HANDLER, **self._pool_args)
        return self._pool

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until the scoring workers have started (a score made before may time out: 0)."""
        self.pool.wait_ready(timeout_s)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def examples(self, split: str) -> Sequence[Example]:
        if split not in self.sizes:
            raise KeyError(f"unknown split {split!r}; valid: {sorted(self.sizes)}")
        if split not in self._cache:
            self._cache[split] = self._generate(split)
        return self._cache[split]

    def _generate(self, split: str) -> list[Example]:
        import reasoning_gym

        per_task = []
        for n, overrides in self.configs.items():
            config = dict(overrides, seed=self.seeds[split], size=self.sizes[split])
            dataset = reasoning_gym.create_dataset(n, **config)
            rows = []
            for i in range(self.sizes[split]):
                entry = dataset[i]
                user = self.instruction.replace("{question}", str(entry["question"]))
                prompt = [{"role": "user", "content": user}]
                if self._system is not None:
                    prompt = [{"role": "system", "content": self._system},
                              {"role": "user", "content": str(entry["question"])}]
                answer = entry.get("answer")
                rows.append(Example(
                    prompt=prompt,
                    answer="" if answer is None else str(answer),
                    source=f"gym/{n}",
                    uid=f"gym/{n}/{split}/{i}",
                    meta={"gym": n, "config": config, "entry": entry},
                ))
            per_task.append(rows)
        # interleave tasks so that any prefix of the split mixes them
        return [rows[i] for i in range(max(map(len, per_task))) for rows in per_task if i < len(rows)]

    # -- scoring ---------------------------------------------------------------------------------

    def _prepare(self, example: Example, response: Any) -> tuple[Score | None, str | None, bool]:
        """(a final score, or None and the answer to verify, and whether the answer was tagged)."""
        answer = extract_tagged_answer(response)
        if answer is None and self.untagged_answer == "last_number":
            # small models that ignore the tag instruction: the last number of the text is the answer
            # (opt-in; numeric tasks only make sense; the format flag of the score stays False)
            found = _NUMBER.findall(after_thinking(to_text(response))[0][-self.max_answer_chars:])
            if found:
                return None, found[-1], False
        if answer is None:
            return Score(0.0, 0.0, False, None), None, False
        if len(answer) > self.max_answer_chars:
            return Score(0.0, 0.0, True, answer[:200]), None, True
        return None, answer, True

    def _verdict(self, value: Any, answer: str, tagged: bool = True) -> Score:
        if isinstance(value, BaseException) or value.get("eval_blocked"):
            return Score(0.0, 0.0, tagged, answer[:200])
        s = float(value["score"])
        acc = 1.0 if s >= 1.0 else 0.0
        return Score(s if self.partial_credit else acc, acc, tagged, answer[:200])

    def score(self, example: Example, response: Any) -> Score:
        done, answer, tagged = self._prepare(example, response)
        if done is not None:
            return done
        m = example.meta
        try:
            value = self.pool.call("score", m["gym"], m["config"], m["entry"], answer)
        except (CallTimeout, WorkerDied, WorkerError) as e:
            value = e
        return self._verdict(value, answer, tagged)

    def score_batch(self, examples: Sequence[Example], responses: Sequence[Any]) -> list[Score]:
        out: list[Score | None] = []
        todo = []
        for i, (ex, r) in enumerate(zip(examples, responses)):
            done, answer, tagged = self._prepare(ex, r)
            out.append(done)
            if done is None:
                todo.append((i, answer, tagged))
        args = [(examples[i].meta["gym"], examples[i].meta["config"], examples[i].meta["entry"], a) for i, a, _ in todo]
        values = self.pool.map("score", args, on_error=lambda e, a: e) if args else []
        for (i, answer, tagged), v in zip(todo, values):
            out[i] = self._verdict(v, answer, tagged)
        return out  # type: ignore[return-value]
