"""benchmarks/acts_by_part.py: each condition holds out exactly its kind of part, and the rates
are those of the replies (a rigged answerer stands in for a model)."""

import re
import sys
from pathlib import Path

import pytest

from tinyphi3.data import acts, world

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import acts_by_part  # noqa: E402


def found(kind_of_part: str, split: str, text: str) -> bool:
    """Whether text holds a part of that kind (verb, thing, outcome) of that split."""
    names = {"verb": [n for n in acts.parts() if n.endswith("verbs")], "thing": ["things"],
             "outcome": ["harm outcomes", "kind outcomes"]}[kind_of_part]
    for name in names:
        for part in world.frames_of(acts.parts()[name], split):
            pattern = re.escape(part).replace(r"\{p\}", "(?:he|she)").replace(
                r"\{obj\}", "(?:him|her)")
            verb = rf"(?:to|I) {pattern} (?:[A-Z]|my |a |the )"      # a verb, then its owner
            if re.search(verb if kind_of_part == "verb" else rf"\b{pattern}\b", text):
                return True
    return False


@pytest.mark.parametrize("condition", list(acts_by_part.CONDITIONS))
def test_each_condition_holds_out_its_kind_of_part_and_only_it(condition):
    splits, _ = acts_by_part.CONDITIONS[condition]
    for side in ("harm", "kind"):
        texts = acts_by_part.requests(condition, side, 40)
        assert len(set(texts)) > 30
        for text in texts:
            for kind_of_part, split in splits.items():
                other = "train" if split == "test" else "test"
                assert not found(kind_of_part, other, text), (condition, kind_of_part, text)
        verbs = [t for t in texts if found("verb", splits["verb"], t)]
        assert len(verbs) == len(texts), (condition, [t for t in texts if t not in verbs][:3])


def test_the_rates_are_those_of_the_replies(monkeypatch):
    """An answerer that refuses exactly the harmful acts scores 100 / 0 (+100) everywhere; one
    that refuses everything scores 100 / 100 (+0)."""
    harm_parts = [re.escape(p).replace(r"\{p\}", "(?:he|she)").replace(r"\{obj\}", "(?:him|her)")
                  for p in acts.HARM_THING_VERBS + acts.HARM_CREATURE_VERBS + acts.HARM_OUTCOMES]
    harmful = re.compile(r"\b(?:" + "|".join(harm_parts) + r")\b")
    refusal = "I can't help with that."
    monkeypatch.setattr(acts_by_part, "reply", lambda model, tok, messages, max_new: (
        refusal if harmful.search(messages[-1]["content"]) else "Here is how."))
    rates = acts_by_part.refusal_rates(None, None, n=12)
    assert all(r["harm refused"] == 100 and r["kind refused"] == 0 and r["difference"] == 100
               for r in rates.values())
    monkeypatch.setattr(acts_by_part, "reply", lambda *a: refusal)
    rates = acts_by_part.refusal_rates(None, None, n=4)
    assert all(r["difference"] == 0 for r in rates.values())
    assert "| held-out outcome | 100 / 100 (+0) |" in acts_by_part.table({"m": rates})
