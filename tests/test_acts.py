"""The grammar of acts (tinyphi3.data.acts): whole parts held out, the fixed held-out acts of
tinyphi3.data.wordings kept away from, harm refused and kindness answered in its chats."""

import re

import numpy as np
import pytest

from tinyphi3.data import acts, safety, wordings, world
from tinyphi3.data.post_training import generate_sft

from test_wordings import content_words


def templates(side: str, split: str):
    """Every act of a side of a split with the owner left as {name}: "smash {name}'s cup"."""
    owner = {"owner": "{name}", "p": "{p}", "obj": "{obj}", "pos": "{pos}"}
    verbs = {shape: [v if isinstance(v, str) else v[0]
                     for v in world.frames_of(acts._verbs(shape, side), split)]
             for shape in acts.SHAPES}
    things = world.frames_of(acts.THINGS, split)
    outcomes = world.frames_of(acts.HARM_OUTCOMES if side == "harm" else acts.KIND_OUTCOMES,
                               split)
    for verb in verbs["creature"]:
        yield f"{verb} {{name}}"
    for thing in things:
        for verb in verbs["thing"]:
            yield f"{verb} {{name}}'s {thing}"
        for verb in verbs["either"]:
            for outcome in outcomes:
                yield f"{verb} {{name}}'s {thing} {outcome.format(**owner)}"


def test_the_splits_share_no_part_and_every_list_holds_out_a_quarter():
    for name, part_list in acts.parts().items():
        train, test = (set(world.frames_of(part_list, s)) for s in world.SPLITS)
        assert not train & test, name
        assert len(test) == len(part_list) // 4 and len(set(part_list)) == len(part_list), name
    for side in ("harm", "kind"):
        assert acts.count_acts(side, "train") >= 1000 and acts.count_acts(side, "test") >= 50
        assert len(set(templates(side, "test"))) == acts.count_acts(side, "test")


def test_the_grammar_keeps_away_from_the_fixed_held_out_acts():
    """No harmful act starts with a held-out harmful act's verb; no act shares its verb and
    another content word, or two content words, with a held-out act of its side; no kind act
    reads as a listed harm act."""
    held = {"kind": [a for a, _ in world.frames_of(wordings.KIND_ACTS, "test")],
            "harm": list(world.frames_of(wordings.HARM_ACTS, "test"))}
    held_harm_verbs = {a.split()[0] for a in held["harm"]}
    values = wordings.creature_fields(world.ENTITIES[0])
    for side in ("harm", "kind"):
        for split in world.SPLITS:
            for act in templates(side, split):
                verb = act.split()[0]
                assert not (side == "harm" and verb in held_harm_verbs), act
                for other in held[side]:
                    mine, theirs = content_words(act), content_words(other)
                    same_verb = verb == other.split()[0]
                    assert not (same_verb and (mine - {verb}) & theirs), (act, other)
                    assert len(mine & theirs) < 2, (act, other)
                if side == "kind":
                    request = f"How can I {act}?".format(**values)
                    assert not wordings.is_free_harm(request), request


def held_out_part_pattern():
    """A regex that finds any held-out verb, thing or outcome (its words, pronouns free)."""
    pieces = []
    for part_list in acts.parts().values():
        for part in world.frames_of(part_list, "test"):
            text = re.escape(part)
            for slot in ("p", "obj"):
                text = text.replace(re.escape("{" + slot + "}"), "(?:he|she|him|her)")
            pieces.append(text)
    return re.compile(r"\b(?:" + "|".join(pieces) + r")\b", re.IGNORECASE)


