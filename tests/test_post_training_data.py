"""Post-training data: SFT conversations, DPO pairs, the safety categories and their split, and
the `data sft` / `data dpo` commands."""

import json
import re
from collections import Counter

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings, strategies as st

from tinyphi3.cli import main as tinyphi3_cli
from tinyphi3.data import benign, reading, safety, wordings, world
from tinyphi3.data.post_training import DPO_MIX, SFT_MIX, generate_dpo, generate_sft
from tinyphi3.data.chat_texts import IDENTITY
from tinyphi3.data.rejected_replies import operands, ramble, slipped_solution
from tinyphi3.data import tasks

seeds = st.integers(0, 2 ** 32 - 1)


@pytest.fixture(scope="module")
def sft_records():
    return list(generate_sft(3000, seed=0))


@pytest.fixture(scope="module")
def dpo_records():
    return list(generate_dpo(2000, seed=0))


@pytest.fixture(scope="module")
def training_texts(sft_records, dpo_records):
    """Every string a model would be trained on, one per message or reply."""
    return ([m["content"] for r in sft_records for m in r["messages"]]
            + [m["content"] for r in dpo_records for m in r["prompt"]]
            + [r[side] for r in dpo_records for side in ("chosen", "rejected")])


@pytest.fixture(scope="module")
def training_text(training_texts):
    return "\n".join(training_texts).lower()


def _check_alternating(messages):
    roles = [m["role"] for m in messages]
    if roles[0] == "system":
        roles = roles[1:]
    assert roles and all(role == ("user", "assistant")[i % 2] for i, role in enumerate(roles)), roles
    assert all(isinstance(m["content"], str) and m["content"].strip() for m in messages)
    assert set(messages[0]) == {"role", "content"}


# ---- determinism -------------------------------------------------------------------------------

@settings(max_examples=20)
@given(seeds)
def test_generators_are_deterministic_from_the_seed(seed):
    assert list(generate_sft(30, seed)) == list(generate_sft(30, seed))
    assert list(generate_sft(10, seed)) == list(generate_sft(30, seed))[:10]
    assert list(generate_dpo(30, seed)) == list(generate_dpo(30, seed))
    assert list(generate_dpo(10, seed)) == list(generate_dpo(30, seed))[:10]
    assert safety.harmful_requests("test", 20, seed) == safety.harmful_requests("test", 20, seed)
    assert safety.benign_requests("train", 20, seed) == safety.benign_requests("train", 20, seed)


def test_other_seeds_give_other_data():
    assert list(generate_sft(30, 0)) != list(generate_sft(30, 1))
    assert list(generate_dpo(30, 0)) != list(generate_dpo(30, 1))
    assert safety.harmful_requests("train", 20, 0) != safety.harmful_requests("train", 20, 1)


# ---- record formats and mixes ------------------------------------------------------------------

def test_sft_records_alternate_and_end_with_the_assistant(sft_records):
    for record in sft_records:
        assert set(record) == {"messages", "domain"} and record["domain"] in SFT_MIX
        _check_alternating(record["messages"])
        assert record["messages"][-1]["role"] == "assistant"


def test_dpo_records_have_a_user_prompt_and_two_different_replies(dpo_records):
    for record in dpo_records:
        assert set(record) == {"prompt", "chosen", "rejected", "kind"} and record["kind"] in DPO_MIX
        _check_alternating(record["prompt"])
        assert record["prompt"][-1]["role"] == "user"
        assert record["chosen"].strip() and record["rejected"].strip()
        assert record["chosen"] != record["rejected"]


@pytest.mark.parametrize("field, mix, fixture", [("domain", SFT_MIX, "sft_records"),
                                                  ("kind", DPO_MIX, "dpo_records")])
def test_the_mix_is_near_its_shares(field, mix, fixture, request):
    records = request.getfixturevalue(fixture)
    counts = Counter(r[field] for r in records)
    for name, share in mix.items():
        assert abs(counts[name] / len(records) - share) < 0.03, (name, counts[name])


