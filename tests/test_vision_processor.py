"""Phi-3-vision's image processor (tinyphi3/models/vision/hd_transform.py) against an independent
reference: the steps of REFERENCE-vision.md §2 transcribed here with Pillow (resize, white padding
by paste), transformers' convert_to_rgb, and torch for the tensor steps (normalisation,
interpolate(mode='bicubic'), the crops' reshape/permute), on hypothesis-drawn sizes, crop sizes,
crop budgets and image modes; then the token counts of §2 and §7 and the mode conversions."""

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers.image_transforms import convert_to_rgb

from tinyphi3.models.vision.hd_transform import (
    CLIP_MEAN, CLIP_STD, PUBLISHED_CROP, ImageProcessor, bicubic_weights, hd_grid, hd_transform,
    num_image_tokens, to_rgb, tokens_from_grid,
)

WHITE_NORMALIZED = (1.9303361, 2.0748837, 2.145897)      # REFERENCE-vision §2 step 5


def reference_processor(image, num_crops, crop):
    """REFERENCE-vision §2, steps 1-8: one image -> (pixel_values [K+1, 3, S, S], (H_pad, W_pad))
    with K = num_crops."""
    image = Image.fromarray(convert_to_rgb(image, return_numpy=True)).convert("RGB")
    width, height = image.size
    transposed = width < height
    if transposed:
        image = image.transpose(Image.Transpose.TRANSPOSE)
        width, height = image.size
    ratio = width / height
    scale = 1
    while scale * np.ceil(scale / ratio) <= num_crops:
        scale += 1
    scale -= 1
    new_w = int(scale * crop)
    new_h = int(new_w / ratio)
    image = image.resize((new_w, new_h), Image.BILINEAR)
    target = int(np.ceil(new_h / crop) * crop)
    top = int((target - new_h) / 2)
    padded = Image.new("RGB", (new_w, target), (255, 255, 255))
    padded.paste(image, (0, top))
    if transposed:
        padded = padded.transpose(Image.Transpose.TRANSPOSE)
    x = torch.from_numpy(np.array(padded)).permute(2, 0, 1).float().div(255)
    x = (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    glb = torch.nn.functional.interpolate(x[None], size=(crop, crop), mode="bicubic",
                                          align_corners=False)[0]
    h_c, w_c = x.shape[1] // crop, x.shape[2] // crop
    crops = x.reshape(3, h_c, crop, w_c, crop).permute(1, 3, 0, 2, 4).reshape(-1, 3, crop, crop)
    out = torch.zeros(num_crops + 1, 3, crop, crop)
    out[0] = glb
    out[1:1 + h_c * w_c] = crops
    return out.numpy(), (x.shape[1], x.shape[2])


def random_image(width, height, mode, seed):
    """Random pixels in one of the modes the official processor meets most: RGB, L, RGBA, P
    (the P image with a transparent palette index, so compositing onto white is exercised)."""
    rng = np.random.default_rng(seed)
    if mode == "L":
        return Image.fromarray(rng.integers(0, 256, (height, width), dtype=np.uint8))
    if mode == "P":
        image = Image.fromarray(rng.integers(0, 8, (height, width), dtype=np.uint8), mode="L")
        image = image.convert("P")
        image.putpalette(rng.integers(0, 256, 8 * 3, dtype=np.uint8).tolist())
        image.info["transparency"] = 3
        return image
    channels = {"RGB": 3, "RGBA": 4}[mode]
    return Image.fromarray(rng.integers(0, 256, (height, width, channels), dtype=np.uint8))


@settings(max_examples=25, deadline=None)
@given(width=st.integers(1, 120), height=st.integers(1, 120), crop=st.sampled_from([28, 56]),
       num_crops=st.integers(1, 16), mode=st.sampled_from(["RGB", "L", "RGBA", "P"]),
       seed=st.integers(0, 2**32 - 1))
@example(width=50, height=30, crop=28, num_crops=4, mode="RGB", seed=0)     # top/bottom padding
@example(width=30, height=50, crop=28, num_crops=6, mode="RGBA", seed=1)    # portrait, left/right
@example(width=56, height=28, crop=28, num_crops=4, mode="RGB", seed=2)     # exact fit, no resize
@example(width=5, height=5, crop=28, num_crops=4, mode="L", seed=3)         # tiny, upscaled
@example(width=90, height=9, crop=28, num_crops=4, mode="P", seed=4)        # extreme aspect
@example(width=9, height=90, crop=28, num_crops=6, mode="RGB", seed=5)
@example(width=28, height=25, crop=28, num_crops=1, mode="RGB", seed=6)     # float new_h: 24
@example(width=120, height=2, crop=28, num_crops=1, mode="RGB", seed=7)     # new_h would be 0
@example(width=100, height=60, crop=336, num_crops=4, mode="RGB", seed=8)   # the published S
@example(width=40, height=90, crop=336, num_crops=2, mode="P", seed=9)
def test_hd_transform_equals_the_reference(width, height, crop, num_crops, mode, seed):
    image = random_image(width, height, mode, seed)
    try:
        expected, expected_size = reference_processor(image, num_crops, crop)
    except ValueError:                  # Pillow refuses a resize to height 0: so must we
        with pytest.raises(ValueError, match="too elongated"):
            hd_transform(image, num_crops, crop)
        return
    pixel_values, size = hd_transform(image, num_crops, crop)
    assert pixel_values.dtype == np.float32
    assert pixel_values.shape == (num_crops + 1, 3, crop, crop)
    assert size == expected_size
    np.testing.assert_allclose(pixel_values, expected, rtol=0, atol=1e-5)
    h_c, w_c = size[0] // crop, size[1] // crop
    np.testing.assert_array_equal(pixel_values[1:], expected[1:])      # crops: bit for bit
    assert not pixel_values[1 + h_c * w_c:].any()                      # zero padding: exactly 0
    assert hd_grid(width, height, num_crops, crop)[:2] == (h_c, w_c)
    assert num_image_tokens(width, height, num_crops, crop, crop // 4) == tokens_from_grid(
        h_c, w_c, 2)


@settings(max_examples=25, deadline=None)
@given(n_in=st.integers(1, 120), n_out=st.integers(1, 60), seed=st.integers(0, 2**32 - 1))
@example(n_in=1, n_out=28, seed=0)
@example(n_in=336, n_out=336, seed=0)
def test_bicubic_weights_equal_torch_interpolate(n_in, n_out, seed):
    """One axis at a time: the weight matrices applied to random data equal torch's bicubic."""
    x = np.random.default_rng(seed).standard_normal((2, n_in, n_in + 3)).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(x)[None], size=(n_out, n_out),
                                               mode="bicubic", align_corners=False)[0].numpy()
    m_h, m_w = bicubic_weights(n_in, n_out), bicubic_weights(n_in + 3, n_out)
    np.testing.assert_allclose(m_h @ x @ m_w.T, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("n_in, n_out", [(339, 337), (1007, 337), (4705, 336)])
def test_bicubic_coordinates_are_torchs_float32(n_in, n_out):
    """Non-integer scales, where the coordinate's arithmetic shows: float64 coordinates are off by
    up to 1e-3 here, float32 ones rounded twice by 6e-5; torch's (float32, the multiply-add fused
    on x86, rounded once) and ours agree to ~2e-6."""
    x = np.random.default_rng(n_in).standard_normal((1, 2, n_in)).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(x)[None], size=(2, n_out),
                                               mode="bicubic", align_corners=False)[0].numpy()
    np.testing.assert_allclose(x @ bicubic_weights(n_in, n_out).T, expected, rtol=0, atol=1e-5)


