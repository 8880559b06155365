"""The grammar of greetings, thanks, identity, abilities and outside requests
(tinyphi3.data.chat_frames): many wordings, none nearer to a held-out wording than training
already was, each answered as its hand-written family is."""

import re

import numpy as np
import pytest

from test_sum_frames import assert_kept_away
from test_wordings import held_out_detector
from tinyphi3.data import chat_frames, safety, wordings
from tinyphi3.data.post_training import generate_sft

SMALLEST = {"greeting": 1000, "thanks": 200, "identity": 50, "abilities": 50, "name given": 300,
            "name asked": 10, "number given": 10, "number used": 10, "asks": 30}
KIND_ANSWERS = [re.compile(re.sub(r"\\\{\w+\\\}", ".+", re.escape(answer)))
                for _, answer in wordings.KIND_ACTS]


@pytest.mark.parametrize("family", chat_frames.FAMILIES)
def test_the_grammar_keeps_its_distance_from_every_held_out_wording(family):
    made = chat_frames.grammar_wordings(family)
    assert len(made) >= SMALLEST.get(family, 5), len(made)
    train, held = chat_frames.hand_written(family)
    assert held and train
    assert_kept_away(made, train, held, list(train) + list(held))


def test_the_rule_drops_a_vocative_that_a_held_out_greeting_uses():
    """Negative control: " mini!" is a held-out ending of greetings and no train greeting says
    "mini", so "Hey mini!" (made here only to be dropped) is too near "Howdy mini!"; "Hi pal!"
    is kept."""
    train, held = chat_frames.hand_written("greeting")
    assert "Howdy mini!" in held
    assert chat_frames.keep(["Hey mini!", "Hi pal!"], train, held) == ("Hi pal!",)
    assert "Hi pal!" not in train


def test_the_hand_written_wordings_are_the_measure_s():
    """The held-out wordings the rule keeps away from are the ones the measure draws."""
    rng = np.random.default_rng(1)
    for family in ("greeting", "thanks"):
        _, held = chat_frames.hand_written(family)
        for _ in range(50):
            messages, _ = wordings.exchange(family, "test", rng)
            assert messages[-2]["content"] in held
    _, held = chat_frames.hand_written("identity")
    assert set(held) == set(wordings.held_out_parts()["identity"])


def test_every_conversation_is_answered_as_its_family_and_holds_no_held_out_part():
    rng = np.random.default_rng(0)
    detect = held_out_detector()
    replies = {"greeting": wordings.GREETING_REPLIES, "thanks": wordings.THANKS_REPLIES,
               "identity": wordings.IDENTITY_REPLIES, "abilities": wordings.ABILITY_REPLIES}
    seen = {}
    for _ in range(3000):
        messages = chat_frames.social_chat(rng)
        assert [m["role"] for m in messages] == ["user", "assistant"] * (len(messages) // 2)
        for m in messages[::2]:
            assert "{" not in m["content"] and "}" not in m["content"], m
            assert not detect(m["content"]), (m, detect(m["content"]))
        question, reply = messages[0]["content"], messages[-1]["content"]
        family = next((f for f, r in replies.items() if reply in r), None)
        if len(messages) > 2:
            family = "memory"
            first = messages[1]["content"]
            if first.startswith("Nice to meet you, "):
                name = first.removeprefix("Nice to meet you, ").removesuffix("! How can I help?")
                assert name in question and reply == f"Your name is {name}.", messages
            else:
                a = int(first.removeprefix("Okay, I'll remember ").rstrip("."))
                assert reply.startswith(f"{a} "), messages     # the calculation starts from it
        elif family is None:
            sentences = [s + "." if not s.endswith(("?", ".")) else s
                         for s in reply.replace("? ", "?|").replace(". ", ".|").split("|")]
            if set(sentences) <= wordings.GRACEFUL_SENTENCES:
                family = "outside"
            elif safety.is_refusal(reply):
                family = "harm"
            else:
                family = "kind"
                assert any(answer.fullmatch(reply) for answer in KIND_ANSWERS), messages
        seen.setdefault(family, set()).add(question)
    assert {f: len(q) > 100 for f, q in seen.items()} == dict.fromkeys(
        ("greeting", "thanks", "identity", "abilities", "outside", "memory", "harm", "kind"), True)


def test_generate_sft_draws_the_share_and_is_unchanged_without_it():
    assert list(generate_sft(300, seed=0, sum_frames=0.1)) == list(
        generate_sft(300, seed=0, sum_frames=0.1, chat_frames=0.0))
    records = list(generate_sft(2000, seed=0, chat_frames=0.2))
    share = sum(r["domain"] == "chat_frame" for r in records) / len(records)
    assert 0.16 < share < 0.24
    with pytest.raises(ValueError):
        next(generate_sft(10, chat_frames=-0.1))
    with pytest.raises(ValueError, match="unknown family"):
        chat_frames.grammar_wordings("farewell")
