"""Long documents (tinyphi3.data.longdocs): passkey documents hit their length in the mini's own
tokens, hide the key once at the asked depth, and never share a key between train and test;
stories and conversations use only keys of their split (negative control: the test split's
facts do appear in test documents), refer back chapters later, and are deterministic; the
`tinyphi3 data longdocs|passkey` commands."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyphi3.cli import main
from tinyphi3.data import longdocs, world
from tinyphi3.tokenizers import load_tokenizer

MINI = Path(__file__).resolve().parent.parent / "checkpoints" / "mini"


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(MINI)


def count(tok, text):
    return len(tok.encode(text))


# ---- passkey documents --------------------------------------------------------------------------

@settings(max_examples=40)
@given(length=st.integers(80, 1500), depth=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_passkey_documents_hit_their_length_in_the_minis_tokens(tok, length, depth, seed):
    rng = np.random.default_rng(seed)
    text, key = longdocs.passkey_document(rng, length, depth, tok, answer=True)
    assert abs(count(tok, text) - length) <= 2
    assert text.endswith(f"{longdocs.PASSKEY_QUESTION} {key}.")
    prompt, same = longdocs.passkey_document(np.random.default_rng(seed), length, depth, tok)
    assert same == key and prompt + f" {key}." == text     # the prompt leaves the answer room


@pytest.mark.parametrize("length", [512, 1024, 2048, 4096])
def test_the_issues_lengths_are_hit_exactly(tok, length):
    text, _ = longdocs.passkey_document(np.random.default_rng(length), length, 0.5, tok,
                                        answer=True)
    assert count(tok, text) == length


def test_the_key_is_five_digits_each_its_own_token(tok):
    """The mini's tokenizer writes digits one by one, so every key costs the same tokens."""
    ids = tok.encode(" 48213")
    assert [tok.decode([i]).strip() for i in ids[-5:]] == list("48213")


@settings(max_examples=30)
@given(length=st.integers(120, 1200), depth=st.floats(0, 1), seed=st.integers(0, 2**32 - 1))
def test_the_key_line_appears_once_at_the_asked_depth(tok, length, depth, seed):
    text, key = longdocs.passkey_document(np.random.default_rng(seed), length, depth, tok)
    line = longdocs.passkey_line(key)
    assert text.count(line) == 1 and text.count(key) == 2            # only in the key's line
    assert re.findall(r"\d+", text.replace(line, "")) == []          # no other number at all
    intro, body, question = text.split("\n")
    before, after = (part.strip() for part in body.split(line))
    n_before, n_after = (count(tok, part) if part else 0 for part in (before, after))
    longest = max(count(tok, s) for s in longdocs.FILLER)
    assert abs(n_before / (n_before + n_after) - depth) <= longest / (n_before + n_after) + 0.01


def test_depth_zero_and_one_put_the_key_first_and_last(tok):
    for depth, where in ((0.0, 0), (1.0, -1)):
        text, key = longdocs.passkey_document(np.random.default_rng(1), 300, depth, tok)
        sentences = text.split("\n")[1]
        assert sentences.startswith(longdocs.passkey_line(key)) if where == 0 \
            else sentences.endswith(longdocs.passkey_line(key))


def test_a_length_too_short_is_a_clear_error(tok):
    shortest = longdocs.shortest_passkey_document(tok)
    with pytest.raises(ValueError, match=f"at least {shortest} tokens"):
        longdocs.passkey_document(np.random.default_rng(0), shortest - 1, 0.5, tok)
    text, _ = longdocs.passkey_document(np.random.default_rng(0), shortest, 0.5, tok,
                                        answer=True)
    assert count(tok, text) == shortest


def test_without_a_tokenizer_lengths_count_words():
    text, _ = longdocs.passkey_document(np.random.default_rng(0), 200, 0.5, answer=True)
    assert len(text.split()) == 200


@given(seed_a=st.integers(0, 10**9), seed_b=st.integers(0, 10**9))
def test_train_and_test_keys_never_coincide(seed_a, seed_b):
    rng_a, rng_b = np.random.default_rng(seed_a), np.random.default_rng(seed_b)
    train = {longdocs.draw_passkey(rng_a, "train") for _ in range(20)}
    test = {longdocs.draw_passkey(rng_b, "test") for _ in range(20)}
    assert not train & test
    assert all(not world.held_out(("passkey", int(k))) for k in train)
    assert all(world.held_out(("passkey", int(k))) for k in test)