# (W, H, num_crops) -> (h_c, w_c, tokens), S = 28, P = 7, g = 2 (REFERENCE-vision §7)
TINY = {(50, 30, 4): (2, 2, 27), (50, 30, 6): (2, 3, 35), (30, 50, 4): (2, 2, 27),
        (30, 50, 6): (3, 2, 37), (60, 20, 4): (1, 3, 21), (20, 60, 4): (3, 1, 25),
        (56, 28, 4): (1, 2, 17), (56, 28, 6): (2, 3, 35), (5, 5, 4): (2, 2, 27),
        (90, 9, 4): (1, 4, 25), (90, 9, 6): (1, 6, 33)}
# the same at S = 336, P = 14, g = 12 (REFERENCE-vision §2)
PUBLISHED = {(336, 336, 16): (4, 4, 2509), (336, 336, 4): (2, 2, 757), (640, 480, 16): (3, 4, 1921),
             (640, 480, 4): (2, 2, 757), (480, 640, 16): (4, 3, 1933),
             (1920, 1080, 16): (3, 5, 2353), (1920, 1080, 4): (2, 2, 757),
             (465, 226, 16): (3, 5, 2353), (465, 226, 4): (1, 2, 457),
             (50, 8000, 16): (16, 1, 2653), (50, 8000, 4): (4, 1, 781),
             (8000, 50, 16): (1, 16, 2473)}


