"""4-bit checkpoints: writing them from a float checkpoint, tensor by tensor, and loading them.

A quantized checkpoint is a Hugging Face directory whose config.json carries

    "quantization_config": {"quant_method": "tinyphi3_q4", "bits": 4, "block_size": 32,
                            "scheme": "symmetric", "packing": "tiles64-groups8"}

and whose model.safetensors holds, for every 2-D weight `X.weight` [N, K] (the linear layers, the
embedding and lm_head), the tensors of quant.Q4Weight:

    X.qweight  uint8    [ceil(N/64), ceil(K/block), block/8, 64, 4]   levels, two per byte
    X.scales   float16  [ceil(N/64), ceil(K/block), 64]
    X.mins     float16  [ceil(N/64), ceil(K/block), 64]            (minmax scheme only)

Norm gains and biases stay in float32: they are a few thousand numbers per layer, and each one
scales a whole channel of every activation, so rounding them would cost accuracy and save nothing.

A model may keep whole modules out of the 4 bits (Phi-3-vision keeps its image side): their
prefixes are listed as `"modules_to_not_convert": ["model.vision_embed_tokens"]` (the key Hugging
Face's quantization configs use) and their tensors are stored as the source stored them, in its
dtype, bit for bit.

The writer streams: each source tensor is read, quantized and written before the next is read, so
quantizing a 7.6 GB snapshot needs memory for one tensor. Everything is written into a temporary
directory beside the output, which is renamed into place only when complete.
"""

import json
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tinyphi3.config import Phi3Config
from tinyphi3.errors import CheckpointError
from tinyphi3.io import checkpoint
from tinyphi3.io.safetensors import write_safetensors
from tinyphi3.quant import q4 as quant

QUANT_METHOD = "tinyphi3_q4"
PACKING = "tiles64-groups8"                  # quant/layout.py's packing; another one must not load
MODEL_FILES = ("model.safetensors", "model.safetensors.index.json")
NOT_COPIED = (".md", ".png")                 # the source's model card and its pictures


class AlreadyQuantizedError(CheckpointError):
    """Quantizing a checkpoint that is already quantized."""


def quantization_config(path) -> dict | None:
    """The checkpoint's quantization_config (None for a float checkpoint)."""
    file = checkpoint.checkpoint_dir(path) / "config.json"
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file}: cannot read it as JSON ({e})") from None
    qc = raw.get("quantization_config") if isinstance(raw, dict) else None
    if qc is None:
        return None
    if not isinstance(qc, dict):
        raise CheckpointError(f"{path}: config.json's quantization_config must be an object")
    for key, kind in (("bits", int), ("block_size", int), ("scheme", str)):
        value = qc.get(key, "symmetric" if key == "scheme" else None)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise CheckpointError(f"{path}: quantization_config.{key} must be "
                                  f"{'an integer' if kind is int else 'a string'}, "
                                  f"got {value!r}")
    if qc.get("quant_method") != QUANT_METHOD:
        raise CheckpointError(f"{path}: quantization method {qc.get('quant_method')!r} is not "
                              f"one tinyphi3 reads (it reads {QUANT_METHOD!r})")
    if qc.get("packing") != PACKING:
        raise CheckpointError(f"{path}: its 4-bit weights are packed as {qc.get('packing')!r}, "
                              f"this tinyphi3 reads {PACKING!r}; quantize the float checkpoint "
                              f"again with `tinyphi3 quantize`")
    quant.check_options(qc["bits"], qc["block_size"], qc.get("scheme", "symmetric"))
    kept = qc.get("modules_to_not_convert", [])
    if not (isinstance(kept, list) and all(isinstance(m, str) and m for m in kept)):
        raise CheckpointError(f"{path}: quantization_config.modules_to_not_convert must be a "
                              f"list of module names, got {kept!r}")
    return qc


def is_quantized_name(name: str, shape, not_converted=()) -> bool:
    """Every 2-D weight is quantized, except in the modules `not_converted` (name prefixes);
    norms and biases are not."""
    if any(name.startswith(module + ".") for module in not_converted):
        return False
    return name.endswith(".weight") and len(shape) == 2


