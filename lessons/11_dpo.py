# %% [markdown]
# # Lesson 11: direct preference optimization
#
# SFT (lesson 10) shows the model good replies and makes them likely. It cannot say what a *bad*
# reply is, and it copies whatever its data does, good habits and bad. The second stage of the
# Phi-3 report's post-training (§2 of the report, its "Post-training" paragraph) is **direct
# preference optimization** (DPO, Rafailov et al. 2023), on "chat format data, reasoning, and
# responsible AI (RAI) efforts", used "to steer the model away from unwanted behavior, by using
# those outputs as 'rejected' responses".
#
# A DPO record is a prompt x and two replies: a *chosen* one y_w that is preferred to a
# *rejected* one y_l. DPO raises the probability of y_w relative to y_l, measured against a
# frozen copy of the SFT model, the *reference*, so that the model moves toward the preference
# and otherwise stays where SFT left it.
#
# 1. the loss, computed by hand and by `tinyphi3.train.dpo.dpo_loss`;
# 2. beta and label smoothing: the loss as a function of z;
# 3. an SFT model with a bad habit: most of its training replies ramble on past the answer;
# 4. the log-probability of a reply, summed over its tokens only, and what cancels in z;
# 5. the frozen reference, run without gradients;
# 6. a DPO run: rewards, margin and preference accuracy;
# 7. before and after: does the model stop after the answer?

# %%
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # tiny matrices: one BLAS thread (lesson 8)

import json
import tempfile
import time
from pathlib import Path

import numpy as np

import _plot
from tinyphi3.nn.autograd import Parameter, Tensor
from tinyphi3.inference.generate import generate
from tinyphi3.models.model import Phi3
from tinyphi3.train.conversations import ChatEncoder, pad_batch
from tinyphi3.train.dpo import dpo_batch_loss, dpo_loss, sequence_logprobs
from tinyphi3.train.loop import Trainer
from tinyphi3.train.recipe import recipe_from_dict

workdir = Path(tempfile.mkdtemp(prefix="lesson11_"))
sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))
try:
    REPO = Path(__file__).resolve().parent.parent
except NameError:                                  # run as a notebook, from lessons/
    REPO = Path.cwd().parent
BASE = REPO / "checkpoints" / "mini-base"
np.set_printoptions(precision=4, suppress=True, linewidth=110)

# %% [markdown]
# ## 1. The loss
#
# Suppose each reply has a hidden score r(x, y), and people prefer y_w to y_l with probability
# sigmoid(r(x, y_w) - r(x, y_l)) (the Bradley-Terry model). RLHF fits r with a reward model, then
# trains the policy pi by reinforcement learning to maximise r while staying close to the
# reference (a KL penalty of strength beta). The DPO paper shows that the best policy for that
# objective satisfies r(x, y) = beta log(pi(y|x) / ref(y|x)) + a term that depends on x alone,
# which cancels in the difference of two replies to the same prompt. So the preference
# likelihood can be written with the policy itself, and no reward model or RL is needed:
#
#     z = (log pi(y_w|x) - log pi(y_l|x)) - (log ref(y_w|x) - log ref(y_l|x))
#     L = -log sigmoid(beta z)                       mean over the pairs of a batch
#
# beta log(pi/ref) is the *implicit reward* of a reply; the *margin* is the chosen reward minus
# the rejected one, beta z; the *accuracy* is the share of pairs whose chosen reply has the
# higher reward. The module docstring of `tinyphi3/train/dpo.py` states the same, with label
# smoothing (section 2). First, made-up log-probabilities of three pairs, by hand and by
# `dpo_loss`:

# %%
policy_chosen, policy_rejected = np.array([-12.0, -8.5, -20.0]), np.array([-15.0, -9.0, -18.0])
ref_chosen, ref_rejected = np.array([-13.0, -8.0, -19.0]), np.array([-14.0, -8.8, -19.5])
beta = 0.1

z = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)
by_hand = -np.log(sigmoid(beta * z)).mean()
loss, stats = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta)
print("z =", z, f"  loss by hand {by_hand:.6f}, dpo_loss {float(loss):.6f}")
print({k: round(v, 4) for k, v in stats.items()})
assert np.allclose(z, [2.0, -0.3, -2.5]) and np.isclose(float(loss), by_hand, rtol=1e-12)
assert np.isclose(stats["margin"], (beta * z).mean())
assert np.isclose(stats["reward_chosen"], (beta * (policy_chosen - ref_chosen)).mean())
assert np.isclose(stats["accuracy"], 1 / 3)                    # only the first pair has z > 0

