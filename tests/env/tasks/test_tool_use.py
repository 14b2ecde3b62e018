"""Tool use: the calculator environment, the agent loop's loss mask and truncation, and scoring that
ignores tool blocks. A scripted "policy" and a character tokenizer stand in for a model.

Run: python -m pytest -q tests/tasks/test_tool_use.py   (CPU; a few seconds)."""

import pytest

from stare.env.verifiers.math import MathVerifier
from stare.env import Example, ToolEnv, tool_env_of
from stare.env.tasks.tool_use import CalculatorEnv, Generation, ToolUseMathTask, run_tool_episodes, visible_text
from stare.env.tools import Sandbox


def encode(text):
    return [ord(c) for c in text]


def decode(ids):
    return "".join(chr(i) for i in ids)


class Script:
    """A fake engine: the i-th generation of an episode returns turns[i] (cut to the budget);
    "|stop" at the end of a turn means it ended at the stop string, "|eos" at EOS."""

    def __init__(self, turns_by_prompt):
        self.turns = turns_by_prompt
        self.calls = []

    def __call__(self, contexts, budgets, stops):
        self.calls.append((len(contexts), tuple(stops)))
        out = []
        for ctx, budget in zip(contexts, budgets):
            text = decode(ctx)
            prompt = text.split("|")[0]
            turn = text.count("<output>")
            body, reason = self.turns[prompt][turn].rsplit("|", 1)
            if len(body) > budget:
                body, reason = body[:budget], "length"
            out.append(Generation(encode(body), body, reason))
        return out


@pytest.fixture(scope="module")
def env():
    e = CalculatorEnv(Sandbox(), max_turns=2)
    yield e
    e.close()


def test_env_is_a_tool_env_and_finds_pending_code(env):
    assert isinstance(env, ToolEnv) and env.stop_strings == ("</code>",)
    ex = Example("q", "1")
    assert env.step(ex, "no code here") is None
    assert env.step(ex, "<code>print(1)</code> and then more text") is None  # did not stop at the call
    assert env.step(ex, "<code>print(1)</code>\n<output>\n1\n</output>\nok") is None  # already ran
    assert env.step(ex, "<code>\nprint(2 + 3)\n</code>") == "\n<output>\n5\n</output>\n"
    assert env.step(ex, "<code>```python\nprint(7)\n```</code>") == "\n<output>\n7\n</output>\n"  # fences
    # An engine that drops the stop string: the closing tag is added in front of the output.
    assert env.step(ex, "<code>print(8)") == "</code>\n<output>\n8\n</output>\n"


def test_hostile_code_returns_errors_and_the_episode_goes_on(env):
    ex = Example("q", "1")
    for code in ("import os", "open('x')", "__import__('os')", "().__class__", "while True: pass"):
        out = env.step(ex, f"<code>{code}</code>")
        assert out.startswith("\n<output>\nError") and out.endswith("</output>\n"), out


def test_loop_masks_tool_output_and_counts_calls(env):
    script = Script({
        "A": ["think <code>print(6 * 7)</code>|stop", " so \\boxed{42}.|eos"],
        "B": ["no tool needed: \\boxed{1}|eos"],
    })
    examples = [Example("A", "42"), Example("B", "1")]
    eps = run_tool_episodes(script, encode, env, examples, [encode("A|"), encode("B|")], max_new_tokens=500)
    a, b = eps
    assert a.text == "think <code>print(6 * 7)</code>\n<output>\n42\n</output>\n so \\boxed{42}."
    assert (a.tool_calls, a.truncated, a.finish_reason) == (1, False, "eos")
    # Mask 0 exactly on the tool output's tokens.
    masked = decode(t for t, m in zip(a.response_ids, a.loss_mask) if m == 0)
    assert masked == "\n<output>\n42\n</output>\n"
    assert decode(a.response_ids) == a.text and len(a.loss_mask) == len(a.response_ids)
    assert (b.tool_calls, b.loss_mask, b.finish_reason) == (0, [1] * len(b.response_ids), "eos")
    assert script.calls == [(2, ("</code>",)), (1, ("</code>",))]  # finished episodes leave the batch


def test_max_turns_then_no_stop_strings(env):
    # Three code blocks but max_turns = 2: the third generation runs without stop strings.
    turns = ["<code>print(1)</code>|stop", "<code>print(2)</code>|stop", "<code>print(3)</code> \\boxed{3}|eos"]
    script = Script({"C": turns})
    (ep,) = run_tool_episodes(script, encode, env, [Example("C", "3")], [encode("C|")], max_new_tokens=500)
    assert ep.tool_calls == 2 and ep.text.count("<output>") == 2
    assert [stops for _, stops in script.calls] == [("</code>",), ("</code>",), ()]


def test_truncation_by_the_token_budget(env):
    script = Script({"D": ["<code>print(10 ** 40)</code>|stop", "unused|eos"], "E": ["x" * 100 + "|eos"]})
    # D: 28 policy tokens ("<code>" 6 + "print(10 ** 40)" 15 + "</code>" 7), then a 62-token output
    # ("\n<output>\n" 10 + 41 digits + "\n</output>\n" 11) that does not fit in the 12 left: cut, truncated.
    (d,) = run_tool_episodes(script, encode, env, [Example("D", "1")], [encode("D|")], max_new_tokens=40)
    assert (len(d.response_ids), d.truncated, d.finish_reason, d.tool_calls) == (40, True, "length", 1)
    assert d.loss_mask == [1] * 28 + [0] * 12
    (e,) = run_tool_episodes(script, encode, env, [Example("E", "1")], [encode("E|")], max_new_tokens=30)
    assert (len(e.response_ids), e.truncated, e.finish_reason) == (30, True, "length")


def test_parallel_steps_give_the_same_episodes(env):
    script = {p: [f"<code>print({i} * 2)</code>|stop", f" \\boxed{{{i * 2}}}|eos"] for i, p in enumerate("FGHI")}
    args = ([Example(p, "0") for p in "FGHI"], [encode(p + "|") for p in "FGHI"])
    one = run_tool_episodes(Script(script), encode, env, *args, max_new_tokens=200)
    two = run_tool_episodes(Script(script), encode, env, *args, max_new_tokens=200, max_parallel_steps=2)
    assert [e.text for e in one] == [e.text for e in two]
    assert [e.text.split("<output>\n")[1].split("\n")[0] for e in one] == ["0", "2", "4", "6"]


def test_task_prompts_env_and_scoring(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text('{"problem": "What is 2^10?", "answer": "1024"}\n')
    task = ToolUseMathTask.from_sources(data, data, max_turns=3, verifier=MathVerifier(num_workers=1))
    try:
        (ex,) = task.examples("train")
        content = ex.prompt[0]["content"]
        assert content.startswith("What is 2^10?\n\nYou can use a Python calculator.") and "at most 3 times" in content
        assert tool_env_of(task) is task.tool_env() and task.tool_env().max_turns == 3
        good = "<code>print(2 ** 10)</code>\n<output>\n1024\n</output>\nSo \\boxed{1024}."
        assert task.score(ex, good).acc == 1.0
        # A box printed by the tool (or written in code) is not the model's answer.
        sneaky = "<code>print('\\\\boxed{1024}')</code>\n<output>\n\\boxed{1024}\n</output>\n"
        assert task.score(ex, sneaky).acc == 0.0
        assert [s.acc for s in task.score_batch([ex, ex], [good, sneaky])] == [1.0, 0.0]
    finally:
        task.close()


def test_visible_text_removes_blocks():
    assert visible_text("a <code>x</code> b <output>y</output> c <code>unclosed") == "a   b   c  "