def test_keys_split_in_half_and_the_existing_splits_stay_as_they_were():
    keys = range(10_000, 30_000)
    share = np.mean([world.held_out(("passkey", k)) for k in keys])
    assert abs(share - 0.5) < 0.015
    assert {k: world.HELD_OUT_PERCENT[k] for k in ("fact", "arithmetic", "reasoning")} == \
        {"fact": 25, "arithmetic": 20, "reasoning": 20}
    # a held-out key of each family, as it was before "passkey" joined (the hash is unchanged)
    assert world.held_out(("fact", "Veska", "home")) == (
        world.stable_hash("split", "fact", "Veska", "home") % 100 < 25)


def test_generated_passkey_records(tok):
    train = list(longdocs.generate_passkey(6, 3, (100, 200), "train", tok))
    test = list(longdocs.generate_passkey(6, 3, (100, 200), "test", tok))
    assert [r["length"] for r in train] and {r["length"] for r in train + test} <= {100, 200}
    for record in train:
        assert record["text"].endswith(f" {record['key']}.") and record["kind"] == "passkey"
        assert abs(count(tok, record["text"]) - record["length"]) <= 2
    for record in test:
        assert record["text"].endswith(longdocs.PASSKEY_QUESTION)
    assert not {r["key"] for r in train} & {r["key"] for r in test}
    assert train == list(longdocs.generate_passkey(6, 3, (100, 200), "train", tok))


def test_max_depth_keeps_keys_far_from_the_question(tok):
    """--max-depth 0.25: every key in the first quarter of the filler, found there in the text;
    the default draws over the whole filler; a max_depth outside [0, 1] is an error."""
    far = list(longdocs.generate_passkey(40, 5, (300,), "train", tok, max_depth=0.25))
    assert all(r["depth"] <= 0.25 for r in far)
    for r in far:
        line = longdocs.passkey_line(r["key"])
        assert r["text"].index(line) < 0.4 * len(r["text"])
    anywhere = [r["depth"] for r in longdocs.generate_passkey(40, 5, (300,), "train", tok)]
    assert max(anywhere) > 0.5
    with pytest.raises(ValueError, match="max_depth"):
        next(longdocs.generate_passkey(1, 0, (300,), "train", tok, max_depth=1.5))


def test_min_depth_keeps_keys_near_the_question(tok, tmp_path):
    """min_depth 0.75: every key in the last quarter of the filler, found there in the text;
    min_depth 0 draws the very documents the default does; min above max is an error, and one
    clear line from `data passkey`."""
    near = list(longdocs.generate_passkey(40, 5, (300,), "train", tok, min_depth=0.75))
    assert all(r["depth"] >= 0.75 for r in near)
    for r in near:
        assert r["text"].index(longdocs.passkey_line(r["key"])) > 0.6 * len(r["text"])
    assert (list(longdocs.generate_passkey(5, 5, (300,), "train", tok, min_depth=0.0))
            == list(longdocs.generate_passkey(5, 5, (300,), "train", tok)))
    with pytest.raises(ValueError, match="min_depth"):
        next(longdocs.generate_passkey(1, 0, (300,), "train", tok, max_depth=0.2, min_depth=0.5))
    result = CliRunner().invoke(main, ["data", "passkey", "--docs", "2", "--min-depth", "0.5",
                                       "--max-depth", "0.2", "--out", str(tmp_path / "k.jsonl")])
    assert result.exit_code == 2 and "--min-depth 0.5 is above --max-depth 0.2" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "k.jsonl").exists()


