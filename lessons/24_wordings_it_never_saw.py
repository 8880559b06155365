# %% [markdown]
# # Lesson 24: Wordings the model never saw
#
# The Phi-3 report's claim is about data: a small model trained on well-chosen data "punches
# above its weight". Every held-out test in the earlier lessons held out *values*: new numbers,
# new names, new creatures, in the same sentences as training. A chat model meets a user, and a
# user picks the sentence. This lesson makes the wording itself a held-out axis, the way
# `tinyphi3 eval --task wording` measures the chat model:
#
# 1. frames: a request as a sentence with slots, and the split by whole frames;
# 2. proving that no held-out frame reaches the training data (and that the proof can fail);
# 3. judging replies by stated rules, and saying why a sum is wrong;
# 4. the shipped chat model `checkpoints/mini` on sums in wordings it never saw;
# 5. more train wordings from a grammar, and a rule that keeps them away from the test;
# 6. the same for greetings, thanks, questions about the model, outside requests and memory.
#
# Pictures go to `lesson_outputs/`. Everything runs in well under a minute on one CPU core.

# %%
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # one BLAS thread (lesson 8)

import collections
import re
from pathlib import Path

import numpy as np

import _plot
import tinyphi3
from tinyphi3.data import chat_frames, sum_frames, wordings, world
from tinyphi3.data.post_training import generate_sft
from tinyphi3.evaluation.wording import MISREADS, judge, reply
from tinyphi3.tokenizers import load_tokenizer

MINI = Path(__file__).resolve().parent.parent / "checkpoints" / "mini"

# %% [markdown]
# ## 1. Frames, and a split by whole frames
#
# A **frame** is a request with slots: `"What's {a} added to {b}?"`. The data of
# `tinyphi3.data.wordings` keeps one list of frames per family of requests (sums, differences,
# requests outside the model's world, harm in free words, greetings ...). Every fourth frame of
# each list is **held out**: no training conversation uses it, and the evaluation asks only in
# those. A held-out frame is a new sentence, not a new number in an old one.

# %%
train = world.frames_of(wordings.SUM_CORES, "train")
held = world.frames_of(wordings.SUM_CORES, "test")
print(f"{len(wordings.SUM_CORES)} sum frames: {len(train)} train, {len(held)} held out")
for frame in held[:6]:
    print("   held out:", frame)
assert not set(train) & set(held)
assert len(held) == len(wordings.SUM_CORES) // 4

# %% [markdown]
# A request is a frame filled with a calculation of the train split, sometimes wrapped in a lead
# and a tail ("Hey, ... Thanks!"), as people write:

# %%
rng = np.random.default_rng(0)
for family in ("sum", "difference", "outside", "greeting"):
    messages, expected = wordings.exchange(family, "train", rng)
    print(f"{family:10s} {messages[0]['content']!r}")

# %% [markdown]
# ## 2. No held-out frame in the training data
#
# A claim of "held out" is only as good as the check behind it. The check here turns every
# held-out frame into a regular expression (a number for `{a}`, a word for `{things}`), allows
# any lead and tail, and matches it against the *whole* user turn: `"{a} + {b}"` is held out
# while `"What is {a} + {b}?"` is trained, so a search inside the turn would flag every train sum.

# %%
SLOT = {"a": r"\d+", "b": r"\d+", "things": r"[a-z]+"}


def frame_regex(frame: str) -> str:
    pieces = re.split(r"\{(\w+)\}", frame)     # text, slot, text, slot, ..., text
    return "".join(re.escape(p) if i % 2 == 0 else SLOT[p] for i, p in enumerate(pieces))


def any_of(regexes) -> str:
    return "(?:" + "|".join(regexes) + ")"


leads, tails = any_of(map(re.escape, wordings.LEADS)), any_of(map(re.escape, wordings.TAILS))
held_frames = [f for cores in (wordings.SUM_CORES, wordings.DIFFERENCE_CORES)
               for f in world.frames_of(cores, "test")]
held_out = re.compile(leads + "?" + any_of(map(frame_regex, held_frames)) + tails + "?",
                      re.IGNORECASE)


def leaks(conversations) -> list:
    return [m["content"] for messages in conversations for m in messages
            if m["role"] == "user" and held_out.fullmatch(m["content"])]


