"""The evaluation harness: the report's prompt format, scoring checked with rigged fake models
whose right accuracy is known (100% / 0%), the answer parser over hypothesis-generated text,
batching equal to one-at-a-time scoring on a real tiny model, shot dropping, and the CLI."""

import re
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

import tinyphi3
from tinyphi3.data import world
from tinyphi3.data.textbooks import generate_textbooks
from tinyphi3.errors import TinyPhi3Error
from tinyphi3.evaluation import harness
from tinyphi3.cli.evaluation import eval_command
from tinyphi3.data.tasks import (TASKS, Item, UnknownTaskError, get_task, render,
                                       render_cloze, task_items)
from tinyphi3.cli.info import init_checkpoint
from tinyphi3.tokenizers.train_sentencepiece import train_tokenizer

# ---- the report's format -------------------------------------------------------------------------

APPENDIX_A_STYLE = """Question:
Which of the following is the body cavity that contains the pituitary gland?
Options:
A. Abdominal
B. Cranial
C. Pleural
D. Spinal
Answer: B
Question:
Where was the most famous site of the mystery cults in Greece?
Options:
A. Ephesus
B. Corinth
C. Athens
D. Eleusis
Answer:"""


def test_prompt_follows_appendix_a_of_the_report():
    solved = Item("knowledge", "Which of the following is the body cavity that contains the "
                  "pituitary gland?", ("Abdominal", "Cranial", "Pleural", "Spinal"), "B", "B", ())
    asked = Item("knowledge", "Where was the most famous site of the mystery cults in Greece?",
                 ("Ephesus", "Corinth", "Athens", "Eleusis"), "D", "D", ())
    assert harness.build_prompt(asked, [solved]) == APPENDIX_A_STYLE


def test_arithmetic_items_show_the_chain_of_thought():
    item = task_items("arithmetic", "train", 1)[0]
    text = render(item)
    assert re.fullmatch(r"Question:\n.+\nAnswer: \d+ [+\-x] \d+: .+ The answer is \d+\.\n", text)
    assert render(item, solved=False).endswith("\nAnswer:")


def test_unknown_task_is_a_tinyphi3_error():
    with pytest.raises(UnknownTaskError, match="unknown task 'trivia'") as err:
        get_task("trivia")
    assert isinstance(err.value, TinyPhi3Error)


def test_few_shot_examples_come_from_the_train_split():
    rng = np.random.default_rng(0)
    for name in TASKS:
        test = task_items(name, "test", 20)
        for item in test:
            assert world.held_out(item.key)
            shots = harness.few_shot_items(name, 5, rng, exclude=item.question)
            assert all(not world.held_out(s.key) and s.question != item.question for s in shots)


# ---- the answer parser ---------------------------------------------------------------------------

@given(st.text(max_size=60), st.integers(-10**9, 10**9))
def test_parser_reads_the_final_answer_sentence(prefix, n):
    assert harness.parse_final_number(f"{prefix} So it is done. The answer is {n}.") == n


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=6),
       st.lists(st.sampled_from(["apples", "so", "then", "we get", "and", "="]), min_size=6,
                max_size=6))
def test_parser_falls_back_to_the_last_number(numbers, words):
    text = " ".join(f"{w} {n}" for w, n in zip(words, numbers))
    assert harness.parse_final_number(text) == numbers[-1]


@given(st.text(alphabet=st.characters(blacklist_categories=("Nd",)), max_size=40))
def test_parser_gives_none_without_digits(text):
    assert harness.parse_final_number(text) is None


def test_parser_examples():
    assert harness.parse_final_number("27 + 48: ... So 27 + 48 = 75. The answer is 75.") == 75
    assert harness.parse_final_number("The answer is 1,234.") == 1234
    assert harness.parse_final_number("72 - 48 = 24") == 24
    assert harness.parse_final_number("the answer is -3 degrees") == -3


