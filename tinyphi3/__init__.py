"""tinyphi3: the Phi-3 models of the technical report, from scratch in readable NumPy.

    model = tinyphi3.Phi3.from_pretrained("checkpoints/mini")
    tok = tinyphi3.Tokenizer.from_pretrained("checkpoints/mini")
    logits = model(ids)                      # int [B, T] -> float32 [B, T, vocab]

A phi3_v directory (Phi-3-vision) loads as Phi3V: `model(ids, pixel_values, image_sizes)`.
"""

from tinyphi3.config import Phi3Config, preset
from tinyphi3.errors import TinyPhi3Error
from tinyphi3.inference.generate import generate
from tinyphi3.models.model import Phi3
from tinyphi3.models.vision.phi3v import Phi3V
from tinyphi3.nn.blocksparse import blocksparse_layout
from tinyphi3.tokenizers import load_tokenizer
from tinyphi3.tokenizers.sentencepiece_bpe import Tokenizer

__all__ = ["Phi3", "Phi3Config", "Phi3V", "Tokenizer", "TinyPhi3Error", "blocksparse_layout",
           "generate", "load_tokenizer", "preset"]
