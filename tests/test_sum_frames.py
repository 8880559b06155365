"""The grammar of sum and difference wordings (tinyphi3.data.sum_frames): many frames, none nearer
to a held-out wording than training already was, every conversation answered right."""

import re

import numpy as np
import pytest

from test_wordings import held_out_detector
from tinyphi3.data import sum_frames, wordings, world
from tinyphi3.data.post_training import generate_sft

CORES = {"+": wordings.SUM_CORES, "-": wordings.DIFFERENCE_CORES}


def assert_kept_away(made, train, held, given):
    """The rule, checked from its definition: no wording of `made` nearer to a held-out one than
    the nearest train wording is, none with the words of one of `given`."""
    for h in held:
        bound = max(sum_frames.nearness(t, h) for t in train)
        assert bound < 1.0
        too_near = [g for g in made if sum_frames.nearness(g, h) > bound]
        assert not too_near, (h, too_near[:3])
    given_words = {sum_frames.words(w) for w in given}
    assert not [g for g in made if sum_frames.words(g) in given_words]


@pytest.mark.parametrize("op", ["+", "-"])
def test_the_grammar_is_large_and_keeps_its_distance_from_every_held_out_frame(op):
    frames = sum_frames.grammar_frames(op)
    assert len(frames) > 1000
    assert_kept_away(frames, world.frames_of(CORES[op], "train"),
                     world.frames_of(CORES[op], "test"),
                     [c for cores in CORES.values() for c in cores])


def test_the_rule_drops_a_one_word_change_of_a_held_out_frame_and_keeps_a_far_one():
    """Negative control: the rule would drop what it should. "Can you take {b} from {a}?" is
    held out; with "Could" for "Can" it is nearer than any train frame, and the grammar's
    "Please subtract {b} from {a}." is not."""
    held = "Can you take {b} from {a}?"
    assert held in world.frames_of(wordings.DIFFERENCE_CORES, "test")
    bounds = sum_frames.held_out_bounds(wordings.DIFFERENCE_CORES)
    assert sum_frames.nearness("Could you take {b} from {a}?", held) > bounds[held]
    assert sum_frames.nearness("Please subtract {b} from {a}.", held) <= bounds[held]
    assert "Please subtract {b} from {a}." in sum_frames.grammar_frames("-")
    assert sum_frames.words("What's {a} + {b}?") == ("what's", "{a}", "+", "{b}")


def test_every_frame_fills_and_every_conversation_is_answered_right_with_train_operands():
    rng = np.random.default_rng(0)
    detect = held_out_detector()
    seen = {"+": set(), "-": set()}
    for _ in range(3000):
        (user, assistant) = sum_frames.arithmetic_chat(rng)
        question, reply = user["content"], assistant["content"]
        assert "{" not in question and "}" not in question, question
        assert not detect(question), question
        a, op, b = re.search(r"(\d+) ([+-]) (\d+):", reply).groups()
        a, b = int(a), int(b)
        assert {str(a), str(b)} <= set(re.findall(r"\d+", question)), (question, reply)
        result = a + b if op == "+" else a - b
        assert reply.endswith(f"The answer is {result}."), reply
        assert result >= 0
        assert world.in_split(world.arithmetic_key(a, op, b), "train")
        seen[op].add(question)
    assert len(seen["+"]) > 1000 and len(seen["-"]) > 1000


def test_generate_sft_draws_the_share_and_is_unchanged_without_it():
    assert list(generate_sft(300, seed=0, copy=0.1)) == list(
        generate_sft(300, seed=0, copy=0.1, sum_frames=0.0))
    records = list(generate_sft(2000, seed=0, copy=0.1, sum_frames=0.2))
    share = sum(r["domain"] == "sum_frame" for r in records) / len(records)
    assert 0.16 < share < 0.24
    with pytest.raises(ValueError):
        next(generate_sft(10, sum_frames=1.5))