# ---- fake models with rigged answers -------------------------------------------------------------

class CharTokenizer:
    """One token per character (ASCII), plus an end token: makes texts and ids easy to follow."""
    vocab_size = 257
    eos_token_id = 256
    pad_token_id = 0
    stop_token_ids = [256]

    def encode(self, text):
        return [ord(c) for c in text]

    def decode(self, ids, skip_special_tokens=False):
        return "".join(chr(i) for i in ids if i < 256)


def last_question(text):
    return text.rsplit("Question:\n", 1)[1].split("\n", 1)[0]


class OracleChoiceModel:
    """Puts a high logit on the letter `pick(question)` at the last position of every row."""

    def __init__(self, pick, context=4096):
        self.pick = pick
        self.config = SimpleNamespace(max_position_embeddings=context, vocab_size=257,
                                      rope_scaling=None)
        self.calls = []

    def __call__(self, ids, attention_mask=None, cache=None, logits_to_keep=0):
        ids = np.asarray(ids)
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
        assert ids.shape[1] <= self.config.max_position_embeddings
        self.calls.append(ids.shape)
        logits = np.zeros((*ids.shape, 257), np.float32)
        for row in range(len(ids)):
            assert mask[row, -1] == 1 and np.all(np.diff(mask[row]) >= 0), "left padding expected"
            text = "".join(chr(t) for t, m in zip(ids[row], mask[row]) if m)
            assert text.endswith("Answer: ")
            logits[row, -1, ord(self.pick(last_question(text)))] = 10.0
        return logits[:, -logits_to_keep:] if logits_to_keep else logits


class OracleWriterModel:
    """Writes `write(question)` after the last 'Answer:', one character per step (with a cache)."""

    def __init__(self, write, context=4096):
        self.write = write
        self.config = SimpleNamespace(max_position_embeddings=context, vocab_size=257,
                                      rope_scaling=None)

    def new_cache(self, batch_size=1, capacity=0):
        return SimpleNamespace(ids=[[] for _ in range(batch_size)], long_rope=False)

    def __call__(self, ids, attention_mask=None, cache=None, logits_to_keep=0):
        ids = np.asarray(ids)                # a batch is left-padded, with a mask
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
        logits = np.zeros((len(ids), 1, 257), np.float32)
        for row in range(len(ids)):
            cache.ids[row] += [int(t) for t, m in zip(ids[row], mask[row]) if m]
            text = "".join(chr(t) for t in cache.ids[row])
            try:
                target = " " + self.write(last_question(text)) + "\nQuestion:"
            except KeyError:         # a chunk of the prompt before its last: logits not used
                continue
            written = text.rsplit("Answer:", 1)[1]
            logits[row, 0, ord(target[len(written)]) if len(written) < len(target) else 256] = 10
        return logits


@pytest.fixture(scope="module")
def answers():
    return {name: {i.question: i for i in task_items(name, "test", 40)} for name in TASKS}


@pytest.mark.parametrize("task", ["knowledge", "reasoning"])
def test_rigged_choice_models_score_100_and_0_percent(task, answers):
    key = answers[task]
    right = OracleChoiceModel(lambda q: key[q].answer)
    wrong = OracleChoiceModel(lambda q: "ABCD"[("ABCD".index(key[q].answer) + 1) % 4])
    tok = CharTokenizer()
    good = harness.evaluate(right, tok, task, shots=3, n=40, batch_size=8)
    bad = harness.evaluate(wrong, tok, task, shots=3, n=40, batch_size=8)
    assert (good["accuracy"], good["correct"], good["n"]) == (1.0, 40, 40)
    assert (bad["accuracy"], bad["correct"]) == (0.0, 0)
    assert good["fewer_shots"] == 0 and good["mean_shots"] == 3
    # one forward row per prompt (the four letters share it), eight prompts per batch
    assert sum(shape[0] for shape in right.calls) == 40 and max(s[0] for s in right.calls) == 8


