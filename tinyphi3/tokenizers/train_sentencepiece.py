"""Train a Phi-3 tokenizer: a Llama-2-style SentencePiece BPE plus Phi-3's chat tokens after it.

The base vocabulary is learned by SentencePiece with Llama-2's settings: BPE, byte fallback (a
character without a piece is spelled as UTF-8 bytes <0x00>..<0xFF>, so nothing is ever unknown),
identity normalisation, whitespace kept as it is, digits split one by one, <unk> 0 / <s> 1 / </s> 2.
Phi-3's eleven added tokens are then appended at the ids right after it and the directory is
written in the published Hugging Face layout, with Phi-3's flags and chat template, so that
`Tokenizer.from_pretrained` and `transformers.AutoTokenizer.from_pretrained` both read it.
"""
import io
import re
from collections import Counter
from pathlib import Path

import sentencepiece as spm

from tinyphi3.tokenizers.chat_template import PHI3_CHAT_TEMPLATE
from tinyphi3.errors import TokenizerError
from tinyphi3.tokenizers.files import training_files
from tinyphi3.tokenizers.sentencepiece_bpe import SPACE, Tokenizer

# Phi-3's added tokens, in id order after the base vocabulary (32000..32010 for Phi-3-mini).
PHI3_ADDED_TOKENS = (
    "<|endoftext|>", "<|assistant|>", "<|placeholder1|>", "<|placeholder2|>", "<|placeholder3|>",
    "<|placeholder4|>", "<|system|>", "<|end|>", "<|placeholder5|>", "<|placeholder6|>", "<|user|>",
)
CONTROL_PIECES = ("<unk>", "<s>", "</s>")
BYTE_PIECES = 256
DEFAULT_CHARACTER_COVERAGE = 0.9995


def _added_token(content, rstrip, special=True):
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": rstrip,
            "single_word": False, "special": special}


def phi3_tokenizer_config(base_vocab_size, model_max_length=4096):
    """tokenizer_config.json as published for Phi-3-mini-4k-instruct, for a base vocabulary of this
    size.

    All added tokens but <|endoftext|> have rstrip (so the '\\n' after <|user|> is not tokenized);
    </s> has rstrip and is not special; bos <s>, eos = pad = <|endoftext|>; no bos/eos added by
    encode.
    """
    decoder = {"0": _added_token("<unk>", False), "1": _added_token("<s>", False),
               "2": _added_token("</s>", True, special=False)}
    for offset, token in enumerate(PHI3_ADDED_TOKENS):
        decoder[str(base_vocab_size + offset)] = _added_token(token,
                                                              rstrip=token != "<|endoftext|>")
    return {
        "add_bos_token": False, "add_eos_token": False, "added_tokens_decoder": decoder,
        "bos_token": "<s>", "chat_template": PHI3_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|endoftext|>", "legacy": False, "model_max_length": model_max_length,
        "pad_token": "<|endoftext|>", "padding_side": "left", "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizer", "unk_token": "<unk>",
        "use_default_system_prompt": False,
    }


def phi3_special_tokens_map():
    """special_tokens_map.json as published for Phi-3-mini."""
    def entry(content):
        return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
                "single_word": False}
    return {"bos_token": entry("<s>"), "eos_token": entry("<|endoftext|>"),
            "pad_token": entry("<|endoftext|>"), "unk_token": entry("<unk>")}


def _file_lines(file):
    """The text lines of a file; a .jsonl file of documents gives the lines of their texts."""
    if Path(file).suffix == ".jsonl":
        from tinyphi3.data.documents import iter_documents
        for doc in iter_documents([file]):
            yield from doc["text"].split("\n")
        return
    with open(file, encoding="utf-8", newline="\n") as lines:        # a line ends at '\n' only
        yield from (line.rstrip("\r\n") for line in lines)


def _lines(files, max_sentence_length):
    """Each non-empty line of the files that fits SentencePiece's sentence limit (in UTF-8
    bytes)."""
    for file in files:
        for line in _file_lines(file):
            if line and len(line.encode("utf-8")) <= max_sentence_length:
                yield line


