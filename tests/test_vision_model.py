"""Phi-3-vision against an independent torch reference (tests/phi3v_reference.py: transformers'
CLIPVisionModel and Phi3ForCausalLM joined by REFERENCE-vision §3 in torch), on random tiny
snapshots written with safetensors from the torch modules: logits within 1e-4 at float32."""

import json

import numpy as np
import pytest
import torch
from phi3v_reference import random_reference
from safetensors.torch import save_file

import tinyphi3
from tinyphi3.config import Phi3Config
from tinyphi3.errors import CheckpointError, ConfigError, InvalidInputError, MissingTensorError
from tinyphi3.models.model import Phi3
from tinyphi3.models.vision.phi3v import Phi3V, decoder_config

TOL = 1e-4
CROP = 28
V = 100
PUBLISHED_EMBD_LAYER = {"embedding_cls": "image", "hd_transform_order": "sub_glb",
                        "projection_cls": "mlp", "use_hd_transform": True,
                        "with_learnable_separator": True}


def published_config(reference, **embd_layer) -> dict:
    """config.json as the published phi3_v file lays it out (rope_scaling type "su"), plus
    img_processor.clip_config for the tiny tower."""
    c, clip = reference.decoder.config, reference.clip.config
    rope = c.rope_parameters
    return {
        "architectures": ["Phi3VForCausalLM"], "model_type": "phi3_v", "vocab_size": V,
        "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers, "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "max_position_embeddings": c.max_position_embeddings,
        "original_max_position_embeddings": rope["original_max_position_embeddings"],
        "rope_theta": rope["rope_theta"], "rms_norm_eps": c.rms_norm_eps,
        "rope_scaling": {"type": "su", "short_factor": rope["short_factor"],
                         "long_factor": rope["long_factor"]},
        "sliding_window": None, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0,
        "tie_word_embeddings": False, "hidden_act": "silu", "embd_pdrop": 0.0,
        "torch_dtype": "float32",
        "img_processor": {"image_dim_out": clip.hidden_size, "name": "clip_vision_model",
                          "model_name": "openai/clip-vit-large-patch14-336", "num_img_tokens": 4,
                          "clip_config": {k: getattr(clip, k) for k in (
                              "hidden_size", "intermediate_size", "num_hidden_layers",
                              "num_attention_heads", "image_size", "patch_size",
                              "layer_norm_eps", "hidden_act")}},
        "embd_layer": {**PUBLISHED_EMBD_LAYER, **embd_layer}}


