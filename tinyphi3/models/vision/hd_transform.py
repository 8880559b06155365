"""Phi-3-vision's image processor, the HD transform: one image -> a global view and a grid of crops.

    landscape = image, or its transpose if W < H           (swap the axes, not a rotation)
    s         = largest integer with s * ceil(s / ratio) <= num_crops,     ratio = W / H >= 1
    resized   = Pillow bilinear resize to new_w = s * S, new_h = int(new_w / ratio)
    padded    = white rows above and below up to a multiple of S (top = diff // 2), transposed back
    x         = (padded / 255 - mean) / std                                [3, H_pad, W_pad]
    pixels    = [bicubic(x -> S x S), crop_0, ..., crop_{h_c w_c - 1}, 0, ...]   num_crops + 1
    tokens    = (h_c w_c + 1) g^2 + 1 + (h_c + 1) g,      g = S / (2P) merged tokens per side

Source: `image_processing_phi3_v.py` of microsoft/Phi-3-vision-128k-instruct (`HD_transform`,
`padding_336`, `calc_num_image_tokens_from_image_size`), as described in REFERENCE-vision.md §2;
the crop side S (336 there) and the patch side P (14) generalised as in its §7.
Letters (tinyphi3/models/vision): N crops, S crop side, P patch side; h_c, w_c crop rows, columns.
"""

import math

import numpy as np
from PIL import Image