@pytest.mark.parametrize("crop, patch, table", [(28, 7, TINY), (PUBLISHED_CROP, 14, PUBLISHED)])
def test_grids_and_token_counts_of_the_reference(crop, patch, table):
    for (width, height, num_crops), (h_c, w_c, tokens) in table.items():
        assert hd_grid(width, height, num_crops, crop)[:2] == (h_c, w_c), (width, height)
        assert num_image_tokens(width, height, num_crops, crop, patch) == tokens, (width, height)


def test_the_official_float_expressions():
    """ratio = W / H in floats, as the official code: new_h = int(28 / (28 / 25)) = 24, not 25;
    and ceil(15 / (15 / 13)) = 14, not 13, so 15 x 13 at 195 crops gets s = 14."""
    assert hd_grid(28, 25, 1, 28) == (1, 1, 28, 24, False)
    assert hd_grid(15, 13, 195, 28)[1] == 14
    assert hd_grid(25, 28, 1, 28) == (1, 1, 28, 24, True)


@settings(max_examples=25, deadline=None)
@given(width=st.integers(1, 100), height=st.integers(1, 100), num_crops=st.integers(1, 16),
       crop=st.sampled_from([28, 56]))
def test_token_count_from_size_equals_the_one_from_pixels(width, height, num_crops, crop):
    processor = ImageProcessor(num_crops=num_crops, crop_size=crop, patch_size=7)
    try:
        out = processor(Image.new("RGB", (width, height), (10, 200, 30)))
    except ValueError:
        with pytest.raises(ValueError, match="too elongated"):
            num_image_tokens(width, height, num_crops, crop, 7)
        return
    h_c, w_c = out["image_sizes"][0] // crop
    assert h_c * w_c <= num_crops
    assert out["num_img_tokens"] == [num_image_tokens(width, height, num_crops, crop, 7)]
    assert out["num_img_tokens"][0] == tokens_from_grid(h_c, w_c, crop // 14)


@settings(max_examples=50, deadline=None)
@given(width=st.integers(1, 10000), height=st.integers(1, 10000), num_crops=st.integers(1, 40))
def test_the_grid_fills_the_budget_and_never_exceeds_it(width, height, num_crops):
    """From sizes alone: h_c w_c <= num_crops, and one more column (a row if portrait) would not
    fit: s is the largest scale."""
    try:
        h_c, w_c, new_w, new_h, transposed = hd_grid(width, height, num_crops, PUBLISHED_CROP)
    except ValueError:
        return                              # too elongated: 336 s / ratio < 1
    assert h_c * w_c <= num_crops
    scale = h_c if transposed else w_c
    assert new_w == scale * PUBLISHED_CROP
    ratio = max(width, height) / min(width, height)
    assert (scale + 1) * np.ceil((scale + 1) / ratio) > num_crops


def test_white_padding_and_zero_crops():
    """50 x 30 at S = 28, 6 crops: resized to 84 x 50, padded to 84 x 56 with 3 white rows above
    and 3 below (2 x 3 crops, all used); 60 x 20 -> 1 x 3 crops, so crops 4..6 of 6 are zero."""
    white = np.broadcast_to(np.array(WHITE_NORMALIZED, np.float32)[:, None, None], (3, 3, 28))
    pixel_values, size = hd_transform(Image.new("RGB", (50, 30), (0, 0, 0)), 6, 28)
    assert size == (56, 84)
    for top, bottom in zip(pixel_values[1:4], pixel_values[4:7]):    # the two rows of crops
        np.testing.assert_allclose(top[:, :3], white, rtol=0, atol=1e-6)
        np.testing.assert_allclose(bottom[:, -3:], white, rtol=0, atol=1e-6)
        assert (top[:, 3] < 0).all() and (bottom[:, -4] < 0).all()   # black in between
    pixel_values, size = hd_transform(Image.new("RGB", (20, 60), (0, 0, 0)), 6, 28)
    assert size == (84, 28)                                 # portrait: no padding needed
    pixel_values, size = hd_transform(Image.new("RGB", (60, 20), (0, 0, 0)), 6, 28)
    assert size == (28, 84)
    assert pixel_values[4:].shape == (3, 3, 28, 28) and not pixel_values[4:].any()


def test_portrait_is_padded_left_and_right():
    pixel_values, size = hd_transform(Image.new("L", (30, 50), 0), 6, 28)     # -> 50 x 84
    assert size == (84, 56)
    white = np.array(WHITE_NORMALIZED, np.float32)[:, None]
    np.testing.assert_allclose(pixel_values[1][:, 5, :3], np.broadcast_to(white, (3, 3)), atol=1e-6)
    np.testing.assert_allclose(pixel_values[2][:, 5, -3:], np.broadcast_to(white, (3, 3)),
                               atol=1e-6)
    assert (pixel_values[1][:, 5, 3] < 0).all()


def test_processor_batches_images_with_different_grids():
    processor = ImageProcessor.from_dict({"num_crops": 6, "crop_size": 28, "patch_size": 7})
    images = [Image.new("RGB", (50, 30)), Image.new("L", (20, 60)), Image.new("RGB", (5, 5))]
    out = processor(images)
    assert out["pixel_values"].shape == (3, 7, 3, 28, 28)
    assert out["pixel_values"].dtype == np.float32
    assert out["image_sizes"].dtype == np.int64
    assert out["image_sizes"].tolist() == [[56, 84], [84, 28], [56, 56]]
    assert out["num_img_tokens"] == [35, 25, 27]


def test_processor_from_published_config():
    published = {"num_crops": 16, "num_img_tokens": 144, "image_mean": list(CLIP_MEAN),
                 "image_std": list(CLIP_STD), "processor_class": "Phi3VProcessor"}
    processor = ImageProcessor.from_dict(published)
    assert (processor.num_crops, processor.crop_size, processor.g) == (16, 336, 12)
    assert ImageProcessor.from_dict({}).num_crops == 1
    tiny = ImageProcessor.from_dict({"crop_size": {"height": 28, "width": 28}, "patch_size": 7,
                                     "image_mean": [0.5] * 3, "image_std": [0.5] * 3})
    out = tiny(Image.new("RGB", (28, 28), (255, 255, 255)))
    assert out["pixel_values"].shape == (1, 2, 3, 28, 28)
    np.testing.assert_allclose(out["pixel_values"][0, :2], 1.0, atol=1e-6)   # (1 - 0.5) / 0.5


def test_mode_conversions():
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)            # opaque: kept
    rgba[0, 1] = (10, 20, 30, 0)              # transparent: white
    rgba[0, 2] = (0, 0, 0, 128)               # half: grey
    rgba[1] = np.random.default_rng(0).integers(0, 256, (3, 4))
    converted = np.asarray(to_rgb(Image.fromarray(rgba)))
    assert converted[0, 0].tolist() == [10, 20, 30] and converted[0, 1].tolist() == [255] * 3
    assert 120 <= converted[0, 2, 0] <= 130
    for image in (Image.fromarray(rgba), Image.fromarray(rgba[..., [0, 3]]),       # RGBA, LA
                  Image.fromarray(rgba[..., 0]),                                   # L
                  Image.fromarray(rgba[..., :3]).convert("CMYK"),
                  Image.fromarray(rgba[..., :3]).convert("P"),
                  random_image(7, 5, "P", 1)):                                     # P, transparency
        assert to_rgb(image).mode == "RGB"
        np.testing.assert_array_equal(np.asarray(to_rgb(image)),
                                      convert_to_rgb(image, return_numpy=True), err_msg=image.mode)
    grey = np.asarray(to_rgb(Image.fromarray(np.array([[7, 200]], np.uint8))))
    assert grey.tolist() == [[[7, 7, 7], [200, 200, 200]]]


