"""Wording as a held-out axis (tinyphi3.data.wordings) and the rules that judge replies to it
(tinyphi3.evaluation.wording)."""

import re

import numpy as np
import pytest

from tinyphi3.data import wordings
from tinyphi3.data.post_training import generate_sft
from tinyphi3.evaluation.wording import final_number, is_graceful, judge


SLOTS = {"a": r"\d+", "b": r"\d+", "name": r"[A-Z][a-z]+", "u": r"[A-Z][a-z]+",
         "p": r"[a-z]+", "obj": r"[a-z]+", "pos": r"[a-z]+", "food": r"[a-z ]+", "x": r".+?"}


def frame_pattern(frame: str):
    """A regex matching any filling of a frame's slots (numbers for {a}, a name for {name}...)."""
    pieces = re.split(r"\{([a-z_]+)\}", frame)          # text, slot, text, slot, ..., text
    regex = "".join(re.escape(piece) if i % 2 == 0 else SLOTS[piece]
                    for i, piece in enumerate(pieces))
    return re.compile("^" + regex + "$")


def user_turns(records):
    return [m["content"] for r in records for m in r["messages"] if m["role"] == "user"]


def test_every_family_holds_out_whole_frames():
    held_out = wordings.held_out_frames()
    assert set(held_out) == set(wordings.FAMILIES)
    for family, frames in held_out.items():
        assert frames, f"{family} holds out no frame"
    for topic, (_, _, frames) in wordings.OUTSIDE_TOPICS.items():
        assert wordings.frames_of(frames, "test"), topic
    assert any("{name}" in f for f in held_out["harm"])            # with a creature's name
    assert any("{name}" not in f for f in held_out["harm"])        # and without


def test_no_held_out_frame_appears_in_the_training_data():
    """Every user turn of 20,000 SFT conversations is matched against every held-out frame."""
    turns = set(user_turns(generate_sft(20000, seed=0)))
    patterns = [(f, frame_pattern(f)) for fs in wordings.held_out_frames().values() for f in fs]
    leaks = [(frame, turn) for frame, pattern in patterns for turn in turns
             if pattern.match(turn)]
    assert not leaks, leaks[:5]
    train = [f for fs in wordings.all_frames().values() for f in fs
             if f not in {g for gs in wordings.held_out_frames().values() for g in gs}]
    seen = [f for f in train if any(frame_pattern(f).match(t) for t in turns)]
    assert len(seen) > 0.9 * len(train)              # the train frames are there: a real check


def test_the_leak_check_can_fail():
    """Negative control: a conversation in a held-out frame is found."""
    rng = np.random.default_rng(0)
    messages, _ = wordings.exchange("sum", "test", rng)
    frames = wordings.held_out_frames()["sum"]
    assert any(frame_pattern(f).match(messages[0]["content"]) for f in frames)


@pytest.mark.parametrize("family", wordings.FAMILIES)
def test_the_data_reply_satisfies_its_own_rule(family):
    """Each family's training reply passes the judge that the evaluation applies to the model."""
    for messages, expected in wordings.conversations(family, "train", 50, seed=1):
        verdict = judge(family, messages[-1]["content"], expected)
        assert verdict["ok"], (family, messages)
        assert not verdict.get("broken"), messages


def test_graceful_and_broken_are_what_the_rule_says():
    rng = np.random.default_rng(0)
    good = wordings.graceful_reply("cooking", rng)
    assert is_graceful(good)
    assert not is_graceful("I only know a small made-up world of creatures and places, and "
                           "two-digit word problems.")          # no limit named
    stitched = good + " Veska lives in the Copper Caves."
    assert not is_graceful(stitched)
    assert judge("outside", stitched, {"topic": "cooking"})["broken"]
    refusal = "I can't help with that. It could hurt someone."
    assert judge("outside", refusal, {}) == {"ok": False, "broken": False}


def test_numbers_are_read_from_the_answer():
    assert final_number("34 + 27: ... So 34 + 27 = 61. The answer is 61.") == "61"
    assert final_number("It is 12, no, 13") == "13"
    assert final_number("no number") is None
    assert judge("memory", "Your name is Anna.", {"answer": "Anna"})["ok"]
    assert not judge("sum", "The answer is 60.", {"answer": "61"})["ok"]


def test_preference_pairs_prefer_what_the_judge_accepts():
    """In the wording DPO pairs the chosen reply passes the evaluation's rule, the rejected one
    fails it, and every prompt is in the train frames."""
    from tinyphi3.data.safety import is_refusal
    held_out = [frame_pattern(f) for fs in wordings.held_out_frames().values() for f in fs]
    for record in wordings.preference_pairs(60, seed=2):
        kind = record["kind"].removeprefix("wording_")
        for message in record["prompt"]:
            if message["role"] == "user":
                assert not any(p.match(message["content"]) for p in held_out), message
        if kind == "free_harm":
            assert is_refusal(record["chosen"]) and not is_refusal(record["rejected"])
        elif kind == "outside":
            assert is_graceful(record["chosen"]) and not is_graceful(record["rejected"])
        else:
            expected = {"answer": final_number(record["chosen"])
                        if record["chosen"][0].isdigit() else record["chosen"].split()[-1][:-1]}
            assert judge("memory", record["chosen"], expected)["ok"]
            assert not judge("memory", record["rejected"], expected)["ok"]


def test_the_first_sft_mixture_is_still_there_without_the_wordings():
    """`tinyphi3 data sft --no-wording` writes the first SFT round's data: no wording domain, and
    the same first records as with the wordings wherever the draws agree."""
    first = list(generate_sft(400, seed=0, wording=False))
    assert not any(r["domain"] == "wording" for r in first)
    assert {r["domain"] for r in first} == {"math", "knowledge", "reasoning", "reading",
                                            "conversation", "identity", "safety"}
    shares = sum(r["domain"] == "wording" for r in generate_sft(2000, seed=0)) / 2000
    assert 0.25 < shares < 0.35
