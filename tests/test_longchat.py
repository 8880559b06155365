"""Long chats (tinyphi3.data.longdocs.long_chat, `tinyphi3 data longchat`): SFT records for the
post-training that mixes long and short conversations. They load with the SFT loader at about
the asked length in the mini's own tokens; a story's question asks for a fact told in its first
third and the answer states it; a passkey chat's answer is the one key of its text; a memory
chat's last answer uses the name or number of its first turn; training chats hold no held-out
fact, calculation, key or wording, and test chats no training ones; the records are
deterministic; the command line explains itself and refuses bad lengths in one message."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tinyphi3.cli import main
from tinyphi3.data import longdocs, wordings, world
from tinyphi3.tokenizers import load_tokenizer
from tinyphi3.train.conversations import load_conversations

MINI = Path(__file__).resolve().parent.parent / "checkpoints" / "mini"
LENGTHS = (1024, 3584)
SEEDS = (0, 1)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(MINI)


def make_chats(tok, split):
    """[(kind, asked length, record)]: each kind at each length, two generators each."""
    return [(kind, length, longdocs.long_chat(np.random.default_rng([seed, length]), kind,
                                              length, split, tok))
            for kind in longdocs.LONG_CHAT_KINDS for length in LENGTHS for seed in SEEDS]


@pytest.fixture(scope="module")
def train_chats(tok):
    return make_chats(tok, "train")


@pytest.fixture(scope="module")
def test_chats(tok):
    return make_chats(tok, "test")


def of_kind(chats, kind):
    return [record for k, _, record in chats if k == kind]


def without_system(record):
    return [m for m in record["messages"] if m["role"] != "system"]


# ---- the SFT format, and the length ------------------------------------------------------------

def test_records_load_with_the_sft_loader_at_about_the_asked_length(tok, train_chats,
                                                                    test_chats, tmp_path):
    for split, chats in (("train", train_chats), ("test", test_chats)):
        path = tmp_path / f"{split}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for _, _, r in chats), encoding="utf-8")
        examples, too_long = load_conversations(path, tok, seq_len=4096)
        assert too_long == 0 and len(examples) == len(chats)
        for (kind, length, record), (ids, labels) in zip(chats, examples):
            assert record["domain"] == f"long-{kind}"
            assert set(record) == {"messages", "domain", "answer"}
            assert record["answer"] in record["messages"][-1]["content"]
            assert abs(len(ids) - length) <= 0.1 * length, (kind, length, len(ids))
            assert len(ids) == longdocs.chat_length(record["messages"], tok)
            # the final answer is learned: its tokens carry labels
            answer = tok.encode(record["messages"][-1]["content"])
            assert (labels != -100).sum() >= len(answer)
            assert record["messages"][-1]["role"] == "assistant"


def test_a_too_short_length_and_an_unknown_kind_or_split_are_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="at least 512 tokens"):
        longdocs.long_chat(rng, "story", 300)
    with pytest.raises(ValueError, match="unknown long chat kind"):
        longdocs.long_chat(rng, "poem", 1024)
    with pytest.raises(ValueError, match="split must be"):
        longdocs.long_chat(rng, "story", 1024, "dev")
    with pytest.raises(ValueError, match="unknown long chat kinds"):
        next(longdocs.generate_long_chats(1, kinds=("story", "poem")))


# ---- story: a fact of the first third, asked and answered ---------------------------------------

def asked_fact(question):
    """(entity, attribute) of a fact question in world.QUESTION_TEMPLATES' words."""
    found = [(e, a) for e in world.ENTITIES for a, templates in world.QUESTION_TEMPLATES.items()
             if question in [t.format(name=e.name) for t in templates]]
    assert len(found) == 1, question
    return found[0]


def renderings(entity, attribute):
    return [t.format(**world.fields(entity, full)) for t in world.FACT_TEMPLATES[attribute]
            for full in (False, True)]


