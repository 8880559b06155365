"""Phi-3-vision's processor: a prompt with image tags and the images -> the model's inputs.

    chunks    = re.split(r"<\\|image_\\d+\\|>", prompt)        text between the tags, maybe empty
    chunk ids = [BOS] + tokens(chunk)                         every chunk tokenised on its own
    input_ids = chunk_0, [-1] * n_1, chunk_1, [-2] * n_2, ..., chunk_N             [1, T]
    n_k       = (h_c w_c + 1) g^2 + 1 + (h_c + 1) g           image k's tokens (hd_transform)

The text `<|image_k|>` (not a token) marks where image k goes; it becomes n_k copies of the id -k,
the slots the model fills with image k's vectors (REFERENCE-vision §1.3). Without images the
prompt is tokenised once, as one chunk.

Source: `processing_phi3_v.py` of microsoft/Phi-3-vision-128k-instruct (`Phi3VProcessor`), as
REFERENCE-vision.md §2 ("Text side") describes it.
"""

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from tinyphi3.errors import ConfigError, InvalidInputError
from tinyphi3.models.vision.hd_transform import ImageProcessor
from tinyphi3.tokenizers import load_tokenizer

IMAGE_TAG = re.compile(r"<\|image_(\d+)\|>")     # the published pattern, with its number captured
PREPROCESSOR_CONFIG = "preprocessor_config.json"


def image_tag(k: int) -> str:
    return f"<|image_{k}|>"


def check_tags(numbers: list, num_images: int):
    """The tags' numbers, in the order they appear, must be 1, 2, ..., N for N images.

    The published processor asks only that the set of numbers be {1..N}; we also refuse a repeat
    (image k's vectors would be asked for twice, and the model holds them once) and tags out of
    order (the model fills the slots in order of appearance, whatever k they hold, so image 2's
    vectors would land in image 1's slots)."""
    if numbers and num_images == 0:
        raise InvalidInputError(f"the prompt has the image tag {image_tag(numbers[0])} but no "
                                f"images were given")
    for k in numbers:
        if numbers.count(k) > 1:
            raise InvalidInputError(f"the tag {image_tag(k)} appears {numbers.count(k)} times: "
                                    f"each image's tag must appear once")
        if not 1 <= k <= num_images:
            raise InvalidInputError(
                f"the tag {image_tag(k)} names no image: with {num_images} image(s) the tags are "
                f"{image_tag(1)} to {image_tag(num_images)}")
    for k in range(1, num_images + 1):
        if k not in numbers:
            raise InvalidInputError(f"image {k} has no tag {image_tag(k)} in the prompt "
                                    f"({num_images} image(s) given, {len(numbers)} tag(s))")
    if numbers != sorted(numbers):
        raise InvalidInputError(
            f"the image tags must appear in order ({image_tag(1)} first): the model fills the "
            f"image slots in order of appearance; got {', '.join(map(image_tag, numbers))}")


def as_image_list(images) -> list:
    """None, one Pillow image, or a list/tuple of them -> a list (else InvalidInputError)."""
    if images is None:
        return []
    if isinstance(images, Image.Image):
        return [images]
    if not isinstance(images, (list, tuple)):
        raise InvalidInputError(f"images must be a Pillow image or a list of them, "
                                f"got {type(images).__name__}")
    for k, image in enumerate(images, 1):
        if not isinstance(image, Image.Image):
            raise InvalidInputError(f"image {k} is a {type(image).__name__}, not a Pillow image "
                                    f"(open a file with PIL.Image.open)")
    return list(images)


class Phi3VProcessor:
    """`Phi3VProcessor(tokenizer, image_processor)(prompt, images)` -> the model's inputs:
    {"input_ids" int64 [1, T] (image slots -k), "pixel_values" float32 [N, K+1, 3, S, S] or None,
    "image_sizes" int64 [N, 2] or None, "num_img_tokens" [n_1, ..., n_N]}.

    BOS per chunk: every text chunk is tokenised on its own and begins as the tokenizer's own
    encoding begins: with BOS when its config says add_bos_token (Phi-3-vision's: true, so each
    chunk, the empty one after a trailing tag included, starts with BOS 1), without one when it
    does not (tinyphi3's shipped checkpoints, phi-3-small); likewise EOS with add_eos_token.
    Why: the published processor calls `tokenizer(chunk).input_ids` chunk by chunk, the model
    was fine-tuned on those ids, and vLLM reproduces them (its PR #15321).

    The prompt is a rendered chat (the model card renders it with the chat template, then calls
    the processor), so control tokens written in it (`<|user|>`, `<|end|>`) become control ids, as
    `tokenizer(chunk)` makes them; `Tokenizer.encode`, by contrast, reads every string as text.
    So, as with the published processor, a user who types `<|end|>` or `<|image_1|>` in a message
    writes a control token or a tag: clean such strings out of untrusted text first.
    """

    def __init__(self, tokenizer, image_processor: ImageProcessor):
        self.tokenizer, self.image_processor = tokenizer, image_processor

    @classmethod
    def from_pretrained(cls, path):
        """The tokenizer of directory `path` and its preprocessor_config.json (num_crops,
        crop_size, patch_size, image_mean, image_std: see ImageProcessor.from_dict)."""
        file = Path(path) / PREPROCESSOR_CONFIG
        if not file.is_file():
            raise ConfigError(f"missing {file}: a Phi-3-vision directory needs it for its image "
                              f"processor (num_crops, ...)")
        try:
            config = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigError(f"cannot read {file} as JSON: {err}") from err
        if not isinstance(config, dict):
            raise ConfigError(f"{file} must hold a JSON object")
        return cls(load_tokenizer(path), ImageProcessor.from_dict(config))

    def encode_chunk(self, text: str) -> list:
        """Ids of one chunk as `tokenizer(text).input_ids` gives them: control tokens matched,
        text between them BPE-encoded, BOS/EOS as the tokenizer's config adds them."""
        tok = self.tokenizer
        ids = tok.encode_parts(tok.split_control_tokens(text))
        if tok.add_bos_token and tok.bos_token is not None:
            ids = [tok.bos_token_id] + ids
        if tok.add_eos_token and tok.eos_token is not None:
            ids = ids + [tok.eos_token_id]
        return ids

    def __call__(self, prompt: str, images=None) -> dict:
        if not isinstance(prompt, str):
            raise InvalidInputError(f"the prompt must be a str, got {type(prompt).__name__}")
        images = as_image_list(images)
        numbers = [int(k) for k in IMAGE_TAG.findall(prompt)]          # tag numbers, in order
        check_tags(numbers, len(images))
        if not images:
            ids = np.array([self.encode_chunk(prompt)], dtype=np.int64)           # [1, T]
            return {"input_ids": ids, "pixel_values": None, "image_sizes": None,
                    "num_img_tokens": []}
        pixels = self.image_processor(images)
        chunks = IMAGE_TAG.split(prompt)[::2]         # split keeps the captured numbers: drop them
        ids = self.encode_chunk(chunks[0])
        for k, chunk in zip(numbers, chunks[1:]):
            ids += [-k] * pixels["num_img_tokens"][k - 1] + self.encode_chunk(chunk)
        return {"input_ids": np.array([ids], dtype=np.int64), **pixels}            # [1, T]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        """Text of ids [T] or [1, T], the image slots (ids < 0) left out: a tokenizer reads -k as
        an index from the end, or fails (vLLM rewrites them for that reason)."""
        ids = np.asarray(ids).reshape(-1)                                   # [1, T] -> [T]
        return self.tokenizer.decode([int(i) for i in ids if i >= 0], skip_special_tokens)
