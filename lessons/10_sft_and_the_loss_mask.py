# %% [markdown]
# # Lesson 10: supervised fine-tuning and the loss mask
#
# A pre-trained model continues text; it does not answer. The Phi-3 report turns phi-3-mini into
# an assistant in two stages (§2 of the report, its "Post-training" paragraph): "supervised
# finetuning (SFT) and direct preference optimization (DPO)". This lesson is the first stage;
# lesson 11 is the second.
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
# 6. the fine-tuned model's answers, and where its loss went, token by token;
# 7. copying from the prompt: induction heads, what multiple choice needs, found in the
#    shipped chat model `checkpoints/mini` and missing from mini-base and from our SFT model;
# 8. padding, and batches of conversations of about one length.

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
from tinyphi3.nn.autograd import Parameter
from tinyphi3.inference.generate import generate
from tinyphi3.nn.layers import causal_lm_loss
from tinyphi3.models.model import Phi3
from tinyphi3.tokenizers.sentencepiece_bpe import Tokenizer
from tinyphi3.train.conversations import ChatEncoder, pad_batch
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
# The same mask as a picture: one box per token, in reading order, coloured by its label. The
# small number under a box is the token's position t; `_` is the space a piece starts with
# (sentencepiece's `▁`, lesson 1).

# %%
print("picture:", _plot.token_strip(
    "10_loss_mask.png", [tok.id_to_token(i).replace("▁", "_") for i in ids], kept.astype(int),
    ["label -100: context, not in the loss", "label = the token: counted in the loss"],
    f"The loss mask of one conversation: {kept.sum()} of its {len(ids)} tokens carry a label"))

# %% [markdown]
# The claim, checked: the labelled tokens decode to exactly the replies, each followed by its
# `<|end|>`, and no system, user or header token is labelled.

# %%
runs = np.split(np.nonzero(kept)[0], np.nonzero(np.diff(np.nonzero(kept)[0]) > 1)[0] + 1)
replies = [m["content"] for m in chat if m["role"] == "assistant"]
assert [tok.decode(ids[run].tolist()) for run in runs] == [r + "<|end|>" for r in replies]
assert tok.decode(ids[kept].tolist()) == "3 plus 4 is 7.<|end|>6 plus 2 is 8.<|end|>"
for run in runs:                     # each reply starts right after <|assistant|> (unlabelled)
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
# Counted like pre-training, the loss would also ask the model to predict the system prompt and
# the user's questions.
#
# "Only depends on the replies" needs care. Changing a *user token* changes the logits at every
# later position (attention reads it), so the loss moves even though that token carries no
# label: the questions still shape the answers, which is the point. Here the question's 3
# becomes a 5:

# %%
three = int(np.nonzero(ids == tok.token_to_id("3"))[0][0])             # in "What is 3 plus 4?"
changed = ids.copy()
changed[three] = tok.token_to_id("5")
changed_loss = float(base.loss(changed[None], labels[None]).data)
user = int(np.nonzero(ids == tok.token_to_id("<|user|>"))[0][0])
question_span = slice(user + 1, user + int(np.nonzero(ids[user:] == END)[0][0]))
print(f"{tok.decode(changed[question_span].tolist())!r}: loss {changed_loss:.4f} "
      f"(was {sft_loss:.4f})")
assert not kept[three] and changed_loss != sft_loss

# %% [markdown]
# What the mask removes is the *target*: nothing pushes the model to predict the user's tokens.
# Two ways to see it, at the level of the logits:
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
noise = np.random.default_rng(0).standard_normal((len(not_counted), logits.shape[-1]))
noisy[0, not_counted] += 10 * noise
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
    nxt = tok.id_to_token(labels[t + 1]) if t + 1 < T and labels[t + 1] != -100 else "-"
    norm = np.linalg.norm(grad[t])
    print(f"{t:3d} {tok.id_to_token(ids[t]):14} {labels[t]:6d}  {nxt:14} {norm:16.4f}")
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
# It continues with text of the kind it was pre-trained on, whatever the question, and never
# stops: `<|end|>` and `<|assistant|>` never occurred in its pre-training data.
#
# ## 5. Fine-tuning
#
# The recipe is lesson 8's with `stage = "sft"`: the data is the conversations file, the model
# starts from the base model's weights (`init_from`), and a batch is `batch_size` whole
# conversations, padded (`seq_len` is the longest conversation kept). The Trainer holds out the
# last fifth of the file (16 conversations) and measures their loss every 15 steps. 150 steps
# of 8 conversations is about 18 passes over the 65 training conversations, in about ten
# seconds.