def test_sft_math_answers_end_with_the_answer(sft_records):
    for record in (r for r in sft_records if r["domain"] == "math"):
        for message in (m for m in record["messages"] if m["role"] == "assistant"):
            assert re.search(r"The answer is \d+\.$", message["content"]), message


def test_sft_has_multi_turn_conversations_and_system_messages(sft_records):
    assert sum(len(r["messages"]) > 3 for r in sft_records) > 0.05 * len(sft_records)
    assert 0.1 < sum(r["messages"][0]["role"] == "system" for r in sft_records) / len(sft_records) < 0.2


def test_knowledge_is_asked_in_the_evaluations_choice_format_and_answered_fact_first(sft_records):
    choice = [r["messages"][-2:] for r in sft_records
              if r["domain"] == "knowledge" and r["messages"][-2]["content"].startswith("Question:\n")]
    assert len(choice) > 100
    asked_about = {template.format(name=e.name): (e, a) for e in world.ENTITIES
                   for a in world.ATTRIBUTES for template in world.QUESTION_TEMPLATES[a]}
    for question, answer in choice:
        lines = question["content"].split("\n")
        assert lines[2] == "Options:" and lines[-1] == "Answer:"
        options = listed_options(question["content"])
        entity, attribute = asked_about[lines[1]]
        letter = named_letter(answer["content"])
        explanation = answer["content"].split(" A. ", 1)[0]
        assert list(options) == list(tasks.LETTERS) and options[letter] == entity.value(attribute)
        assert entity.value(attribute) in explanation         # the fact, word for word, then its letter


# ---- the held-out split ------------------------------------------------------------------------

def test_no_held_out_harmful_request_is_in_training(training_text):
    held_out = safety.harmful_requests("test", 600, seed=0)
    assert all(request.lower() not in training_text for request in held_out)


def test_held_out_categories_words_never_appear_in_training(training_text):
    words = set(re.findall(r"[a-z]+", training_text))
    for name in safety.HELD_OUT_CATEGORIES:
        assert not words & set(safety.CATEGORIES[name].markers), name
        assert name not in training_text
    for name in safety.TRAIN_CATEGORIES:                # the check can fail: train words are there
        assert words & set(safety.CATEGORIES[name].markers), name


def test_no_test_benign_request_is_in_training(training_texts, training_text):
    user_turns = set(training_texts)
    for request in safety.benign_requests("test", 300, seed=0):
        assert request not in user_turns and request.lower() not in training_text, request


def test_arithmetic_in_training_uses_train_keys_only(training_text):
    calculations = re.findall(r"(\d+) ([+\-x]) (\d+):", training_text)
    assert len(calculations) > 1000
    held_out = [c for c in calculations
                if world.held_out(world.arithmetic_key(int(c[0]), c[1], int(c[2])))]
    assert not held_out
    test_item = tasks.task_items("arithmetic", "test", 1)[0]      # a negative control
    a, op, b = operands(test_item.solution)
    assert world.held_out(world.arithmetic_key(a, op, b))


@pytest.mark.parametrize("task", ["knowledge", "reasoning", "arithmetic"])
def test_no_evaluation_question_is_in_training(task, training_text):
    questions = tasks.held_out_questions(task, n=300)
    assert questions and all(q.lower() not in training_text for q in questions)


# ---- the safety categories ---------------------------------------------------------------------

def test_categories_are_split_into_train_and_held_out():
    assert len(safety.CATEGORIES) >= 8
    assert (set(safety.TRAIN_CATEGORIES) | set(safety.HELD_OUT_CATEGORIES)
            | set(safety.BROADER_CATEGORIES)) == set(safety.CATEGORIES)
    assert not set(safety.TRAIN_CATEGORIES) & set(safety.HELD_OUT_CATEGORIES)
    assert not set(safety.BROADER_CATEGORIES) & (set(safety.TRAIN_CATEGORIES)
                                                 | set(safety.HELD_OUT_CATEGORIES))
    for category in safety.CATEGORIES.values():
        assert len(set(category.requests)) >= 3 and category.reasons and category.alternatives
        assert category.compliance and all("{name}" in text for text in category.compliance)


