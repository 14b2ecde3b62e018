"""Row validation: one dataset row (verl style or flat) into an ``Example``, or an error naming it.

Two row shapes are accepted.

verl (the format of the project's shared math data; chosen when the row has ``reward_model``):

| field | type | required |
|---|---|---|
| ``prompt`` | list of ``{"role": str, "content": str}`` (role system/user/assistant), or a str | yes |
| ``reward_model.ground_truth`` | str, int or float (a list of one such value is taken as that value) | yes |
| ``data_source`` | str | no (default: the file's stem) |
| ``extra_info`` | dict | no (``extra_info.index`` is kept in ``meta``) |
| ``ability``, anything else | any | no (ignored) |

Nested columns written by some tools as Python-literal strings (``"[{'role': 'user', ...}]"``) are
parsed with ``ast.literal_eval``, which only accepts literals; nothing is evaluated.

flat (JSONL files and hub datasets such as MATH-500): the question is the first present of
``problem``, ``question``, ``prompt`` and the answer the first present of ``answer``,
``final_answer``, ``ground_truth`` (a ``fields`` mapping overrides both, e.g.
``{"question": "Problem", "answer": "Answer"}``); ``data_source``/``source`` is optional.

Errors are ``DataError`` with the location and the field: ``aime.jsonl: line 12: field 'answer':
expected a string or a number, got list``.
"""

from __future__ import annotations

import ast
import hashlib
import math
import unicodedata
from typing import Any, Mapping

from ...checks import UserError
from ..base import Example
from ..text import encodable
from .templates import apply_template, strip_instruction

__all__ = ["DataError", "DataFileNotFound", "dedup_key", "row_to_example"]

QUESTION_KEYS = ("problem", "question", "prompt")
ANSWER_KEYS = ("answer", "final_answer", "ground_truth")
ROLES = ("system", "user", "assistant")


class DataError(UserError):
    """A dataset row that cannot be used; the message names the file, the row and the field."""


class DataFileNotFound(DataError, FileNotFoundError):
    """A data source that is neither a file nor a hub id."""


def _literal(value: Any, where: str, name: str, kind: type) -> Any:
    """``value`` itself, or parsed from a Python/JSON literal string when a ``kind`` is expected."""
    if isinstance(value, str) and kind is not str:
        text = value.strip()
        if text[:1] in "[{":
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                raise DataError(f"{where}: field {name!r}: a string that is not a valid literal") from None
    return value