def stored_shapes(shape, block, scheme) -> dict:
    """The tensors that store one [N, K] weight, by suffix, with their shapes."""
    N, K = shape
    nt, nb = -(-N // quant.ROWS_PER_TILE), -(-K // block)
    shapes = {"qweight": (nt, nb, block // quant.GROUP, quant.ROWS_PER_TILE, 4),
              "scales": (nt, nb, quant.ROWS_PER_TILE)}
    if scheme == "minmax":
        shapes["mins"] = (nt, nb, quant.ROWS_PER_TILE)
    return shapes


def write_quantized(out, config: Phi3Config, shapes: dict, source, block=32, scheme="symmetric",
                    copy_from=None, progress=True, not_converted=(), stored_dtype=None):
    """Write a 4-bit checkpoint to directory `out` from `source(name) -> float array`, called
    once per tensor of `shapes` (the model's tensors by name, in checkpoint order). Files of
    `copy_from` (tokenizer, generation config, preprocessor config) are copied beside it. `out`
    must not exist or be empty; it appears only when complete.

    not_converted: modules (name prefixes) whose tensors are written unchanged, in the dtype
    `stored_dtype(name)` gives (what the source stores them in), and recorded in config.json as
    modules_to_not_convert."""
    quant.check_options(4, block, scheme)
    out = checkpoint.check_new_directory(out)
    not_converted = list(not_converted)
    for name, shape in shapes.items():          # every tensor must fit before anything is written
        if is_quantized_name(name, shape, not_converted):
            quant.check_fits(name, shape, block)
    with checkpoint.staged_directory(out) as tmp:
        items = []
        pending = {}
        bar = tqdm(total=len(shapes), unit="tensor", desc="quantizing", disable=not progress,
                   leave=False)

        def quantized_part(name, suffix):
            def make():
                if name not in pending:
                    pending.clear()
                    pending[name] = quant.quantize_q4(source(name), block, scheme, name)
                    bar.update(1)
                q = pending[name]
                return {"qweight": q.packed, "scales": q.scales, "mins": q.mins}[suffix]
            return make

        def float_part(name, dtype):
            def make():
                bar.update(1)
                return np.asarray(source(name), dtype)
            return make

        for name, shape in shapes.items():
            if is_quantized_name(name, shape, not_converted):
                prefix = name[:-len(".weight")]
                for suffix, s in stored_shapes(shape, block, scheme).items():
                    dtype = np.uint8 if suffix == "qweight" else np.float16
                    items.append((f"{prefix}.{suffix}", dtype, s, quantized_part(name, suffix)))
            elif any(name.startswith(module + ".") for module in not_converted):
                dtype = np.float32 if stored_dtype is None else stored_dtype(name)
                items.append((name, dtype, shape, float_part(name, dtype)))     # as stored
            else:
                items.append((name, np.float32, shape, float_part(name, np.float32)))
        write_safetensors(tmp / "model.safetensors", items, {"format": QUANT_METHOD})
        bar.close()
        config_dict = config.to_dict()
        config_dict["quantization_config"] = {"quant_method": QUANT_METHOD, "bits": 4,
                                              "block_size": block, "scheme": scheme,
                                              "packing": PACKING}
        if not_converted:
            config_dict["quantization_config"]["modules_to_not_convert"] = not_converted
        (tmp / "config.json").write_text(json.dumps(config_dict, indent=2) + "\n")
        if copy_from is not None:
            for f in Path(copy_from).iterdir():
                if (f.is_file() and f.name not in MODEL_FILES + ("config.json",)
                        and not f.name.startswith("model-") and f.suffix not in NOT_COPIED):
                    shutil.copy2(f, tmp / f.name)


def expected_tensors(shapes: dict, qc: dict):
    """({stored name: shape}, {stored name: allowed dtypes}) of a 4-bit checkpoint of the model
    whose tensors are `shapes` ({name: shape})."""
    block, scheme = int(qc["block_size"]), qc.get("scheme", "symmetric")
    kept = qc.get("modules_to_not_convert", [])
    stored, dtypes = {}, {}
    for name, shape in shapes.items():
        if not is_quantized_name(name, shape, kept):
            stored[name] = tuple(shape)
            continue
        prefix = name[:-len(".weight")]
        for suffix, s in stored_shapes(shape, block, scheme).items():
            stored[f"{prefix}.{suffix}"] = s
            dtypes[f"{prefix}.{suffix}"] = ("U8",) if suffix == "qweight" else ("F16",)
    return stored, dtypes


def load_quantized_tensors(path, config: Phi3Config, shapes: dict, qc: dict,
                           index=None) -> dict:
    """The weights of a 4-bit checkpoint: quant.Q4Weight for 2-D weights, float32 arrays for
    the rest (and for the modules_to_not_convert); names, shapes and dtypes are checked against
    `shapes` (the model's tensors by name, tinyphi3.models.weights.parameter_shapes) first.
    `index`: the checkpoint's tensor_index, when the caller has it."""
    index = checkpoint.tensor_index(path) if index is None else index
    index = {n: f for n, f in index.items() if n not in checkpoint.tied_copies(config)}
    checkpoint.check_tensors(index, *expected_tensors(shapes, qc))
    kept = qc.get("modules_to_not_convert", [])
    params = {}
    for name, shape in shapes.items():
        if not is_quantized_name(name, shape, kept):
            params[name] = index[name].get(name).astype(np.float32, copy=False)
            checkpoint.check_finite(name, params[name], index[name].path)
            continue
        prefix = name[:-len(".weight")]
        mins = index[f"{prefix}.mins"].get(f"{prefix}.mins") if f"{prefix}.mins" in index else None
        params[name] = quant.Q4Weight(index[f"{prefix}.qweight"].get(f"{prefix}.qweight"),
                                      index[f"{prefix}.scales"].get(f"{prefix}.scales"),
                                      mins, shape[0], shape[1])
        for part in ("scales", "mins"):
            if getattr(params[name], part) is not None:
                checkpoint.check_finite(f"{prefix}.{part}", getattr(params[name], part),
                                        index[f"{prefix}.{part}"].path)
    return params
