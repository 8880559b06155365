"""tinyphi3_gpu: tinyphi3's model on an NVIDIA GPU, through CuPy.

    pip install -e ".[gpu]"          CuPy for CUDA 12, and the CUDA headers NVRTC needs
    tinyphi3 chat --backend cupy     the shipped model, its weights in the GPU's memory
    Phi3.from_pretrained(path, backend="cupy", dtype="bfloat16")

The model is tinyphi3's own code, unchanged: its NumPy lines run on CuPy arrays (the weights are
uploaded once, the KV cache lives on the device, the logits come back as NumPy). Where a kernel
pays, the backend "cupy" hands the work to a RawKernel written for it, as the numba backend does
on the CPU:

    kernels/blocksparse_attention.cu   phi-3-small's block-sparse attention, prefill and decode,
                                       visiting only the active blocks (attention.py launches it)
    kernels/q4_matvec.cu               4-bit weights times 8-bit activations (linear.py)
    kernels/bf16_matvec.cu             bf16 weights times float32 activations (linear.py)

Each kernel has a NumPy emulation (attention_emulation.py, linear_emulation.py) that walks the
same grid, tiles and loops in the same order, proven equal to tinyphi3's reference by the tests,
and the .cu source is its line-by-line translation; compile.py compiles every source to machine
code for sm_80 and sm_90 with NVRTC, which needs no GPU. So a machine without a GPU checks the
algorithm and the compile, and a GPU checks the rest (tests/test_gpu_*.py, benchmarks/gpu.py).

tinyphi3 never imports this package by name: setup.py declares the entry point
"tinyphi3.backends": "cupy = tinyphi3_gpu:register", and tinyphi3.backends calls `register`
when the backend "cupy" is first asked for.
"""

import numpy as np

from tinyphi3 import backends
from tinyphi3.backends import Backend
from tinyphi3_gpu.device import gpu_unavailable


def _float32_cupy(arrays) -> bool:
    return all(type(a).__module__.startswith("cupy") and a.dtype == np.float32 for a in arrays)


def _upload(array):
    import cupy
    return cupy.asarray(array)


def _or_reference(kernel, decode: bool):
    """The block-sparse kernel, or tinyphi3's reference on the same CuPy arrays where no compiled
    instantiation fits (a head dim or block size the .cu does not instantiate: the launcher
    raises NotImplementedError). The reference asks the switch for a kernel, so it runs with the
    numpy backend selected."""
    def run(q, k, v, layout, block_size, scale, position):
        try:
            return kernel(q, k, v, layout, block_size, scale, position)
        except NotImplementedError:
            from tinyphi3.nn.blocksparse import blocksparse_attention
            past = position - 1 if decode else position      # decode is given the length
            with backends.use_backend("numpy"):
                return blocksparse_attention(q, k[:, :, :past + q.shape[2]],
                                             v[:, :, :past + q.shape[2]], layout, block_size,
                                             scale, past)
    return run


def _kernels() -> dict:
    from tinyphi3_gpu import attention, linear
    return {
        "blocksparse_prefill": _or_reference(attention.blocksparse_prefill, decode=False),
        "blocksparse_decode": _or_reference(attention.blocksparse_decode, decode=True),
        "q4_linear": linear.q4_linear,
        "bf16_linear": linear.bf16_linear,
    }


def register() -> None:
    """Register the backend "cupy" with tinyphi3 (the entry point's function)."""
    backends.register_backend(Backend("cupy", accepts=_float32_cupy, load=_kernels,
                                      missing=gpu_unavailable, upload=_upload))
