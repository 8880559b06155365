"""benchmarks/reasons.py: the counts are those of the replies and the logits (a rigged answerer
and a rigged model stand in for real ones)."""

import re
import sys
from pathlib import Path

import numpy as np

from tinyphi3.data import acts

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import reasons  # noqa: E402


class Tokens:
    """Token 1 for " un", 2 for " kind", 0 for anything else."""
    def encode(self, text):
        return {" un": [1], " kind": [2]}.get(text, [0] * max(1, len(text.split())))


class AlwaysUnkind:
    def forward(self, ids):
        logits = np.zeros((1, ids.shape[1], 3))
        logits[0, -1, 1] = 1.0
        return logits


def test_judge_counts_a_model_that_always_says_unkind_right_on_harm_only():
    counts = reasons.judge(AlwaysUnkind(), Tokens())
    harm_verbs = len(acts.HARM_THING_VERBS) + len(acts.HARM_CREATURE_VERBS)
    verbs = sum(asked for (kind, _, form), (_, asked) in counts.items()
                if kind == "verb" and form == "meaning")
    right = sum(r for (kind, _, form), (r, _) in counts.items()
                if kind == "verb" and form == "meaning")
    assert verbs == harm_verbs + len(acts.KIND_THING_VERBS) + len(acts.KIND_CREATURE_VERBS)
    assert right == harm_verbs
    outcome_right = sum(r for (kind, _, form), (r, _) in counts.items()
                        if kind == "outcome" and form == "purpose")
    assert outcome_right == 3 * len(acts.HARM_OUTCOMES)


def batched(reply):
    """A stand-in for reasons.replies (a batch of conversations) from one for reply."""
    return lambda model, tok, conversations, max_new: [reply(model, tok, messages, max_new)
                                                       for messages in conversations]


def test_copy_tells_the_asked_verb_from_another_and_checks_the_judgement(monkeypatch):
    verbs = sorted(acts.VERB_MEANINGS, key=len, reverse=True)

    def faithful(model, tok, messages, max_new):
        request = messages[-1]["content"]
        verb = next(v for v in verbs if re.search(rf"\b{re.escape(v)}\b", request))
        side = "unkind" if acts.side_of_verb(verb) == "harm" else "kind"
        return f"To {verb}: it does something; doing it is {side}, so that is that."
    monkeypatch.setattr(reasons, "replies", batched(faithful))
    rows = reasons.copy(None, None, n=6)
    for row in rows.values():           # the either verbs' side is None: judged "kind"
        assert row["names the asked verb"] == 12 and row["no reason"] == 0
        assert 0 < row["named, judged right"] <= 12
    monkeypatch.setattr(reasons, "replies",
                        batched(lambda *a: "To qwerty: x; qwertying is kind, so here."))
    rows = reasons.copy(None, None, n=3)
    assert all(r["names another verb"] == 6 and r["named, judged right"] == 0
               for r in rows.values())
    monkeypatch.setattr(reasons, "replies", batched(lambda *a: "I can't help with that."))
    assert all(r["no reason"] == 6 for r in reasons.copy(None, None, n=3).values())


def test_names_counts_the_replies_that_hold_the_given_name(monkeypatch):
    def echo(model, tok, messages, max_new):
        return "Nice to meet you, " + messages[-1]["content"] + "!"
    monkeypatch.setattr(reasons, "reply", echo)
    assert reasons.names(None, None, 10)[:2] == (10, 10)
    monkeypatch.setattr(reasons, "reply", lambda *a: "Nice to meet you, Qzx!")
    copied, n, examples = reasons.names(None, None, 10)
    assert (copied, n) == (0, 10) and len(examples) == 3


def test_copy_defined_asks_the_held_out_verbs_defined_and_made_up_verbs_in_their_place(
        monkeypatch):
    """--defined: each request opens with the verb's definition; in the made-up condition the
    held-out verb is gone from the request and a reply that copies the defined word names it."""
    harm_meanings = {acts.VERB_MEANINGS[v] for v in acts.VERB_MEANINGS
                     if acts.side_of_verb(v) == "harm"}
    held = [v for v in acts.VERB_MEANINGS if v in reasons._held_out()]
    asked = []

    def reads_the_definition(model, tok, messages, max_new):
        request = messages[-1]["content"]
        match = re.match(r"To (.+?): (.+?)\. ", request)
        if not match:                                  # the first two conditions
            return "I can't help with that."
        asked.append(request)
        side = "unkind" if match[2] in harm_meanings else "kind"
        return f"You ask how to {match[1]} it; to {match[1]}: {match[2]}; it is {side}, so ok."
    monkeypatch.setattr(reasons, "replies", batched(reads_the_definition))
    rows = reasons.copy(None, None, n=5, defined=True)
    assert list(rows) == ["train parts", "held-out verb", *reasons.DEFINED]
    for condition in reasons.DEFINED:
        row = rows[condition]
        assert row["says the verb back"] == row["names the asked verb"] == 10
        assert 0 < row["named, judged right"] <= 10
    made_up = asked[10:]
    assert len(made_up) == 10
    for request in made_up:
        word = re.match(r"To (\S+):", request)[1]
        assert word not in acts.VERB_MEANINGS
        act = request.split(". ", 1)[1]
        assert not any(re.search(rf"\b{re.escape(v)}\b", act) for v in held), request
