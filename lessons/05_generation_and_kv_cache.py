# %% [markdown]
# # Lesson 5: generation and the KV cache
#
# A language model gives, at every position, a score (logit) for each possible next token.
# Generating text is a loop:
#
#     repeat: logits = model(tokens so far); t = pick(logits[-1]); append t
#
# This lesson looks at the two halves of that loop, and at its end:
#
# 1. *picking*: greedy decoding, temperature, top-k and top-p (nucleus) sampling;
# 2. *the forward pass*: without a cache every step recomputes the whole prefix; with a KV cache
#    each step processes one token, and produces exactly the same logits;
# 3. stopping: stop tokens and the length limit.
#
# The report touches each. Its benchmarks are run greedily (§3: few-shot prompts "at
# temperature 0"). The claim of its title, a capable model running locally on a phone (§2 and
# Figure 1), is phi-3-mini quantized to 4 bits, about 1.8 GB, generating more than 12 tokens per
# second on an iPhone 14: every one of those tokens is one turn of the loop above. And much of
# §2's phi-3-small is about the cache: block-sparse attention to make it smaller, and separate
# kernels for the two phases met below, prefill and decode.
#
# Most of the mechanics are shown on token ids with a small random model; a trained tiny chat
# model (`checkpoints/mini`) shows the sampling cuts on a real distribution and the stop tokens.

# %%
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # tiny matrices: one BLAS thread (lesson 8)

import numpy as np

import _plot
from tinyphi3.config import preset
from tinyphi3.inference.generate import GenerationStats, generate, sample_next_token
from tinyphi3.nn.layers import softmax
from tinyphi3.models.model import Phi3
from tinyphi3.tokenizers.sentencepiece_bpe import STOP_TOKENS, Tokenizer

try:
    REPO = Path(__file__).resolve().parent.parent
except NameError:                                  # run as a notebook, from lessons/
    REPO = Path.cwd().parent
CHAT = REPO / "checkpoints" / "mini"               # the shipped chat model (its README says how)

np.set_printoptions(precision=3, suppress=True, linewidth=110)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. From logits to a token
#
# A toy vocabulary of eight words and the logits a model might give after "The cat sat on the":

# %%
words = np.array(["mat", "sofa", "floor", "roof", "table", "moon", "piano", "of"])
logits = np.array([3.0, 2.2, 1.9, 1.2, 0.5, 0.0, -1.0, -2.5])
probs = softmax(logits)
for word, z, p in zip(words, logits, probs):
    print(f"{word:6s} logit {z:5.1f}  p = {p:.3f}")
assert np.isclose(probs.sum(), 1.0)

# %% [markdown]
# **Greedy** decoding takes the most likely token: deterministic, and prone to repeating itself.
# `sample_next_token` does that when `temperature` is 0.
#
# **Temperature** divides the logits before the softmax: `p = softmax(logits / T)`. Below 1 the
# distribution sharpens towards greedy; above 1 it flattens towards uniform.

# %%
assert sample_next_token(logits, temperature=0.0) == int(np.argmax(logits)) == 0
print("greedy:", words[sample_next_token(logits, temperature=0.0)])

temperatures = (0.5, 1.0, 2.0)
by_temperature = {T: softmax(logits / T) for T in temperatures}
for T, p in by_temperature.items():
    print(f"T = {T}: {p}")
assert by_temperature[0.5][0] > by_temperature[1.0][0] > by_temperature[2.0][0]
print("picture:", _plot.line_plot("05_temperature.png",
                                  {f"temperature {T}": (np.arange(8), p)
                                   for T, p in by_temperature.items()},
                                  "softmax(logits / T) over the toy vocabulary",
                                  "next token", "probability", legend="upper right",
                                  xticks=words.tolist()))

# %% [markdown]
# **Top-k** keeps the k most likely tokens and renormalises. **Top-p** (nucleus sampling,
# Holtzman et al. 2019) keeps the smallest set of most likely tokens whose probabilities add up
# to at least p: few tokens when the model is sure, many when it is not.

# %%
order = np.argsort(-probs)                               # most likely first
top_k = 3
kept_k = order[:top_k]
p_top_k = probs[kept_k] / probs[kept_k].sum()
print(f"top-k = {top_k}: {dict(zip(words[kept_k].tolist(), p_top_k.round(3).tolist()))}")