sft = [r["messages"] for r in generate_sft(3000, seed=0, sum_frames=0.1)]
print("held-out sum wordings in 3,000 SFT conversations:", len(leaks(sft)))
assert not leaks(sft)

# %% [markdown]
# A check that finds nothing proves little unless it can find something. The negative control:
# conversations drawn from the held-out frames must all be flagged.

# %%
for family in ("sum", "difference"):
    test = [m for m, _ in wordings.conversations(family, "test", 100, seed=0)]
    print(f"{family:10s} held-out conversations flagged: {len(leaks(test))} of {len(test)}")
    assert len(leaks(test)) == len(test)

# %% [markdown]
# ## 3. Judged by rules
#
# A chat reply is free text, so each family has a stated rule (`tinyphi3.evaluation.wording`):
# a sum is right when the last number of the reply is the result; a request outside the world
# is *graceful* when every sentence belongs to the short decline that names the model's limits,
# *broken* when it is neither that nor a refusal. For a wrong sum the rule also says **why**, from
# the reply's first calculation "x op y":

# %%
expected = {"answer": "130", "operands": (46, "+", 84)}
for said in (world.column_solution(46, "+", 84), world.column_solution(84, "+", 84),
             world.column_solution(84, "-", 46), "Hello! How can I help?"):
    verdict = judge("sum", said, expected)
    print(f"{said[:60]!r:64s} -> {'right' if verdict['ok'] else verdict['misread']}")
assert judge("sum", world.column_solution(84, "+", 84), expected)["misread"] == "one number twice"

# %% [markdown]
# ## 4. The shipped chat model on wordings it never saw
#
# `checkpoints/mini` answers each held-out request greedily, in a fresh chat. Its held-out
# tables (lesson 9) vary the numbers, not the sentence. Here the sentence is new.

# %%
model = tinyphi3.Phi3.from_pretrained(MINI)
tok = load_tokenizer(MINI)
N = 20
reasons = {}
for family in ("sum", "difference"):
    counts = collections.Counter()
    for i, (messages, expected) in enumerate(wordings.conversations(family, "test", N, seed=0)):
        said = reply(model, tok, messages[:-1], max_new_tokens=70)
        verdict = judge(family, said, expected)
        counts["right" if verdict["ok"] else verdict["misread"]] += 1
        if i < 3:
            print(f"{messages[0]['content']!r}\n    -> {said[:90]!r}")
    reasons[family] = counts
    print(f"{family}: {counts['right']} of {N} right; wrong: "
          f"{ {k: v for k, v in counts.items() if k != 'right'} }\n")
    assert sum(counts.values()) == N and set(counts) <= {"right", *MISREADS}

print("picture:", _plot.grouped_bars(
    "24_why_sums_fail.png", {why: {f: reasons[f][why] for f in reasons}
                         for why in ("right", *MISREADS)
                         if why == "right" or any(reasons[f][why] for f in reasons)},
    f"checkpoints/mini on {N} held-out wordings per family: right, or why not",
    ylabel="replies"))

# %% [markdown]
# The reasons point at the data, not at the column method. A model that read 36 train frames
# learns where each frame puts its numbers and which words mean "minus"; in a new sentence it
# copies the wrong number or picks the operation by a word it knows. (`docs/wording.md` follows
# 24 rounds of data changes, on larger models too. The wrong sums of its widest chat model before
# DPO were one number written twice or the wrong operation in 63 of 74, a slip in the columns
# in 1.)
#
# ## 5. More train wordings, kept away from the test
#
# One answer in the spirit of the report: many more train frames, so that no single position
# of the numbers is the rule. `tinyphi3.data.sum_frames` builds about 2,400 from parts: a
# question or an order around "{a} plus {b}", verbs with "and" or "from", stories of getting
# and losing things.

# %%
for op in ("+", "-"):
    frames = sum_frames.grammar_frames(op)
    print(f"{op}: {len(frames)} grammar frames, e.g.")
    for f in np.random.default_rng(1).choice(frames, 4, replace=False):
        print("     ", f)

