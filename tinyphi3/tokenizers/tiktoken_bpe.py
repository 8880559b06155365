"""Phi-3-small's tokenizer: tiktoken's byte-level BPE (cl100k_base) plus Phi-3's chat tokens.

A tokenizer directory in our layout (it mirrors the published phi-3-small one) holds

    <ranks>.tiktoken         the mergeable ranks in tiktoken's format: one
                             "base64(token bytes) rank" per line, ranks 0..N-1 (N = 100256 for
                             cl100k_base). Its name is the config's "vocab_file"; without one it is
                             cl100k_base.tiktoken, the published name. A trained tokenizer writes
                             tokenizer.tiktoken
    tokenizer_config.json    "tokenizer_class": "Phi3SmallTokenizer", "vocab_file", the special
                             tokens (`added_tokens_decoder`, every id from N to the padded size),
                             bos/eos/pad, chat_template, model_max_length        (optional)
    special_tokens_map.json  bos/eos/pad                                         (written, not read)
    chat_template.jinja      the chat template, as transformers 5 saves it       (optional)

Special-token placement. Phi-3-small puts its special tokens after cl100k_base's N = 100256
ranks at fixed offsets: id = N + (published id - 100256). So <|endoftext|> is N+1 (cl100k_base
leaves id N unused: it is the dummy <|dummy_id_2|>), fim prefix/middle/suffix N+2..N+4, <|system|>
N+5, <|user|> N+6, <|assistant|> N+7, <|end|> N+10, <|endofprompt|> N+20, and every other id up to
the padded vocabulary size is a dummy <|dummy_id_k|>. The padded size (the model config's
vocab_size) is N + 21 rounded up to a multiple of 128 (100277 -> 100352 for phi-3-small), unless
given. A smaller trained vocabulary gets the same offsets after its own N, so its layout reads
like the real one.

`encode` treats every string as text (a user who types `<|end|>` gets the characters); control ids
come only from `apply_chat_template(..., tokenize=True)`. Unlike Phi-3-mini's tokenizer no added
token strips whitespace, so the '\\n' after `<|user|>` is a token. tiktoken does the encoding;
tinyphi3.tokenizers.byte_bpe holds the same algorithm in readable Python, equal to it by test.
"""
import json
import re
from pathlib import Path

import tiktoken

from tinyphi3.tokenizers.byte_bpe import (BYTE_TOKENS, CL100K_PATTERN, check_ranks,
                                                read_ranks, train_bpe_ranks, write_ranks)
from tinyphi3.tokenizers.chat_template import PHI3_CHAT_TEMPLATE, ChatTemplateMixin
from tinyphi3.errors import TokenizerError
from tinyphi3.tokenizers.files import (check_added_tokens_decoder, check_chat_template, read_json,
                                       training_files)

TOKENIZER_CLASS = "Phi3SmallTokenizer"
PUBLISHED_RANKS_FILE = "cl100k_base.tiktoken"
TRAINED_RANKS_FILE = "tokenizer.tiktoken"
CL100K_RANKS = 100256                 # cl100k_base's mergeable ranks: ids 0..100255
# 100256 + 21 special ids, rounded up: 100352 (the published vocab_size)
MAX_EXTRA_IDS = 4096                  # special and padding ids a directory may list past the ranks
VOCAB_PAD_MULTIPLE = 128
ENDOFTEXT = "<|endoftext|>"
STOP_TOKENS = ("<|end|>", ENDOFTEXT)

# Phi-3-small's special tokens at their published ids (its tokenization_phi3_small.py).
PHI3_SMALL_SPECIAL_TOKENS = {
    "<|dummy_id_2|>": 100256,         # the id cl100k_base leaves unused
    ENDOFTEXT: 100257,
    "<|fim_prefix|>": 100258, "<|fim_middle|>": 100259, "<|fim_suffix|>": 100260,
    "<|system|>": 100261, "<|user|>": 100262, "<|assistant|>": 100263,
    "<|dummy_id_0|>": 100264, "<|dummy_id_1|>": 100265,
    "<|end|>": 100266,
    **{f"<|dummy_id_{k}|>": 100264 + k for k in range(3, 12)},          # 100267..100275
    "<|endofprompt|>": 100276,
}
LAST_NAMED_DUMMY = 11                 # padding dummies continue at <|dummy_id_12|> = 100277