class OracleClozeModel:
    """After the last 'Answer:', puts a high logit on the next character of ' ' + say(question)."""

    def __init__(self, say):
        self.say = say
        self.config = SimpleNamespace(max_position_embeddings=4096, vocab_size=257, rope_scaling=None)

    def __call__(self, ids, attention_mask=None, cache=None, logits_to_keep=0):
        ids = np.asarray(ids)
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
        logits = np.zeros((*ids.shape, 257), np.float32)
        for row in range(len(ids)):
            text = "".join(chr(t) if m else "\0" for t, m in zip(ids[row], mask[row]))
            assert "Options:" not in text                # the cloze formulation lists no options
            start = text.rindex("Answer:") + len("Answer:")
            target = " " + self.say(last_question(text.replace("\0", "")))
            for p in range(start - 1, min(len(text), start - 1 + len(target))):
                logits[row, p, ord(target[p - start + 1])] = 10.0
        return logits[:, -logits_to_keep:] if logits_to_keep else logits


@pytest.mark.parametrize("task", ["knowledge", "reasoning"])
def test_the_cloze_formulation_scores_the_options_text(task, answers):
    key = answers[task]
    text = {q: item.options["ABCD".index(item.answer)] for q, item in key.items()}
    wrong = {q: item.options[("ABCD".index(item.answer) + 1) % 4] for q, item in key.items()}
    tok = CharTokenizer()
    good = harness.evaluate(OracleClozeModel(text.get), tok, task, shots=2, n=40, cloze=True)
    bad = harness.evaluate(OracleClozeModel(wrong.get), tok, task, shots=2, n=40, cloze=True)
    assert good["accuracy"] == 1.0 and bad["accuracy"] == 0.0
    assert good["format"] == "cloze" and good["metric"] == "option log-likelihood (cloze)"
    example = render_cloze(key[next(iter(key))])
    assert example.endswith(f"Answer: {text[next(iter(key))]}\n") and "Options:" not in example
    with pytest.raises(ValueError, match="without chat"):
        harness.evaluate(OracleClozeModel(text.get), tok, task, n=4, cloze=True, chat=True)


def test_rigged_writers_score_100_and_0_percent_on_arithmetic(answers):
    key = answers["arithmetic"]
    tok = CharTokenizer()
    good = harness.evaluate(OracleWriterModel(lambda q: key[q].solution), tok, "arithmetic",
                            shots=2, n=40, max_new_tokens=200)       # characters, here
    assert good["accuracy"] == 1.0
    assert good["records"][0]["output"] == key[good["records"][0]["question"]].solution
    off_by_one = OracleWriterModel(lambda q: f"I think. The answer is {int(key[q].answer) + 1}.")
    assert harness.evaluate(off_by_one, tok, "arithmetic", shots=2, n=40)["accuracy"] == 0.0


def test_shots_are_dropped_to_fit_the_context(answers):
    key = answers["knowledge"]
    tok = CharTokenizer()
    small = OracleChoiceModel(lambda q: key[q].answer, context=400)   # about two examples fit
    result = harness.evaluate(small, tok, "knowledge", shots=5, n=40)
    assert result["accuracy"] == 1.0                     # the rigged answer survives
    assert result["fewer_shots"] == 40 and 0 < result["mean_shots"] < 5
    assert result["truncated"] == 0
    assert max(shape[1] for shape in small.calls) <= 400
    writer = OracleWriterModel(lambda q: answers["arithmetic"][q].solution, context=500)
    result = harness.evaluate(writer, tok, "arithmetic", shots=8, n=10, max_new_tokens=150)
    assert result["accuracy"] == 1.0 and result["mean_shots"] < 8