@pytest.mark.parametrize("split", ["train", "test"])
def test_the_story_question_asks_a_fact_of_the_first_third_and_the_answer_states_it(
        split, train_chats, test_chats):
    chats = train_chats if split == "train" else test_chats
    for record in of_kind(chats, "story"):
        user, assistant = (m["content"] for m in without_system(record))
        ask, rest = user.split("\n\n", 1)
        story, question = rest.rsplit("\n\n", 1)
        assert ask in longdocs.STORY_ASKS and re.search(r"^Chapter 1$", story, re.M)
        entity, attribute = asked_fact(question)
        assert world.in_split(("fact", entity.name, attribute), split)
        told = [story.find(s) for s in renderings(entity, attribute) if s in story]
        assert told and min(told) < len(story) / 3
        assert assistant in renderings(entity, attribute)
        value = entity.value(attribute)
        names = (value, world.KINDS[value].plural) if attribute == "kind" else (value,)
        assert any(v.lower() in assistant.lower() for v in names)


def test_the_story_ends_at_a_line_and_holds_many_chapters(train_chats):
    for record in of_kind(train_chats, "story"):
        user = without_system(record)[0]["content"]
        story = user.split("\n\n", 1)[1].rsplit("\n\n", 1)[0]
        chapters = [int(k) for k in re.findall(r"^Chapter (\d+)$", story, re.M)]
        assert chapters == list(range(1, len(chapters) + 1)) and len(chapters) >= 4
        assert story.rstrip().endswith(".")


# ---- passkey: the one key of the text -----------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "test"])
def test_the_passkey_answer_is_the_one_key_of_the_text(split, train_chats, test_chats):
    chats = train_chats if split == "train" else test_chats
    for record in of_kind(chats, "passkey"):
        user, assistant = (m["content"] for m in without_system(record))
        key = re.fullmatch(r"The pass key is (\d{5})\.", assistant).group(1)
        assert user.count(longdocs.passkey_line(key)) == 1
        assert set(re.findall(r"\d+", user)) == {key}
        assert user.startswith(longdocs.PASSKEY_INTRO)
        assert user.split("\n")[-1] in wordings.frames_of(longdocs.PASSKEY_ASKS, split)
        assert world.in_split(("passkey", int(key)), split)


def test_the_key_lies_at_many_depths(train_chats):
    depths = []
    for record in of_kind(train_chats, "passkey"):
        user, assistant = (m["content"] for m in without_system(record))
        depths.append(user.index(longdocs.passkey_line(assistant[-6:-1])) / len(user))
    assert max(depths) - min(depths) > 0.2


# ---- memory: the name or number of the first turn, at the end ----------------------------------

def memory_value(messages):
    """("name" | "number", the value given in the first turn, read from the reply to it)."""
    named = re.fullmatch(r"Nice to meet you, (\w+)! How can I help\?", messages[1]["content"])
    if named:
        return "name", named.group(1)
    return "number", re.fullmatch(r"Okay, I'll remember (\d+)\.", messages[1]["content"]).group(1)


