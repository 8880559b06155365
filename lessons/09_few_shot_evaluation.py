# %% [markdown]
# # Lesson 9: few-shot evaluation, the report's way
#
# §3 of the Phi-3 report compares models on academic benchmarks: "As is now standard, we use
# few-shot prompts to evaluate the models, at temperature 0. The number of k-shot examples is
# listed per-benchmark" (MMLU 5-shot, GSM-8K 8-shot with a chain of thought, ...). Appendix A
# shows the prompt: solved examples, then the question, each as
#
#     Question:
#     Which of the following is the body cavity that contains the pituitary gland?
#     Options:
#     A. Abdominal
#     B. Cranial
#     C. Pleural
#     D. Spinal
#     Answer: B
#
# Our models are trained on a closed world (lesson 7), so we evaluate them on that world, with
# the same machinery. Multiple-choice questions have 4 options (chance is 25%):
#
# 1. three tasks, and a test split that never appears in the training text;
# 2. a few-shot prompt in the format of Appendix A;
# 3. multiple choice scored by the log-likelihood of the answer letter;
# 4. arithmetic answered with a chain of thought, and how the final number is read;
# 5. a small evaluation of a random model (chance level), and of a trained one if there is one.

# %%
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # tiny matrices: one BLAS thread (lesson 8)

import re
import tempfile
import textwrap
from pathlib import Path

import numpy as np

import tinyphi3
from tinyphi3.data import world
from tinyphi3.data.textbooks import generate_textbooks
from tinyphi3.evaluation.harness import (build_prompt, continuation_ids, evaluate_all, format_table,
                                         log_softmax, loglikelihoods, parse_final_number)
from tinyphi3.data.tasks import TASKS, few_shot_items, render, task_items
from tinyphi3.cli.info import init_checkpoint
from tinyphi3.pictures.charts import bar_chart
from tinyphi3.tokenizers.train_sentencepiece import train_tokenizer

workdir = Path(tempfile.mkdtemp(prefix="lesson09_"))
try:
    REPO = Path(__file__).resolve().parent.parent
except NameError:                                  # run as a notebook, from lessons/
    REPO = Path.cwd().parent
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. Tasks, and a test split that training never sees
#
# Each task plays the part of a benchmark of the report:
#
# | task | like | what it asks | scored by |
# |---|---|---|---|
# | `knowledge` | MMLU, TriviaQA | the creatures' facts | letter log-likelihood |
# | `reasoning` | ARC, BigBench-Hard | comparisons, units, logic, counting | letter log-likelihood |
# | `arithmetic` | GSM-8K (CoT) | two-digit word problems | exact final number |
#
# A benchmark is only worth something if its questions were not in the training data. Every
# problem of the world has a *key*, and a stable hash of the key decides once and for all
# whether it belongs to the test split:
#
# - a fact question: (creature, attribute). "Where does Veska live?" is a test question in every
#   phrasing, or in none. The *fact* ("Veska lives in the Copper Caves") is still taught in the
#   textbooks, many times: the model must learn it from prose and answer a question it never saw;
# - a calculation: the operand pair, so a test sum appears in no story and in no exercise;
# - a reasoning problem: its content (the numbers compared, the names put in order, ...).

# %%
for name, task in TASKS.items():
    print(f"{name:10s} {task.description}; default {task.default_shots}-shot")
print(f"held-out share of keys, in %: {world.HELD_OUT_PERCENT}")

test_fact = task_items("knowledge", "test", 1)[0]
creature = next(e for e in world.ENTITIES if e.name == test_fact.key[1])
print("a test question:", test_fact.question, "->",
      test_fact.options["ABCD".index(test_fact.answer)])
print("its key:", test_fact.key, "held out:", world.held_out(test_fact.key))
assert world.held_out(test_fact.key)

# %% [markdown]
# **The overlap check.** We generate 2000 textbook documents and look for the test items in
# them: no test question string, no held-out operand pair written as "a + b", "a - b" or
# "a x b", no question about a held-out fact, in any phrasing. And the fact itself is there.
# (The test suite runs the same check on 10 000 documents.)

# %%
text = "\n".join(generate_textbooks(2000, seed=0))
questions = {name: [i.question for i in task_items(name, "test", 300)] for name in TASKS}
assert not any(q in text for qs in questions.values() for q in qs)