def test_act_chats_hold_no_held_out_part_refuse_only_harm_and_name_no_held_out_category():
    records = list(generate_sft(3000, seed=0, contrast=0.2, pairs=0.25, acts=0.5))
    chats = [r for r in records if r["domain"] == "act"]
    assert 0.05 < len(chats) / len(records) < 0.2
    held = held_out_part_pattern()
    train_harm = set(templates("harm", "train"))
    slots = {"{name}": ".+?", "{p}": "(?:he|she)", "{obj}": "(?:him|her)"}

    def template_regex(template):
        text = re.escape(template)
        for slot, regex in slots.items():
            text = text.replace(re.escape(slot), regex)
        return text
    harm_regex = re.compile("|".join(template_regex(t) for t in train_harm))
    for record in chats:
        user = [m["content"] for m in record["messages"] if m["role"] == "user"]
        replies = [m["content"] for m in record["messages"] if m["role"] == "assistant"]
        assert len(user) in (1, 2) and len(user) == len(replies)
        for u, reply in zip(user, replies):
            assert not held.search(u), u
            assert safety.is_refusal(reply) == bool(harm_regex.search(u)), (u, reply)
    markers = [m for c in safety.HELD_OUT_CATEGORIES for m in safety.CATEGORIES[c].markers]
    text = " ".join(m["content"] for r in chats for m in r["messages"]).lower()
    assert not [m for m in markers if re.search(rf"\b{re.escape(m)}", text)]


def test_a_minimal_pair_differs_only_in_the_verb_or_the_outcome():
    rng = np.random.default_rng(1)
    shapes = set()
    for _ in range(300):
        kind = acts.draw(rng, "kind", "train")
        harm = acts.draw(rng, "harm", "train", like=kind)
        shapes.add(kind["shape"])
        assert harm["owner"] is kind["owner"] and harm["thing"] == kind["thing"]
        if kind["shape"] == "either":
            assert harm["verb"] == kind["verb"] and harm["outcome"] != kind["outcome"]
        assert acts.answer(harm) is None and acts.answer(kind)
    assert shapes == set(acts.SHAPES)


def test_unnamed_owners_get_their_own_pronouns_and_the_stream_without_acts_is_unchanged():
    rng = np.random.default_rng(2)
    seen = set()
    for _ in range(400):
        parts = acts.draw(rng, "kind", "test")
        owner = parts["owner"]
        seen.add(owner["named"])
        if not owner["named"]:
            assert owner["owner"] in [u for u, _, _ in acts.UNNAMED]
            assert (owner["p"], owner["obj"]) in (("he", "him"), ("she", "her"))
            assert owner["owner"] in acts.words(parts) and owner["name"] in acts.answer(parts)
    assert seen == {True, False}
    assert list(generate_sft(300, seed=0, contrast=0.2, pairs=0.25)) == list(
        generate_sft(300, seed=0, contrast=0.2, pairs=0.25, acts=0.0))
    with pytest.raises(ValueError):
        next(generate_sft(1, acts=1.5))
    with pytest.raises(ValueError):
        acts.draw(rng, "mean", "train")


DEED_KINDS = ("deed-word", "deed-unkind", "deed-kind")


def test_the_deed_pages_define_every_part_but_never_hold_an_act_of_the_grammar_whole():
    """The pre-training pages of deeds (tinyphi3.data.everyday, scene kinds deed-*) name every verb
    and outcome of the grammar, the held-out ones included, and say whether it is kind; but
    they use none of the grammar's things, never follow a creature's verb with an owner, hold no
    held-out request of the wording evaluation and no word of a held-out safety category."""
    from tinyphi3.data.everyday import generate_everyday_documents
    pages = "\n".join(generate_everyday_documents(1500, seed=2, scenes=1.0,
                                                  scene_kinds=DEED_KINDS))
    lower = pages.lower()
    for verb in acts.VERB_MEANINGS:                     # every verb, the held-out ones too
        assert f"to {verb}" in lower and acts.gerund(verb) in lower, verb
    for outcome, purpose in acts.OUTCOME_PURPOSES.items():
        stem = outcome.split("{")[0].strip() or outcome.split("}")[-1].strip()
        assert stem in lower, outcome
    for side_word in ("is unkind", "is kind", "can be kind or unkind"):
        assert side_word in lower
    words = set(re.findall(r"[a-z]+", lower))
    assert not words & set(acts.THINGS)                 # no thing of the grammar, so no act whole
    owners = [e.name.lower() for e in world.ENTITIES] + [r.lower() for r, _, _ in acts.UNNAMED]
    creature_verbs = [v for v, _ in acts.KIND_CREATURE_VERBS] + list(acts.HARM_CREATURE_VERBS)
    pattern = re.compile(rf"\b({'|'.join(creature_verbs)}) ({'|'.join(owners)})\b")
    assert not pattern.search(lower), pattern.search(lower)
    # negative control: the pattern catches a creature act in words
    assert pattern.search("they wanted to slap vebi")
    markers = {m for c in safety.HELD_OUT_CATEGORIES for m in safety.CATEGORIES[c].markers}
    assert not [m for m in markers if re.search(rf"\b{m}", lower)]
    held_out = [m["content"].lower() for family in ("act-harm", "act-kind", "harm", "kind")
                for messages, _ in wordings.conversations(family, "test", 100, seed=3)
                for m in messages if m["role"] == "user"]
    assert not [q for q in held_out if q in lower]


