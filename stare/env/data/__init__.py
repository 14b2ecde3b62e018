"""Datasets: verl parquet, JSONL and Hugging Face hub loaders, row validation, prompt templates,
deduplication. Everything returns ``stare.env.Example``s."""

from .loaders import DedupResult, dedup_examples, load_examples, read_rows
from .schema import DataError, dedup_key, row_to_example
from .templates import TEMPLATES, apply_template, strip_instruction

__all__ = [
    "DataError",
    "DedupResult",
    "TEMPLATES",
    "apply_template",
    "dedup_examples",
    "dedup_key",
    "load_examples",
    "read_rows",
    "row_to_example",
    "strip_instruction",
]
