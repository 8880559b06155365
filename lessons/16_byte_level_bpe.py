# %% [markdown]
# # Lesson 16: Byte-level BPE, phi-3-small's tokenizer
#
# Phi-3-mini reads text with Llama-2's SentencePiece vocabulary (lesson 1). Phi-3-small does not:
# §2 of the Phi-3 report says it "leverages the tiktoken tokenizer (for better multilingual
# tokenization) with a vocabulary size of 100352". tiktoken's `cl100k_base` is a **byte-level**
# BPE: its 100256 tokens are byte strings, ranked 0, 1, 2, ... in the order they were learned,
# and the rank is also the id. This lesson takes it apart on a vocabulary we train ourselves:
#
# 1. bytes, not characters: every string encodes;
# 2. the split pattern, alternative by alternative, and why no token crosses a piece;
# 3. training by hand: count pairs, merge the most frequent, repeat;
# 4. encoding: merge the lowest rank, which replays training;
# 5. the same ids as the `tiktoken` library, and the `.tiktoken` file;
# 6. why 100352 ids: 100256 ranks, 21 special ids, padding to a multiple of 128;
# 7. the dummy ids, whose logits the model masks.

# %%
import os
import random
import tempfile
from collections import Counter
from pathlib import Path

os.environ["TIKTOKEN_CACHE_DIR"] = ""     # tiktoken reads local files without caching copies

import numpy as np
import regex
import tiktoken
from tiktoken.load import load_tiktoken_bpe

import _plot
from tinyphi3.config import PHI3SMALL_DUMMY_TOKEN_IDS, preset
from tinyphi3.data.textbooks import generate_textbooks
from tinyphi3.models.model import Phi3
from tinyphi3.models.phi3_small import mask_dummy_logits
from tinyphi3.nn.autograd import Parameter, enable_grad
from tinyphi3.nn.layers import causal_lm_loss
from tinyphi3.tokenizers.byte_bpe import (CL100K_PATTERN, bpe_piece, decode_bytes, encode_ordinary,
                                          pre_tokenize, read_ranks, train_bpe_ranks, write_ranks)
from tinyphi3.tokenizers.tiktoken_bpe import (CL100K_RANKS, PHI3_SMALL_SPECIAL_TOKENS,
                                              TiktokenTokenizer, padded_size,
                                              phi3_small_special_tokens)

workdir = Path(tempfile.mkdtemp(prefix="lesson16_"))

# %% [markdown]
# ## 1. Bytes, not characters
#
# Text is stored as UTF-8: one byte for ASCII, two for `é`, three for `東`, four for an emoji. A
# byte-level BPE starts from the 256 possible bytes, so its 256 single-byte tokens already spell
# every string there is. With no merges at all, encoding is just UTF-8:

# %%
byte_ranks = {bytes([b]): b for b in range(256)}      # ranks 0..255: the single bytes
for text in ["cat", "café", "東京", "😀"]:
    ids = encode_ordinary(text, byte_ranks)
    print(f"{text!r:8} {len(text)} character(s) -> {len(ids)} byte token(s) {ids}")
    assert ids == list(text.encode("utf-8"))

# %% [markdown]
# Lesson 1's SentencePiece tokenizer needed *byte fallback* for a character it had no piece for;
# here nothing is ever unknown. Random strings drawn from many corners of Unicode (Latin,
# Cyrillic, Devanagari, CJK, emoji, control characters) encode and decode back exactly. A token
# may end in the middle of a character (`é` is the two tokens `\xc3`, `\xa9` here), so decoding
# joins the tokens' bytes first and reads UTF-8 after.

# %%
rng = random.Random(0)
blocks = [(0x20, 0x7F), (0xA0, 0x2FF), (0x400, 0x4FF), (0x900, 0x97F), (0x4E00, 0x4FFF),
          (0x1F600, 0x1F64F), (0x0, 0x20)]


def random_string(n):
    return "".join(chr(rng.randrange(*rng.choice(blocks))) for _ in range(n))


samples = [random_string(rng.randint(1, 30)) for _ in range(300)]
for text in samples:
    assert decode_bytes(encode_ordinary(text, byte_ranks), byte_ranks).decode("utf-8") == text
