# %% [markdown]
# # Lesson 10: supervised fine-tuning and the loss mask
#
# A pre-trained model continues text; it does not answer. The Phi-3 report (§2, "Post-training")
# turns phi-3-mini into an assistant in two stages, "supervised finetuning (SFT) and direct
# preference optimization (DPO)". This lesson is the first stage; lesson 11 is the second.
#
# SFT is pre-training's loop (lesson 8) on different data: conversations written in the chat
# format, with one change to the loss. The model should learn to write the *assistant's* turns,
# not the user's questions nor the template's headers, so only the assistant's tokens carry a
# label; every other position is labelled -100 and the loss skips it. That set of labels is the
# **loss mask**.
#
# 1. the chat format, as text and as ids;
# 2. the loss mask: which tokens carry a label;
# 3. the loss counts only those tokens: by hand, and through the gradient;
# 4. a small SFT data set, and what the base model does with a question;
# 5. fine-tuning `checkpoints/mini-base` on it with the Trainer;
# 6. the fine-tuned model's answers, and where its loss went, token by token.

# %%
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # tiny matrices: one BLAS thread (lesson 8)

import json
import re
import tempfile
import time
from pathlib import Path

import numpy as np

import _plot
from tinyphi3.autograd import Parameter
from tinyphi3.generate import generate
from tinyphi3.layers import causal_lm_loss
from tinyphi3.model import Phi3
from tinyphi3.tokenizer import Tokenizer
from tinyphi3.train.chat_data import ChatEncoder
from tinyphi3.train.loop import Trainer
from tinyphi3.train.recipe import recipe_from_dict

workdir = Path(tempfile.mkdtemp(prefix="lesson10_"))
try:
    REPO = Path(__file__).resolve().parent.parent
except NameError:                                  # run as a notebook, from lessons/
    REPO = Path.cwd().parent
BASE = REPO / "checkpoints" / "mini-base"          # the shipped base model (its README says how)
np.set_printoptions(precision=4, suppress=True, linewidth=110)

# %% [markdown]
# ## 1. The chat format
#
# We use the tokenizer of `checkpoints/mini-base`: 2048 BPE pieces and Phi-3's eleven added
# tokens (lesson 1). A conversation is a list of messages; `apply_chat_template` writes each as
# `<|role|>\n content <|end|>\n`. A finished conversation, as SFT trains on, ends with the eos
# token `<|endoftext|>`; a prompt for the model to answer ends with `<|assistant|>\n` instead.

# %%
tok = Tokenizer.from_pretrained(BASE)
chat = [{"role": "system", "content": "You answer in one sentence."},
        {"role": "user", "content": "What is 3 plus 4?"},
        {"role": "assistant", "content": "3 plus 4 is 7."},
        {"role": "user", "content": "And 6 plus 2?"},
        {"role": "assistant", "content": "6 plus 2 is 8."}]
text = tok.apply_chat_template(chat, add_generation_prompt=False)
print(text)
assert text.startswith("<|system|>\nYou answer in one sentence.<|end|>\n<|user|>\n")
assert text.endswith("<|assistant|>\n6 plus 2 is 8.<|end|>\n<|endoftext|>")
prompt_text = tok.apply_chat_template(chat[:2], add_generation_prompt=True)
assert prompt_text.endswith("<|user|>\nWhat is 3 plus 4?<|end|>\n<|assistant|>\n")

# %% [markdown]
# As ids, each control token is one id, and the newline after it costs nothing (its `rstrip`
# flag, lesson 1):

# %%
END, ASSISTANT = tok.token_to_id("<|end|>"), tok.token_to_id("<|assistant|>")
ids_list = tok.apply_chat_template(chat, add_generation_prompt=False, tokenize=True)
print(len(ids_list), "ids:", [tok.id_to_token(i) for i in ids_list[:16]], "...")
assert tok.token_to_id("<0x0A>") not in ids_list

# %% [markdown]
# ## 2. The loss mask
#
# `ChatEncoder(tok).encode(messages)` returns the ids and their labels. A label is the token id
# itself on every token of an assistant reply and on the `<|end|>` that closes it; everything
# else (the system prompt, the user's turns, the `<|role|>` headers, the final `<|endoftext|>`)
# gets -100. Below, the labelled tokens are in [brackets]:

# %%
encoder = ChatEncoder(tok)
ids, labels = encoder.encode(chat)
kept = labels != -100


def piece(i):
    return tok.id_to_token(i).replace("▁", " ")


def bracket_labelled(ids, labels):
    """The tokens as text, each run of labelled tokens inside [ ]."""
    out, inside = [], False
    for i, label in zip(ids, labels):
        if (label != -100) != inside:
            out.append("[" if not inside else "]")
            inside = not inside
        out.append(piece(i))
    return "".join(out) + ("]" if inside else "")


