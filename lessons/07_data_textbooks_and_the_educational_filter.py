# %% [markdown]
# # Lesson 7: textbooks and the educational filter
#
# The Phi-3 report puts its whole innovation in the data: "a scaled-up version of the one used
# for phi-2, composed of heavily filtered publicly available web data and synthetic data". §2
# spells out the recipe:
#
# - web data is filtered "according to the 'educational level'";
# - pre-training runs in two phases: **phase 1**, "mostly web sources aimed at teaching the model
#   general knowledge and language understanding"; **phase 2**, "even more heavily filtered
#   webdata (a subset used in Phase-1) with some synthetic data that teach the model logical
#   reasoning and various niche skills";
# - a small model should not spend its capacity on facts like "the result of a game in premier
#   league in a particular day" (the "Data Optimal Regime").
#
# This lesson builds that recipe in miniature, with the modules of `tinyphi3.data`:
#
# 1. synthetic textbooks that teach a small closed world;
# 2. a web-like corpus of mixed quality, including the pages the report filters out;
# 3. an educational-value classifier, trained in NumPy with a hand-written gradient;
# 4. its scores, per kind of page, as a picture;
# 5. phase 1 and phase 2: the thresholds and what each keeps;
# 6. from documents to the token shards a training run reads.

# %%
import tempfile
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tinyphi3.data.classifier import (EDUCATIONAL_VALUE, EduClassifier, evaluate, featurize,
                                      labels_of, loss_and_grad, words)
from tinyphi3.data.phases import HEAVY_THRESHOLD, LIGHT_THRESHOLD, build_phases, format_summary
from tinyphi3.data.shards import TokenStream, write_shards
from tinyphi3.data.textbooks import generate_textbooks
from tinyphi3.data.web import KINDS, WEB_MIX, generate_web
from tinyphi3.pictures.charts import GREY
from tinyphi3.tokenizers.train_sentencepiece import train_tokenizer

workdir = Path(tempfile.mkdtemp(prefix="lesson07_"))


def show(text, width=96, lines=8):
    """The first lines of a document, wrapped, for printing."""
    wrapped = [w for line in text.splitlines() for w in (textwrap.wrap(line, width) or [""])]
    more = "\n    ..." if len(wrapped) > lines else ""
    print("\n".join("    " + w for w in wrapped[:lines]) + more)


# %% [markdown]
# ## 1. Synthetic textbooks
#
# "Textbooks Are All You Need" (Gunasekar et al. 2023, the phi-1 paper that started the phi
# series) trained a small model for code on text that reads like a good textbook: it explains,
# gives worked examples and asks questions; part of it was written by an LLM (GPT-3.5) as
# synthetic textbooks and exercises.
# Ours teach a closed world (`tinyphi3.data.world`): 160 made-up creatures with five facts each,
# and first-school-year skills such as two-digit arithmetic and simple logic. Nothing of that
# world appears anywhere else, so whatever a model knows of it, it learned from these documents.

# %%
books = list(generate_textbooks(300, seed=0))
first_lines = [book.splitlines()[0] for book in books]
for title in list(dict.fromkeys(first_lines))[:2]:          # two different kinds of textbook page
    show(books[first_lines.index(title)], lines=10)
    print()
book_words = [len(b.split()) for b in books]
print(f"{len(books)} textbook documents, {np.mean(book_words):.0f} words on average")
assert len(set(books)) == len(books) and min(book_words) > 50

# %% [markdown]
# ## 2. A web of mixed quality
#
# `generate_web` writes pages of seven kinds from templates and word lists. Three kinds are
# what the report's filter exists for: **boilerplate** (cookie notices, menus, footers), **spam**
# (keyword stuffing, "buy now") and **trivia** (match results on a given day, stock prices,
# lottery draws). Explanatory **educational** pages teach ordinary school knowledge, and
# **narrative**, **forum** and **news** pages are plain general language. Like real pages, a
# fifth of them carry some boilerplate too.

# %%
web = list(generate_web(6000, seed=0))
counts = Counter(page["kind"] for page in web)
for kind in KINDS:
    page = next(p for p in web if p["kind"] == kind)
    print(f"--- {kind} ({counts[kind]} pages, {WEB_MIX[kind]:.0%} of the mix)")
    show(page["text"], lines=4)
assert set(counts) == set(KINDS)