# %%
recipe = recipe_from_dict({
    "model": {"tokenizer": str(BASE), "init_from": str(BASE)},
    "data": {"conversations": str(data_file)},
    "train": {"stage": "sft", "steps": 150, "batch_size": 8, "seq_len": 64, "lr": 2e-3,
              "min_lr": 2e-4, "warmup_steps": 5, "seed": 0},
    "log": {"eval_every": 15, "eval_batches": 2, "save_every": 150},
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
                        "held out (every 15 steps)": (val_steps, val_losses)},
    "SFT of mini-base: cross-entropy on the assistant's tokens", "step", "loss (nats per token)",
    hlines={"uniform guess ln 2112": np.log(base.config.vocab_size)}, log_y=True,
    legend="lower left"))
assert len(trainer.objective.batches.val) == 16
assert losses[-5:].mean() < 0.01 * losses[0] and val_losses.min() < 0.5
early, late = val_losses[val_steps <= 50].min(), val_losses[val_steps > 50].min()
print(f"held out: best {early:.3f} in the first 50 steps, best {late:.3f} after; "
      f"train {losses[-5:].mean():.4f} at the end")
assert late > 0.5 * early                            # no real progress on held-out text after 50
assert losses[-5:].mean() < 0.1 * val_losses[-1]     # a gap of 10x and more: memorising

# %% [markdown]
# The training loss starts at 7.7 nats, a little above a uniform guess over the 2112 rows
# (7.66), and ends near 0.01. The held-out loss gets close to its best within the first fifty
# steps and then only wanders (up or down a little, by how the last batches fell), while the
# training loss keeps falling until it is ten times and more below the held-out one: the model
# is memorising its 65 conversations.
#
# ## 6. After SFT
#
# The two questions of section 4, then the first three training questions and the first three
# held-out ones:

# %%
n_val = len(trainer.objective.batches.val)
train_problems, val_problems = problems[:-n_val], problems[-n_val:]
sft = trainer.model
for a, b in [(3, 4), (8, 5)] + train_problems[:3] + val_problems[:3]:
    text, ended = reply(sft, question(a, b))
    split = "trained on" if (a, b) in train_problems else "held out"
    print(f"{question(a, b)!r:20} ({split:10}) -> {text!r}  (wrote <|end|>: {ended})")
text, ended = reply(sft, question(3, 4))
assert (3, 4) in train_problems and text == "3 plus 4 is 7." and ended

# %% [markdown]
# Every question, scored: is the reply in the trained format, `a plus b is N.` with the
# question's two numbers, closed by `<|end|>`? And is N the sum?


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
assert fmt_train == fmt_val == 1.0 and right_train >= 0.9 and right_val < 0.6

# %% [markdown]
# The format is learned completely, on the held-out questions too: copy the two numbers, write
# "is", a number, a full stop, and `<|end|>`. The sums are another matter: the model gets the
# ones it was trained on, and few of the others. The loss says the same, split into the sum's
# tokens and the rest of the reply. One padded batch of all 81 conversations gives every
# reply token's -log p:

# %%
encoded = [encoder.encode(c["messages"]) for c in conversations]
batch_ids, batch_labels = pad_batch(encoded, tok.pad_token_id)          # [81, T] each


