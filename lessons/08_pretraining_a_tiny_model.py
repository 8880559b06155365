# %% [markdown]
# # Lesson 8: pre-training a tiny model
#
# phi-3-mini was pre-trained on 3.3 trillion tokens (report §2): show the model a stretch of
# text, ask it at every position for the next token, measure how surprised it was
# (cross-entropy), and move every weight a little to be less surprised next time. Repeat.
# Nothing else happens in pre-training; the report's innovation is in *what* text it reads
# (lesson 7).
#
# This lesson runs that loop at toy scale, from nothing to a falling loss in well under a minute:
#
# 1. a small corpus: synthetic textbooks and a few web pages;
# 2. a tokenizer trained on it, and token shards;
# 3. a tiny Phi-3 (hidden size 64, 2 layers) whose first loss is a uniform guess;
# 4. the pieces of a training step: tokens per step, the learning-rate schedule, the loop itself
#    written out by hand, gradient accumulation and gradient clipping;
# 5. the same loop as `tinyphi3.train.Trainer` runs it, for 300 steps: the loss curve, train and
#    held out;
# 6. text generated before and after.

# %%
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # before NumPy loads: see the note below

import tempfile
import time
from pathlib import Path

import numpy as np

import _plot
from tinyphi3.data.shards import TokenStream, open_split, read_meta, val_batches, write_shards
from tinyphi3.data.textbooks import generate_textbooks
from tinyphi3.data.web import generate_web
from tinyphi3.inference.generate import generate
from tinyphi3.models.model import Phi3
from tinyphi3.tokenizers.train_sentencepiece import train_tokenizer
from tinyphi3.train.loop import Trainer
from tinyphi3.train.optim import AdamW, clip_grad_norm, cosine_lr
from tinyphi3.train.recipe import recipe_from_dict

workdir = Path(tempfile.mkdtemp(prefix="lesson08_"))
rng = np.random.default_rng(0)

# %% [markdown]
# A note on speed: the matrices of a tiny model are small (64 x 128 and the like). Splitting
# each product over several BLAS threads costs more in coordination than it saves, and on a busy
# machine the threads wait for each other: on a loaded two-core machine, one thread made a
# training step about ten times faster. The line above asks OpenBLAS for one thread unless you have set
# `OPENBLAS_NUM_THREADS` yourself. Large models want the threads.
#
# ## 1. A small corpus
#
# 400 synthetic textbook documents (lesson 7: arithmetic, units, simple reasoning, and the facts
# of a small made-up world of creatures) and 60 web pages of the two kinds the phase-1 filter
# keeps in plenty, explanatory and narrative. About 80,000 words.

# %%
books = list(generate_textbooks(400, seed=0))
web = [p for p in generate_web(300, seed=0) if p["kind"] in ("educational", "narrative")][:60]
documents = [{"text": b, "kind": "textbook"} for b in books] + web
documents = [documents[i] for i in rng.permutation(len(documents))]      # mixed, not in blocks
n_words = sum(len(d["text"].split()) for d in documents)
print(f"{len(books)} textbooks + {len(web)} web pages = {len(documents)} documents, {n_words:,} words")
print(books[3][:420], "...")
assert len(web) == 60 and n_words > 50_000

# %% [markdown]
# ## 2. Tokenizer and shards
#
# A SentencePiece BPE tokenizer as in lesson 1, with a base vocabulary of 512 (3 control pieces,
# 256 byte pieces, 253 learned merges) plus Phi-3's 11 added tokens. `write_shards` (lesson 7)
# turns the documents into one long stream of token ids with `<|endoftext|>` between documents,
# and holds out one document in twenty for validation.

# %%
corpus = workdir / "corpus.txt"
corpus.write_text("\n".join(d["text"] for d in documents), encoding="utf-8")
tok = train_tokenizer([corpus], workdir / "tokenizer", vocab_size=512)
sentence = "A spider has 8 legs."
pieces = [tok.id_to_token(i) for i in tok.encode(sentence)]
print(f"vocabulary {tok.vocab_size}; {sentence!r} -> {pieces}")

meta = write_shards(documents, tok, workdir / "shards", val_fraction=0.05, source="lesson 8")
n_train, n_val = meta["splits"]["train"]["tokens"], meta["splits"]["val"]["tokens"]
print(f"train: {meta['splits']['train']['documents']} documents, {n_train:,} tokens;  "
      f"held out: {meta['splits']['val']['documents']} documents, {n_val:,} tokens")
