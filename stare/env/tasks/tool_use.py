"""Multi-turn tool use: math with a sandboxed calculator, the agent loop, and the loss mask.

Protocol (our own; STARE's tool-use recipe, ReTool-style, is not published, docs/methods.md §3.5):

* the model writes code between ``<code>`` and ``</code>``; generation stops at ``</code>``
  (``CalculatorEnv.stop_strings``);
* ``CalculatorEnv.step`` runs the code in the sandbox (``stare.env.tools.Sandbox``) and returns
  ``"\\n<output>\\n...\\n</output>\\n"`` to append; the model then continues;
* at most ``max_turns`` tool calls; the generation after the last one runs without stop strings;
* the final answer is ``\\boxed{}`` in the model's own text: ``ToolUseMathTask`` scores the response
  with every ``<code>`` and ``<output>`` block removed, so a printed ``\\boxed{}`` does not count;
  the protocol tags inside a tool's output are escaped (``&lt;/output&gt;``), so printed text cannot
  close its block early and leave a box outside it;
* tool output and model text reach the tokenizer only through ``stare.env.text.encodable`` (a lone
  surrogate, e.g. from ``print("\\ud800")``, is shown as its escape instead of crashing the rollout).

``run_tool_episodes`` is the agent loop over a batch, engine-agnostic: it calls a ``generate``
function for all unfinished episodes at once, runs the tool calls (in parallel up to
``max_parallel_steps``, by default the environment's ``max_parallel``: one per sandbox worker),
appends the tool output's tokens with loss mask 0 and the model's tokens with loss mask 1, and
stops each episode at EOS, at a turn without a tool call, or at ``max_new_tokens`` (then
``truncated``). ``generate`` must return the stop string as part of the text and tokens (HF
``generate(stop_strings=...)`` does; vLLM needs ``include_stop_str_in_output=True``); if it does not,
``step`` adds the closing tag in front of the output (masked like the output).
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ...objectives.contract import Generation
from ...checks import UserError
from ..answers import to_text
from ..text import encodable
from ..verifiers.math import MathVerifier
from ..tools.sandbox import Sandbox
from ..base import Example, Score
from .math import MathTask, Sources

__all__ = [
    "CalculatorEnv",
    "Episode",
    "Generation",
    "TOOL_TEMPLATE",
    "ToolUseMathTask",
    "run_tool_episodes",
    "visible_text",
]

CODE_OPEN, CODE_CLOSE = "<code>", "</code>"
OUTPUT_OPEN, OUTPUT_CLOSE = "<output>", "</output>"

TOOL_TEMPLATE = (
    "{question}\n\n"
    "You can use a Python calculator. To run code, write it between <code> and </code>; what it "
    "prints comes back between <output> and </output>. The calculator has no imports, files or "
    "network; math functions such as sqrt, gcd, comb and factorial, and Fraction, are built in. "
    "Use it at most {max_turns} times. Reason step by step, and put your final answer within \\boxed{}."
)

_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_+-]*[ \t]*\n?|\n?```\s*$")
_BLOCKS = re.compile(r"<code>.*?(?:</code>|$)|<output>.*?(?:</output>|$)", re.DOTALL)
_TAGS = re.compile(r"<(/?(?:code|output))>", re.IGNORECASE)


def escape_tags(text: str) -> str:
    """Tool output with its protocol tags shown escaped (``</output>`` -> ``&lt;/output&gt;``), so that
    printed text can neither close the output block nor open a code block."""
    return _TAGS.sub(r"&lt;\1&gt;", text)


def visible_text(transcript: str) -> str:
    """The transcript without its code and output blocks (an unclosed trailing block included)."""
    return _BLOCKS.sub(" ", transcript)


class CalculatorEnv:
    """``ToolEnv`` for the calculator. ``calls`` counts executed tool calls (all episodes);
    ``max_parallel`` (the sandbox's worker count) is how many calls of a batch run at once."""

    stop_strings = (CODE_CLOSE,)

    def __init__(self, sandbox: Sandbox | None = None, *, max_turns: int = 4, max_output_chars: int = 2000):
        if not isinstance(max_turns, int) or isinstance(max_turns, bool) or max_turns < 0:
            raise UserError(f"max_turns: must be an integer >= 0, got {max_turns!r}")
        self.sandbox = sandbox if sandbox is not None else Sandbox()
        self.max_turns = max_turns
        self.max_output_chars = max_output_chars
        self.calls = 0

    @property
    def max_parallel(self) -> int:
        return max(1, int(getattr(self.sandbox, "num_workers", 1)))

    def pending_code(self, transcript: str) -> tuple[str, str] | None:
        """(code, closing tag to add) of a code block that ends the transcript and has not run."""
        start = transcript.rfind(CODE_OPEN)
        if start < 0:
            return None
        after = transcript[start + len(CODE_OPEN) :]
        end = after.find(CODE_CLOSE)
        if end < 0:
            return _FENCE.sub("", after), CODE_CLOSE  # the engine dropped the stop string
        if after[end + len(CODE_CLOSE) :].strip():
            return None  # text after the block: this turn did not stop at the call
        return _FENCE.sub("", after[:end]), ""

    def step(self, example: Example, transcript: str) -> str | None:
        pending = self.pending_code(transcript)
        if pending is None:
            return None
        code, closing = pending
        result = escape_tags(encodable(self.sandbox.run(code))).rstrip("\n")
        if len(result) > self.max_output_chars:
            result = result[: self.max_output_chars] + f"\n[output cut at {self.max_output_chars} characters]"
        self.calls += 1
        return f"{closing}\n{OUTPUT_OPEN}\n{result}\n{OUTPUT_CLOSE}\n"

    def close(self) -> None:
        self.sandbox.close()


@dataclass
class Episode:
    """One multi-turn response: ``response_ids`` (model and tool tokens interleaved) and
    ``loss_mask`` (1 on model tokens, 0 on tool-output tokens), its text, the number of tool calls,
    and whether it was cut by ``max_new_tokens`` (``truncated``, for overlong masking).
    ``segment_ids`` gives each token its turn: 0 for the model's first turn, k for the k-th tool output
    and the model turn that reads it; ``log_probs`` the sampler's log-prob of each model token (0 on tool output), or
    None when the generator does not return them."""

    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    text: str = ""
    tool_calls: int = 0
    truncated: bool = False
    finish_reason: str = ""
    segment_ids: list[int] = field(default_factory=list)
    log_probs: list[float] | None = field(default_factory=list)

    def _add(self, ids: Sequence[int], text: str, mask: int, log_probs: Sequence[float] | None = None) -> None:
        self.response_ids.extend(int(t) for t in ids)
        self.loss_mask.extend([mask] * len(ids))
        self.segment_ids.extend([self.tool_calls] * len(ids))
        if self.log_probs is not None:
            if mask and log_probs is None:
                self.log_probs = None
            else:
                self.log_probs.extend(list(log_probs)[: len(ids)] if mask else [0.0] * len(ids))
        self.text += text


GenerateFn = Callable[[list[list[int]], list[int], Sequence[str]], Sequence[Generation]]


def run_tool_episodes(
    generate: GenerateFn,
    encode: Callable[[str], Sequence[int]],
    env: Any,
    examples: Sequence[Example],
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    max_parallel_steps: int | None = None,
) -> list[Episode]:
    """Roll out a batch of tool-use episodes.

    generate(contexts, budgets, stop_strings): one ``Generation`` per context (prompt plus response
        so far, token ids), each at most ``budgets[i]`` new tokens.
    encode(text): token ids of a tool output (no special tokens).
    env: a ``ToolEnv`` (``max_turns``, ``stop_strings``, ``step``; optionally ``max_parallel``).
    max_parallel_steps: tool calls run at once (default: ``env.max_parallel``, else 1).

    Tool output and generated text pass through ``encodable`` before they are stored or encoded.
    """
    if len(examples) != len(prompt_ids):
        raise ValueError(f"{len(examples)} examples but {len(prompt_ids)} prompts")
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens must be > 0, got {max_new_tokens}")
    if max_parallel_steps is None:
        max_parallel_steps = int(getattr(env, "max_parallel", 1) or 1)
    episodes = [Episode() for _ in examples]
    active = list(range(len(examples)))
    turn = 0
    with ThreadPoolExecutor(max(1, max_parallel_steps)) as pool:
        while active:
            budgets = [max_new_tokens - len(episodes[i].response_ids) for i in active]
            stops = tuple(env.stop_strings) if turn < env.max_turns else ()
            gens = list(generate([list(prompt_ids[i]) + episodes[i].response_ids for i in active], budgets, stops))
            if len(gens) != len(active):
                raise ValueError(f"generate returned {len(gens)} generations for {len(active)} contexts")
            calls = []
            for i, budget, g in zip(active, budgets, gens):
                ep = episodes[i]
                ep._add(list(g.token_ids)[:budget], encodable(g.text), 1, g.log_probs)
                full = len(ep.response_ids) >= max_new_tokens
                if g.finish_reason == "stop" and stops and not full:
                    calls.append(i)
                    continue
                ep.finish_reason = g.finish_reason
                ep.truncated = g.finish_reason != "eos" and (full or g.finish_reason == "length")
            outputs = list(pool.map(lambda i: env.step(examples[i], episodes[i].text), calls))
            active = []
            for i, obs in zip(calls, outputs):
                ep = episodes[i]
                if obs is None:  # stopped at a stop string with nothing to run: the episode is over
                    ep.finish_reason = "stop"
                    continue
                obs = encodable(obs)
                ids = list(encode(obs))
                room = max_new_tokens - len(ep.response_ids)
                ep.tool_calls += 1
                if len(ids) >= room:  # no room left for the model to read and answer
                    ep._add(ids[:room], obs, 0)
                    ep.finish_reason, ep.truncated = "length", True
                    continue
                ep._add(ids, obs, 0)
                active.append(i)
            turn += 1
    return episodes


def default_sandbox_workers() -> int:
    """Calculator processes of a tool-use task: one per core, at most 4 (each is a bare interpreter of
    about 10 MB; tool calls are short and CPU-bound)."""
    return max(1, min(4, os.cpu_count() or 1))


class ToolUseMathTask(MathTask):
    """Math with the calculator: prompts carry the tool instructions; ``tool_env()`` gives the
    ``ToolEnv``, whose sandbox runs ``sandbox_workers`` calls at once (default: one per core, at most
    4); scoring ignores code and output blocks."""

    def __init__(
        self,
        train: Sequence[Example] = (),
        test: Sequence[Example] = (),
        *,
        max_turns: int = 4,
        sandbox: Sandbox | None = None,
        sandbox_workers: int | None = None,
        name: str = "math-tool-use",
        verifier: MathVerifier | dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        if not isinstance(max_turns, int) or isinstance(max_turns, bool) or max_turns < 0:
            raise UserError(f"max_turns: must be an integer >= 0, got {max_turns!r}")
        workers = sandbox_workers if sandbox_workers is not None else default_sandbox_workers()
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise UserError(f"sandbox_workers: must be an integer >= 1, got {workers!r}")
        super().__init__(train, test, name=name, verifier=verifier, **kwargs)
        self.max_turns = max_turns
        self._env = CalculatorEnv(sandbox if sandbox is not None else Sandbox(num_workers=workers), max_turns=max_turns)

    @classmethod
    def from_sources(cls, train: Sources = None, test: Sources = None, *, max_turns: int = 4,
                     **kwargs: Any) -> "ToolUseMathTask":
        """As ``MathTask.from_sources``, with the tool template applied to every prompt."""
        template = TOOL_TEMPLATE.replace("{max_turns}", str(max_turns))
        return super().from_sources(train, test, template=template, max_turns=max_turns, **kwargs)

    def tool_env(self) -> CalculatorEnv:
        return self._env

    def wait_ready(self, timeout_s: float | None = None) -> None:
        super().wait_ready(timeout_s)
        pool = getattr(self._env.sandbox, "pool", None)
        if pool is not None:
            pool.wait_ready(timeout_s)

    def score(self, example: Example, response: Any) -> Score:
        return super().score(example, visible_text(to_text(response)))

    def score_batch(self, examples: Sequence[Example], responses: Sequence[Any]) -> list[Score]:
        return super().score_batch(examples, [visible_text(to_text(r)) for r in responses])

    def close(self) -> None:
        super().close()
        self._env.close()