def reply_token_losses(model):
    """-log p of every labelled token (NaN elsewhere), [81, T-1]: position t predicts t + 1."""
    z = model(batch_ids)[:, :-1].astype(np.float64)                     # [81, T-1, V]
    z -= z.max(-1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    targets = batch_labels[:, 1:]
    picked = np.take_along_axis(log_p, np.maximum(targets, 0)[..., None], -1)[..., 0]
    return np.where(targets != -100, -picked, np.nan)


def sum_positions(a, b):
    """Which of the reply's tokens spell the sum: after 'a plus b is ', before the '.'."""
    digits = np.zeros(batch_ids.shape[1] - 1, dtype=bool)
    row = problems.index((a, b))
    start = np.nonzero(batch_labels[row, 1:] != -100)[0][0]           # the reply's first token
    digits[start + 7:start + 7 + len(str(a + b))] = True      # a ' pl' 'us' ' ' b ' is' ' '
    return digits


losses_after = reply_token_losses(sft)
table = {}
for split, chosen in [("trained on", train_problems), ("held out", val_problems)]:
    rows = [problems.index(p) for p in chosen]
    on_sum = np.array([sum_positions(*p) for p in chosen])
    part = losses_after[rows]
    table[split] = (np.nansum(np.where(on_sum, part, 0), axis=1).mean(),
                    np.nansum(np.where(on_sum, 0, part), axis=1).mean())
    print(f"{split:10}  -log p(the sum) {table[split][0]:6.3f}    "
          f"-log p(the rest of the reply) {table[split][1]:6.3f}   (nats, mean per reply)")
assert table["held out"][0] > 10 * table["trained on"][0]
assert max(table["trained on"][1], table["held out"][1]) < 0.05

# %% [markdown]
# Below, one held-out conversation token by token, before and after SFT. Before, every token
# is expensive, and `<|end|>` the most, at about 21 nats: far above the uniform guess's 7.66,
# because pre-training lowered its logit at every position where it was not the next token,
# which was every position. After, what loss is left sits on the sum.

# %%
a, b = val_problems[0]
row = problems.index((a, b))
losses_before = reply_token_losses(base)
reply_at = ~np.isnan(losses_after[row])
names = [repr(piece(i)) for i in batch_labels[row, 1:][reply_at]]
for n, l0, l1 in zip(names, losses_before[row, reply_at], losses_after[row, reply_at]):
    print(f"{n:10} before {l0:7.3f}   after {l1:7.3f}")
print("picture:", _plot.line_plot(
    "10_loss_per_token.png", {"before SFT": (range(len(names)), losses_before[row, reply_at]),
                              "after SFT": (range(len(names)), losses_after[row, reply_at])},
    f"held out, {question(a, b)!r}: -log p of each reply token", "reply token",
    "-log p (nats)", xticks=names, legend="upper left"))
end_before, end_after = losses_before[row, reply_at][-1], losses_after[row, reply_at][-1]
assert names[-1] == "'<|end|>'" and end_before > 2 * np.log(base.config.vocab_size)
assert end_after < 0.01

# %% [markdown]
# ## 7. Can the model read its prompt?
#
# Our additions taught sums that live in the weights. A multiple-choice question needs one more
# skill: after the model has recalled "Veska lives in the Copper Caves", it must find which of
# the listed options says "the Copper Caves" and copy that line's letter. That is reading from
# the prompt, not recall, and a transformer does it with a pair of attention heads that Olsson
# et al. (2022, "In-context learning and induction heads") named:
#
# - a **previous-token head**, in an early layer, attends from each position t to t - 1, and so
#   writes into position t which token stood just before it;
# - an **induction head**, in a later layer, attends from the current token A to the positions
#   whose previous token was A (the first head wrote that there): the token *right after* an
#   earlier copy of A. It copies what it finds, B, to the output: after "... A B ... A" it
#   predicts B.
#
# The clearest place to watch them is a random sequence shown twice. With L tokens in a copy, a
# query at position i of the second copy has the earlier copy of its own token at i - L, and the
# token after that at i - L + 1: an induction head's attention there peaks at offset -(L - 1),
# a stripe L - 1 columns left of the diagonal. A previous-token head's peaks at offset -1.
# Nothing but the first copy tells a model what comes next in the second, so only a model with
# the circuit can predict it.
#
# **Which model.** Our SFT model above started from `checkpoints/mini-base` and saw 150 steps of
# additions. mini-base was pre-trained on web pages and textbooks whose facts can all be
# recalled from the weights: it never needed to search its context, and did not learn to; 150
# steps of sums do not teach it. The shipped chat model `checkpoints/mini` did not start from
# mini-base. Its SFT (`configs/mini-sft.toml`, whose `init_from` is
# `runs/mini-base-induction-mix/final`) started from a base trained further: a longer phase 2
# on 30,000 more textbooks, then pages of reading exercises that need the search
# (`configs/mini-base-long.toml`, `mini-base-copying.toml`, `mini-base-induction.toml`,
# `mini-base-induction-mix.toml`; its model card tells the story).
# That base is not shipped, so we look for the circuit in `checkpoints/mini`, with mini-base
# and our own SFT model beside it.
#
# To see attention weights we wrap `ForwardCall.attend`, the call every layer makes: the wrapper
# recomputes the weights from the layer's own q and k, as lesson 2 did by hand, and then lets
# the layer go on.

# %%
from unittest import mock  # noqa: E402

from tinyphi3.data import reading  # noqa: E402
from tinyphi3.models.call import ForwardCall  # noqa: E402


def attention_weights(model, ids):
    """(each layer's attention weights {layer: [H, T, T]}, the logits [1, T, V]) for ids [1, T]."""
    weights, attend = {}, ForwardCall.attend

    def recording(call, q, k, v, layer):
        g = q.shape[1] // k.shape[1]                                   # query heads per KV head
        scores = q @ np.repeat(k, g, axis=1).swapaxes(-1, -2)          # -> [1, H, T, T]
        scores = np.where(call.mask, scores * call.config.attention_scale, -np.inf)
        w = np.exp(scores - scores.max(-1, keepdims=True))
        weights[layer] = (w / w.sum(-1, keepdims=True))[0]              # [H, T, T], rows sum to 1
        return attend(call, q, k, v, layer)

    with mock.patch.object(ForwardCall, "attend", recording):
        logits = model(ids)
    return weights, logits


def repeated_sequence(rng, n_words=6):
    """A random sequence of made-up words, as ids, and the same ids again: ([1, 2L], L)."""
    once = tok.encode(" ".join(reading.made_up_word(rng) for _ in range(n_words)))
    return np.array([once + once]), len(once)


def head_scores(model, n=5, seed=2):
    """Per head [layers, H], averaged over n repeated sequences: the attention at offset -(L-1)
    in the second copy (induction) and at offset -1 everywhere (previous token); and the share
    of the second copy's tokens the model predicts (teacher-forced)."""
    rng = np.random.default_rng(seed)
    induction, previous, predicted = [], [], []
    for _ in range(n):
        ids2, L = repeated_sequence(rng)
        weights, logits = attention_weights(model, ids2)
        w = np.stack([weights[layer] for layer in sorted(weights)])   # [layers, H, T, T]
        i = np.arange(L, 2 * L)                                        # queries of the 2nd copy
        induction.append(w[:, :, i, i - L + 1].mean(-1))
        j = np.arange(1, 2 * L)
        previous.append(w[:, :, j, j - 1].mean(-1))
        guess = logits[0, L:2 * L - 1].argmax(-1)                      # predicts L + 1 .. 2L - 1
        predicted.append((guess == ids2[0, L + 1:]).mean())
    return np.mean(induction, 0), np.mean(previous, 0), float(np.mean(predicted))


chat_model = Phi3.from_pretrained(REPO / "checkpoints" / "mini")
models = {"mini-base": base, "our SFT model": sft, "mini": chat_model}
scores = {name: head_scores(model) for name, model in models.items()}
print(f"{'':14} {'best induction head':>22} {'best previous-token head':>26} "
      f"{'2nd copy predicted':>19}")
best = {}
for name, (induction, previous, predicted) in scores.items():
    best[name] = (np.unravel_index(induction.argmax(), induction.shape),
                  np.unravel_index(previous.argmax(), previous.shape))
    (li, hi), (lp, hp) = best[name]
    print(f"{name:14} {f'layer {li} head {hi}: {induction.max():.2f}':>22} "
          f"{f'layer {lp} head {hp}: {previous.max():.2f}':>26} {predicted:19.0%}")
assert scores["mini"][0].max() > 0.3 and scores["mini"][2] > 0.4
assert all(scores[name][0].max() < 0.1 and scores[name][2] < 0.1
           for name in ("mini-base", "our SFT model"))
assert all(scores[name][1].max() > 0.3 for name in models)     # previous-token heads: all three
(li, hi), (lp, hp) = best["mini"]
assert lp < li == chat_model.config.num_hidden_layers - 1    # previous-token head, then induction

# %% [markdown]
# All three models have a previous-token head: pre-training made one in each. Only mini has
# an induction head, in its last layer, above its previous-token head, and only mini
# predicts the second copy. Its attention on one repeated sequence, query by query (rows; the
# second copy starts at row L), with the best head of our SFT model beside it:

# %%
ids2, L = repeated_sequence(np.random.default_rng(7))
mini_weights, _ = attention_weights(chat_model, ids2)
sft_weights, _ = attention_weights(sft, ids2)
(ls, hs), _ = best["our SFT model"]
i = np.arange(L, 2 * L)
profile = np.array([mini_weights[li][hi][i, i + o].mean() for o in range(-L, 1)])  # o = -L .. 0
print(f"L = {L}: mini layer {li} head {hi}, mean attention of the second copy by offset "
      f"key - query: peak at {int(profile.argmax()) - L} ({profile.max():.2f}); -(L - 1) = {1 - L}")
assert int(profile.argmax()) - L == -(L - 1)
print("picture:", _plot.heatmaps(
    "10_induction_head.png",
    [(f"mini, layer {lp} head {hp}: previous token", mini_weights[lp][hp]),
     (f"mini, layer {li} head {hi}: induction", mini_weights[li][hi]),
     (f"our SFT model, layer {ls} head {hs}: its best", sft_weights[ls][hs])],
    f"Attention on {L} random tokens shown twice (the second copy starts at row {L})",
    vmax=1.0, cell=11))

# %% [markdown]
# In the left panel every row's weight sits just left of the diagonal: the previous token. In
# the middle one, the rows of the second copy put their weight on a stripe L - 1 left of the
# diagonal: each reads the token that followed its own earlier copy, which is exactly the next
# token to predict. The rows of the first copy have no earlier copy to find, and their weight
# goes elsewhere (the first token, nearby tokens). Our SFT model's most induction-like head
# (right) has no stripe. (A head that always read a fixed distance back would draw a stripe
# too, but not on every sequence: L differs from one of the five measured sequences to the
# next, and mini's head follows each.)
#
# The same skill on the chat task: lists of made-up words to repeat
# (`tinyphi3.data.reading.copy_exchange`), counting, with the true reply fed in, how many of its
# tokens each model predicts:

# %%
def copied(model, n=40, seed=0):
    """Share of the reply tokens of n lists to repeat that the model predicts (teacher-forced)."""
    rng = np.random.default_rng(seed)
    right = total = 0
    for _ in range(n):
        request, words = reading.copy_exchange(rng, shortest=5, longest=10)
        prompt = tok.apply_chat_template([{"role": "user", "content": request}],
                                         add_generation_prompt=True, tokenize=True)
        target = tok.encode(words)
        predicted = model(np.array([prompt + target]))[0, len(prompt) - 1:-1].argmax(-1)
        right, total = right + int((predicted == target).sum()), total + len(target)
    return right / total


rng = np.random.default_rng(1)
request, words = reading.copy_exchange(rng, shortest=6, longest=6)
print(repr(request))
for name, model in models.items():
    print(f"{name:13} repeats: {reply(model, request, 40)[0]!r}")
share = {name: copied(model) for name, model in models.items()}
print({name: f"{value:.0%}" for name, value in share.items()}, "of the reply tokens predicted")
assert max(share["mini-base"], share["our SFT model"]) < 0.5 < share["mini"]

# %% [markdown]
# mini-base and our SFT model write words of their world, not the ones they were given; the
# chat model copies the list. Copying a list could be done by position alone (the copy runs a
# fixed distance behind the original). Finding the option that says "the Copper Caves" cannot.
# So the chat model answers a multiple-choice question in a form built for the search it
# learned: it states the fact, says the options again with each letter *after* its option, and then
# "So it is the Copper Caves" followed by the letter. That last letter is simply the token that
# followed "the Copper Caves" a moment ago: induction attention finds it
# (`tinyphi3.data.reading.lettered_options`).
#
# The test that only reading passes: one held-out question, its options in four different
# orders. A model that guessed letters by habit would keep naming the same one; a model that
# reads follows the right option wherever it stands.

# %%
from tinyphi3.data.tasks import Item, render, task_items  # noqa: E402
from tinyphi3.evaluation.harness import parse_letter  # noqa: E402

item = task_items("knowledge", "test", n=1, seed=3)[0]
right = item.options["ABCD".index(item.answer)]
followed = 0
for shift in range(4):
    options = item.options[shift:] + item.options[:shift]
    letter = "ABCD"[options.index(right)]
    moved = Item(item.task, item.question, options, letter, letter, item.key)
    text, _ = reply(chat_model, render(moved, solved=False), 90)
    named = parse_letter(text)
    followed += named == moved.answer
    print(f"options {', '.join(options)}: the answer {right!r} is {moved.answer}; "
          f"mini says {named}")
    if shift == 0:
        print(f"  its reply: {text!r}")
print(f"the named letter followed the right option in {followed} of 4 orders")
assert followed >= 3

# %% [markdown]
# Its model card measures the whole held-out set: the letter named is the one that follows the
# stated option in the reply's own listing nearly every time, so multiple-choice accuracy is now
# close to how often the model recalls the fact at all.
#
# ## 8. Padding, and batches of one length
#
# `pad_batch` pads every conversation of a batch to the batch's longest. The padding is out of
# the loss (label -100) but not out of the work: the model computes every position of the
# [B, T] batch, padding or not. Real SFT data is not of one length. 2,000 conversations of the
# mixture `tinyphi3 data sft` writes (word problems with their working, greetings, refusals,
# questions about the creatures):

# %%
from tinyphi3.data.post_training import generate_sft  # noqa: E402
from tinyphi3.train.conversations import ExampleBatches  # noqa: E402

mixture = [encoder.encode(c["messages"]) for c in generate_sft(2000, seed=0)]
lengths = [len(ids) for ids, _ in mixture]
print(f"{len(mixture)} conversations: shortest {min(lengths)} tokens, median "
      f"{int(np.median(lengths))}, longest {max(lengths)}")


def batches_drawn(batches, n):
    """The next n batches, as lists of example lengths."""
    return [[len(ids) for ids, _ in batches.next_examples()] for _ in range(n)]


plain = batches_drawn(ExampleBatches(mixture, 16, seed=0, val_count=0), 100)
grouped = batches_drawn(ExampleBatches(mixture, 16, seed=0, val_count=0, length_groups=16,
                                       lengths=lengths), 100)
for name, drawn in (("plain random batches", plain), ("length_groups = 16", grouped)):
    computed, real = sum(max(b) * len(b) for b in drawn), sum(sum(b) for b in drawn)
    print(f"{name:21}: {computed / real:.2f} positions computed per token "
          f"(batches padded to {computed / len(drawn) / 16:.0f} tokens on average)")

# %% [markdown]
# In a random batch of 16 the longest conversation is nearly always a long one, so about half of
# what the model computes is padding. `[train] length_groups = G` (stages "sft" and "dpo") cuts
# each epoch's random order into groups of G batches, sorts each group by length, cuts it into
# its G batches again and shuffles all the batches: each batch still comes from G x 16 random
# conversations, but from ones of about the same length.

# %%
print("picture:", _plot.padded_batches(
    "10_padded_batches.png",
    [("plain random batches", plain[:4]), ("length_groups = 16", grouped[:4])],
    "Four batches of 16 conversations, as the model computes them",
    note="each row one conversation; every cell, blue or grey, is a position the model computes"))
assert sum(max(b) * 16 for b in grouped) < 0.7 * sum(max(b) * 16 for b in plain)

# %% [markdown]
# What it costs: a batch is no longer a plain random sample. Conversations of one length are often
# of one kind (greetings are short, a word problem with its working is long), and the loss is the
# mean over a batch's labelled tokens, so each token of a batch of short replies weighs more than
# it did among long ones. The shuffled order of the batches keeps the kinds alternating, and each
# epoch still reads every conversation once (`tests/test_length_groups.py`). The wording rounds
# of `docs/wording.md` use it from the twenty-fourth round on, where it nearly halves the
# positions computed on a step of conversations.
#
# ## Summary
#
# - SFT is next-token training on conversations in the chat format, with a loss mask: only the
#   assistant's replies and their closing `<|end|>` carry labels, -100 everywhere else.
# - The mask removes targets, not context: positions that predict an unlabelled token get a
#   gradient of exactly zero, while the questions still shape the logits of the answers.
# - Labelling `<|end|>` is what teaches the model to stop; before SFT the base model never did.
# - 150 small steps on a narrow data set teach the format completely, on unseen questions too,
#   and the facts of the examples, but not the facts of other questions.
# - A batch is padded to its longest example, and the padding is computed like text; batches
#   of about one length (`length_groups`) halve that work on a mixed SFT set.
# - Finding an answer among listed options is reading, not recall. Reading is done by an
#   induction head (Olsson et al. 2022) working with a previous-token head: at token A it
#   attends to the token after an earlier A and copies it. mini-base and our SFT model have the
#   previous-token head but no induction head; `checkpoints/mini`, whose base was trained further
#   on reading exercises, has one in its last layer, and its replies are shaped so that the
#   search is all the letter needs.
#
# Next (lesson 11): DPO, which learns from pairs of replies, one preferred to the other.
#
# ## Where it lives
#
# - `tinyphi3/train/conversations.py`: `ChatEncoder.encode` (ids and labels of a conversation),
#   `assistant_labels` (the loss mask, `last_only` too), `pad_batch` (padding labelled -100),
#   `load_conversations` (the `[data] conversations` file), `ExampleBatches` (the batches of an
#   epoch; `length_groups`).
# - `tinyphi3/nn/layers.py`: `causal_lm_loss` (the shifted cross-entropy that skips -100);
#   `tinyphi3/models/model.py`: `Phi3.loss`.
# - `tinyphi3/tokenizers/chat_template.py`: `apply_chat_template`.
# - `tinyphi3/train/objectives.py`: `SupervisedFineTuning` (what `stage = "sft"` selects);
#   `tinyphi3/train/loop.py`: `Trainer`; `tinyphi3/train/recipe.py`: `recipe_from_dict`.
# - `tinyphi3/inference/generate.py`: `generate` (greedy, stopping at `<|end|>`).
# - `tinyphi3/models/call.py`: `ForwardCall.attend`, the call whose q and k section 7 records.
# - `tinyphi3/data/reading.py`: `made_up_word`, `copy_exchange`, `lettered_options`, and the
#   reading exercises of `checkpoints/mini`'s base (`copying_document`, `induction_document`).
# - `configs/mini-sft.toml` and the `configs/mini-base-*.toml` before it: the shipped chat
#   model's SFT and the base it started from.
