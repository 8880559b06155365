"""phi-3-small as configuration of the same model: config.json in the published layout, its layers
(LayerNorm, GEGELU) against finite differences and torch, and the whole model against an
independent torch implementation (tests/phi3_small_reference.py, since transformers has no
phi-3-small) on random tiny checkpoints written in the published layout: logits over many blocks,
cached generation, padding, gradients, and each μP detail on its own; phi-3-small-128K's LongRoPE
on both sides of its switch, and across it during cached generation."""

import json

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from phi3_small_reference import Phi3SmallReference, gegelu as torch_gegelu
from safetensors.torch import save_file
from test_autograd import check_gradient

from tinyphi3 import backends
from tinyphi3.nn.attention import attention, causal_mask
from tinyphi3.nn.autograd import differentiable
from tinyphi3.nn.blocksparse import blocksparse_layout, blocksparse_mask
from tinyphi3.config import (PHI3SMALL_DUMMY_TOKEN_IDS, PHI3SMALL_PRESETS, Phi3Config,
                             phi3small_config, preset)
from tinyphi3.errors import ConfigError, MissingTensorError
from tinyphi3.inference.generate import generate, next_token_logits, prefill
from tinyphi3.nn.layers import gegelu, layer_norm
from tinyphi3.models.model import Phi3
from tinyphi3.models.weights import parameter_shapes
from tinyphi3.config.small import longrope_magnitude
from tinyphi3.models.phi3_small import blocksparse_padded_mask
from tinyphi3.train.optim import AdamW

seeds = st.integers(0, 2**31)
TOL = 1e-4
BACKENDS = ["numpy", "numba"]

# phi-3-small-8k-instruct's config.json, as published (keys and values).
PUBLISHED_8K = {
    "_name_or_path": "Phi-3-small-8k-instruct", "architectures": ["Phi3SmallForCausalLM"],
    "attention_dropout_prob": 0.0,
    "auto_map": {"AutoConfig": "configuration_phi3_small.Phi3SmallConfig",
                 "AutoModelForCausalLM": "modeling_phi3_small.Phi3SmallForCausalLM",
                 "AutoTokenizer": "tokenization_phi3_small.Phi3SmallTokenizer"},
    "blocksparse_block_size": 64, "blocksparse_homo_head_pattern": False,
    "blocksparse_num_local_blocks": 16, "blocksparse_triton_kernel_block_size": 64,
    "blocksparse_vert_stride": 8, "bos_token_id": 100257, "dense_attention_every_n_layers": 2,
    "embedding_dropout_prob": 0.1, "eos_token_id": 100257, "ff_dim_multiplier": None,
    "ff_intermediate_size": 14336, "ffn_dropout_prob": 0.1, "gegelu_limit": 20.0,
    "gegelu_pad_to_256": True, "hidden_act": "gegelu", "hidden_size": 4096,
    "initializer_range": 0.02, "layer_norm_epsilon": 1e-05, "max_position_embeddings": 8192,
    "model_type": "phi3small", "mup_attn_multiplier": 1.0, "mup_embedding_multiplier": 10.0,
    "mup_use_scaling": True, "mup_width_multiplier": 8.0, "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "pad_sequence_to_multiple_of_64": True,
    "reorder_and_upcast_attn": False, "rope_embedding_base": 1000000, "rope_position_scale": 1.0,
    "torch_dtype": "bfloat16", "transformers_version": "4.38.1", "use_cache": True,
    "vocab_size": 100352,
}

V = 97
DUMMIES = [94, 95, 96]          # the last rows of the vocabulary are padding, as in phi-3-small


def tiny_published_config(**changes) -> dict:
    """A tiny config.json in the published layout; 4-token blocks, so 40 tokens cross 10."""
    d = {k: v for k, v in PUBLISHED_8K.items() if k != "_name_or_path"}
    d.update(vocab_size=V, hidden_size=32, ff_intermediate_size=48, num_hidden_layers=4,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
             blocksparse_block_size=4, blocksparse_triton_kernel_block_size=4,
             blocksparse_num_local_blocks=2, blocksparse_vert_stride=3, gegelu_limit=1.0,
             bos_token_id=1, eos_token_id=2, torch_dtype="float32",
             dummy_token_indices=DUMMIES)
    d.update(changes)
    return d


