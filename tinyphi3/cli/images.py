"""Pictures for `tinyphi3 chat` and `tinyphi3 generate` (Phi-3-vision checkpoints, model_type
"phi3_v"): the --image option, a picture opened and processed once, the processor of a
checkpoint, and the model's image inputs for a list of pictures."""

from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from tinyphi3.errors import InvalidInputError

image_option = click.option(
    "--image", "images", multiple=True, metavar="PATH",
    help="A picture for the model to read (a Phi-3-vision checkpoint, model_type phi3_v): PNG, "
         "JPEG, GIF, BMP, WebP, TIFF... Repeat it for several, numbered 1, 2, ... in order.")


def reads_images(config) -> bool:
    return config.vision is not None


def no_images_error(ckpt, config) -> InvalidInputError:
    return InvalidInputError(f"{ckpt} holds a text-only model (model_type "
                             f"{config.model_type!r}): pictures need a Phi-3-vision checkpoint "
                             f"(model_type 'phi3_v')")


def check_checkpoint_reads_images(ckpt):
    """Refuse pictures for a text-only checkpoint before its weights load (config.json only).
    A directory that does not exist is left for the loader to report."""
    from tinyphi3.io import checkpoint
    if Path(ckpt).is_dir():
        config = checkpoint.load_config(ckpt)
        if not reads_images(config):
            raise no_images_error(ckpt, config)


def load_processor(ckpt, model):
    """The checkpoint's Phi3VProcessor (its tokenizer and preprocessor_config.json) for a
    phi3_v model; None for a text-only one."""
    if not reads_images(model.config):
        return None
    from tinyphi3.models.vision.processor import Phi3VProcessor
    return Phi3VProcessor.from_pretrained(ckpt)


@dataclass
class Picture:
    """One image file, processed once: pixel_values [num_crops + 1, 3, S, S], its padded size
    (H_pad, W_pad), its number of image tokens, and its size on file."""
    path: str
    pixel_values: np.ndarray
    image_size: np.ndarray
    tokens: int
    width: int
    height: int


def open_picture(path, image_processor) -> Picture:
    """Open, check and process the image file `path` (InvalidInputError when it is not one)."""
    from tinyphi3.models.vision.image_file import open_image
    image = open_image(path)
    out = image_processor([image])
    return Picture(str(path), out["pixel_values"][0], out["image_sizes"][0],
                   int(out["num_img_tokens"][0]), image.width, image.height)


def image_inputs(pictures) -> dict:
    """generate's keyword arguments for these pictures, in order ({} for none)."""
    if not pictures:
        return {}
    return {"pixel_values": np.stack([p.pixel_values for p in pictures]),   # [N, K+1, 3, S, S]
            "image_sizes": np.stack([p.image_size for p in pictures])}      # [N, 2]


def check_pictures_fit(pictures, context: int):
    """The pictures of one message must leave room in the context for some text and an answer."""
    tokens = sum(p.tokens for p in pictures)
    if tokens >= context:
        raise InvalidInputError(
            f"{pictures[-1].path}: the pictures of one message would take {tokens} tokens "
            f"(" + " + ".join(str(p.tokens) for p in pictures) + f") but the context holds "
            f"{context}: give fewer, or a smaller num_crops in preprocessor_config.json")
