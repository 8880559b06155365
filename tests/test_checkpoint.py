"""Checkpoints: exact round trips in every dtype, interoperability, and named errors."""

import json
import struct
import tracemalloc

import ml_dtypes
import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
from hypothesis import given
from hypothesis import strategies as st

from tinyphi3.io import checkpoint
from tinyphi3.config import preset
from tinyphi3.errors import (CheckpointError, ConfigError, CorruptCheckpointError,
                             MissingTensorError, ShapeMismatchError, UnexpectedTensorError,
                             UnsupportedDtypeError)
from tinyphi3.models.model import Phi3
from tinyphi3.models.weights import parameter_shapes
from tinyphi3.io.safetensors import write_safetensors

DTYPES = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}


@pytest.fixture(scope="module")
def model():
    return Phi3(preset("tiny-gqa"), seed=5)


@given(dtype=st.sampled_from(sorted(DTYPES)), shard=st.sampled_from([None, 20_000, 70_000]),
       layout=st.sampled_from(["rope_scaling", "rope_parameters"]))
def test_save_then_load_is_exact_in_every_dtype(tmp_path_factory, model, dtype, shard, layout):
    """Loading returns exactly the saved values rounded to the stored dtype; saving what was
    loaded writes identical bytes."""
    directory = tmp_path_factory.mktemp("ckpt")
    model.save_pretrained(directory, dtype=dtype, max_shard_bytes=shard, config_layout=layout)
    loaded = Phi3.from_pretrained(directory)
    assert loaded.config.to_dict() == model.config.to_dict()
    for name, array in model.params.items():
        expected = array.astype(DTYPES[dtype]).astype(np.float32)
        np.testing.assert_array_equal(loaded.params[name], expected)
        assert loaded.params[name].dtype == np.float32
    again = tmp_path_factory.mktemp("again")
    loaded.save_pretrained(again, dtype=dtype, max_shard_bytes=shard, config_layout=layout)
    for f in directory.glob("*.safetensors"):
        assert (again / f.name).read_bytes() == f.read_bytes()


def test_files_read_by_the_safetensors_library(tmp_path, model):
    for dtype in ("float32", "float16"):
        model.save_pretrained(tmp_path / dtype, dtype=dtype)
        theirs = safetensors.numpy.load_file(tmp_path / dtype / "model.safetensors")
        assert set(theirs) == set(model.params)
        for name, array in model.params.items():
            np.testing.assert_array_equal(theirs[name], array.astype(DTYPES[dtype]))
    model.save_pretrained(tmp_path / "bf16", dtype="bfloat16")
    theirs = safetensors.torch.load_file(tmp_path / "bf16" / "model.safetensors")
    for name, array in model.params.items():
        np.testing.assert_array_equal(theirs[name].float().numpy(),
                                      array.astype(ml_dtypes.bfloat16).astype(np.float32))


def test_resaving_sharded_as_single_file_removes_old_shards(tmp_path, model):
    model.save_pretrained(tmp_path, max_shard_bytes=20_000)
    assert (tmp_path / checkpoint.INDEX_FILE).exists()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    Phi3.from_pretrained(tmp_path)