print(f"{len(samples)} random strings: all encode and decode back")
assert decode_bytes([0xC3], byte_ranks) == b"\xc3"    # half of 'é': bytes, not yet text

# %% [markdown]
# The one string UTF-8 cannot hold is a lone surrogate (half of a UTF-16 pair, which Python
# strings may contain); like tiktoken, the tokenizer encodes it as U+FFFD, the replacement
# character.

# %%
assert encode_ordinary("a\ud800b", byte_ranks) == list("a\ufffdb".encode("utf-8"))

# %% [markdown]
# ## 2. The split pattern
#
# Before any merging, a regular expression cuts the text into **pieces**, and BPE works inside
# each piece on its own. cl100k_base's pattern is eight alternatives; at each position the first
# one that matches wins:
#
# | # | alternative | catches |
# |---|---|---|
# | 0 | `'(?i:[sdmt]\|ll\|ve\|re)` | an English contraction, any case: `'s`, `'LL` |
# | 1 | `[^\r\n\p{L}\p{N}]?+\p{L}++` | letters, maybe one non-letter before them: ` pay`, `(x` |
# | 2 | `\p{N}{1,3}+` | one to three digits |
# | 3 | ` ?[^\s\p{L}\p{N}]++[\r\n]*+` | punctuation, maybe a space before it, newlines after it |
# | 4 | `\s++$` | whitespace at the end of the text |
# | 5 | `\s*[\r\n]` | whitespace up to and including a newline |
# | 6 | `\s+(?!\S)` | whitespace, leaving its last space to the word after it |
# | 7 | `\s` | one whitespace character nothing else took |
#
# `\p{L}` is any letter and `\p{N}` any number, in every script; `?+` and `++` are *possessive*:
# what they match is never given back. Wrapping each alternative in a named group shows which
# one caught each piece of an example:

# %%
ALTERNATIVES = [r"'(?i:[sdmt]|ll|ve|re)", r"[^\r\n\p{L}\p{N}]?+\p{L}++", r"\p{N}{1,3}+",
                r" ?[^\s\p{L}\p{N}]++[\r\n]*+", r"\s++$", r"\s*[\r\n]", r"\s+(?!\S)", r"\s"]
assert "|".join(ALTERNATIVES) == CL100K_PATTERN
which = regex.compile("|".join(f"(?P<a{i}>{a})" for i, a in enumerate(ALTERNATIVES)))

example = ("We'LL pay $12345 for 3 cafés (naïve?)...\n\n    def f(x):\n"
           "        return x+1  \n  end   ")
caught = [(m.group(), int(m.lastgroup[1:])) for m in which.finditer(example)]
for piece, alternative in caught:
    print(f"  {alternative}  {piece!r}")
assert [piece for piece, _ in caught] == pre_tokenize(example)
assert "".join(pre_tokenize(example)) == example                  # nothing lost, nothing added
assert {alternative for _, alternative in caught} == set(range(8))  # each alternative is used

# %% [markdown]
# What to read in that list:
#
# - a word keeps the space *before* it (` pay`, ` for`), so "pay" in the middle of a sentence is
#   always the same piece, whatever came before;
# - numbers are cut into groups of at most three digits from the left (`123`, `45`), and a digit
#   never takes the space before it (` ` then `3`): the model sees a few hundred number tokens
#   and nothing longer;
# - punctuation keeps its newlines (`?)...\n\n`, `):\n`);
# - a run of spaces gives its last space to the word that follows (`   ` then ` def`), so an
#   indented ` def` is the same piece as a ` def` in a sentence;
# - `'LL` is a piece of its own (the group is case-insensitive), so `We` and `'LL` never merge.

# %%
checks = {"We": 1, "'LL": 0, " pay": 1, "123": 2, "45": 2, " ": 7, "3": 2, "?)...\n\n": 3,
          "   ": 6, " def": 1, "(x": 1, "  \n": 5}
for piece, alternative in checks.items():
    assert (piece, alternative) in caught, (piece, alternative)
assert caught[-1] == ("   ", 4)                                     # the trailing spaces

