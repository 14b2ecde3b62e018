"""Text that any tokenizer can encode.

Python strings may hold lone surrogates (U+D800-U+DFFF): ``print("\\ud800")`` in the calculator, a JSON
file with a ``"\\udc80"`` escape, a backend that decodes bytes loosely. UTF-8 cannot encode them, and a
Hugging Face tokenizer given one raises ``TypeError``, which would end a rollout (and, as sampling is
seeded, the resumed run would replay it). ``encodable`` shows each lone surrogate as its escape
(the six characters ``\\ud800``) so the text stays readable and lossless to a person, and every other
character is kept.
"""

from __future__ import annotations

__all__ = ["encodable"]


def encodable(text: str) -> str:
    """``text`` with every lone surrogate written as its backslash escape (``\\ud800``); the same
    object when it already encodes as UTF-8 (the common case costs one encode)."""
    if not isinstance(text, str):
        text = str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
