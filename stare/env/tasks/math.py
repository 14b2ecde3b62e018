"""Math tasks over loaded data: short and long chain of thought, scored by ``MathVerifier``.

``MathTask`` holds train and test examples (from ``stare.env.data.load_examples`` or built by hand) and a
``MathVerifier`` whose math-verify workers start when the task is built (after its data has loaded). ``score_batch``
keeps up to ``num_workers`` checks in flight.

The two families of the STARE paper:

* ``MathTask.short_cot(train, test)``: prompts re-templated with the STARE boxed suffix (docs/methods.md
  §3.5), reward = accuracy in {0, 1} (§3.6).
* ``MathTask.long_cot(train, test, overlong=...)``: the same prompts, an answer only after
  ``</think>`` (a response that never closes its thinking scores 0), and ``task.overlong``, DAPO's
  overlong shaping and truncation masking for the trainer to apply (``stare.env.overlong``); the
  paper's long-CoT lengths are not published, so ``OverlongConfig``'s defaults are DAPO's recipe.

``correct_reward``/``wrong_reward`` map accuracy to the training reward (1/0 for STARE and GRPO-ds;
DAPO's math reward is +1/-1, docs/methods.md §1.5). ``Score.acc`` stays in {0, 1} either way.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from ..data import load_examples
from ..verifiers.math import MathVerifier
from ..overlong import OverlongConfig
from ..base import Example, Score

__all__ = ["MathTask"]

Sources = str | os.PathLike | Sequence[str | os.PathLike] | None


def _load(sources: Sources, **kwargs: Any) -> list[Example]:
    if sources is None:
        return []
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    out: list[Example] = []
    for s in sources:
        out.extend(load_examples(s, **kwargs))
    return out


class MathTask:
    """Math problems with reference answers; implements ``stare.env.Task`` (and ``score_batch``)."""

    def __init__(
        self,
        train: Sequence[Example] = (),
        test: Sequence[Example] = (),
        *,
        name: str = "math",
        verifier: MathVerifier | dict[str, Any] | None = None,
        correct_reward: float = 1.0,
        wrong_reward: float = 0.0,
        overlong: OverlongConfig | None = None,
    ):
        self.name = name
        self._splits = {"train": list(train), "test": list(test)}
        # a dict: the arguments of the MathVerifier to build, once the data has loaded (its workers start
        # at once, so a data error should come first)
        if verifier is None or isinstance(verifier, dict):
            verifier = MathVerifier(**(verifier or {}))
        self.verifier = verifier
        self.correct_reward = float(correct_reward)
        self.wrong_reward = float(wrong_reward)
        self.overlong = overlong

    @classmethod
    def from_sources(
        cls,
        train: Sources = None,
        test: Sources = None,
        *,
        template: str | None = None,
        fields: dict[str, str] | None = None,
        dedup: bool = True,
        limit: int | None = None,
        train_split: str = "train",
        test_split: str = "test",
        **task_kwargs: Any,
    ) -> "MathTask":
        """Load each split from one or more files or hub ids (concatenated in order; each source
        deduplicated on its own; ``limit`` applies per source)."""
        common = dict(template=template, fields=fields, dedup=dedup, limit=limit)
        return cls(
            _load(train, split=train_split, **common),
            _load(test, split=test_split, **common),
            **task_kwargs,
        )

    @classmethod
    def short_cot(cls, train: Sources = None, test: Sources = None, **kwargs: Any) -> "MathTask":
        """STARE's short chain-of-thought setting: boxed-answer prompts, accuracy reward."""
        kwargs.setdefault("template", "boxed")
        kwargs.setdefault("name", "math-short-cot")
        return cls.from_sources(train, test, **kwargs)

    @classmethod
    def long_cot(
        cls,
        train: Sources = None,
        test: Sources = None,
        *,
        overlong: OverlongConfig | None = None,
        verifier: MathVerifier | dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> "MathTask":
        """Long chain of thought: the answer must follow ``</think>``; DAPO overlong shaping on."""
        kwargs.setdefault("template", "boxed")
        kwargs.setdefault("name", "math-long-cot")
        verifier = verifier if verifier is not None else {"think_required": True}
        return cls.from_sources(
            train, test, overlong=overlong if overlong is not None else OverlongConfig(), verifier=verifier, **kwargs
        )

    def examples(self, split: str) -> Sequence[Example]:
        if split not in self._splits:
            raise KeyError(f"unknown split {split!r}; valid: {sorted(self._splits)}")
        return self._splits[split]

    def _reward(self, s: Score) -> Score:
        reward = self.correct_reward if s.acc == 1.0 else self.wrong_reward
        return Score(reward, s.acc, s.format_ok, s.pred)

    def score(self, example: Example, response: Any) -> Score:
        return self._reward(self.verifier.score(example.answer, response))

    def score_batch(self, examples: Sequence[Example], responses: Sequence[Any]) -> list[Score]:
        scores = self.verifier.score_many([e.answer for e in examples], responses)
        return [self._reward(s) for s in scores]

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until the verifier's workers have started (a check made before counts their start-up
        against its time limit, and scores 0 if it runs out)."""
        self.verifier.wait_ready(timeout_s)

    def close(self) -> None:
        """Stop the verifier's worker processes (they also stop at exit)."""
        self.verifier.close()