def test_sixteen_bit_and_float_images():
    """I;16: scaled to 8 bit, round(v / 257); I and F: kept when in [0, 255], refused otherwise."""
    sixteen = Image.fromarray(np.array([[0, 257 * 128, 65535, 200]], np.uint16))
    assert sixteen.mode == "I;16"
    assert np.asarray(to_rgb(sixteen))[0, :, 0].tolist() == [0, 128, 255, 1]
    big_endian = Image.frombytes("I;16B", (4, 1), np.array([[0, 257 * 128, 65535, 200]],
                                                              ">u2").tobytes())
    assert np.asarray(to_rgb(big_endian))[0, :, 0].tolist() == [0, 128, 255, 1]
    for dtype in (np.int32, np.float32):
        image = Image.fromarray(np.array([[0, 7, 254.6 if dtype == np.float32 else 255]], dtype))
        assert np.asarray(to_rgb(image))[0, :, 1].tolist() == [0, 7, 255]
        with pytest.raises(ValueError, match="outside 0..255: scale it to 8 bit"):
            to_rgb(Image.fromarray(np.array([[0, 5000]], dtype)))
    with pytest.raises(ValueError, match="outside 0..255"):
        to_rgb(Image.fromarray(np.array([[np.nan, 1]], np.float32)))
    pixel_values, size = hd_transform(sixteen, 1, 28)       # the whole path accepts it
    assert size == (28, 28) and np.isfinite(pixel_values).all()