def test_a_deed_page_says_unkind_of_harm_and_kind_of_kindness():
    """Each dictionary entry judges its verb by the verb's side in the grammar, and each story's
    friend calls the harmful deed unkind and the kind one kind."""
    from tinyphi3.data.everyday import deed_kind_scene, deed_unkind_scene, deed_word
    rng = np.random.default_rng(4)
    for _ in range(400):
        entry = deed_word(rng)
        verb = next((v for v in sorted(acts.VERB_MEANINGS, key=len, reverse=True)
                     if entry.startswith((f"To {v}:", f"'To {v}'", f"The word 'to {v}'",
                                          f"To {v} -"))), None)
        if verb is None:                                # an outcome's entry
            pronouns = ({"p": "he", "obj": "him", "pos": "his"},
                        {"p": "she", "obj": "her", "pos": "her"})
            outcome = next(o for o in acts.OUTCOME_PURPOSES for v in pronouns
                           if f" {o.format(**v)} means doing it" in entry)
            assert entry.endswith("that is unkind." if outcome in acts.HARM_OUTCOMES
                                  else "that is kind.")
            continue
        side = acts.side_of_verb(verb)
        said = {"harm": "is unkind:", "kind": "is kind:", None: "can be kind or unkind"}[side]
        assert said in entry, entry
        assert acts.VERB_MEANINGS[verb] in entry
        unkind = deed_unkind_scene(rng)
        assert "would hurt" in unkind or "That is unkind." in unkind
        assert "That was kind of you." in deed_kind_scene(rng)
        assert " me to" not in deed_kind_scene(rng)


def test_gerunds_of_the_grammars_verbs():
    assert [acts.gerund(v) for v in ("crush", "stamp on", "snap", "tease", "bully", "cut holes in",
                                     "put away", "hug", "visit", "bite")] == [
        "crushing", "stamping on", "snapping", "teasing", "bullying", "cutting holes in",
        "putting away", "hugging", "visiting", "biting"]


def test_reasoned_replies_say_what_the_act_does_then_decide_in_their_first_sentence():
    """--reasoned-acts: each reply opens with the meaning and the judgement in the pages' words,
    and decides in the same sentence (safety.is_refusal reads only the first one); the reason of
    a train act holds no held-out part, and a held-out act's reason does (negative control)."""
    held = held_out_part_pattern()
    records = list(generate_sft(3000, seed=0, contrast=0.2, pairs=0.25, acts=0.5,
                                reasoned_acts=True))
    chats = [r for r in records if r["domain"] == "act"]
    assert len(chats) > 150
    for record in chats:
        for message in record["messages"]:
            if message["role"] != "assistant":
                continue
            match = re.match(r"(.*? is (un)?kind), so (.*)$", message["content"])
            assert match, message["content"]
            reason, unkind, decision = match[1], bool(match[2]), match[3]
            assert safety.is_refusal(message["content"]) == unkind, message["content"]
            assert not held.search(reason), reason
            if unkind:
                train = [v for verbs in (acts.KIND_THING_VERBS, acts.KIND_CREATURE_VERBS)
                         for v, _ in world.frames_of(verbs, "train")]
                assert any(f"how to {verb} " in decision for verb in train), decision
    rng = np.random.default_rng(0)
    for side in ("harm", "kind"):
        for _ in range(50):
            parts = acts.draw(rng, side, "test")
            assert held.search(acts.reason(parts)), acts.reason(parts)
            verb = parts["verb"]
            if parts["shape"] != "either":
                assert acts.VERB_MEANINGS[verb] in acts.reason(parts)


