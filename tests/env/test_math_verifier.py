"""MathVerifier: equivalences, adversarial answers under time limits (main thread and a worker
thread), and agreement with the AIME24/AIME25/MATH-500 references (skipped without the shared data).

Run: python -m pytest -q tests/rewards/test_math_verifier.py   (CPU; about 40 s on 2 busy cores,
most of it math-verify on 560 x 2 reference pairs)."""

import threading
import time

import pytest

from stare.env.data import load_examples
from stare.env.answers import normalize_answer
from stare.env.verifiers.math import MathVerifier


@pytest.fixture(scope="module")
def verifier():
    v = MathVerifier()  # the defaults the trainer gets: 2 workers, 1.5 s per check
    v.pool.wait_ready()
    yield v
    v.close()


@pytest.mark.parametrize(
    "gold, response",
    [
        (r"\frac{1}{2}", r"\boxed{0.5}"),
        ("x^2+1", r"\boxed{1 + x^{2}}"),
        ("(3,4]", r"The interval is \boxed{(3, 4]}"),
        (r"\{1,2\}", r"\boxed{\{2,1\}}"),
        ("1,000", r"\boxed{1000}"),
        (r"2\sqrt{2}", r"\boxed{\sqrt{8}}"),
        ("70", "Answer: 70.0"),
        (r"\dfrac{3}{4}", r"\boxed{\frac34}"),
    ],
)
def test_equivalent_answers_score_one(verifier, gold, response):
    s = verifier.score(gold, response)
    assert (s.reward, s.acc, s.format_ok) == (1.0, 1.0, True)


@pytest.mark.parametrize(
    "gold, response",
    [("3", r"\boxed{4}"), (r"\frac{1}{2}", r"\boxed{0.51}"), ("(3,4]", r"\boxed{[3,4]}"), ("x+1", r"\boxed{x-1}")],
)
def test_different_answers_score_zero(verifier, gold, response):
    assert verifier.score(gold, response).acc == 0.0


def test_no_answer_is_a_format_failure(verifier):
    s = verifier.score("3", "I do not know.")
    assert (s.acc, s.format_ok, s.pred) == (0.0, False, None)


ADVERSARIAL = {
    "power tower": r"\boxed{9^{9^{9}}}",
    "ten thousand nines": r"\boxed{2^{" + "9" * 10_000 + "}}",
    "5000 nested parentheses": r"\boxed{" + "(" * 5000 + "1" + ")" * 5000 + "}",
    "factorial of 10^10": r"\boxed{(10^{10})!}",
    "1 MB string": "7" * 1_000_000,
    "1 MB boxed": r"\boxed{" + "1" * 1_000_000 + "}",
    "invalid UTF-8": b"\\boxed{4\xff\xfe2} Answer: \xc3\x28",
    "unbalanced braces": r"\boxed{\frac{1}{2",
    "lone surrogates": "\\boxed{\udcff\ud800}",
}


def _check_adversarial(verifier, gold):
    times = {}
    for name, response in ADVERSARIAL.items():
        t = time.monotonic()
        s = verifier.score(gold, response)
        times[name] = time.monotonic() - t
        assert s.reward == 0.0 and s.acc == 0.0, name
    return times


def test_adversarial_answers_from_the_main_thread(verifier):
    times = _check_adversarial(verifier, "42")
    assert max(times.values()) < 2.0, times
    assert verifier.score("42", r"\boxed{42}").acc == 1.0  # still serving afterwards


def test_adversarial_answers_from_a_worker_thread(verifier):
    out = {}
    th = threading.Thread(target=lambda: out.update(times=_check_adversarial(verifier, r"\frac{1}{2}")))
    th.start()
    th.join(60)
    assert not th.is_alive()
    assert max(out["times"].values()) < 2.0, out
    assert verifier.score(r"\frac{1}{2}", r"\boxed{0.5}").acc == 1.0


def test_timeouts_are_counted_not_raised(verifier):
    before = verifier.stats.timeouts
    assert verifier.score("1", r"\boxed{9^{9^{9}}}").acc == 0.0
    assert verifier.stats.timeouts == before + 1


def test_score_many_keeps_order(verifier):
    golds = ["1", "2", r"\frac{1}{2}", "4"]
    responses = [r"\boxed{1}", r"\boxed{3}", r"\boxed{0.5}", "nothing"]
    assert [s.acc for s in verifier.score_many(golds, responses)] == [1.0, 0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="2 reference answers but 1"):
        verifier.score_many(["1", "2"], ["x"])


# -- the shipped benchmarks -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def references(math_data):
    names = ("aime24", "aime25", "math500")
    examples = {n: load_examples(math_data / f"{n}.parquet") for n in names}
    assert [len(examples[n]) for n in names] == [30, 30, 500]  # 30 x 32 copies deduplicated; 500
    return [e.answer for n in names for e in examples[n]]


def test_every_reference_answer_verifies(verifier, references):
    # Through the whole scorer (the string fast path takes most of these) ...
    scores = verifier.score_many(references, ["\\boxed{" + a + "}" for a in references])
    assert [i for i, s in enumerate(scores) if s.acc != 1.0] == []
    # ... and through math-verify itself, bypassing the fast path.
    values = verifier.pool.map("equivalent", [(a, a) for a in references])
    assert [references[i] for i, v in enumerate(values) if not v["equal"]] == []
    assert not any(v["eval_blocked"] for v in values)


def test_every_swapped_answer_is_rejected(verifier, references):
    # Each problem gets the next problem's answer whose normalised form differs (560 pairs).
    n = len(references)
    swapped = []
    for i, a in enumerate(references):
        j = next(k % n for k in range(i + 1, i + n) if normalize_answer(references[k % n]) != normalize_answer(a))
        swapped.append(references[j])
    before = verifier.stats.eval_blocked
    scores = verifier.score_many(references, ["\\boxed{" + b + "}" for b in swapped])
    accepted = [(references[i], swapped[i]) for i, s in enumerate(scores) if s.acc != 0.0]
    assert accepted == []
    assert verifier.stats.eval_blocked == before  # math-verify never reached eval on these


# -- issue 15: the first call of a run keeps the limit too ----------------------------------------------


def test_workers_start_when_the_verifier_is_built_and_the_first_call_keeps_the_limit():
    v = MathVerifier(timeout_s=1.5)
    try:
        assert v._pool is not None and v._pool.stats.spawned == 3  # 2 workers + 1 spare, started already
        t = time.monotonic()
        s = v.score("42", r"\boxed{9^{9^{9}}}")  # cold: the workers are still importing math-verify
        took = time.monotonic() - t
        assert s.acc == 0.0 and took < 2.0, took  # took 3.5-3.7 s before (start-up, then the full 1.5 s)
        assert v.stats.timeouts == 1
        v.wait_ready()
        assert v.score("1/2", r"\boxed{0.5}").acc == 1.0
    finally:
        v.close()
