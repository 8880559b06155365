"""Phi-3-vision's pieces on their own: the exact GELU against torch, the 2x2 merge and the token
layout on labelled features, the number of vectors against the processor's formula for every
grid, and the phi3_v configuration (the published file, its round trip, its clear errors)."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyphi3.config import ClipConfig, Phi3Config
from tinyphi3.config.vision import CLIP_VIT_L14_336, VisionConfig
from tinyphi3.errors import ConfigError
from tinyphi3.models.vision.clip import init_clip_weights
from tinyphi3.models.vision.phi3v import parameter_shapes
from tinyphi3.models.vision.projector import (hd_tokens, image_embeddings, image_token_count,
                                              merge_2x2)
from tinyphi3.nn.activations import erf, gelu_erf

TINY_CLIP = ClipConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                       num_attention_heads=2, image_size=28, patch_size=7, layer_norm_eps=1e-5)
# REFERENCE-vision §1.1, with made-up LongRoPE factors (48 each, as published)
PUBLISHED = {
    "architectures": ["Phi3VForCausalLM"], "model_type": "phi3_v", "vocab_size": 32064,
    "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "max_position_embeddings": 131072,
    "original_max_position_embeddings": 4096, "rope_theta": 10000.0, "rms_norm_eps": 1e-05,
    "rope_scaling": {"type": "su", "short_factor": [1.05 + i / 24 for i in range(48)],
                     "long_factor": [1.03 + i for i in range(48)]},
    "sliding_window": 131072, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "_attn_implementation": "flash_attention_2",
    "img_processor": {"image_dim_out": 1024, "model_name": "openai/clip-vit-large-patch14-336",
                      "name": "clip_vision_model", "num_img_tokens": 144},
    "embd_layer": {"embedding_cls": "image", "hd_transform_order": "sub_glb",
                   "projection_cls": "mlp", "use_hd_transform": True,
                   "with_learnable_separator": True}}


def test_erf_and_gelu_equal_torch():
    x = np.concatenate([np.linspace(-9, 9, 20001), [-np.inf, np.inf, 0.0, 1e-30, 3e38]])
    np.testing.assert_allclose(erf(x), torch.erf(torch.tensor(x)).numpy(), atol=1e-14, rtol=0)
    assert np.isnan(erf(np.array([np.nan])))[0]
    x32 = (np.random.default_rng(0).standard_normal(50_000) * 4).astype(np.float32)
    exact = torch.nn.GELU()(torch.tensor(x32, dtype=torch.float64)).numpy()
    assert gelu_erf(x32).dtype == np.float32
    np.testing.assert_allclose(gelu_erf(x32), exact, atol=1e-9, rtol=1e-7)   # float32 rounding
    fast = torch.nn.GELU()(torch.tensor(x32)).numpy()     # torch's float32 erf: ~3e-7 off
    np.testing.assert_allclose(gelu_erf(x32), fast, atol=1e-6, rtol=1e-6)
    assert np.abs(erf(np.array([0.5])) - 0.5204998778130465).max() < 1e-15   # A&S table 7.1


def labelled(n, G, C=3):
    """Features [n, G*G, C] whose patch (r, c) of crop k holds (k, r, c)."""
    k, r, c = np.meshgrid(np.arange(n), np.arange(G), np.arange(G), indexing="ij")
    return np.stack([k, r, c], axis=-1).reshape(n, G * G, C).astype(np.float32)


def test_the_2x2_merge_concatenates_in_dy_dx_order():
    merged = merge_2x2(labelled(2, 4), g=2)                       # [2, 4, 12]
    assert merged.shape == (2, 4, 12)
    for k in range(2):
        for i in range(2):
            for j in range(2):
                want = [[k, 2 * i + dy, 2 * j + dx] for dy in (0, 1) for dx in (0, 1)]
                assert merged[k, 2 * i + j].reshape(4, 3).tolist() == want


def test_the_tokens_of_an_image_in_sub_glb_order():
    h, w, g = 2, 3, 2
    merged = merge_2x2(labelled(1 + h * w, 2 * g), g)[..., ::4]    # (crop, 2i, 2j) per token
    sub_GN, glb_GN = np.full((1, 1, 1, 3), -1.0), np.full((1, 1, 3), -2.0)
    tokens = hd_tokens(merged, h, w, sub_GN, glb_GN)
    assert len(tokens) == image_token_count(h, w, g) == 7 * 4 + 1 + 3 * 2
    rows = tokens[:h * g * (w * g + 1)].reshape(h * g, w * g + 1, 3)
    assert (rows[:, -1] == -1).all()                              # sub_GN ends every row
    for R in range(h * g):                                        # row R of the tiled grid
        a, i = divmod(R, g)
        assert rows[R, :-1].tolist() == [[1 + a * w + b, 2 * i, 2 * j]
                                         for b in range(w) for j in range(g)]
    assert (tokens[h * g * (w * g + 1)] == -2).all()              # glb_GN, once
    glb = tokens[h * g * (w * g + 1) + 1:].reshape(g, g + 1, 3)
    assert (glb[:, -1] == -1).all() and (glb[:, :-1, 0] == 0).all()


@pytest.mark.parametrize("h, w, tokens", [(2, 2, 27), (2, 3, 35), (3, 2, 37), (1, 3, 21),
                                          (3, 1, 25), (1, 2, 17), (1, 4, 25), (1, 6, 33)])
def test_the_token_counts_of_reference_vision_section_7(h, w, tokens):
    assert image_token_count(h, w, g=2) == tokens


def test_the_published_token_counts():
    """g = 12: 336x336 at 16 crops -> 4x4 -> 2509; 1920x1080 -> 3x5 -> 2353 (REFERENCE §2)."""
    assert image_token_count(4, 4, 12) == 2509 and image_token_count(3, 5, 12) == 2353
    assert image_token_count(16, 1, 12) == 2653 and image_token_count(2, 2, 12) == 757


@st.composite
def grids(draw, num_crops=6):
    h = draw(st.integers(1, num_crops))
    return h, draw(st.integers(1, num_crops // h))


@settings(max_examples=20, deadline=None)
@given(images=st.lists(grids(), min_size=1, max_size=2), seed=st.integers(0, 2 ** 16))
def test_the_vectors_of_every_grid_number_the_processors_count(images, seed):
    rng = np.random.default_rng(seed)
    C4, D = 4 * TINY_CLIP.hidden_size, 8
    head = {"sub_GN": rng.standard_normal((1, 1, 1, C4)), "glb_GN": rng.standard_normal((1, 1, C4)),
            "img_projection.0.weight": rng.standard_normal((D, C4)),
            "img_projection.0.bias": rng.standard_normal(D),
            "img_projection.2.weight": rng.standard_normal((D, D)),
            "img_projection.2.bias": rng.standard_normal(D)}
    pixels = rng.standard_normal((len(images), 7, 3, 28, 28)).astype(np.float32)
    sizes = np.array([[28 * h, 28 * w] for h, w in images])
    out = image_embeddings(pixels, sizes, init_clip_weights(TINY_CLIP, rng), TINY_CLIP, -2,
                           head, head)
    assert [v.shape for v in out] == [(image_token_count(h, w, 2), D) for h, w in images]
    assert [len(v) for v in out] == [(h * w + 1) * 4 + 1 + (h + 1) * 2 for h, w in images]


def test_the_published_config():
    config = Phi3Config.from_dict(PUBLISHED)
    assert config.vision == VisionConfig(carried=config.vision.carried)
    assert config.vision.clip == CLIP_VIT_L14_336 and config.vision.layer_idx == -2
    written = config.to_dict()
    for section in ("img_processor", "embd_layer"):
        assert written[section] == PUBLISHED[section]
    assert written["architectures"] == ["Phi3VForCausalLM"]
    assert Phi3Config.from_dict(written) == config
    shapes = parameter_shapes(config)
    assert len(shapes) == 592 and sum(map(math.prod, shapes.values())) == 4_146_621_440


def test_a_tiny_config_round_trips_through_save(tmp_path):
    tiny = {**PUBLISHED, "img_processor": {"clip_config": {"hidden_size": 16,
            "intermediate_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2,
            "image_size": 28, "patch_size": 7, "projection_dim": 8}, "layer_idx": -3}}
    config = Phi3Config.from_dict(tiny)
    assert config.vision.clip == TINY_CLIP and config.vision.image_dim_out == 16
    config.save(tmp_path / "config.json")
    assert Phi3Config.from_json_file(tmp_path / "config.json") == config


def embd(**changes):
    return {**PUBLISHED, "embd_layer": {**PUBLISHED["embd_layer"], **changes}}


def img(**changes):
    return {**PUBLISHED, "img_processor": {**PUBLISHED["img_processor"], **changes}}


@pytest.mark.parametrize("config, message", [
    (embd(hd_transform_order="glb_sub"),
     "embd_layer.hd_transform_order 'glb_sub' is not supported: only 'sub_glb'"),
    (embd(use_hd_transform=False), "embd_layer.use_hd_transform false is not supported"),
    (embd(with_learnable_separator=False), "with_learnable_separator false is not supported"),
    (embd(projection_cls="linear"), "projection_cls 'linear' is not supported: only 'mlp'"),
    (embd(embedding_cls="tune_image"), "embd_layer.embedding_cls 'tune_image' is not supported"),
    (embd(use_hd_transform="yes"), "embd_layer.use_hd_transform must be true or false"),
    (img(image_dim_out=768), "image_dim_out 768 must equal the tower's hidden_size 1024"),
    (img(type_feature="cls_patch"), "img_processor.type_feature 'cls_patch' is not supported"),
    (img(layer_idx=-26), r"layer_idx -26 is not a hidden state of the 24-layer tower \(-25..24\)"),
    (img(clip_config={"patch_size": 13}), "img_processor.clip_config: image_size 336 is not a"),
    (img(clip_config=[1]), "img_processor.clip_config: must be an object"),
    ({**PUBLISHED, "embd_layer": "mlp"}, "embd_layer must be an object, got 'mlp'"),
    ({**PUBLISHED, "model_type": "phi3"} | {"vision": 1}, None),
])
def test_bad_configs_are_refused_in_one_line(config, message):
    if message is None:                     # a stray key is carried, not read: phi3 stays phi3
        assert Phi3Config.from_dict(config).vision is None
        return
    with pytest.raises(ConfigError, match=message) as error:
        Phi3Config.from_dict(config)
    assert "\n" not in str(error.value) and str(error.value).startswith("config: ")


def test_the_image_side_belongs_to_phi3_v_only():
    with pytest.raises(ConfigError, match="model_type 'phi3' takes no image side"):
        Phi3Config(vision=VisionConfig())
    with pytest.raises(ConfigError, match="model_type 'phi3_v' has no image side"):
        Phi3Config(model_type="phi3_v")