# %% [markdown]
# More frames must not mean frames *nearer the test*. A grammar can easily rebuild a held-out
# frame, or come within one word of it ("Could you take {b} from {a}?" against the held-out "Can
# you take {b} from {a}?"). The rule: compare frames by their words (difflib's ratio, 1.0 for
# the same words), and keep a grammar frame only if it is no nearer to any held-out frame than the
# nearest hand-written train frame already was. Held out stays exactly as held out as before.

# %%
near = "Could you take {b} from {a}?"
h = "Can you take {b} from {a}?"
bounds = sum_frames.held_out_bounds(wordings.DIFFERENCE_CORES)
print(f"{near!r}: nearness {sum_frames.nearness(near, h):.2f} to {h!r}, "
      f"the nearest train frame {bounds[h]:.2f}: dropped")
assert sum_frames.nearness(near, h) > bounds[h] and near not in sum_frames.grammar_frames("-")

groups = {}
for op, cores in (("+", wordings.SUM_CORES), ("-", wordings.DIFFERENCE_CORES)):
    grammar = sum_frames.grammar_frames(op)
    for i, (h, bound) in enumerate(sum_frames.held_out_bounds(cores).items()):
        nearest = max(sum_frames.nearness(g, h) for g in grammar)
        assert nearest <= bound
        groups[f"{op}{i + 1}"] = {"nearest train frame": round(100 * bound),
                                  "nearest grammar frame": round(100 * nearest)}
        print(f"{op}{i + 1:<3d} {h:58s} train {bound:.2f}  grammar {nearest:.2f}")
print("picture:", _plot.grouped_bars(
    "24_nearness_to_held_out.png", groups, "Each held-out frame: how near the nearest train frame "
    "and the nearest grammar frame come", ylabel="nearness, % (100 = the same words)",
    vmax=100, size=(1500, 480)))

# %% [markdown]
# `tinyphi3 data sft --sum-frames 0.08` puts 8% of the SFT conversations in these frames, and
# `tinyphi3 eval --ckpt DIR --task wording` measures a model on the held-out ones, with the
# reasons of section 3 in its table. What more frames did to the wide chat model is in
# `docs/wording.md`, "The twenty-fourth round".

# %% [markdown]
# ## 6. The same for the other families
#
# Sums are not the only family with few train wordings: greetings have 12 greeting words and 9
# endings, thanks 12 and 6, memory 12 ways to give a name. A held-out greeting such as "Howdy
# mini!" shares no word with any train greeting, so a model that learned which words go with
# which reply answers it as whatever its words resemble. `tinyphi3.data.chat_frames` builds
# wordings for every such family by the same rule. For a greeting or a thanks the whole message
# is the wording, since a held-out greeting is any held-out word with any held-out ending.

# %%
rows = []
for family in chat_frames.FAMILIES:
    train, held = chat_frames.hand_written(family)
    grammar = chat_frames.grammar_wordings(family)
    rows.append((family, len(train), len(held), len(grammar)))
    print(f"{family:22s} train {len(train):4d}   held out {len(held):3d}   grammar {len(grammar):5d}"
          f"   e.g. {str(np.random.default_rng(2).choice(grammar))!r}")

# %% [markdown]
# The rule is strict in a way worth seeing. No train greeting says "mini" (" mini!" is a held-out
# ending), so the nearest train greeting to the held-out "Howdy mini!" shares none of its words:
# its bound is 0, and *any* greeting of the grammar that says "mini" is dropped. The model can
# still learn "mini" as a name from the other families' wordings ("What are you capable of,
# friend?" has its vocative; the leads "Mini, " and "Hi mini, " are shared by both splits).

# %%
train, held = chat_frames.hand_written("greeting")
print("kept of 'Hey mini!', 'Hi pal!':", chat_frames.keep(["Hey mini!", "Hi pal!"], train, held))
assert chat_frames.keep(["Hey mini!", "Hi pal!"], train, held) == ("Hi pal!",)

print("picture:", _plot.grouped_bars(
    "24_wordings_per_family.png",
    {family: {"hand-written train": n_train, "grammar": n_grammar}
     for family, n_train, _, n_grammar in rows if not family.startswith("outside")},
    "Train wordings per family: hand-written, and kept from the grammar", ylabel="wordings",
    size=(1300, 460)))

# %% [markdown]
# `tinyphi3 data sft --chat-frames P` draws a share P of the SFT conversations from this grammar.
# `docs/wording.md` says what it did to the wide chat model.