top_p = 0.9
cumulative = np.cumsum(probs[order])
nucleus = order[:int(np.argmax(cumulative >= top_p)) + 1]  # smallest prefix reaching top_p
p_nucleus = probs[nucleus] / probs[nucleus].sum()
print("cumulative:", dict(zip(words[order].tolist(), cumulative.round(3).tolist())))
print(f"top-p = {top_p}: nucleus {words[nucleus].tolist()}, renormalised {p_nucleus.round(3)}")
assert probs[nucleus].sum() >= top_p > probs[nucleus[:-1]].sum()

# %% [markdown]
# The library's sampler should draw from exactly these distributions. We draw 5 000 tokens
# with each setting and compare the frequencies with the probabilities computed by hand.

# %%
def frequencies(n=5_000, **settings):
    draws = [sample_next_token(logits, rng=rng, **settings) for _ in range(n)]
    return np.bincount(draws, minlength=len(logits)) / n


expected_k = np.zeros(8)
expected_k[kept_k] = p_top_k
expected_p = np.zeros(8)
expected_p[nucleus] = p_nucleus
for name, settings, expected in [("T=1", dict(temperature=1.0), probs),
                                 ("T=0.5", dict(temperature=0.5), by_temperature[0.5]),
                                 ("top-k=3", dict(temperature=1.0, top_k=3), expected_k),
                                 ("top-p=0.9", dict(temperature=1.0, top_p=0.9), expected_p)]:
    freq = frequencies(**settings)
    print(f"{name:10s} sampled {freq}\n{'':10s} by hand {expected}")
    assert np.abs(freq - expected).max() < 0.03         # about 4 standard errors
    assert np.all(freq[expected == 0] == 0)              # never a token outside the kept set

# %% [markdown]
# ### The cuts on a trained model's distribution
#
# Those logits were made up. `checkpoints/mini` is a tiny Phi-3 chat model trained in this
# repository (4 layers, a vocabulary of 2048 pieces plus Phi-3's 11 added tokens). Asked "Name an
# animal.", it answers greedily "Here's one: The food P...". At that point it has to choose how
# the name goes on, and several creatures of its training texts are plausible. Here are its real
# next-token probabilities, sorted, and what top-k = 5 and top-p = 0.9 keep of them.

# %%
chat = Phi3.from_pretrained(CHAT)
tok = Tokenizer.from_pretrained(CHAT)
question = [{"role": "user", "content": "Name an animal."}]
chat_prompt = tok.apply_chat_template(question, add_generation_prompt=True, tokenize=True)
so_far = list(generate(chat, chat_prompt, max_new_tokens=10, tokenizer=tok))       # greedy
print("reply so far:", repr(tok.decode(so_far)))
assert tok.decode(so_far) == "Here's one: The food P"

real_logits = chat(np.array([chat_prompt + so_far]))[0, -1, :tok.vocab_size]   # -> [V]
real_probs = softmax(real_logits.astype(np.float64))
ranked = np.argsort(-real_probs)                                 # most likely first
k_cut, p_cut = 5, 0.9
nucleus_size = int(np.argmax(np.cumsum(real_probs[ranked]) >= p_cut)) + 1
print(f"top-k = {k_cut} keeps probability {real_probs[ranked[:k_cut]].sum():.2f}; "
      f"top-p = {p_cut} keeps {nucleus_size} tokens")
shown = ranked[:30]
pieces = [tok.id_to_token(int(t)).replace("\u2581", " ") for t in shown]   # '▁' is a space
print("picture:", _plot.probability_bars(
    "05_top_k_top_p.png", pieces, real_probs[shown],
    "checkpoints/mini's next token after 'Name an animal.' -> 'Here's one: The food P'",
    cuts={f"top-k = {k_cut}": k_cut, f"top-p = {p_cut}": nucleus_size},
    xlabel=f"the 30 most likely of its {tok.vocab_size} tokens, most likely first"))
assert k_cut < nucleus_size and real_probs[ranked[:nucleus_size]].sum() >= p_cut
assert 0.4 < real_probs[ranked[:k_cut]].sum() < 0.6                  # top-k: about half
assert real_probs[ranked[k_cut:2 * k_cut]].min() > 0.75 * real_probs[ranked[k_cut - 1]]

for settings, kept in [(dict(top_k=k_cut), ranked[:k_cut]),
                       (dict(top_p=p_cut), ranked[:nucleus_size])]:
    draws = {sample_next_token(real_logits, temperature=1.0, rng=rng, **settings)
             for _ in range(2_000)}
    assert draws <= set(kept.tolist())                   # the sampler keeps what the bars show

# %% [markdown]
# Here top-k = 5 keeps only about half of the probability, and the next five names, each about
# as likely as the fifth, are cut. A fixed k is too few here and too many where the model is sure;
# the nucleus adapts. Its size at every step of the same greedy reply:

# %%
reply = list(generate(chat, chat_prompt, max_new_tokens=40, tokenizer=tok))
steps_logits = chat(np.array([chat_prompt + reply]))[0, len(chat_prompt) - 1:-1, :tok.vocab_size]
sizes = [int(np.argmax(np.cumsum(np.sort(softmax(z.astype(np.float64)))[::-1]) >= p_cut)) + 1
         for z in steps_logits]                          # one nucleus size per generated token
print("reply:", repr(tok.decode(reply)))
print(f"top-p = {p_cut} nucleus size at each step: {sizes}")
assert sizes[len(so_far)] == nucleus_size and min(sizes) == 1 and max(sizes) > 20

# %% [markdown]
# ## 2. The decode loop, without a cache
#
# A random "tiny" Phi-3 (2 layers, hidden size 64, 512-token vocabulary) stands in for a
# trained model. The simplest loop runs the whole sequence through the model at every step and
# keeps the last position's logits.

# %%
config = preset("tiny")
model = Phi3(config, seed=0)
prompt = [int(t) for t in rng.integers(3, config.vocab_size, size=20)]


def greedy_without_cache(model, prompt, n_new):
    ids = list(prompt)
    for _ in range(n_new):
        logits = model(np.array([ids]))[0, -1]          # [1, len(ids)] -> [1, len(ids), V] -> [V]
        ids.append(int(np.argmax(logits)))
    return ids[len(prompt):]


tokens = greedy_without_cache(model, prompt, 12)
library = list(generate(model, prompt, max_new_tokens=12))   # greedy by default, uses a cache
print("hand loop:", tokens)
print("generate :", library)
assert tokens == library

# %% [markdown]
# ## 3. The KV cache
#
# Look at what step `t` computes. Attention is causal, so the keys and values of tokens
# `0 .. t-1` depend only on those tokens: they are the same at every later step. Recomputing
# them is wasted work. A KV cache keeps each layer's keys and values; each step then runs only
# the newest token through the model, appends its key and value, and attends over the cache.
#
#     prefill: logits = model(prompt, cache)      # fills the cache, one pass over the prompt
#     decode:  logits = model([t], cache)         # one token per step
#
# These are the two phases that the report's §2 gives separate kernels for in phi-3-small: one for
# prefilling, and for decoding an extension of vLLM's paged attention (Kwon et al. 2023), which
# stores the cache in fixed-size pages.
#
# A fast path must be *equal* to the slow one. We decode 30 tokens with the cache and compare
# every step's logits with one full forward pass over the final sequence. We also check the
# "tiny-gqa" preset (2 KV heads for 4 query heads, sliding window 16), whose window the
# 50-token sequence overruns.

# %%
for name in ("tiny", "tiny-gqa"):
    cfg = preset(name)
    m = Phi3(cfg, seed=1)
    cache = m.new_cache(batch_size=1)
    ids = list(prompt)
    step_logits = [m(np.array([ids]), cache=cache)[0, -1]]            # prefill
    for _ in range(30):
        ids.append(int(np.argmax(step_logits[-1])))
        step_logits.append(m(np.array([ids[-1:]]), cache=cache)[0, -1])   # one token in
    full = m(np.array([ids]))[0]                                      # [len(ids), V], no cache
    cached = np.stack(step_logits)                                    # [31, V]
    difference = np.abs(cached - full[len(prompt) - 1:]).max()
    print(f"{name:9s}: {len(ids)} tokens, cache holds {cache.length}, "
          f"max |cached - full| = {difference:.1e}")
    assert cache.length == len(ids) and np.allclose(cached, full[len(prompt) - 1:], atol=1e-5)

# %% [markdown]
# ### What the cache costs
#
# Per token the cache stores a key and a value vector for every layer and KV head:
#
#     bytes per token = 2 * layers * KV heads * head_dim * bytes per number

# %%
def cache_bytes_per_token(cfg, bytes_per_number):
    return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * bytes_per_number


cfg = preset("tiny-gqa")
print(f"tiny-gqa, float32: {cache_bytes_per_token(cfg, 4)} bytes per token; "
      f"after {cache.length} tokens cache.nbytes() = {cache.nbytes()}")
assert cache.nbytes() == cache.length * cache_bytes_per_token(cfg, 4)

