"""The Phi-3 tokenizer: Llama-2's byte-fallback BPE plus Phi-3's chat tokens.

A tokenizer directory in the published layout holds

    tokenizer.model          SentencePiece BPE: <unk> 0, <s> 1, </s> 2, the 256 byte pieces
                             <0x00>..<0xFF>, then the learned pieces (32000 in all for Phi-3-mini)
    tokenizer_config.json    added tokens with their strip flags (`added_tokens_decoder`),
                             bos/eos/pad/unk, add_bos_token, add_eos_token, legacy, chat_template
    added_tokens.json        the added tokens as {content: id}            (optional)
    special_tokens_map.json  bos/eos/pad/unk                              (optional)
    tokenizer.json           the same vocabulary for the `tokenizers` library (optional, saved back
                             unchanged; its added tokens are read when the config lists none)
    chat_template.jinja      the chat template, as transformers 5 saves it (optional)

Phi-3's added tokens follow the base vocabulary: <|endoftext|> 32000, <|assistant|> 32001,
<|placeholder1..4|> 32002-32005, <|system|> 32006, <|end|> 32007, <|placeholder5..6|> 32008-32009,
<|user|> 32010.

Encoding a stretch of text follows transformers' LlamaTokenizer, the reference for such a directory:
  1. every space becomes '▁' (U+2581);
  2. a '▁' "dummy prefix" goes in front, unless the text already starts with one (or a space).
     With `legacy: false` (Phi-3) only text at the very start of the input gets it; with
     `legacy: true` so does the text after every control token;
  3. BPE over the whole text as one word (merges may cross spaces): start from single characters
     and repeatedly merge the adjacent pair of lowest rank, a merge's rank being its place in
     tokenizer.json's list of merges, or, without a tokenizer.json, the id of the piece it makes
     (tinyphi3/tokenizers/piece_bpe.py); a character without a piece falls back to its UTF-8
     bytes <0xXX>. User-defined pieces are matched whole first.
Why transformers' rule and not the `sentencepiece` library's (which merges by the pieces' scores):
the ids a deployed Phi-3 sees are transformers' (vLLM and every engine that reads tokenizer.json
agree with it), and on the real Phi-3/Llama-2 vocabulary the two differ wherever a run of spaces
meets a word: its whitespace-run pieces (`▁▁`, `▁▁▁▁`, ...) have low ids but the score -1e9. On a
vocabulary that `tinyphi3 tokenizer train` writes the two rules give the same ids (its scores
fall as its ids rise); tests/test_tokenizer_parity.py checks both kinds against transformers.
Decoding reverses it: '▁' -> ' ', runs of byte pieces -> UTF-8 text, and one leading space dropped.

`encode` treats every string as text: a user who types `<|end|>` gets the characters, not the
control token. Control ids come only from `apply_chat_template(..., tokenize=True)`, from the
template's own structure, and there an added token's `rstrip`/`lstrip` flag eats the whitespace
beside it (Phi-3's `<|user|>`, `<|assistant|>`, `<|system|>`, `<|end|>` have rstrip, so the '\\n'
after them is dropped).
"""
import json
import re
from dataclasses import dataclass
from pathlib import Path

import sentencepiece as spm

from tinyphi3.tokenizers.chat_template import PHI3_CHAT_TEMPLATE, ChatTemplateMixin
from tinyphi3.tokenizers.files import (check_added_tokens_decoder, check_chat_template,
                                       check_flags, check_token_entry, read_json)
from tinyphi3.tokenizers.piece_bpe import PieceBPE, merge_ranks, merge_ranks_of_tokenizer_json
from tinyphi3.errors import TokenizerError

SPACE = "\u2581"  # '▁', SentencePiece's visible space
STOP_TOKENS = ("<|end|>", "<|endoftext|>", "<|assistant|>")
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")
ADDED_TOKEN_KEYS = ("content", "lstrip", "normalized", "rstrip", "single_word", "special")

# What an added token's lstrip/rstrip strips: Unicode White_Space, as the `tokenizers` library
# (Rust's char::is_whitespace) defines it. Python's str.isspace differs
# (it includes U+001C..U+001F).
WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
              + "\u2028\u2029\u202f\u205f\u3000")


@dataclass(frozen=True)
class AddedToken:
    """A token matched as a whole string (a control token), with the flags of
    `added_tokens_decoder`."""
    content: str
    id: int
    lstrip: bool = False
    rstrip: bool = False
    special: bool = True


# --- tokenizer.model: a protocol buffer (ModelProto) ----------------------------------------------

