"""Load examples from verl parquet, JSONL/JSON, or the Hugging Face hub; validate; deduplicate.

``load_examples(source)`` reads:

* a ``.parquet`` file (verl's format, as in the project's shared math data), batch by batch;
* a ``.jsonl`` file (one JSON object per line; blank lines skipped) or a ``.json`` file holding a list
  of objects;
* ``hf://owner/name`` (or ``owner/name`` when no such local path exists) through ``datasets``. Offline
  it fails at once with a message saying what to do, instead of retrying for tens of seconds: the hub
  endpoint (``HF_ENDPOINT``, default huggingface.co) is probed with a TCP connection first, unless
  ``HF_HUB_OFFLINE=1`` asks for the local cache only (the variable must be set before ``datasets`` is
  imported, which reads it once; set later, it is refused with that explanation).

Every row goes through ``schema.row_to_example``; the first bad row raises ``DataError`` naming the
file, the row (parquet/hub: 0-based row index; JSONL: 1-based line number) and the field. Nothing is
skipped silently: deduplication (on by default) logs what it removed and returns counts.

Deduplication keys on the normalised prompt (``schema.dedup_key``). Copies with the same reference
answer (after ``normalize_answer``) collapse to the first; prompts that appear with different answers
are conflicts, and every copy is dropped, since at least one label is wrong (the shipped DAPO-Math-17k
copy has 210 duplicate prompts, 5 of them with conflicting answers).
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import urlparse

from ..answers import normalize_answer
from ..base import Example
from .schema import DataError, DataFileNotFound, dedup_key, row_to_example

__all__ = ["DedupResult", "dedup_examples", "load_examples", "read_rows"]

log = logging.getLogger("stare.env.data")

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_TRUE = {"1", "true", "yes", "on"}


def _parquet_rows(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading parquet needs pyarrow: pip install 'stare-rl[math]'") from None
    try:
        reader = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for unreadable files
        raise DataError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    i = 0
    for batch in reader.iter_batches(batch_size=2048):
        for row in batch.to_pylist():
            yield f"{path}: row {i}", row
            i += 1


def _jsonl_rows(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            where = f"{path}: line {n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{where}: not valid UTF-8 (byte {e.start})") from None
            if not line.strip():
                continue
            try:
                yield where, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None


def _json_rows(path: Path) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not a valid UTF-8 JSON file ({e})") from None
    if isinstance(data, Mapping) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a list of objects (or {{\"data\": [...]}}), got {type(data).__name__}")
    for i, row in enumerate(data):
        yield f"{path}: item {i}", row


_READERS = {".parquet": _parquet_rows, ".jsonl": _jsonl_rows, ".json": _json_rows}


def _reachable(url: str, timeout_s: float) -> bool:
    """Whether a TCP connection to the URL's host opens within ``timeout_s`` (name lookup included:
    it runs in a daemon thread, since ``getaddrinfo`` itself has no timeout)."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout_s).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout_s)
    return bool(ok)


