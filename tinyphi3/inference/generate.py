"""Autoregressive generation: sampling, the prefill/decode loop, stop tokens, streaming text.

    prefill: logits = model(prompt, cache)             the prompt fills the KV cache
                                                       (256 tokens a pass)
    decode:  repeat: t = sample(logits[-1]); logits = model([t], cache)   one token per pass

Phi-3-vision (tinyphi3.models.vision.phi3v): its prompt holds image slots, negative ids (-k for
image k, one per image token), and `pixel_values`/`image_sizes` come with it. The images become
vectors once, before the prefill (`model.embed`); the prefill feeds those vectors, chunk by
chunk, into the cache; decoding is then plain text. Image slots count toward the context like
any token, and no trimming ever cuts them.
"""

import time
from dataclasses import dataclass

import numpy as np

from tinyphi3 import backends
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
    fit and trimming was not asked for. Negative ids are image slots (Phi-3-vision): they count
    toward the context, and a prompt whose images alone do not fit, or whose trimming would cut
    into an image's slots, raises InvalidInputError (an image is never cut).
    """
    prompt_ids = list(prompt_ids)
    room = context_length - 1
    if len(prompt_ids) <= room:
        return prompt_ids, 0
    slots = image_slot_count(prompt_ids)
    if slots > room:
        raise InvalidInputError(f"the images take {slots} tokens but the context holds "
                                f"{context_length} (at most {room} for the prompt): give fewer "
                                f"images, or a smaller num_crops in preprocessor_config.json")
    images = f" ({slots} of them for images)" if slots else ""
    if not trim:
        raise ContextLengthError(f"prompt is {len(prompt_ids)} tokens{images} but the context "
                                 f"holds {context_length} (at most {room} for the prompt)")
    cut = len(prompt_ids) - room
    if image_slot_count(prompt_ids[:cut]):
        raise InvalidInputError(f"prompt is {len(prompt_ids)} tokens{images} but the context "
                                f"holds {context_length}: trimming its first {cut} tokens would "
                                f"cut an image, which is never done; shorten the text or give "
                                f"fewer images")
    return prompt_ids[-room:], cut


def image_slot_count(ids) -> int:
    """How many ids are image slots: negative ids, -k for each token of image k (the
    Phi-3-vision processor's convention; token ids are never negative)."""
    return sum(1 for i in ids if i < 0)


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
             seed=None, stop_token_ids=None, stats=None, vocab_size=None, tokenizer=None,
             pixel_values=None, image_sizes=None):
    """Yield new token ids one at a time until a stop token, `max_new_tokens`, or the context end.

    `vocab_size`: sample only ids below it. Phi-3 pads its embedding past the tokenizer's
    vocabulary (32064 rows for 32011 tokens); the padding rows are not tokens.
    `tokenizer`: when given, its stop tokens and vocabulary size are the defaults of the two.
    `pixel_values`, `image_sizes`: a Phi-3-vision prompt's images (its processor's outputs),
    read at the prefill only; `prompt_ids` then hold their slots (negative ids).

    A stop token ends generation and is not yielded. LongRoPE models: when the sequence grows past
    `original_max_position_embeddings`, the cache (built with the short factors) is recomputed over
    the whole sequence with the long factors, as the reference implementation does.
    """
    config = model.config
    ids, _ = fit_to_context(prompt_ids, config.max_position_embeddings)
    if not ids:
        raise InvalidInputError("the prompt is empty: give at least one token")
    images = image_inputs(model, pixel_values, image_sizes)
    rng = np.random.default_rng(seed)
    stats = stats if stats is not None else GenerationStats()
    if tokenizer is not None:
        stop_token_ids = tokenizer.stop_token_ids if stop_token_ids is None else stop_token_ids
        vocab_size = tokenizer.vocab_size if vocab_size is None else vocab_size
    stops = set(stop_token_ids or ())

    start = time.perf_counter()
    cache = model.new_cache(1, min(len(ids) + max_new_tokens, config.max_position_embeddings))
    logits = prefill(model, ids, cache, **images)
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
        logits, cache = next_token_logits(model, ids, cache, **images)
        stats.decode_seconds = time.perf_counter() - start


def greedy_reply(model, prompt_ids, max_new_tokens, stop_token_ids, vocab_size=None):
    """(new ids, the stop token that ended them or None): `generate` at temperature 0 for one
    prompt, telling which stop token ended the reply (a chat turn's <|end|> or the text's end)."""
    out, ended = [], None
    for token in generate(model, list(prompt_ids), max_new_tokens=max_new_tokens,
                          stop_token_ids=(), vocab_size=vocab_size):
        if token in stop_token_ids:
            ended = token
            break
        out.append(token)
    return out, ended