mini = preset("phi-3-mini-4k")
per_token = cache_bytes_per_token(mini, 2)                            # bf16 / fp16
print(f"phi-3-mini: 2 x 32 layers x 32 KV heads x 96 x 2 bytes = {per_token:,} bytes "
      f"= {per_token // 1024} KiB per token")
for context in (4096, 131072):
    print(f"  {context:6d} tokens: {per_token * context / 2**30:5.1f} GiB "
          f"(the bf16 weights are {3_821_079_552 * 2 / 2**30:.1f} GiB)")
assert per_token == 2 * 32 * 32 * 96 * 2 == 393_216
assert per_token * 4096 == 1.5 * 2**30 and per_token * 131072 == 48 * 2**30

# %% [markdown]
# At 128K tokens the cache of phi-3-mini is more than six times larger than the model. This is
# why phi-3-medium and phi-3-small use grouped-query attention (lesson 2), and phi-3-small adds
# block-sparse attention, whose purpose §2 of the report states as "KV cache reduction". On the
# phone of §2 the 4-bit weights take about 1.8 GB; a bf16 cache of the full 4K context would add
# 1.5 GiB more.
#
# ### What the cache saves
#
# Count the token positions that pass through the model to generate 100 tokens after a
# 20-token prompt. Without a cache, new token `k` needs a pass over `20 + k - 1` positions. With
# a cache, the prefill handles the 20 prompt positions and yields the first new token; each of
# the other 99 needs one position.

# %%
class CountingModel:
    """Wraps a model and counts the token positions it is asked to process."""

    def __init__(self, model):
        self.model, self.config, self.positions = model, model.config, 0

    def __call__(self, ids, **kwargs):
        self.positions += np.asarray(ids).shape[1]
        return self.model(ids, **kwargs)


n_new, P = 100, len(prompt)
slow = CountingModel(model)
ids = list(prompt)
for _ in range(n_new):                                   # no cache
    ids.append(int(np.argmax(slow(np.array([ids]))[0, -1])))

fast = CountingModel(model)
cache = model.new_cache(1)
cached_ids = list(prompt)
logits = fast(np.array([cached_ids]), cache=cache)[0, -1]            # prefill
for step in range(n_new):
    cached_ids.append(int(np.argmax(logits)))
    if step < n_new - 1:                                 # the last token needs no further pass
        logits = fast(np.array([cached_ids[-1:]]), cache=cache)[0, -1]

assert ids == cached_ids                                  # same tokens either way
print(f"positions processed for {n_new} new tokens: without cache {slow.positions:,}, "
      f"with cache {fast.positions:,} ({slow.positions / fast.positions:.0f}x fewer)")
assert slow.positions == n_new * P + n_new * (n_new - 1) // 2 == 6950
assert fast.positions == P + n_new - 1 == 119

# %% [markdown]
# ### Time per token
#
# The same two loops, timed step by step (this machine, NumPy with one BLAS thread, the median
# of 5 runs of each, taken in turns; timings are printed and plotted, never asserted). Without a
# cache each step's cost grows with the sequence; with a cache it stays flat.

# %%
def time_steps(use_cache, n_new=100):
    """Milliseconds spent on each generated token: [n_new]."""
    ids, times = list(prompt), []
    cache = model.new_cache(1) if use_cache else None
    model(np.array([ids]))                               # warm-up pass, not timed
    logits = None
    for step in range(n_new):
        start = time.perf_counter()
        if not use_cache:
            logits = model(np.array([ids]))[0, -1]
        elif step == 0:
            logits = model(np.array([ids]), cache=cache)[0, -1]          # prefill
        else:
            logits = model(np.array([ids[-1:]]), cache=cache)[0, -1]
        times.append(time.perf_counter() - start)
        ids.append(int(np.argmax(logits)))
    return np.array(times) * 1e3                          # milliseconds


runs = [(time_steps(False), time_steps(True)) for _ in range(5)]  # in turns: a busy spell hits both
no_cache_ms = np.median([run[0] for run in runs], axis=0)             # median of 5 runs, per step
cache_ms = np.median([run[1] for run in runs], axis=0)
print(f"NumPy {np.__version__}, OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}")
print(f"median ms per token, steps 2-100: without cache {np.median(no_cache_ms[1:]):.2f}, "
      f"with cache {np.median(cache_ms[1:]):.2f} (first 10: {np.median(no_cache_ms[1:11]):.2f}, "
      f"last 10: {np.median(no_cache_ms[-10:]):.2f} without cache)")