written = [world.arithmetic_key(int(a), op, int(b))     # two digits, and one digit after "x"
           for a, op, b in re.findall(r"(?<!\d)(\d\d) ([+\-x]) (\d\d?)(?!\d)", text)
           if (op == "x") == (int(b) < 10)]
leaked = [k for k in written if world.held_out(k)]
print(f"{len(written)} two-digit calculations in the text, {len(leaked)} of them held out")
assert written and not leaked

attribute = test_fact.key[2]
question_phrasings = [t.format(name=creature.name) for t in world.QUESTION_TEMPLATES[attribute]]
fact_phrasings = {t.format(**world.fields(creature, full_name))
                  for t in world.FACT_TEMPLATES[attribute] for full_name in (False, True)}
found = {f: text.count(f) for f in fact_phrasings if f in text}
print(f"the test question, in any of its {len(question_phrasings)} phrasings: "
      f"{sum(text.count(q) for q in question_phrasings)} times in the text")
print(f"the fact behind it, in the textbooks' phrasings: {sum(found.values())} times")
for sentence, count in found.items():
    print(f"    {count} x  {sentence}")
assert not any(q in text for q in question_phrasings) and len(found) >= 2

# %% [markdown]
# ## 2. A 2-shot prompt
#
# Solved examples come from the *train* split; then the test question, ending in "Answer:" for
# the model to continue. No blank lines, exactly as in Appendix A.

# %%
examples = few_shot_items("knowledge", 2, rng, exclude=test_fact.question)
prompt = build_prompt(test_fact, examples)
print(prompt)
assert prompt.count("Question:\n") == 3 and prompt.endswith("Answer:")
assert all(not world.held_out(e.key) for e in examples)

# %% [markdown]
# And an arithmetic example, whose answer is a chain of thought: the column method, one digit
# at a time, ending with "The answer is N.", the way the textbooks write it.

# %%
sum_item = task_items("arithmetic", "train", 1)[0]
print(render(sum_item))

# %% [markdown]
# ## 3. Scoring multiple choice by log-likelihood
#
# At temperature 0 the model's answer is its most likely one. For a multiple-choice prompt we
# do not sample: we ask the model how likely each continuation " A", " B", " C", " D" is,
#
#     score(L) = log p(" L" | prompt) = sum over the tokens t of " L" of log softmax(logits)[t],
#
# and pick the best. We score the *letter*, because the report's prompt answers with a letter;
# scoring the option's text instead would favour short or frequent options and is not what
# Appendix A shows. A letter is one token, so one forward pass over the prompt gives all four
# scores.
#
# We need a model and a tokenizer. A random "tiny" Phi-3 stands in for a trained model, with a
# tokenizer trained on the textbooks.

# %%
corpus = workdir / "textbooks.txt"
corpus.write_text("\n".join(generate_textbooks(300, seed=1)), encoding="utf-8")
train_tokenizer([corpus], workdir / "tok", 450)
ckpt = init_checkpoint("tiny", workdir / "tiny", tokenizer_dir=workdir / "tok")
model = tinyphi3.Phi3.from_pretrained(ckpt)
tok = tinyphi3.Tokenizer.from_pretrained(ckpt)
print(f"random tiny model: {model.num_parameters():,} parameters, context "
      f"{model.config.max_position_embeddings}, tokenizer of {tok.vocab_size} tokens")

prompt = build_prompt(test_fact, examples[:1])
ids = tok.encode(prompt)
logits = model(np.array([ids]))[0, -1, :tok.vocab_size]              # [1, T] -> [1, T, V] -> [V]
logp = log_softmax(logits)
letter_ids = {L: continuation_ids(tok, prompt, f" {L}")[1] for L in "ABCD"}
by_hand = {L: float(logp[t[0]]) for L, t in letter_ids.items()}
print("tokens of ' A'...' D':", letter_ids)
for L, s in by_hand.items():
    print(f"  {L}: log p = {s:7.3f}   p = {np.exp(s):.4f}")
library = loglikelihoods(model, [continuation_ids(tok, prompt, f" {L}") for L in "ABCD"],
                         tok.vocab_size)
