"""Held-out perplexity: exp of the mean next-token cross-entropy on text the model never saw.

Kinds of held-out text, generated fresh from a seed that no training set uses:
- "text": synthetic textbooks (tinyphi3.data.textbooks), every token scored: for base models;
- "web": web-like pages of every kind (tinyphi3.data.web), every token scored;
- "chat": conversations like the SFT data (tinyphi3.data.post_training), only the assistant's
  replies and their <|end|> scored, as in fine-tuning: for chat models.
It is the yardstick for comparing a model with its 4-bit copy: the same text, the same tokens.
"""

import numpy as np

from tinyphi3.nn.layers import target_log_probs

HELD_OUT_SEED = 90_001          # the training data uses small seeds (0-9); this one is unused
KINDS = ("text", "web", "chat")


def heldout_examples(tokenizer, kind: str = "chat", n: int = 200, seed: int = HELD_OUT_SEED,
                     seq_len: int = 256) -> list:
    """[(ids, labels)]: n fresh documents cut into windows of seq_len + 1 tokens ("text", "web"),
    or n fresh conversations with the assistant's tokens labelled ("chat"; longer ones skipped). The
    conversations are of the first SFT's mixture (`generate_sft(..., wording=False)`), the data
    the shipped chat models were fine-tuned on, so that the set stays the same when the mixture
    grows."""
    if kind == "text":
        from tinyphi3.data.textbooks import generate_textbooks
        return _windows(tokenizer, generate_textbooks(n, seed), seq_len)
    if kind == "web":
        from tinyphi3.data.web import generate_web
        return _windows(tokenizer, (page["text"] for page in generate_web(n, seed)), seq_len)
    if kind == "chat":
        from tinyphi3.data.post_training import generate_sft
        from tinyphi3.train.conversations import ChatEncoder
        encoder = ChatEncoder(tokenizer)
        examples = [encoder.encode(record["messages"]) for record in generate_sft(n, seed,
                                                                            wording=False)]
        return [(ids, labels) for ids, labels in examples if len(ids) <= 2 * seq_len]
    raise ValueError(f"unknown kind {kind!r}: choose one of {', '.join(KINDS)}")


def _windows(tokenizer, documents, seq_len: int) -> list:
    """Each document's ids cut into windows of seq_len + 1 tokens (consecutive windows share one
    token, so every token but the first is predicted once), every token labelled."""
    examples = []
    for doc in documents:
        ids = np.asarray(tokenizer.encode(doc), np.int64)
        for start in range(0, max(len(ids) - 1, 1), seq_len):
            window = ids[start:start + seq_len + 1]
            if len(window) >= 2:
                examples.append((window, window))
    return examples


def window_losses(model, examples) -> tuple:
    """([summed -log p of each example's labelled tokens], [how many it has]): kept apart so that
    a standard error can be computed over examples; labels are the ids with -100 where a token
    is not scored, shifted inside as for the training loss."""
    sums, counts = [], []
    for ids, labels in examples:
        logits = model(np.asarray(ids)[None])                        # [1, T, V]
        logp, _ = target_log_probs(logits, np.asarray(labels)[None])  # [1, T-1], 0 where unscored
        sums.append(-float(logp.sum()))
        counts.append(int((np.asarray(labels)[1:] != -100).sum()))
    return sums, counts


def perplexity(model, examples) -> float:
    """exp(mean over labelled tokens of -log p(token | the tokens before it))."""
    sums, counts = window_losses(model, examples)
    return float(np.exp(sum(sums) / sum(counts)))