assert 500 <= tok.vocab_size <= 600 and n_train > 150_000

# %% [markdown]
# ## 3. The recipe and the model
#
# A training run is described by a *recipe* (the same keys as the TOML files in `configs/`):
# which model, which data, and how to train. The model is the "tiny" preset: the real Phi-3
# block, with hidden size 64, 2 layers of 4 heads, MLP size 128. Its vocabulary is the
# tokenizer's rounded up to a multiple of 64, as Phi-3 pads 32011 tokens to 32064 rows.

# %%
recipe = recipe_from_dict({
    "model": {"preset": "tiny", "tokenizer": str(workdir / "tokenizer")},
    "data": {"shards": str(workdir / "shards")},
    "train": {"steps": 300, "batch_size": 8, "seq_len": 64, "grad_accum": 1, "lr": 1e-2,
              "min_lr": 1e-3, "warmup_steps": 30, "weight_decay": 0.1, "clip": 1.0, "seed": 0},
    "log": {"eval_every": 25, "eval_batches": 4, "save_every": 300},
    "output": {"dir": str(workdir / "run")},
}, source="lesson 8")
t = recipe.train
config = recipe.model_config(tok.vocab_size)
model = Phi3(config, seed=t.seed)
print(f"hidden {config.hidden_size}, layers {config.num_hidden_layers}, heads "
      f"{config.num_attention_heads}, vocabulary {config.vocab_size} rows; "
      f"{model.num_parameters():,} parameters")
assert config.vocab_size == 576 and config.hidden_size == 64 and config.num_hidden_layers == 2

# %% [markdown]
# Before any training, the weights are small random numbers (std 0.02), so the logits are all
# nearly equal and the model spreads its bet evenly over the 576 rows. Its cross-entropy is then
# that of a uniform guess, ln 576 = 6.36 nats per token. Every lower number is learned.
#
# A greedy continuation of a textbook-style prompt, before training:

# %%
prompts = ["Animals and their legs\n\nEvery creature of the land is", "A spider has"]


def continue_text(model, prompt, n=24):
    ids = tok.encode(prompt)
    return tok.decode(list(generate(model, ids, max_new_tokens=n, tokenizer=tok)))


before = {p: continue_text(model, p) for p in prompts}
for p, text in before.items():
    print(f"{p!r} -> {text!r}")

# %% [markdown]
# ## 4. One training step, piece by piece
#
# **Tokens per step.** A batch is B = 8 windows of T = 64 token ids, cut from the training
# stream. Each window gives 63 predictions (position t predicts id t + 1). With
# `grad_accum` micro-batches per step (1 here), one optimizer step learns from
# B x T x grad_accum = 512 tokens, and 300 steps from 153,600: less than one pass over our
# training tokens. phi-3-mini's 3.3 trillion are twenty million times more.

# %%
tokens_per_step = t.batch_size * t.seq_len * t.grad_accum
print(f"{tokens_per_step} tokens per step; {t.steps} steps = {tokens_per_step * t.steps:,} tokens "
      f"= {tokens_per_step * t.steps / n_train:.2f} epochs of the training split; "
      f"phi-3-mini read {3.3e12 / (tokens_per_step * t.steps):,.0f} times more")

# %% [markdown]
# **The learning-rate schedule.** AdamW (Loshchilov & Hutter 2019) moves each weight by about
# lr per step, whatever the gradient's scale. At the start the gradients point in unreliable
# directions and Adam's moment estimates rest on a few samples, so the rate *warms up*
# linearly from lr/30 to its peak over the first 30 steps. It then falls along half a cosine
# to min_lr, so the last steps make small, careful moves:
#
#     lr(step) = max_lr (step + 1) / warmup                                    during warm-up
#     lr(step) = min_lr + (max_lr - min_lr) (1 + cos(pi * progress)) / 2      after it

# %%
schedule = [cosine_lr(s, t.lr, t.min_lr, t.warmup_steps, t.steps) for s in range(t.steps)]
print("lr at steps 0, 29, 150, 299:", [f"{schedule[s]:.5f}" for s in (0, 29, 150, 299)])
print("picture:", _plot.line_plot("08_learning_rate.png", {"lr": (range(t.steps), schedule)},
                                  "warm-up then cosine decay", "step", "learning rate",
                                  hlines={"min_lr": t.min_lr}, legend="upper right"))