def test_completion_records_hold_the_document_and_learn_the_key_alone(tok, tmp_path):
    """`data passkey --completion`: prompt + completion is the document the plain command writes
    for the same seed; SFT reads it as the document's own tokens (those the passkey eval gives a
    prompt, then the key's), labelled on " KEY." alone."""
    from tinyphi3.train.conversations import ChatDataError, load_conversations
    plain, records = tmp_path / "plain.jsonl", tmp_path / "keys.jsonl"
    for out, extra in ((plain, []), (records, ["--completion"])):
        result = CliRunner().invoke(main, ["data", "passkey", "--docs", "5", "--seed", "4",
                                           "--lengths", "300,700", "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
    documents = [json.loads(line) for line in plain.read_text().splitlines()]
    completions = [json.loads(line) for line in records.read_text().splitlines()]
    examples, too_long = load_conversations(records, tok, seq_len=4096)
    assert too_long == 0 and len(examples) == len(documents) == 5
    for doc, record, (ids, labels) in zip(documents, completions, examples):
        assert record["prompt"] + record["completion"] == doc["text"]
        assert record["prompt"].endswith("The pass key is")
        assert record["completion"] == f" {doc['key']}." and record["key"] == doc["key"]
        assert list(ids) == tok.encode(doc["text"])
        prompt = tok.encode(record["prompt"])
        assert list(ids[:len(prompt)]) == prompt and (labels[:len(prompt)] == -100).all()
        assert tok.decode(list(labels[len(prompt):])).strip() == f"{doc['key']}."
    bad = tmp_path / "bad.jsonl"
    for record in ({"prompt": "", "completion": " 1."}, {"prompt": "a", "completion": 3},
                   {"prompt": "a", "completion": "  "}):
        bad.write_text(json.dumps(record) + "\n")
        with pytest.raises(ChatDataError, match="bad.jsonl:1: a completion record needs"):
            load_conversations(bad, tok, seq_len=4096)
    test_doc = next(longdocs.generate_passkey(1, 0, (300,), "test", tok))
    with pytest.raises(ValueError, match="does not end with its key"):
        longdocs.as_completion(test_doc)
    result = CliRunner().invoke(main, ["data", "passkey", "--docs", "2", "--split", "test",
                                       "--completion", "--out", str(tmp_path / "t.jsonl")])
    assert result.exit_code != 0 and "--split train" in result.output


# ---- stories and conversations ------------------------------------------------------------------

def fact_renderings(split):
    """Every phrasing of every fact whose key is in `split`, named or in full."""
    out = []
    for e in world.ENTITIES:
        for attribute in world.ATTRIBUTES:
            if world.in_split(("fact", e.name, attribute), split):
                out += [t.format(**world.fields(e, full)) for t in world.FACT_TEMPLATES[attribute]
                        for full in (False, True)]
    return out


@pytest.fixture(scope="module")
def train_docs():
    return list(longdocs.generate_longdocs(8, 0, "train", n_chapters=24,
                                           conversation_share=0.5))


@pytest.fixture(scope="module")
def test_docs():
    return list(longdocs.generate_longdocs(8, 0, "test", n_chapters=24, conversation_share=0.5))


EQUATION = re.compile(r"(\d+) ([+\-x]) (\d+): ")


def is_story(doc):
    return not doc.startswith("User:")


def test_training_long_documents_hold_only_train_facts_and_calculations(train_docs, test_docs):
    assert any(is_story(d) for d in train_docs) and not all(is_story(d) for d in train_docs)
    held_out, taught = fact_renderings("test"), fact_renderings("train")
    for doc in train_docs:
        assert not [f for f in held_out if f in doc]
        for a, op, b in EQUATION.findall(doc):
            assert world.in_split(world.arithmetic_key(int(a), op, int(b)), "train")
    # negative control: the check finds held-out facts where they are, in test documents
    assert all([f for f in held_out if f in doc] for doc in test_docs)
    for doc in test_docs:
        assert not [f for f in taught if f in doc]
        for a, op, b in EQUATION.findall(doc):
            assert world.in_split(world.arithmetic_key(int(a), op, int(b)), "test")


def test_the_numbers_of_long_conversations_are_keys_of_their_split(train_docs, test_docs):
    for docs, split in ((train_docs, "train"), (test_docs, "test")):
        for doc in docs:
            for number in re.findall(r"remember the number (\d+)", doc):
                assert world.in_split(("passkey", int(number)), split)


def chapters(doc):
    return {int(m.group(1)): m.start() for m in re.finditer(r"^Chapter (\d+)$", doc, re.M)}


def test_stories_refer_back_chapters_and_thousands_of_tokens_later(tok, train_docs):
    story = next(d for d in train_docs if is_story(d))
    starts = chapters(story)
    assert sorted(starts) == list(range(1, 25))
    distances = []
    for m in re.finditer(r"Remember (\w+) from chapter (\d+)\? (.+?\.)", story):
        name, told = m.group(1), int(m.group(2))
        here = max(k for k, start in starts.items() if start < m.start())
        assert told < here and (here <= 3 or told <= here - 3)
        chapter_text = story[starts[told]:starts.get(told + 1, len(story))]
        assert f"Here we meet {name}." in chapter_text
        entity = world.ENTITY_BY_NAME[name]
        said = m.group(3).lower()
        value = next(entity.value(a) for a in world.ATTRIBUTES if entity.value(a).lower() in said)
        assert value.lower() in chapter_text.lower()      # the fact said again was told there
        distances.append(count(tok, story[starts[told]:m.start()]))
    assert len(distances) >= 23 and max(distances) > 2000 and min(distances) > 100


def test_later_parts_of_a_word_problem_use_the_earlier_answers(train_docs):
    story = next(d for d in train_docs if is_story(d))
    starts = chapters(story)
    answers = {}
    for k, start in starts.items():
        text = story[start:starts.get(k + 1, len(story))]
        found = re.search(r"The answer is (\d+)\.", text)
        if found:
            answers[k] = int(found.group(1))
        back = re.search(r"In chapter (\d+), \w+ had (\d+) ", text)
        if back:
            assert answers[int(back.group(1))] == int(back.group(2))
    assert sorted(answers) == [1, 6, 11, 16, 21]
    for a, op, b, result in re.findall(r"So (\d+) ([+\-x]) (\d+) = (\d+)\.", story):
        assert {"+": int(a) + int(b), "-": int(a) - int(b), "x": int(a) * int(b)}[op] == \
            int(result)


def test_long_conversations_ask_late_for_what_was_said_early(train_docs):
    conversation = next(d for d in train_docs if d.startswith("User:"))
    lines = conversation.split("\n")
    name = re.match(r"User: Hello! My name is (\w+)\.", lines[0]).group(1)
    number = re.search(r"remember the number (\d+)", conversation).group(1)
    asked = [i for i, line in enumerate(lines) if line in ("User: What is my name?",
                                                           "User: What number did I ask you "
                                                           "to remember?")]
    assert len(asked) == 2 and min(asked) >= len(lines) // 3
    assert f"Assistant: Your name is {name}." in lines
    assert f"Assistant: You asked me to remember {number}." in lines
    had = re.search(r"User: I have (\d+) (\w+)\.", conversation)
    assert f"Assistant: You had {had.group(1)} {had.group(2)}." in conversation


def test_long_documents_are_deterministic_and_prefix_stable():
    first = list(longdocs.generate_longdocs(4, 7, "train", n_chapters=6))
    assert first == list(longdocs.generate_longdocs(4, 7, "train", n_chapters=6))
    assert first[:2] == list(longdocs.generate_longdocs(2, 7, "train", n_chapters=6))
    assert first != list(longdocs.generate_longdocs(4, 8, "train", n_chapters=6))
    assert first != list(longdocs.generate_longdocs(4, 7, "test", n_chapters=6))


def test_min_tokens_makes_documents_long_enough(tok):
    for doc in longdocs.generate_longdocs(3, 1, "test", min_tokens=1500, tokenizer=tok,
                                          conversation_share=0.5):
        assert count(tok, doc) >= 1500


def test_an_unknown_split_is_an_error():
    with pytest.raises(ValueError, match="split must be"):
        next(longdocs.generate_longdocs(1, 0, "dev"))
    with pytest.raises(ValueError, match="split must be"):
        next(longdocs.generate_passkey(1, 0, (200,), "dev"))


# ---- the command line ---------------------------------------------------------------------------

def run(*args):
    return CliRunner().invoke(main, ["data", *map(str, args)])


@pytest.mark.parametrize("command", ["longdocs", "passkey"])
def test_cli_help_gives_an_example(command):
    result = run(command, "--help")
    assert result.exit_code == 0 and "Example" in result.output
    assert f"tinyphi3 data {command}" in result.output


def test_cli_writes_long_documents(tmp_path):
    result = run("longdocs", "--docs", 3, "--chapters", 5, "--split", "test", "--out",
                 tmp_path / "long.jsonl")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "long.jsonl").read_text().splitlines()]
    assert len(records) == 3 and all(r["kind"] == "longdoc" for r in records)
    assert [r["text"] for r in records] == list(longdocs.generate_longdocs(3, 0, "test", 5))


