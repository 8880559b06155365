"""Does a model use all of its context? Passkey retrieval by depth and length, and the loss by
position.

  passkey_grid         for each cell (depth, length): n held-out passkey documents of that many
                       tokens (tinyphi3.data.longdocs, keys of the test split, which no training
                       document holds), the key's line at that depth, each prompt ending "The
                       pass key is"; the model goes on greedily for 8 tokens and is right when
                       the first number it writes is the key, digit for digit. Chance is about 1
                       in 45,000 (the test keys): a model that cannot read the key scores 0%.
  position_perplexity  the mean next-token loss -log p(token | the tokens before it), and its
                       exp, by the position of the predicted token in buckets (0-512, 512-1024,
                       1024-2048, 2048-4096) over long held-out documents
                       (`heldout_long_ids`): a model that uses its whole context keeps the loss
                       of the late buckets near (or below) that of the first; a model past its
                       range climbs.

Past the context. A cell longer than the model's context (config.max_position_embeddings) cannot
be asked: generation refuses such a prompt (ContextLengthError), so the cell is None, "past the
context", and so is a loss bucket that ends past it. With allow_past_context the model is asked
anyway, as `past_context_view(model, length)`: the same weights under a config whose
max_position_embeddings is the length, nothing else changed. For plain RoPE (rope_scaling None)
that is RoPE extrapolated: past the trained L0 the queries and keys turn by angles never seen in
training, which is how the unextended mini meets 4096 tokens (and why it fails past 512). A
model in the LongRoPE layout keeps its attention factor, pinned, so only the limit moves.

    grid = passkey_grid(model, tokenizer, (512, 1024, 2048, 4096), (0, 0.5, 1), n_per_cell=10)
    grid["accuracy"][r][c]     # depth r, length c: 0.0-1.0, or None past the context
"""

import copy
import re

import numpy as np

from tinyphi3.data.longdocs import generate_longdocs, passkey_document
from tinyphi3.data.world import stable_hash
from tinyphi3.evaluation.perplexity import HELD_OUT_SEED
from tinyphi3.inference.generate import generate
from tinyphi3.nn.layers import target_log_probs

DEFAULT_LENGTHS = (512, 1024, 2048, 4096)
DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
ANSWER_TOKENS = 8            # " 48213." is 7 tokens with the mini's tokenizer (digit by digit)
NUMBER_RE = re.compile(r"\d+")


def past_context_view(model, length: int):
    """The model with its context set to `length` tokens: a shallow copy sharing the weights,
    whose config has max_position_embeddings = length. Plain RoPE: the angles extrapolate past
    the trained range. LongRoPE layout: the attention factor is pinned to the model's own, as
    it would otherwise follow the new length (sqrt(1 + ln s / ln L0), s = L / L0)."""
    config = model.config
    changes = {"max_position_embeddings": int(length)}
    if config.rope_scaling is not None:
        changes["rope_scaling"] = {**config.rope_scaling,
                                   "attention_factor": config.longrope_attention_factor}
    view = copy.copy(model)
    view.config = config.replace(**changes)
    return view


def first_number(text: str):
    """The first run of digits in a reply ('48213' of ' 48213. Remember'), or None."""
    found = NUMBER_RE.search(text)
    return found.group(0) if found else None


def read_key(model, tokenizer, prompt_ids, max_new_tokens: int = ANSWER_TOKENS) -> str:
    """The model's greedy continuation of a passkey prompt, as text."""
    out = list(generate(model, prompt_ids, max_new_tokens=max_new_tokens, temperature=0.0,
                        tokenizer=tokenizer))
    return tokenizer.decode(out, skip_special_tokens=True)


def passkey_prompts(tokenizer, length: int, depth: float, n: int, seed: int = 0) -> list:
    """[(prompt ids, key)]: the n held-out documents of one cell, the same for every model that
    shares the tokenizer (a generator seeded by the cell and `seed`)."""
    rng = np.random.default_rng(stable_hash("passkey-eval", seed, int(length), float(depth)))
    prompts = []
    for _ in range(n):
        text, key = passkey_document(rng, length, depth, tokenizer, split="test")
        prompts.append((tokenizer.encode(text), key))
    return prompts


def passkey_grid(model, tokenizer, lengths=DEFAULT_LENGTHS, depths=DEFAULT_DEPTHS,
                 n_per_cell: int = 10, seed: int = 0, allow_past_context: bool = False,
                 progress=None) -> dict:
    """Passkey accuracy per (depth, length): rows are depths, columns lengths.

    Returns {"lengths", "depths", "accuracy" ([depth][length], 0.0-1.0, None past the context),
    "n_per_cell", "context" (the model's max_position_embeddings), "past_context" (whether the
    cells past it were run anyway), "records" (one per document: length, depth, key, reply,
    right)}. `progress(k)` is called as k more documents are done (or skipped, past the
    context)."""
    context = model.config.max_position_embeddings
    ran_past = allow_past_context and max(lengths) > context
    asked = past_context_view(model, max(lengths)) if ran_past else model
    accuracy = [[None] * len(lengths) for _ in depths]
    records = []
    for r, depth in enumerate(depths):
        for c, length in enumerate(lengths):
            if length > context and not allow_past_context:
                if progress:
                    progress(n_per_cell)
                continue
            right = 0
            for ids, key in passkey_prompts(tokenizer, length, depth, n_per_cell, seed):
                reply = read_key(asked, tokenizer, ids)
                right += first_number(reply) == key
                records.append({"length": int(length), "depth": float(depth), "key": key,
                                "reply": reply, "right": first_number(reply) == key})
                if progress:
                    progress(1)
            accuracy[r][c] = right / n_per_cell
    return {"lengths": [int(v) for v in lengths], "depths": [float(d) for d in depths],
            "accuracy": accuracy, "n_per_cell": n_per_cell, "context": context,
            "past_context": bool(ran_past), "records": records}