def test_loglikelihood_of_a_known_distribution():
    class Fixed:                                         # p(next = t) = softmax(z) everywhere
        z = np.log(np.array([0.5, 0.25, 0.125, 0.125], np.float32))

        def __call__(self, ids, attention_mask=None, logits_to_keep=0):
            out = np.broadcast_to(self.z, (*np.shape(ids), 4))
            return out[:, -logits_to_keep:] if logits_to_keep else out
    scores = harness.loglikelihoods(Fixed(), [([0, 1], [0]), ([2], [1, 2]), ([3, 3, 3], [3])])
    np.testing.assert_allclose(scores, np.log([0.5, 0.25 * 0.125, 0.125]), rtol=1e-6)


# ---- a real tiny model ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random 'tiny' Phi-3 and a tokenizer trained on the textbooks, saved as a checkpoint."""
    root = tmp_path_factory.mktemp("tiny")
    corpus = root / "textbooks.txt"
    corpus.write_text("\n".join(generate_textbooks(300, seed=5)), encoding="utf-8")
    train_tokenizer([corpus], root / "tok", 450)
    ckpt = init_checkpoint("tiny", root / "ckpt", tokenizer_dir=root / "tok")
    return ckpt, tinyphi3.Phi3.from_pretrained(ckpt), tinyphi3.Tokenizer.from_pretrained(ckpt)


def test_batched_left_padded_scores_equal_one_at_a_time(tiny):
    _, model, tok = tiny
    items = task_items("reasoning", "test", 6) + task_items("knowledge", "test", 6)
    requests = []
    for item in items:
        for letter in "ABCD":
            requests.append(harness.continuation_ids(tok, harness.build_prompt(item, []), f" {letter}"))
    batched = harness.loglikelihoods(model, requests, tok.vocab_size, batch_size=16)
    single = harness.loglikelihoods(model, requests, tok.vocab_size, batch_size=1)
    assert len({len(c) for c, _ in requests}) > 3      # really different lengths, so padding
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-4)
    # and one of them by hand: the full forward pass, log softmax, the letter's token
    context, cont = requests[0]
    logits = model(np.array([context]))[0, -1, :tok.vocab_size].astype(np.float64)
    by_hand = logits[cont[0]] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()
    assert len(cont) == 1 and np.isclose(single[0], by_hand, atol=1e-4)


def test_letters_and_boundaries_tokenize_cleanly(tiny):
    _, _, tok = tiny
    prompt = harness.build_prompt(task_items("knowledge", "test", 1)[0], [])
    for letter in "ABCD":
        context, cont = harness.continuation_ids(tok, prompt, f" {letter}")
        assert context == tok.encode(prompt) and tok.decode(cont).strip() == letter


@pytest.mark.parametrize("task", list(TASKS))
def test_a_random_tiny_model_runs_every_task(tiny, task):
    _, model, tok = tiny
    done = []
    result = harness.evaluate(model, tok, task, n=12, progress=done.append, max_new_tokens=24)
    assert result["n"] == len(result["records"]) == sum(done) == 12
    assert 0 <= result["correct"] <= 12 and result["accuracy"] == result["correct"] / 12
    assert result["shots"] == TASKS[task].default_shots
    assert all(0 <= r["shots"] <= result["shots"] for r in result["records"])


def test_format_table_has_tasks_as_rows_and_models_as_columns():
    def result(task, acc, shots):
        return {"task": task, "shots": shots, "n": 200, "accuracy": acc, "chance": 0.25,
                "metric": "exact match (CoT)" if task == "arithmetic" else "letter log-likelihood",
                "fewer_shots": 3 if task == "arithmetic" else 0, "mean_shots": 7.9}
    table = harness.format_table({
        "mini-base": {"knowledge": result("knowledge", 0.412, 5),
                      "arithmetic": result("arithmetic", 0.1, 8)},
        "mini-sft": {"knowledge": result("knowledge", 0.6, 5),
                     "arithmetic": result("arithmetic", 0.25, 8)}})
    lines = table.splitlines()
    assert lines[0].split() == ["mini-base", "mini-sft"]
    assert lines[1].split() == ["knowledge", "(5-shot)", "41.2", "60.0"]
    assert lines[2].split() == ["arithmetic", "(8-shot;", "CoT)", "10.0", "25.0"]
    assert "fewer shots" in table


