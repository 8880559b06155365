"""Context extension methods written as LongRoPE factors (tinyphi3.nn.rope_scaling), checked
against their definitions, against transformers' own implementations of linear (PI) and YaRN
scaling, and end to end: an extended tinyphi3 checkpoint gives transformers' Phi3 logits."""

import math

import numpy as np
import pytest
import torch
import transformers
from hypothesis import given, settings, strategies as st
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from tinyphi3.config import Phi3Config
from tinyphi3.errors import ConfigError
from tinyphi3.models.model import Phi3
from tinyphi3.nn import rope_scaling
from tinyphi3.nn.rope import rope_frequencies, rope_inv_freq

scales = st.floats(1.0, 64.0)
rotary_dims = st.integers(2, 64).map(lambda half: 2 * half)           # even, 4 .. 128
thetas = st.sampled_from([100.0, 10000.0, 500000.0])
lengths = st.sampled_from([16, 64, 512, 4096])


def hf_rope_config(rotary_dim, theta, rope_parameters):
    """A transformers config whose head dimension is `rotary_dim` (Llama's: Phi3Config accepts
    only longrope as a rope type)."""
    return transformers.LlamaConfig(hidden_size=rotary_dim * 2, num_attention_heads=2,
                                    rope_parameters={"rope_theta": theta, **rope_parameters})


@given(rotary_dims, scales, thetas, lengths)
def test_every_baseline_is_monotone_between_1_and_s(d, s, theta, L0):
    for method in ("pi", "ntk", "yarn"):
        factors, attention = rope_scaling.method_factors(method, d, theta, L0, s)
        assert len(factors) == d // 2
        assert np.all(np.diff(factors) >= -1e-12 * s), (method, factors)
        assert min(factors) >= 1 - 1e-12 and max(factors) <= s * (1 + 1e-12), (method, factors)
        assert attention >= 1


@given(rotary_dims, scales, st.integers(0, 100_000))
def test_pi_angle_at_p_is_plain_angle_at_p_over_s(d, s, p):
    scaled = rope_inv_freq(d, 10000.0, rope_scaling.pi_factors(d, s)) * np.float64(p)
    plain = rope_inv_freq(d, 10000.0) * (np.float64(p) / s)
    np.testing.assert_allclose(scaled, plain, rtol=1e-6)


@given(rotary_dims, scales, thetas)
def test_ntk_is_plain_rope_with_a_larger_base(d, s, theta):
    """theta' = theta s^(d / (d - 2))."""
    ours = rope_inv_freq(d, theta, rope_scaling.ntk_factors(d, s))
    plain = rope_inv_freq(d, theta * s ** (d / (d - 2)))
    np.testing.assert_allclose(ours, plain, rtol=2e-6)
    assert ours[0] == rope_inv_freq(d, theta)[0]                 # the fastest frequency kept


@settings(max_examples=40)
@given(rotary_dims, scales, thetas)
def test_pi_equals_transformers_linear_scaling(d, s, theta):
    inv_freq, attention = ROPE_INIT_FUNCTIONS["linear"](
        hf_rope_config(d, theta, {"rope_type": "linear", "factor": s}))
    ours = rope_inv_freq(d, theta, rope_scaling.pi_factors(d, s))
    np.testing.assert_allclose(ours, inv_freq.numpy(), rtol=1e-6)
    assert attention == 1.0


@settings(max_examples=60)
@given(rotary_dims, scales, thetas, lengths)
def test_yarn_equals_transformers_yarn(d, s, theta, L0):
    """transformers' `_compute_yarn_parameters` with its defaults (beta_fast 32, beta_slow 1,
    truncated ramp, attention factor 0.1 ln s + 1)."""
    inv_freq, attention = ROPE_INIT_FUNCTIONS["yarn"](hf_rope_config(
        d, theta, {"rope_type": "yarn", "factor": s, "original_max_position_embeddings": L0}))
    factors, ours_attention = rope_scaling.method_factors("yarn", d, theta, L0, s)
    np.testing.assert_allclose(rope_inv_freq(d, theta, factors), inv_freq.numpy(), rtol=2e-6)
    assert ours_attention == pytest.approx(attention, rel=1e-12)


