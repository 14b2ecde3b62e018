"""Loaders: verl parquet, JSONL/JSON, hub (offline behaviour), row validation errors that name the
file, row and field, deduplication, and the shipped math data (skipped where absent).

Run: python -m pytest -q tests/data/test_loaders.py   (CPU; a few seconds)."""

import importlib.util
import json
import os
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stare.env.data import DataError, dedup_examples, load_examples, strip_instruction, apply_template


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _verl_row(question, answer, source="src", index=0):
    return {
        "data_source": source,
        "prompt": [{"role": "user", "content": question}],
        "ability": "math",
        "reward_model": {"ground_truth": answer, "style": "rule"},
        "extra_info": {"index": index},
    }


def test_flat_jsonl(tmp_path):
    f = _jsonl(tmp_path / "d.jsonl", [{"problem": "1+1?", "answer": "2"}, "", {"question": "2+2?", "answer": 4}])
    ex = load_examples(f)
    assert [(e.prompt, e.answer, e.source) for e in ex] == [
        ([{"role": "user", "content": "1+1?"}], "2", "d"),
        ([{"role": "user", "content": "2+2?"}], "4", "d"),  # numbers become strings
    ]
    assert ex[0].meta["origin"].endswith("d.jsonl: line 1")
    assert len({e.uid for e in ex}) == 2


def test_field_mapping_and_template(tmp_path):
    f = _jsonl(tmp_path / "d.jsonl", [{"Q": "What is 3*3?", "A": "9", "tag": "mine"}])
    (e,) = load_examples(f, fields={"question": "Q", "answer": "A", "source": "tag"}, template="boxed")
    assert e.prompt[0]["content"] == "What is 3*3?\nPlease reason step by step, and put your final answer within \\boxed{}."
    assert e.source == "mine"
    with pytest.raises(ValueError, match="unknown keys in fields"):
        load_examples(f, fields={"problem": "Q"})


def test_json_list_file(tmp_path):
    f = tmp_path / "d.json"
    f.write_text(json.dumps({"data": [{"problem": "p", "answer": "a"}]}))
    assert [e.answer for e in load_examples(f)] == ["a"]


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"problem": "p", "answer": "a"}, {"problem": "q"}], r"d.jsonl: line 2: field 'answer': missing"),
        ([{"problem": "p", "answer": ["a", "b"]}], r"line 1: field 'answer': expected a string or a number, got list"),
        ([{"problem": "", "answer": "1"}], r"line 1: field 'problem': expected a non-empty string"),
        ([{"problem": "p", "answer": "  "}], r"line 1: field 'answer': empty answer"),
        ([{"problem": "p", "answer": float("nan")}], r"field 'answer': nan is not a finite number"),
        (['{"problem": "p", "answer": '], r"line 1: not valid JSON"),
        (["[1, 2]"], r"line 1: expected an object with named fields, got list"),
        ([_verl_row("q", "1") | {"prompt": [{"role": "robot", "content": "x"}]}],
         r"line 1: field 'prompt\[0\].role': 'robot' is not one of"),
        ([_verl_row("q", "1") | {"reward_model": {"style": "rule"}}], r"field 'reward_model.ground_truth': missing"),
        ([_verl_row("q", "1") | {"prompt": [{"role": "system", "content": "s"}]}], r"field 'prompt': no user message"),
        ([_verl_row("q", "1") | {"prompt": "[{'role': 'user', 'content': "}], r"field 'prompt': a string that is not a valid literal"),
    ],
)
def test_bad_rows_name_file_row_and_field(tmp_path, rows, message):
    f = _jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError, match=message):
        load_examples(f)


def test_invalid_utf8_names_the_line(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_bytes(b'{"problem": "p", "answer": "1"}\n{"problem": "\xff", "answer": "2"}\n')
    with pytest.raises(DataError, match=r"line 2: not valid UTF-8"):
        load_examples(f)


def test_missing_empty_and_unsupported_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_examples(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no rows"):
        load_examples(tmp_path / "empty.jsonl")
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"unsupported file type '.csv'"):
        load_examples(tmp_path / "d.csv")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="not a readable parquet file"):
        load_examples(tmp_path / "bad.parquet")