assert np.isclose(schedule[t.warmup_steps - 1], t.lr) and np.isclose(max(schedule), t.lr)
assert abs(schedule[-1] - t.min_lr) < 1e-5 and all(np.diff(schedule[t.warmup_steps:]) <= 0)

# %% [markdown]
# **The loop, by hand.** Here is a whole training step, run for the 30 steps of the warm-up. It
# is exactly what `Trainer.step` does (`tinyphi3/train/loop.py`); the Trainer adds evaluation,
# checkpoints and resuming around it.

# %%
optimizer = AdamW(model.named_parameters(), lr=t.lr, betas=(t.beta1, t.beta2),
                  weight_decay=t.weight_decay)
stream = TokenStream(recipe.data_shards, "train", t.batch_size, t.seq_len, seed=t.seed,
                     tokenizer=tok)
params = [p for _, p in model.named_parameters()]
by_hand, norms = [], []
for step in range(t.warmup_steps):
    model.zero_grad()                                   # .grad accumulates: start from nothing
    loss_sum = 0.0
    for _ in range(t.grad_accum):
        x, y = stream.next_batch()                      # int64 [B, T] each; y = x, shifted inside
        loss = model.loss(x, y)                         # mean cross-entropy of B x (T-1) predictions
        (loss * (1.0 / t.grad_accum)).backward()        # adds this micro-batch's share to .grad
        loss_sum += float(loss.data) / t.grad_accum
    norm = clip_grad_norm(params, t.clip)               # global L2 norm, measured before clipping
    lr = cosine_lr(step, t.lr, t.min_lr, t.warmup_steps, t.steps)
    optimizer.step(lr)                                  # AdamW: w -= lr * (m_hat / sqrt(v_hat) + wd w)
    by_hand.append(loss_sum)
    norms.append(norm)
    if step % 5 == 0 or step == t.warmup_steps - 1:
        after = np.sqrt(sum(float((p.grad ** 2).sum()) for p in params))
        print(f"step {step + 1:2d}: loss {loss_sum:.4f}   |grad| {norm:.3f} -> {after:.3f}   lr {lr:.5f}")
        assert after <= t.clip * (1 + 1e-5)
n_clipped = sum(n > t.clip for n in norms)
print(f"{n_clipped} of {len(norms)} steps clipped; largest norm {max(norms):.2f}")
assert abs(by_hand[0] - np.log(config.vocab_size)) < 0.05      # the uniform guess, ln 576
assert by_hand[-1] < by_hand[0] - 1.0 and n_clipped >= 5

# %% [markdown]
# **Gradient clipping.** `clip_grad_norm` treats all the gradients as one long vector; when its
# length exceeds `clip` (1.0), every gradient is scaled down by the same factor, so the direction
# is kept and only the step is shortened. It returns the length before clipping. It guards
# against the batch whose gradient is much larger than usual, which would otherwise throw the
# weights far, before Adam's slowly-updated second moment has adapted to it. Above, the gradient
# of the random model is just under 1; as the loss starts to fall it grows past 1 and clipping
# starts to act.
#
# **Gradient accumulation.** When a batch does not fit in memory, split it into micro-batches,
# run `backward()` on each loss divided by their number, and step once: `.grad` sums the pieces
# (lesson 6). Because every window counts the same number of predictions, the mean of the
# micro-batch means is the mean over the whole batch, and the gradient is the same. Checked on a
# held-out batch, one batch of 8 against two micro-batches of 4:

# %%
x8, y8 = next(val_batches(recipe.data_shards, 8, t.seq_len, max_batches=1, tokenizer=tok))
model.zero_grad()
model.loss(x8, y8).backward()
whole = {n: p.grad.copy() for n, p in model.named_parameters()}
model.zero_grad()
for half in (slice(0, 4), slice(4, 8)):
    (model.loss(x8[half], y8[half]) * 0.5).backward()
worst = max(np.linalg.norm(p.grad - whole[n]) / np.linalg.norm(whole[n])
            for n, p in model.named_parameters())
print(f"one batch of 8 vs 2 micro-batches of 4: largest relative difference {worst:.1e}")
assert worst < 1e-4
model.zero_grad()

# %% [markdown]
# ## 5. The training run
#
# The Trainer builds the same model from the same seed, reads the same stream, and runs the
# same step, 300 times. Every 25 steps it measures the loss on the first 4 held-out batches
# (inference only, no graph recorded). Its first 30 losses are the 30 we computed by hand.