print(bracket_labelled(ids, labels))
print(f"{kept.sum()} of {len(ids)} tokens carry a label")
assert np.array_equal(ids, ids_list) and np.array_equal(labels[kept], ids[kept])

# %% [markdown]
# The claim, checked: the labelled tokens decode to exactly the replies, each followed by its
# `<|end|>`, and no system, user or header token is labelled.

# %%
runs = np.split(np.nonzero(kept)[0], np.nonzero(np.diff(np.nonzero(kept)[0]) > 1)[0] + 1)
replies = [m["content"] for m in chat if m["role"] == "assistant"]
assert [tok.decode(ids[run].tolist()) for run in runs] == [r + "<|end|>" for r in replies]
assert tok.decode(ids[kept].tolist()) == "3 plus 4 is 7.<|end|>6 plus 2 is 8.<|end|>"
for run in runs:                     # each reply starts right after <|assistant|>, which is unlabelled
    assert ids[run[0] - 1] == ASSISTANT and not kept[run[0] - 1] and ids[run[-1]] == END
user_or_system = np.isin(ids, [tok.token_to_id("<|user|>"), tok.token_to_id("<|system|>")])
assert not kept[user_or_system].any() and not kept[-1]           # the final <|endoftext|>

# %% [markdown]
# Why `<|end|>` is labelled: the model must learn to *stop*. Generation ends when the model
# writes `<|end|>` (a stop token, lesson 5), and it only ever writes it if training showed it
# where a reply ends. The `<|assistant|>` header, in contrast, is never the model's to write: at
# inference the template puts it in the prompt.
#
# With `last_only=True` only the last reply is labelled; DPO uses that (lesson 11), where a
# record is a prompt and one reply to judge.

# %%
_, last = encoder.encode(chat, last_only=True)
assert tok.decode(ids[last != -100].tolist()) == "6 plus 2 is 8.<|end|>"

# %% [markdown]
# ## 3. The loss counts the replies only
#
# `model.loss(ids, labels)` is the mean next-token cross-entropy of lesson 8. Position t
# predicts token t + 1 and is counted when labels[t + 1] != -100:
#
#     L = -(1/N) sum over counted t of log softmax(logits[t])[labels[t + 1]]      N = number counted
#
# We check it by hand with the base model's logits.

# %%
base = Phi3.from_pretrained(BASE)
sft_loss = float(base.loss(ids[None], labels[None]).data)
logits = base(ids[None])                                       # [1, T, V]
z = logits[0, :-1] - logits[0, :-1].max(axis=-1, keepdims=True)
log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))  # [T-1, V] log softmax
targets = labels[1:]                                           # position t predicts t + 1
counted = np.nonzero(targets != -100)[0]
by_hand = -log_probs[counted, targets[counted]].mean()
every_token = float(base.loss(ids[None], ids[None]).data)      # as pre-training would count it
print(f"SFT loss {sft_loss:.4f}, by hand {by_hand:.4f}, over {len(counted)} positions;  "
      f"the same conversation with every token labelled: {every_token:.4f}")
assert np.isclose(sft_loss, by_hand, rtol=1e-5) and len(counted) == kept.sum()

# %% [markdown]
# "Only depends on the replies" needs care. Changing a *user token* changes the logits at every
# later position (attention reads it), so the loss moves even though that token carries no label:
# the questions still shape the answers, which is the point. What the mask removes is the
# *target*: nothing pushes the model to predict the user's tokens. Two ways to see it, at the
# level of the logits:
#
# - change the logits at every position that predicts an unlabelled token, by any amount: the
#   loss does not move;
# - the gradient dL/dlogits is exactly zero there. Back-propagation starts from these numbers,
#   so those positions send nothing back to the weights.
#
# At a counted position the gradient is (softmax(logits[t]) - onehot(target)) / N.

# %%
T = len(ids)
noisy = logits.copy()
not_counted = np.setdiff1d(np.arange(T), counted)             # includes the last position
noisy[0, not_counted] += 10 * np.random.default_rng(0).standard_normal((len(not_counted), logits.shape[-1]))
assert float(causal_lm_loss(noisy, labels[None])) == float(causal_lm_loss(logits, labels[None]))

leaf = Parameter(logits.copy())
causal_lm_loss(leaf, labels[None]).backward()
grad = leaf.grad[0]                                            # [T, V]
expected = np.zeros_like(grad)
expected[counted] = np.exp(log_probs[counted])
expected[counted, targets[counted]] -= 1.0
expected /= len(counted)
assert np.allclose(grad, expected, atol=1e-7)