# ---- the command line ----------------------------------------------------------------------------

def test_cli_help_shows_an_example():
    result = CliRunner().invoke(eval_command, ["--help"])
    assert result.exit_code == 0
    assert "tinyphi3 eval --ckpt" in result.output and "--shots" in result.output


def test_cli_unknown_task_is_one_clear_message(tiny):
    ckpt, _, _ = tiny
    result = CliRunner().invoke(eval_command, ["--ckpt", str(ckpt), "--task", "trivia"])
    assert result.exit_code == 2
    assert "unknown task 'trivia'" in result.output and "Traceback" not in result.output


def test_cli_cloze_with_chat_is_one_clear_message(tiny):
    ckpt, _, _ = tiny
    result = CliRunner().invoke(eval_command, ["--ckpt", str(ckpt), "--cloze", "--chat"])
    assert result.exit_code == 2
    assert "--cloze scores raw completions" in result.output and "Traceback" not in result.output


def test_cli_prints_the_table(tiny):
    ckpt, _, _ = tiny
    result = CliRunner().invoke(eval_command, ["--ckpt", str(ckpt), "--task", "knowledge,reasoning",
                                               "--shots", "1", "--n", "8"])
    assert result.exit_code == 0, result.output
    assert re.search(r"knowledge \(1-shot\)\s+\d+\.\d", result.output)
    assert re.search(r"reasoning \(1-shot\)\s+\d+\.\d", result.output)


def test_chat_format_puts_the_prompt_in_a_user_turn_and_reads_the_letter_of_the_reply(monkeypatch):
    """--chat: the few-shot prompt is the user's message, and a multiple-choice item is scored by
    the letter the greedy reply names after its explanation (as the chat model learned in SFT)."""
    from pathlib import Path

    from tinyphi3 import Tokenizer
    tok = Tokenizer.from_pretrained(Path(__file__).resolve().parent.parent / "checkpoints" / "mini-base")
    items = task_items("knowledge", "test", 6)
    seen, replies = [], {}
    for i, item in enumerate(items):      # right, wrong, and no letter at all, in turn
        wrong = next(L for L in "ABCD" if L != item.answer)
        replies[item.question] = [f"It is {item.options[0]}. The answer is {item.answer}.",
                                  f"The answer is {wrong}.", "I am not sure."][i % 3]

    def fake_answers(model, tokenizer, prompts, max_new_tokens=80, batch_size=16):
        seen.extend(prompts)
        return [replies[next(q for q in replies if q in tokenizer.decode(ids))]
                for ids in prompts]

    monkeypatch.setattr(harness, "generate_answers", fake_answers)

    class Config:
        max_position_embeddings = 512

    class Model:
        config = Config()

    result = harness.evaluate(Model(), tok, "knowledge", shots=0, n=6, chat=True)
    assert [r["correct"] for r in result["records"]] == [True, False, False] * 2
    assert [r["prediction"] is None for r in result["records"]] == [False, False, True] * 2
    assert result["metric"] == "letter named in the reply"
    prompt = harness.build_prompt(items[0], [])
    assert seen[0] == tok.apply_chat_template([{"role": "user", "content": prompt}],
                                              add_generation_prompt=True, tokenize=True)


@pytest.mark.parametrize("reply, letter", [
    ("Veska lives in the Copper Caves. The answer is B.", "B"),
    ("The answer is: (C)", "C"),
    ("D. Frost Peak", "D"),
    ("The answer is A. No wait, the answer is D.", "D"),
    ("A bird lives there.", None),           # a word, not a letter
    ("The answer is E.", None),
    ("", None),
])
def test_parse_letter(reply, letter):
    assert harness.parse_letter(reply) == letter