# %% [markdown]
# ## 3. The educational-value classifier
#
# Which paper says what:
#
# - **phi-1** ("Textbooks Are All You Need", Gunasekar et al. 2023) describes the recipe, for
#   code: GPT-4 rated the educational value "for a student whose goal is to learn basic coding
#   concepts" of a small *sample* of files from The Stack and StackOverflow (about 100,000), a
#   random-forest classifier was trained on those ratings (over a pretrained code model's
#   embeddings), and the classifier, not the LLM, scored and filtered everything else.
# - **phi-1.5** ("Textbooks Are All You Need II", Li et al. 2023) applied that filtering to web
#   text, beside its synthetic textbooks.
# - **The Phi-3 report** says only that its web data is "heavily filtered ... according to the
#   'educational level'", that it follows "the sequence of works initiated in 'Textbooks Are All
#   You Need'" (§2), and that its predecessors combined "LLM-based filtering of publicly
#   available web data" with synthetic data (§1). It does not describe its filter.
#
# So the rate-a-sample, train-a-classifier recipe below is phi-1's, applied to web pages. Our
# annotator is plainer, and we say so: on a labelled subset of 1500 pages we read the
# generator's `kind` tag and turn it into a value with a fixed table, where phi-1 asked an LLM.
# Our classifier is logistic regression on hashed words, where phi-1's was a random forest on a
# model's embeddings. The other pages are never labelled: the classifier alone decides their
# fate.

# %%
print(EDUCATIONAL_VALUE)
labelled, unlabelled = web[:1500], web[1500:]
labels = labels_of(labelled)

# %% [markdown]
# **Features.** A page becomes a vector of 2^18 numbers by the *hashing trick*: each word (every
# digit written 0, so all match scores look alike) and each pair of adjacent words is hashed
# with CRC-32 to a position and a sign, its count enters as log(1 + count), and the vector is
# scaled to length 1. No vocabulary is stored; pages that share words share positions.

# %%
sentence = "Arsenal 2-1 Chelsea on 4 May 2019. Buy now!"
print(words(sentence))
X = featurize([sentence])
print(f"{X.n_rows} page -> {len(X.indices)} non-zero positions out of {X.n_features}")
assert words(sentence)[:4] == ["arsenal", "0", "-", "0"]

# %% [markdown]
# **Model and gradient.** Logistic regression: p = sigmoid(x·w + b), trained on cross-entropy
# with the soft targets y above, L = mean[log(1 + e^z) - y z] + (λ/2)|w|². Its gradient is short
# enough to write by hand: dL/dz = (p - y)/N, dL/dw = Xᵀ dL/dz + λw, dL/db = Σ dL/dz. We check
# it against central differences before trusting it.

# %%
rng = np.random.default_rng(0)
X_small = featurize([p["text"] for p in labelled[:20]], n_features=64)
y_small, w, b = np.array(labels[:20]), rng.normal(size=64) * 0.1, 0.0
_, dw, _ = loss_and_grad(X_small, y_small, w, b, l2=0.01)
eps = 1e-6
numeric = np.array([(loss_and_grad(X_small, y_small, w + eps * e, b, 0.01)[0]
                     - loss_and_grad(X_small, y_small, w - eps * e, b, 0.01)[0]) / (2 * eps)
                    for e in np.eye(64)])
print(f"largest difference, hand-written vs numeric gradient: {np.abs(dw - numeric).max():.2e}")
assert np.allclose(dw, numeric, rtol=1e-5, atol=1e-9)

# %% [markdown]
# Minibatch gradient descent, four epochs of batches of 32:

# %%
classifier = EduClassifier.train([p["text"] for p in labelled], labels, seed=0)
print("loss after each epoch:", [round(v, 4) for v in classifier.info["loss_per_epoch"]])
held_out = unlabelled[:2000]
numbers = evaluate(classifier, [p["text"] for p in held_out], labels_of(held_out))
print({k: round(v, 3) for k, v in numbers.items()})
assert numbers["auc_educational"] > 0.95 and numbers["auc_not_junk"] > 0.95
assert numbers["accuracy"] > numbers["majority_baseline"] + 0.4

# %% [markdown]
# On pages it never saw, the classifier ranks an educational page above a non-educational one
# almost always (`auc_educational`), and a general-language page above junk (`auc_not_junk`).
# `accuracy` rounds each score to the nearest of 0, 0.5 and 1 and compares with the tag; the
# majority baseline is what always answering the commonest value would get.
#
# ## 4. Scores per kind
#
# Where does each kind land on the 0-to-1 scale? One histogram per kind, with the two
# thresholds drawn in: phase 1 keeps what lies right of the light one, phase 2 what lies right of
# the heavy one.