def test_verl_parquet_with_nested_columns(tmp_path):
    rows = [_verl_row("What is 2+3?", "5", index=0), _verl_row("What is 2*3?", "6", index=1)]
    f = tmp_path / "v.parquet"
    pq.write_table(pa.Table.from_pylist(rows), f)
    ex = load_examples(f)
    assert [(e.prompt[0]["content"], e.answer, e.source, e.meta["index"]) for e in ex] == [
        ("What is 2+3?", "5", "src", 0), ("What is 2*3?", "6", "src", 1)]
    assert ex[1].meta["origin"].endswith("v.parquet: row 1")


def test_python_literal_strings_are_parsed_not_evaluated(tmp_path):
    # Some writers store nested columns as Python reprs; they are read with ast.literal_eval.
    rows = [{"prompt": "[{'role': 'user', 'content': 'hi'}]", "reward_model": "{'ground_truth': '3'}",
             "data_source": "s"},
            {"prompt": "[__import__('os').system('echo pwned')]", "reward_model": "{'ground_truth': '3'}"}]
    f = tmp_path / "lit.parquet"
    pq.write_table(pa.Table.from_pylist(rows), f)
    with pytest.raises(DataError, match=r"lit.parquet: row 1: field 'prompt': a string that is not a valid literal"):
        load_examples(f)
    pq.write_table(pa.Table.from_pylist(rows[:1]), f)
    (e,) = load_examples(f)
    assert (e.prompt, e.answer) == ([{"role": "user", "content": "hi"}], "3")


def test_parquet_row_error_names_the_row(tmp_path):
    rows = [_verl_row("a", "1"), _verl_row("b", "2"), _verl_row("c", "3")]
    rows[2]["reward_model"] = {"ground_truth": None, "style": "rule"}
    f = tmp_path / "v.parquet"
    pq.write_table(pa.Table.from_pylist(rows), f)
    with pytest.raises(DataError, match=r"v.parquet: row 2: field 'reward_model.ground_truth': expected a string or a number, got NoneType"):
        load_examples(f)


def test_dedup_collapses_copies_and_drops_conflicts(tmp_path, caplog):
    rows = [
        {"problem": "Find x.", "answer": "1"},
        {"problem": "Find  x.", "answer": "1"},  # same after whitespace normalisation: a copy
        {"problem": "Find X.", "answer": "2"},  # case differs: another problem
        {"problem": "Find y.", "answer": "3"},
        {"problem": "Find y.", "answer": "4"},  # same prompt, other answer: a conflict
        {"problem": "Find z.", "answer": "\\dfrac{1}{2}"},
        {"problem": "Find z.", "answer": "\\frac{1}{2}"},  # same answer after normalisation: a copy
    ]
    f = _jsonl(tmp_path / "d.jsonl", rows)
    examples = load_examples(f, dedup=False)
    result = dedup_examples(examples)
    assert [e.answer for e in result.examples] == ["1", "2", "\\dfrac{1}{2}"]
    assert result.duplicates == 2
    assert [[o.rsplit(": ", 1)[1] for o in c] for c in result.conflicts] == [["line 4", "line 5"]]
    assert "conflicting answers" in caplog.text
    assert [e.answer for e in load_examples(f)] == ["1", "2", "\\dfrac{1}{2}"]
    assert [e.answer for e in load_examples(f, limit=2)] == ["1", "2"]


def test_hub_offline_fails_fast_with_advice(monkeypatch):
    # Port 9 on localhost is closed: the probe fails at once instead of datasets' retries.
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    for source in ("hf://some-org/some-math-set", "some-org/some-math-set"):
        t = time.monotonic()
        with pytest.raises(DataError, match=r"not reachable.*pass the local \.parquet or \.jsonl file"):
            load_examples(source)
        assert time.monotonic() - t < 6


def _in_fresh_python(tmp_path, code, **env):
    """Run ``code`` in a new interpreter: the HF libraries read HF_HUB_OFFLINE once, at import."""
    if importlib.util.find_spec("datasets") is None:
        pytest.skip("datasets is not installed")
    full_env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), HF_DATASETS_CACHE=str(tmp_path / "hf" / "ds"), **env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


