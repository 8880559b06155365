"""tinyphi3: the Phi-3 models of the technical report, from scratch in readable NumPy.

    model = tinyphi3.Phi3.from_pretrained("checkpoints/mini")
    tok = tinyphi3.Tokenizer.from_pretrained("checkpoints/mini")
    logits = model(ids)                      # int [B, T] -> float32 [B, T, vocab]

A phi3_v directory (Phi-3-vision) loads as Phi3V, its processor turns text with <|image_k|>
tags and pictures into the model's inputs:

    proc = tinyphi3.Phi3VProcessor.from_pretrained("checkpoints/vision")
    inputs = proc("<|image_1|>\nWhat colour is the shape?", images=[picture])
    logits = model(inputs["input_ids"], pixel_values=inputs["pixel_values"],
                   image_sizes=inputs["image_sizes"])

When tinyphi3 is imported before NumPy, NumPy's OpenBLAS is loaded with its idle threads told to
sleep almost at once (OPENBLAS_THREAD_TIMEOUT=4, set only while NumPy loads, unless the variable
is set already). By default they spin for about 0.1 s after each product, and a 4-bit model's
prefill, which alternates BLAS attention with Numba's products, then ran its products on one
core: the spinning thread held the other (9.3 s against 6.5 s for 512 tokens of phi-3-mini on 2
cores; a training step is unchanged).
"""

import os as _os
import sys as _sys


def _load_numpy_with_sleeping_blas_threads():
    if "numpy" in _sys.modules or "OPENBLAS_THREAD_TIMEOUT" in _os.environ:
        return
    _os.environ["OPENBLAS_THREAD_TIMEOUT"] = "4"       # 2**4 cycles: read as OpenBLAS loads
    try:
        import numpy  # noqa: F401
    finally:
        del _os.environ["OPENBLAS_THREAD_TIMEOUT"]


_load_numpy_with_sleeping_blas_threads()

from tinyphi3.config import Phi3Config, preset
from tinyphi3.errors import TinyPhi3Error
from tinyphi3.inference.generate import generate
from tinyphi3.models.model import Phi3
from tinyphi3.models.vision.phi3v import Phi3V
from tinyphi3.models.vision.processor import Phi3VProcessor
from tinyphi3.nn.blocksparse import blocksparse_layout
from tinyphi3.tokenizers import load_tokenizer
from tinyphi3.tokenizers.sentencepiece_bpe import Tokenizer

__all__ = ["Phi3", "Phi3Config", "Phi3V", "Phi3VProcessor", "Tokenizer", "TinyPhi3Error",
           "blocksparse_layout", "generate", "load_tokenizer", "preset"]
