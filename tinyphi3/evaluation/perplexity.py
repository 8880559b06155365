"""Held-out perplexity: exp of the mean next-token cross-entropy on text the model never saw.

Two kinds of held-out text, generated fresh from a seed that no training set uses:
- "text": synthetic textbooks (tinyphi3.data.textbooks), every token scored: for base models;
- "chat": conversations like the SFT data (tinyphi3.data.post_training), only the assistant's
  replies and their <|end|> scored, as in fine-tuning: for chat models.
It is the yardstick for comparing a model with its 4-bit copy: the same text, the same tokens.
"""

import numpy as np

from tinyphi3.nn.layers import target_log_probs

HELD_OUT_SEED = 90_001          # the training data uses small seeds (0-9); this one is unused
KINDS = ("text", "chat")


def heldout_examples(tokenizer, kind: str = "chat", n: int = 200, seed: int = HELD_OUT_SEED,
                     seq_len: int = 256) -> list:
    """[(ids, labels)]: n fresh documents cut into windows of seq_len + 1 tokens ("text"), or
    n fresh conversations with the assistant's tokens labelled ("chat"; longer ones skipped). The
    conversations are of the first SFT's mixture (`generate_sft(..., wording=False)`), the data
    the shipped chat models were fine-tuned on, so that the set stays the same when the mixture
    grows."""
    if kind == "text":
        from tinyphi3.data.textbooks import generate_textbooks
        examples = []
        for doc in generate_textbooks(n, seed):
            ids = np.asarray(tokenizer.encode(doc), np.int64)
            for start in range(0, max(len(ids) - 1, 1), seq_len):
                window = ids[start:start + seq_len + 1]
                if len(window) >= 2:
                    examples.append((window, window))
        return examples
    if kind == "chat":
        from tinyphi3.data.post_training import generate_sft
        from tinyphi3.train.conversations import ChatEncoder
        encoder = ChatEncoder(tokenizer)
        examples = [encoder.encode(record["messages"]) for record in generate_sft(n, seed,
                                                                            wording=False)]
        return [(ids, labels) for ids, labels in examples if len(ids) <= 2 * seq_len]
    raise ValueError(f"unknown kind {kind!r}: choose one of {', '.join(KINDS)}")


def perplexity(model, examples) -> float:
    """exp(mean over labelled tokens of -log p(token | the tokens before it)); labels are the
    ids with -100 where a token is not scored, shifted inside as for the training loss."""
    total, count = 0.0, 0
    for ids, labels in examples:
        logits = model(np.asarray(ids)[None])                        # [1, T, V]
        logp, _ = target_log_probs(logits, np.asarray(labels)[None])  # [1, T-1], 0 where unscored
        total -= float(logp.sum())
        count += int((np.asarray(labels)[1:] != -100).sum())
    return float(np.exp(total / count))
