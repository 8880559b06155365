"""Quantizing a float checkpoint of any variant to 4 bits, tensor by tensor (`tinyphi3 quantize`).

The 4-bit format and its files are tinyphi3.quant's; which tensors a model has is its variant's
(tinyphi3.models.weights, tinyphi3.models.vision.weights).

Phi-3-vision (model_type phi3_v): the decoder is quantized exactly as phi-3-mini is; the image
side (the CLIP tower, the separators sub_GN / glb_GN and the projection, everything under
`model.vision_embed_tokens.`) is copied as stored (bf16 in the published snapshot), bit for bit.
The tower is 7% of the weights, and every image token passes through all of it: rounding it to
4 bits would save about 0.4 GB on disk (1 GB in memory, where it is float32) and change every
image's vectors, by an amount nobody has measured here; quantizing it is a possible later option.
The output always uses the published names (the tower under transformers 4's
`img_processor.vision_model.`, the embedding as `model.embed_tokens.weight`).
"""

from tinyphi3.io import checkpoint
from tinyphi3.io.safetensors import DTYPES
from tinyphi3.models.vision import weights as vision_weights
from tinyphi3.models.weights import parameter_shapes
from tinyphi3.quant.checkpoint import AlreadyQuantizedError, quantization_config, write_quantized

IMAGE_SIDE = vision_weights.VISION.rstrip(".")       # the module phi3_v keeps out of the 4 bits


def quantize_checkpoint(src, out, block=32, scheme="symmetric", progress=True):
    """Quantize the float checkpoint `src` into `out` (see write_quantized), streaming."""
    if quantization_config(src) is not None:
        raise AlreadyQuantizedError(f"{src}: already quantized to 4 bits; quantize the float "
                                    f"checkpoint it came from instead")
    config = checkpoint.load_config(src)
    index = checkpoint.tensor_index(src)
    if config.vision is None:
        stored, ignored, kept = parameter_shapes(config), checkpoint.tied_copies(config), ()
        shapes, source_name = stored, {name: name for name in stored}
    else:                                # phi3_v: its tensors under the names the source uses
        stored, ignored = vision_weights.stored_shapes(config, index)
        shapes, kept = vision_weights.parameter_shapes(config), (IMAGE_SIDE,)
        source_name = {vision_weights.published_name(n): n for n in stored}
    index = {n: f for n, f in index.items() if n not in ignored}
    checkpoint.check_tensors(index, stored)

    def read(name):
        return index[source_name[name]].get(source_name[name])

    def stored_dtype(name):
        return DTYPES[index[source_name[name]].dtype(source_name[name])]

    write_quantized(out, config, shapes, read, block, scheme, copy_from=src, progress=progress,
                    not_converted=kept, stored_dtype=stored_dtype)
