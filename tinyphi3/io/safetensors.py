"""Reading and writing the safetensors format, tensor by tensor, with every header checked.

A safetensors file is: 8 bytes (little-endian u64) giving N, then N bytes of JSON header
`{name: {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}}`,
then the raw little-endian tensor bytes, offsets relative to the end of the header.

Tensors are read one at a time, each straight from its offset in the file, so a 7.6 GB checkpoint
converts to float32 tensor by tensor, never with a second full copy of the weights in memory.
"""

import json
import math
import os
import struct
from pathlib import Path

import ml_dtypes
import numpy as np

from tinyphi3.errors import CorruptCheckpointError, UnsupportedDtypeError

DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U8": np.dtype("u1"), "BOOL": np.dtype("bool"),
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
MAX_HEADER_BYTES = 100 * 1024 * 1024


class SafetensorsFile:
    """One safetensors file, opened lazily: `.keys()`, `.shape(name)`, `.dtype(name)`,
    `.get(name)`."""

    def __init__(self, path):
        self.path = Path(path)
        self.entries, self.metadata, self.data_start = read_header(self.path)

    def keys(self):
        return list(self.entries)

    @property
    def data_size(self) -> int:
        """Bytes of tensor data the header describes (each entry checked against the file)."""
        return sum(e["data_offsets"][1] - e["data_offsets"][0] for e in self.entries.values())

    def shape(self, name):
        return tuple(self.entries[name]["shape"])

    def dtype(self, name):
        return self.entries[name]["dtype"]

    def get(self, name):
        """Read one tensor from the file, in its stored dtype."""
        entry = self.entries[name]
        dtype = DTYPES[entry["dtype"]]
        count = int(np.prod(entry["shape"], dtype=np.int64))
        array = np.fromfile(self.path, dtype=dtype, count=count,
                            offset=self.data_start + entry["data_offsets"][0])
        if array.size != count:
            raise CorruptCheckpointError(f"{self.path}: tensor {name!r} is cut short")
        return array.reshape(entry["shape"])


def read_header(path):
    """Parse and check the header: (entries, metadata, data_start).

    Raises CorruptCheckpointError for a truncated file, a header that is not JSON, or offsets that
    lie (outside the file, overlapping, or not matching shape x dtype size); UnsupportedDtypeError
    for a dtype tinyphi3 does not know.
    """
    path = Path(path)
    size = path.stat().st_size
    if size < 8:
        raise CorruptCheckpointError(f"{path}: too short to be a safetensors file ({size} bytes)")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise CorruptCheckpointError(f"{path}: header length {n} does not fit a file of "
                                         f"{size} bytes (truncated or not safetensors)")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CorruptCheckpointError(f"{path}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CorruptCheckpointError(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise CorruptCheckpointError(f"{path}: __metadata__ must map strings to strings")
    data_start, data_size = 8 + n, size - 8 - n
    spans = []
    for name, entry in header.items():
        _check_entry(path, name, entry, data_size)
        spans.append((*entry["data_offsets"], name))
    spans.sort()
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise CorruptCheckpointError(f"{path}: tensors {n0!r} and {n1!r} overlap in the file")
    return header, metadata, data_start


def _check_entry(path, name, entry, data_size):
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise CorruptCheckpointError(f"{path}: header entry {name!r} lacks "
                                     "dtype/shape/data_offsets")
    if not isinstance(entry["dtype"], str) or entry["dtype"] not in DTYPES:
        raise UnsupportedDtypeError(f"{path}: tensor {name!r} has dtype {entry['dtype']!r}; "
                                    f"supported: {', '.join(DTYPES)}")
    shape, offsets = entry["shape"], entry["data_offsets"]
    if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool)
                                            and d >= 0 for d in shape)):
        raise CorruptCheckpointError(f"{path}: tensor {name!r} has an invalid shape {shape!r}")
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise CorruptCheckpointError(f"{path}: tensor {name!r} has invalid offsets {offsets!r}")
    expected = math.prod(shape) * DTYPES[entry["dtype"]].itemsize        # exact: no overflow
    if offsets[1] - offsets[0] != expected:
        raise CorruptCheckpointError(
            f"{path}: tensor {name!r} spans {offsets[1] - offsets[0]} bytes but shape {shape} "
            f"in {entry['dtype']} needs {expected}")
    if offsets[1] > data_size:
        raise CorruptCheckpointError(f"{path}: tensor {name!r} ends at byte {offsets[1]} of a "
                                     f"data section of {data_size} bytes (file truncated?)")


def write_safetensors(path, tensors, metadata=None):
    """Write (name, array) pairs atomically: to a temporary file, then renamed into place.

    Arrays are written in their own dtype (convert before calling). An item may also be
    (name, dtype, shape, make) with `make()` returning the array: it is called only when its
    bytes are written, so a checkpoint larger than memory streams through one tensor at a time.
    The header is padded with spaces to a multiple of 8 bytes so that tensor data stays aligned.
    """
    path = Path(path)
    items = [t if len(t) == 4 else (t[0], t[1].dtype, t[1].shape, _constant(t[1]))
             for t in tensors]
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, dtype, shape, _ in items:
        dtype = np.dtype(dtype)
        if dtype not in DTYPE_NAMES:
            raise UnsupportedDtypeError(f"tensor {name!r}: cannot write dtype {dtype}")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": [int(d) for d in shape],
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, dtype, shape, make in items:
            a = np.ascontiguousarray(make())
            if a.dtype != np.dtype(dtype) or a.shape != tuple(shape):
                raise UnsupportedDtypeError(f"tensor {name!r}: made {a.dtype} {a.shape}, "
                                            f"declared {np.dtype(dtype)} {tuple(shape)}")
            f.write(a.reshape(-1).view(np.uint8).data)    # raw little-endian bytes
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _constant(array):
    return lambda: array
