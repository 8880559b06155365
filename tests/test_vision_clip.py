"""The CLIP vision tower (tinyphi3.models.vision.clip) equals transformers' `CLIPVisionModel`:
every hidden state, on random tiny towers drawn by hypothesis, on both backends; Phi-3-vision's
features (layer -2, class token dropped) never depend on the last layer or post_layernorm; the
loader takes transformers-4 and 5 names; bad configs, pixels and tensors raise clear errors."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import CLIPVisionConfig, CLIPVisionModel

from tinyphi3.backends import use_backend
from tinyphi3.errors import InvalidInputError
from tinyphi3.models.vision.clip import (
    CLIP_VIT_L14_336, ClipConfig, clip_features, clip_hidden_states, clip_tensor_shapes,
    clip_weights_from, init_clip_weights, strip_clip_prefix)

TOLERANCE = 1e-4                                  # float32, relative to the values' scale
PREFIX = "model.vision_embed_tokens.img_processor."   # the tower's place in Phi-3-vision


@st.composite
def tiny_configs(draw):
    heads = draw(st.integers(1, 4))
    hidden = draw(st.sampled_from([h for h in range(8, 33) if h % heads == 0]))
    patch, grid = draw(st.integers(2, 7)), draw(st.sampled_from([2, 4, 6]))
    return ClipConfig(hidden_size=hidden, intermediate_size=draw(st.integers(8, 48)),
                      num_hidden_layers=draw(st.integers(1, 4)), num_attention_heads=heads,
                      image_size=patch * grid, patch_size=patch, layer_norm_eps=1e-5,
                      hidden_act=draw(st.sampled_from(["quick_gelu", "quick_gelu", "gelu"])))


def torch_tower(config: ClipConfig, seed: int) -> CLIPVisionModel:
    """transformers' tower with random weights, its LayerNorms and biases moved off 1 and 0
    (its initialisation leaves them there, where a mix-up of gain and bias would not show)."""
    torch.manual_seed(seed)
    model = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads, image_size=config.image_size,
        patch_size=config.patch_size, layer_norm_eps=config.layer_norm_eps,
        hidden_act=config.hidden_act, num_channels=config.num_channels)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith(".weight"):
                p.copy_(1 + 0.3 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn_like(p))
    return model


def numpy_state(model) -> dict:
    return {name: t.detach().numpy().copy() for name, t in model.state_dict().items()}


def relative_error(ours, reference) -> float:
    """max |ours - reference| over max(1, max |reference|)."""
    ours, reference = np.asarray(ours, np.float64), np.asarray(reference, np.float64)
    assert ours.shape == reference.shape
    return float(np.abs(ours - reference).max() / max(1.0, np.abs(reference).max()))


def test_the_tolerance_can_fail():
    """Negative control: an error of 1e-3 on values of size 1 is caught."""
    assert relative_error([1.0, 0.5], [1.0, 0.5]) == 0
    assert relative_error([1.001, 0.5], [1.0, 0.5]) > TOLERANCE


@settings(max_examples=15)
@given(config=tiny_configs(), seed=st.integers(0, 2**31 - 1), crops=st.integers(1, 3))
def test_every_hidden_state_equals_transformers(config, seed, crops):
    model = torch_tower(config, seed)
    pixels = torch.randn(crops, 3, config.image_size, config.image_size)
    with torch.no_grad():
        reference = [h.numpy() for h in model(pixel_values=pixels,
                                              output_hidden_states=True).hidden_states]
    assert len(reference) == config.num_hidden_layers + 1
    state = numpy_state(model)
    # the loader, from transformers-4 names (a `vision_model.` level) under Phi-3-vision's prefix
    weights = clip_weights_from({PREFIX + "vision_model." + n: t for n, t in state.items()},
                                config, PREFIX)
    x = pixels.numpy()
    for backend in ("numpy", "numba"):
        with use_backend(backend):
            ours = clip_hidden_states(x, weights, config)
            assert len(ours) == len(reference)
            for k, (mine, theirs) in enumerate(zip(ours, reference)):
                assert mine.dtype == np.float32
                assert relative_error(mine, theirs) < TOLERANCE, (backend, k)
            for layer_idx in (-2, -1):
                features = clip_features(x, weights, config, layer_idx)
                assert features.shape == (crops, config.grid ** 2, config.hidden_size)
                assert relative_error(features, reference[layer_idx][:, 1:]) < TOLERANCE


def test_the_loader_takes_transformers_4_and_5_names():
    config = ClipConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                        num_attention_heads=2, image_size=28, patch_size=7, layer_norm_eps=1e-5)
    state = numpy_state(torch_tower(config, seed=0))
    assert set(state) == set(clip_tensor_shapes(config))      # transformers 5: no vision_model.
    decoder = {"model.embed_tokens.weight": np.zeros((8, 4), np.float32)}
    as_5 = {PREFIX + n: t for n, t in state.items()} | decoder
    as_4 = {PREFIX + "vision_model." + n: t for n, t in state.items()} | decoder
    for tensors in (as_5, as_4):
        weights = clip_weights_from(tensors, config, PREFIX)
        assert set(weights) == set(state)
        assert all(weights[n] is tensors[k] for k in tensors
                   if (n := strip_clip_prefix(k, PREFIX)) is not None)
    assert clip_weights_from(state, config).keys() == state.keys()    # no prefix
    assert strip_clip_prefix("model.embed_tokens.weight", PREFIX) is None
    assert strip_clip_prefix(PREFIX + "vision_model.pre_layrnorm.bias", PREFIX) == \
        "pre_layrnorm.bias"


SMALLEST = ClipConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                      num_attention_heads=2, image_size=28, patch_size=7, layer_norm_eps=1e-5)


def test_layer_minus_2_ignores_the_last_layer_and_post_layernorm():
    """REFERENCE-vision section 7: a 3-layer tower, its last layer and post_layernorm perturbed."""
    weights = init_clip_weights(SMALLEST, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    pixels = rng.standard_normal((2, 3, 28, 28)).astype(np.float32)
    changed = {n: w + rng.standard_normal(w.shape).astype(np.float32) if
               n.startswith(("encoder.layers.2.", "post_layernorm.")) else w
               for n, w in weights.items()}
    before, after = (clip_features(pixels, w, SMALLEST, -2) for w in (weights, changed))
    assert before.shape == (2, 16, 16) and before.dtype == np.float32
    np.testing.assert_array_equal(before, after)
    assert np.abs(clip_features(pixels, weights, SMALLEST, -1)
                  - clip_features(pixels, changed, SMALLEST, -1)).max() > 1e-2
    # not even read: layer -2 runs without the last layer's tensors
    fewer = {n: w for n, w in weights.items() if not n.startswith("encoder.layers.2.")}
    np.testing.assert_array_equal(clip_features(pixels, fewer, SMALLEST, -2), before)
    assert len(clip_hidden_states(pixels, weights, SMALLEST, upto=1)) == 2


def test_crops_through_the_tower_a_few_at_a_time_give_the_features_of_all_at_once():
    """clip_features(..., crops_per_pass=k) equals the tower run on every crop at once (the crops
    never attend to each other), for k dividing N or not; k < 1 is refused."""
    weights = init_clip_weights(SMALLEST, np.random.default_rng(0))
    pixels = np.random.default_rng(2).standard_normal((5, 3, 28, 28)).astype(np.float32)
    together = clip_hidden_states(pixels, weights, SMALLEST, upto=2)[-1][:, 1:]
    for k in (1, 2, 5, 8):
        np.testing.assert_allclose(clip_features(pixels, weights, SMALLEST, crops_per_pass=k),
                                   together, rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidInputError, match="crops_per_pass"):
        clip_features(pixels, weights, SMALLEST, crops_per_pass=0)


def test_the_published_tower():
    """from_dict without a clip_config is ViT-L/14-336; its 303,507,456 weights (REFERENCE-vision
    section 1.4); a partial dict keeps the published values it does not name."""
    assert ClipConfig.from_dict(None) == ClipConfig.from_dict({}) == CLIP_VIT_L14_336
    assert (CLIP_VIT_L14_336.grid, CLIP_VIT_L14_336.num_positions) == (24, 577)
    shapes = clip_tensor_shapes(CLIP_VIT_L14_336)
    assert sum(int(np.prod(s)) for s in shapes.values()) == 303_507_456
    assert ClipConfig.from_dict({"num_hidden_layers": 2, "projection_dim": 768}) == \
        ClipConfig(1024, 4096, 2, 16, 336, 14, 1e-5)


@pytest.mark.parametrize("changes, message", [
    ({"image_size": 21}, "3 patches per side is odd"),
    ({"image_size": 30}, "image_size 30 is not a multiple of patch_size 7"),
    ({"num_attention_heads": 3}, "hidden_size 16 is not a multiple of num_attention_heads 3"),
    ({"hidden_act": "relu"}, "hidden_act 'relu' is not supported; choose one of quick_gelu, gelu"),
    ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive integer"),
    ({"patch_size": 7.0}, "patch_size must be a positive integer"),
    ({"layer_norm_eps": -1.0}, "layer_norm_eps must be a positive number"),
])
def test_bad_configs_are_refused(changes, message):
    d = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 3,
         "num_attention_heads": 2, "image_size": 28, "patch_size": 7} | changes
    with pytest.raises(ValueError, match=message):
        ClipConfig.from_dict(d)


def test_bad_pixels_and_layers_are_refused():
    weights = init_clip_weights(SMALLEST, np.random.default_rng(0))
    for shape in [(3, 28, 28), (1, 3, 28, 21), (1, 1, 28, 28)]:
        with pytest.raises(ValueError, match=r"pixels must be \[N, 3, 28, 28\]"):
            clip_features(np.zeros(shape, np.float32), weights, SMALLEST)
    with pytest.raises(ValueError, match=r"layer_idx must be in -4\.\.3, got -5"):
        clip_features(np.zeros((1, 3, 28, 28), np.float32), weights, SMALLEST, -5)


def test_bad_tensors_are_refused():
    weights = init_clip_weights(SMALLEST, np.random.default_rng(0))
    named = {PREFIX + n: w for n, w in weights.items()}
    missing = {n: w for n, w in named.items() if not n.endswith("post_layernorm.bias")}
    with pytest.raises(ValueError, match=f"missing tensor '{PREFIX}post_layernorm.bias'"):
        clip_weights_from(missing, SMALLEST, PREFIX)
    bad = named | {PREFIX + "encoder.layers.1.mlp.fc1.weight": np.zeros((16, 32), np.float32)}
    with pytest.raises(ValueError, match=r"'model\.vision_embed_tokens\.img_processor\.encoder"
                                         r"\.layers\.1\.mlp\.fc1\.weight' has shape \(16, 32\), "
                                         r"expected \(32, 16\)"):
        clip_weights_from(bad, SMALLEST, PREFIX)
    extra = named | {PREFIX + "encoder.layers.3.mlp.fc1.bias": np.zeros(32, np.float32)}
    with pytest.raises(ValueError, match=r"unexpected tensor .*layers\.3\.mlp\.fc1\.bias"):
        clip_weights_from(extra, SMALLEST, PREFIX)
    both = named | {PREFIX + "vision_model.pre_layrnorm.bias": weights["pre_layrnorm.bias"]}
    with pytest.raises(ValueError, match="given twice"):
        clip_weights_from(both, SMALLEST, PREFIX)