def write_snapshot(directory, reference, clip_names="4.x", drop=(), extra=None, **embd_layer):
    """A phi3_v directory: config.json and model.safetensors from the torch modules."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = reference.published_tensors(clip_names) | (extra or {})
    save_file({n: t for n, t in tensors.items() if n not in drop},
              str(directory / "model.safetensors"), metadata={"format": "pt"})
    config = published_config(reference, **embd_layer)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return directory


@pytest.fixture(scope="module")
def reference():
    return random_reference(seed=0)


@pytest.fixture(scope="module")
def ours(tmp_path_factory, reference):
    return tinyphi3.Phi3.from_pretrained(write_snapshot(tmp_path_factory.mktemp("v"), reference))


def pixels(sizes, num_crops=4, seed=0):
    """[N, num_crops + 1, 3, 28, 28]: random global views and crops, zeros past each image's
    h*w crops (as the processor pads)."""
    rng = np.random.default_rng(seed)
    out = rng.standard_normal((len(sizes), num_crops + 1, 3, CROP, CROP)).astype(np.float32)
    for i, (height, width) in enumerate(sizes):
        out[i, 1 + (height // CROP) * (width // CROP):] = 0
    return out


def prompt(*pieces, seed=0):
    """Token ids [1, T]: an int n is n random text tokens, ("img", k, n) is n copies of -k."""
    rng, ids = np.random.default_rng(seed), []
    for piece in pieces:
        ids += [-piece[1]] * piece[2] if isinstance(piece, tuple) else \
            rng.integers(3, V, size=piece).tolist()
    return np.array([ids])


def assert_matches(ours, reference, ids, sizes=None, px=None):
    got = ours(ids, px, None if sizes is None else np.array(sizes))
    want = reference(ids, px, None if sizes is None else torch.tensor(sizes)).numpy()
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    return got


def test_the_directory_loads_as_the_vision_model(ours, reference):
    assert isinstance(ours, Phi3V) and ours.config.model_type == "phi3_v"
    assert ours.num_parameters() == sum(t.numel() for t in reference.parameters())


def test_one_image_matches_the_reference(ours, reference):
    sizes = [[56, 56]]                                     # 2 x 2 crops: 27 vectors
    ids = prompt(5, ("img", 1, 27), 6)
    got = assert_matches(ours, reference, ids, sizes, pixels(sizes))
    moved = pixels(sizes)
    moved[0, 3] += 0.5                                     # negative control: one crop changed
    assert np.abs(ours(ids, moved, np.array(sizes)) - got).max() > 100 * TOL


def test_two_images_of_different_grids_in_one_prompt(ours, reference):
    sizes = [[56, 56], [28, 84]]                           # 2 x 2 (27) and 1 x 3 (21)
    ids = prompt(4, ("img", 1, 27), 3, ("img", 2, 21), 5)
    assert_matches(ours, reference, ids, sizes, pixels(sizes))


@pytest.mark.parametrize("layout", ["one_row", "two_rows"])
def test_image_slots_first_and_last(ours, reference, layout):
    sizes = [[28, 84], [56, 28]]                           # 1 x 3 (21) and 2 x 1 (19)
    if layout == "one_row":
        ids = prompt(("img", 1, 21), 4, ("img", 2, 19))
    else:                                                  # row-major over [B, T]
        ids = np.concatenate([prompt(("img", 1, 21), 4), prompt(6, ("img", 2, 19))])
    assert_matches(ours, reference, ids, sizes, pixels(sizes))


def test_zero_padding_crops_are_not_read(ours, reference):
    sizes = [[28, 84]]                                     # 1 x 3 crops of num_crops = 6
    ids = prompt(3, ("img", 1, 21), 2)
    clean = pixels(sizes, num_crops=6)
    garbage = clean.copy()
    garbage[0, 4:] = np.random.default_rng(9).standard_normal(garbage[0, 4:].shape) * 50
    got = ours(ids, clean, np.array(sizes))
    np.testing.assert_array_equal(ours(ids, garbage, np.array(sizes)), got)
    assert_matches(ours, reference, ids, sizes, garbage)   # the reference runs them, discards
    changed = {n: w + 1.0 if ".layers.2." in n or "post_layernorm" in n else w
               for n, w in ours.params.items()}            # the tower's last layer: unused
    np.testing.assert_array_equal(Phi3V(ours.config, changed)(ids, clean, np.array(sizes)), got)


def test_text_only_equals_the_plain_decoder(ours, reference):
    ids = np.random.default_rng(3).integers(0, V, size=(2, 40))
    plain = Phi3(decoder_config(ours.config), ours.decoder.params)
    np.testing.assert_array_equal(ours(ids), plain(ids))
    assert_matches(ours, reference, ids)
    outside = ids.copy()
    outside[0, :3] = [-10 ** 9, -10 ** 9 - 7, V + 5]       # not image slots: clamped
    clamped = np.clip(outside, 0, V - 1)
    np.testing.assert_array_equal(ours(outside), plain(clamped))


def test_transformers_5_tower_names_load(tmp_path, ours, reference):
    directory = write_snapshot(tmp_path, reference, clip_names="5.x")
    sizes = [[56, 56]]
    ids = prompt(2, ("img", 1, 27), 2)
    five = Phi3V.from_pretrained(directory)
    np.testing.assert_array_equal(five(ids, pixels(sizes), np.array(sizes)),
                                  ours(ids, pixels(sizes), np.array(sizes)))


def test_save_then_load_round_trips(tmp_path, ours, reference):
    ours.save_pretrained(tmp_path, max_shard_bytes=20_000)
    again = tinyphi3.Phi3.from_pretrained(tmp_path)
    assert isinstance(again, Phi3V) and again.config == ours.config
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(reference.published_tensors("4.x"))
    sizes = [[28, 56], [56, 56]]
    ids = prompt(1, ("img", 1, 17), 1, ("img", 2, 27), 1)
    np.testing.assert_array_equal(again(ids, pixels(sizes), np.array(sizes)),
                                  ours(ids, pixels(sizes), np.array(sizes)))


def test_the_wte_alias_of_the_embedding(tmp_path, ours, reference):
    table = reference.decoder.model.embed_tokens.weight.detach().clone()
    ids = prompt(9)
    both = write_snapshot(tmp_path / "both", reference,
                          extra={"model.vision_embed_tokens.wte.weight": table})
    np.testing.assert_array_equal(Phi3V.from_pretrained(both)(ids), ours(ids))
    alone = write_snapshot(tmp_path / "alone", reference, drop=("model.embed_tokens.weight",),
                           extra={"model.vision_embed_tokens.wte.weight": table})
    np.testing.assert_array_equal(Phi3V.from_pretrained(alone)(ids), ours(ids))
    other = write_snapshot(tmp_path / "other", reference,
                           extra={"model.vision_embed_tokens.wte.weight": table + 1})
    with pytest.raises(CheckpointError, match="wte.weight differs from model.embed_tokens"):
        Phi3V.from_pretrained(other)


def test_clear_errors_at_the_call(ours):
    sizes, px = np.array([[56, 56]]), pixels([[56, 56]])
    calls = [
        ((prompt(2, ("img", 1, 26)), px, sizes),
         r"input_ids hold 26 image slots .* the 1 image\(s\) give 27 vectors \(27\)"),
        ((prompt(5), px, sizes), r"pixel_values hold 1 image\(s\) but input_ids have no image"),
        ((prompt(("img", 1, 27)), None, None), "hold 27 image slots .* no pixel_values"),
        ((prompt(("img", 1, 27)), px, None), "pixel_values come with image_sizes"),
        ((prompt(("img", 1, 27)), px[:, :, :, :20], sizes),
         r"pixel_values must be \[N, num_crops \+ 1, 3, 28, 28\]"),
        ((prompt(("img", 1, 27)), px, np.array([[56, 50]])),
         r"image_sizes\[0\] = \[56, 50\]: each side must be a positive multiple of .* 28"),
        ((prompt(("img", 1, 27)), px, np.array([[84, 56]])),
         r"needs 3 x 2 = 6 crops, but pixel_values hold 4 per image"),
        ((prompt(("img", 1, 27)), px, np.array([[56, 56], [28, 28]])),
         "image_sizes has 2 rows for the 1 images"),
        ((np.array([[1.0, 2.0]]), None, None), "input_ids must be a non-empty integer array"),
    ]
    for args, message in calls:
        with pytest.raises(InvalidInputError, match=message):
            ours(*args)


def test_clear_errors_at_loading(tmp_path, reference):
    missing = write_snapshot(tmp_path / "missing", reference,
                             drop=("model.vision_embed_tokens.sub_GN",))
    with pytest.raises(MissingTensorError, match=r"model\.vision_embed_tokens\.sub_GN"):
        tinyphi3.Phi3.from_pretrained(missing)
    order = write_snapshot(tmp_path / "order", reference, hd_transform_order="glb_sub")
    with pytest.raises(ConfigError, match="hd_transform_order 'glb_sub' is not supported"):
        tinyphi3.Phi3.from_pretrained(order)
    with pytest.raises(InvalidInputError, match="on the host only"):
        Phi3V.from_pretrained(tmp_path / "missing", backend="cupy")
    with pytest.raises(InvalidInputError, match="dtype must be one of float32, bfloat16"):
        Phi3V.from_pretrained(tmp_path / "missing", dtype="float16")
    text = tmp_path / "text"
    Phi3(Phi3Config(vocab_size=V, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=2)).save_pretrained(text)
    with pytest.raises(CheckpointError, match="is not 'phi3_v'; load it with Phi3"):
        Phi3V.from_pretrained(text)
