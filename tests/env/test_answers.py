"""Answer extraction and normalisation (no worker processes). Run: python -m pytest -q tests/rewards/test_extract.py"""

import time

import pytest

from stare.env.answers import extract_answer, nesting_depth, normalize_answer, to_text


@pytest.mark.parametrize(
    "response, answer, how",
    [
        (r"so the area is \boxed{\frac{1}{\sqrt{2}}}.", r"\frac{1}{\sqrt{2}}", "boxed"),  # nested braces
        (r"first \boxed{1} then \boxed{2}", "2", "boxed"),  # the last one
        (r"\fbox{7}", "7", "boxed"),
        (r"\boxed {x+1}", "x+1", "boxed"),  # space before the brace
        (r"\boxed{\{1,2\}}", r"\{1,2\}", "boxed"),  # escaped braces are text
        ("Answer: 42", "42", "answer_line"),  # DAPO's format
        ("Answer: $42$.", "42", "answer_line"),
        ("**Answer:** 17", "17", "answer_line"),
        ("Final Answer: The final answer is $3\\sqrt{2}$. I hope it is correct.", r"3\sqrt{2}", "answer_line"),
        (r"Answer: \boxed{7}.", "7", "boxed"),  # an answer line holding a box is the box
        ("\\boxed{1}\nAnswer: 2", "2", "answer_line"),  # whichever is stated last
        ("Answer: 2\nso \\boxed{1}", "1", "boxed"),
        ("<think>maybe \\boxed{3}</think> It is \\boxed{4}.", "4", "boxed"),  # after </think>
        ("<thinking>x</thinking>Answer: 5", "5", "answer_line"),
        ("<answer>\\boxed{9}</answer> trailing \\boxed{8}", "9", "boxed"),  # inside <answer>
    ],
)
def test_formatted_answers(response, answer, how):
    ext = extract_answer(response)
    assert (ext.answer, ext.format_ok, ext.how) == (answer, True, how)


@pytest.mark.parametrize(
    "response, answer, how",
    [
        ("so the answer is $x = 3$ indeed", "x = 3", "math_span"),
        (r"we get \(\frac{2}{3}\)", r"\frac{2}{3}", "math_span"),
        ("the total is 1,234 apples", "1,234", "number"),
        ("it is -0.5 or maybe 7/8", "7/8", "number"),
        (r"\boxed{\frac{1}{2", "2", "number"),  # unbalanced braces: no box; last resort
        ("no digits at all", None, "none"),
        ("", None, "none"),
    ],
)
def test_last_resort_answers_are_not_formatted(response, answer, how):
    ext = extract_answer(response)
    assert (ext.answer, ext.format_ok, ext.how) == (answer, False, how)


def test_last_resort_looks_only_at_the_last_300_characters():
    # 42 is 301 characters from the end: STARE's window (docs/methods.md §3.6) does not reach it.
    assert extract_answer("42" + " " * 299 + "x").answer is None
    assert extract_answer("42" + " " * 297 + "x").answer == "42"


def test_unfinished_thinking_has_no_answer():
    assert extract_answer("<think>long reasoning \\boxed{3}").how == "unclosed_think"
    # Chat templates that open <think> in the prompt: the response has only the closing tag.
    assert extract_answer("reasoning</think>\\boxed{3}").answer == "3"
    ext = extract_answer("reasoning without a closing tag \\boxed{3}", think_required=True)
    assert (ext.answer, ext.how) == (None, "unclosed_think")


def test_any_output_becomes_text():
    assert to_text(b"\\boxed{4\xff2}") == "\\boxed{4\ufffd2}"  # invalid UTF-8 byte replaced
    assert to_text("a\udcffb") == "a?b"  # lone surrogate replaced
    assert to_text(None) == ""
    assert to_text(12) == "12"
    assert extract_answer(b"Answer: 5\xfe").answer == "5\ufffd"


def test_normalisation_is_light_and_keeps_meaning():
    assert normalize_answer(r"\left( 1, 2 \right)") == "(1,2)"
    assert normalize_answer(r"\dfrac{1}{2}") == normalize_answer(r"\frac12".replace("12", "{1}{2}"))
    assert normalize_answer(r"$\boxed{5}$.") == "5"
    assert normalize_answer(r"3\,000") == "3000"
    # \leftarrow is not \left: only whole commands are removed.
    assert normalize_answer(r"x \leftarrow y") == r"x\leftarrowy"
    assert normalize_answer("0.5") != normalize_answer(r"\frac{1}{2}")  # equal values: math-verify's job


def test_nesting_depth():
    assert nesting_depth("") == 0
    assert nesting_depth("(a[b]{c})") == 2
    assert nesting_depth("(" * 5000 + ")" * 5000) == 5000
    assert nesting_depth(")))(") == 1  # unmatched closers ignored


def test_extraction_is_linear_on_hostile_text():
    # 200,000 unclosed box openings and a megabyte of braces: a quadratic scan would take minutes.
    for text in ("\\boxed{" * 200_000, "{" * 1_000_000, "}" * 1_000_000, "Answer:" * 100_000):
        t = time.monotonic()
        extract_answer(text)
        assert time.monotonic() - t < 1.0