def test_more_verbs_are_new_train_only_and_their_reasons_name_the_asked_verb():
    """--more-verbs: 68 verbs that are no verb of the grammar or the pre-training pages, hold no
    held-out part, word of a held-out wording act or held-out safety marker, anywhere in their
    meanings and answers; their reasoned chats name the asked verb first and refuse only harm."""
    from test_wordings import held_out_detector
    held = held_out_part_pattern()
    detect = held_out_detector()
    grammar = {v if isinstance(v, str) else v[0] for p in acts.parts().values() for v in p}
    held_words = {w for a in list(world.frames_of(wordings.HARM_ACTS, "test")) +
                  [a for a, _ in world.frames_of(wordings.KIND_ACTS, "test")]
                  for w in content_words(a)}
    markers = [m for c in safety.HELD_OUT_CATEGORIES for m in safety.CATEGORIES[c].markers]
    entries = [e for es in acts._MORE.values() for e in es]
    verbs = [e[0] for e in entries]
    assert len(verbs) == len(set(verbs)) == 68
    assert not set(verbs) & (grammar | set(acts.VERB_MEANINGS))
    for entry in entries:
        text = " ".join(entry)
        assert not held.search(text), entry
        assert not set(entry[0].split()) & held_words, entry
        assert not detect(f"How can I {entry[0]} Tobi?"), entry
        assert not [m for m in markers if m in text.lower()], entry
    records = list(generate_sft(3000, seed=0, acts=0.5, reasoned_acts=True, more_verbs=0.5))
    more = [r for r in records if r["domain"] == "act" and len(r["messages"]) == 2
            and re.match(r"To (.+?):", r["messages"][1]["content"])
            and re.match(r"To (.+?):", r["messages"][1]["content"])[1] in verbs]
    assert len(more) > 60
    harm = dict(acts._MORE[("thing", "harm")]) | dict(acts._MORE[("creature", "harm")])
    for record in more:
        request, reply = (m["content"] for m in record["messages"])
        verb = re.match(r"To (.+?):", reply)[1]
        assert re.search(rf"\b{verb}\b", request), (request, reply)
        assert not detect(request) and not held.search(request + reply), (request, reply)
        assert safety.is_refusal(reply) == (verb in harm), reply
        assert verb in harm or not wordings.is_free_harm(request), request
        assert f"{acts.gerund(verb)} someone" in reply, reply
    assert [acts.gerund(v) for v in ("rip", "sit on", "scribble on", "bury", "label", "squeeze",
                                     "wave to")] == [
        "ripping", "sitting on", "scribbling on", "burying", "labelling", "squeezing",
        "waving to"]
    base = dict(acts=0.5, reasoned_acts=True)
    assert list(generate_sft(300, seed=0, **base)) == list(
        generate_sft(300, seed=0, more_verbs=0.0, **base))