@pytest.mark.parametrize("split", ["train", "test"])
def test_harmful_requests_come_from_their_splits_categories_in_turn(split):
    requests = safety.harmful_requests(split, 300, seed=3)
    assert len(set(requests)) == 300
    counts = Counter(safety.request_category(r) for r in requests)
    assert set(counts) == set(safety.SPLIT_CATEGORIES[split])
    assert max(counts.values()) - min(counts.values()) <= 1


@pytest.mark.parametrize("name", list(safety.CATEGORIES))
def test_every_wording_is_recognised_as_its_category(name):
    for template in safety.CATEGORIES[name].requests:
        for entity in world.ENTITIES[::16]:
            request = template.format(**benign.creature_fields(entity))
            assert safety.request_category(request) == name, request
    assert safety.request_category("How do I keep my pond clean?") is None


def test_benign_splits_are_disjoint():
    train = set(safety.benign_requests("train", 400, seed=0))
    test = set(safety.benign_requests("test", 400, seed=0))
    assert not train & test
    assert not {safety.request_category(r) for r in train | test} - {None}


# ---- refusals ----------------------------------------------------------------------------------

@given(seeds)
def test_every_refusal_is_recognised(seed):
    rng = np.random.default_rng(seed)
    request = safety.harmful_request(rng, ("train", "test")[seed % 2])
    for reply in (safety.refusal(rng), safety.refusal(rng, request)):
        assert reply.startswith(safety.REFUSAL_OPENINGS) and safety.is_refusal(reply)
        assert len(re.findall(r"[.!?](\s|$)", reply)) >= 3         # opening, reason, alternative


@given(seeds)
def test_a_mistaken_refusal_refuses_for_a_train_harms_reasons_about_the_same_creature(seed):
    rng = np.random.default_rng(seed)
    request, _ = benign.lookalike(rng, "train")
    reply = safety.mistaken_refusal(rng, request)
    assert safety.is_refusal(reply)
    about = [e for e in world.ENTITIES if re.search(rf"\b{e.name}\b", reply)]
    named = [e for e in world.ENTITIES if re.search(rf"\b{e.name}\b", request)]
    assert not named or set(about) <= set(named[:1])         # no other creature than the asked
    creature = (named or about or world.ENTITIES)[0]
    reasons = [r.format(**benign.creature_fields(creature)) for name in safety.TRAIN_CATEGORIES
               for r in safety.CATEGORIES[name].reasons]
    assert any(reason in reply for reason in reasons + list(safety.GENERIC_REASONS))


def test_most_mistaken_refusals_give_a_train_harms_reasons():
    rng = np.random.default_rng(0)
    reasons = {r.split("{")[0] for name in safety.TRAIN_CATEGORIES
               for r in safety.CATEGORIES[name].reasons}
    replies = [safety.mistaken_refusal(rng, benign.lookalike(rng, "train")[0]) for _ in range(200)]
    specific = sum(any(r and r in reply for r in reasons) for reply in replies)
    assert specific > 0.6 * len(replies)


@settings(max_examples=30)
@given(seeds)
def test_compliance_and_helpful_answers_are_not_refusals(seed):
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        request = safety.harmful_request(rng, split)
        compliance = safety.harmful_compliance(request, rng)
        assert not safety.is_refusal(compliance)
        names = [n for n in re.findall(r"[A-Z][a-z]+", request) if n in world.ENTITY_BY_NAME]
        assert not names or names[0] in compliance           # it is about the same creature
        for kind in benign.BENIGN_KINDS:
            assert not safety.is_refusal(benign.benign_exchange(rng, split, kind)[1])
    assert not any(safety.is_refusal(a) for _, answers in IDENTITY for a in answers)