steps = np.arange(1, n_new + 1)
print("picture:", _plot.line_plot("05_time_per_token.png",
                                  {"without cache": (steps[1:], no_cache_ms[1:]),
                                   "with KV cache": (steps[1:], cache_ms[1:])},
                                  "Time per generated token, tiny model "
                                  "(median of 5 runs, this machine)",
                                  "generated token number (prompt of 20 tokens)", "milliseconds"))

# %% [markdown]
# ## 4. Stopping
#
# Generation ends at `max_new_tokens`, at the end of the context, or when the model produces a
# stop token, which is not yielded. The instruct phi-3-mini stops on `<|end|>` (id 32007),
# `<|endoftext|>` (32000) and `<|assistant|>` (32001): a reply ends with `<|end|>` (the chat
# template of §2), and a model that writes `<|assistant|>` has started a new turn. The
# tokenizer's `stop_token_ids` lists those three that it has, and its eos token;
# `generate(..., tokenizer=tok)` stops on them. In `checkpoints/mini` Phi-3's added tokens follow
# its 2048 pieces, so the same three tokens have the ids 2055, 2048 and 2049 there.

# %%
stop_names = [tok.id_to_token(i) for i in tok.stop_token_ids]
print("stop tokens:", dict(zip(stop_names, tok.stop_token_ids)))
assert stop_names == list(STOP_TOKENS) == ["<|end|>", "<|endoftext|>", "<|assistant|>"]
assert tok.stop_token_ids == [2055, 2048, 2049]
assert json.loads((CHAT / "generation_config.json").read_text())["eos_token_id"] \
    == tok.stop_token_ids                                 # what transformers would stop on

stats = GenerationStats()
answer = list(generate(chat, chat_prompt, max_new_tokens=60, tokenizer=tok, stats=stats))
following = int(np.argmax(chat(np.array([chat_prompt + answer]))[0, -1, :tok.vocab_size]))
print(f"{stats.generated_tokens} tokens: {tok.decode(answer)!r}, "
      f"then the model writes {tok.id_to_token(following)!r}, which is not yielded")
assert stats.generated_tokens < 60 and following == tok.token_to_id("<|end|>")

# %% [markdown]
# The same on the random model: as "stop token" we pick a token that its greedy decoding
# produces at some step, and check that generation ends just before it.

# %%
stats = GenerationStats()
free_run = list(generate(model, prompt, max_new_tokens=30, stats=stats))
assert len(free_run) == stats.generated_tokens == 30 and stats.prompt_tokens == P
at = next(i for i in range(3, 30) if free_run[i] not in free_run[:i])   # first new token after 3
stop = free_run[at]
stats = GenerationStats()
stopped = list(generate(model, prompt, max_new_tokens=30, stop_token_ids=[stop], stats=stats))
print(f"free run : {free_run}\nstop id {stop}: {stopped}")
assert stopped == free_run[:at] and stats.generated_tokens == at

# %% [markdown]
# Sampling is random, but reproducible from a seed:

# %%
a = list(generate(model, prompt, max_new_tokens=15, temperature=0.8, top_p=0.9, seed=7))
b = list(generate(model, prompt, max_new_tokens=15, temperature=0.8, top_p=0.9, seed=7))
print("sampled (seed 7):", a)
assert a == b

# %% [markdown]
# ## Summary
#
# - Greedy takes the argmax; temperature reshapes the distribution; top-k and top-p cut its
#   tail before sampling.
# - The KV cache turns a step from a pass over the whole prefix into a pass over one token, and
#   gives exactly the logits of the full pass (checked above to 1e-5).
# - It costs `2 * layers * KV heads * head_dim` numbers per token: 384 KiB per token for
#   phi-3-mini in bf16, 1.5 GiB at 4096 tokens.
# - Generation stops before a stop token: `<|end|>`, `<|endoftext|>` or `<|assistant|>`
#   (`Tokenizer.stop_token_ids`), or at the length limit.
#
# ## Where it lives
#
# - `tinyphi3/inference/generate.py`: `generate` (the prefill/decode loop, stop tokens),
#   `sample_next_token` (greedy, temperature, top-k, top-p), `prefill`, `next_token_logits`,
#   `GenerationStats`.
# - `tinyphi3/inference/cache.py`: `KVCache` (`update`, `attention`, `nbytes`); a model makes
#   one with `Phi3.new_cache` (`tinyphi3/models/model.py`) and takes it as `model(ids, cache=...)`.
# - `tinyphi3/tokenizers/sentencepiece_bpe.py`: `Tokenizer.stop_token_ids`, `STOP_TOKENS`.
# - `tinyphi3/pictures/charts.py`: `probability_bars`, which drew the cuts.
