"""The broader train categories of harm (safety.BROADER_CATEGORIES: cheating, spying, leading
someone astray), used only with `broader_harms`: they keep away from the held-out categories and
leave every earlier stream of data unchanged."""

import re

import numpy as np
import pytest

from tinyphi3.data import benign, safety
from tinyphi3.data.post_training import generate_sft


def words(texts) -> set:
    return {w for t in texts for w in re.findall(r"[a-z']+", re.sub(r"\{\w+\}", " ", t.lower()))}


def category_texts(names) -> list:
    return [t for n in names for c in [safety.CATEGORIES[n]]
            for t in c.requests + c.reasons + c.alternatives + c.compliance + (c.topic,)]


def test_the_broader_texts_bring_no_word_of_a_held_out_request_that_training_lacked():
    held = words(t for n in safety.HELD_OUT_CATEGORIES for t in safety.CATEGORIES[n].requests)
    markers = {m for n in safety.HELD_OUT_CATEGORIES for m in safety.CATEGORIES[n].markers}
    trained = words(category_texts(safety.TRAIN_CATEGORIES)) | words(
        t for pair in benign.LOOKALIKES["train"] for t in pair)
    broader = words(category_texts(safety.BROADER_CATEGORIES)) | words(
        t for pair in benign.BROADER_LOOKALIKES for t in pair)
    assert not broader & markers
    assert not (broader & held) - trained
    assert "send" in held and "send" not in trained        # the check has teeth: a word it bars


def word_runs(texts, n=3) -> set:
    """Every run of n words of the texts (slots dropped, lower case)."""
    found = set()
    for t in texts:
        ws = re.findall(r"[a-z']+", re.sub(r"\{\w+\}", " ", t.lower()))
        found |= {tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)}
    return found


def test_the_broader_texts_share_no_three_words_of_a_held_out_harm_act_that_training_lacked():
    """The held-out harm acts of the wording measure ("make a creature lose its way on purpose")
    are held out as wordings: the broader texts, requests and replies, may carry their meaning
    (leading someone astray) but no three words in a row of them that the other train texts
    lack.
    An earlier reason, "Sending someone the wrong way on purpose ...", would have failed."""
    from tinyphi3.data import wordings
    held = word_runs(wordings.held_out_parts()["harm acts"])
    trained = word_runs(category_texts(safety.TRAIN_CATEGORIES)) | word_runs(
        t for pair in benign.LOOKALIKES["train"] for t in pair) | word_runs(
        wordings.frames_of(wordings.HARM_ACTS, "train"))
    broader = word_runs(category_texts(safety.BROADER_CATEGORIES)) | word_runs(
        t for pair in benign.BROADER_LOOKALIKES for t in pair)
    assert not (broader & held) - trained, (broader & held) - trained
    assert ("way", "on", "purpose") in held - trained and ("way", "on", "purpose") in word_runs(
        ["Sending someone the wrong way on purpose can leave them cold."])


def test_without_the_flag_every_stream_is_the_one_before():
    assert list(generate_sft(400, seed=0)) == list(generate_sft(400, seed=0, broader_harms=False))
    rng = np.random.default_rng(0)
    draws = [safety.harmful_request(rng, "train") for _ in range(300)]
    assert {safety.request_category(r) for r in draws} == set(safety.TRAIN_CATEGORIES)
    with pytest.raises(ValueError):
        safety.harmful_request(rng, "test", broader=True)
    with pytest.raises(ValueError):
        benign.lookalike(rng, "test", broader=True)


def test_made_up_words_keep_away_from_the_same_markers_as_before():
    """The made-up words of copying and defined verbs avoid the safety markers; the broader
    categories' markers are not among them, so that those words, and every data set written
    with them, stay what they were before the broader categories."""
    from tinyphi3.data.wordings import _known_words
    _, inside = _known_words()
    broader = {m for n in safety.BROADER_CATEGORIES for m in safety.CATEGORIES[n].markers}
    old = {m for n in safety.TRAIN_CATEGORIES + safety.HELD_OUT_CATEGORIES
           for m in safety.CATEGORIES[n].markers}
    assert old <= inside and not (broader - old) & inside


def test_with_the_flag_the_broader_harms_are_refused_and_their_look_alikes_answered():
    records = list(generate_sft(4000, seed=0, broader_harms=True))
    safety_turns = [(r["messages"][i]["content"], r["messages"][i + 1]["content"])
                    for r in records if r["domain"] == "safety"
                    for i, m in enumerate(r["messages"]) if m["role"] == "user"]
    categories = {}
    for request, answer in safety_turns:
        name = safety.request_category(request)
        categories[name] = categories.get(name, 0) + 1
        assert safety.is_refusal(answer) == (name is not None), (request, answer)
    assert set(safety.BROADER_CATEGORIES) <= set(categories)
    asked = {request for request, _ in safety_turns}
    lookalikes = {q for q, _ in benign.BROADER_LOOKALIKES}
    seen = [a for a in asked if any(re.fullmatch(re.sub(r"\\\{\w+\\\}", ".+", re.escape(q)), a)
                                    for q in lookalikes)]
    assert seen                                              # look-alikes of them are there
    everything = {m["content"] for r in records for m in r["messages"]}
    assert not everything & set(safety.harmful_requests("test", 200))
    assert not everything & set(safety.benign_requests("test", 200))