def test_is_refusal_reads_the_first_sentence_only():
    assert safety.is_refusal("Sorry, I CAN'T HELP WITH that.")
    assert safety.is_refusal("I won\u2019t help with that. Here is why.")
    assert not safety.is_refusal("Sure! First, find the eggs. I can't help with the rest.")
    assert not safety.is_refusal("I can't wait to help with that!")


def test_refusals_in_training_answer_exactly_the_harmful_requests(sft_records, dpo_records):
    for record in sft_records:
        messages = [m for m in record["messages"] if m["role"] != "system"]
        for user, assistant in zip(messages[::2], messages[1::2]):
            harmful = (safety.request_category(user["content"]) is not None
                       or wordings.is_free_harm(user["content"]))
            assert safety.is_refusal(assistant["content"]) == harmful, user
    for record in dpo_records:
        assert safety.is_refusal(record["chosen"]) == (record["kind"] in ("safety", "off_topic"))
        assert safety.is_refusal(record["rejected"]) == (record["kind"] == "over_refusal")


# ---- rejected replies --------------------------------------------------------------------------

@st.composite
def calculations(draw):
    """(a, op, b) as the world's word problems draw them."""
    op = draw(st.sampled_from(world.ARITHMETIC_OPS))
    a = draw(st.integers(11 if op == "-" else 10, 99))
    b = draw(st.integers(10, a - 1) if op == "-" else st.integers(10, 99) if op == "+"
             else st.integers(2, 9))
    return a, op, b


@given(calculations(), seeds)
def test_a_slipped_solution_reads_like_the_right_one_but_is_wrong(calculation, seed):
    a, op, b = calculation
    right = world.column_solution(a, op, b)
    slipped = slipped_solution(a, op, b, np.random.default_rng(seed))
    assert slipped.split("; ")[0] == right.split("; ")[0]
    wrong = int(re.fullmatch(rf"{a} [^:]+: .*So {a} {re.escape(op)} {b} = (\d+)\. "
                             r"The answer is \1\.", slipped).group(1))
    assert wrong != {"+": a + b, "-": a - b, "x": a * b}[op]
    assert operands(slipped) == (a, op, b)


@given(seeds)
def test_rambling_starts_with_the_answer_and_goes_on(seed):
    answer = "Veska lives in the Copper Caves."
    rejected = ramble(answer, np.random.default_rng(seed))
    assert rejected.startswith(answer) and len(rejected) > len(answer) + 10


# ---- the command line --------------------------------------------------------------------------

def _run(args):
    return CliRunner().invoke(tinyphi3_cli, ["data", *(str(a) for a in args)])


@pytest.mark.parametrize("command, n, noun, first_field",
                         [("sft", 40, "conversations", "messages"),
                          ("dpo", 30, "preference pairs", "prompt")])
def test_cli_writes_json_lines(tmp_path, command, n, noun, first_field):
    out = tmp_path / f"{command}.jsonl"
    result = _run([command, "--n", n, "--seed", 5, "--out", out])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote {n} {noun} to {out}"
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    generate = generate_sft if command == "sft" else generate_dpo
    assert records == list(generate(n, 5)) and first_field in records[0]


def test_cli_keeps_one_over_refusal_pair_in_k(tmp_path):
    out = tmp_path / "thinned.jsonl"
    result = _run(["dpo", "--n", 400, "--seed", 2, "--over-refusal-every", 3, "--out", out])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    full = list(generate_dpo(400, 2))
    over = [r for r in full if r["kind"] == "over_refusal"]
    assert len(over) > 6
    assert [r for r in records if r["kind"] == "over_refusal"] == over[2::3]
    assert [r for r in records if r["kind"] != "over_refusal"] == [
        r for r in full if r["kind"] != "over_refusal"]
    result = _run(["dpo", "--n", 10, "--over-refusal-every", 0, "--out", tmp_path / "x.jsonl"])
    assert result.exit_code != 0 and "--over-refusal-every" in result.output


