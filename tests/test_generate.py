"""Sampling and the generation loop."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tinyphi3.config import preset
from tinyphi3.errors import ContextLengthError
from tinyphi3.inference.generate import (GenerationStats, TextStreamer, fit_to_context, generate,
                                         prefill, sample_next_token)
from tinyphi3.models.model import Phi3

logit_vectors = arrays(np.float32, st.integers(2, 50),
                       elements=st.floats(-20, 20, width=32, allow_nan=False))


@given(logits=logit_vectors)
def test_greedy_takes_the_argmax(logits):
    assert sample_next_token(logits, temperature=0.0) == int(np.argmax(logits))


@given(logits=logit_vectors, k=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_top_k_samples_only_among_the_k_most_likely(logits, k, seed):
    token = sample_next_token(logits, 1.0, top_k=k, rng=np.random.default_rng(seed))
    assert (logits > logits[token]).sum() < k


@given(logits=logit_vectors, p=st.floats(0.05, 1.0), seed=st.integers(0, 2**31))
def test_top_p_samples_only_inside_the_nucleus(logits, p, seed):
    """The sampled token's more-likely competitors hold less than p of the probability."""
    token = sample_next_token(logits, 1.0, top_p=p, rng=np.random.default_rng(seed))
    probs = np.exp(logits.astype(np.float64) - logits.max())
    probs /= probs.sum()
    assert probs[probs > probs[token]].sum() < p + 1e-9


def test_temperature_sampling_follows_the_softmax():
    logits = np.array([2.0, 1.0, 0.0, -1.0])
    rng = np.random.default_rng(0)
    draws = [sample_next_token(logits, 0.7, rng=rng) for _ in range(20000)]
    freq = np.bincount(draws, minlength=4) / len(draws)
    expected = np.exp(logits / 0.7) / np.exp(logits / 0.7).sum()
    np.testing.assert_allclose(freq, expected, atol=0.015)


def test_fit_to_context_refuses_or_trims_and_says_how_much():
    with pytest.raises(ContextLengthError, match="prompt is 10 tokens but the context holds 8"):
        fit_to_context(range(10), 8)
    ids, trimmed = fit_to_context(range(10), 8, trim=True)
    assert ids == list(range(3, 10)) and trimmed == 3
    assert fit_to_context([1, 2], 8) == ([1, 2], 0)


@pytest.fixture(scope="module")
def model():
    return Phi3(preset("tiny"), seed=2)


def test_generation_stops_at_a_stop_token_without_yielding_it(model):
    free = list(generate(model, [5, 6, 7], max_new_tokens=12))
    assert len(free) == 12
    stop = free[4]
    stopped = list(generate(model, [5, 6, 7], max_new_tokens=12, stop_token_ids=[stop]))
    assert stopped == free[:free.index(stop)]


def test_same_seed_same_sample_and_stats_count_phases(model):
    a = list(generate(model, [1, 2], 20, temperature=1.0, top_p=0.9, seed=3))
    stats = GenerationStats()
    b = list(generate(model, [1, 2], 20, temperature=1.0, top_p=0.9, seed=3, stats=stats))
    assert a == b
    assert stats.prompt_tokens == 2 and stats.generated_tokens == 20


def test_generation_ends_at_the_context(model):
    n = model.config.max_position_embeddings
    out = list(generate(model, list(range(1, n - 3)), max_new_tokens=50))
    assert len(out) == 4
    with pytest.raises(ContextLengthError):
        list(generate(model, list(range(n)), max_new_tokens=5))


class ByteTokenizer:
    """Each id is one UTF-8 byte: the hardest case for streaming."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


@given(text=st.text(min_size=1, max_size=40))
def test_streamer_never_splits_a_character(text):
    streamer = TextStreamer(ByteTokenizer())
    pieces = [streamer.push(b) for b in text.encode("utf-8")]
    pieces.append(streamer.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces if "\ufffd" not in text)


def test_padding_rows_of_the_embedding_are_never_sampled(model):
    """Only ids below the tokenizer's vocabulary size come out, whatever the logits say."""
    out = list(generate(model, [1, 2, 3], 40, temperature=5.0, seed=0, vocab_size=30))
    assert max(out) < 30
    assert max(generate(model, [1, 2, 3], 40, temperature=5.0, seed=0)) >= 30


def test_no_forward_pass_is_wasted_after_the_last_token(model):
    calls = []
    counting = type("Counting", (), {"config": model.config, "new_cache": model.new_cache,
                                     "__call__": lambda self, *a, **k: calls.append(1) or model(*a, **k)})()
    assert len(list(generate(counting, [1, 2], max_new_tokens=10))) == 10
    assert len(calls) == 10                      # prefill + 9 decode steps


def test_a_tokenizer_supplies_stop_tokens_and_vocabulary(model):
    free = list(generate(model, [1, 2, 3], 30, temperature=5.0, seed=0, vocab_size=40))
    tok = type("Tok", (), {"stop_token_ids": [free[3]], "vocab_size": 40})()
    assert list(generate(model, [1, 2, 3], 30, temperature=5.0, seed=0, tokenizer=tok)) == free[:3]


@pytest.mark.parametrize("chunk", [1, 4, 7, 64])
def test_prefill_in_chunks_is_one_pass(model, chunk):
    """Filling the cache a few tokens per pass gives the logits and the cache of one pass."""
    ids = list(np.random.default_rng(3).integers(3, 200, 23))
    one = model.new_cache(1)
    whole = model(np.array([ids]), cache=one)[0, -1]
    chunked = model.new_cache(1, capacity=len(ids))
    np.testing.assert_allclose(prefill(model, ids, chunked, chunk), whole, rtol=1e-5, atol=1e-5)
    assert chunked.length == one.length == len(ids)
    np.testing.assert_array_equal(chunked.next_position, one.next_position)
    for layer in range(model.config.num_hidden_layers):
        np.testing.assert_allclose(chunked._keys[layer][:, :, :len(ids)],
                                   one._keys[layer][:, :, :len(ids)], rtol=1e-5, atol=1e-5)