# %% [markdown]
# At the start of DPO the policy *is* the reference, so z = 0 for every pair and the loss is
# -log sigmoid(0) = ln 2, whatever the data:

# %%
zero = np.zeros(5)
loss0, stats0 = dpo_loss(zero, zero, zero, zero, beta)
print(f"policy = reference: loss {float(loss0):.6f} = ln 2 = {np.log(2):.6f}, {stats0}")
assert np.isclose(float(loss0), np.log(2)) and stats0["margin"] == 0 and stats0["accuracy"] == 0

# %% [markdown]
# The gradient says what each pair asks for. One pair's loss is -log sigmoid(beta z), and
# d/dx log sigmoid(x) = 1 - sigmoid(x) = sigmoid(-x) (the backward rule of `log_sigmoid` in
# `tinyphi3/train/dpo.py`), so
#
#     d/dz [-log sigmoid(beta z)] = -beta sigmoid(-beta z)
#
# z grows one for one with log pi(y_w|x) and falls one for one with log pi(y_l|x), and the
# batch loss is the mean over its P pairs:
#
#     dL/d log pi(y_w|x) = -beta sigmoid(-beta z) / P
#     dL/d log pi(y_l|x) = +beta sigmoid(-beta z) / P
#
# Gradient descent raises the chosen reply and lowers the rejected one, each pair with the
# weight beta sigmoid(-beta z) (before the 1/P). At the start, z = 0, every pair weighs beta / 2;
# a pair the model ranks the wrong way round by a wide margin (beta z well below 0) weighs
# nearly beta, and a pair it already ranks right by a wide margin weighs nearly 0. The engine
# agrees (lesson 6):

# %%
chosen_t, rejected_t = Parameter(policy_chosen.copy()), Parameter(policy_rejected.copy())
loss_t, _ = dpo_loss(chosen_t, rejected_t, ref_chosen, ref_rejected, beta)
loss_t.backward()
weight = beta * sigmoid(-beta * z) / len(z)
print("dL/dlog pi(chosen):  ", chosen_t.grad, "\nformula:             ", -weight)
print("per-pair weight beta sigmoid(-beta z):", beta * sigmoid(-beta * z), "for z =", z)
assert np.allclose(chosen_t.grad, -weight) and np.allclose(rejected_t.grad, weight)
assert np.argmin(weight) == 0 and np.argmax(weight) == 2          # right way round weighs least

# %% [markdown]
# ## 2. beta and label smoothing
#
# beta only rescales z: the loss at beta = 0.5 and z is the loss at beta = 0.1 and 5z. It sets
# how large a change of log-probabilities, relative to the reference, satisfies the loss: the
# loss is small once beta z is a few units, so z must reach about 30 nats at beta = 0.1 but
# only 6 at beta = 0.5. A large beta is satisfied by a small move; a small beta keeps pushing
# until the policy is far from the reference.
#
# Label smoothing eps (conservative DPO) supposes that a fraction eps of the preferences are
# the wrong way round, and mixes in the loss of the flipped pair:
#
#     L = -(1 - eps) log sigmoid(beta z) - eps log sigmoid(-beta z)
#
# With eps = 0 the loss keeps falling as z grows, so it always asks for a larger margin. With
# eps > 0 it has a minimum, where sigmoid(beta z) = 1 - eps, at z* = ln((1 - eps) / eps) / beta;
# past it the loss pushes back. Each curve below is `dpo_loss` itself, one pair at a time.

# %%
zs = np.linspace(-10.0, 50.0, 241)
curves = {}
for b, eps in [(0.1, 0.0), (0.5, 0.0), (0.1, 0.1), (0.5, 0.1)]:
    values = [float(dpo_loss(np.array([v]), np.zeros(1), np.zeros(1), np.zeros(1), b, eps)[0])
              for v in zs]                                               # one pair at a time
    curves[f"beta {b}, eps {eps}"] = (zs, values)
    formula = -(1 - eps) * np.log(sigmoid(b * zs)) - eps * np.log(sigmoid(-b * zs))
    assert np.allclose(values, formula, rtol=1e-6)
    if eps:
        z_star = np.log((1 - eps) / eps) / b
        z_min = zs[int(np.argmin(values))]
        entropy = -(1 - eps) * np.log(1 - eps) - eps * np.log(eps)
        print(f"beta {b}, eps {eps}: minimum at z = {z_min:.1f} (formula {z_star:.2f}), "
              f"loss there {min(values):.4f} (the entropy of eps: {entropy:.4f})")
        assert abs(z_min - z_star) <= 0.5 and np.isclose(min(values), entropy, atol=1e-3)