PROBE = """
import json
from stare.env.data import DataError, load_examples
results = []
for source in {sources!r}:
    try:
        ex = load_examples(source, split={split!r})
        results.append({{"answers": [e.answer for e in ex], "origin": ex[0].meta["origin"]}})
    except DataError as e:
        results.append({{"error": str(e)}})
print(json.dumps(results))
"""


def test_hub_offline_mode_reads_only_the_cache_and_validates_rows(tmp_path):
    # datasets also loads a local folder by path: this runs the hub path without a network.
    good, bad = tmp_path / "good_set", tmp_path / "bad_set"
    good.mkdir(), bad.mkdir()
    _jsonl(good / "test.jsonl", [{"problem": "p1", "answer": "1"}, {"problem": "p2", "answer": "2"}])
    _jsonl(bad / "test.jsonl", [{"problem": "p1"}])
    sources = ["hf://some-org/not-cached", f"hf://{good}", f"hf://{bad}"]
    t = time.monotonic()
    uncached, loaded, invalid = _in_fresh_python(tmp_path, PROBE.format(sources=sources, split="test"), HF_HUB_OFFLINE="1")
    assert time.monotonic() - t < 30  # no network retries (online, datasets retries for ~25 s)
    assert "could not load split 'test' (offline mode: only cached datasets load)" in uncached["error"]
    assert loaded == {"answers": ["1", "2"], "origin": f"hf://{good} [test]: row 0"}
    assert invalid["error"].endswith("[test]: row 0: field 'answer': missing; looked for "
                                     "['answer', 'final_answer', 'ground_truth'] in ['problem']")


def test_offline_set_after_import_is_refused(monkeypatch):
    datasets = pytest.importorskip("datasets")
    if datasets.config.HF_HUB_OFFLINE:
        pytest.skip("this session started offline")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="set HF_HUB_OFFLINE=1 before starting Python"):
        load_examples("hf://some-org/some-set")


# -- the shipped verl files ------------------------------------------------------------------------

SHIPPED = {  # rows in the file -> examples after deduplication (README of the shared data)
    "DAPO-Math-17k": (17398, 17182),  # 206 copies removed, 5 conflicting prompts (10 rows) dropped
    "aime24": (960, 30), "aime25": (960, 30), "amc23": (1280, 40), "math500": (500, 500),
    "minerva_math": (272, 272), "olympiadbench": (675, 675), "gsm8k_test": (1319, 1319),
}


def test_shipped_files_load(math_data):
    for name, (rows, kept) in SHIPPED.items():
        assert len(load_examples(math_data / f"{name}.parquet", dedup=False)) == rows, name
        assert len(load_examples(math_data / f"{name}.parquet")) == kept, name


def test_shipped_prompts_round_trip_through_the_templates(math_data):
    # AIME24 stores DAPO's "Answer:" prompt and the bare question: stripping recovers the question
    # and re-templating rebuilds the stored prompt exactly.
    for row in pq.read_table(math_data / "aime24.parquet").to_pylist():
        content = row["prompt"][0]["content"]
        assert strip_instruction(content) == row["extra_info"]["raw_problem"].strip()
        assert apply_template("answer_line", strip_instruction(content)) == content
    wrapped = [r["prompt"][0]["content"] for r in pq.read_table(math_data / "DAPO-Math-17k.parquet").to_pylist()
               if r["prompt"][0]["content"].startswith("Solve the following")]
    assert len(wrapped) > 10_000
    # (510 of them have extra blank lines around the question: compare modulo whitespace)
    assert all(apply_template("dapo_boxed", strip_instruction(c)).split() == c.split() for c in wrapped)
    (first, *_) = load_examples(math_data / "aime25.parquet", template="boxed")
    assert first.prompt[0]["content"].endswith("\nPlease reason step by step, and put your final answer within \\boxed{}.")
    assert "Answer:" not in first.prompt[0]["content"]


def test_a_lone_surrogate_in_the_data_is_kept_as_its_escape(tmp_path):
    # issue 15: json.loads turns "\ud800" into a lone surrogate, which the uid hash and tokenizers cannot encode
    f = tmp_path / "s.jsonl"
    f.write_text('{"problem": "what is \\ud800?", "answer": "\\udc80"}\n')
    (ex,) = load_examples(f)
    assert ex.prompt[0]["content"] == "what is \\ud800?" and ex.answer == "\\udc80"