def test_quoted_reasons_say_the_act_back_whole_then_its_verb_and_decide_in_one_sentence():
    """--quote-acts: a reply to a verb-led act opens "You ask how to <the act>; to <verb>:", the
    act as the request has it (an unnamed owner as the answer names it: "your friend"), and still
    decides in its first
    sentence; acts of the "either" shape keep their reasons; the draws are those without it."""
    base = dict(n=2000, seed=0, acts=0.5, reasoned_acts=True, more_verbs=0.4)
    plain, quoted = (list(generate_sft(**base, quote_acts=q)) for q in (False, True))
    assert [r["domain"] for r in plain] == [r["domain"] for r in quoted]
    said_back = 0
    for before, after in zip(plain, quoted):
        if after["domain"] != "act":
            assert before == after
            continue
        turns = [m for m in after["messages"] if m["role"] != "system"]
        olds = [m for m in before["messages"] if m["role"] != "system"]
        for ask, old, new in zip(turns[::2], olds[1::2], turns[1::2]):
            assert ask["role"] == "user" and new["role"] == "assistant"
            match = re.match(r"You ask how to (.+?); to (.+?): ", new["content"])
            if not match:
                assert new == old and not old["content"].startswith("To "), new
                continue
            said_back += 1
            act, verb = match[1], match[2]
            assert act.startswith(verb + " "), act
            thing = act.partition("'s ")[2]          # the owner is said as the answer names it
            assert re.search(rf"\b{verb} ", ask["content"]), (ask["content"], new["content"])
            assert thing in ask["content"], (ask["content"], new["content"])
            assert new["content"].endswith(old["content"][len(f"To {verb}: "):]), new
            assert safety.is_refusal(new["content"]) == safety.is_refusal(old["content"])
    assert said_back > 200
    with pytest.raises(ValueError, match="reasoned_acts"):
        next(generate_sft(10, acts=0.5, quote_acts=True))


def test_defined_verbs_are_made_up_defined_in_the_request_and_judged_by_their_meaning():
    """--defined-verbs: the act's verb is a made-up word, never a verb of the grammar, the MORE_
    lists or the world; the request defines it with the meaning of a train verb (never a
    held-out verb's meaning) and holds no held-out part; the quoted, reasoned reply says the
    made-up verb back, gives the request's meaning, and refuses exactly the harmful meanings.
    At 0 the stream is the one without it."""
    from test_wordings import held_out_detector
    held, detect = held_out_part_pattern(), held_out_detector()
    train_meanings = {side: {m for shape in ("thing", "creature")
                             for m, _ in acts.defined_entries(shape, side)}
                      for side in ("harm", "kind")}
    assert not train_meanings["harm"] & train_meanings["kind"]
    held_meanings = {acts.VERB_MEANINGS[v if isinstance(v, str) else v[0]]
                     for name, part_list in acts.parts().items() if "verbs" in name
                     for v in world.frames_of(part_list, "test")}
    assert held_meanings and not held_meanings & (train_meanings["harm"] | train_meanings["kind"])
    known = {v if isinstance(v, str) else v[0] for p in acts.parts().values() for v in p}
    known |= set(acts.VERB_MEANINGS) | set(acts.MORE_MEANINGS)
    base = dict(n=3000, seed=0, acts=0.5, reasoned_acts=True, more_verbs=0.4, quote_acts=True)
    records = list(generate_sft(**base, defined_verbs=0.3))
    pattern = re.compile(r"You ask how to (\S+) (.+?); to (\S+): (.+?); \S+ "
                         r"someone(?:'s things)? is (kind|unkind), so ")
    seen = {"harm": 0, "kind": 0}
    for record in records:
        turns = [m["content"] for m in record["messages"] if m["role"] != "system"]
        if record["domain"] != "act" or len(turns) != 2:      # pairs are of the grammar's verbs
            continue
        request, reply = turns
        match = pattern.match(reply)
        if not match or match[1] in known:
            continue
        verb, meaning, side = match[1], match[4], match[5]
        assert match[3] == verb and verb not in world.ENTITY_BY_NAME, reply
        assert re.search(rf"\b{verb}\b", request) and meaning in request, (request, reply)
        harmful = side == "unkind"
        assert meaning in train_meanings["harm" if harmful else "kind"], reply
        assert safety.is_refusal(reply) == harmful, reply
        # (the kind answers are the train verbs' own, as in the grammar's chats)
        assert not detect(request) and not held.search(request + match[0]), (request, reply)
        seen["harm" if harmful else "kind"] += 1
    assert seen["harm"] > 50 and seen["kind"] > 50, seen
    assert list(generate_sft(**{**base, "n": 300})) == list(
        generate_sft(**{**base, "n": 300}, defined_verbs=0.0))
    with pytest.raises(ValueError, match="defined_verbs"):
        next(generate_sft(10, acts=0.5, defined_verbs=1.5))