def _hub_rows(hub_id: str, split: str, config: str | None, timeout_s: float) -> Iterator[tuple[str, Any]]:
    try:
        import datasets
    except ImportError:
        raise DataError(f"hf://{hub_id}: loading from the hub needs `datasets`: pip install 'stare-rl[math]'") from None
    asked_offline = any(os.environ.get(k, "").lower() in _TRUE for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    offline = bool(datasets.config.HF_HUB_OFFLINE)  # read by the library when it was imported
    if asked_offline and not offline:
        raise DataError(
            f"hf://{hub_id}: HF_HUB_OFFLINE is set but `datasets` was imported before it was, so it would "
            "still go online; set HF_HUB_OFFLINE=1 before starting Python"
        )
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    if not offline and not _reachable(endpoint, timeout_s):
        raise DataError(
            f"hf://{hub_id}: the Hugging Face hub ({endpoint}) is not reachable within {timeout_s:g} s "
            "(offline?). Download the dataset where there is a network and pass the local .parquet or "
            ".jsonl file, or set HF_HUB_OFFLINE=1 to read a copy already in the local cache."
        )
    try:
        ds = datasets.load_dataset(hub_id, name=config, split=split)
    except Exception as e:  # datasets raises many types (connection, missing split, missing config)
        hint = " (offline mode: only cached datasets load)" if offline else ""
        raise DataError(f"hf://{hub_id}: could not load split {split!r}{hint}: {type(e).__name__}: {e}") from None
    for i, row in enumerate(ds):
        yield f"hf://{hub_id} [{split}]: row {i}", row


def read_rows(
    source: str | os.PathLike, *, split: str = "train", hub_config: str | None = None, hub_timeout_s: float = 5.0
) -> tuple[Iterator[tuple[str, Any]], str]:
    """(iterator of (location, raw row), default source tag) for a file path or a hub id."""
    text = os.fspath(source)
    if text.startswith("hf://"):
        hub_id = text[len("hf://") :]
        return _hub_rows(hub_id, split, hub_config, hub_timeout_s), hub_id.split("/")[-1]
    path = Path(text)
    if path.is_file():
        reader = _READERS.get(path.suffix.lower())
        if reader is None:
            raise DataError(f"{path}: unsupported file type {path.suffix!r}; use one of {sorted(_READERS)}")
        return reader(path), path.stem
    if path.exists():
        raise DataError(f"{path}: not a file (give a .parquet, .jsonl or .json file)")
    if _HUB_ID.fullmatch(text):
        return _hub_rows(text, split, hub_config, hub_timeout_s), text.split("/")[-1]
    raise DataFileNotFound(f"{text}: no such file, and not a hub id of the form owner/name or hf://owner/name")


@dataclass
class DedupResult:
    """examples: what is kept, in first-seen order; duplicates: copies removed; conflicts: the
    origins of prompts dropped because their copies disagree on the answer."""

    examples: list[Example]
    duplicates: int = 0
    conflicts: list[list[str]] = field(default_factory=list)


def dedup_examples(examples: Sequence[Example]) -> DedupResult:
    """Remove repeated prompts (see the module docstring); logs a summary when anything is removed."""
    first: dict[str, int] = {}
    answers: dict[str, set[str]] = {}
    origins: dict[str, list[str]] = {}
    keys = []
    for i, ex in enumerate(examples):
        key = dedup_key(ex.prompt)
        keys.append(key)
        first.setdefault(key, i)
        answers.setdefault(key, set()).add(normalize_answer(ex.answer))
        origins.setdefault(key, []).append(str(ex.meta.get("origin", ex.uid)))
    conflicted = {k for k, a in answers.items() if len(a) > 1}
    kept = [ex for i, (ex, k) in enumerate(zip(examples, keys)) if first[k] == i and k not in conflicted]
    result = DedupResult(
        examples=kept,
        duplicates=sum(len(origins[k]) - 1 for k in first if k not in conflicted),
        conflicts=[origins[k] for k in first if k in conflicted],
    )
    if result.duplicates or result.conflicts:
        dropped = sum(len(c) for c in result.conflicts)
        log.warning(
            "deduplication: %d duplicate prompt(s) removed; %d prompt(s) with conflicting answers "
            "dropped (%d rows), e.g. %s",
            result.duplicates, len(result.conflicts), dropped, result.conflicts[:3],
        )
    return result


def load_examples(
    source: str | os.PathLike,
    *,
    split: str = "train",
    template: str | None = None,
    fields: Mapping[str, str] | None = None,
    dedup: bool = True,
    limit: int | None = None,
    hub_config: str | None = None,
    hub_timeout_s: float = 5.0,
) -> list[Example]:
    """Examples from a file or a hub dataset.

    split: the hub split to load (files hold one split; the argument is ignored for them).
    template: re-template each prompt (``templates.TEMPLATES`` name or a ``{question}`` string) after
        stripping a known instruction from it; None keeps prompts as stored.
    fields: column names for flat rows (keys ``question``, ``answer``, ``source``).
    dedup: remove repeated prompts (``dedup_examples``).
    limit: keep the first ``limit`` examples (after deduplication).
    """
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise DataError(f"limit: must be an integer >= 0 (or null for all), got {limit!r}")
    rows, default_source = read_rows(source, split=split, hub_config=hub_config, hub_timeout_s=hub_timeout_s)
    examples = [
        row_to_example(row, where=where, default_source=default_source, template=template, fields=fields)
        for where, row in rows
    ]
    if not examples:
        raise DataError(f"{os.fspath(source)}: no rows")
    if dedup:
        examples = dedup_examples(examples).examples
    return examples[:limit] if limit is not None else examples
