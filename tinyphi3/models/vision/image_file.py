"""Opening an image file for Phi-3-vision: a Pillow image, or one clear error saying what is wrong.

    image = Image.open(path)            reads the header only: format, size, mode
    check   width * height <= MAX_IMAGE_PIXELS                     (before any pixel is decoded)
    image.load()                        decodes every pixel: a truncated file fails here

What can be wrong, each an InvalidInputError naming the file: it does not exist or cannot be read;
it is not an image Pillow knows; it is truncated or corrupt; it is a decompression bomb (a small
file that decodes to an enormous image). The limit is Pillow's documented default,
`PIL.Image.MAX_IMAGE_PIXELS` = 89,478,485 pixels (about 9459 x 9459, 256 MB as 8-bit RGB), held
here so that it holds whatever a program sets Pillow's to. Pillow's own check runs as well:
its DecompressionBombWarning (past its limit) is turned into the same error, as is its
DecompressionBombError (past twice its limit).

The mode is left as the file has it (palette, grey, RGBA, CMYK, 16-bit...): the image processor
converts it (tinyphi3.models.vision.hd_transform.to_rgb).
"""

import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from tinyphi3.errors import InvalidInputError

MAX_IMAGE_PIXELS = 89_478_485          # Pillow's default Image.MAX_IMAGE_PIXELS


def open_image(path) -> Image.Image:
    """The image in file `path`, decoded (its pixels in memory, the file closed)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                check_pixel_count(path, image.width, image.height, MAX_IMAGE_PIXELS)
                image.load()
                return image
    except InvalidInputError:
        raise
    except FileNotFoundError:
        raise InvalidInputError(f"image file {path} not found") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path} is a directory, not an image file") from None
    except UnidentifiedImageError:
        raise InvalidInputError(f"{path} is not an image that Pillow can read (PNG, JPEG, GIF, "
                                f"BMP, WebP, TIFF, ...)") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as err:
        raise InvalidInputError(f"{path} is too large to open safely (a decompression bomb?): "
                                f"{err}") from None
    except PermissionError as err:
        raise InvalidInputError(f"cannot read image file {path}: {err.strerror}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise InvalidInputError(f"{path} is truncated or corrupt: {err}") from None


def check_pixel_count(path, width: int, height: int, limit: int):
    if width * height > limit:
        raise InvalidInputError(
            f"{path} is {width} x {height} = {width * height:,} pixels, more than the "
            f"{limit:,} that tinyphi3 opens (a decompression bomb?): shrink it first")