# %%
scores = classifier.score([p["text"] for p in unlabelled])
kinds = np.array([p["kind"] for p in unlabelled])


# educational blue; general language greens; junk reds and browns
KIND_COLORS = {"educational": (31, 119, 180), "narrative": (44, 160, 44), "forum": (116, 196, 118),
               "news": (0, 109, 44), "boilerplate": (214, 39, 40), "spam": (255, 127, 14),
               "trivia": (140, 86, 75)}


def score_histograms(name, scores, kinds, thresholds, bins=25):
    """One row of bars per kind (each row scaled to its tallest bar), with dashed vertical lines
    at the thresholds."""
    W, row, left, top = 900, 62, 130, 50
    img = Image.new("RGB", (W, top + row * len(KINDS) + 50), "white")
    d, font = ImageDraw.Draw(img), ImageFont.load_default(14)
    px = lambda s: left + s * (W - left - 30)
    edges = np.linspace(0, 1, bins + 1)
    for i, kind in enumerate(KINDS):
        counts = np.histogram(scores[kinds == kind], edges)[0]
        share = counts / max(1, counts.max())
        y0 = top + row * (i + 1) - 8
        for j, s in enumerate(share):
            d.rectangle([px(edges[j]) + 1, y0 - s * (row - 14), px(edges[j + 1]) - 1, y0],
                        fill=KIND_COLORS[kind])
        d.line([(left, y0), (W - 30, y0)], fill=GREY)
        d.text((left - 10, y0 - row / 3), kind, fill="black", font=font, anchor="rm")
    for label, t in thresholds.items():
        for y in range(top, top + row * len(KINDS), 10):
            d.line([(px(t), y), (px(t), y + 5)], fill="black", width=2)
        d.text((px(t) + 4, top - 6), label, fill="black", font=font, anchor="ls")
    for t in np.linspace(0, 1, 6):
        d.text((px(t), top + row * len(KINDS) + 4), f"{t:.1f}", fill="black", font=font,
               anchor="ma")
    d.text((W / 2, 12), "educational-value score of unlabelled pages, by kind", fill="black",
           font=ImageFont.load_default(18), anchor="ma")
    d.text((W / 2, top + row * len(KINDS) + 26), "classifier score", fill="black", font=font,
           anchor="ma")
    out = Path("lesson_outputs")
    out.mkdir(exist_ok=True)
    img.save(out / name)
    return out / name


print("picture:", score_histograms("07_scores_by_kind.png", scores, kinds,
                                   {f"phase 1 >= {LIGHT_THRESHOLD}": LIGHT_THRESHOLD,
                                    f"phase 2 >= {HEAVY_THRESHOLD}": HEAVY_THRESHOLD}))
mean = {kind: scores[kinds == kind].mean() for kind in KINDS}
for kind in KINDS:
    print(f"{kind:12s} mean score {mean[kind]:.3f}")
assert max(mean[k] for k in ("boilerplate", "spam", "trivia")) < LIGHT_THRESHOLD
assert LIGHT_THRESHOLD < min(mean[k] for k in ("narrative", "forum", "news"))
assert max(mean[k] for k in ("narrative", "forum", "news")) < HEAVY_THRESHOLD < mean["educational"]

# %% [markdown]
# Three clusters: junk near 0, general language near 0.5, educational pages near 0.9. The
# pages between clusters are mostly good pages wrapped in boilerplate, which pulls their score
# down. The report's "premier league" example in our web:

# %%
match = next(p for p in unlabelled if p["kind"] == "trivia" and "Results" in p["text"])
show(match["text"], lines=4)
match_score = classifier.score([match["text"]])[0]
print(f"score {match_score:.3f}: below {LIGHT_THRESHOLD}, so even phase 1 drops it")
assert match_score < LIGHT_THRESHOLD

# %% [markdown]
# ## 5. Phase 1 and phase 2
#
# `build_phases` scores every page, keeps those at or above the light threshold for phase 1,
# those at or above the heavy threshold for phase 2 (the same scores, a higher bar: a subset of
# phase 1, as in the report), and mixes the textbooks into phase 2 until they make half of its
# words.