# %% [markdown]
# ## 3. Training by hand
#
# Training learns the ranks from text (Sennrich et al. 2016, byte-level as in GPT-2). The corpus:
# a dozen synthetic textbook pages (lesson 7) and a few lines with numbers, code and other
# scripts. Pieces are counted once; each distinct piece becomes a tuple of byte ids with its
# count. Then, over and over:
#
# 1. count every adjacent pair of ids inside the pieces (a piece counted `n` times adds `n`);
# 2. take the most frequent pair (a tie goes to the pair of lower ids, so training is
#    deterministic; a plain `max` would keep whichever tied pair it met first);
# 3. give it the next rank, and replace it everywhere, left to right.
#
# Pairs are never counted across pieces, so no token can ever contain a piece boundary.

# %%
extra = ["In 2024 the river rose 345 cm; in 2023 it rose 1234 mm.",
         "def area(r):\n    return 3.14159 * r * r\n",
         "Zürich, Genève, café, naïve.", "東京と大阪", "Москва и Санкт-Петербург",
         "It's what they'd said: we'll see, you've won, they're here, I'm done."]
corpus = list(generate_textbooks(12, seed=0)) + extra * 3
print(f"corpus: {len(corpus)} texts, {sum(len(t.encode()) for t in corpus):,} bytes")
VOCAB = 512                                   # 256 bytes + 256 merges


