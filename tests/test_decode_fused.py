"""The fused decoding layer of 4-bit models (tinyphi3/backends/numba/decode.py) computes what the
layer's separate kernels compute, to the bit: same logits, same 8-bit cache, step after step."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyphi3 import backends
from tinyphi3.backends.numba import decode
from tinyphi3.backends.numba import q4 as kernels
from tinyphi3.config import preset
from tinyphi3.models.model import Phi3
from tinyphi3.models.quantize import quantize_checkpoint


def quantized_model(config_name, block, scheme, seed, directory):
    """A random model of a preset, written, and quantized to 4 bits."""
    Phi3(preset(config_name), seed=seed).save_pretrained(directory / "float")
    quantize_checkpoint(directory / "float", directory / "q4", block, scheme, progress=False)
    return Phi3.from_pretrained(directory / "q4")


def decode_steps(model, prompt, pad, steps):
    """Logits of a prompt (after `pad` padding tokens, masked) and of `steps` greedy tokens, one
    at a time through the 8-bit cache; and the cache."""
    ids = np.concatenate([np.zeros(pad, np.int64), prompt])[None]
    mask = np.concatenate([np.zeros(pad, np.int64), np.ones(len(prompt), np.int64)])[None]
    cache = model.new_cache(1)
    logits = [model(ids, attention_mask=mask, cache=cache)[0, -1]]
    for _ in range(steps):
        token = np.array([[int(logits[-1].argmax())]])
        logits.append(model(token, cache=cache)[0, -1])
    return np.array(logits), cache


class Counting:
    """Counts the calls of the fused kernel (and makes them)."""

    def __init__(self, kernel):
        self.kernel, self.calls = kernel, 0

    def __call__(self, *args):
        self.calls += 1
        return self.kernel(*args)


@pytest.fixture
def unfused():
    """A switch: inside `with unfused():` the layers run their separate kernels."""
    table = backends.registered("numba").kernels()

    class Switch:
        def __enter__(self):
            table["q4_decode_layer"] = lambda *args: None

        def __exit__(self, *exc):
            table["q4_decode_layer"] = decode.fused_decode_layer
    return Switch


@settings(max_examples=8, deadline=None)
@given(config=st.sampled_from(["tiny", "tiny-gqa"]), block=st.sampled_from([32, 64]),
       scheme=st.sampled_from(["symmetric", "minmax"]), vnni=st.booleans(),
       prompt=st.integers(1, 12), pad=st.integers(0, 3), steps=st.integers(1, 24),
       seed=st.integers(0, 2**16))
def test_the_fused_layer_equals_the_separate_kernels_to_the_bit(config, block, scheme, vnni, prompt,
                                                                 pad, steps, seed):
    """Grouped-query heads (tiny-gqa: 2 KV heads for 4 query heads, a sliding window of 16 that
    the longer runs cross), both block sizes and schemes, masked padding before the prompt, and
    both product kernels (VNNI where the CPU has it, and the portable one)."""
    if vnni and not kernels.has_vnni():
        vnni = False
    with tempfile.TemporaryDirectory() as tmp:
        model = quantized_model(config, block, scheme, seed % 7, Path(tmp))
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, model.config.vocab_size, prompt)
    table = backends.registered("numba").kernels()
    saved_vnni, saved_kernel = kernels._VNNI, decode._decode_layer
    counting = Counting(decode._decode_layer)
    try:
        kernels._VNNI = vnni
        decode._decode_layer = counting
        fused, fused_cache = decode_steps(model, tokens, pad, steps)
        table["q4_decode_layer"] = lambda *args: None
        separate, separate_cache = decode_steps(model, tokens, pad, steps)
    finally:
        kernels._VNNI, decode._decode_layer = saved_vnni, saved_kernel
        table["q4_decode_layer"] = decode.fused_decode_layer
    one_token_calls = steps + (prompt + pad == 1)      # a one-token prompt is a decoding step too
    assert counting.calls == one_token_calls * model.config.num_hidden_layers   # the path taken
    assert np.array_equal(fused, separate)
    for layer in range(model.config.num_hidden_layers):
        for name in ("_keys", "_values", "_key_scales", "_value_scales"):
            assert np.array_equal(getattr(fused_cache, name)[layer],
                                  getattr(separate_cache, name)[layer])


def test_the_fused_layer_is_a_real_check(unfused, tmp_path):
    """Control: the comparison catches a fused layer that reads the wrong weights (layer 0
    given layer 1's)."""
    model = quantized_model("tiny", 32, "symmetric", 0, tmp_path)
    tokens = np.arange(3, 9)
    with unfused():
        separate, _ = decode_steps(model, tokens, 0, 6)
    fused, _ = decode_steps(model, tokens, 0, 6)
    layers = [model.layer_weights(i) for i in range(2)]
    try:
        wrong = decode.layer_arguments(layers[1], model.config)
        decode._ARGUMENTS[layers[0]["qkv_proj"]] = wrong
        broken, _ = decode_steps(model, tokens, 0, 6)
    finally:
        decode._ARGUMENTS.clear()
    assert np.array_equal(fused, separate)
    assert not np.array_equal(broken, separate)


def test_the_fused_path_is_left_for_what_it_does_not_cover(tmp_path):
    """Float weights, a batch of two rows, and the NumPy backend take the layers' own path."""
    calls = Counting(decode._decode_layer)
    saved = decode._decode_layer
    float_model = Phi3(preset("tiny"), seed=1)
    model = quantized_model("tiny", 32, "symmetric", 1, tmp_path)
    try:
        decode._decode_layer = calls
        decode_steps(float_model, np.arange(3, 8), 0, 3)
        cache = model.new_cache(2)
        model(np.arange(3, 13).reshape(2, 5), cache=cache)
        model(np.array([[5], [6]]), cache=cache)
        with backends.use_backend("numpy"):
            decode_steps(model, np.arange(3, 8), 0, 3)
        assert calls.calls == 0
        decode_steps(model, np.arange(3, 8), 0, 3)
        assert calls.calls == 3 * model.config.num_hidden_layers
    finally:
        decode._decode_layer = saved


AVX2_ONLY = ("haswell", "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+cx16,+f16c,+fma,+fxsr,+lzcnt,+mmx,"
             "+movbe,+popcnt,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,+xsave")


def test_compiled_for_a_cpu_without_vnni_the_fused_layer_runs_the_portable_kernel(tmp_path):
    """Compiled for an AVX2 CPU (a fresh Numba cache), the fused layer builds without the VNNI
    instruction (which LLVM cannot compile for such a CPU), gives the bits of that CPU's
    separate kernels, and the logits of the portable kernel run here."""
    import json
    import os
    import subprocess
    import sys
    model = quantized_model("tiny-gqa", 32, "symmetric", 3, tmp_path)
    tokens = np.arange(3, 10)
    saved = kernels._VNNI
    try:
        kernels._VNNI = False
        here, _ = decode_steps(model, tokens, 1, 5)
    finally:
        kernels._VNNI = saved
    script = f"""
import json, numpy as np, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_decode_fused import decode_steps
from tinyphi3 import backends
from tinyphi3.backends.numba import q4
from tinyphi3.models.model import Phi3
assert not q4._VNNI
model = Phi3.from_pretrained({str(tmp_path / "q4")!r})
fused, _ = decode_steps(model, np.arange(3, 10), 1, 5)
backends.registered("numba").kernels()["q4_decode_layer"] = lambda *args: None
separate, _ = decode_steps(model, np.arange(3, 10), 1, 5)
print(json.dumps([fused.tolist(), separate.tolist()]))
"""
    env = dict(os.environ, NUMBA_CPU_NAME=AVX2_ONLY[0], NUMBA_CPU_FEATURES=AVX2_ONLY[1],
               NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    fused, separate = (np.array(x, np.float32)
                       for x in json.loads(run.stdout.strip().splitlines()[-1]))
    assert np.array_equal(fused, separate)             # the same bits on that CPU too
    # and the same model as here, up to how sums of another vector width round
    assert np.abs(fused - here).max() < 1e-3 * np.abs(here).max()


def test_switching_to_the_portable_kernel_while_compiling_leaves_the_vnni_one_whole(tmp_path):
    """In a fresh Numba cache, the fused layer first compiled while the portable kernel is
    chosen (as the test above does) still holds a working VNNI kernel: which instructions are
    compiled depends on the CPU compiled for, never on that switch. (It did once, and the VNNI
    path then stopped with an illegal instruction.) And the activations' rounding that the
    layer's compilation compiled still equals the reference to the bit: it once inherited the
    layer's fast-math flags and divided by the scale as a product with its inverse."""
    import os
    import subprocess
    import sys
    if not kernels.has_vnni():
        pytest.skip("this CPU has no AVX-512 VNNI: there is no VNNI kernel to keep whole")
    quantized_model("tiny", 32, "symmetric", 4, tmp_path)
    script = f"""
import numpy as np, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_decode_fused import decode_steps
from tinyphi3.backends.numba import q4
from tinyphi3.models.model import Phi3
model = Phi3.from_pretrained({str(tmp_path / "q4")!r})
q4._VNNI = False
portable, _ = decode_steps(model, np.array([5]), 0, 3)
q4._VNNI = True
vnni, _ = decode_steps(model, np.array([5]), 0, 3)
assert np.array_equal(portable, vnni)
from tinyphi3 import backends                  # the kernels the layer's compilation compiled
from tinyphi3.quant import kv8, q4 as reference   # (they inherit the flags they do not set)
x = np.random.default_rng(0).standard_normal((64, 96)).astype(np.float32) * 3
with backends.use_backend("numpy"):
    xq, dx = reference.quantize_activations(x, 32)
    levels, scales = kv8.quantize_vectors(x)
mine = q4.quantize_activations(x, 32)
assert np.array_equal(mine[0], xq) and np.array_equal(mine[1], dx), "activations"
assert all(map(np.array_equal, q4.quantize_vectors(x), (levels, scales))), "cache vectors"
print("same")
"""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         timeout=900)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert run.stdout.strip().endswith("same")


def test_a_models_layer_arguments_go_with_the_model(tmp_path):
    """What the fused layer keeps of a layer's weights is dropped when the model is: loading one
    model after another in a process does not hold every earlier model's weights."""
    import gc
    model = quantized_model("tiny", 32, "symmetric", 2, tmp_path)
    decode_steps(model, np.array([5]), 0, 2)
    kept = [model.layer_weights(i)["qkv_proj"] for i in range(model.config.num_hidden_layers)]
    assert all(qkv in decode._ARGUMENTS for qkv in kept)
    before = len(decode._ARGUMENTS)
    del model, kept
    gc.collect()
    assert len(decode._ARGUMENTS) == before - preset("tiny").num_hidden_layers