print("picture:", _plot.line_plot("11_dpo_loss_of_z.png", curves,
                                  "the DPO loss as a function of z", "z (nats)", "loss",
                                  hlines={"ln 2": np.log(2)}, legend="upper right"))
one = np.zeros(1)
at = lambda v, b: float(dpo_loss(np.array([v]), one, one, one, b)[0])
assert np.isclose(at(5.0, 0.5), at(25.0, 0.1))                           # beta only rescales z

# %% [markdown]
# ## 3. An SFT model with a bad habit
#
# DPO needs an SFT model to start from, and a behaviour to change. We fine-tune
# `checkpoints/mini-base` as in lesson 10, on the same 81 addition questions, but seven replies
# in ten ramble on after the answer: "3 plus 4 is 7. And I like this question a lot, and ...".
# The rambles hold no arithmetic (section 4 says why that matters). 60 steps this time: enough
# for the habit, and for most of the sums. The SFT model learns both endings, and copies its
# data: after most answers, it rambles on.

# %%
rng = np.random.default_rng(0)
problems = [(a, b) for a in range(1, 10) for b in range(1, 10)]
problems = [problems[i] for i in rng.permutation(len(problems))]
RAMBLES = ["And numbers are fun, and adding them is fun, and there is more and more to say.",
           "And I like this question a lot, and I could talk about it for a long time.",
           "And that is the answer, and now let me tell you more and more about it.",
           "And adding is easy when you count on your fingers, one by one."]


def question(a, b):
    return f"What is {a} plus {b}?"


def answer(a, b):
    return f"{a} plus {b} is {a + b}."


def rambling(a, b):
    return answer(a, b) + " " + RAMBLES[int(rng.integers(len(RAMBLES)))]


def write_jsonl(name, records):
    path = workdir / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


sft_file = write_jsonl("sft.jsonl", [
    {"messages": [{"role": "user", "content": question(a, b)},
                  {"role": "assistant",
                   "content": rambling(a, b) if rng.random() < 0.7 else answer(a, b)}]}
    for a, b in problems])
sft_recipe = recipe_from_dict({
    "model": {"tokenizer": str(BASE), "init_from": str(BASE)},
    "data": {"conversations": str(sft_file)},
    "train": {"stage": "sft", "steps": 60, "batch_size": 8, "seq_len": 64, "lr": 2e-3,
              "min_lr": 2e-4, "warmup_steps": 5, "seed": 0},
    "log": {"eval_every": 0, "save_every": 60},
    "output": {"dir": str(workdir / "sft"), "dtype": "float32"},
}, source="lesson 11, SFT")
start = time.perf_counter()
sft_trainer = Trainer(sft_recipe)
sft_trainer.run(progress=False)
sft_dir = sft_trainer.export()                     # the SFT model: DPO's start and its reference
tok = sft_trainer.tokenizer
END = tok.token_to_id("<|end|>")
print(f"SFT: {sft_trainer.objective.notes[0]}; 60 steps in {time.perf_counter() - start:.1f} s, "
      f"loss {sft_trainer.state['losses'][-1][1]:.3f}; exported to {sft_dir.name}/")

n_val = len(sft_trainer.objective.batches.val)
train_problems, val_problems = problems[:-n_val], problems[-n_val:]


def reply(model, a, b, max_new_tokens=24):
    prompt = tok.apply_chat_template([{"role": "user", "content": question(a, b)}],
                                     add_generation_prompt=True, tokenize=True)
    out = list(generate(model, prompt, max_new_tokens, stop_token_ids=[END],
                        vocab_size=tok.vocab_size))
    return tok.decode(out) + ("<|end|>" if len(out) < max_new_tokens else " ...")


sft_model = sft_trainer.model
examples = train_problems[:4] + val_problems[:2]
for a, b in examples:
    print(f"{question(a, b)!r:20} -> {reply(sft_model, a, b)!r}")
assert sum(reply(sft_model, a, b).endswith(" ...") for a, b in examples) >= len(examples) // 2