def write_checkpoint(directory, config: dict, seed=0):
    """Random torch weights under the published tensor names, saved with safetensors."""
    torch.manual_seed(seed)
    C, I, L = config["hidden_size"], config["ff_intermediate_size"], config["num_hidden_layers"]
    H, KV = config["num_attention_heads"], config["num_key_value_heads"]
    hd = C // H
    def linear(p, out, inp):
        tensors[p + ".weight"] = torch.randn(out, inp) / inp ** 0.5
        tensors[p + ".bias"] = torch.randn(out) * 0.1
    def norm(p):
        tensors[p + ".weight"] = 1 + 0.2 * torch.randn(C)
        tensors[p + ".bias"] = 0.1 * torch.randn(C)
    tensors = {"model.embed_tokens.weight": torch.randn(config["vocab_size"], C) * 0.5}
    for i in range(L):
        p = f"model.layers.{i}."
        norm(p + "input_layernorm")
        linear(p + "self_attn.query_key_value", (H + 2 * KV) * hd, C)
        linear(p + "self_attn.dense", C, C)
        norm(p + "post_attention_layernorm")
        linear(p + "mlp.up_proj", 2 * I, C)
        linear(p + "mlp.down_proj", C, I)
    norm("model.final_layernorm")
    if not config.get("tie_word_embeddings", True):
        tensors["lm_head.weight"] = torch.randn(config["vocab_size"], C) * 0.5
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory


CASES = {
    "gqa": {},
    "mha_homo_heads": {"num_key_value_heads": 4, "blocksparse_homo_head_pattern": True},
    # 2 heads, stride 5: head_sliding_step = int(5 / 2) = 2, so head 1's vertical blocks sit 2 apart
    "few_heads_wide_stride": {"num_attention_heads": 2, "num_key_value_heads": 1,
                              "blocksparse_vert_stride": 5},
    # every layer sparse; no μP attention scale (1/sqrt(d)); scaled positions; untied head
    "all_sparse_untied": {"dense_attention_every_n_layers": 0, "mup_use_scaling": False,
                          "rope_position_scale": 0.5, "tie_word_embeddings": False,
                          "blocksparse_num_local_blocks": 1, "gegelu_limit": None},
}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("phi3small")
    return {name: write_checkpoint(root / name, tiny_published_config(**changes), seed=k)
            for k, (name, changes) in enumerate(CASES.items())}


def token_ids(rng, batch, length):
    return rng.integers(0, V - len(DUMMIES), size=(batch, length))


def reference_logits(directory, ids, **kwargs):
    with torch.no_grad():
        return Phi3SmallReference(directory).forward(torch.tensor(ids), **kwargs).numpy()


def real_rows(logits):
    """The logits of the real vocabulary (the dummy rows hold the float32 minimum)."""
    return logits[..., :V - len(DUMMIES)]


# ---- configuration ------------------------------------------------------------------------------
def test_published_config_reads_as_the_preset_and_round_trips():
    config = Phi3Config.from_dict(PUBLISHED_8K)
    assert config == preset("phi-3-small-8k")
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.num_key_value_heads, config.head_dim, config.intermediate_size,
            config.vocab_size) == (4096, 32, 32, 8, 128, 14336, 100352)
    assert (config.rope_theta, config.norm_eps, config.gegelu_limit) == (1e6, 1e-5, 20.0)
    assert config.tie_word_embeddings and config.pad_token_id is None
    assert [config.uses_blocksparse(i) for i in range(4)] == [True, False, True, False]
    written = config.to_dict()
    unwritten = ("_name_or_path", "auto_map", "torch_dtype", "transformers_version")
    assert written == {k: v for k, v in PUBLISHED_8K.items() if k not in unwritten}
    assert list(written) == sorted(written)


@pytest.mark.parametrize("name", PHI3SMALL_PRESETS)
def test_presets_round_trip_through_config_json(tmp_path, name):
    config = preset(name)
    config.save(tmp_path / "config.json")
    assert Phi3Config.from_json_file(tmp_path / "config.json") == config
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "phi3small"


def test_keys_the_model_does_not_read_are_carried():
    d = dict(PUBLISHED_8K, embedding_dropout_prob=0.0, some_future_key=[1, 2])
    written = Phi3Config.from_dict(d).to_dict()
    assert written["embedding_dropout_prob"] == 0.0 and written["some_future_key"] == [1, 2]


def test_intermediate_size_from_ff_dim_multiplier():
    # the published rule: multiplier * (hidden // 3) * 2, rounded up to a multiple of 256
    d = dict(PUBLISHED_8K, ff_intermediate_size=None, ff_dim_multiplier=4)
    assert Phi3Config.from_dict(d).intermediate_size == 11008      # 4 * 1365 * 2 = 10920 -> 11008
    d = dict(d, hidden_size=3072, num_attention_heads=24, gegelu_pad_to_256=False)
    assert Phi3Config.from_dict(d).intermediate_size == 8192       # 4 * 1024 * 2, not padded
    with pytest.raises(ConfigError, match="not both"):
        Phi3Config.from_dict(dict(PUBLISHED_8K, ff_dim_multiplier=4))


