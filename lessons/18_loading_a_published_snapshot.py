# %% [markdown]
# # Lesson 18: Loading a published snapshot
#
# Microsoft publishes the Phi-3 weights as a Hugging Face *snapshot*: a directory with
# `config.json`, the weights in bfloat16 split over a few `model-0000K-of-0000N.safetensors`
# shards, and `model.safetensors.index.json`, which says which shard holds which tensor.
# phi-3-mini (§2 of the report: "3072 hidden dimension, 32 heads and 32 layers") is 3.82 billion
# numbers, 7.6 GB on disk. Nothing is downloaded here: transformers writes a small snapshot of
# random weights in exactly that layout, and we read it with our own hands, then with tinyphi3.
#
# 1. a snapshot, written by transformers;
# 2. one safetensors file read by hand: header length, JSON header, data;
# 3. bfloat16: the top 16 bits of a float32;
# 4. the shard index;
# 5. the tensor names, transformers' and ours;
# 6. loading tensor by tensor, and the memory it costs;
# 7. the logits equal transformers';
# 8. what `tinyphi3 info` says, and the full-size numbers;
# 9. writing a snapshot back, as transformers reads it.

# %%
import json
import re
import struct
import tempfile
import tracemalloc
from pathlib import Path

import ml_dtypes
import numpy as np
import torch
import transformers
from click.testing import CliRunner

import _plot
import tinyphi3
from tinyphi3.cli.info import describe_checkpoint, human_bytes, info
from tinyphi3.config import preset
from tinyphi3.io.checkpoint import load_config, tensor_index
from tinyphi3.io.safetensors import SafetensorsFile
from tinyphi3.models.model import Phi3
from tinyphi3.models.weights import parameter_shapes

transformers.utils.logging.disable_progress_bar()
torch.manual_seed(0)
workdir = Path(tempfile.mkdtemp(prefix="lesson18_"))
MB = 1e6

# %% [markdown]
# ## 1. A snapshot, written by transformers
#
# `transformers.Phi3ForCausalLM` is the published implementation of Phi-3. We give it a small
# configuration (6 layers of width 256, a vocabulary of 4096) and random weights, make the norm
# gains random too (they start at 1, which would hide a mistake), convert it to bfloat16 and save
# it with a shard size small enough to give several shards. (transformers 5 always writes
# safetensors; earlier versions had a `safe_serialization` switch for it.)

# %%
hf_config = transformers.Phi3Config(
    vocab_size=4096, hidden_size=256, intermediate_size=704, num_hidden_layers=6,
    num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=512,
    original_max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2)
hf_model = transformers.Phi3ForCausalLM(hf_config).eval()
with torch.no_grad():
    for name, p in hf_model.named_parameters():
        if name.endswith("norm.weight"):
            p.add_(torch.randn_like(p) * 0.2)
snapshot = workdir / "snapshot"
hf_model.to(torch.bfloat16).save_pretrained(snapshot, max_shard_size=6_000_000)   # 6 MB shards
hf_bf16 = {name: p.detach() for name, p in hf_model.state_dict().items()}   # what was saved

for path in sorted(snapshot.iterdir()):
    print(f"  {path.name:36} {path.stat().st_size:>12,} bytes")
shards = sorted(snapshot.glob("model-*-of-*.safetensors"))
assert len(shards) == 3 and (snapshot / "model.safetensors.index.json").is_file()
written = json.loads((snapshot / "config.json").read_text())
assert written["model_type"] == "phi3" and written["dtype"] == "bfloat16"

# %% [markdown]
# ## 2. One safetensors file, by hand
#
# A safetensors file is three things one after the other:
#
#     8 bytes      N, the length of the header: an unsigned 64-bit integer, little-endian
#     N bytes      the header: JSON, {name: {"dtype", "shape", "data_offsets": [begin, end]}},
#                  plus "__metadata__", padded with spaces so the data starts on 8 bytes
#     the rest     the tensors' raw bytes, one after the other; offsets count from here
#
# No code runs when the file is read (unlike a pickled checkpoint), and a reader can fetch a
# single tensor from its offset without reading the others. With `struct` and `json`:

# %%
shard = shards[0]
with open(shard, "rb") as f:
    (header_len,) = struct.unpack("<Q", f.read(8))           # '<Q': little-endian u64
    header = json.loads(f.read(header_len))
    data = f.read()