def _read_varint(buf, pos):
    value, shift = 0, 0
    while True:
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def _varint(value):
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out) + bytes([value])


def _proto_fields(buf):
    """Yield (field number, the field's raw bytes) for each top-level field of a protobuf
    message."""
    pos = 0
    while pos < len(buf):
        start = pos
        key, pos = _read_varint(buf, pos)
        wire_type = key & 7
        if wire_type == 0:                    # varint
            pos = _read_varint(buf, pos)[1]
        elif wire_type == 1:                  # 64-bit
            pos += 8
        elif wire_type == 2:                  # length-delimited
            length, pos = _read_varint(buf, pos)
            pos += length
        elif wire_type == 5:                  # 32-bit
            pos += 4
        else:
            raise ValueError(f"wire type {wire_type}")
        if pos > len(buf):
            raise ValueError("truncated")
        yield key >> 3, buf[start:pos]


def _payload(raw):
    """The bytes of a length-delimited field (as _proto_fields yields it), without key and
    length."""
    _, pos = _read_varint(raw, 0)
    length, pos = _read_varint(raw, pos)
    return raw[pos:pos + length]


NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6   # SentencePiece.Type


def model_pieces(model_proto):
    """[(piece, type)] of every piece of tokenizer.model, by id (ModelProto field 1; a piece's
    text is its field 1, its type field 3, NORMAL when absent)."""
    pieces = []
    for number, raw in _proto_fields(model_proto):
        if number == 1:
            piece, kind = "", NORMAL
            for field, sub in _proto_fields(_payload(raw)):
                if field == 1:
                    piece = _payload(sub).decode("utf-8")
                elif field == 3:
                    kind = _read_varint(sub, _read_varint(sub, 0)[1])[0]
            pieces.append((piece, kind))
    return pieces


def bpe_only_model(model_proto):
    """Return the serialized SentencePiece model with a neutral text normaliser.

    SentencePiece keeps its normaliser in field 3 (`normalizer_spec`) of ModelProto. We replace it
    with name="identity", add_dummy_prefix=false, remove_extra_whitespaces=false,
    escape_whitespaces=true. The Tokenizer loads this model to check the file and look pieces up;
    it encodes with its own merges (tinyphi3/tokenizers/piece_bpe.py), since `sentencepiece`
    merges by score where transformers merges by rank (the module docstring).
    """
    spec = (_varint(1 << 3 | 2) + _varint(8) + b"identity"
            + bytes([3 << 3, 0, 4 << 3, 0, 5 << 3, 1]))
    kept = b"".join(raw for number, raw in _proto_fields(model_proto) if number != 3)
    return kept + _varint(3 << 3 | 2) + _varint(len(spec)) + spec


# --- reading a directory --------------------------------------------------------------------------

def _content(token):
    """A token as written in a config: a string, an AddedToken dict, or null."""
    return token.get("content") if isinstance(token, dict) else token


def _strip_left(text):
    return text.lstrip(WHITESPACE)


def _strip_right(text):
    return text.rstrip(WHITESPACE)