def _kept_characters(files, room, coverage, max_sentence_length):
    """The characters that get pieces: the most frequent ones until they cover `coverage` of the
    text, at most `room` of them. A space counts as '▁', plus one '▁' per line (the dummy
    prefix)."""
    counts = Counter()
    for line in _lines(files, max_sentence_length):
        counts.update(SPACE + line.replace(" ", SPACE))
    if not set(counts) - {SPACE}:
        raise TokenizerError(f"no text to train on in {', '.join(map(str, files))}")
    total, covered, kept = sum(counts.values()), counts[SPACE], {SPACE}
    for char, count in counts.most_common():
        if covered >= coverage * total or len(kept) >= room:
            break
        if char != SPACE:
            kept.add(char)
            covered += count
    return kept


def _training_sentences(files, kept, max_sentence_length):
    """The lines, cut at every character outside `kept`: those are spelled in bytes, never
    merged."""
    allowed = "".join(re.escape(c) for c in sorted(kept | {" "}))
    rare = re.compile(f"[^{allowed}]+")
    for line in _lines(files, max_sentence_length):
        yield from (piece for piece in rare.split(line) if piece)


def train_tokenizer(text_files, out_dir, vocab_size, *,
                    character_coverage=DEFAULT_CHARACTER_COVERAGE,
                    model_max_length=4096, max_sentence_length=16384, num_threads=1):
    """Train a Phi-3 tokenizer on text files and write it to `out_dir`; returns the loaded
    Tokenizer.

    `vocab_size` is the BASE vocabulary (like Llama-2's 32000): 3 control pieces + 256 byte pieces
    + learned pieces. Phi-3's 11 added tokens come after it, so the Tokenizer's vocab_size is
    vocab_size + 11. SentencePiece treats it as an upper bound: a corpus too small to learn that
    many merges gives a smaller base (the added tokens still follow it directly).

    Each line of each file is one training sentence (lines longer than `max_sentence_length` bytes
    are skipped). The most frequent characters, covering `character_coverage` of the text and at
    most as many as fit beside the byte pieces, become pieces; rarer ones are spelled in bytes
    (training lines are cut at them). Training is deterministic for given files and settings; it
    raises TokenizerError for missing or empty files and impossible sizes. This is what
    `tinyphi3 tokenizer train --input FILE... --out DIR --vocab-size N` runs.
    """
    files = training_files(text_files)
    smallest = len(CONTROL_PIECES) + BYTE_PIECES + 2
    if not isinstance(vocab_size, int) or vocab_size < smallest:
        raise TokenizerError(f"vocab_size {vocab_size!r} is impossible: the base vocabulary holds "
                             f"{len(CONTROL_PIECES)} control and {BYTE_PIECES} byte pieces, "
                             f"'▁' and a character, so it needs at least {smallest}")
    room = vocab_size - len(CONTROL_PIECES) - BYTE_PIECES
    try:
        kept = _kept_characters(files, room, character_coverage, max_sentence_length)
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=_training_sentences(files, kept, max_sentence_length),
            model_writer=model,
            model_type="bpe", vocab_size=vocab_size, hard_vocab_limit=False, character_coverage=1.0,
            byte_fallback=True, split_digits=True, allow_whitespace_only_pieces=True,
            normalization_rule_name="identity", remove_extra_whitespaces=False,
            add_dummy_prefix=True,
            max_sentence_length=max_sentence_length, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            num_threads=num_threads, minloglevel=2)
    except (OSError, UnicodeDecodeError) as err:
        raise TokenizerError(f"cannot read the training text: {err}") from err
    except RuntimeError as err:
        raise TokenizerError(f"SentencePiece training failed: {err}") from err
    base = spm.SentencePieceProcessor(model_proto=model.getvalue()).get_piece_size()
    config = phi3_tokenizer_config(base, model_max_length)
    tokenizer = Tokenizer(model.getvalue(), config, phi3_special_tokens_map())
    tokenizer.save_pretrained(out_dir)
    return tokenizer