# %%
trainer = Trainer(recipe)
start = time.perf_counter()
trainer.run(progress=False)
seconds = time.perf_counter() - start
steps, losses = map(np.array, zip(*trainer.state["losses"]))
val_steps, val_losses = map(np.array, zip(*trainer.state["val_losses"]))
print(f"{t.steps} steps in {seconds:.1f} s ({trainer.state['tokens'] / seconds:,.0f} tokens/s)")
print("first losses, Trainer:", np.round(losses[:6], 4))
print("first losses, by hand:", np.round(by_hand[:6], 4))
assert np.allclose(losses[:t.warmup_steps], by_hand, rtol=1e-6)
assert trainer.state["tokens"] == tokens_per_step * t.steps

# %% [markdown]
# Two references for the loss. A uniform guess scores ln 576 = 6.36. A model that ignores the
# context and always predicts each token with its frequency in the training split (a *unigram*
# model) scores the cross-entropy below on the same held-out windows; to beat it, a model must
# read the tokens before the one it predicts.

# %%
shards_meta = read_meta(recipe.data_shards, tok)
train_ids = np.concatenate([np.asarray(a) for a in open_split(recipe.data_shards, "train", shards_meta)])
counts = np.bincount(train_ids, minlength=config.vocab_size) + 1.0      # add-one smoothing
log_p = np.log(counts / counts.sum())
targets = np.concatenate([x[:, 1:].ravel() for x, _ in val_batches(
    recipe.data_shards, t.batch_size, t.seq_len, max_batches=recipe.log.eval_batches, tokenizer=tok)])
unigram = -log_p[targets].mean()
print(f"uniform guess {np.log(config.vocab_size):.3f}, unigram {unigram:.3f}; "
      f"held-out loss after {t.steps} steps {val_losses[-1]:.3f}")
print("picture:", _plot.line_plot(
    "08_loss.png", {"train (each step)": (steps, losses), "held out (every 25 steps)": (val_steps, val_losses)},
    "pre-training a tiny Phi-3: cross-entropy per token", "step", "loss (nats per token)",
    hlines={"uniform guess ln 576": np.log(config.vocab_size), "unigram, no context": unigram},
    legend="lower left"))
print(f"mean of the first 3 losses {losses[:3].mean():.3f}, of the last 10 {losses[-10:].mean():.3f}")
assert losses[-10:].mean() < 0.6 * losses[:3].mean()
assert val_losses[-1] < unigram - 1.0 and val_losses[-1] < val_losses[0] - 1.0
assert val_losses[-1] - losses[-25:].mean() < 0.5        # held out close to train: no memorising
crossing = int(steps[np.argmax(losses < unigram)])
print(f"the training loss first falls below the unigram line at step {crossing}")
assert crossing < 50

# %% [markdown]
# The loss falls fast while the model learns which tokens are common and which follow which,
# crosses the unigram line within the first fifty steps, and keeps falling as the learning
# rate decays. The held-out loss follows the training loss closely: the model has read less than
# one epoch, so every batch was new to it, and it has not had the chance to memorise anything.
#
# ## 6. Text, before and after
#
# Greedy continuations of the same prompts by the trained model (the Trainer's). Do not expect
# much from 156,000 parameters and 154,000 tokens, but compare with the random model's output.

# %%
for p in prompts:
    print(f"prompt {p!r}")
    print(f"  before: {before[p]!r}")
    print(f"  after:  {continue_text(trainer.model, p)!r}")

# %% [markdown]
# ## Summary
#
# - Pre-training is one loop: a batch of token windows, the mean next-token cross-entropy,
#   `backward()`, clip the global gradient norm, an AdamW step at the scheduled learning rate.
# - Tokens per step = batch size x sequence length x accumulation steps; accumulating
#   micro-batches (each loss divided by their number) gives the gradient of the whole batch.
# - Warm-up keeps the first, unreliable steps small; cosine decay makes the last steps careful.
# - A tiny Phi-3 starts at the uniform guess (ln V) and, in 300 steps of 512 tokens, falls well
#   below what token frequencies alone can reach, on held-out text as on training text.
#
# The report's runs are this loop at scale: 3.3T tokens in bfloat16 for phi-3-mini, in two data
# phases (lesson 7), then post-training for chat and safety.