def merge(word, pair, new_id):
    """`word` (a tuple of ids) with each occurrence of `pair`, left to right, replaced by new_id."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


piece_counts = Counter(piece for text in corpus for piece in pre_tokenize(text))
words = {piece: tuple(piece.encode("utf-8")) for piece in piece_counts}   # piece -> its ids
vocab = [bytes([b]) for b in range(256)]                                  # id -> token bytes
merges = []                                                               # (pair, count)
while len(vocab) < VOCAB:
    pairs = Counter()
    for piece, word in words.items():
        for pair in zip(word, word[1:]):
            pairs[pair] += piece_counts[piece]
    pair = min(pairs, key=lambda p: (-pairs[p], p))     # most frequent, then lowest ids
    merges.append((pair, pairs[pair]))
    vocab.append(vocab[pair[0]] + vocab[pair[1]])
    words = {piece: merge(word, pair, len(vocab) - 1) for piece, word in words.items()}

by_hand = {token: rank for rank, token in enumerate(vocab)}
print("the first merges:")
for rank in range(256, 268):
    (a, b), count = merges[rank - 256]
    print(f"  rank {rank}: {vocab[a]!r:8} + {vocab[b]!r:8} -> {vocab[rank]!r:10} ({count} times)")
assert by_hand == train_bpe_ranks(corpus, VOCAB)

# %% [markdown]
# Our loop gives exactly the ranks of `train_bpe_ranks`. The count of the chosen pair never
# rises from one merge to the next: a pair already there can only lose occurrences (when one of
# its tokens is merged with a neighbour), and a new pair that contains the new token occurs at
# most as often as the new token, that is as often as the pair just merged. The most frequent
# pairs are spaces joined to letters and common endings; longer, rarer tokens come later.

# %%
counts = [count for _, count in merges]
assert all(a >= b for a, b in zip(counts, counts[1:]))
print("picture:", _plot.bar_chart(
    "16_first_merges.png",
    {f"{rank}: {vocab[rank].decode('utf-8', 'replace')!r}": merges[rank - 256][1]
     for rank in range(256, 272)},
    "The first 16 merges and how often their pair occurred", "times"))
print("picture:", _plot.line_plot(
    "16_merge_counts.png", {"count of the merged pair": (np.arange(256, VOCAB), counts)},
    f"Pair counts fall as training goes on ({VOCAB - 256} merges)", "rank of the new token",
    "times the pair occurred", log_y=True, legend="upper right"))

# %% [markdown]
# ## 4. Encoding: merge the lowest rank
#
# To encode a piece, spell it in bytes and repeatedly merge the adjacent pair whose joined bytes
# have the **lowest rank** (the leftmost one on a tie), until no adjacent pair joins into a
# token. By hand, on one word:

# %%
ranks = by_hand
piece = " learning".encode("utf-8")
parts = [piece[i:i + 1] for i in range(len(piece))]
while True:
    candidates = [(ranks[parts[i] + parts[i + 1]], i) for i in range(len(parts) - 1)
                  if parts[i] + parts[i + 1] in ranks]
    print("  " + " | ".join(p.decode().replace(" ", "␣") for p in parts),   # ␣: the space
          f"   pair ranks {sorted(candidates)}" if candidates else "   (no pair is a token)")
    if not candidates:
        break
    _, i = min(candidates)
    parts[i:i + 2] = [parts[i] + parts[i + 1]]
assert [ranks[p] for p in parts] == bpe_piece(piece, ranks)

# %% [markdown]
# Why the lowest rank? The ranks are the order in which training made the merges, so merging the
# lowest rank first applies the merges in training's order: a piece is split exactly as training
# left it. Every piece of the corpus shows it:

# %%
for piece_text, word in words.items():
    assert bpe_piece(piece_text.encode("utf-8"), ranks) == list(word)
print(f"all {len(words)} distinct pieces of the corpus encode as training left them")

# %% [markdown]
# Encoding a text is encoding each of its pieces, so every piece boundary is a token boundary.
# The split matters: the same ranks run over a whole number, without the pattern's groups of
# three digits, can give a token that straddles a boundary.

# %%
def token_starts(ids):
    """Byte offsets where the tokens `ids` begin."""
    lengths = [len(vocab[i]) for i in ids]
    return set(np.cumsum([0] + lengths[:-1]).tolist())


for text in corpus[:4] + [example]:
    piece_starts = set(np.cumsum([0] + [len(p.encode()) for p in pre_tokenize(text)][:-1]).tolist())
    assert piece_starts <= token_starts(encode_ordinary(text, ranks))

numbers = [str(n) for n in range(1000, 100000, 7)]
straddles = next(n for n in numbers if bpe_piece(n.encode(), ranks) != encode_ordinary(n, ranks))
boundary = len(pre_tokenize(straddles)[0])                          # where the first piece ends
assert boundary not in token_starts(bpe_piece(straddles.encode(), ranks))   # a token across it
print(f"{straddles!r}: pieces {pre_tokenize(straddles)} -> "
      f"{[vocab[i].decode() for i in encode_ordinary(straddles, ranks)]}; "
      f"without the split -> {[vocab[i].decode() for i in bpe_piece(straddles.encode(), ranks)]}")

# %% [markdown]
# ## 5. The same ids as tiktoken
#
# The `tiktoken` library (Rust inside) runs the same algorithm. Given our pattern and our ranks as
# an `Encoding`, it must give the same ids on any text, seen in training or not:

# %%
enc = tiktoken.Encoding("lesson16", pat_str=CL100K_PATTERN, mergeable_ranks=ranks,
                        special_tokens={})
unseen = ["The otter's 12 kites flew over 1,000,000 hills!!", "naïve Zürich 東京 😀\n\n\tTabs",
          "    if x == 3:\n        print('ok')  \n", "They'RE HERE... aren't they?  "]
texts = corpus + unseen + samples
for text in texts:
    ids = encode_ordinary(text, ranks)
    assert ids == enc.encode_ordinary(text)
    assert enc.decode(ids) == text
print(f"{len(texts)} texts: our ids equal tiktoken's, and decode back")
held_out = " ".join(generate_textbooks(20, seed=1))
print(f"on unseen pages: {len(held_out.encode()) / len(enc.encode_ordinary(held_out)):.2f} "
      "bytes per token (1.00 with the bytes alone)")

# %% [markdown]
# tiktoken stores the ranks as a `.tiktoken` file: one line per token, its bytes in base64, a
# space, its rank. cl100k_base's file has 100256 such lines. tiktoken's own loader reads the file
# we write:

# %%
write_ranks(ranks, workdir / "tokenizer.tiktoken")
lines = (workdir / "tokenizer.tiktoken").read_text().splitlines()
print(lines[65], "  ...  ", lines[300], " =", vocab[300])
assert load_tiktoken_bpe(str(workdir / "tokenizer.tiktoken")) == ranks == read_ranks(
    workdir / "tokenizer.tiktoken")

# %% [markdown]
# ## 6. Why 100352 ids
#
# cl100k_base has 100256 ranks: the 256 bytes and 100000 merges. Phi-3-small puts 21 special
# ids right after them, at 100256..100276: `<|endoftext|>` (its bos, eos and pad), three
# fill-in-the-middle tokens, the chat tokens `<|system|>`, `<|user|>`, `<|assistant|>`,
# `<|end|>`, `<|endofprompt|>`, and unused `<|dummy_id_k|>` entries between them. 100277 ids,
# rounded up to a multiple of 128, are 100352: the rows of the embedding, which is also the
# output layer (phi-3-small ties them). A dimension that is a multiple of 128 splits evenly into
# the tiles of GPU matrix kernels and across devices; the 75 rows it adds are never used.

# %%
named = sorted(PHI3_SMALL_SPECIAL_TOKENS.items(), key=lambda item: item[1])
for token, token_id in named:
    if "dummy" not in token:
        print(f"  {token_id}  {token}")
assert CL100K_RANKS == 256 + 100_000
assert [i for _, i in named] == list(range(CL100K_RANKS, CL100K_RANKS + 21))
assert padded_size(CL100K_RANKS) == 100352 == 784 * 128
assert len(phi3_small_special_tokens(CL100K_RANKS)) == 100352 - CL100K_RANKS

# %% [markdown]
# Our trained vocabulary gets the same layout after its own 512 ranks, so a tokenizer made for a
# tiny model reads like the real one: `<|endoftext|>` at 512 + 1, `<|end|>` at 512 + 10, and 640
# ids in all. In a chat the control tokens come from the template; the text between them is
# encoded by the ranks.

# %%
tok = TiktokenTokenizer(ranks)
print("ids:", tok.vocab_size, " <|endoftext|>", tok.eos_token_id, " <|user|>",
      tok.token_to_id("<|user|>"), " <|end|>", tok.token_to_id("<|end|>"))
assert tok.vocab_size == padded_size(VOCAB) == 640
assert tok.eos_token_id == VOCAB + 1 and tok.token_to_id("<|end|>") == VOCAB + 10
chat = tok.apply_chat_template([{"role": "user", "content": "Where do otters live?"}],
                               add_generation_prompt=True, tokenize=True)
print([tok.id_to_token(i) for i in chat])
assert [i for i in chat if i >= VOCAB] == [tok.token_to_id(t)
                                          for t in ("<|user|>", "<|end|>", "<|assistant|>")]
assert tok.encode("<|end|>") == encode_ordinary("<|end|>", ranks)   # typed by a user: text

# %% [markdown]
# ## 7. The dummy ids
#
# Of the 100352 rows, phi-3-small's tokenizer lists 91 as dummies: the unused special ids
# (`<|dummy_id_0..11|>`), the fill-in-the-middle tokens and `<|endofprompt|>`, which it does not
# use, and the 75 rows of padding. The model can therefore produce 100352 - 91 = 100261 ids: the
# 100256 ranks and `<|endoftext|>`, `<|system|>`, `<|user|>`, `<|assistant|>`, `<|end|>`.

# %%
special = phi3_small_special_tokens(CL100K_RANKS)
named_dummies = {i for token, i in special.items() if token.startswith("<|dummy_id_")}
unused = {special[t] for t in ("<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
                               "<|endofprompt|>")}
dummies = set(PHI3SMALL_DUMMY_TOKEN_IDS)
assert dummies == named_dummies | unused and len(dummies) == 91
usable = sorted(set(range(CL100K_RANKS, 100352)) - dummies)
print("special ids the model may produce:", {i: special_of for special_of, i in special.items()
                                             if i in usable})
assert [special[t] for t in ("<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>",
                             "<|end|>")] == usable

# %% [markdown]
# No training text contains those ids, so their rows of the tied embedding hold whatever the
# initialisation and training left there, and their logits are whatever `h . row` happens to
# be. The published model does not leave that to chance: after the output layer it sets the
# dummies' logits to the smallest number of its dtype. `exp(min - max)` is exactly 0, so the
# dummies take no probability and no sampler can pick them. A tiny phi-3-small with the full
# 100352-row vocabulary, run with the mask and without it:

# %%
config = preset("tiny-small").replace(vocab_size=100352, dummy_token_indices=None)
assert config.dummy_token_ids == PHI3SMALL_DUMMY_TOKEN_IDS          # the default at 100352
model = Phi3(config, seed=0)
ids = np.array([[100257, 791, 8415, 374, 100266]])                   # [B=1, T=5]
masked = model(ids)                                                  # [1, 5, 100352]
model.config = config.replace(dummy_token_indices=[])                # the same weights, no mask
plain = model(ids)
dummy = np.array(PHI3SMALL_DUMMY_TOKEN_IDS)
print(f"dummy logits with the mask: {masked[0, -1, dummy[:3]]} ...; without: "
      f"{plain[0, -1, dummy[:3]]} ...")
assert (masked[..., dummy] == np.finfo(np.float32).min).all()
keep = np.setdiff1d(np.arange(100352), dummy)
assert np.array_equal(masked[..., keep], plain[..., keep])           # the rest untouched
shifted = masked - masked.max(axis=-1, keepdims=True)
probs = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
assert (probs[..., dummy] == 0).all() and np.allclose(probs.sum(axis=-1), 1)
assert np.isfinite(masked).all()                                     # a minimum, not -inf
print(f"probability of the dummies: {probs[..., dummy].sum()}; largest among the others: "
      f"{probs[..., keep].max():.2e}")

# %% [markdown]
# The mask is written as arithmetic, `logits * ~dummy + fill`, not as an assignment, and the
# minimum is finite, so a softmax never computes `inf - inf`. In training, the gradient of the
# loss reaches no dummy logit, so nothing flows back into their rows through the output layer;
# without the mask the softmax would push every one of them down a little at each step:

# %%
logits_param = Parameter(np.random.default_rng(0).standard_normal((1, 3, 100352), np.float32))
labels = np.array([[791, 8415, 100266]])                             # [B=1, T=3]
for mask in (True, False):
    logits_param.grad = None
    with enable_grad():
        out = mask_dummy_logits(logits_param, dummy) if mask else logits_param
        causal_lm_loss(out, labels).backward()
    reach = np.abs(logits_param.grad[..., dummy]).max()
    print(f"{'with' if mask else 'without'} the mask: largest gradient at a dummy logit "
          f"{reach:.1e}")
    assert (reach == 0) == mask
print("lesson 16 done")

# %% [markdown]
# ## Summary
#
# - A byte-level BPE starts from the 256 bytes, so every string encodes; decoding joins bytes.
# - cl100k_base's pattern cuts text into pieces (words with their leading space, at most three
#   digits, punctuation with its newlines, whitespace runs); no token crosses a piece.
# - Training: count adjacent pairs inside the pieces, merge the most frequent, repeat; the rank
#   of a token is the step that made it, and its id.
# - Encoding: merge the lowest-ranked pair until none is a token; it replays training, and gives
#   tiktoken's ids.
# - Phi-3-small: 100256 ranks + 21 special ids, padded to 100352 = 784 x 128; 91 dummy ids whose
#   logits are set to the float32 minimum, so that they get probability 0.
#
# ## Where it lives
#
# - `tinyphi3/tokenizers/byte_bpe.py`: `CL100K_PATTERN`, `pre_tokenize`, `bpe_piece`,
#   `encode_ordinary`, `train_bpe_ranks`, `read_ranks` / `write_ranks` (the `.tiktoken` file).
# - `tinyphi3/tokenizers/tiktoken_bpe.py`: `TiktokenTokenizer` (phi-3-small's tokenizer, encoding
#   through tiktoken), `PHI3_SMALL_SPECIAL_TOKENS`, `padded_size`, `train_tiktoken_tokenizer`
#   (what `tinyphi3 tokenizer train --kind tiktoken` runs).
# - `tinyphi3/config/small.py`: `DUMMY_TOKEN_IDS` (exported as
#   `tinyphi3.config.PHI3SMALL_DUMMY_TOKEN_IDS`); `tinyphi3/models/phi3_small.py`:
#   `mask_dummy_logits`, applied at the end of phi-3-small's `lm_head`.
# - `tests/test_tiktoken_tokenizer.py`: the same ids as tiktoken, on more texts.