print(f"{'t':>3} {'token':14} {'label':>6}  {'predicts':14} {'|dL/dlogits[t]|':>16}")
for t in range(T):
    nxt = piece(labels[t + 1]) if t + 1 < T and labels[t + 1] != -100 else "-"
    print(f"{t:3d} {piece(ids[t]):14} {labels[t]:6d}  {nxt:14} {np.linalg.norm(grad[t]):16.4f}")
zero_rows = np.linalg.norm(grad, axis=-1) == 0
assert np.array_equal(np.nonzero(~zero_rows)[0], counted)

# %% [markdown]
# Note the shift by one. `<|assistant|>` carries no label, yet its row has a gradient: that
# position predicts the first word of the reply. The reply's `<|end|>` is labelled, yet its row
# is zero: it predicts the next `<|user|>` (or `<|endoftext|>`), which is not the assistant's to
# say. `pad_batch` pads batches with label -100 too, so padding is masked the same way.
#
# ## 4. A small SFT data set
#
# The report's SFT data is "highly curated high-quality data across diverse domains" (math,
# coding, reasoning, conversation, model identity, safety). Ours is one narrow skill, small
# enough to learn in seconds: single-digit additions, asked and answered in a fixed style. 81
# conversations in random order, one JSON object per line, as `[data] conversations` expects.

# %%
rng = np.random.default_rng(0)
problems = [(a, b) for a in range(1, 10) for b in range(1, 10)]
problems = [problems[i] for i in rng.permutation(len(problems))]


def question(a, b):
    return f"What is {a} plus {b}?"


def answer(a, b):
    return f"{a} plus {b} is {a + b}."


conversations = [{"messages": [{"role": "user", "content": question(a, b)},
                               {"role": "assistant", "content": answer(a, b)}]}
                 for a, b in problems]
data_file = workdir / "sft.jsonl"
data_file.write_text("".join(json.dumps(c) + "\n" for c in conversations), encoding="utf-8")
print(data_file.read_text().splitlines()[0])
print(len(conversations), "conversations")

# %% [markdown]
# What does the base model do with such a question? `reply` puts the question in the chat
# format, with the generation prompt `<|assistant|>\n`, and decodes greedily (temperature 0) for
# at most 20 tokens. It stops early only if the model writes `<|end|>`.


# %%
def reply(model, text, max_new_tokens=20):
    """(the greedy reply's text, whether the model closed it with <|end|>)."""
    prompt = tok.apply_chat_template([{"role": "user", "content": text}],
                                     add_generation_prompt=True, tokenize=True)
    out = list(generate(model, prompt, max_new_tokens, stop_token_ids=[END],
                        vocab_size=tok.vocab_size))
    return tok.decode(out), len(out) < max_new_tokens          # stopped early: it wrote <|end|>


before = {q: reply(base, q) for q in (question(3, 4), question(8, 5))}
for q, (text, ended) in before.items():
    print(f"{q!r} -> {text!r}  (wrote <|end|>: {ended})")
assert not any(ended for _, ended in before.values())

# %% [markdown]
# It continues the text as its pre-training taught it, and never stops: `<|end|>` and
# `<|assistant|>` never occurred in its pre-training data.
#
# ## 5. Fine-tuning
#
# The recipe is lesson 8's with `stage = "sft"`: the data is the conversations file, the model
# starts from the base model's weights (`init_from`), and a batch is `batch_size` whole
# conversations, padded (`seq_len` is the longest conversation kept). The Trainer holds out the
# last fifth of the file (16 conversations) and measures their loss every 10 steps. 60 steps of
# 8 conversations is about 7 passes over the 65 training conversations. The learning rate is
# lower than pre-training's: the model already knows the language, and fine-tuning should adjust
# it, not start over.

# %%
recipe = recipe_from_dict({
    "model": {"tokenizer": str(BASE), "init_from": str(BASE)},
    "data": {"conversations": str(data_file)},
    "train": {"stage": "sft", "steps": 60, "batch_size": 8, "seq_len": 64, "lr": 2e-3,
              "min_lr": 2e-4, "warmup_steps": 5, "seed": 0},
    "log": {"eval_every": 10, "eval_batches": 2, "save_every": 60},
    "output": {"dir": str(workdir / "sft"), "dtype": "float32"},
}, source="lesson 10")
trainer = Trainer(recipe)
print(trainer.objective.notes[0])
start = time.perf_counter()
trainer.run(progress=False)
seconds = time.perf_counter() - start
steps, losses = map(np.array, zip(*trainer.state["losses"]))
val_steps, val_losses = map(np.array, zip(*trainer.state["val_losses"]))
print(f"{len(steps)} steps in {seconds:.1f} s;  loss {losses[0]:.3f} -> {losses[-5:].mean():.3f} "
      f"(mean of the last 5);  held out {val_losses[0]:.3f} -> {val_losses[-1]:.3f}")
