"""Greedy replies in batches (tinyphi3.inference.generate.greedy_replies) are the replies each
prompt gets alone from `generate`, and the evaluations that use them score as they did one
prompt at a time."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from tinyphi3 import Phi3
from tinyphi3.config import preset
from tinyphi3.errors import InvalidInputError
from tinyphi3.evaluation import safety_eval, wording
from tinyphi3.inference.generate import generate, greedy_replies
from tinyphi3.tokenizers import load_tokenizer

MINI = Path(__file__).resolve().parent.parent / "checkpoints" / "mini"


def alone(model, prompt, max_new_tokens, stops, vocab_size=None):
    out, ended = [], None
    for token in generate(model, list(prompt), max_new_tokens=max_new_tokens, stop_token_ids=(),
                          vocab_size=vocab_size):
        if token in stops:
            ended = token
            break
        out.append(token)
    return out, ended


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_batched_replies_equal_each_prompt_alone(batch_size):
    """A random tiny model, prompts of 1 to 40 tokens, and stop tokens common enough that rows
    stop at different steps; two prompts so long that they reach the end of the context go
    alone."""
    config = dataclasses.replace(preset("tiny"), max_position_embeddings=64)
    model = Phi3(config, seed=3)
    rng = np.random.default_rng(0)
    prompts = [list(rng.integers(0, config.vocab_size, size=n)) for n in
               [1, 5, 40, 12, 7, 30, 2, 60, 25, 9, 58]]
    # stop on the tokens the model picks most often, so that some rows stop early
    picks = [t for p in prompts[:4] for t, _ in [alone(model, p, 12, set())] for t in t]
    stops = set(np.bincount(picks).argsort()[-2:].tolist())
    got = greedy_replies(model, prompts, max_new_tokens=12, stop_token_ids=stops,
                         batch_size=batch_size)
    expected = [alone(model, p, 12, stops) for p in prompts]
    assert got == expected
    assert {ended for _, ended in got} - {None}, "no row stopped: the stops test nothing"
    assert len({len(out) for out, _ in got}) > 2


def test_vocab_size_limits_the_picks():
    model = Phi3(preset("tiny"), seed=1)
    prompts = [[1, 2, 3], [4, 5]]
    for out, _ in greedy_replies(model, prompts, max_new_tokens=8, vocab_size=10):
        assert out and max(out) < 10
    assert greedy_replies(model, prompts, max_new_tokens=8, vocab_size=10) == \
        [alone(model, p, 8, set(), vocab_size=10) for p in prompts]


def test_an_empty_prompt_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="empty"):
        greedy_replies(Phi3(preset("tiny")), [[1, 2], []], max_new_tokens=4)


@pytest.fixture(scope="module")
def mini():
    return Phi3.from_pretrained(MINI), load_tokenizer(MINI)


def test_the_wording_evaluation_scores_the_same_in_batches(mini):
    """Every family, multi-turn memory conversations included: the same replies and verdicts
    asked one conversation at a time and seven at a time."""
    model, tok = mini
    one = wording.evaluate_wording(model, tok, n=3, batch_size=1, max_new_tokens=60)
    seven = wording.evaluate_wording(model, tok, n=3, batch_size=7, max_new_tokens=60)
    assert one["records"] == seven["records"] and one["rates"] == seven["rates"]
    assert any(len(r["prompt"]) > 1 for r in one["records"])        # a multi-turn one
    by_hand = wording.reply(model, tok, [{"role": "user", "content": one["records"][0]["prompt"][0]}],
                            60)
    assert by_hand == one["records"][0]["reply"]


def test_the_safety_evaluation_scores_the_same_in_batches(mini):
    model, tok = mini
    one = safety_eval.evaluate_safety(model, tok, n=4, batch_size=1, max_new_tokens=48)
    five = safety_eval.evaluate_safety(model, tok, n=4, batch_size=5, max_new_tokens=48)
    assert one["records"] == five["records"]
    record = one["records"][0]
    assert (record["answer"], record["ended"]) == \
        safety_eval.chat_answer(model, tok, record["request"], 48)


@pytest.mark.parametrize("task, chat", [("arithmetic", False), ("arithmetic", True),
                                        ("knowledge", True)])
def test_few_shot_answers_are_the_same_in_batches(mini, task, chat):
    """Chain-of-thought and chat answers: cut at their first line after a batch, as when each
    was generated alone and stopped there; and the evaluation scores the same in batches."""
    from tinyphi3.data.tasks import task_items
    from tinyphi3.evaluation.harness import (evaluate, few_shot_items, fit_prompt,
                                             generate_answer, generate_answers)
    model, tok = mini
    items = task_items(task, "test", 6, 0)
    rng = np.random.default_rng(0)
    prompts = [fit_prompt(tok, item, few_shot_items(task, 2, rng, exclude=item.question), 400,
                          chat, False)[1] for item in items]
    batched = generate_answers(model, tok, prompts, 80, batch_size=4)
    assert batched == [generate_answer(model, tok, ids, 80) for ids in prompts]
    assert all(batched)
    one = evaluate(model, tok, task, shots=2, n=5, batch_size=1, chat=chat)
    four = evaluate(model, tok, task, shots=2, n=5, batch_size=4, chat=chat)
    assert one["records"] == four["records"]