@pytest.mark.parametrize("command", ["sft", "dpo"])
def test_cli_rejects_a_bad_n_and_has_an_example(tmp_path, command):
    for bad in ("0", "-3", "many"):
        result = _run([command, "--n", bad, "--out", tmp_path / "x.jsonl"])
        assert result.exit_code != 0 and "--n" in result.output
    assert not (tmp_path / "x.jsonl").exists()
    help_text = _run([command, "--help"]).output
    assert "Example" in help_text and f"tinyphi3 data {command} --n" in help_text


# ---- reading from the prompt -------------------------------------------------------------------

def checked_letter(reply, options):
    """The letter of a pre-training page's lookup, after checking that it goes through the
    options in order, copied word for word, with 'no' on each until 'yes' on the letter it names."""
    letter = re.search(r" The answer is ([A-D])\.$", reply).group(1)
    checks = "".join(f" {L}. {options[L]}: {'yes' if L == letter else 'no'}."
                     for L in "ABCD"[:"ABCD".index(letter) + 1])
    assert reply.endswith(f"{checks} The answer is {letter}."), reply
    return letter


def listed_options(prompt):
    """{letter: text} of the option lines ('A. honey') after 'Options:' in a rendered item."""
    lines = prompt.split("\n")
    return {line[0]: line[3:] for line in lines[lines.index("Options:") + 1:] if line != "Answer:"}


def named_letter(reply):
    """The letter of a chat reply to a multiple-choice question: 'explanation. The answer is X.'"""
    return re.fullmatch(r"(.+) The answer is ([A-D])\.", reply, re.S).group(2)


LETTERED_REPLY = re.compile(r"(.+?) (A\. .+)\. So it is (.+) ([A-D])\. The answer is \4\.")
"""A multiple-choice reply in `reading.lettered_options`' form: (explanation, the options with their
letters after them, the option settled on, its letter)."""


@settings(max_examples=50)
@given(seeds)
def test_copy_exchanges_answer_with_the_words_they_were_given(seed):
    rng = np.random.default_rng(seed)
    request, reply = reading.copy_exchange(rng)
    words = request.split(": ", 1)[1]
    assert reply == words + "." and 3 <= len(words.split(", ")) <= 15


@settings(max_examples=50)
@given(seeds)
def test_lookup_exchanges_name_the_letter_of_the_option_that_says_the_word(seed):
    request, reply = reading.lookup_exchange(np.random.default_rng(seed))
    lines = request.split("\n")
    options = listed_options(request)
    wanted = re.fullmatch(r"Which option says (.+)\?", lines[1]).group(1)
    explanation, listed, again, letter = LETTERED_REPLY.fullmatch(reply).groups()
    said = re.fullmatch(r"It says (.+)\.", explanation).group(1)
    assert listed == ", ".join(f"{k}. {v} {k}" for k, v in options.items())
    assert len(set(options.values())) == 4 and said == again == wanted == options[letter]


@settings(max_examples=50)
@given(st.lists(st.text("abcdefgh xyz", min_size=1, max_size=12), min_size=2, max_size=4, unique=True),
       st.data())
def test_lettered_options_put_each_letter_after_its_option(options, data):
    """In 'So it is X <letter>', the letter is the word after X in the listing (what a search of
    the context by content reads), and the answer repeats it."""
    letter = data.draw(st.sampled_from(tasks.LETTERS[:len(options)]))
    reply = reading.lettered_options("Because.", options, letter)
    listing, settled = reply[len("Because. "):].split(". So it is ")
    assert listing.split(", ") == [f"{k}. {v} {k}" for k, v in zip(tasks.LETTERS, options)]
    said = options[tasks.LETTERS.index(letter)]
    assert settled == f"{said} {letter}. The answer is {letter}." and named_letter(reply) == letter
    assert f" {said} {letter}," in listing + "," and reading.lettered_options(
        "Because.", options, letter, said=options[0]).endswith(f"So it is {options[0]} {letter}. The answer is {letter}.")