# %% [markdown]
# ## 4. The log-probability of a reply
#
# A preference record is `{"prompt": [...], "chosen": "...", "rejected": "..."}`; each reply is
# encoded after the prompt with `last_only=True`, so that only the reply and its `<|end|>` carry
# labels (lesson 10). log pi(y|x) is the sum of the log-probabilities of the labelled tokens,
# each given everything before it: `sequence_logprobs(logits, labels)`, [B, T, V], [B, T] -> [B].
# The prompt's tokens are context, not counted. Checked by hand on one pair:

# %%
pair_records = [{"prompt": [{"role": "user", "content": question(a, b)}],
                 "chosen": answer(a, b), "rejected": rambling(a, b)} for a, b in problems]
encoder = ChatEncoder(tok)


def encode_pair(record):
    return tuple(encoder.encode(record["prompt"] + [{"role": "assistant", "content": record[k]}],
                                last_only=True) for k in ("chosen", "rejected"))


record = pair_records[0]
(c_ids, c_labels), (r_ids, r_labels) = encode_pair(record)
ids, labels = pad_batch([(c_ids, c_labels), (r_ids, r_labels)], tok.pad_token_id)   # [2, T]
logits = sft_model(ids)                                                           # [2, T, V]
logps = sequence_logprobs(logits, labels)                                         # [2]
z64 = logits[:, :-1].astype(np.float64)
log_softmax = z64 - z64.max(-1, keepdims=True)
log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))                # [2, T-1, V]
per_token = np.where(labels[:, 1:] != -100, np.take_along_axis(
    log_softmax, np.maximum(labels[:, 1:], 0)[..., None], -1)[..., 0], 0.0)      # [2, T-1]
print(f"chosen   {record['chosen']!r}: log p = {logps[0]:.4f} (by hand {per_token[0].sum():.4f})")
print(f"rejected {record['rejected']!r}: log p = {logps[1]:.4f} (by hand {per_token[1].sum():.4f})")
assert np.allclose(logps, per_token.sum(1), atol=1e-3)

# %% [markdown]
# The two replies share their beginning, the whole answer. A causal model gives a shared token
# the same log-probability in both (it sees the same tokens before it), so in
# log pi(y_w|x) - log pi(y_l|x) the shared part cancels, and only the tokens after the point
# where the replies part count: `<|end|>` against the first word of the ramble and all that
# follows it.

# %%
first = int(np.nonzero(c_labels != -100)[0][0]) - 1         # the position predicting the reply
part = first + int(np.nonzero(c_ids[first + 1:] != r_ids[first + 1:len(c_ids)])[0][0])
print(f"{'token':>8} {'chosen':>9} {'rejected':>9}")
for t in range(first, part):                                     # the shared answer
    print(f"{tok.id_to_token(c_ids[t + 1]):>8} {per_token[0, t]:9.4f} {per_token[1, t]:9.4f}")
tail_c, tail_r = per_token[0, part:].sum(), per_token[1, part:].sum()
rejected_tail = tok.decode(r_ids[part + 1:][r_labels[part + 1:] != -100].tolist())
print(f"then the chosen reply writes {tok.id_to_token(c_ids[part + 1])}: {per_token[0, part]:.4f}")
print(f"and the rejected one {rejected_tail!r}: {tok.id_to_token(r_ids[part + 1])} "
      f"{per_token[1, part]:.4f}, the rest {tail_r - per_token[1, part]:.4f}")
assert np.allclose(per_token[0, first:part], per_token[1, first:part], atol=1e-5)
print(f"log pi(chosen) - log pi(rejected) = {logps[0] - logps[1]:.4f}; "
      f"from the tails alone {tail_c - tail_r:.4f}")
assert np.isclose(logps[0] - logps[1], tail_c - tail_r, atol=1e-3) and logps[0] < logps[1]

# %% [markdown]
# For this question the SFT model finds the rambling reply the more likely one: that is the
# habit to remove. And DPO never sees the answer itself: it is in both replies, and whatever
# the loss does to it cancels. What DPO changes is where the replies differ. All of the
# rejected tail is pushed down, not only its first word: had the rambles held correct sums, DPO
# would have taught the model to make those sums less likely. That is why our rambles hold
# none.
#
# ## 5. The frozen reference
#
# `dpo_batch_loss(policy, reference, pairs, beta, ...)` puts the chosen and rejected sequences of
# a batch through each model as one padded batch. The policy runs with the tape on (lesson 6);
# the reference runs as plain inference: its log-probabilities are constants, no graph is
# recorded for them and no gradient reaches its weights. DPO starts from two copies of the SFT
# model:

# %%
policy, reference = Phi3.from_pretrained(sft_dir), Phi3.from_pretrained(sft_dir)
pairs = [encode_pair(r) for r in pair_records[:4]]
loss, stats = dpo_batch_loss(policy, reference, pairs, beta=0.1, pad_id=tok.pad_token_id)
loss.backward()
print(f"first batch: loss {float(loss.data):.6f} (ln 2 = {np.log(2):.6f}), {stats}")
ref_logits = reference(pad_batch([c for c, _ in pairs], tok.pad_token_id)[0])
print(f"reference(ids) is a {type(ref_logits).__name__}; the loss is a {type(loss).__name__}")
assert np.isclose(float(loss.data), np.log(2), atol=1e-6) and stats["margin"] == 0
assert type(ref_logits) is np.ndarray and isinstance(loss, Tensor)
assert all(p.grad is not None and np.abs(p.grad).max() > 0 for _, p in policy.named_parameters())
assert all(p.grad is None for _, p in reference.named_parameters())

# %% [markdown]
# The reference costs one more forward pass per batch and a second copy of the weights, but no
# saved activations and no optimizer state. (Its log-probabilities never change, so a larger
# run could compute them once for the whole data set.)
#
# ## 6. The DPO run
#
# The recipe: `stage = "dpo"`, the preference file, and `init_from` the SFT model's exported
# directory, which the objective also loads, frozen, as the reference. beta = 0.1 (the default).
# The learning rate is small, 5e-5: DPO should nudge the SFT model, and every step moves every
# weight, including the ones that hold the sums. The last 16 pairs are held out, and their loss,
# margin and accuracy are measured every 5 steps.

# %%
dpo_file = write_jsonl("dpo.jsonl", pair_records)
dpo_recipe = recipe_from_dict({
    "model": {"tokenizer": str(sft_dir), "init_from": str(sft_dir)},
    "data": {"preferences": str(dpo_file)},
    "train": {"stage": "dpo", "steps": 30, "batch_size": 4, "seq_len": 64, "lr": 5e-5,
              "min_lr": 5e-6, "warmup_steps": 3, "seed": 0, "beta": 0.1, "label_smoothing": 0.0},
    "log": {"eval_every": 5, "eval_batches": 4, "save_every": 30},
    "output": {"dir": str(workdir / "dpo"), "dtype": "float32"},
}, source="lesson 11, DPO")
dpo = Trainer(dpo_recipe)
print(dpo.objective.notes[0])
start = time.perf_counter()
dpo.run(progress=False)
print(f"{dpo_recipe.train.steps} steps in {time.perf_counter() - start:.1f} s")

steps = np.array([s for s, _ in dpo.state["stats"]])
train = {k: np.array([st[k] for _, st in dpo.state["stats"]]) for k in dpo.state["stats"][0][1]}
val_steps = np.array([s for s, _ in dpo.state["val_stats"]])
val = {k: np.array([st[k] for _, st in dpo.state["val_stats"]])
       for k in dpo.state["val_stats"][0][1]}
losses = np.array([loss for _, loss in dpo.state["losses"]])
for i in [0, 4, 9, 19, 29]:
    logged = "  ".join(f"{k} {train[k][i]:+.3f}" for k in train)
    print(f"step {steps[i]:2d}: loss {losses[i]:.4f}  {logged}")
print("held out, every 5 steps:", {k: np.round(v, 3).tolist() for k, v in val.items()})
print("picture:", _plot.line_plot(
    "11_dpo_rewards.png", {"margin": (steps, train["margin"]),
                           "reward of the chosen": (steps, train["reward_chosen"]),
                           "reward of the rejected": (steps, train["reward_rejected"]),
                           "margin, held out": (val_steps, val["margin"])},
    "DPO: implicit rewards beta log(pi / ref), mean over each batch", "step",
    "reward (beta x nats)",
    legend="lower left"))
print("picture:", _plot.line_plot(
    "11_dpo_accuracy.png", {"each batch of 4 pairs": (steps, train["accuracy"]),
                            "16 held-out pairs": (val_steps, val["accuracy"])},
    "DPO: preference accuracy (chosen reward > rejected reward)", "step",
    "accuracy (share of pairs)", legend="lower right", overlap=True))
