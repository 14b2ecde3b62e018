"""Prompt templates and their removal. Run: python -m pytest -q tests/data/test_templates.py"""

import pytest

from stare.env.data import TEMPLATES, apply_template, strip_instruction

QUESTIONS = ["What is $1+1$?", "Let $f(x) = \\frac{x}{2}$ and {a} a set.\nFind f(4).", "  spaced  "]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("question", QUESTIONS)
def test_strip_undoes_every_template(name, question):
    assert strip_instruction(apply_template(name, question)) == question.strip()


def test_boxed_is_the_stare_suffix():
    assert apply_template("boxed", "Q") == "Q\nPlease reason step by step, and put your final answer within \\boxed{}."


def test_answer_line_is_dapos_format():
    text = apply_template("answer_line", "Q")
    assert text.startswith("Solve the following math problem step by step. The last line of your response "
                           "should be of the form Answer: $Answer (without quotes) where $Answer is the answer")
    assert text.endswith('\n\nQ\n\nRemember to put your answer on its own line after "Answer:".')


def test_custom_template_keeps_braces():
    assert apply_template("Q: {question} -> \\boxed{}", "x{y}") == "Q: x{y} -> \\boxed{}"


def test_unknown_template_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown template 'boxd'.*'answer_line', 'boxed'"):
        apply_template("boxd", "Q")


def test_strip_leaves_other_text_alone():
    assert strip_instruction("Solve for x: 2x = 4.") == "Solve for x: 2x = 4."