def padded_size(base_vocab_size):
    """The default padded size: the base plus 21 special ids, rounded up to a multiple of 128."""
    needed = base_vocab_size + len(PHI3_SMALL_SPECIAL_TOKENS)
    return -(-needed // VOCAB_PAD_MULTIPLE) * VOCAB_PAD_MULTIPLE


def phi3_small_special_tokens(base_vocab_size, vocab_size=None):
    """{content: id} of every special token for N = base_vocab_size ranks: the published offsets
    after N (see the module docstring), then dummies up to `vocab_size` (default: padded_size)."""
    vocab_size = padded_size(base_vocab_size) if vocab_size is None else vocab_size
    last_named = base_vocab_size + len(PHI3_SMALL_SPECIAL_TOKENS)
    if vocab_size < last_named:
        raise TokenizerError(f"vocab_size {vocab_size} leaves no room for phi-3-small's "
                             f"{len(PHI3_SMALL_SPECIAL_TOKENS)} special ids "
                             f"after {base_vocab_size} ranks")
    special = {token: i - CL100K_RANKS + base_vocab_size
               for token, i in PHI3_SMALL_SPECIAL_TOKENS.items()}
    for offset, token_id in enumerate(range(last_named, vocab_size), start=1):
        special[f"<|dummy_id_{LAST_NAMED_DUMMY + offset}|>"] = token_id
    return special


def is_tiktoken_directory(path):
    """Whether a directory holds a tokenizer in this module's layout (not a SentencePiece one): its
    config names the class Phi3SmallTokenizer, or names no class and a .tiktoken ranks file is
    there."""
    directory = Path(path)
    try:
        config = read_json(directory / "tokenizer_config.json", required=False) or {}
    except TokenizerError:
        config = {}
    if "tokenizer_class" in config:
        return config["tokenizer_class"] == TOKENIZER_CLASS
    return (str(config.get("vocab_file", "")).endswith(".tiktoken")
            or (directory / PUBLISHED_RANKS_FILE).is_file())


class TiktokenTokenizer(ChatTemplateMixin):
    """Phi-3-small's tokenizer: byte-level BPE ranks for text, special tokens for control, Jinja for
    chats."""

    bos_token = eos_token = pad_token = ENDOFTEXT      # as published: bos is eos, and pads too
    unk_token = unk_token_id = None                    # every byte is a token: nothing is unknown
    add_bos_token = add_eos_token = False

    def __init__(self, ranks, padded_vocab_size=None, chat_template=None, model_max_length=8192,
                 vocab_file=TRAINED_RANKS_FILE):
        """Build from mergeable ranks {bytes: rank}; `padded_vocab_size`: all ids, dummies included
        (default padded_size(len(ranks)))."""
        check_ranks(ranks, "mergeable ranks")
        self.ranks, self.base_vocab_size = dict(ranks), len(ranks)
        self._special = phi3_small_special_tokens(self.base_vocab_size, padded_vocab_size)
        self._special_of_id = {i: token for token, i in self._special.items()}
        self.chat_template = chat_template if isinstance(chat_template, str) else PHI3_CHAT_TEMPLATE
        self.model_max_length, self.vocab_file = model_max_length, vocab_file
        self._encoding = tiktoken.Encoding("phi3small", pat_str=CL100K_PATTERN,
                                           mergeable_ranks=self.ranks, special_tokens=self._special)
        by_length = sorted(self._special, key=len, reverse=True)      # leftmost-longest match
        self._control_re = re.compile("|".join(map(re.escape, by_length)))
        self._template = None                                         # compiled on first use

    @classmethod
    def from_pretrained(cls, path):
        """Load a directory in our layout or the published phi-3-small one (with its ranks file)."""
        directory = Path(path)
        if not directory.is_dir():
            raise TokenizerError(f"tokenizer directory {directory} does not exist")
        config_file = directory / "tokenizer_config.json"
        config = read_json(config_file, required=False) or {}
        check_added_tokens_decoder(config.get("added_tokens_decoder"), config_file)
        check_chat_template(config.get("chat_template"), config_file)
        for key in ("tokenizer_class", "vocab_file"):
            if config.get(key) is not None and not isinstance(config[key], str):
                raise TokenizerError(f"{config_file}: {key} must be a string, "
                                     f"got {config[key]!r}")
        length = config.get("model_max_length", 8192)
        if not isinstance(length, (int, float)) or isinstance(length, bool) or not length > 0:
            raise TokenizerError(f"{config_file}: model_max_length must be a positive number, "
                                 f"got {length!r}")
        if config.get("tokenizer_class", TOKENIZER_CLASS) != TOKENIZER_CLASS:
            raise TokenizerError(f"{directory} holds a {config['tokenizer_class']}, "
                                 "not phi-3-small's tiktoken tokenizer: load it with "
                                 "tinyphi3.Tokenizer or load_tokenizer")
        vocab_file = Path(str(config.get("vocab_file") or PUBLISHED_RANKS_FILE)).name
        ranks = read_ranks(directory / vocab_file)
        decoder = config.get("added_tokens_decoder") or {}
        try:
            listed = {int(i): entry["content"] if isinstance(entry, dict) else entry
                      for i, entry in decoder.items()}
        except (TypeError, ValueError, KeyError, AttributeError):
            raise TokenizerError(f"{directory / 'tokenizer_config.json'}: added_tokens_decoder "
                                 f"must map ids to {{'content': ...}}") from None
        # listed: the padded size is the last id + 1
        beyond = [i for i in listed if i >= len(ranks)]
        if beyond and max(beyond) >= len(ranks) + MAX_EXTRA_IDS:
            raise TokenizerError(f"{config_file}: added_tokens_decoder lists id {max(beyond)}, "
                                 f"more than {MAX_EXTRA_IDS} past the {len(ranks)} ranks")
        vocab_size = (max(max(beyond) + 1, len(ranks) + len(PHI3_SMALL_SPECIAL_TOKENS)) if beyond
                      else padded_size(len(ranks)))
        expected = {i: token
                    for token, i in phi3_small_special_tokens(len(ranks), vocab_size).items()}
        for token_id, content in sorted(listed.items()):
            if expected.get(token_id) != content:
                raise TokenizerError(f"{directory / 'tokenizer_config.json'} lists {content!r} "
                                     f"at id {token_id}; phi-3-small's layout after {len(ranks)} "
                                     "ranks has "
                                     f"{expected.get(token_id, 'a mergeable token')!r} there")
        template = config.get("chat_template")
        if (directory / "chat_template.jinja").is_file():
            template = (directory / "chat_template.jinja").read_text(encoding="utf-8")
        return cls(ranks, vocab_size, template, config.get("model_max_length", 8192), vocab_file)

    def save_pretrained(self, path):
        """Write the directory in our layout (the module docstring); `from_pretrained` reads it
        back."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        write_ranks(self.ranks, directory / self.vocab_file)
        decoder = {str(i): {"content": token, "lstrip": False, "normalized": False, "rstrip": False,
                            "single_word": False, "special": True}
                   for i, token in sorted(self._special_of_id.items())}
        config = {"tokenizer_class": TOKENIZER_CLASS, "vocab_file": self.vocab_file,
                  "added_tokens_decoder": decoder, "bos_token": self.bos_token,
                  "eos_token": self.eos_token,
                  "pad_token": self.pad_token, "add_bos_token": False, "add_eos_token": False,
                  "chat_template": self.chat_template, "model_max_length": self.model_max_length,
                  "padding_side": "left", "clean_up_tokenization_spaces": False}
        special_map = {"bos_token": self.bos_token, "eos_token": self.eos_token,
                       "pad_token": self.pad_token}
        for name, data in [("tokenizer_config.json", config),
                           ("special_tokens_map.json", special_map)]:
            text = json.dumps(data, indent=2, ensure_ascii=False)
            (directory / name).write_text(text + "\n", encoding="utf-8")
        return directory

    # --- vocabulary -------------------------------------------------------------------------------

    @property
    def vocab_size(self):
        """Every id, dummies included: the padded size (100352 for phi-3-small), the embedding's
        rows."""
        return self.base_vocab_size + len(self._special)

    def __len__(self):
        return self.vocab_size

    @property
    def special_tokens(self):
        """Every special token (the dummies too), as {content: id}."""
        return dict(self._special)

    def token_to_id(self, token):
        """The id of a special token ('<|end|>') or of a mergeable token (bytes, or a str's
        UTF-8)."""
        if isinstance(token, str) and token in self._special:
            return self._special[token]
        key = token.encode("utf-8") if isinstance(token, str) else token
        if key not in self.ranks:
            raise TokenizerError(f"{token!r} is not in the vocabulary")
        return self.ranks[key]

    def id_to_token(self, token_id):
        """A special token's str, or a mergeable token's bytes (which may end mid-character)."""
        token_id = int(token_id)
        if token_id in self._special_of_id:
            return self._special_of_id[token_id]
        if not 0 <= token_id < self.base_vocab_size:
            raise TokenizerError(f"token id {token_id} is outside "
                                 f"the vocabulary of {self.vocab_size}")
        return self._encoding.decode_single_token_bytes(token_id)

    @property
    def bos_token_id(self):
        return self._special[self.bos_token]

    @property
    def eos_token_id(self):
        return self._special[self.eos_token]

    @property
    def pad_token_id(self):
        return self._special[self.pad_token]

    @property
    def stop_token_ids(self):
        """Ids that end a generated reply: <|end|> and <|endoftext|>."""
        return [self._special[token] for token in STOP_TOKENS]

    # --- encode / decode --------------------------------------------------------------------------

    def encode(self, text, add_special_tokens=True):
        """Token ids of `text`, all of it plain text. Phi-3-small adds no bos/eos (the flag is kept
        for the same call as tinyphi3.Tokenizer)."""
        if not isinstance(text, str):
            raise TokenizerError(f"encode takes a str, got {type(text).__name__}")
        return self._encoding.encode_ordinary(text)

    def decode(self, ids, skip_special_tokens=False):
        """Text of `ids`: the tokens' bytes joined and read as UTF-8, each invalid or unfinished
        sequence one U+FFFD; special tokens as their strings, or dropped with
        skip_special_tokens."""
        ids = [int(i) for i in ids]
        for token_id in ids:
            if not 0 <= token_id < self.vocab_size:
                raise TokenizerError(f"token id {token_id} is outside "
                                     f"the vocabulary of {self.vocab_size}")
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._special_of_id]
        return self._encoding.decode(ids, errors="replace")

    # --- chats ------------------------------------------------------------------------------------

    def template_variables(self):
        """The special tokens a chat template may name ({{ eos_token }}, ...)."""
        return {"bos_token": self.bos_token, "eos_token": self.eos_token,
                "pad_token": self.pad_token}

    def split_control_tokens(self, text):
        """Split text into a list of str (text) and int (the id of a special token found in it)."""
        parts, pos = [], 0
        for match in self._control_re.finditer(text):
            if match.start() > pos:
                parts.append(text[pos:match.start()])
            parts.append(self._special[match.group()])
            pos = match.end()
        if pos < len(text):
            parts.append(text[pos:])
        return parts

    def control_token_text(self, token_id):
        return self._special_of_id[token_id]

    def encode_parts(self, parts):
        """Ids of alternating text and special-token ids."""
        ids = []
        for part in parts:
            ids += [part] if isinstance(part, int) else self.encode(part)
        return ids


def train_tiktoken_tokenizer(text_files, out_dir, vocab_size, *, padded_vocab_size=None,
                             model_max_length=8192):
    """Train a phi-3-small-style tokenizer on text files, write it to `out_dir`, return it loaded.

    `vocab_size` is the number of BPE ranks (256 bytes + merges, like cl100k_base's 100256); the
    special tokens follow at phi-3-small's offsets and dummies pad to `padded_vocab_size` (default:
    a multiple of 128). A .txt file's documents are split at `<|endoftext|>` lines, a .jsonl file's
    are its "text" fields (tinyphi3.data.documents). A corpus too small for `vocab_size` ranks gives
    fewer. This is what `tinyphi3 tokenizer train --kind tiktoken` runs.
    """
    from tinyphi3.data.documents import iter_documents
    files = training_files(text_files)
    if not isinstance(vocab_size, int) or vocab_size < BYTE_TOKENS + 1:
        raise TokenizerError(f"vocab_size {vocab_size!r} is impossible: {BYTE_TOKENS} byte tokens "
                             f"come first, so it needs at least {BYTE_TOKENS + 1}")
    texts = [doc["text"] for doc in iter_documents(files)]
    ranks = train_bpe_ranks(texts, vocab_size)
    tokenizer = TiktokenTokenizer(ranks, padded_vocab_size, model_max_length=model_max_length)
    tokenizer.save_pretrained(out_dir)
    return tokenizer