def test_yarn_keeps_fast_frequencies_and_interpolates_slow_ones():
    """The shipped mini's numbers: d = 32, theta 1e4, L0 = 512, s = 8."""
    factors = rope_scaling.yarn_factors(32, 10000.0, 512, 8.0)
    assert factors[:2] == [1.0, 1.0] and factors[8:] == [8.0] * 8
    assert 1.0 < factors[4] < 8.0


def test_longrope_magnitude_matches_the_config():
    config = rope_scaling.extend_config(Phi3Config(max_position_embeddings=512,
                                                   original_max_position_embeddings=512),
                                        "longrope", 4096)
    expected = math.sqrt(1 + math.log(8) / math.log(512))
    assert rope_scaling.longrope_attention_factor(8, 512) == pytest.approx(expected)
    assert config.longrope_attention_factor == pytest.approx(expected)
    assert "attention_factor" not in config.rope_scaling         # as the published 128K config


def tiny_config(**changes):
    """A plain-RoPE model trained (say) at 32 tokens; large initial weights, so that attention is
    sharp and the angles matter to the logits."""
    return Phi3Config(**{**dict(vocab_size=97, hidden_size=64, intermediate_size=96,
                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                max_position_embeddings=32, original_max_position_embeddings=32,
                                rope_theta=100.0, initializer_range=0.3, bos_token_id=1,
                                eos_token_id=2, pad_token_id=0), **changes})


def test_extend_config_writes_the_128k_layout():
    config = rope_scaling.extend_config(tiny_config(), "yarn", 128)
    assert config.max_position_embeddings == 128
    assert config.original_max_position_embeddings == 32
    assert config.rope_scaling["type"] == "longrope"
    assert config.rope_scaling["short_factor"] == [1.0] * 8
    assert config.rope_scaling["long_factor"] == rope_scaling.yarn_factors(16, 100.0, 32, 4.0)
    assert config.rope_scaling["attention_factor"] == pytest.approx(0.1 * math.log(4) + 1)
    # short sequences keep the trained angles, long ones take the long factors
    assert np.array_equal(rope_frequencies(config, 32)[0], rope_inv_freq(16, 100.0))
    assert np.array_equal(rope_frequencies(config, 33)[0],
                          rope_inv_freq(16, 100.0, config.rope_scaling["long_factor"]))
    searched = [1.0, 1.0, 1.5, 2.0, 3.0, 4.0, 4.5, 5.0]
    assert rope_scaling.extend_config(tiny_config(), "longrope", 128, searched) \
        .rope_scaling["long_factor"] == searched


@pytest.mark.parametrize("bad, message", [
    (dict(length=32), "must be longer than the context the model was trained at, 32"),
    (dict(length=16), "must be longer"),
    (dict(method="rope"), "unknown context extension method"),
    (dict(config=rope_scaling.extend_config(tiny_config(), "pi", 64)), "already runs at 64"),
    (dict(long_factor=[1.0, 2.0]), "long_factor must have rotary_dim/2 = 8 entries"),
])
def test_extend_config_refuses_with_one_clear_message(bad, message):
    args = {"config": tiny_config(), "method": "longrope", "length": 128, **bad}
    with pytest.raises(ConfigError, match=message):
        rope_scaling.extend_config(args["config"], args["method"], args["length"],
                                   bad.get("long_factor"))


@pytest.mark.parametrize("method", rope_scaling.METHODS)
def test_extended_checkpoint_gives_transformers_logits(tmp_path, method):
    """Max |Δ logits| <= 1e-4 at fp32 past L0 (80 tokens, long factors) and within it (20,
    short factors and the magnitude); the extension does change the logits past L0, by far more
    than that (the negative control)."""
    plain = Phi3(tiny_config(), seed=3)
    config = rope_scaling.extend_config(plain.config, method, 128)
    ours = Phi3(config, params=plain.params)
    ours.save_pretrained(tmp_path)
    theirs = transformers.Phi3ForCausalLM.from_pretrained(tmp_path).eval()
    ids = np.random.default_rng(0).integers(0, 97, (2, 80))
    for T in (80, 20):
        with torch.no_grad():
            expected = theirs(torch.tensor(ids[:, :T])).logits.numpy()
        np.testing.assert_allclose(ours(ids[:, :T]), expected, atol=1e-4, rtol=0)
    assert np.abs(ours(ids) - plain(ids)).max() > 1e-2