assert all(len(t) == 1 for t in letter_ids.values())
assert np.allclose(library, list(by_hand.values()), atol=1e-4)
choice = "ABCD"[int(np.argmax(library))]
print(f"the model picks {choice}; the right answer is {test_fact.answer}")
print("picture:", bar_chart("09_letter_probabilities.png",
                            {f"{L}. {o}": float(np.exp(by_hand[L]))
                             for L, o in zip("ABCD", test_fact.options)},
                            f"p(letter | prompt) of a random tiny model; right answer "
                            f"{test_fact.answer}, a uniform guess 1/{tok.vocab_size} = "
                            f"{1 / tok.vocab_size:.4f}", ""))

# %% [markdown]
# **Batches and left padding.** `loglikelihoods` scores many prompts in one forward pass, but a
# batch is a rectangle [B, T] and prompts have different lengths. The short ones are padded
# *on the left*, so that every prompt ends in the last column and the logits that predict the
# answer letter sit at the same place, `[:, -1]`, in every row. Two more arrays make the padding
# invisible:
#
# - `attention_mask` [B, T]: 1 for a real token, 0 for padding; no query attends to a key
#   whose mask is 0 (lesson 2's causal mask, with the padded columns removed);
# - the positions [B, T]: each row counts only its own real tokens, so a prompt's first token
#   is at position 0 whatever padding precedes it (padding gets 0; nothing attends to it).
#
# A batch of two prompts, the 0-shot and the 1-shot prompt of the same question, around the
# column where the short one starts:

# %%
rows = [tok.encode(build_prompt(test_fact, [])), tok.encode(build_prompt(test_fact, examples[:1]))]
T = max(len(x) for x in rows)
batch = np.full((len(rows), T), tok.pad_token_id or 0, dtype=np.int64)         # [B, T]
attention_mask = np.zeros((len(rows), T), dtype=np.int64)                      # [B, T]
for r, x in enumerate(rows):
    batch[r, T - len(x):] = x                   # left padding: every prompt ends in column T - 1
    attention_mask[r, T - len(x):] = 1
positions = np.where(attention_mask == 1, np.cumsum(attention_mask, axis=1) - 1, 0)   # [B, T]
edge = T - len(rows[0])                         # the column of the short prompt's first token
print(f"prompt lengths {[len(x) for x in rows]}, batch [B, T] = {list(batch.shape)}, "
      f"pad id {tok.pad_token_id}; columns {edge - 3} to {edge + 3} and the last one:")
for name, array in (("input_ids", batch), ("attention_mask", attention_mask),
                    ("positions", positions)):
    for r in range(len(rows)):
        print(f"  {name:>14} row {r}: {array[r, edge - 3:edge + 4]} ... {array[r, -1]}")
assert positions[0, edge] == 0 and positions[0, -1] == len(rows[0]) - 1

V = tok.vocab_size
batched = model(batch, attention_mask=attention_mask, position_ids=positions)[:, -1, :V]  # [B, V]
alone = np.stack([model(np.array([x]))[0, -1, :V] for x in rows])     # each prompt by itself
by_default = model(batch, attention_mask=attention_mask)[:, -1, :V]   # positions counted inside
no_mask = model(batch)[:, -1, :V]                                     # padding attended to
shifted = model(batch, attention_mask=attention_mask,
                position_ids=np.broadcast_to(np.arange(T), batch.shape))[:, -1, :V]
for name, logits in (("left padded, masked", batched), ("without the mask", no_mask),
                     ("positions 0..T-1", shifted)):
    print(f"{name:>20}: largest difference from each prompt alone, per row "
          f"{np.abs(logits - alone).max(axis=1)}")
assert np.allclose(batched, alone, atol=1e-5) and np.array_equal(batched, by_default)
assert np.abs(no_mask[0] - alone[0]).max() > 100 * 1e-5     # negative control: the mask matters
assert np.allclose(no_mask[1], alone[1], atol=1e-5)         # (the long row has no padding)
assert np.allclose(shifted, alone, atol=1e-5)

# %% [markdown]
# With the mask, the batch gives each prompt's last-token logits as it has them alone (up to
# float rounding); without it, the short prompt attends to its padding and its logits change.
# The positions are subtler: RoPE (lesson 3) makes attention depend only on position
# *differences*, so positions shifted by the padding give the same logits here. Counting real
# tokens still matters: the KV cache continues from them when generating, and a LongRoPE model
# picks its long or short factors from the largest position (lesson 3). The library's
# `Phi3.__call__` counts them this way when no `position_ids` are given, as `by_default` shows.