# %%
phases = build_phases(unlabelled, classifier, textbooks=books * 10, light=LIGHT_THRESHOLD,
                      heavy=HEAVY_THRESHOLD, synthetic_share=0.5, seed=0)
print(format_summary(phases.summary))
phase1_texts = {p["text"] for p in phases.phase1}
phase2_web = [p for p in phases.phase2 if p.get("kind") != "textbook"]
assert all(p["text"] in phase1_texts for p in phase2_web)
rows = phases.summary["by_kind"]
for kind in ("boilerplate", "spam", "trivia"):
    assert rows[kind]["phase1_documents"] <= 0.02 * rows[kind]["web_documents"]
assert rows["educational"]["phase2_documents"] >= 0.9 * rows["educational"]["web_documents"]
assert abs(phases.summary["phase2"]["synthetic_share"] - 0.5) < 0.02

# %% [markdown]
# Phase 1 keeps all the general language a model needs to read and write, and none of the
# junk. Phase 2 keeps only the pages that explain and reason, and gives half its words to the
# textbooks, where the closed world's facts and skills live.
#
# ## 6. From documents to token shards
#
# A training run reads token ids, not text. `write_shards` tokenizes each document, puts
# `<|endoftext|>` after it, packs everything into flat uint16 files and holds out whole
# documents for validation; `TokenStream` serves windows of T tokens through `np.memmap`, in an
# order drawn from a seed, with a `state_dict` so that a resumed run sees the same batches.

# %%
corpus = workdir / "corpus.txt"
corpus.write_text("\n".join(p["text"] for p in phases.phase1[:300]) + "\n" + "\n".join(books[:50]),
                  encoding="utf-8")
tok = train_tokenizer([corpus], workdir / "tok", vocab_size=600)
meta = write_shards(phases.phase2[:400], tok, workdir / "shards", shard_tokens=20_000,
                    val_fraction=0.05, source="lesson 7, phase 2")
print({split: (s["documents"], s["tokens"], len(s["files"]))
       for split, s in meta["splits"].items()}, meta["dtype"])
stream = TokenStream(workdir / "shards", "train", batch_size=4, seq_len=64, seed=0)
input_ids, labels_ = stream.next_batch()
print(input_ids.shape, repr(tok.decode(input_ids[0][:24])))
assert input_ids.shape == (4, 64) and np.array_equal(input_ids, labels_)

# %% [markdown]
# ## Summary
#
# - Phi-3's data recipe: web pages filtered by educational value, in two phases, plus synthetic
#   textbooks in phase 2.
# - The filter is a classifier trained on a small labelled sample; here, logistic regression on
#   hashed words with a hand-written, numerically checked gradient.
# - Junk (boilerplate, spam, "premier league" trivia) scores near 0 and leaves in phase 1;
#   general language survives phase 1 but not phase 2; educational pages survive both.
# - Phase 2's web pages are a subset of phase 1's, because both filters read the same scores.
#
# Lesson 8 pre-trains a tiny model on the two phases, made by these same functions.
#
# ## Where it lives
#
# - `tinyphi3/data/world.py`: the closed world the textbooks teach (`ENTITIES`, 160 creatures);
#   `tinyphi3/data/textbooks.py`: `generate_textbooks`.
# - `tinyphi3/data/web.py`: `generate_web`, `KINDS`, `WEB_MIX` and one function per kind of page
#   (`educational_page`, `trivia_page`, ...).
# - `tinyphi3/data/classifier.py`: `EDUCATIONAL_VALUE`, `labels_of`, `words`, `featurize`,
#   `loss_and_grad`, `EduClassifier` (`train`, `score`, `save`, `load`), `evaluate`.
# - `tinyphi3/data/phases.py`: `LIGHT_THRESHOLD`, `HEAVY_THRESHOLD`, `build_phases` (from
#   `score_documents`, `phase1_documents`, `keep_scored_at_least`, `textbooks_for`),
#   `format_summary`, `write_phases`.
# - `tinyphi3/data/shards.py`: `write_shards`, `TokenStream`; `tinyphi3/tokenizers/
#   train_sentencepiece.py`: `train_tokenizer`.
# - The same steps on the command line (`tinyphi3/cli/data.py`): `tinyphi3 data web`,
#   `data textbooks`, `data classifier train`, `data classifier score`, `data phases`,
#   `data tokenize`.
