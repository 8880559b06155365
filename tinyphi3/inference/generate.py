"""Autoregressive generation: sampling, the prefill/decode loop, stop tokens, streaming text.

    prefill: logits = model(prompt, cache)             the prompt fills the KV cache
                                                       (256 tokens a pass)
    decode:  repeat: t = sample(logits[-1]); logits = model([t], cache)   one token per pass
"""

import time
from dataclasses import dataclass

import numpy as np

from tinyphi3.errors import ContextLengthError, InvalidInputError
from tinyphi3.nn.layers import softmax

PREFILL_CHUNK = 256          # prompt tokens per forward pass while filling the cache


def sample_next_token(logits, temperature=0.0, top_k=None, top_p=None, rng=None) -> int:
    """Pick the next token from logits [V].

    temperature 0 (or None): greedy argmax. Otherwise p = softmax(logits / temperature),
    restricted to the top_k most likely tokens and then to the smallest set whose probability
    reaches top_p (nucleus sampling, Holtzman et al. 2019), renormalised and sampled.
    """
    logits = np.asarray(logits, dtype=np.float64)
    if not temperature:
        return int(np.argmax(logits))
    if temperature < 0 or (top_p is not None and not 0 < top_p <= 1) or (top_k is not None
                                                                          and top_k < 1):
        raise InvalidInputError("need temperature >= 0, 0 < top_p <= 1 and top_k >= 1")
    rng = rng if rng is not None else np.random.default_rng()
    order = np.argsort(-logits, kind="stable")            # most likely first
    if top_k is not None:
        order = order[:top_k]
    probs = softmax(logits[order] / temperature)
    if top_p is not None and top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(probs), top_p)) + 1   # smallest prefix reaching p
        order, probs = order[:keep], probs[:keep] / probs[:keep].sum()
    return int(order[rng.choice(len(order), p=probs)])


def fit_to_context(prompt_ids, context_length, trim=False):
    """Check that a prompt leaves room for at least one new token; trim from the left if asked.

    Returns (ids, number of tokens trimmed). Raises ContextLengthError when the prompt does not
    fit and trimming was not asked for.
    """
    prompt_ids = list(prompt_ids)
    room = context_length - 1
    if len(prompt_ids) <= room:
        return prompt_ids, 0
    if not trim:
        raise ContextLengthError(f"prompt is {len(prompt_ids)} tokens but the context holds "
                                 f"{context_length} (at most {room} for the prompt)")
    return prompt_ids[-room:], len(prompt_ids) - room


@dataclass
class GenerationStats:
    """Token counts and wall time of the two phases (prompt tokens are never counted as
    generated)."""
    prompt_tokens: int = 0
    prefill_seconds: float = 0.0
    generated_tokens: int = 0
    decode_seconds: float = 0.0

    @property
    def prefill_tokens_per_second(self):
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tokens_per_second(self):
        # The first token comes out of the prefill pass; decode speed counts the tokens after it.
        steps = max(self.generated_tokens - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds else 0.0


def generate(model, prompt_ids, max_new_tokens=256, temperature=0.0, top_k=None, top_p=None,
             seed=None, stop_token_ids=None, stats=None, vocab_size=None, tokenizer=None):
    """Yield new token ids one at a time until a stop token, `max_new_tokens`, or the context end.

    `vocab_size`: sample only ids below it. Phi-3 pads its embedding past the tokenizer's
    vocabulary (32064 rows for 32011 tokens); the padding rows are not tokens.
    `tokenizer`: when given, its stop tokens and vocabulary size are the defaults of the two.

    A stop token ends generation and is not yielded. LongRoPE models: when the sequence grows past
    `original_max_position_embeddings`, the cache (built with the short factors) is recomputed over
    the whole sequence with the long factors, as the reference implementation does.
    """
    config = model.config
    ids, _ = fit_to_context(prompt_ids, config.max_position_embeddings)
    if not ids:
        raise InvalidInputError("the prompt is empty: give at least one token")
    rng = np.random.default_rng(seed)
    stats = stats if stats is not None else GenerationStats()
    if tokenizer is not None:
        stop_token_ids = tokenizer.stop_token_ids if stop_token_ids is None else stop_token_ids
        vocab_size = tokenizer.vocab_size if vocab_size is None else vocab_size
    stops = set(stop_token_ids or ())

    start = time.perf_counter()
    cache = model.new_cache(1, min(len(ids) + max_new_tokens, config.max_position_embeddings))
    logits = prefill(model, ids, cache)
    stats.prompt_tokens = len(ids)
    stats.prefill_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for step in range(max_new_tokens):
        token = sample_next_token(logits[:vocab_size], temperature, top_k, top_p, rng)
        if token in stops:
            break
        stats.generated_tokens += 1
        yield token
        ids.append(token)
        if step == max_new_tokens - 1 or len(ids) >= config.max_position_embeddings:
            break                                          # no forward pass whose logits go unused
        logits, cache = next_token_logits(model, ids, cache)
        stats.decode_seconds = time.perf_counter() - start


def prefill(model, ids, cache, chunk=PREFILL_CHUNK):
    """Logits [V] after the prompt `ids`, which fills the empty `cache`, `chunk` tokens per
    forward pass. With a cache that is the computation of one pass (each chunk attends to the
    cached keys of the chunks before it), and it keeps the activations of a long prompt small:
    a 512-token prompt to phi-3-mini needs 34 MB of attention scores per layer in one pass. A
    LongRoPE prompt longer than the original context goes in one pass, as its rotary factors
    depend on the whole length."""
    config = model.config
    if config.rope_scaling is not None and len(ids) > config.original_max_position_embeddings:
        chunk = len(ids)
    for start in range(0, len(ids), chunk):
        logits = model(np.array([ids[start:start + chunk]]), cache=cache, logits_to_keep=1)
    return logits[0, -1]


def next_token_logits(model, ids, cache):
    """Logits [V] after `ids`, whose last token is not yet in `cache`; returns (logits, cache).

    Normally one cached step. With LongRoPE, the first time the sequence grows past
    `original_max_position_embeddings`, the cached keys (rotated with the short factors) are
    dropped and the whole sequence is recomputed with the long factors, as the reference does.
    """
    config = model.config
    if config.rope_scaling is not None and cache.long_rope is False \
            and len(ids) > config.original_max_position_embeddings:
        cache = model.new_cache(1)
        return model(np.array([ids]), cache=cache, logits_to_keep=1)[0, -1], cache
    return model(np.array([ids[-1:]]), cache=cache)[0, -1], cache


class TextStreamer:
    """Turn a stream of token ids into a stream of text pieces, never splitting a character.

    A character outside ASCII may span several byte-fallback tokens; until its last byte arrives
    the decoded text ends in U+FFFD, so that tail is held back and emitted once complete.
    """

    def __init__(self, tokenizer, skip_special_tokens=True):
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self.ids = []
        self.emitted = 0

    def push(self, token_id) -> str:
        """Add one token; return the text that became final (possibly empty)."""
        self.ids.append(int(token_id))
        text = self.tokenizer.decode(self.ids, skip_special_tokens=self.skip_special_tokens)
        if text.endswith("\ufffd"):
            return ""
        piece, self.emitted = text[self.emitted:], len(text)
        return piece

    def flush(self) -> str:
        """Whatever is held back at the end (an incomplete character shows as U+FFFD)."""
        text = self.tokenizer.decode(self.ids, skip_special_tokens=self.skip_special_tokens)
        piece, self.emitted = text[self.emitted:], len(text)
        return piece
