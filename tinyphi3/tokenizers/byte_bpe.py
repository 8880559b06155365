"""Byte-level BPE as tiktoken runs it (cl100k_base, phi-3-small's tokenizer): training and encoding.

A byte-level BPE vocabulary is a list of byte strings ranked 0, 1, 2, ...: the 256 single bytes
first, then one token per learned merge, in the order the merges were learned. tiktoken calls it
the "mergeable ranks", {token bytes: rank}, and the rank is also the token's id.

Encoding text takes two steps:
  1. pre-tokenisation: a regular expression cuts the text into pieces (a word with the space
     before it, a run of at most three digits, a run of punctuation, a run of whitespace,
     a contraction like 's), and no token ever crosses a piece boundary;
  2. BPE inside each piece: spell the piece in bytes, then repeatedly merge the adjacent pair
     whose concatenation has the LOWEST rank (the leftmost such pair on a tie) until no adjacent
     concatenation is a token. A piece that is a token as a whole is that one token at once.
Every byte is a token, so every string encodes, and decoding is concatenating the tokens' bytes.

Training learns the ranks from text (Sennrich et al. 2016, "Neural Machine Translation of Rare
Words with Subword Units"; byte-level as in GPT-2): count the pieces of the training text, then
repeatedly take the most frequent adjacent pair of tokens inside the pieces, make it a new
token with the next rank, and merge it everywhere.

The ranks are stored as tiktoken stores them (a `.tiktoken` file): one line per token, the
token's bytes in base64, a space, its rank.
"""
import base64
import binascii
from collections import Counter
from pathlib import Path

import regex

from tinyphi3.errors import TokenizerError

# cl100k_base's pre-tokenisation pattern, as tiktoken ships it (tiktoken_ext/openai_public.py).
# In order: contractions ('s 't 'm 'd 'll 've 're, any case); a run of letters with one optional
# non-letter, non-digit before it (" the", "(foo"); 1-3 digits; punctuation with an optional
# space before it and newlines after it; whitespace at the end of the text; whitespace up to and
# including a newline; whitespace not followed by a non-space (so " word" keeps its space); one
# whitespace character. `?+`, `++` are possessive: what they match is never given back.
CL100K_PATTERN = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+|"""
                  r""" ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
# \p{L} (letter) and \p{N} (number) come from the regex engine's Unicode tables: the `regex`
# module's here, Rust's regex crate in tiktoken. A character assigned in a newer Unicode version
# than the older engine knows (tiktoken 0.14: Unicode 16; regex 2026: 17) can split differently.
_PIECES = regex.compile(CL100K_PATTERN)
BYTE_TOKENS = 256