def greedy_replies(model, prompts, max_new_tokens=256, stop_token_ids=None, vocab_size=None,
                   tokenizer=None, batch_size=16):
    """Greedy continuations of many prompts, `batch_size` at a time: [(new ids, the stop token
    that ended them or None)], one per prompt, in order. What `generate` gives each prompt alone
    at temperature 0, computed for a batch at once (evaluations ask hundreds of short prompts).

    A batch is left-padded to its longest prompt with an attention mask, fills one KV cache in one
    pass, then decodes one token per row per pass; a finished row keeps being fed (its outputs
    are dropped) until every row is done. The logits of a row are those of its prompt alone up to
    float rounding (tests/test_model.py), so a greedy pick can differ only where two logits tie
    to rounding. A prompt that would reach the end of the context is generated alone
    (greedy_reply: `generate` stops there)."""
    if tokenizer is not None:
        stop_token_ids = tokenizer.stop_token_ids if stop_token_ids is None else stop_token_ids
        vocab_size = tokenizer.vocab_size if vocab_size is None else vocab_size
    stops = set(stop_token_ids or ())
    context = model.config.max_position_embeddings
    results = [None] * len(prompts)
    together = []
    for i, ids in enumerate(prompts):
        if not len(ids):
            raise InvalidInputError("the prompt is empty: give at least one token")
        if len(ids) + max_new_tokens <= context:
            together.append(i)
            continue
        results[i] = greedy_reply(model, ids, max_new_tokens, stops, vocab_size)   # alone
    for start in range(0, len(together), batch_size):
        rows = together[start:start + batch_size]
        for i, reply in zip(rows, _greedy_batch(model, [prompts[i] for i in rows],
                                                max_new_tokens, stops, vocab_size)):
            results[i] = reply
    return results


def _greedy_batch(model, prompts, max_new_tokens, stops, vocab_size):
    B, T = len(prompts), max(len(ids) for ids in prompts)
    ids = np.zeros((B, T), dtype=np.int64)
    mask = np.zeros((B, T), dtype=np.int64)
    for row, prompt in enumerate(prompts):                 # left padding: tokens at the end
        ids[row, T - len(prompt):], mask[row, T - len(prompt):] = prompt, 1
    cache = model.new_cache(B, T + max_new_tokens)
    logits = model(ids, attention_mask=mask, cache=cache, logits_to_keep=1)[:, -1]   # [B, V]
    outs, ended, done = [[] for _ in range(B)], [None] * B, np.zeros(B, dtype=bool)
    for _ in range(max_new_tokens):
        tokens = np.argmax(logits[:, :vocab_size], axis=-1)                          # [B]
        for row in np.flatnonzero(~done):
            token = int(tokens[row])
            if token in stops:
                done[row], ended[row] = True, token
            else:
                outs[row].append(token)
                done[row] = len(outs[row]) == max_new_tokens
        if done.all():
            break
        logits = model(tokens[:, None].astype(np.int64), cache=cache)[:, -1]
    backends.give_back_kept_memory()
    return list(zip(outs, ended))


def image_inputs(model, pixel_values, image_sizes) -> dict:
    """The keyword arguments that carry a prompt's images to the model ({} without images)."""
    if pixel_values is None and image_sizes is None:
        return {}
    if getattr(model.config, "vision", None) is None:
        raise InvalidInputError(f"this model reads no images (model_type "
                                f"{model.config.model_type!r}): pixel_values need a Phi-3-vision "
                                f"model (model_type 'phi3_v')")
    return {"pixel_values": pixel_values, "image_sizes": image_sizes}


def prefill(model, ids, cache, chunk=PREFILL_CHUNK, pixel_values=None, image_sizes=None):
    """Logits [V] after the prompt `ids`, which fills the empty `cache`, `chunk` tokens per
    forward pass. With a cache that is the computation of one pass (each chunk attends to the
    cached keys of the chunks before it), and it keeps the activations of a long prompt small:
    a 512-token prompt to phi-3-mini needs 34 MB of attention scores per layer in one pass. A
    LongRoPE prompt longer than the original context goes in one pass, as its rotary factors
    depend on the whole length.

    With images (Phi-3-vision), the whole prompt is embedded first, so the vision tower runs
    once whatever the chunks; each pass then takes its slice of those vectors."""
    config = model.config
    if config.rope_scaling is not None and len(ids) > config.original_max_position_embeddings:
        chunk = len(ids)
    embeds = None
    if pixel_values is not None or image_sizes is not None:
        embeds = model.embed(np.array([ids]), pixel_values, image_sizes)   # [1, T, D]
    for start in range(0, len(ids), chunk):
        piece = np.array([ids[start:start + chunk]])                      # [1, chunk]
        if embeds is None:
            logits = model(piece, cache=cache, logits_to_keep=1)
        else:
            logits = model(piece, cache=cache, logits_to_keep=1,
                           inputs_embeds=embeds[:, start:start + chunk])
    backends.give_back_kept_memory()                   # the chunks' activations, not the cache
    return logits[0, -1]


def next_token_logits(model, ids, cache, **images):
    """Logits [V] after `ids`, whose last token is not yet in `cache`; returns (logits, cache).

    Normally one cached step. With LongRoPE, the first time the sequence grows past
    `original_max_position_embeddings`, the cached keys (rotated with the short factors) are
    dropped and the whole sequence is recomputed with the long factors, as the reference does;
    a Phi-3-vision prompt's images (`pixel_values`, `image_sizes`) go into that pass again.
    """
    config = model.config
    if config.rope_scaling is not None and cache.long_rope is False \
            and len(ids) > config.original_max_position_embeddings:
        cache = model.new_cache(1)
        return model(np.array([ids]), cache=cache, logits_to_keep=1, **images)[0, -1], cache
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
