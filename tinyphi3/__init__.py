"""tinyphi3: the Phi-3 models of the technical report, from scratch in readable NumPy.

    model = tinyphi3.Phi3.from_pretrained("checkpoints/mini")
    tok = tinyphi3.Tokenizer.from_pretrained("checkpoints/mini")
    logits = model(ids)                      # int [B, T] -> float32 [B, T, vocab]
"""

from .config import Phi3Config, preset
from .errors import TinyPhi3Error
from .generate import generate
from .model import Phi3
from .tokenizer import Tokenizer

__all__ = ["Phi3", "Phi3Config", "Tokenizer", "TinyPhi3Error", "generate", "preset"]