print("picture:", _plot.line_plot(
    "11_dpo_loss.png", {"each batch of 4 pairs": (steps, losses),
                        "16 held-out pairs": (val_steps, val["loss"])},
    "DPO: the loss -log sigmoid(beta z), mean over the pairs", "step",
    "loss (nats per pair)", hlines={"ln 2: policy = reference": np.log(2)},
    legend="lower left"))
assert np.isclose(losses[0], np.log(2), atol=1e-6) and train["margin"][0] == 0
assert train["margin"][-5:].mean() > 0.3 and val["margin"][-1] > 0.3 and val["accuracy"][-1] == 1.0
assert losses[-5:].mean() < 0.8 * np.log(2)
assert (train["accuracy"][1:] == 1.0).all() and (val["accuracy"] == 1.0).all()
assert train["reward_rejected"][-1] < -0.2
assert abs(train["reward_chosen"][-1]) < abs(train["reward_rejected"][-1]) / 3

# %% [markdown]
# The first loss is ln 2 and the first margin 0: the policy starts as the reference. (So the
# first accuracy is 0: the two rewards tie, and a tie is not a win.) From the first update on,
# the chosen reply wins in every batch and in every held-out pair (the wide blue line lies under
# the red one), and the margin grows. It grows mostly
# because the rejected replies become less likely; the chosen ones gain far less. (In many DPO
# runs the chosen reward falls too, only more slowly than the rejected one: the loss asks for
# the difference, nothing else.) The held-out pairs, whose questions DPO never saw, follow: the
# habit is the same on every question.
#
# The reference stayed frozen: its weights are still the SFT model's.

# %%
assert all(np.array_equal(p.data, sft_model.params[n])
           for n, p in dpo.objective.reference.named_parameters())

# %% [markdown]
# ## 7. Before and after
#
# The question DPO was about: after the correct answer, does the model write `<|end|>`? Its
# probability, p(`<|end|>` | the question, "a plus b is N."), for every question, from the SFT
# model and from the DPO model:

# %%
answered = [encoder.encode([{"role": "user", "content": question(a, b)},
                            {"role": "assistant", "content": answer(a, b)}], last_only=True)
            for a, b in problems]
batch_ids, batch_labels = pad_batch(answered, tok.pad_token_id)            # [81, T]


def greedy_check(model):
    """Per question: p(<|end|> right after the answer), p(the answer), and whether greedy
    decoding writes the answer and then stops: is each label the most likely token there?"""
    logits = model(batch_ids)[:, :-1, :tok.vocab_size].astype(np.float64)   # [81, T-1, V]
    targets = batch_labels[:, 1:]
    log_p = logits - logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    picked = np.take_along_axis(log_p, np.maximum(targets, 0)[..., None], -1)[..., 0]
    hit = (logits.argmax(-1) == targets) | (targets == -100)                 # [81, T-1]
    at_end, in_answer = targets == END, (targets != -100) & (targets != END)
    right = np.array([hit[i, in_answer[i]].all() for i in range(len(targets))])
    return {"p_end": np.exp(picked[at_end]), "p_answer": np.exp((picked * in_answer).sum(1)),
            "right": right, "stops": right & hit[at_end]}


before, after = greedy_check(sft_model), greedy_check(dpo.model)
is_val = np.array([p in val_problems for p in problems])
for name, r in [("SFT", before), ("DPO", after)]:
    print(f"{name}: p(<|end|>) trained-on {r['p_end'][~is_val].mean():.3f}, held out "
          f"{r['p_end'][is_val].mean():.3f};  greedy writes the right answer {r['right'].sum()} "
          f"of 81, the right answer and stops {r['stops'].sum()}")
print(f"log p(<|end|>) after {answer(*problems[0])!r}: SFT {np.log(before['p_end'][0]):.3f}, "
      f"DPO {np.log(after['p_end'][0]):.3f}")
print("picture:", _plot.bar_chart("11_p_end.png", {
    "SFT, trained-on": before["p_end"][~is_val].mean(),
    "SFT, held out": before["p_end"][is_val].mean(),
    "DPO, trained-on": after["p_end"][~is_val].mean(),
    "DPO, held out": after["p_end"][is_val].mean()},
    "p(<|end|> right after the answer), mean over the questions"))