def _answer(value: Any, where: str, name: str) -> str:
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(f"{where}: field {name!r}: expected a string or a number, got {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"{where}: field {name!r}: {value} is not a finite number")
    text = str(value).strip()
    if not text:
        raise DataError(f"{where}: field {name!r}: empty answer")
    return text


def _messages(value: Any, where: str) -> list[dict[str, str]] | str:
    value = _literal(value, where, "prompt", list)
    if isinstance(value, str):
        if not value.strip():
            raise DataError(f"{where}: field 'prompt': empty prompt")
        return value
    if not isinstance(value, (list, tuple)) or not value:
        raise DataError(f"{where}: field 'prompt': expected a non-empty list of messages or a string, "
                        f"got {type(value).__name__}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, Mapping):
            raise DataError(f"{where}: field 'prompt[{i}]': expected a message dict, got {type(m).__name__}")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise DataError(f"{where}: field 'prompt[{i}].role': {role!r} is not one of {list(ROLES)}")
        if not isinstance(content, str):
            raise DataError(f"{where}: field 'prompt[{i}].content': expected a string, got {type(content).__name__}")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "user" for m in out):
        raise DataError(f"{where}: field 'prompt': no user message")
    return out


def _retemplate(prompt: list[dict[str, str]] | str, template: str | None) -> list[dict[str, str]]:
    """Chat messages, with the last user message re-templated when ``template`` is given."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else [dict(m) for m in prompt]
    if template is not None:
        last = max(i for i, m in enumerate(messages) if m["role"] == "user")
        messages[last]["content"] = apply_template(template, strip_instruction(messages[last]["content"]))
    return messages


def _first(row: Mapping[str, Any], keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if k in row and row[k] is not None), None)


def dedup_key(prompt: list[dict[str, str]] | str) -> str:
    """Normalised prompt text (Unicode NFKC, whitespace runs collapsed; case kept, since x and X are
    different variables); two examples with the same key ask the same thing."""
    if isinstance(prompt, str):
        text = prompt
    else:
        text = "\n".join(f"{m['role']}: {m['content']}" for m in prompt)
    return " ".join(unicodedata.normalize("NFKC", text).split())


def row_to_example(
    row: Any,
    *,
    where: str,
    default_source: str,
    template: str | None = None,
    fields: Mapping[str, str] | None = None,
) -> Example:
    """Validate one row and build its Example (``uid`` = a hash of the normalised prompt)."""
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: expected an object with named fields, got {type(row).__name__}")
    meta: dict[str, Any] = {"origin": where}
    if "reward_model" in row and not fields:
        reward_model = _literal(row["reward_model"], where, "reward_model", dict)
        if not isinstance(reward_model, Mapping):
            raise DataError(f"{where}: field 'reward_model': expected a dict, got {type(reward_model).__name__}")
        if "ground_truth" not in reward_model:
            raise DataError(f"{where}: field 'reward_model.ground_truth': missing "
                            f"(reward_model has {sorted(reward_model)})")
        answer = _answer(reward_model["ground_truth"], where, "reward_model.ground_truth")
        if "prompt" not in row:
            raise DataError(f"{where}: field 'prompt': missing (the row has {sorted(row)})")
        prompt = _messages(row["prompt"], where)
        extra = _literal(row.get("extra_info"), where, "extra_info", dict)
        if extra is not None and not isinstance(extra, Mapping):
            raise DataError(f"{where}: field 'extra_info': expected a dict, got {type(extra).__name__}")
        if extra and extra.get("index") is not None:
            meta["index"] = extra["index"]
        source = row.get("data_source") or default_source
    else:
        fields = dict(fields or {})
        unknown = set(fields) - {"question", "answer", "source"}
        if unknown:
            raise ValueError(f"unknown keys in fields: {sorted(unknown)}; valid: ['answer', 'question', 'source']")
        qkey = fields.get("question") or _first(row, QUESTION_KEYS)
        akey = fields.get("answer") or _first(row, ANSWER_KEYS)
        if qkey is None or qkey not in row:
            raise DataError(f"{where}: field {qkey or 'question'!r}: missing; looked for "
                            f"{[qkey] if qkey else list(QUESTION_KEYS)} in {sorted(row)}")
        if akey is None or akey not in row:
            raise DataError(f"{where}: field {akey or 'answer'!r}: missing; looked for "
                            f"{[akey] if akey else list(ANSWER_KEYS)} in {sorted(row)}")
        if qkey == "prompt":
            prompt = _messages(row[qkey], where)
        else:
            prompt = row[qkey]
            if not isinstance(prompt, str) or not prompt.strip():
                got = type(prompt).__name__ if not isinstance(prompt, str) else "an empty string"
                raise DataError(f"{where}: field {qkey!r}: expected a non-empty string, got {got}")
        answer = _answer(row[akey], where, akey)
        skey = fields.get("source") or _first(row, ("data_source", "source"))
        source = row.get(skey) if skey else None
        source = source if isinstance(source, str) and source else default_source
    # a lone surrogate (a "\ud800" escape in a JSON file) is kept as its escape: tokenizers cannot encode it
    messages = [{"role": m["role"], "content": encodable(m["content"])} for m in _retemplate(prompt, template)]
    answer = encodable(answer)
    uid = hashlib.sha1(dedup_key(messages).encode("utf-8")).hexdigest()[:16]
    return Example(prompt=messages, answer=answer, source=str(source), uid=uid, meta=meta)