def valid_utf8(text):
    """`text` with lone surrogates (which UTF-8 cannot hold) made U+FFFD, as tiktoken does."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def pre_tokenize(text):
    """Cut text into the pieces that BPE works inside (step 1 of the module docstring)."""
    return _PIECES.findall(valid_utf8(text))


# --- encoding -----------------------------------------------------------------------------------

def bpe_piece(piece, ranks):
    """Ids of one piece (bytes): merge the adjacent pair of lowest rank until none is a token."""
    if piece in ranks:                                  # a whole-piece token: one id
        return [ranks[piece]]
    parts = [piece[i:i + 1] for i in range(len(piece))]
    while len(parts) > 1:
        pair_ranks = [ranks.get(parts[i] + parts[i + 1]) for i in range(len(parts) - 1)]
        candidates = [(rank, i) for i, rank in enumerate(pair_ranks) if rank is not None]
        if not candidates:
            break
        _, i = min(candidates)                          # lowest rank, then leftmost
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return [ranks[part] for part in parts]


def encode_ordinary(text, ranks):
    """Token ids of `text` with the mergeable ranks, every character taken as text."""
    ids = []
    for piece in pre_tokenize(text):
        ids += bpe_piece(piece.encode("utf-8"), ranks)
    return ids


def decode_bytes(ids, ranks):
    """The bytes of the tokens `ids` (decode them as UTF-8 to get text)."""
    token_of = {rank: token for token, rank in ranks.items()}
    return b"".join(token_of[i] for i in ids)


# --- training -----------------------------------------------------------------------------------

def _pair_counts(words):
    """How often each adjacent pair of ids occurs, over words given as {tuple of ids: count}."""
    counts = Counter()
    for word, count in words.items():
        for pair in zip(word, word[1:]):
            counts[pair] += count
    return counts


def _merge(word, pair, new_id):
    """`word` (a tuple of ids) with every occurrence of `pair`, left to right, replaced by
    new_id."""
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def train_bpe_ranks(texts, vocab_size):
    """Learn byte-level BPE ranks {token bytes: rank} of at most `vocab_size` tokens from texts.

    Ranks 0..255 are the single bytes b"\\x00".."\\xff"; rank 256 onwards are merges, the most
    frequent adjacent pair first. A tie in frequency goes to the pair of lower ids (the one made of
    earlier tokens), so training is deterministic. Pairs never cross a piece of `pre_tokenize`.
    Training stops early, with fewer tokens, when no piece has two tokens left to merge.

    A new token's bytes are never a token already: a stretch of text that is a whole number of
    tokens is split the same way wherever it occurs (merges apply left to right, and none crossed
    its edges), so once A+B is merged, every such stretch spelling A+B is that one token.
    """
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(vocab_size, int) or vocab_size < BYTE_TOKENS:
        raise ValueError(f"vocab_size {vocab_size!r} must be an int of at least {BYTE_TOKENS} "
                         f"(the single bytes)")
    pieces = Counter()
    for text in texts:
        pieces.update(pre_tokenize(text))
    words = Counter()                                   # {tuple of token ids: count}
    for piece, count in pieces.items():
        words[tuple(piece.encode("utf-8"))] += count    # a byte's id is its value
    tokens = [bytes([b]) for b in range(BYTE_TOKENS)]   # id -> bytes
    ranks = {token: rank for rank, token in enumerate(tokens)}
    while len(tokens) < vocab_size:
        counts = _pair_counts(words)
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))   # most frequent, then lowest ids
        merged = tokens[pair[0]] + tokens[pair[1]]
        assert merged not in ranks, merged              # impossible: see the docstring
        new_id = ranks[merged] = len(tokens)
        tokens.append(merged)
        merged_words = Counter()
        for word, count in words.items():
            merged_words[_merge(word, pair, new_id)] += count
        words = merged_words
    return ranks


# --- the .tiktoken file --------------------------------------------------------------------------

def check_ranks(ranks, where):
    """Raise TokenizerError unless the ranks are 0..N-1 and every single byte is a token."""
    ordered = sorted(ranks.values())
    if ordered != list(range(len(ordered))):
        missing = next(i for i, rank in enumerate(ordered) if rank != i)
        raise TokenizerError(f"{where}: the ranks must be 0..{len(ordered) - 1}, each once; "
                             f"rank {missing} is missing")
    for byte in range(BYTE_TOKENS):
        if bytes([byte]) not in ranks:
            raise TokenizerError(f"{where}: byte {byte:#04x} has no token; "
                                 "a byte-level BPE needs all 256")


def read_ranks(file):
    """{token bytes: rank} from a .tiktoken file; errors name the file and the line."""
    file = Path(file)
    try:
        lines = file.read_bytes().splitlines()
    except FileNotFoundError:
        raise TokenizerError(f"missing {file}: the tokenizer's BPE ranks "
                             "(for phi-3-small, tiktoken's "
                             f"cl100k_base.tiktoken), one 'base64-token rank' per line") from None
    except OSError as err:
        raise TokenizerError(f"cannot read {file}: {err}") from err
    ranks, seen_ranks = {}, set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            if len(fields) != 2:
                raise ValueError("two fields")
            token, rank = base64.b64decode(fields[0], validate=True), int(fields[1])
        except (binascii.Error, ValueError):
            raise TokenizerError(f"{file}:{number}: expected 'base64-token rank', "
                                 f"got {line[:60].decode('utf-8', 'replace')!r}") from None
        problem = ("an empty token" if not token else f"token {token!r} again" if token in ranks
                   else f"rank {rank} again" if rank in seen_ranks else None)
        if problem:
            raise TokenizerError(f"{file}:{number}: {problem}; "
                                 "each token and each rank must appear once")
        ranks[token] = rank
        seen_ranks.add(rank)
    check_ranks(ranks, file)
    return ranks


def write_ranks(ranks, file):
    """Write ranks as tiktoken does: "base64(token) rank" per line, in rank order."""
    lines = [base64.b64encode(token).decode("ascii") + f" {rank}\n"
             for token, rank in sorted(ranks.items(), key=lambda item: item[1])]
    Path(file).write_text("".join(lines), encoding="ascii")