print("picture:", _plot.line_plot(
    "10_sft_loss.png", {"train (each step)": (steps, losses),
                        "held out (every 10 steps)": (val_steps, val_losses)},
    "SFT of mini-base: cross-entropy on the assistant's tokens", "step", "loss (nats per token)",
    hlines={"uniform guess ln 2112": np.log(base.config.vocab_size)}, legend="upper right"))
n_val = len(trainer.objective.batches.val)
train_problems, val_problems = problems[:-n_val], problems[-n_val:]
assert n_val == 16 and losses[-5:].mean() < 0.2 * losses[0]
sft = trainer.model

# %% [markdown]
# ## 6. After SFT
#
# The same questions, and a few more: the first three training questions and the first three
# held-out ones.

# %%
shown = [question(*p) for p in train_problems[:3] + val_problems[:3]]
for q in [question(3, 4), question(8, 5)] + shown:
    text, ended = reply(sft, q)
    print(f"{q!r:22} -> {text!r}  (wrote <|end|>: {ended})")

# %% [markdown]
# Every question, scored: is the reply in the trained format, `a plus b is N.` with the question's
# two numbers, closed by `<|end|>`? And is N the sum?

# %%
def score(model, problems):
    formatted = correct = 0
    for a, b in problems:
        text, ended = reply(model, question(a, b))
        m = re.fullmatch(rf"{a} plus {b} is (\d+)\.", text)
        formatted += bool(m) and ended
        correct += bool(m) and ended and int(m.group(1)) == a + b
    return formatted / len(problems), correct / len(problems)


fmt_train, right_train = score(sft, train_problems)
fmt_val, right_val = score(sft, val_problems)
print(f"trained-on questions: {fmt_train:.0%} in format, {right_train:.0%} correct")
print(f"held-out questions:   {fmt_val:.0%} in format, {right_val:.0%} correct")
text, ended = reply(sft, question(3, 4))
assert (3, 4) in train_problems and text == "3 plus 4 is 7." and ended
assert fmt_train == 1.0 and fmt_val == 1.0 and right_train >= 0.7

# %% [markdown]
# The format is learned completely, on the held-out questions too: copy the two numbers, write
# "is", a number, a full stop, and `<|end|>`. The sums are another matter. The base model never
# learned to add single digits in words (its textbooks do column arithmetic), so the sums are
# facts SFT has to supply, and 60 steps make the model learn most of the 65 it saw, but few of
# the 16 it did not: a narrow data set teaches its examples, not the skill behind them. The
# report's SFT data is broad for that reason.
#
# Where did the loss go? The cross-entropy of each reply token of one held-out conversation,
# before and after SFT:

# %%
a, b = val_problems[0]
v_ids, v_labels = encoder.encode(conversations[problems.index((a, b))]["messages"])


def token_losses(model):
    """-log p of each labelled token, given the tokens before it."""
    z = model(v_ids[None])[0, :-1].astype(np.float64)
    lp = z - z.max(-1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(-1, keepdims=True))
    t = np.nonzero(v_labels[1:] != -100)[0]
    return -lp[t, v_labels[1:][t]], [piece(v_labels[1:][i]) for i in t]


loss_before, names = token_losses(base)
loss_after, _ = token_losses(sft)
for n, l0, l1 in zip(names, loss_before, loss_after):
    print(f"{n:10} before {l0:7.3f}   after {l1:7.3f}")
print("picture:", _plot.line_plot(
    "10_loss_per_token.png", {"before SFT": (range(len(names)), loss_before),
                              "after SFT": (range(len(names)), loss_after)},
    f"held-out {question(a, b)!r}: loss of each reply token", "reply token",
    "-log p (nats)", log_y=True, xticks=names, legend="lower left"))
assert loss_after[-1] < 0.1 < 5 < loss_before[-1]           # <|end|>: learned, from unknown

# %% [markdown]
# ## Summary
#
# - SFT is next-token training on conversations in the chat format, with a loss mask: only the
#   assistant's replies and their closing `<|end|>` carry labels, -100 everywhere else.
# - The mask removes targets, not context: positions that predict an unlabelled token get a
#   gradient of exactly zero, while the questions still shape the logits of the answers.
# - Labelling `<|end|>` is what teaches the model to stop; before SFT the base model never did.
# - A few dozen steps on a narrow data set teach the format completely and the facts of the
#   examples mostly, but generalise little beyond them.
#
# Next (lesson 11): DPO, which learns from pairs of replies, one preferred to the other.
