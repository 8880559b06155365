"""Token shards: documents become flat files of token ids, and a reader serves training batches.

Writing (`write_shards`): each document is tokenized (no bos/eos of its own) and followed by
`<|endoftext|>`, and the ids of all documents are packed end to end into files of
`shard_tokens` ids each, stored raw as uint16 (a vocabulary of at most 65536) or uint32:

    out_dir/train-00000.bin, train-00001.bin, ...   doc doc doc ... (a document may cross files)
    out_dir/val-00000.bin, ...                        whole documents held out for validation
    out_dir/meta.json                                 dtype, token counts, vocabulary, source

Document i goes to the val split when ceil((i+1)·f) > ceil(i·f), f = val_fraction: one in every
1/f documents, starting with the first, so any f > 0 holds out at least one document.

Reading (`TokenStream`): a split is one long stream of N ids, read through `np.memmap` (never
loaded whole). It is cut into windows of T ids that overlap by one, starting at 0, T-1, 2(T-1),
... The model's loss shifts by one (position t predicts id t+1, as transformers' loss does), so
labels are the window itself, and with the overlap every id but the first is a target exactly
once per epoch. Each epoch visits every window once in an order drawn from (seed, epoch);
`state_dict()` records where the stream stands, so a resumed run sees exactly the batches the
uninterrupted run would have. `val_batches` yields the same batches, in order, every time.

    write_shards(read_documents("phase1.jsonl"), tokenizer, "shards/phase1")
    stream = TokenStream("shards/phase1", "train", batch_size=16, seq_len=256, seed=0)
    input_ids, labels = stream.next_batch()          # int64 [B, T] each
"""

import json
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tinyphi3.data.documents import SEPARATOR, as_document
from tinyphi3.errors import TinyPhi3Error

FORMAT = "tinyphi3-token-shards"
SPLITS = ("train", "val")


class ShardError(TinyPhi3Error):
    """A shard directory is missing, truncated, or was written for another tokenizer."""


def token_dtype(vocab_size):
    """The smallest unsigned dtype that holds every id of the vocabulary."""
    return np.dtype(np.uint16) if vocab_size <= 2 ** 16 else np.dtype(np.uint32)


def is_val_document(index, val_fraction):
    """Document `index` is held out when ceil((i+1)·f) > ceil(i·f) (see the module docstring),
    in exact arithmetic: f = 0.1 is 1/10, not the float 0.1000000000000000055..."""
    f = Fraction(str(val_fraction))
    return math.ceil((index + 1) * f) > math.ceil(index * f)


class _SplitWriter:
    """Buffers the ids of one split and writes them out `shard_tokens` at a time."""

    def __init__(self, out_dir, split, dtype, shard_tokens):
        self.out_dir, self.split, self.dtype, self.shard_tokens = (out_dir, split, dtype,
                                                                   shard_tokens)
        self.buffer, self.buffered, self.files, self.documents = [], 0, [], 0

    def add(self, ids):
        self.buffer.append(np.asarray(ids, self.dtype))
        self.buffered += len(ids)
        self.documents += 1
        while self.buffered >= self.shard_tokens:
            flat = np.concatenate(self.buffer)
            self._write(flat[:self.shard_tokens])
            self.buffer, self.buffered = [flat[self.shard_tokens:]], len(flat) - self.shard_tokens

    def _write(self, ids):
        name = f"{self.split}-{len(self.files):05d}.bin"
        ids.astype(self.dtype.newbyteorder("<")).tofile(self.out_dir / name)
        self.files.append({"name": name, "tokens": int(len(ids))})

    def close(self):
        if self.buffered:
            self._write(np.concatenate(self.buffer))
        return {"documents": self.documents, "tokens": sum(f["tokens"] for f in self.files),
                "files": self.files}