def test_clear_errors():
    with pytest.raises(ValueError, match="expected a Pillow image, got ndarray"):
        hd_transform(np.zeros((28, 28, 3), np.uint8), 4, 28)
    with pytest.raises(ValueError, match=r"the image is empty \(0 x 5 pixels\)"):
        hd_transform(Image.new("RGB", (0, 5)), 4, 28)
    with pytest.raises(ValueError, match="the image is empty"):
        num_image_tokens(0, 10, 4, 28, 7)
    with pytest.raises(ValueError, match="num_crops must be at least 1, not 0"):
        hd_transform(Image.new("RGB", (5, 5)), 0, 28)
    with pytest.raises(ValueError, match="num_crops must be at least 1"):
        ImageProcessor(num_crops=0)
    with pytest.raises(ValueError, match="not divisible by 2 x patch = 14"):
        num_image_tokens(50, 30, 4, 30, 7)
    with pytest.raises(ValueError, match="not divisible by 2 x patch = 28"):
        ImageProcessor.from_dict({"crop_size": 42, "patch_size": 14})
    with pytest.raises(ValueError, match="too elongated for 1 crops of 28 pixels"):
        hd_transform(Image.new("RGB", (120, 2)), 1, 28)
    with pytest.raises(ValueError, match="crops must be square"):
        ImageProcessor.from_dict({"crop_size": {"height": 28, "width": 56}})
    with pytest.raises(ValueError, match="no images"):
        ImageProcessor()([])