def test_phi3_small_8k_size_and_dummy_vocabulary():
    config = preset("phi-3-small-8k")
    n = sum(int(np.prod(s)) for s in parameter_shapes(config).values())
    assert 7.3e9 < n < 7.5e9                                      # "7B parameters" (report §2)
    dummies = set(config.dummy_token_ids)
    assert dummies == set(PHI3SMALL_DUMMY_TOKEN_IDS) and len(dummies) == 91
    assert {100256, 100258, 100276, 100277, 100351} <= dummies    # unused specials and padding
    assert not dummies & {100257, 100261, 100262, 100263, 100266}  # endoftext, roles, end
    assert config.vocab_size - len(dummies) == 100261


@pytest.mark.parametrize("changes, message", [
    ({"num_attention_heads": 4, "num_key_value_heads": 3}, "not divisible by num_key_value_heads"),
    ({"hidden_size": 30}, "not divisible by num_attention_heads"),
    ({"hidden_act": "silu"}, "phi3small uses 'gegelu'"),
    ({"blocksparse_block_size": 0}, "blocksparse_block_size must be a positive integer"),
    ({"blocksparse_vert_stride": 2.5}, "blocksparse_vert_stride"),
    ({"dense_attention_every_n_layers": -1}, "dense_attention_every_n_layers"),
    ({"mup_width_multiplier": -8.0}, "mup_width_multiplier"),
    ({"blocksparse_homo_head_pattern": "no"}, "blocksparse_homo_head_pattern"),
    ({"rope_scaling": {"type": "longrope", "short_factor": [1.0] * 4,
                       "long_factor": [1.0] * 4}}, "rope_scaling"),
    ({"dummy_token_indices": [5, 97]}, "dummy_token_indices"),
    ({"ff_intermediate_size": None}, "ff_intermediate_size or ff_dim_multiplier"),
])
def test_inconsistent_phi3small_configs_raise_config_error(changes, message):
    with pytest.raises(ConfigError, match=message):
        Phi3Config.from_dict(tiny_published_config(**changes))


def test_phi3small_options_are_refused_on_phi3():
    with pytest.raises(ConfigError, match="mup_width_multiplier is an option of model_type"):
        preset("tiny").replace(mup_width_multiplier=8.0)
    mini = Phi3Config.from_dict({**preset("tiny").to_dict(), "gegelu_limit": 20.0})
    assert mini.gegelu_limit is None and mini.to_dict()["gegelu_limit"] == 20.0   # carried


# ---- the layers ---------------------------------------------------------------------------------
shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


@given(shape=shapes, seed=seeds)
def test_layer_norm_gradient_and_torch(shape, seed):
    rng = np.random.default_rng(seed)
    x, w, b = rng.standard_normal(shape), rng.standard_normal(shape[-1:]), rng.standard_normal(
        shape[-1:])
    check_gradient(lambda x, w, b: layer_norm(x, w, b, 1e-5), x, w, b)
    theirs = torch.nn.functional.layer_norm(torch.tensor(x), shape[-1:], torch.tensor(w),
                                            torch.tensor(b), 1e-5)
    np.testing.assert_allclose(layer_norm(x, w, b, 1e-5), theirs.numpy(), rtol=1e-10, atol=1e-12)


@given(lead=shapes, half=st.integers(1, 4), limit=st.sampled_from([None, 20.0, 0.7]),
       seed=seeds)
def test_gegelu_gradient_and_torch(lead, half, limit, seed):
    x = np.random.default_rng(seed).standard_normal((*lead, 2 * half)) * 1.5
    check_gradient(lambda x: gegelu(x, limit), x)
    theirs = torch_gegelu(torch.tensor(x), limit).numpy()
    np.testing.assert_allclose(gegelu(x, limit), theirs, rtol=1e-12, atol=1e-12)


def test_gegelu_splits_interleaved_channels_and_clamps():
    x = np.array([[3.0, 0.5, -1.0, 30.0, 25.0, -25.0, np.inf, 0.0]])
    a, b = np.array([3.0, -1.0, 20.0, np.inf]), np.array([0.5, 20.0, -20.0, 0.0])
    want = a / (1 + np.exp(-1.702 * a)) * (b + 1)
    np.testing.assert_allclose(gegelu(x, 20.0), want[None])


def test_the_gegelu_check_catches_a_missing_clamp():
    """Negative control: a rule that forgets the clamp's zero derivative fails the check."""
    def no_clamp(g, out, x, limit):
        a, b = x[..., 0::2], np.clip(x[..., 1::2], -limit, limit)
        s = 1 / (1 + np.exp(-1.702 * np.minimum(a, limit)))
        q = np.minimum(a, limit) * s
        dx = np.empty_like(x)
        dx[..., 0::2] = g * (b + 1) * (s + 1.702 * np.minimum(a, limit) * s * (1 - s))
        dx[..., 1::2] = g * q
        return dx, None
    wrong = differentiable(no_clamp)(gegelu.__wrapped__)
    x = np.random.default_rng(0).standard_normal((3, 8)) * 2.0
    check_gradient(lambda x: gegelu(x, 0.5), x)
    with pytest.raises(AssertionError):
        check_gradient(lambda x: wrong(x, 0.5), x)