def write_shards(documents, tokenizer, out_dir, shard_tokens=1_000_000, val_fraction=0.01,
                 source="", progress=None):
    """Tokenize documents (dicts or str) into train/val shards in `out_dir`; returns the meta dict.

    `source` is a free description kept in meta.json (which files, which phase). A progress bar
    shows on stderr for 1000 documents or more (or always/never with progress=True/False).
    Old shards and meta.json in `out_dir` are removed first; meta.json is written last.
    """
    if shard_tokens < 1:
        raise ShardError(f"shard_tokens must be positive, got {shard_tokens}")
    if not 0.0 <= val_fraction < 1.0:
        raise ShardError(f"val_fraction must lie in [0, 1), got {val_fraction}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in [*out.glob("train-*.bin"), *out.glob("val-*.bin"), out / "meta.json"]:
        old.unlink(missing_ok=True)
    separator_id = tokenizer.token_to_id(SEPARATOR)
    dtype = token_dtype(tokenizer.vocab_size)
    writers = {split: _SplitWriter(out, split, dtype, shard_tokens) for split in SPLITS}
    total = len(documents) if hasattr(documents, "__len__") else None
    show = progress if progress is not None else (total is None or total >= 1000)
    for index, doc in enumerate(tqdm(documents, total=total, unit="doc", desc="tokenizing",
                                     disable=not show, file=sys.stderr)):
        ids = tokenizer.encode(as_document(doc)["text"], add_special_tokens=False) + [separator_id]
        writers["val" if is_val_document(index, val_fraction) else "train"].add(ids)
    meta = {"format": FORMAT, "version": 1, "dtype": dtype.name, "byte_order": "little",
            "vocab_size": tokenizer.vocab_size, "separator": SEPARATOR,
            "separator_id": separator_id,
            "shard_tokens": shard_tokens, "val_fraction": val_fraction, "source": source,
            "splits": {split: writer.close() for split, writer in writers.items()}}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


# --- reading --------------------------------------------------------------------------------------

def read_meta(directory, tokenizer=None, vocab_size=None):
    """meta.json of a shard directory, checked against the tokenizer (or vocab_size) in use."""
    directory = Path(directory)
    file = directory / "meta.json"
    if not file.is_file():
        raise ShardError(f"{directory} holds no meta.json: not a token shard directory, or its "
                         "writing did not finish (make one with `tinyphi3 data tokenize`)")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ShardError(f"cannot read {file}: {err}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ShardError(f"{file} does not describe {FORMAT}")
    missing = [key for key in ("dtype", "vocab_size", "splits") if key not in meta]
    if missing:
        raise ShardError(f"{file} lacks {', '.join(missing)}")
    in_use = tokenizer.vocab_size if tokenizer is not None else vocab_size
    if in_use is not None and in_use != meta["vocab_size"]:
        raise ShardError(f"{directory} was tokenized with a vocabulary of {meta['vocab_size']} "
                         f"tokens, but the tokenizer in use has {in_use}: tokenize the documents "
                         "again with this tokenizer")
    return meta


def open_split(directory, split, meta):
    """The split's files as read-only memmaps, checked against meta.json's token counts."""
    if split not in meta["splits"]:
        raise ShardError(f"{directory} has no {split!r} split (it has {', '.join(meta['splits'])})")
    dtype = np.dtype(meta["dtype"]).newbyteorder("<")
    arrays = []
    for entry in meta["splits"][split]["files"]:
        file = Path(directory) / entry["name"]
        expected = entry["tokens"] * dtype.itemsize
        size = file.stat().st_size if file.is_file() else None
        if size is None:
            raise ShardError(f"{file} is missing (meta.json lists it)")
        if size != expected:
            what = "truncated" if size < expected else "longer than meta.json says"
            raise ShardError(f"{file} holds {size} bytes but meta.json says {entry['tokens']} "
                             f"{dtype.name} tokens ({expected} bytes): the file is {what}")
        array = np.memmap(file, dtype=dtype, mode="r") if size else np.zeros(0, dtype)
        if size and int(array.max()) >= meta["vocab_size"]:
            raise ShardError(f"{file} holds token id {int(array.max())}, outside the vocabulary of "
                             f"{meta['vocab_size']}: the file is corrupt")
        arrays.append(array)
    return arrays


class _Stream:
    """A split's shards as one stream of ids: read(start, length) copies a stretch that may cross
    from one file into the next."""

    def __init__(self, arrays):
        self.arrays = arrays
        self.offsets = np.cumsum([0] + [len(a) for a in arrays])     # file f starts at offsets[f]
        self.num_tokens = int(self.offsets[-1])

    def read(self, start, length):
        out, f = [], int(np.searchsorted(self.offsets, start, side="right")) - 1
        while length > 0:
            begin = start - self.offsets[f]
            piece = self.arrays[f][begin:begin + length]
            out.append(piece)
            start, length, f = start + len(piece), length - len(piece), f + 1
        return np.concatenate(out).astype(np.int64)


def _windows(num_tokens, seq_len, directory, split):
    """How many windows of seq_len ids, overlapping by one, fit in num_tokens ids."""
    if seq_len < 2:
        raise ShardError(f"seq_len must be at least 2, got {seq_len}")
    if num_tokens < seq_len:
        raise ShardError(f"the {split} split of {directory} holds {num_tokens} tokens, fewer than "
                         f"one window of {seq_len}")
    return (num_tokens - seq_len) // (seq_len - 1) + 1


class TokenStream:
    """Batches of windows from a split, shuffled epoch by epoch from a seed, resumable."""

    def __init__(self, directory, split="train", batch_size=8, seq_len=256, seed=0,
                 tokenizer=None, vocab_size=None):
        if batch_size < 1:
            raise ShardError(f"batch_size must be positive, got {batch_size}")
        self.directory, self.split = Path(directory), split
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.meta = read_meta(directory, tokenizer, vocab_size)
        self._stream = _Stream(open_split(directory, split, self.meta))
        self.num_tokens = self._stream.num_tokens
        self.num_windows = _windows(self.num_tokens, seq_len, directory, split)
        self.epoch, self.position = 0, 0          # epochs completed; windows used of this one
        self._order, self._order_epoch = None, None

    def _epoch_order(self):
        if self._order_epoch != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._order, self._order_epoch = rng.permutation(self.num_windows), self.epoch
        return self._order

    def next_batch(self):
        """(input_ids, labels), int64 [B, T] each, labels = input_ids (the loss shifts)."""
        windows = []
        while len(windows) < self.batch_size:
            take = min(self.batch_size - len(windows), self.num_windows - self.position)
            windows.extend(self._epoch_order()[self.position:self.position + take])
            self.position += take
            if self.position == self.num_windows:
                self.epoch, self.position = self.epoch + 1, 0
        step = self.seq_len - 1
        input_ids = np.stack([self._stream.read(int(k) * step, self.seq_len) for k in windows])
        return input_ids, input_ids.copy()                           # [B, T], [B, T]

    def state_dict(self):
        """Where the stream stands; `load_state_dict` on a new stream continues from here."""
        return {"split": self.split, "seed": self.seed, "seq_len": self.seq_len,
                "num_tokens": self.num_tokens, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state):
        """Continue from a `state_dict` (its seed included) of a stream over the same data."""
        for key, mine in [("split", self.split), ("seq_len", self.seq_len),
                          ("num_tokens", self.num_tokens)]:
            if state.get(key) != mine:
                raise ShardError(f"cannot resume: the saved data position has {key}="
                                 f"{state.get(key)!r}, this stream {mine!r}")
        if not 0 <= state["position"] < self.num_windows:
            raise ShardError(f"cannot resume: position {state['position']} is outside the "
                             f"{self.num_windows} windows of an epoch")
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]


def val_batches(directory, batch_size=8, seq_len=256, max_batches=None, split="val",
                tokenizer=None, vocab_size=None):
    """The split's windows in order, in batches (the last may be smaller), the same every time:
    yields (input_ids, labels), int64 [b, T] each. `max_batches` keeps only the first ones."""
    meta = read_meta(directory, tokenizer, vocab_size)
    stream = _Stream(open_split(directory, split, meta))
    n = _windows(stream.num_tokens, seq_len, directory, split)
    if max_batches is not None:
        n = min(n, max_batches * batch_size)
    for first in range(0, n, batch_size):
        ks = range(first, min(first + batch_size, n))
        input_ids = np.stack([stream.read(k * (seq_len - 1), seq_len) for k in ks])
        yield input_ids, input_ids.copy()
