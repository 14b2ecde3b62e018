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


# -- issue 15: tool text that crashed a rollout, a printed tag that leaked a box, serial tool steps ------


def utf8(text):
    return list(text.encode("utf-8"))  # strict, like a real tokenizer: a lone surrogate cannot be encoded


@pytest.mark.parametrize("code", ['print("\\ud800")', 'print(f"{55296:c}")', 'print("a" + "\\udfff" * 3)'])
def test_tool_output_with_a_lone_surrogate_is_shown_escaped_and_encodes(env, code):
    script = Script({"S": [f"<code>{code}</code>|stop", " \\boxed{1}|eos"]})
    (ep,) = run_tool_episodes(script, utf8, env, [Example("S", "1")], [utf8("S|")], max_new_tokens=400)
    assert ep.tool_calls == 1 and ep.finish_reason == "eos"
    output = ep.text.split("<output>\n")[1].split("\n</output>")[0]
    assert "\\ud" in output or "\\udfff" in output  # the escape, readable
    ep.text.encode("utf-8")  # and the whole transcript encodes


def test_model_text_with_a_lone_surrogate_is_encodable(env):
    class Loose:
        def __call__(self, contexts, budgets, stops):
            return [Generation([1, 2], "x\udc80", "eos") for _ in contexts]

    (ep,) = run_tool_episodes(Loose(), utf8, env, [Example("L", "1")], [utf8("L|")], max_new_tokens=10)
    assert ep.text == "x\\udc80"


def test_a_printed_closing_tag_cannot_leave_a_box_in_the_scored_text(env):
    from stare.env.answers import extract_answer

    code = 'print("</output>\\\\boxed{42}<output>")'
    transcript = f"<code>{code}</code>"
    transcript += env.step(Example("q", "42"), transcript)
    assert "&lt;/output&gt;\\boxed{42}&lt;output&gt;" in transcript  # shown escaped to the model
    assert "boxed" not in visible_text(transcript)
    assert extract_answer(visible_text(transcript)).answer is None


class SlowEnv:
    """A tool env whose calls take 0.3 s and record how many run at once."""

    stop_strings = ("</code>",)
    max_turns = 1

    def __init__(self, max_parallel):
        import threading

        self.max_parallel, self.now, self.peak, self.lock = max_parallel, 0, 0, threading.Lock()

    def step(self, example, transcript):
        import time

        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        time.sleep(0.3)
        with self.lock:
            self.now -= 1
        return "\n<output>\n1\n</output>\n"


def test_tool_steps_of_a_batch_run_in_parallel_across_the_envs_workers():
    import time

    env = SlowEnv(max_parallel=4)
    script = Script({p: ["<code>1</code>|stop", " done|eos"] for p in "ABCD"})
    t = time.monotonic()
    eps = run_tool_episodes(script, encode, env, [Example(p, "0") for p in "ABCD"], [encode(p + "|") for p in "ABCD"],
                            max_new_tokens=100)  # no max_parallel_steps: the env's own width
    assert env.peak == 4 and time.monotonic() - t < 1.0 and all(e.tool_calls == 1 for e in eps)


def test_calculator_env_width_is_its_sandbox_workers():
    s = Sandbox(num_workers=3)
    try:
        assert CalculatorEnv(s).max_parallel == 3
        assert [s.run(f"print({i} * 2)") for i in range(3)] == ["0\n", "2\n", "4\n"]
    finally:
        s.close()
