"""The decoder: cached decoding equals the full pass, batches equal single prompts, bad input."""

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from tinyphi3.config import preset
from tinyphi3.errors import InvalidInputError
from tinyphi3.models.model import Phi3

MODELS = {name: Phi3(preset(name), seed=1) for name in ("tiny", "tiny-gqa", "tiny-longrope")}
V = 512


@given(name=st.sampled_from(sorted(MODELS)), T=st.integers(2, 48),
       data=st.data(), seed=st.integers(0, 2**31))
def test_kv_cached_decoding_equals_full_forward_at_every_split(name, T, data, seed):
    """Prefill `split` tokens, then feed the rest in chunks: logits equal the full pass. The
    longrope model's original length is 32, so splits on both sides of it occur (the forward
    pass uses the factor set of the total length, as the reference's does)."""
    model = MODELS[name]
    ids = np.random.default_rng(seed).integers(0, V, size=(2, T))
    full = model(ids)
    split = data.draw(st.integers(1, T - 1), label="split")
    chunk = data.draw(st.integers(1, T - split), label="chunk")
    # Crossing the factor switch with a cache is what generation recomputes (test_parity).
    assume(not (name == "tiny-longrope" and split <= 32 < T))
    cache = model.new_cache(2)
    parts = [model(ids[:, :split], cache=cache)]
    for start in range(split, T, chunk):
        parts.append(model(ids[:, start:start + chunk], cache=cache))
    np.testing.assert_allclose(np.concatenate(parts, axis=1), full, atol=2e-5, rtol=0)
    assert cache.length == T


@given(name=st.sampled_from(sorted(MODELS)), lengths=st.lists(st.integers(1, 20), min_size=2,
                                                               max_size=4),
       seed=st.integers(0, 2**31))
def test_batched_padded_prefill_equals_each_prompt_alone(name, lengths, seed):
    """Left-padded prompts of different lengths with a mask give each prompt's own logits, and
    continuing the batch with the cache stays equal to continuing each prompt alone."""
    model = MODELS[name]
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(0, V, size=n) for n in lengths]
    T = max(lengths)
    ids = np.zeros((len(prompts), T), np.int64)
    mask = np.zeros((len(prompts), T), np.int64)
    for b, p in enumerate(prompts):
        ids[b, T - len(p):], mask[b, T - len(p):] = p, 1
    cache = model.new_cache(len(prompts))
    batched = model(ids, attention_mask=mask, cache=cache)
    nxt = rng.integers(0, V, size=(len(prompts), 1))
    step = model(nxt, cache=cache)
    for b, p in enumerate(prompts):
        alone = model(np.concatenate([p, nxt[b]])[None])
        np.testing.assert_allclose(batched[b, T - len(p):], alone[0, :-1], atol=2e-5, rtol=0)
        np.testing.assert_allclose(step[b, 0], alone[0, -1], atol=2e-5, rtol=0)


def test_inputs_embeds_equal_token_ids():
    model = MODELS["tiny"]
    ids = np.array([[5, 9, 2, 7]])
    embeds = model.params["model.embed_tokens.weight"][ids]
    np.testing.assert_array_equal(model(ids), model(None, inputs_embeds=embeds))


def test_logits_to_keep_returns_the_last_positions():
    model = MODELS["tiny-gqa"]
    ids = np.arange(10)[None]
    np.testing.assert_allclose(model(ids, logits_to_keep=3), model(ids)[:, -3:], atol=1e-6)


def test_logits_are_float32_with_vocab_width():
    out = MODELS["tiny"](np.array([[1, 2, 3]]))
    assert out.dtype == np.float32 and out.shape == (1, 3, V)


@pytest.mark.parametrize("bad, message", [
    (np.array([1, 2, 3]), "input_ids must be"),
    (np.zeros((1, 0), np.int64), "input_ids must be"),
    (np.array([[0.5, 1.0]]), "input_ids must be"),
    (np.array([[1, V]]), "token ids must lie in"),
    (np.array([[-1, 3]]), "token ids must lie in"),
])
def test_bad_input_ids_raise_a_named_error(bad, message):
    with pytest.raises(InvalidInputError, match=message):
        MODELS["tiny"](bad)


def test_bad_mask_and_cache_raise_named_errors():
    model = MODELS["tiny"]
    with pytest.raises(InvalidInputError, match="attention_mask must have shape"):
        model(np.array([[1, 2]]), attention_mask=np.ones((1, 3)))
    with pytest.raises(InvalidInputError, match="cache holds 2 rows"):
        model(np.array([[1, 2]]), cache=model.new_cache(2))