def format_passkey_tables(grids: dict) -> str:
    """One table per model: % right, rows = depth of the key, columns = length in tokens;
    'past' for a cell past the model's context."""
    blocks = []
    for name, grid in grids.items():
        lengths = grid["lengths"]
        title = (f"passkey retrieval, % right of {grid['n_per_cell']} per cell: {name} "
                 f"(context {grid['context']}{', run past it' if grid['past_context'] else ''})")
        lines = [title, "depth \\ tokens" + "".join(f"{v:>8}" for v in lengths)]
        for depth, row in zip(grid["depths"], grid["accuracy"]):
            cells = "".join(f"{'past':>8}" if a is None else f"{100 * a:>8.0f}" for a in row)
            lines.append(f"{depth:>14.2f}" + cells)
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


# ---- the loss by position -----------------------------------------------------------------------

def buckets_between(lengths) -> list:
    """[(0, l1), (l1, l2), ...] from sorted lengths: 512,1024,2048,4096 -> 0-512, ..., 2048-4096."""
    edges = [0] + sorted(int(v) for v in lengths)
    return list(zip(edges[:-1], edges[1:]))


def heldout_long_ids(tokenizer, n_docs: int, min_tokens: int, seed: int = HELD_OUT_SEED) -> list:
    """Token ids of n_docs long documents of the test split (held-out facts and calculations;
    stories and conversations, tinyphi3.data.longdocs), each cut to `min_tokens` tokens."""
    docs = generate_longdocs(n_docs, seed, "test", min_tokens=min_tokens, tokenizer=tokenizer)
    return [np.asarray(tokenizer.encode(text)[:min_tokens], np.int64) for text in docs]


def position_perplexity(model, docs_ids, buckets, allow_past_context: bool = False,
                        progress=None) -> list:
    """Mean loss and perplexity of the tokens whose position falls in each bucket [lo, hi).

    The token at position t (t >= 1) is scored by log p(ids[t] | ids[:t]), one forward pass per
    document over its first max(hi) tokens. A bucket that ends past the model's context is None
    (and the documents are cut at the context) unless allow_past_context.
    Returns [{"bucket": [lo, hi], "tokens", "nll", "perplexity"}] in the order of `buckets`."""
    context = model.config.max_position_embeddings
    usable = [hi <= context or allow_past_context for _, hi in buckets]
    end = max([hi for (_, hi), ok in zip(buckets, usable) if ok], default=0)
    sums, counts = np.zeros(len(buckets)), np.zeros(len(buckets), np.int64)
    for ids in docs_ids:
        ids = np.asarray(ids, np.int64)[:end]
        if len(ids) >= 2:
            logits = model(ids[None])                                    # [1, T, V]
            logp, _ = target_log_probs(logits, ids[None])                # [1, T-1]
            positions = np.arange(1, len(ids))                           # of the scored tokens
            for j, (lo, hi) in enumerate(buckets):
                inside = (positions >= lo) & (positions < hi) & usable[j]
                sums[j] -= float(logp[0, inside].sum())
                counts[j] += int(inside.sum())
        if progress:
            progress(1)
    out = []
    for (lo, hi), total, n in zip(buckets, sums, counts):
        nll = float(total / n) if n else None
        out.append({"bucket": [int(lo), int(hi)], "tokens": int(n), "nll": nll,
                    "perplexity": None if nll is None else float(np.exp(nll))})
    return out


def pooled_perplexity(buckets: list):
    """exp of the mean loss over every scored token of the buckets (each bucket weighted by its
    tokens), or None when a bucket is past the context."""
    if any(b["nll"] is None for b in buckets):
        return None
    tokens = sum(b["tokens"] for b in buckets)
    return float(np.exp(sum(b["nll"] * b["tokens"] for b in buckets) / tokens))


def format_position_table(results: dict) -> str:
    """Perplexity by position bucket (rows) for each model (columns), 'past' for a bucket past a
    model's context; then the whole length's perplexity and its ratio to the first bucket's (the
    issue's test: the 4K average within 10% of the 0-512 one)."""
    names = list(results)
    width = max(12, *(len(n) + 2 for n in names))
    lines = ["perplexity by position".ljust(28) + "".join(n.rjust(width) for n in names)]
    buckets = [tuple(b["bucket"]) for b in next(iter(results.values()))]
    for j, (lo, hi) in enumerate(buckets):
        cells = [results[n][j]["perplexity"] for n in names]
        lines.append(f"{lo}-{hi}".ljust(28) + "".join(
            ("past" if p is None else f"{p:.3f}").rjust(width) for p in cells))
    pooled = [pooled_perplexity(results[n]) for n in names]
    lines.append(f"all, 0-{buckets[-1][1]}".ljust(28) + "".join(
        ("past" if p is None else f"{p:.3f}").rjust(width) for p in pooled))
    ratios = ["-" if p is None else f"{100 * p / results[n][0]['perplexity']:.1f}%"
              for n, p in zip(names, pooled)]
    lines.append(f"all / 0-{buckets[0][1]}".ljust(28) + "".join(r.rjust(width) for r in ratios))
    return "\n".join(lines)