# %% [markdown]
# ## 4. Chain of thought, and reading the final number
#
# For arithmetic the model writes: greedy decoding until the end of the line (the next line
# would be "Question:"), an end token, or a token limit. The answer is the number after "The
# answer is", or failing that the last number written; it must match exactly.

# %%
outputs = [sum_item.solution,
           "27 + 48: 7 + 8 = 15, write 5 carry 1; 2 + 4 + 1 = 7. So 27 + 48 = 75.",
           "I think it is 1,204 apples",
           "carry carry carry"]
for out in outputs:
    print(f"{parse_final_number(out)!s:>6}  <- {out}")
assert parse_final_number(outputs[0]) == int(sum_item.answer)
assert parse_final_number(outputs[1]) == 75 and parse_final_number(outputs[2]) == 1204
assert parse_final_number(outputs[3]) is None

# %% [markdown]
# ## 5. Evaluating a model
#
# `evaluate` runs it all: n test items, K train examples before each (dropped, first ones first,
# when the prompt would not fit the context, and counted), the scores, the accuracy. A random
# model is at chance: about 25% on the multiple-choice tasks (up to sampling noise: we score
# only 20 items per task, to stay quick; `tinyphi3 eval` scores 200 by default), and 0% on
# arithmetic, where guessing a number almost never hits it.
#
# Its context is only 256 tokens and this tokenizer is small (many tokens per word), so few
# examples fit; the table says so. The `tinyphi3 eval` command prints the same table.

# %%
models = {"tiny-random": (model, tok)}
trained = REPO / "checkpoints" / "mini-base"          # used if it exists; not required
if (trained / "config.json").is_file():
    models["mini-base"] = (tinyphi3.Phi3.from_pretrained(trained),
                           tinyphi3.Tokenizer.from_pretrained(trained))
results = {name: evaluate_all(m, t, n=20, max_new_tokens=40) for name, (m, t) in models.items()}
print(format_table(results))

random_results = results["tiny-random"]
for name in ("knowledge", "reasoning"):
    accuracy = random_results[name]["accuracy"]
    assert 0.05 <= accuracy <= 0.5, f"{name}: a random model should be near 25%, got {accuracy}"
assert random_results["arithmetic"]["accuracy"] == 0.0
record = random_results["arithmetic"]["records"][0]
print("\nwhat the random model wrote for:", record["question"])
print("   ", textwrap.shorten(record["output"], 100), "->", record["prediction"],
      f"(right: {record['answer']})")
if "mini-base" in results:
    print("\nthe trained model, on its first knowledge item:",
          results["mini-base"]["knowledge"]["records"][0])

# %% [markdown]
# ## What we built
#
# - a closed world whose test questions never appear in training, proven by an overlap check,
#   while the facts behind them are taught;
# - few-shot prompts in the report's format (Appendix A), at temperature 0;
# - multiple choice scored by the log-likelihood of the answer letter, batched with left padding;
# - chain-of-thought arithmetic scored by exact match of the final number;
# - a table like the report's: `tinyphi3 eval --ckpt DIR --task all`.
#
# ## Where it lives
#
# - `tinyphi3/data/world.py`: `held_out` (the stable hash that splits keys), `HELD_OUT_PERCENT`,
#   `arithmetic_key`, `QUESTION_TEMPLATES`, `FACT_TEMPLATES`, `fields`.
# - `tinyphi3/data/tasks.py`: `TASKS`, `task_items`, `few_shot_items`, `render` (the Appendix A
#   format; `render_cloze` for the cloze formulation).
# - `tinyphi3/evaluation/harness.py`: `build_prompt`, `fit_prompt`, `continuation_ids`,
#   `log_softmax`, `loglikelihoods` (left padding and the attention mask), `generate_answer`
#   (`generate_answers`: many, in batches),
#   `parse_final_number`, `evaluate`, `evaluate_all`, `format_table`.
# - `tinyphi3/models/model.py`: `Phi3.__call__` with `attention_mask` and `position_ids`.
# - `tinyphi3/cli/evaluation.py`: the `tinyphi3 eval` command; `tinyphi3/cli/info.py`:
#   `init_checkpoint` (a random model to start from).
