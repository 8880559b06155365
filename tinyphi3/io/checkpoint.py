"""Hugging Face checkpoint directories: config.json plus safetensors, single-file or sharded.

    dir/config.json
    dir/model.safetensors                                   (one file), or
    dir/model-00001-of-00002.safetensors, ...               (shards) +
    dir/model.safetensors.index.json   {"weight_map": {tensor name: shard file}}

Loading checks every tensor against the shapes the configuration implies and names each problem:
missing or unexpected tensors, wrong shapes, unsupported dtypes, corrupt files.
"""

import contextlib
import json
import os
import shutil
from pathlib import Path

import ml_dtypes
import numpy as np
from tqdm import tqdm

from tinyphi3.config import Phi3Config
from tinyphi3.errors import (CheckpointError, CorruptCheckpointError, MissingTensorError,
                             ShapeMismatchError, UnexpectedTensorError, UnsupportedDtypeError)
from tinyphi3.io.safetensors import SafetensorsFile, write_safetensors

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
FLOAT_DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
LOADABLE = ("F32", "F16", "BF16", "F64")
PROGRESS_BYTES = 200_000_000          # show a progress bar when loading more than this


def checkpoint_dir(path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint directory not found")
    return path


def load_config(path) -> Phi3Config:
    return Phi3Config.from_json_file(checkpoint_dir(path) / "config.json")


def tensor_index(path) -> dict:
    """Map each tensor name to the SafetensorsFile that holds it (shards opened once each)."""
    path = checkpoint_dir(path)
    if (path / INDEX_FILE).is_file():
        try:
            weight_map = json.loads((path / INDEX_FILE).read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise CorruptCheckpointError(f"{path / INDEX_FILE}: not a valid index ({e})") from None
        if not isinstance(weight_map, dict) or not all(
                isinstance(shard, str) and shard and Path(shard).name == shard
                and shard not in (".", "..") for shard in weight_map.values()):
            raise CorruptCheckpointError(f"{path / INDEX_FILE}: weight_map must map tensor names "
                                         f"to shard file names in the checkpoint directory")
        shards = {}
        for shard in sorted(set(weight_map.values())):
            if not (path / shard).is_file():
                raise MissingTensorError(f"{path / INDEX_FILE}: shard {shard} is missing")
            shards[shard] = SafetensorsFile(path / shard)
        index = {}
        for name, shard in weight_map.items():
            if name not in shards[shard].entries:
                raise MissingTensorError(f"{path / shard}: tensor {name!r} listed in the index "
                                         f"is not in the shard")
            index[name] = shards[shard]
        return index
    if (path / SINGLE_FILE).is_file():
        f = SafetensorsFile(path / SINGLE_FILE)
        return {name: f for name in f.keys()}
    raise CheckpointError(f"{path}: no {SINGLE_FILE} or {INDEX_FILE}")


def stored_bytes(index: dict) -> int:
    """Bytes of tensor data the checkpoint's files hold (from their headers)."""
    return sum(f.data_size for f in {id(f): f for f in index.values()}.values())


def check_size(config: Phi3Config, parameter_count: int, index: dict, min_bits=4) -> None:
    """Refuse a configuration whose tensors could not fit in the files, before anything is
    allocated or listed: `parameter_count` weights take at least `min_bits` each."""
    held = stored_bytes(index)
    if parameter_count * min_bits > 8 * held:
        raise ShapeMismatchError(f"config.json describes a model of {parameter_count:,} "
                                 f"parameters, more than the checkpoint's files hold "
                                 f"({held:,} bytes of tensors)")


def tied_copies(config: Phi3Config) -> tuple:
    """Tensors a checkpoint may hold that the model does not read: with tied embeddings, a copy
    of the embedding as `lm_head.weight` (some writers keep it, Hugging Face's drops it)."""
    return ("lm_head.weight",) if config.tie_word_embeddings else ()


def load_tensors(path, expected_shapes: dict, ignored=(), index=None) -> dict:
    """Read every expected tensor as float32, one at a time; check names, shapes and dtypes first.

    Each tensor is read from its file and converted on its own, so memory holds the float32
    weights plus at most one tensor in its stored dtype. Tensors named in `ignored` may be
    present and are not read. `index`: the checkpoint's tensor_index, when the caller has it.
    """
    index = tensor_index(path) if index is None else index
    index = {name: f for name, f in index.items() if name not in ignored}
    check_tensors(index, expected_shapes)
    sizes = {name: int(np.prod(shape)) * 4 for name, shape in expected_shapes.items()}
    params = {}
    with tqdm(total=sum(sizes.values()), unit="B", unit_scale=True, desc="loading",
              disable=sum(sizes.values()) < PROGRESS_BYTES, leave=False) as progress:
        for name in expected_shapes:
            params[name] = index[name].get(name).astype(np.float32, copy=False)
            check_finite(name, params[name], index[name].path)
            progress.update(sizes[name])
    return params


def check_finite(name, array, path) -> None:
    """A weight that holds NaN or an infinity is a corrupt file (flipped bits, a failed write),
    not a model: say so instead of computing NaN logits."""
    if not np.isfinite(array).all():
        raise CorruptCheckpointError(f"{path}: tensor {name!r} holds NaN or infinite values "
                                     f"(the file is corrupt)")


def check_tensors(index: dict, expected_shapes: dict, expected_dtypes=None) -> None:
    """Raise a named error listing every tensor that is missing, unexpected or misshapen, or
    stored in a dtype it may not have (float types, or `expected_dtypes[name]` when given)."""
    missing = [n for n in expected_shapes if n not in index]
    if missing:
        raise MissingTensorError(f"checkpoint lacks {len(missing)} tensor(s): "
                                 + ", ".join(f"{n} {list(expected_shapes[n])}" for n in missing[:8])
                                 + (" ..." if len(missing) > 8 else ""))
    unexpected = [n for n in index if n not in expected_shapes]
    if unexpected:
        raise UnexpectedTensorError(f"checkpoint has {len(unexpected)} tensor(s) the config does "
                                    f"not expect: " + ", ".join(unexpected[:8])
                                    + (" ..." if len(unexpected) > 8 else ""))
    wrong = [(n, index[n].shape(n), s) for n, s in expected_shapes.items()
             if index[n].shape(n) != tuple(s)]
    if wrong:
        raise ShapeMismatchError("; ".join(f"{n}: shape {list(got)}, expected {list(want)}"
                                           for n, got, want in wrong[:8]))
    for name in expected_shapes:
        allowed = (expected_dtypes or {}).get(name, LOADABLE)
        if index[name].dtype(name) not in allowed:
            raise UnsupportedDtypeError(f"{name}: dtype {index[name].dtype(name)} is not one "
                                        f"tinyphi3 loads here ({', '.join(allowed)})")


def save(path, config: Phi3Config, params: dict, dtype="float32", max_shard_bytes=None,
         config_layout="rope_scaling") -> None:
    """Write config.json and the tensors in `dtype` (float32, float16 or bfloat16).

    With `max_shard_bytes`, tensors are split over `model-0000K-of-0000N.safetensors` files plus
    an index, as published snapshots are. Each file is written atomically.
    """
    if dtype not in FLOAT_DTYPES:
        raise UnsupportedDtypeError(f"cannot save in {dtype!r}; choose one of "
                                    f"{', '.join(FLOAT_DTYPES)}")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    np_dtype = FLOAT_DTYPES[dtype]
    names = list(params)
    shards = _plan_shards(names, params, np.dtype(np_dtype).itemsize, max_shard_bytes)
    metadata = {"format": "pt"}
    stale = list(path.glob("model*.safetensors*"))
    written = []
    for k, shard_names in enumerate(shards):
        filename = (SINGLE_FILE if len(shards) == 1
                    else f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors")
        write_safetensors(path / filename,
                          [(n, np_dtype, params[n].shape, _converter(params[n], np_dtype))
                           for n in shard_names], metadata)
        written.append(filename)
    if len(shards) > 1:
        total = sum(int(np.prod(params[n].shape)) * np.dtype(np_dtype).itemsize for n in names)
        index = {"metadata": {"total_size": total},
                 "weight_map": {n: written[k] for k, s in enumerate(shards) for n in s}}
        _write_text_atomic(path / INDEX_FILE, json.dumps(index, indent=2))
        written.append(INDEX_FILE)
    for old in stale:                                   # files of an earlier save, now replaced
        if old.name not in written:
            old.unlink()
    config_dict = config.to_dict(config_layout)
    config_dict["torch_dtype"] = dtype
    _write_text_atomic(path / "config.json", json.dumps(config_dict, indent=2) + "\n")


def _converter(array, dtype):
    return lambda: np.asarray(array).astype(dtype)


def _plan_shards(names, params, itemsize, max_shard_bytes):
    if not max_shard_bytes:
        return [names]
    shards, current, size = [], [], 0
    for n in names:
        nbytes = int(np.prod(params[n].shape)) * itemsize
        if current and size + nbytes > max_shard_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(n)
        size += nbytes
    shards.append(current)
    return shards


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# ---- writing a directory that appears only when complete ----------------------------------------

def check_new_directory(out) -> Path:
    """`out` as a Path, when it does not exist or is an empty directory; else a CheckpointError
    (nothing of an earlier checkpoint is ever mixed into a new one)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"{out}: already exists and is not empty; choose a new --out")
    return out


@contextlib.contextmanager
def staged_directory(out):
    """Write a directory in a hidden sibling (.NAME.partial), renamed to `out` when the block ends
    without error and removed on any error or Ctrl-C, so that `out` appears only complete.

        with staged_directory(out) as tmp:
            (tmp / "config.json").write_text(...)"""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:                       # errors and Ctrl-C: leave nothing half-written
        shutil.rmtree(tmp, ignore_errors=True)
        raise