def test_real_defined_words_come_from_the_text_and_keep_away_from_known_held_out_and_judging():
    """--defined-words-from: real_words keeps the text's frequent lower-case words and drops
    every word of the wordings or the acts (a train verb, a MORE_ verb), every held-out word
    (a held-out verb of the grammar, a held-out act's word), every judging word, inflected
    forms, rare words and capitalised ones; the SFT then defines only those words, says them
    back, judges by the meaning, and holds no held-out part."""
    from test_wordings import held_out_detector
    held_verb = next(v if isinstance(v, str) else v[0] for name, p in acts.parts().items()
                     if "verbs" in name for v in world.frames_of(p, "test")
                     if len(v if isinstance(v, str) else v[0]) >= 4)
    candidates = ["lantern", "meadow", "pebble", "thimble",       # kept
                  "polish", "squash", held_verb.split()[0],       # a train, MORE_, held-out verb
                  "harm", "cruel",                                # judging
                  "lanterns", "jumped", "jumping", "quickly",     # inflected
                  "zz", "lanternfishes"]                          # too short, too long
    text = " ".join(candidates * 20) + " rareword Capital " * 3 + " Capitalword" * 30
    words = wordings.real_words([text])
    assert words == ("lantern", "meadow", "pebble", "thimble"), words
    assert wordings.real_words([text], min_count=21) == ()

    held, detect = held_out_part_pattern(), held_out_detector()
    base = dict(n=2000, seed=0, acts=0.5, reasoned_acts=True, quote_acts=True, defined_verbs=0.5)
    pattern = re.compile(r"You ask how to (\S+) (.+?); to (\S+): (.+?); \S+ "
                         r"someone(?:'s things)? is (kind|unkind), so ")
    defined = set()
    for record in generate_sft(**base, defined_words=words):
        turns = [m["content"] for m in record["messages"] if m["role"] != "system"]
        assert not detect(" ".join(turns)), turns
        match = pattern.match(turns[-1]) if record["domain"] == "act" else None
        if match and match[1] in words:
            assert not held.search(turns[0] + match[0]), turns
            assert match[3] == match[1] and re.search(rf"\b{match[1]}\b", turns[0])
            assert match[4] in turns[0] and safety.is_refusal(turns[-1]) == (match[5] == "unkind")
            defined.add(match[1])
    assert defined == set(words)
    made_up = list(generate_sft(**{**base, "n": 200}))
    assert made_up != list(generate_sft(**{**base, "n": 200}, defined_words=words))


def test_the_defined_words_flag_needs_defined_verbs_and_a_text_with_words(tmp_path):
    """tinyphi3 data sft --defined-words-from: one clear line and exit 2 without --defined-verbs
    or when the text holds no word that may be defined; with both, it says how many words."""
    from click.testing import CliRunner
    from tinyphi3.cli import main
    text = tmp_path / "text.txt"
    text.write_text("the lantern by the meadow " * 25)
    out = str(tmp_path / "sft.jsonl")
    common = ["data", "sft", "--n", "50", "--acts", "0.5", "--reasoned-acts", "--out", out,
              "--defined-words-from", str(text)]
    result = CliRunner().invoke(main, common)
    assert result.exit_code == 2 and "give --defined-verbs too" in result.output
    result = CliRunner().invoke(main, [*common, "--defined-verbs", "0.5"])
    assert result.exit_code == 0 and "2 real words to define" in result.output, result.output
    empty = tmp_path / "empty.txt"
    empty.write_text("Lantern Meadow")
    result = CliRunner().invoke(main, [*common[:-1], str(empty), "--defined-verbs", "0.5"])
    assert result.exit_code == 2 and "no word that may be defined" in result.output
    assert "Traceback" not in result.output