metadata = header.pop("__metadata__")
print(f"{shard.name}: header of {header_len} bytes, metadata {metadata}, {len(header)} tensors, "
      f"{len(data):,} bytes of data")
for name, entry in list(header.items())[:4]:
    print(f"  {name:44} {entry}")
assert header_len % 8 == 0 and metadata == {"format": "pt"}
spans = sorted(entry["data_offsets"] for entry in header.values())
assert spans[0][0] == 0 and spans[-1][1] == len(data)                   # the data, all of it
assert all(end == begin for (_, end), (begin, _) in zip(spans, spans[1:]))   # no gaps, no overlap
assert all(end - begin == 2 * np.prod(e["shape"]) for e in header.values()
           for begin, end in [e["data_offsets"]])                        # 2 bytes per BF16 value

# %% [markdown]
# One tensor: cut its bytes out of the data, view them as 16-bit integers in the header's shape.
# Section 3 shows why shifting them 16 bits to the left gives float32 numbers.

# %%
name = "model.layers.0.self_attn.qkv_proj.weight"
entry = header[name]
begin, end = entry["data_offsets"]
bits = np.frombuffer(data[begin:end], dtype="<u2").reshape(entry["shape"])    # [3C, C] uint16
by_hand = (bits.astype(np.uint32) << 16).view(np.float32)                     # [3C, C] float32
print(f"{name}: {entry['dtype']} {entry['shape']}, first values {by_hand[0, :4]}")

st = SafetensorsFile(shard)
assert st.dtype(name) == "BF16" and st.shape(name) == tuple(entry["shape"])
assert np.array_equal(by_hand, st.get(name).astype(np.float32))
assert np.array_equal(bits, hf_bf16[name].view(torch.int16).numpy().view(np.uint16))  # torch's bits

# %% [markdown]
# ## 3. bfloat16: the top 16 bits of a float32
#
# A float32 is 1 sign bit, 8 exponent bits and 23 fraction bits. bfloat16 keeps the sign, the
# same 8 exponent bits and the top 7 fraction bits: exactly the upper half of a float32. So a
# bf16 value becomes a float32 by putting its 16 bits on top and zeros below; nothing is lost.
# The other way loses the lower 16 bits, and cutting them off (truncating) would always round
# towards zero. Converters round to the nearest bf16 instead, ties to the even one: add
# `0x7FFF`, plus 1 when the bit that will become the last one kept is 1, then cut.

