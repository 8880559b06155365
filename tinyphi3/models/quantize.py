"""Quantizing a float checkpoint of any variant to 4 bits, tensor by tensor (`tinyphi3 quantize`).

The 4-bit format and its files are tinyphi3.quant's; which tensors a model has is its variant's
(tinyphi3.models.weights).
"""

from tinyphi3.io import checkpoint
from tinyphi3.models.weights import parameter_shapes
from tinyphi3.quant.checkpoint import AlreadyQuantizedError, quantization_config, write_quantized


def quantize_checkpoint(src, out, block=32, scheme="symmetric", progress=True):
    """Quantize the float checkpoint `src` into `out` (see write_quantized), streaming."""
    if quantization_config(src) is not None:
        raise AlreadyQuantizedError(f"{src}: already quantized to 4 bits; quantize the float "
                                    f"checkpoint it came from instead")
    config = checkpoint.load_config(src)
    index = checkpoint.tensor_index(src)
    ignored = checkpoint.tied_copies(config)
    index = {n: f for n, f in index.items() if n not in ignored}
    checkpoint.check_tensors(index, parameter_shapes(config))
    write_quantized(out, config, parameter_shapes(config), lambda name: index[name].get(name),
                    block, scheme, copy_from=src, progress=progress)