@pytest.mark.parametrize("split", ["train", "test"])
def test_the_memory_answer_uses_what_the_first_turn_gave(split, train_chats, test_chats, tok):
    chats = train_chats if split == "train" else test_chats
    seen = set()
    for record in of_kind(chats, "memory"):
        messages = without_system(record)
        assert [m["role"] for m in messages] == ["user", "assistant"] * (len(messages) // 2)
        what, value = memory_value(messages)
        seen.add(what)
        given, asked, answer = (messages[i]["content"] for i in (0, -2, -1))
        frames = wordings.frames_of
        if what == "name":
            assert given in [f.format(u=value) for f in frames(wordings.NAME_GIVEN, split)]
            assert asked in frames(wordings.NAME_ASKED, split)
            assert answer == f"Your name is {value}."
            assert value not in world.ENTITY_BY_NAME
        else:
            assert given in [f.format(a=value) for f in frames(wordings.NUMBER_GIVEN, split)]
            lead = next(lead for lead in longdocs.NUMBER_BACK if asked.startswith(lead))
            used = [(op, u) for op, u in frames(wordings.NUMBER_USED, split)
                    if re.fullmatch(re.escape(u).replace(r"\{b\}", r"(\d+)"),
                                    asked[len(lead):])]
            assert used, asked
            op = used[0][0]
            b = re.search(r"\d+", asked).group(0)
            assert answer == world.column_solution(int(value), op, int(b))
            assert world.in_split(world.arithmetic_key(int(value), op, int(b)), split)
        # many exchanges, most of the chat, lie between the first turn and the last; a name is
        # not said again in them
        between = [m["content"] for m in messages[2:-2]]
        assert len(between) >= 8
        assert len(tok.encode(" ".join(between))) > 0.7 * longdocs.chat_length(
            record["messages"], tok)
        if what == "name":
            assert not [t for t in between if re.search(rf"\b{value}\b", t)]
    assert seen == {"name", "number"}


# ---- the splits ---------------------------------------------------------------------------------

def fact_renderings(split):
    """Every phrasing of every fact whose key is in `split`, named or in full."""
    return [s for e in world.ENTITIES for a in world.ATTRIBUTES
            if world.in_split(("fact", e.name, a), split) for s in renderings(e, a)]


EQUATION = re.compile(r"(\d+) ([+\-x]) (\d+): ")


def all_text(record):
    return "\n".join(m["content"] for m in record["messages"])


def test_chats_hold_only_the_facts_calculations_and_keys_of_their_split(train_chats, test_chats):
    held_out, taught = fact_renderings("test"), fact_renderings("train")
    for chats, split, others in ((train_chats, "train", held_out), (test_chats, "test", taught)):
        for _, _, record in chats:
            text = all_text(record)
            assert not [f for f in others if f in text], split
            for a, op, b in EQUATION.findall(text):
                assert world.in_split(world.arithmetic_key(int(a), op, int(b)), split)
            for key in re.findall(r"\b\d{5}\b", text):
                assert world.in_split(("passkey", int(key)), split)
    # negative control: the check finds the held-out facts where they are, in test chats
    stories = [all_text(r) for r in of_kind(test_chats, "story")]
    assert all([f for f in held_out if f in text] for text in stories)


def test_generated_chats_take_the_kinds_in_turn_and_stay_in_their_split(tok):
    records = list(longdocs.generate_long_chats(3, 2, "test", (1024,), tokenizer=tok))
    assert [r["domain"] for r in records] == ["long-story", "long-passkey", "long-memory"]
    key = re.search(r"\d{5}", records[1]["messages"][-1]["content"]).group(0)
    assert world.held_out(("passkey", int(key)))


# ---- determinism --------------------------------------------------------------------------------

def test_long_chats_are_deterministic_and_prefix_stable(tok):
    def chats(n, seed=5, split="train"):
        return list(longdocs.generate_long_chats(n, seed, split, (1024,), tokenizer=tok))
    first = chats(4)
    assert first == chats(4) and first[:2] == chats(2)
    assert first != chats(4, seed=6) and first != chats(4, split="test")
    rng_a, rng_b = np.random.default_rng(9), np.random.default_rng(9)
    assert longdocs.long_chat(rng_a, "memory", 2048, tokenizer=tok) == \
        longdocs.long_chat(rng_b, "memory", 2048, tokenizer=tok)


# ---- the command line ---------------------------------------------------------------------------

def run(*args):
    return CliRunner().invoke(main, ["data", *map(str, args)])


def test_cli_help_gives_an_example():
    result = run("longchat", "--help")
    assert result.exit_code == 0 and "Example" in result.output
    assert "tinyphi3 data longchat" in result.output


def test_cli_writes_the_generated_chats(tmp_path, tok):
    out = tmp_path / "chats.jsonl"
    result = run("longchat", "--n", 3, "--seed", 4, "--lengths", "1024,1536", "--tokenizer", MINI,
                 "--split", "test", "--out", out)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert records == list(longdocs.generate_long_chats(3, 4, "test", (1024, 1536),
                                                        tokenizer=tok))
    assert "wrote 3 conversations" in result.output


@pytest.mark.parametrize("lengths, message", [("1024,abc", "'abc' is not a length in tokens"),
                                              ("0", "'0' is not a length in tokens"),
                                              ("1024,100", "too short for a long chat")])
def test_cli_bad_lengths_are_one_clear_message(tmp_path, lengths, message):
    result = run("longchat", "--n", 2, "--lengths", lengths, "--tokenizer", MINI, "--out",
                 tmp_path / "chats.jsonl")
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output and not (tmp_path / "chats.jsonl").exists()


def test_cli_missing_tokenizer_is_one_clear_message(tmp_path):
    result = run("longchat", "--n", 2, "--tokenizer", tmp_path / "nowhere", "--out",
                 tmp_path / "chats.jsonl")
    assert result.exit_code == 2 and "is not a directory" in result.output
    assert not (tmp_path / "chats.jsonl").exists()