# %%
def bf16_bits(x):
    """float32 -> bf16 bits, round to nearest, ties to even (finite inputs)."""
    u = np.asarray(x, np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(b):
    """bf16 bits -> float32: the 16 bits on top, zeros below (exact)."""
    return (np.asarray(b, np.uint16).astype(np.uint32) << 16).view(np.float32)


rng = np.random.default_rng(0)
x = np.concatenate([rng.standard_normal(100_000) * 10.0 ** rng.integers(-30, 30, 100_000),
                    [0.0, -0.0, 1e-40, 3.0e38, -3.0e38]]).astype(np.float32)   # 1e-40: subnormal
reference = x.astype(ml_dtypes.bfloat16)
assert np.array_equal(bf16_bits(x), reference.view(np.uint16))
assert np.array_equal(from_bf16_bits(bf16_bits(x)), reference.astype(np.float32))

halfway = np.array([0x3F808000, 0x3F818000], np.uint32).view(np.float32)    # exact ties
print(f"ties to even: {halfway} -> {from_bf16_bits(bf16_bits(halfway))}")
assert list(bf16_bits(halfway)) == [0x3F80, 0x3F82]                          # even last bits
truncated = from_bf16_bits((x.view(np.uint32) >> 16).astype(np.uint16))
rounded = reference.astype(np.float32)
assert (np.abs(truncated) <= np.abs(x)).all()                                # towards zero
assert (np.abs(rounded - x) <= np.abs(truncated - x)).all()                  # never further
print(f"rounding beats truncating on {np.mean(np.abs(rounded - x) < np.abs(truncated - x)):.0%} "
      "of the values")

# %% [markdown]
# Eight significant bits (the implicit leading 1 and seven stored): neighbouring bf16 numbers lie
# 2^-7 of their power of two apart, so rounding errs by at most 2^-8 (0.4%). But the range is
# float32's: 3e38 is a bf16 number, while float16 (5 exponent bits) stops at 65504. That is why
# models are trained and shipped in bf16. tinyphi3 computes in float32, so it widens every tensor
# once, when it loads.

# %%
normal = np.abs(x) > 1e-37                          # away from zero and the subnormal numbers
error = np.abs(reference.astype(np.float32)[normal] - x[normal]) / np.abs(x[normal])
print(f"largest relative error of rounding to bf16: {error.max():.2e} (2^-8 = {2 ** -8:.2e})")
assert 2 ** -9 < error.max() <= 2 ** -8
assert np.finfo(ml_dtypes.bfloat16).max > 3e38 and np.finfo(np.float16).max == 65504

# %% [markdown]
# ## 4. The shard index
#
# `model.safetensors.index.json` maps every tensor name to the shard that holds it
# (`weight_map`), with the total size of the tensor data. A loader opens it first, then each
# shard's header; it never has to search the shards.

# %%
index = json.loads((snapshot / "model.safetensors.index.json").read_text())
weight_map = index["weight_map"]
for shard_file in sorted(set(weight_map.values())):
    names = [n for n, s in weight_map.items() if s == shard_file]
    print(f"  {shard_file}: {len(names):2} tensors, e.g. {names[0]}")
    assert set(names) == set(SafetensorsFile(snapshot / shard_file).keys())
assert index["metadata"]["total_size"] == sum(SafetensorsFile(s).data_size for s in shards)
located = tensor_index(snapshot)                     # tinyphi3: name -> its opened shard
assert {n: f.path.name for n, f in located.items()} == weight_map

# %% [markdown]
# ## 5. The tensor names
#
# The names are the module paths of `Phi3ForCausalLM`: `model.layers.0.self_attn.qkv_proj.weight`
# is the weight of `hf_model.model.layers[0].self_attn.qkv_proj`. A linear layer stores its
# weight `[out_features, in_features]`. Phi-3 fuses two pairs of matrices: `qkv_proj` computes
# queries, keys and values in one product (`[H*hd + 2*KV*hd, C]`, sliced q, k, v in that order),
# and `gate_up_proj` the gate and the up projection (`[2*I, C]`, the gate first).
# tinyphi3 keeps its weights in one dict under the same names: `parameter_shapes(config)` lists
# them from the configuration alone.

# %%
config = load_config(snapshot)                       # our Phi3Config, read from config.json
ours = parameter_shapes(config)
theirs = {name: tuple(p.shape) for name, p in hf_bf16.items()}
for name in [n for n in ours if not n.startswith("model.layers.") or ".layers.0." in n]:
    print(f"  {name:47} {list(ours[name])}")
assert ours == theirs
C, I, V, H, KV, hd = (config.hidden_size, config.intermediate_size, config.vocab_size,
                      config.num_attention_heads, config.num_key_value_heads, config.head_dim)
assert ours["model.layers.0.self_attn.qkv_proj.weight"] == (H * hd + 2 * KV * hd, C)
assert ours["model.layers.0.mlp.gate_up_proj.weight"] == (2 * I, C)
assert ours["lm_head.weight"] == (V, C)                            # not tied in Phi-3-mini

# %% [markdown]
# ## 6. Loading tensor by tensor, and what it costs
#
# `Phi3.from_pretrained` reads config.json, the index and the shard headers, checks every name,
# shape and dtype against `parameter_shapes`, and then reads the tensors one at a time: each one
# from its offset in its shard, widened to float32 and kept, before the next is read. At any
# moment memory holds the float32 weights read so far plus one tensor in bf16. The other way to
# do it, read everything and then convert, holds a second, bf16 copy of the whole model at its
# peak. `tracemalloc` counts what Python and NumPy allocate (torch's tensors are outside its
# view, so the transformers model is not counted):

# %%
def peak_bytes(fn):
    """(result of fn(), peak bytes allocated while it ran)."""
    tracemalloc.start()
    result = fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result, peak


def read_all_then_convert(path):
    stored = {n: f.get(n) for n, f in tensor_index(path).items()}    # every tensor in bf16 first
    return {n: a.astype(np.float32) for n, a in stored.items()}


model, peak = peak_bytes(lambda: Phi3.from_pretrained(snapshot))
_, peak_naive = peak_bytes(lambda: read_all_then_convert(snapshot))
fp32 = sum(a.nbytes for a in model.params.values())
largest = max(model.params.items(), key=lambda item: item[1].nbytes)
print(f"float32 weights {fp32 / MB:.2f} MB; largest tensor {largest[0]}: "
      f"{largest[1].nbytes / MB:.2f} MB in float32, {largest[1].nbytes / 2 / MB:.2f} MB in bf16")
print(f"peak, tensor by tensor:      {peak / MB:.2f} MB = weights + {(peak - fp32) / MB:.2f} MB")
print(f"peak, all read then widened: {peak_naive / MB:.2f} MB = weights + "
      f"{(peak_naive - fp32) / MB:.2f} MB")
assert fp32 == 4 * model.num_parameters()
assert fp32 < peak < fp32 + largest[1].nbytes                # weights plus less than one tensor
assert peak_naive > fp32 * 1.49                              # plus a bf16 copy of everything

# %% [markdown]
# What the tensor-by-tensor load holds beyond the weights is the bf16 copy of one tensor (the
# last one read, `lm_head.weight`, as large as the embedding) and a few kilobytes of Python
# objects. The other way holds all of the bf16 data, half the size of the weights again.

# %%
assert peak - fp32 < 1.1 * model.params["lm_head.weight"].nbytes / 2

# %% [markdown]
# The loaded weights are the stored bf16 numbers, exactly, now in float32:

# %%
for name, array in model.params.items():
    assert array.dtype == np.float32
    assert np.array_equal(array, hf_bf16[name].float().numpy())

# %% [markdown]
# ## 7. The logits equal transformers'
#
# transformers loads the same snapshot in float32, so both models hold the same numbers. On the
# same ids, two rows of 16 random tokens, their logits agree to float32 rounding:

# %%
hf_fp32 = transformers.Phi3ForCausalLM.from_pretrained(snapshot, dtype=torch.float32).eval()
ids = np.random.default_rng(1).integers(0, V, size=(2, 16))               # [B, T]
with torch.no_grad():
    reference_logits = hf_fp32(torch.tensor(ids)).logits.numpy()        # [B, T, V]
logits = model(ids)                                                      # [B, T, V]
print(f"logits {logits.shape}; max |tinyphi3 - transformers| = "
      f"{np.abs(logits - reference_logits).max():.1e}")
np.testing.assert_allclose(logits, reference_logits, atol=1e-4, rtol=0)

# %% [markdown]
# ## 8. What `tinyphi3 info` says
#
# `tinyphi3 info --ckpt DIR` describes a checkpoint from config.json and the safetensors headers
# alone, without reading a weight: the architecture, the number of parameters, the bytes on disk,
# and what the weights would take in memory at each precision.

# %%
description = describe_checkpoint(snapshot)
print(description)
assert CliRunner().invoke(info, ["--ckpt", str(snapshot)]).output.strip() == description
n = model.num_parameters()
assert f"parameters    {n:,}" in description
assert "(BF16, 3 file(s))" in description and f"fp32 {human_bytes(4 * n)}" in description

# %% [markdown]
# The same arithmetic at full size. phi-3-mini-4k has the report's geometry (3072 wide, 32
# layers, 32 heads, a vocabulary of 32064) and an MLP of 8192. `docs/full_size_load.md` records
# a snapshot of exactly that geometry, random weights in the published layout, loaded on a
# 2-core machine with 24 GiB of memory: peak resident memory 15.54 GB after loading, for 15.28 GB
# of float32 weights, that is 0.26 GB more, less than its largest tensor (0.394 GB, the
# embedding). Reading all the bf16 data first would have needed 22.93 GB. The shapes give the
# same parameter count and sizes as the document:

# %%
mini = preset("phi-3-mini-4k")
shapes = parameter_shapes(mini)
n_mini = sum(int(np.prod(s)) for s in shapes.values())
largest_mini = max(int(np.prod(s)) for s in shapes.values()) * 4
print(f"phi-3-mini: {mini.hidden_size} wide, {mini.num_hidden_layers} layers, {len(shapes)} "
      f"tensors, {n_mini:,} parameters: {2 * n_mini / 1e9:.2f} GB in bf16, "
      f"{4 * n_mini / 1e9:.2f} GB in float32, largest tensor {largest_mini / 1e9:.3f} GB")
assert (mini.hidden_size, mini.num_hidden_layers, mini.num_attention_heads) == (3072, 32, 32)
assert len(shapes) == 3 + 6 * 32

doc = (Path(tinyphi3.__file__).resolve().parent.parent / "docs" / "full_size_load.md").read_text()
doc = doc.split("\n## ")[0]                     # phi-3-mini's measurement (the vision one follows)
row = {m.group(1): m.group(2) for m in re.finditer(r"^\| \**([^|*]+?)\** \| \**([^|*]+?)\** \|$",
                                                   doc, re.M)}
measured = {key: float(row[key].split()[0]) for key in
            ("bytes on disk (bf16)", "float32 weights in memory", "largest tensor (float32)",
             "peak resident memory after loading", "peak minus float32 weights")}
print("docs/full_size_load.md:", row)
assert int(row["parameters"].replace(",", "")) == n_mini == 3_821_079_552
assert measured["bytes on disk (bf16)"] == round(2 * n_mini / 1e9, 2)
assert measured["float32 weights in memory"] == round(4 * n_mini / 1e9, 2)
assert measured["largest tensor (float32)"] == round(largest_mini / 1e9, 3)
assert measured["peak minus float32 weights"] < measured["largest tensor (float32)"]
assert measured["peak resident memory after loading"] < 4 * n_mini / 1e9 + 2 * n_mini / 1e9
print("picture:", _plot.bar_chart("18_full_size_memory.png", {
    "bf16 files on disk": measured["bytes on disk (bf16)"],
    "float32 weights": measured["float32 weights in memory"],
    "measured peak, by tensor": measured["peak resident memory after loading"],
    "if all bf16 were read first": round((4 + 2) * n_mini / 1e9, 2)},
    "Loading phi-3-mini (3.82 B parameters): memory", "GB"))

# %% [markdown]
# ## 9. Writing a snapshot back
#
# `save_pretrained` writes the same layout: `dtype="bfloat16"` narrows each tensor as its bytes
# are written, `max_shard_bytes` starts a new shard when the next tensor would pass the limit,
# and the index is written beside them. The weights came from bf16, so narrowing them again gives
# back the very bytes transformers wrote, and transformers loads our snapshot to the same logits.

# %%
ours_dir = workdir / "written_by_tinyphi3"
model.save_pretrained(ours_dir, dtype="bfloat16", max_shard_bytes=6_000_000)
print(sorted(p.name for p in ours_dir.iterdir()))
ours_index, theirs_index = tensor_index(ours_dir), tensor_index(snapshot)
for name in theirs_index:
    assert ours_index[name].dtype(name) == "BF16"
    assert ours_index[name].get(name).tobytes() == theirs_index[name].get(name).tobytes()
reloaded = transformers.Phi3ForCausalLM.from_pretrained(ours_dir, dtype=torch.float32).eval()
with torch.no_grad():
    again = reloaded(torch.tensor(ids)).logits.numpy()
assert np.array_equal(again, reference_logits)
print("transformers reads tinyphi3's snapshot: the same bytes, the same logits")

# %% [markdown]
# ## Summary
#
# - A published snapshot is config.json, bf16 safetensors shards, and an index that maps each
#   tensor name to its shard.
# - A safetensors file: an 8-byte little-endian header length, a JSON header (dtype, shape,
#   data_offsets per tensor), then the raw data; one tensor can be read from its offset alone.
# - bf16 is the upper half of a float32: widening is a 16-bit shift, narrowing rounds to nearest
#   even.
# - The names are `Phi3ForCausalLM`'s module paths, linear weights `[out, in]`, with fused
#   `qkv_proj` and `gate_up_proj`; tinyphi3 uses them as they are.
# - Loading tensor by tensor holds the float32 weights plus about one tensor; here the logits
#   equal transformers' to 1e-4. At full size: 15.28 GB of weights, 15.54 GB at the peak.
#
# ## Where it lives
#
# - `tinyphi3/io/safetensors.py`: `SafetensorsFile` (the header checked, one tensor read from its
#   offset), `read_header`, `write_safetensors`.
# - `tinyphi3/io/checkpoint.py`: `tensor_index` (the index and the shards), `load_tensors` (tensor
#   by tensor, checked), `save` (bf16, shards, index).
# - `tinyphi3/models/weights.py`: `parameter_shapes`, the names and shapes a configuration implies;
#   `tinyphi3/models/model.py`: `Phi3.from_pretrained`, `Phi3.save_pretrained`.
# - `tinyphi3/cli/info.py`: `describe_checkpoint`, what `tinyphi3 info` prints.
# - `benchmarks/load_full_size.py` and `docs/full_size_load.md`: the full-size measurement;
#   `tests/test_parity.py`: the same logits as transformers on more configurations.