@given(kv=st.integers(1, 2), g=st.integers(1, 3), t=st.integers(1, 9), seed=seeds)
def test_attention_with_a_mask_per_head(kv, g, t, seed):
    rng = np.random.default_rng(seed)
    H = kv * g
    layout = blocksparse_layout(H, -(-t // 2), 1, 2)
    mask = blocksparse_mask(layout, t, t, 2)[None]             # [1, H, T, S]
    q, k, v = rng.standard_normal((1, H, t, 3)), rng.standard_normal((1, kv, t, 3)), \
        rng.standard_normal((1, kv, t, 3))
    check_gradient(lambda q, k, v: attention(q, k, v, mask, 0.5), q, k, v)
    shared = causal_mask(np.arange(t), np.ones((1, t), bool))  # [1, 1, T, S]
    np.testing.assert_allclose(attention(q, k, v, np.repeat(shared, H, axis=1), 0.5),
                               attention(q, k, v, shared, 0.5), rtol=1e-12)


@given(heads=st.integers(1, 6), T=st.integers(1, 30), past=st.integers(0, 20),
       block=st.integers(1, 5), homo=st.booleans())
def test_padded_mask_without_padding_is_the_block_sparse_mask(heads, T, past, block, homo):
    S = past + T
    layout = blocksparse_layout(heads, -(-S // block), 2, 3, homo_head=homo)
    ours = blocksparse_padded_mask(layout, block, np.ones((1, S), bool), T)
    np.testing.assert_array_equal(ours[0], blocksparse_mask(layout, T, S, block, past))


def test_padded_mask_counts_blocks_from_each_rows_first_token():
    layout = blocksparse_layout(1, 4, 1, 2)                    # one local block; 1, 3 vertical
    valid = np.array([[True] * 7, [False] * 3 + [True] * 4])
    mask = blocksparse_padded_mask(layout, 2, valid, 7)        # [2, 1, 7, 7]
    np.testing.assert_array_equal(mask[1, 0, 3:, 3:], blocksparse_mask(layout, 4, 4, 2)[0])
    assert not mask[1, 0, :, :3].any() and not mask[1, 0, :3].any()   # padding seen by none


# ---- the model against the torch reference ------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES)
def test_logits_match_the_reference(checkpoints, case, backend):
    ids = token_ids(np.random.default_rng(1), 2, 40)           # 10 blocks of 4 tokens
    ours = Phi3.from_pretrained(checkpoints[case])
    with backends.use_backend(backend):
        got = ours(ids)
    want = reference_logits(checkpoints[case], ids)
    assert got.shape == want.shape == (2, 40, V) and got.dtype == np.float32
    assert np.abs(real_rows(got) - real_rows(want)).max() <= TOL
    np.testing.assert_array_equal(got[..., DUMMIES], want[..., DUMMIES])


def test_the_block_pattern_matters(checkpoints):
    """Negative control for the test above: the same weights under dense attention everywhere
    give other logits past the local blocks, so the comparison sees the block-sparse pattern."""
    ids = token_ids(np.random.default_rng(1), 1, 40)
    ours = Phi3.from_pretrained(checkpoints["gqa"])
    dense = Phi3(ours.config.replace(blocksparse_num_local_blocks=100), ours.params)
    assert np.abs(real_rows(ours(ids)[:, 8:] - dense(ids)[:, 8:])).max() > 1e-3
    np.testing.assert_allclose(ours(ids)[:, :8], dense(ids)[:, :8], atol=1e-5)  # 2 local blocks


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["gqa", "all_sparse_untied"])
def test_cached_decoding_equals_the_full_forward(checkpoints, case, backend):
    ids = token_ids(np.random.default_rng(2), 1, 40)
    model = Phi3.from_pretrained(checkpoints[case])
    with backends.use_backend(backend):
        full = model(ids)
        cache = model.new_cache(1)
        pieces = [model(ids[:, :13], cache=cache), model(ids[:, 13:18], cache=cache)]
        pieces += [model(ids[:, t:t + 1], cache=cache) for t in range(18, 40)]
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=0, atol=2e-5)


def test_numba_inference_reaches_the_block_sparse_kernels(checkpoints, monkeypatch):
    """The numba comparisons above run the kernels, not the reference twice: prefill for a prompt,
    decode for each new token, on the two block-sparse layers (0 and 2) of the four."""
    from tinyphi3.backends.numba import blocksparse as kernel_module
    calls = []
    kernels = backends.registered("numba").kernels()          # what the switch hands out
    for name in ("blocksparse_prefill", "blocksparse_decode"):
        original = kernels[name]
        assert original is getattr(kernel_module, name)
        monkeypatch.setitem(kernels, name,
                            lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    model = Phi3.from_pretrained(checkpoints["gqa"])
    ids = token_ids(np.random.default_rng(2), 1, 13)
    for backend, expected in [("numpy", []), ("numba", ["blocksparse_prefill"] * 2
                                                       + ["blocksparse_decode"] * 2)]:
        calls.clear()
        with backends.use_backend(backend):
            cache = model.new_cache(1)
            model(ids[:, :12], cache=cache)
            model(ids[:, 12:], cache=cache)
        assert calls == expected


def test_generation_is_greedy_decoding_of_the_full_forward(checkpoints):
    model = Phi3.from_pretrained(checkpoints["gqa"])
    prompt = list(token_ids(np.random.default_rng(3), 1, 9)[0])
    got = list(generate(model, prompt, max_new_tokens=30, stop_token_ids=[]))
    ids = list(prompt)
    for _ in range(30):
        ids.append(int(np.argmax(model(np.array([ids]))[0, -1])))
    assert got == ids[len(prompt):]
    assert not set(got) & set(DUMMIES)


@pytest.mark.parametrize("backend", BACKENDS)
def test_left_padded_rows_equal_each_row_alone(checkpoints, backend):
    model = Phi3.from_pretrained(checkpoints["gqa"])
    rng = np.random.default_rng(4)
    long, short = token_ids(rng, 1, 30)[0], token_ids(rng, 1, 21)[0]
    batch = np.stack([long, np.concatenate([np.zeros(9, int), short])])
    valid = batch.copy() * 0 + 1
    valid[1, :9] = 0
    with backends.use_backend(backend):
        cache = model.new_cache(2)
        prefill = model(batch, attention_mask=valid, cache=cache)
        step = model(np.array([[5], [7]]), cache=cache)                 # one more token each
        alone = [model(np.concatenate([row, [token]])[None]) for row, token in [(long, 5),
                                                                                  (short, 7)]]
    np.testing.assert_allclose(prefill[0], alone[0][0, :-1], atol=2e-5)
    np.testing.assert_allclose(prefill[1, 9:], alone[1][0, :-1], atol=2e-5)
    np.testing.assert_allclose(step[:, 0], [alone[0][0, -1], alone[1][0, -1]], atol=2e-5)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["gqa", "all_sparse_untied"])
def test_loss_and_every_gradient_match_torch_autograd(checkpoints, case, backend):
    rng = np.random.default_rng(5)
    ids = token_ids(rng, 2, 40)
    labels = ids.copy()
    labels[0, :6] = -100
    labels[1, 17] = -100
    reference = Phi3SmallReference(checkpoints[case])
    theirs = reference.loss(torch.tensor(ids), torch.tensor(labels))
    theirs.backward()
    ours = Phi3.from_pretrained(checkpoints[case])
    with backends.use_backend(backend):
        loss = ours.loss(ids, labels)
        loss.backward()
    assert abs(float(loss.data) - theirs.item()) <= 1e-4 * abs(theirs.item())
    grads = dict(ours.named_parameters())
    assert set(grads) == set(reference.params)
    for name, p in grads.items():
        g_ref = reference.params[name].grad.numpy()
        rel = np.linalg.norm(p.grad - g_ref) / np.linalg.norm(g_ref)
        assert rel <= 1e-4, (name, rel)


def test_a_few_training_steps_lower_the_loss():
    model = Phi3(preset("tiny-small"), seed=0)
    ids = np.random.default_rng(6).integers(0, 509, size=(2, 24))
    opt = AdamW(model.named_parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        model.zero_grad()
        loss = model.loss(ids, ids)
        loss.backward()
        opt.step()
        losses.append(float(loss.data))
    assert losses[-1] < losses[0] - 0.5


# ---- μP, each detail on its own -----------------------------------------------------------------
def test_mup_embedding_multiplier_scales_the_embeddings():
    model = Phi3(preset("tiny-small"), seed=0)
    ids = np.array([[3, 1, 4, 1, 5]])
    table = model.params["model.embed_tokens.weight"]
    np.testing.assert_array_equal(model.embed(ids), table[ids] * np.float32(10.0))
    mini = Phi3(preset("tiny"), seed=0)
    np.testing.assert_array_equal(mini.embed(ids), mini.params["model.embed_tokens.weight"][ids])


def test_mup_attention_scale_is_one_over_d(checkpoints):
    config = preset("phi-3-small-8k")
    assert config.attention_scale == 1 / 128                       # not 1/sqrt(128)
    assert config.replace(mup_attn_multiplier=2.0).attention_scale == 2 / 128
    assert config.replace(mup_use_scaling=False).attention_scale == 128 ** -0.5
    assert preset("phi-3-mini-4k").attention_scale == 96 ** -0.5
    # negative control: the reference with 1/sqrt(d) is far from our logits, so the parity
    # test above does see the scale
    ids = token_ids(np.random.default_rng(7), 1, 40)
    ours = Phi3.from_pretrained(checkpoints["gqa"])(ids)
    sqrt_d = reference_logits(checkpoints["gqa"], ids, softmax_scale=8 ** -0.5)
    assert np.abs(real_rows(ours) - real_rows(sqrt_d)).max() > 1e-2


def test_mup_logits_are_divided_by_the_width_multiplier():
    model = Phi3(preset("tiny-small"), seed=0)
    wide = Phi3(model.config.replace(mup_width_multiplier=None), model.params)
    ids = np.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    real = slice(0, 509)
    np.testing.assert_array_equal(model(ids)[..., real], wide(ids)[..., real] / np.float32(8.0))


def test_dummy_logits_hold_the_float32_minimum():
    model = Phi3(preset("tiny-small"), seed=0)
    logits = model(np.array([[3, 1, 4, 1, 5, 9, 2, 6]]))
    assert (logits[..., 509:] == np.finfo(np.float32).min).all()
    assert np.isfinite(logits).all() and (logits[..., :509] > -1e3).all()
    unmasked = Phi3(model.config.replace(dummy_token_indices=[]), model.params)
    assert (unmasked(np.array([[3, 1, 4]]))[..., 509:] > -1e3).all()


def test_mup_initialisation():
    config = phi3small_config(vocab_size=64, hidden_size=256, intermediate_size=512,
                              num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2)
    params = Phi3(config, seed=0).params
    down = params["model.layers.3.mlp.down_proj.weight"]
    up = params["model.layers.3.mlp.up_proj.weight"]
    assert abs(up.std() - 0.02) < 1e-3
    assert abs(down.std() - 0.02 / np.sqrt(2 * 8)) < 1e-4
    assert (params["model.layers.3.self_attn.dense.bias"] == 0).all()
    assert (params["model.final_layernorm.weight"] == 1).all()
    assert (params["model.final_layernorm.bias"] == 0).all()


# ---- checkpoints --------------------------------------------------------------------------------
def test_save_pretrained_writes_the_published_layout(tmp_path, checkpoints):
    model = Phi3.from_pretrained(checkpoints["gqa"])
    model.save_pretrained(tmp_path / "out", dtype="bfloat16")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["model_type"] == "phi3small"
    assert config["architectures"] == ["Phi3SmallForCausalLM"]
    from safetensors.numpy import load_file
    names = set(load_file(str(tmp_path / "out" / "model.safetensors")))
    assert names == set(load_file(str(checkpoints["gqa"] / "model.safetensors")))
    assert "model.layers.1.self_attn.query_key_value.bias" in names
    assert "lm_head.weight" not in names                            # tied, as published
    again = Phi3.from_pretrained(tmp_path / "out")
    ids = token_ids(np.random.default_rng(8), 1, 12)
    np.testing.assert_allclose(again(ids), model(ids), atol=0.1)   # bf16 weights
    back = Phi3SmallReference(tmp_path / "out")                    # the reference reads it too
    with torch.no_grad():
        np.testing.assert_allclose(back.forward(torch.tensor(ids)).numpy(), again(ids),
                                   atol=TOL)


def test_a_tied_copy_of_the_head_is_accepted(tmp_path, checkpoints):
    from safetensors.numpy import load_file, save_file as save_numpy
    tensors = load_file(str(checkpoints["gqa"] / "model.safetensors"))
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    (tmp_path / "config.json").write_text((checkpoints["gqa"] / "config.json").read_text())
    save_numpy(tensors, str(tmp_path / "model.safetensors"))
    ids = token_ids(np.random.default_rng(9), 1, 10)
    np.testing.assert_array_equal(Phi3.from_pretrained(tmp_path)(ids),
                                  Phi3.from_pretrained(checkpoints["gqa"])(ids))
    del tensors["model.layers.2.self_attn.dense.bias"]
    save_numpy(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(MissingTensorError, match="model.layers.2.self_attn.dense.bias"):
        Phi3.from_pretrained(tmp_path)


# ---- phi-3-small-128K: LongRoPE -----------------------------------------------------------------
L0 = 32                 # the tiny 128K checkpoints' original context (of 128: s = 4)


def tiny_128k_config(seed, **scaling) -> dict:
    """A tiny config.json in phi-3-small-128K's layout: head dim 16, so 8 random factors per set
    (long ones up to 16 times the short ones), base 100 so that every frequency turns within 40
    tokens; `scaling` joins rope_scaling (the magnitudes, the type)."""
    rng = np.random.default_rng(seed)
    short = np.sort(1 + 0.5 * rng.random(8))
    long = np.sort(short * (1 + 15 * rng.random(8)))
    rope_scaling = {"type": "su", "original_max_position_embeddings": L0,
                    "short_factor": short.tolist(), "long_factor": long.tolist(), **scaling}
    return tiny_published_config(hidden_size=64, rope_embedding_base=100,
                                 original_max_position_embeddings=L0, rope_scaling=rope_scaling)


LONGROPE_CASES = {
    "given_magnitudes": {"short_mscale": 1.1, "long_mscale": 1.3},
    "default_magnitudes": {},                        # short 1, long sqrt(1 + ln 4 / ln 32)
    "longrope_type": {"type": "longrope", "long_mscale": 0.9},
}


@pytest.fixture(scope="module")
def longrope_checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("phi3small128k")
    return {name: write_checkpoint(root / name, tiny_128k_config(k, **scaling), seed=10 + k)
            for k, (name, scaling) in enumerate(LONGROPE_CASES.items())}


def test_the_128k_layout_reads_and_round_trips():
    """phi-3-small-128K's config.json layout (its factors replaced by made-up ones): the original
    context inside rope_scaling and at the top level, the type 'su' kept, the magnitudes read."""
    scaling = {"type": "su", "original_max_position_embeddings": 8192,
               "short_factor": np.linspace(1, 1.5, 64).tolist(),
               "long_factor": np.linspace(1, 100, 64).tolist()}
    d = dict(PUBLISHED_8K, max_position_embeddings=131072, original_max_position_embeddings=8192,
             rope_scaling=scaling)
    config = Phi3Config.from_dict(d)
    assert (config.max_position_embeddings, config.original_max_position_embeddings) == (
        131072, 8192)
    written = config.to_dict()
    unwritten = ("_name_or_path", "auto_map", "torch_dtype", "transformers_version")
    assert written == {k: v for k, v in d.items() if k not in unwritten}
    # the defaults: 1 at short lengths, sqrt(1 + ln s / ln L0) at long ones (s = 16 here)
    assert longrope_magnitude(config, long=False) == 1.0
    assert longrope_magnitude(config, long=True) == pytest.approx(
        np.sqrt(1 + np.log(16) / np.log(8192)), rel=1e-12)
    given = Phi3Config.from_dict(dict(d, rope_scaling=dict(scaling, short_mscale=0.8,
                                                           long_mscale=1.25)))
    assert (longrope_magnitude(given, False), longrope_magnitude(given, True)) == (0.8, 1.25)
    inner = dict(d)
    del inner["original_max_position_embeddings"]          # read from rope_scaling alone
    assert Phi3Config.from_dict(inner) == config


@pytest.mark.parametrize("length", [20, L0, L0 + 1, 40])     # short, short, long, long
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", LONGROPE_CASES)
def test_longrope_logits_match_the_reference(longrope_checkpoints, case, backend, length):
    ids = token_ids(np.random.default_rng(11), 2, length)
    ours = Phi3.from_pretrained(longrope_checkpoints[case])
    with backends.use_backend(backend):
        got = ours(ids)
    want = reference_logits(longrope_checkpoints[case], ids)
    assert got.shape == want.shape == (2, length, V) and got.dtype == np.float32
    assert np.abs(real_rows(got) - real_rows(want)).max() <= TOL
    np.testing.assert_array_equal(got[..., DUMMIES], want[..., DUMMIES])


def test_the_longrope_magnitudes_and_switch_matter(longrope_checkpoints):
    """Negative controls for the test above: the reference with phi-3-mini-128K's magnitude at
    short lengths, or with another long magnitude, is far from our logits; and the switch changes
    the logits of every token, not only of those past L0."""
    directory = longrope_checkpoints["default_magnitudes"]
    model = Phi3.from_pretrained(directory)
    ids = token_ids(np.random.default_rng(12), 1, 40)
    for length, key, wrong in [(20, "short_mscale", model.config.longrope_attention_factor),
                               (40, "long_mscale", 1.0)]:
        reference = Phi3SmallReference(directory)
        reference.config["rope_scaling"][key] = wrong
        with torch.no_grad():
            theirs = reference.forward(torch.tensor(ids[:, :length])).numpy()
        assert np.abs(real_rows(model(ids[:, :length]) - theirs)).max() > 1e-2
    switched = model(ids[:, :L0 + 1])[:, :L0]                  # long factors for all 33 tokens
    assert np.abs(real_rows(switched - model(ids[:, :L0]))).max() > 1e-2


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", ["given_magnitudes", "default_magnitudes"])
def test_cached_generation_across_the_switch_equals_a_full_recompute(longrope_checkpoints, case,
                                                                      backend):
    """Greedy decoding from a 24-token prompt to 44 tokens: every step's logits from the cache
    (recomputed with the long factors once the sequence passes L0) equal a forward pass over the
    whole sequence, and the last ones equal the reference's."""
    model = Phi3.from_pretrained(longrope_checkpoints[case])
    ids = list(token_ids(np.random.default_rng(13), 1, 24)[0])
    with backends.use_backend(backend):
        cache = model.new_cache(1)
        logits = prefill(model, ids, cache)
        assert cache.long_rope is False
        for _ in range(20):
            full = model(np.array([ids]))[0, -1]
            np.testing.assert_allclose(logits, full, rtol=0, atol=2e-5)
            ids.append(int(np.argmax(logits[:V - len(DUMMIES)])))
            logits, cache = next_token_logits(model, ids, cache)
        assert cache.long_rope is True and cache.length == len(ids) == 44
        np.testing.assert_allclose(logits, model(np.array([ids]))[0, -1], rtol=0, atol=2e-5)
    want = reference_logits(longrope_checkpoints[case], np.array([ids]))[0, -1]
    assert np.abs(real_rows(logits) - real_rows(want)).max() <= TOL
    assert list(generate(model, ids[:24], max_new_tokens=20, stop_token_ids=[])) == ids[24:]


def test_left_padding_does_not_move_the_switch(longrope_checkpoints):
    """Rows of 30 and 20 tokens, left-padded to 33 (past L0): positions count each row's own
    tokens, so both rows keep the short factors and the short magnitude, as each row alone."""
    model = Phi3.from_pretrained(longrope_checkpoints["given_magnitudes"])
    rng = np.random.default_rng(15)
    first, second = token_ids(rng, 1, 30)[0], token_ids(rng, 1, 20)[0]
    batch = np.stack([np.concatenate([np.zeros(3, int), first]),
                      np.concatenate([np.zeros(13, int), second])])        # [2, 33]
    valid = np.ones_like(batch)
    valid[0, :3] = valid[1, :13] = 0
    cache = model.new_cache(2)
    padded = model(batch, attention_mask=valid, cache=cache)
    step = model(np.array([[5], [7]]), cache=cache)                      # 31 and 21 tokens
    alone = [model(np.concatenate([row, [token]])[None])[0] for row, token in [(first, 5),
                                                                             (second, 7)]]
    np.testing.assert_allclose(padded[0, 3:], alone[0][:-1], atol=2e-5)
    np.testing.assert_allclose(padded[1, 13:], alone[1][:-1], atol=2e-5)
    np.testing.assert_allclose(step[:, 0], [alone[0][-1], alone[1][-1]], atol=2e-5)


def test_a_cache_kept_across_the_switch_would_differ(longrope_checkpoints):
    """Negative control for the test above: continuing the short-factor cache past L0 (what the
    published model's cached generation does) gives other logits than the full recompute."""
    model = Phi3.from_pretrained(longrope_checkpoints["given_magnitudes"])
    ids = token_ids(np.random.default_rng(14), 1, L0 + 1)
    cache = model.new_cache(1)
    model(ids[:, :L0], cache=cache)
    kept = model(ids[:, L0:], cache=cache)[0, -1]
    assert np.abs(real_rows(kept - model(ids)[0, -1])).max() > 1e-2


def longrope_scaling(**changes) -> dict:
    scaling = dict(tiny_128k_config(0)["rope_scaling"], **changes)
    return {k: v for k, v in scaling.items() if v is not None}


@pytest.mark.parametrize("changes, message", [
    ({"rope_scaling": longrope_scaling(short_factor=[1.0] * 7)},
     r"rope_scaling.short_factor must have rotary_dim/2 = 8 entries, got 7"),
    ({"rope_scaling": longrope_scaling(long_factor=[1.0] * 7 + [0.0])},
     r"rope_scaling.long_factor must be positive"),
    ({"rope_scaling": longrope_scaling(long_factor=[1.0] * 7 + ["2"])},
     r"rope_scaling.long_factor must be a list of numbers"),
    ({"rope_scaling": longrope_scaling(short_mscale=-1)},
     r"rope_scaling.short_mscale must be a positive number"),
    ({"rope_scaling": longrope_scaling(long_mscale="1.2")},
     r"rope_scaling.long_mscale must be a positive number"),
    ({"rope_scaling": longrope_scaling(type="yarn")}, r"rope_scaling type 'yarn'"),
    ({"rope_scaling": longrope_scaling(attention_factor=1.2)},
     r"rope_scaling.attention_factor is not a key of phi3small's LongRoPE"),
    ({"rope_scaling": longrope_scaling(original_max_position_embeddings=None)},
     r"rope_scaling.original_max_position_embeddings must be a positive integer, got None"),
    ({"rope_scaling": longrope_scaling(original_max_position_embeddings=16)},
     r"rope_scaling.original_max_position_embeddings 16 differs from "
     r"original_max_position_embeddings 32"),
    ({"rope_scaling": longrope_scaling(), "rope_position_scale": 0.5},
     r"takes rope_position_scale 1.0, got 0.5"),
    ({"rope_scaling": "su"}, r"rope_scaling must be an object or null"),
])
def test_bad_rope_scaling_raises_a_one_line_config_error(changes, message):
    d = dict(tiny_128k_config(0), **changes)
    with pytest.raises(ConfigError, match=message) as raised:
        Phi3Config.from_dict(d)
    assert "\n" not in str(raised.value)