assert (after["p_end"] > before["p_end"]).all()
assert after["p_end"].min() > 0.5 > before["p_end"].mean()
assert after["stops"].sum() == after["right"].sum() > 2 * before["stops"].sum()

# %% [markdown]
# The ending changed everywhere: `<|end|>` went from the less likely ending to a near certainty
# after every answer, on held-out questions too, and greedy decoding now stops after every
# answer it gets right. The sums did not improve, and a few got worse. DPO does not hold the
# shared answer in place: it is absent from z, so nothing in the loss keeps it where it was,
# and the weights that moved for the ending move it too. The questions whose answer changed,
# with the probability of the whole right answer under each model:

# %%
lost = np.nonzero(before["right"] & ~after["right"])[0]
gained = np.nonzero(~before["right"] & after["right"])[0]
for i in list(lost) + list(gained):
    print(f"{question(*problems[i])!r:20} SFT {before['p_answer'][i]:.2f} -> "
          f"DPO {after['p_answer'][i]:.2f}   ({'lost' if i in lost else 'gained'})")
print(f"p(the right answer), mean over the 81 questions: SFT {before['p_answer'].mean():.3f}, "
      f"DPO {after['p_answer'].mean():.3f}")
assert len(lost) - len(gained) <= 8 and (before["p_answer"][lost] < 0.5).all()
assert abs(after["p_answer"].mean() - before["p_answer"].mean()) < 0.05

# %% [markdown]
# On average the probability of the right answer hardly moved. The answers that flipped were
# ones the SFT model gave with less than even odds; a small drift was enough to let another
# number overtake them. A small learning rate and few steps, as here, keep the drift small;
# some variants of DPO also add the SFT loss of the chosen replies to the DPO loss, which holds
# the shared content where SFT put it.

# %% [markdown]
# "At each position the reply's token is the most likely one" is exactly what greedy decoding
# needs to write that reply, so these counts are greedy decoding's. The same questions as in
# section 3, now generated:

# %%
for a, b in examples:
    i = problems.index((a, b))
    text = reply(dpo.model, a, b)
    print(f"{question(a, b)!r:20} -> {text!r}")
    assert (text == answer(a, b) + "<|end|>") == after["stops"][i]
    assert (reply(sft_model, a, b) == answer(a, b) + "<|end|>") == before["stops"][i]

# %% [markdown]
# ## Summary
#
# - DPO learns from pairs: for a prompt, a chosen and a rejected reply. Its loss,
#   -log sigmoid(beta z), compares the policy's log-probability ratio of the two replies with the
#   frozen reference's; at the start z = 0 and the loss is ln 2.
# - A reply's log-probability is summed over its own tokens; what two replies share cancels in
#   z, and everything in the rejected reply after the point where they part is pushed down.
# - beta sets how large a move from the reference satisfies the loss; label smoothing eps gives
#   the loss a minimum at z* = ln((1 - eps) / eps) / beta instead of pushing forever.
# - The reference runs without a tape and gets no gradient; it is the SFT model, unchanged.
# - 30 small steps on our pairs raise the margin and the preference accuracy, on held-out pairs
#   too, and make the model stop after the answer instead of rambling on. The shared answer is
#   not protected: a few sums the SFT model knew only narrowly flip.
#
# ## Where it lives
#
# - `tinyphi3/train/dpo.py`: `dpo_loss` (z, the loss with label smoothing, rewards, margin,
#   accuracy), `log_sigmoid` (and its backward rule, sigmoid(-x)), `sequence_logprobs` (log p
#   of a reply's labelled tokens), `dpo_batch_loss` (policy with the tape, reference without;
#   `sft_weight`, the RPO term that `configs/mini-dpo.toml` uses).
# - `tinyphi3/train/conversations.py`: `ChatEncoder.encode(..., last_only=True)`, `pad_batch`,
#   `load_preferences` (the `[data] preferences` file).
# - `tinyphi3/train/objectives.py`: `PreferenceOptimization` (what `stage = "dpo"` selects: the
#   frozen reference loaded from `init_from`, the held-out pairs' loss and statistics);
#   `tinyphi3/train/loop.py`: `Trainer`, and `Trainer.export` for the SFT model.
# - `tinyphi3/data/post_training.py`: `generate_dpo`, the preference pairs of `checkpoints/mini`
#   (a rambling reply among their rejected ones, `_rambling_pair`).