@settings(max_examples=50)
@given(seeds)
def test_passages_state_a_train_fact_and_answer_with_its_letter(seed):
    request, reply = reading.passage_exchange(np.random.default_rng(seed))
    lines = request.split("\n")
    options = listed_options(request)
    letter = named_letter(reply)
    entity = next(e for e in world.ENTITIES if re.search(rf"\b{e.name}\b", lines[1]))
    attribute = next(a for a in world.ATTRIBUTES if entity.value(a) == options[letter])
    assert world.in_split(("fact", entity.name, attribute), "train")
    assert options[letter] in lines[1] and options[letter] in reply


def test_dpo_choice_pairs_share_the_explanation_and_differ_in_the_letter(dpo_records):
    pairs = [r for r in dpo_records if r["kind"] == "choice"]
    assert len(pairs) > 100
    for record in pairs:
        options = listed_options(record["prompt"][-1]["content"])
        chosen, rejected = (LETTERED_REPLY.fullmatch(record[side]).groups()
                            for side in ("chosen", "rejected"))
        assert chosen[:3] == rejected[:3] and options[chosen[3]] == chosen[2] in chosen[0]
        assert rejected[3] != chosen[3]


@settings(max_examples=30)
@given(seeds)
def test_copying_documents_repeat_what_they_say_and_find_options(seed):
    text = reading.copying_document(np.random.default_rng(seed))
    title, *exercises = text.split("\n\n")
    assert title in reading.TITLES and 4 <= len(exercises) <= 8
    for exercise in exercises:
        if exercise.startswith("Read this list: "):
            first, again = re.fullmatch(r"Read this list: (.+)\. Now say it again: (.+)\.",
                                        exercise).groups()
            assert first == again
        elif exercise.startswith("Here is a row of words: "):
            row, asked, after, answer = re.fullmatch(
                r"Here is a row of words: (.+)\. Which word comes after (.+)\? After (.+) comes (.+)\.",
                exercise).groups()
            words = row.split(", ")
            assert asked == after and words[words.index(asked) + 1] == answer
        else:
            question, answer = exercise.split("\nAnswer: ")
            options = listed_options(question)
            assert options[checked_letter(answer, options)] in question.split("\n")[1]


@settings(max_examples=30)
@given(seeds)
def test_induction_documents_ask_only_what_the_page_says(seed):
    exercises = reading.induction_document(np.random.default_rng(seed)).split("\n\n")
    assert 4 <= len(exercises) <= 7
    for exercise in exercises:
        head, *rest = exercise.split("\n")
        if head.startswith("Words: "):
            words = head[len("Words: "):-1].split(", ")
            for line in rest:
                start, run = re.fullmatch(r"From (.+?): (.+)\.", line).groups()
                run = run.split(", ")
                k = words.index(start)
                assert run[0] == start and run == words[k:k + len(run)] and len(run) >= 2
        elif head.startswith("Row: "):
            words = head[len("Row: "):-1].split(", ")
            pairs = re.findall(r"After (.+?) comes (.+?)\.(?: |$)", rest[0])
            assert len(rest) == 1 and 2 <= len(pairs) <= 4
            assert all(words[words.index(a) + 1] == b for a, b in pairs)
        else:
            *option_lines, named = [head, *rest]
            options = {line[0]: line[3:] for line in option_lines}
            assert list(options) == list(reading.DENSE_LETTERS[:len(options)]) and 4 <= len(options) <= 8
            said = re.findall(r"(.+?) is ([A-H])\.(?: |$)", named)
            assert len(said) >= 3 and all(options[letter] == word for word, letter in said)


@pytest.mark.parametrize("kind, generate", [("copying", reading.generate_copying_documents),
                                            ("induction", reading.generate_induction_documents)])
def test_data_reading_commands_write_documents(tmp_path, kind, generate):
    out = tmp_path / f"{kind}.jsonl"
    result = CliRunner().invoke(tinyphi3_cli, ["data", kind, "--docs", "3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and all(r["kind"] == kind and r["text"] for r in records)
    assert list(generate(3)) == [r["text"] for r in records]
    assert list(generate(3, seed=1)) != [r["text"] for r in records]