from tinyphi3.errors import InvalidInputError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)      # OpenAI CLIP's normalisation, per channel
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PUBLISHED_CROP = 336                                  # CLIP ViT-L/14-336's image side
WHITE = (255, 255, 255)
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")      # the modes whose bands hold an alpha
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def to_rgb(image):
    """Any Pillow image as an 8-bit RGB image, as transformers' `convert_to_rgb` makes it.

    - Transparency (RGBA, LA, PA, or a P/L/RGB image with a `transparency` entry in its info):
      composited onto white with Pillow's `alpha_composite`, so transparent pixels become white.
    - L, 1, P without transparency, CMYK, YCbCr, ...: Pillow's `convert("RGB")` (grey copied to
      the three channels; CMYK by Pillow's formula, without any ICC profile).
    - I;16 and its byte orders (16-bit grey): our choice, scaled to 8 bit, round(v / 257)
      (0 -> 0, 65535 -> 255); Pillow's own conversion clips at 255 and turns most pixels white.
    - I (32-bit integers) and F (32-bit floats) have no fixed range: our choice, accepted when every
      value lies in [0, 255] (Pillow's 8-bit convention, rounded); otherwise an InvalidInputError
      asks the caller to scale the image to 8 bit, rather than clip it to garbage.
    """
    check_image(image)
    if image.mode in SIXTEEN_BIT_MODES:
        grey = np.asarray(image).astype(np.float64) / 257.0        # [H, W] in [0, 255]
        return Image.fromarray(np.rint(grey).astype(np.uint8)).convert("RGB")
    if image.mode in ("I", "F"):
        values = np.asarray(image)                                   # [H, W]
        if not (values.min() >= 0 and values.max() <= 255):          # False as well for NaN
            raise InvalidInputError(
                f"a mode {image.mode} image holds values in [{values.min()}, {values.max()}], "
                "outside 0..255: scale it to 8 bit (mode L or RGB) first")
        return Image.fromarray(np.rint(values).astype(np.uint8)).convert("RGB")
    if image.mode in ALPHA_MODES or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", image.size, WHITE + (255,))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def check_image(image):
    if not isinstance(image, Image.Image):
        raise InvalidInputError(f"expected a Pillow image, got {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise InvalidInputError(f"the image is empty ({image.width} x {image.height} pixels)")


def hd_grid(width: int, height: int, num_crops: int, crop: int):
    """The HD transform's sizes, from the image's size alone: (h_c, w_c, new_w, new_h, transposed).

    transposed = W < H; after the transpose ratio = W / H, s = the largest integer with
    s * ceil(s / ratio) <= num_crops, new_w = int(s * S), new_h = int(new_w / ratio): the size
    handed to Pillow's resize (of the landscape image). h_c, w_c: the rows and columns of crops of
    the padded image, transposed back (s columns and ceil(new_h / S) rows, swapped if transposed).
    The float expressions are the official code's, and they matter: 28 x 25 at S = 28 gets
    new_h = int(28 / (28 / 25)) = 24, where exact arithmetic would say 25.
    """
    check_num_crops(num_crops)
    if crop < 1:
        raise InvalidInputError(f"the crop size must be a positive number of pixels, not {crop}")
    if width < 1 or height < 1:
        raise InvalidInputError(f"the image is empty ({width} x {height} pixels)")
    transposed = width < height
    if transposed:
        width, height = height, width
    ratio = width / height
    scale = 1
    while scale * math.ceil(scale / ratio) <= num_crops:
        scale += 1
    scale -= 1
    new_w = int(scale * crop)
    new_h = int(new_w / ratio)
    if new_h == 0:
        raise InvalidInputError(
            f"a {width} x {height} image is too elongated for {num_crops} crops of {crop} pixels: "
            "it would be resized to a height of 0")
    rows = -(-new_h // crop)                                  # ceil(new_h / S), white padding
    h_c, w_c = (scale, rows) if transposed else (rows, scale)
    return h_c, w_c, new_w, new_h, transposed


def check_num_crops(num_crops: int):
    if num_crops < 1:
        raise InvalidInputError(f"num_crops must be at least 1, not {num_crops}")


def merged_tokens_per_side(crop: int, patch: int) -> int:
    """g = S / (2P): the crop's G = S / P patches per side, merged 2 x 2 (REFERENCE-vision §7)."""
    if crop % (2 * patch):
        raise InvalidInputError(f"the crop size {crop} is not divisible by 2 x patch = {2 * patch}")
    return crop // (2 * patch)


def tokens_from_grid(h_c: int, w_c: int, g: int) -> int:
    """N_tok = (h_c w_c + 1) g^2 + 1 + (h_c + 1) g: g^2 per crop and the global view, one row
    separator per row of the sub-image grid (g h_c) and of the global view (g), one glb_GN."""
    return (h_c * w_c + 1) * g * g + 1 + (h_c + 1) * g


def num_image_tokens(width: int, height: int, num_crops: int, crop: int = PUBLISHED_CROP,
                     patch: int = 14) -> int:
    """Image tokens of a W x H image, from its size alone (`calc_num_image_tokens_from_image_size`):
    2509 for 336 x 336 with 16 crops of 336 pixels, patch 14."""
    g = merged_tokens_per_side(crop, patch)
    h_c, w_c = hd_grid(width, height, num_crops, crop)[:2]
    return tokens_from_grid(h_c, w_c, g)


def resize_and_pad(image, num_crops: int, crop: int) -> np.ndarray:
    """Steps 1-4: transpose a portrait, Pillow bilinear resize, white rows centred, transpose back.
    An RGB image -> uint8 [H_pad, W_pad, 3], H_pad and W_pad multiples of S."""
    h_c, w_c, new_w, new_h, transposed = hd_grid(image.width, image.height, num_crops, crop)
    if transposed:
        image = image.transpose(Image.Transpose.TRANSPOSE)
    resized = np.asarray(image.resize((new_w, new_h), Image.Resampling.BILINEAR))  # [new_h,new_w,3]
    diff = -(-new_h // crop) * crop - new_h
    top = diff // 2
    padded = np.pad(resized, ((top, diff - top), (0, 0), (0, 0)), constant_values=255)
    if transposed:
        padded = padded.transpose(1, 0, 2)                    # [W', H', 3] -> [H', W', 3]
    return padded


def normalize(pixels: np.ndarray, mean=CLIP_MEAN, std=CLIP_STD) -> np.ndarray:
    """ToTensor and Normalize, in float32 as torchvision: x = (u8 / 255 - mean) / std.
    uint8 [H, W, 3] -> float32 [3, H, W]."""
    x = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255)    # [H, W, 3] -> [3, H, W]
    mean = np.asarray(mean, dtype=np.float32)[:, None, None]              # [3, 1, 1]
    std = np.asarray(std, dtype=np.float32)[:, None, None]
    return (x - mean) / std


def cubic_kernel(t: np.ndarray, a: float = -0.75) -> np.ndarray:
    """Keys' cubic convolution with torch's A = -0.75 (Keys 1981; ATen's upsample_bicubic2d):
    w(t) = ((A+2)|t| - (A+3))|t|^2 + 1 for |t| <= 1,  ((A|t| - 5A)|t| + 8A)|t| - 4A for 1 < |t| < 2,
    0 beyond."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def bicubic_weights(n_in: int, n_out: int) -> np.ndarray:
    """The matrix M [n_out, n_in] of torch's bicubic resampling along one axis (align_corners=False,
    no antialias): output i reads src = (i + 0.5) n_in / n_out - 0.5, taps floor(src) - 1 ..
    floor(src) + 2 clamped to the edge, weighted by cubic_kernel(src - tap).
    The coordinate as torch's CPU kernel computes it for float32 images: scale = float32(n_in /
    n_out), src rounded once to float32 (its multiply-add is fused, as measured on x86). For
    4705 -> 336, float64 coordinates would move the output by 1e-3, two float32 roundings (no
    fusing) by 6e-5 at 339 -> 337 (ours: ~2e-6). The HD transform's sizes are multiples of S,
    whose integer scales make every variant exact."""
    scale = np.float64(np.float32(n_in) / np.float32(n_out))
    src = (scale * (np.arange(n_out) + 0.5) - 0.5).astype(np.float32)     # exact, then rounded
    src = src.astype(np.float64)                                          # [n_out]
    first = np.floor(src).astype(np.int64) - 1
    taps = first[:, None] + np.arange(4)[None, :]                        # [n_out, 4]
    weights = cubic_kernel(src[:, None] - taps)                          # [n_out, 4]
    matrix = np.zeros((n_out, n_in))
    rows = np.repeat(np.arange(n_out), 4).reshape(n_out, 4)              # [n_out, 4]
    np.add.at(matrix, (rows, np.clip(taps, 0, n_in - 1)), weights)       # edge taps pile up
    return matrix


def global_view(x: np.ndarray, crop: int) -> np.ndarray:
    """The whole image shrunk (or enlarged) to S x S, as torch.nn.functional.interpolate(x[None],
    size=(S, S), mode='bicubic') computes it, separably: rows M_h x, then columns x M_w^T.
    [3, H, W] -> float32 [3, S, S]."""
    m_h = bicubic_weights(x.shape[1], crop)                               # [S, H]
    m_w = bicubic_weights(x.shape[2], crop)                               # [S, W]
    return (m_h @ x.astype(np.float64) @ m_w.T).astype(np.float32)       # [3, S, S]


def split_crops(x: np.ndarray, crop: int) -> np.ndarray:
    """The S x S crops of x, row-major (crop k = row a, column b, k = a w_c + b).
    [3, h_c S, w_c S] -> [h_c w_c, 3, S, S]."""
    h_c, w_c = x.shape[1] // crop, x.shape[2] // crop
    grid = x.reshape(3, h_c, crop, w_c, crop)                  # -> [3, h_c, S, w_c, S]
    grid = grid.transpose(1, 3, 0, 2, 4)                       # -> [h_c, w_c, 3, S, S]
    return grid.reshape(h_c * w_c, 3, crop, crop)              # -> [h_c w_c, 3, S, S]


def hd_transform(image, num_crops: int, crop: int = PUBLISHED_CROP, mean=CLIP_MEAN, std=CLIP_STD):
    """One Pillow image -> (pixel_values float32 [num_crops + 1, 3, S, S], (H_pad, W_pad)):
    the global view, the crops row-major, then all-zero crops up to num_crops + 1."""
    check_image(image)
    check_num_crops(num_crops)
    x = normalize(resize_and_pad(to_rgb(image), num_crops, crop), mean, std)   # [3, H_pad, W_pad]
    crops = split_crops(x, crop)                                               # [h_c w_c, 3, S, S]
    pixel_values = np.zeros((num_crops + 1, 3, crop, crop), dtype=np.float32)
    pixel_values[0] = global_view(x, crop)
    pixel_values[1:1 + len(crops)] = crops
    return pixel_values, (x.shape[1], x.shape[2])


class ImageProcessor:
    """Phi3VImageProcessor's call: images -> {"pixel_values" float32 [N, num_crops + 1, 3, S, S],
    "image_sizes" int64 [N, 2] (H_pad, W_pad), "num_img_tokens" [N tokens]}."""

    def __init__(self, num_crops: int = 1, crop_size: int = PUBLISHED_CROP, patch_size: int = 14,
                 image_mean=CLIP_MEAN, image_std=CLIP_STD):
        check_num_crops(num_crops)
        self.num_crops, self.crop_size, self.patch_size = num_crops, crop_size, patch_size
        self.g = merged_tokens_per_side(crop_size, patch_size)
        self.image_mean, self.image_std = tuple(image_mean), tuple(image_std)

    @classmethod
    def from_dict(cls, config: dict):
        """From preprocessor_config.json: num_crops (class default 1; the published file says 16),
        crop_size (ours, default 336; an int or {"height", "width"}), patch_size (ours, default
        14), image_mean and image_std (default OpenAI CLIP's)."""
        crop = config.get("crop_size", PUBLISHED_CROP)
        if isinstance(crop, dict):
            if crop["height"] != crop["width"]:
                raise InvalidInputError(f"crops must be square, not {crop}")
            crop = crop["height"]
        return cls(num_crops=config.get("num_crops", 1), crop_size=crop,
                   patch_size=config.get("patch_size", 14),
                   image_mean=config.get("image_mean", CLIP_MEAN),
                   image_std=config.get("image_std", CLIP_STD))

    def __call__(self, images) -> dict:
        images = [images] if isinstance(images, Image.Image) else list(images)
        if not images:
            raise InvalidInputError("no images to process")
        done = [hd_transform(im, self.num_crops, self.crop_size, self.image_mean, self.image_std)
                for im in images]
        sizes = np.array([size for _, size in done], dtype=np.int64)          # [N, 2]
        grids = sizes // self.crop_size                                        # [N, 2] h_c, w_c
        return {"pixel_values": np.stack([pixels for pixels, _ in done]),     # [N, K+1, 3, S, S]
                "image_sizes": sizes,
                "num_img_tokens": [tokens_from_grid(int(h), int(w), self.g) for h, w in grids]}