def test_cli_writes_passkey_documents_of_the_asked_lengths(tmp_path, tok):
    result = run("passkey", "--docs", 4, "--lengths", "100,150", "--tokenizer", MINI,
                 "--split", "test", "--out", tmp_path / "pk.jsonl")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (tmp_path / "pk.jsonl").read_text().splitlines()]
    assert len(records) == 4
    for r in records:
        assert r["length"] in (100, 150) and 0 <= r["depth"] <= 1
        assert abs(count(tok, r["text"] + f" {r['key']}.") - r["length"]) <= 2
        assert world.held_out(("passkey", int(r["key"])))


@pytest.mark.parametrize("lengths, message", [("512,abc", "'abc' is not a length in tokens"),
                                              ("0", "'0' is not a length in tokens"),
                                              ("512,,1024", "'' is not a length in tokens"),
                                              ("20", "cannot hold the question")])
def test_cli_bad_lengths_are_one_clear_message(tmp_path, lengths, message):
    result = run("passkey", "--docs", 2, "--lengths", lengths, "--tokenizer", MINI, "--out",
                 tmp_path / "pk.jsonl")
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "pk.jsonl").exists()


def test_cli_missing_tokenizer_is_one_clear_message(tmp_path):
    result = run("passkey", "--docs", 2, "--tokenizer", tmp_path / "nowhere", "--out",
                 tmp_path / "pk.jsonl")
    assert result.exit_code == 2 and "is not a directory" in result.output
