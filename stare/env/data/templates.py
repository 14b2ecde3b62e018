"""Prompt templates: the instruction wrapped around a bare question, and its removal.

Templates (``TEMPLATES``; ``apply_template`` also takes any string containing ``{question}``):

* ``boxed``: the STARE short chain-of-thought prompt, the question followed by
  "\\nPlease reason step by step, and put your final answer within \\boxed{}." (hp-luo/STARE
  ``run_short_cot_qwen2.5_math_7b_STARE.sh``, docs/methods.md §3.5; it is also Qwen2.5-Math's CoT prompt).
* ``answer_line``: DAPO's "Answer:" format, as stored in the DAPO-Math-17k and AIME files that verl
  and the STARE/STEER recipes use (the instruction text is data from those files).
* ``dapo_boxed``: the same DAPO wrapper asking for ``\\boxed{Answer}`` on the last line, as in the
  DAPO-Math-17k copy shipped in the project's shared data.
* ``raw``: the question alone.

``strip_instruction`` removes any of these wrappers from a stored prompt to recover the question, so a
verl file written with one template can be re-templated with another (e.g. the AIME files, stored in
the "Answer:" format, evaluated with the STARE boxed prompt).
"""

from __future__ import annotations

import re

__all__ = ["TEMPLATES", "apply_template", "strip_instruction"]

_BOXED_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."
_DAPO_HEAD = (
    "Solve the following math problem step by step. The last line of your response should be of the "
    "form {form} where {var} is the answer to the problem.\n\n"
)
_ANSWER_LINE_HEAD = _DAPO_HEAD.format(form="Answer: $Answer (without quotes)", var="$Answer")
_ANSWER_LINE_TAIL = '\n\nRemember to put your answer on its own line after "Answer:".'
_BOXED_HEAD = _DAPO_HEAD.format(form="\\boxed{Answer}", var="Answer")
_BOXED_TAIL = "\n\nRemember to put your answer in \\boxed{...} format on its own line."

TEMPLATES: dict[str, str] = {
    "boxed": "{question}" + _BOXED_SUFFIX,
    "answer_line": _ANSWER_LINE_HEAD + "{question}" + _ANSWER_LINE_TAIL,
    "dapo_boxed": _BOXED_HEAD + "{question}" + _BOXED_TAIL,
    "raw": "{question}",
}

# Wrappers recognised by strip_instruction: DAPO's head in any of its variants (the shipped GSM8K file
# has an empty "$Answer"), its two tails, and the STARE suffix.
_HEAD_RE = re.compile(
    r"^\s*Solve the following math problem step by step\. The last line of your response should be of "
    r"the form [^\n]*? is the answer to the problem\.\s*"
)
_TAIL_RE = re.compile(
    r"\s*Remember to put your answer (?:on its own line after \"Answer:\"|in \\boxed\{\.\.\.\} format on "
    r"its own line)\.?\s*$"
)
_SUFFIX_RE = re.compile(r"\s*Please reason step by step, and put your final answer within \\boxed\{\}\.?\s*$")


def strip_instruction(text: str) -> str:
    """The bare question inside a prompt written with one of the known templates (else the text,
    stripped of surrounding whitespace)."""
    text = _HEAD_RE.sub("", text, count=1)
    text = _TAIL_RE.sub("", text, count=1)
    text = _SUFFIX_RE.sub("", text, count=1)
    return text.strip()


def apply_template(template: str, question: str) -> str:
    """``template`` is a name in ``TEMPLATES`` or a string containing ``{question}`` (substituted
    literally: braces elsewhere, as in ``\\boxed{}``, are kept as they are)."""
    if template in TEMPLATES:
        template = TEMPLATES[template]
    elif "{question}" not in template:
        raise ValueError(
            f"unknown template {template!r}: use one of {sorted(TEMPLATES)} or a string containing '{{question}}'"
        )
    return template.replace("{question}", question)
