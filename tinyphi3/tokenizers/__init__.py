"""Tokenizers: text to ids and back, and the chat format.

    sentencepiece_bpe   phi-3-mini/medium/vision's tokenizer: Llama-2 SentencePiece BPE with byte
                        fallback, plus Phi-3's chat tokens (`Tokenizer`)
    tiktoken_bpe        phi-3-small's: byte-level BPE over cl100k_base-style ranks
                        (`TiktokenTokenizer`)
    byte_bpe            byte-level BPE as tiktoken runs it: pre-tokenisation, merges, training
    chat_template       the Jinja chat template, rendered as transformers renders it
    train_sentencepiece a trainer for your own SentencePiece tokenizer
    files               reading tokenizer and corpus files

`load_tokenizer(dir)` reads whichever of the two a directory holds.
"""

from tinyphi3.tokenizers.sentencepiece_bpe import Tokenizer
from tinyphi3.tokenizers.tiktoken_bpe import TiktokenTokenizer, is_tiktoken_directory


def load_tokenizer(path):
    """The tokenizer of a directory: TiktokenTokenizer for phi-3-small's layout, else Tokenizer."""
    if is_tiktoken_directory(path):
        return TiktokenTokenizer.from_pretrained(path)
    return Tokenizer.from_pretrained(path)