def test_loading_converts_one_tensor_at_a_time(tmp_path):
    """Peak memory while loading a bf16 checkpoint stays near the float32 result plus one tensor:
    the file is memory-mapped, never read whole or converted all at once."""
    config = preset("tiny").replace(hidden_size=256, intermediate_size=1024, vocab_size=4096,
                                    num_hidden_layers=4)
    Phi3(config, seed=0).save_pretrained(tmp_path, dtype="bfloat16", max_shard_bytes=2_000_000)
    shapes = parameter_shapes(config)
    total = sum(4 * int(np.prod(s)) for s in shapes.values())
    largest = max(4 * int(np.prod(s)) for s in shapes.values())
    tracemalloc.start()
    Phi3.from_pretrained(tmp_path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < total + 2 * largest, (peak, total, largest)


# ---- corrupt files and mismatches ---------------------------------------------------------------
@pytest.fixture
def saved(tmp_path, model):
    model.save_pretrained(tmp_path)
    return tmp_path


def rewrite_header(path, edit):
    """Replace the JSON header of a safetensors file by edit(header), keeping the data."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    blob = json.dumps(edit(header)).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + raw[8 + n:])


def first_tensor(header):
    return next(k for k in header if k != "__metadata__")


def test_truncated_file(saved):
    f = saved / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        Phi3.from_pretrained(saved)


def test_file_shorter_than_its_header(saved):
    (saved / "model.safetensors").write_bytes(struct.pack("<Q", 10**6) + b"{}")
    with pytest.raises(CorruptCheckpointError, match="header length"):
        Phi3.from_pretrained(saved)


def test_header_not_json(saved):
    (saved / "model.safetensors").write_bytes(struct.pack("<Q", 5) + b"{oops" + b"\0" * 64)
    with pytest.raises(CorruptCheckpointError, match="not valid JSON"):
        Phi3.from_pretrained(saved)


def test_offsets_that_lie_about_the_size(saved):
    def edit(h):
        name = first_tensor(h)
        h[name]["data_offsets"][1] -= 4
        return h
    rewrite_header(saved / "model.safetensors", edit)
    with pytest.raises(CorruptCheckpointError, match="needs"):
        Phi3.from_pretrained(saved)


def test_overlapping_tensors(saved):
    def edit(h):
        names = [k for k in h if k != "__metadata__"]
        a, b = sorted(names, key=lambda k: h[k]["data_offsets"][0])[:2]
        size = h[b]["data_offsets"][1] - h[b]["data_offsets"][0]
        h[b]["data_offsets"] = [h[a]["data_offsets"][0], h[a]["data_offsets"][0] + size]
        return h
    rewrite_header(saved / "model.safetensors", edit)
    with pytest.raises(CorruptCheckpointError, match="overlap"):
        Phi3.from_pretrained(saved)


def test_unsupported_dtype(saved):
    def edit(h):
        h[first_tensor(h)]["dtype"] = "F8_E4M3"
        return h
    rewrite_header(saved / "model.safetensors", edit)
    with pytest.raises(UnsupportedDtypeError, match="F8_E4M3"):
        Phi3.from_pretrained(saved)


def test_integer_weights_are_refused(tmp_path, model):
    tensors = [(n, a.astype(np.int32)) if n == "model.norm.weight" else (n, a)
               for n, a in model.params.items()]
    write_safetensors(tmp_path / "model.safetensors", tensors)
    model.config.save(tmp_path / "config.json")
    with pytest.raises(UnsupportedDtypeError, match="model.norm.weight"):
        Phi3.from_pretrained(tmp_path)


def test_missing_unexpected_and_misshapen_tensors_are_named(tmp_path, model):
    model.config.save(tmp_path / "config.json")
    params = dict(model.params)
    del params["model.layers.1.mlp.down_proj.weight"]
    write_safetensors(tmp_path / "model.safetensors", params.items())
    with pytest.raises(MissingTensorError, match=r"model.layers.1.mlp.down_proj.weight \[64, 128\]"):
        Phi3.from_pretrained(tmp_path)
    params = dict(model.params, **{"model.layers.9.extra.weight": np.zeros(3, np.float32)})
    write_safetensors(tmp_path / "model.safetensors", params.items())
    with pytest.raises(UnexpectedTensorError, match="model.layers.9.extra.weight"):
        Phi3.from_pretrained(tmp_path)
    params = dict(model.params, **{"model.norm.weight": np.zeros(65, np.float32)})
    write_safetensors(tmp_path / "model.safetensors", params.items())
    with pytest.raises(ShapeMismatchError, match=r"model.norm.weight: shape \[65\], expected \[64\]"):
        Phi3.from_pretrained(tmp_path)


def test_config_that_disagrees_with_the_weights(saved):
    config = json.loads((saved / "config.json").read_text())
    config["intermediate_size"] = 256
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ShapeMismatchError, match="gate_up_proj"):
        Phi3.from_pretrained(saved)


def test_missing_files(tmp_path, model):
    with pytest.raises(CheckpointError, match="not found"):
        Phi3.from_pretrained(tmp_path / "nowhere")
    model.config.save(tmp_path / "config.json")
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        Phi3.from_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(ConfigError, match="config file not found"):
        Phi3.from_pretrained(tmp_path)


def test_missing_shard(tmp_path, model):
    model.save_pretrained(tmp_path, max_shard_bytes=20_000)
    next(tmp_path.glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(MissingTensorError, match="shard model-00002"):
        Phi3.from_pretrained(tmp_path)


def test_write_is_atomic(tmp_path, model, monkeypatch):
    """A failure while writing leaves the previous checkpoint intact."""
    model.save_pretrained(tmp_path)
    before = (tmp_path / "model.safetensors").read_bytes()

    def explode(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(checkpoint.os, "replace", explode)
    with pytest.raises(OSError):
        Phi3(model.config, seed=9).save_pretrained(tmp_path)
    monkeypatch.undo()
    assert (tmp_path / "model.safetensors").read_bytes() == before