class Tokenizer(ChatTemplateMixin):
    """Phi-3's tokenizer: SentencePiece BPE for text, added tokens for control, Jinja for chats."""

    def __init__(self, model_proto, config, special_tokens_map=None, tokenizer_json=None):
        """Build from the bytes of tokenizer.model and the tokenizer_config.json dict."""
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=bpe_only_model(model_proto))
        except (RuntimeError, ValueError, IndexError) as err:
            raise TokenizerError(f"tokenizer.model is not a SentencePiece model: {err}") from err
        self._model_proto, self._config = model_proto, config
        self._special_tokens_map, self._tokenizer_json = special_tokens_map, tokenizer_json
        self.base_vocab_size = self._sp.get_piece_size()
        if self.base_vocab_size == 0:
            raise TokenizerError("tokenizer.model holds no pieces")
        self._bpe, self._user_defined_re = self._build_bpe(model_proto, tokenizer_json)
        self.add_bos_token = bool(config.get("add_bos_token", False))
        self.add_eos_token = bool(config.get("add_eos_token", False))
        self.legacy = bool(config.get("legacy", False))
        self._added = self._read_added_tokens(config)                 # id -> AddedToken
        self._by_content = {t.content: t for t in self._added.values()}
        for name in SPECIAL_TOKEN_NAMES:
            token = _content(config.get(name))
            setattr(self, name, token)
            # named but not listed: still control
            if token is not None and token not in self._by_content:
                token_id = self.token_to_id(token)
                self._added[token_id] = self._by_content[token] = AddedToken(token, token_id)
        by_length = sorted(self._by_content, key=len, reverse=True)    # leftmost-longest match
        self._control_re = re.compile("|".join(map(re.escape, by_length)) or "(?!)")
        self.chat_template = self._read_template(config.get("chat_template"))
        self._template = None                                          # compiled on first use

    def _build_bpe(self, model_proto, tokenizer_json):
        """The merges as transformers ranks them (tinyphi3.tokenizers.piece_bpe): tokenizer.json's
        list when the directory has one, else the ids of the pieces they make; and a pattern of
        the user-defined pieces, which are matched whole before any merge."""
        try:
            pieces = model_pieces(model_proto)
        except (ValueError, IndexError, UnicodeDecodeError) as err:
            raise TokenizerError(f"tokenizer.model: cannot read its pieces ({err})") from err
        names = [piece for piece, _ in pieces]
        ids = {piece: i for i, piece in enumerate(names)}
        byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
        byte_ids = ([ids[p] for p in byte_pieces]
                    if all(p in ids and pieces[ids[p]][1] == BYTE for p in byte_pieces) else None)
        if tokenizer_json is None:
            ranks = merge_ranks(names)
        else:
            try:
                model = json.loads(tokenizer_json).get("model") or {}
            except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as err:
                raise TokenizerError(f"tokenizer.json is not a JSON object ({err})") from err
            if not isinstance(model, dict) or model.get("type") not in (None, "BPE") \
                    or not isinstance(model.get("merges"), list):
                raise TokenizerError("tokenizer.json: its model must be BPE with a list of merges")
            ranks = merge_ranks_of_tokenizer_json(model["merges"], ids)
        unk = next((i for i, (_, kind) in enumerate(pieces) if kind == UNKNOWN), 0)
        user_defined = sorted((p for p, kind in pieces if kind == USER_DEFINED), key=len,
                              reverse=True)
        pattern = re.compile("|".join(map(re.escape, user_defined))) if user_defined else None
        return PieceBPE(names, ranks, byte_ids, unk), pattern

    def _read_added_tokens(self, config):
        added = {}
        for key, entry in (config.get("added_tokens_decoder") or {}).items():
            if not isinstance(entry, dict) or "content" not in entry:
                raise TokenizerError(f"added_tokens_decoder[{key}] must be a dict with 'content'")
            token = AddedToken(entry["content"], int(key), bool(entry.get("lstrip", False)),
                               bool(entry.get("rstrip", False)), bool(entry.get("special", True)))
            if token.id in added or token.content in {t.content for t in added.values()}:
                raise TokenizerError(f"added_tokens_decoder lists id {token.id} or the token "
                                     f"{token.content!r} twice")
            if token.id < self.base_vocab_size and self._sp.id_to_piece(token.id) != token.content:
                raise TokenizerError(f"added token {token.content!r} has id {token.id}, which "
                                     f"tokenizer.model holds as {self._sp.id_to_piece(token.id)!r}")
            added[token.id] = token
        beyond = sorted(i for i in added if i >= self.base_vocab_size)
        if beyond != list(range(self.base_vocab_size, self.base_vocab_size + len(beyond))):
            raise TokenizerError(f"added tokens must take the ids right after the "
                                 f"{self.base_vocab_size} "
                                 f"pieces of tokenizer.model, got ids {beyond}")
        return added

    @staticmethod
    def _read_template(template):
        # the older list form: [{"name": "default", "template": ...}, ...]
        if isinstance(template, list):
            template = {t.get("name"): t.get("template") for t in template}.get("default")
        return template if isinstance(template, str) else PHI3_CHAT_TEMPLATE

    @classmethod
    def from_pretrained(cls, path):
        """Load a tokenizer directory in the Hugging Face layout (see the module docstring)."""
        directory = Path(path)
        if not directory.is_dir():
            raise TokenizerError(f"tokenizer directory {directory} does not exist")
        model_file = directory / "tokenizer.model"
        try:
            model_proto = model_file.read_bytes()
        except OSError as err:
            raise TokenizerError(f"cannot read {model_file}: "
                                 f"the SentencePiece model ({err})") from err
        config_file = directory / "tokenizer_config.json"
        config = dict(read_json(config_file))
        check_added_tokens_decoder(config.get("added_tokens_decoder"), config_file)
        for name in SPECIAL_TOKEN_NAMES:
            check_token_entry(config.get(name), config_file, name)
        check_flags(config, config_file, ("add_bos_token", "add_eos_token", "legacy"))
        check_chat_template(config.get("chat_template"), config_file)
        map_file = directory / "special_tokens_map.json"
        special_tokens_map = read_json(map_file, required=False)
        for name, token in (special_tokens_map or {}).items():
            if name in SPECIAL_TOKEN_NAMES:
                check_token_entry(token, map_file, name)
                config.setdefault(name, token)
        added_file = directory / "added_tokens.json"
        added_tokens = read_json(added_file, required=False) or {}
        for content, token_id in added_tokens.items():
            if not content or not isinstance(token_id, int) or isinstance(token_id, bool) \
                    or token_id < 0:
                raise TokenizerError(f"{added_file}: must map token strings to ids "
                                     f"(non-negative integers), got {content!r}: {token_id!r}")
        decoder = dict(config.get("added_tokens_decoder") or {})
        tokenizer_json = directory / "tokenizer.json"
        # transformers 5 keeps the added tokens only there
        if not decoder and tokenizer_json.is_file():
            entries = read_json(tokenizer_json).get("added_tokens") or []
            if not isinstance(entries, list) or not all(
                    isinstance(e, dict) and isinstance(e.get("id"), int) for e in entries):
                raise TokenizerError(f"{tokenizer_json}: added_tokens must be a list of "
                                     f"objects with an integer id")
            for entry in entries:
                decoder[str(entry["id"])] = {key: entry[key]
                                             for key in ADDED_TOKEN_KEYS if key in entry}
            check_added_tokens_decoder(decoder, tokenizer_json)
        listed = {_content(entry) for entry in decoder.values()}
        for content, token_id in added_tokens.items():
            if content not in listed:
                decoder[str(token_id)] = {"content": content, "special": True}
        config["added_tokens_decoder"] = decoder
        if (directory / "chat_template.jinja").is_file():
            config["chat_template"] = (directory / "chat_template.jinja").read_text(
                encoding="utf-8")
        tokenizer_json = tokenizer_json.read_bytes() if tokenizer_json.is_file() else None
        try:
            return cls(model_proto, config, special_tokens_map, tokenizer_json)
        except TokenizerError as err:
            raise TokenizerError(f"{directory}: {err}") from err

    def save_pretrained(self, path):
        """Write the directory in the published layout; `from_pretrained` reads it back."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "tokenizer.model").write_bytes(self._model_proto)
        config = {**self._config, "chat_template": self.chat_template}
        added = {t.content: t.id for t in sorted(self._added.values(), key=lambda t: t.id)
                 if t.id >= self.base_vocab_size}
        special_map = self._special_tokens_map or {
            name: getattr(self, name) for name in SPECIAL_TOKEN_NAMES
            if getattr(self, name) is not None}
        for name, data in [("tokenizer_config.json", config), ("added_tokens.json", added),
                           ("special_tokens_map.json", special_map)]:
            text = json.dumps(data, indent=2, ensure_ascii=False,
                              sort_keys=name != "added_tokens.json")
            (directory / name).write_text(text + "\n", encoding="utf-8")
        if self._tokenizer_json is not None:
            (directory / "tokenizer.json").write_bytes(self._tokenizer_json)
        return directory

    # --- vocabulary -------------------------------------------------------------------------------

    @property
    def vocab_size(self):
        """Base pieces plus the added tokens after them (32011 for Phi-3-mini, whose embedding has
        32064)."""
        return self.base_vocab_size + sum(1 for i in self._added if i >= self.base_vocab_size)

    def __len__(self):
        return self.vocab_size

    @property
    def special_tokens(self):
        """Every added (control) token, as {content: id}."""
        return {t.content: t.id for t in self._added.values()}

    def token_to_id(self, token):
        """The id of a piece ('▁the', '<0x0A>') or an added token ('<|end|>')."""
        if token in self._by_content:
            return self._by_content[token].id
        token_id = self._sp.piece_to_id(token)
        if self._sp.id_to_piece(token_id) != token:
            raise TokenizerError(f"{token!r} is not in the vocabulary")
        return token_id

    def id_to_token(self, token_id):
        """The piece or added token with this id."""
        token_id = int(token_id)
        if token_id in self._added:
            return self._added[token_id].content
        if not 0 <= token_id < self.base_vocab_size:
            raise TokenizerError(f"token id {token_id} is outside "
                                 f"the vocabulary of {self.vocab_size}")
        return self._sp.id_to_piece(token_id)

    def _id_of(self, name):
        token = getattr(self, name)
        return None if token is None else self.token_to_id(token)

    @property
    def bos_token_id(self):
        return self._id_of("bos_token")

    @property
    def eos_token_id(self):
        return self._id_of("eos_token")

    @property
    def pad_token_id(self):
        return self._id_of("pad_token")

    @property
    def unk_token_id(self):
        return self._id_of("unk_token")

    @property
    def stop_token_ids(self):
        """Ids that end a generated reply: <|end|>, <|endoftext|>, <|assistant|> and eos, those
        present."""
        names = [t for t in STOP_TOKENS if t in self.special_tokens] + [self.eos_token]
        return list(dict.fromkeys(self.token_to_id(t) for t in names if t is not None))

    # --- encode / decode --------------------------------------------------------------------------

    def _encode_text(self, text, at_start):
        """BPE ids of one stretch of text; `at_start`: it begins the input (for the dummy-prefix
        rule). User-defined pieces are matched whole first; the text between them is encoded
        as if a control token stood there."""
        if self._user_defined_re is not None:
            ids, pos = [], 0
            for match in [*self._user_defined_re.finditer(text), None]:
                end = len(text) if match is None else match.start()
                ids += self._encode_stretch(text[pos:end], at_start and pos == 0)
                if match is not None:
                    ids.append(self._bpe.vocab[match.group()])
                    pos = match.end()
            return ids
        return self._encode_stretch(text, at_start)

    def _encode_stretch(self, text, at_start):
        if not text:
            return []
        if (at_start or self.legacy) and not text.startswith((" ", SPACE)):
            text = " " + text
        return self._bpe.encode(text.replace(" ", SPACE))

    def encode(self, text, add_special_tokens=True):
        """Token ids of `text`, all of it plain text, with bos/eos as add_bos_token/add_eos_token
        say."""
        if not isinstance(text, str):
            raise TokenizerError(f"encode takes a str, got {type(text).__name__}")
        ids = self._encode_text(text, at_start=True)
        if add_special_tokens and self.add_bos_token and self.bos_token is not None:
            ids = [self.bos_token_id] + ids
        if add_special_tokens and self.add_eos_token and self.eos_token is not None:
            ids = ids + [self.eos_token_id]
        return ids

    def decode(self, ids, skip_special_tokens=False):
        """Text of `ids`: '▁' -> ' ', byte pieces -> UTF-8 (a run that is not valid UTF-8 gives one
        U+FFFD per byte), then one leading space (the dummy prefix) dropped."""
        out, byte_run = [], bytearray()

        def flush():
            try:
                out.append(byte_run.decode("utf-8"))
            except UnicodeDecodeError:
                out.append("\ufffd" * len(byte_run))
            byte_run.clear()

        for token_id in ids:
            token_id = int(token_id)
            piece = self.id_to_token(token_id)
            if token_id in self._added and skip_special_tokens and self._added[token_id].special:
                continue
            if token_id not in self._added and self._sp.is_byte(token_id):
                byte_run.append(int(piece[3:5], 16))    # '<0xE6>' -> 0xE6
                continue
            flush()
            out.append(piece.replace(SPACE, " "))
        flush()
        text = "".join(out)
        return text[1:] if text.startswith(" ") else text

    # --- chats ------------------------------------------------------------------------------------

    def split_control_tokens(self, text):
        """Split text into a list of str (text) and int (the id of an added token found in it)."""
        parts, pos = [], 0
        for match in self._control_re.finditer(text):
            if match.start() > pos:
                parts.append(text[pos:match.start()])
            parts.append(self._by_content[match.group()].id)
            pos = match.end()
        if pos < len(text):
            parts.append(text[pos:])
        return parts

    def encode_parts(self, parts):
        """Ids of alternating text and control ids; a control token's rstrip (lstrip) flag strips
        the whitespace at the start of the text after it (the end of the text before it)."""
        ids = []
        for i, part in enumerate(parts):
            if isinstance(part, int):
                ids.append(part)
                continue
            if i > 0 and self._added[parts[i - 1]].rstrip:
                part = _strip_left(part)
            if i + 1 < len(parts) and self._added[parts[i + 1]].lstrip:
                part = _strip_right(part)
            ids += self._encode_text(part, at_start=i == 0)
        return ids

    # --- chats (ChatTemplateMixin.apply_chat_template) ---------------------------------------
    def template_variables(self):
        """The special tokens a chat template may name ({{ eos_token }}, ...)."""
        return {name: getattr(self, name) for name in SPECIAL_TOKEN_NAMES if getattr(self, name)}

    def control_token_text(self, token_id):
        return self._added[token_id].content
