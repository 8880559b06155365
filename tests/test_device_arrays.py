"""The model on device arrays: the same code, with its data kept where the weights are.

A GPU cannot be reached here, so `device_standin` (tests/device_standin.py) plays CuPy: arrays
that refuse to mix with host NumPy arrays or to turn into them implicitly, exactly where CuPy's
would. A backend "standin" uploads the weights to it and has no kernels, so every operation runs
the reference code on device arrays. If any line of the forward pass, the caches, the weight
formats or generation made an array on the host and combined it with a device one, these tests
would fail with a TypeError; and the logits must equal the host's.
"""

import numpy as np
import pytest

import device_standin
from tinyphi3 import backends
from tinyphi3.cli.info import init_checkpoint
from tinyphi3.errors import CheckpointError, InvalidInputError
from tinyphi3.inference.generate import generate
from tinyphi3.models.model import Phi3
from tinyphi3.models.quantize import quantize_checkpoint
from tinyphi3.quant.bf16 import bf16_to_float32, float32_to_bf16

PROMPTS = np.array([[1, 17, 250, 3, 99, 42, 7, 300, 12, 5, 81, 64, 2, 9, 33, 400, 21, 8, 11]])


@pytest.fixture(scope="module", params=["tiny", "tiny-gqa", "tiny-longrope", "tiny-small",
                                        "tiny-small-homo"])
def checkpoint(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "ckpt"
    init_checkpoint(request.param, path, seed=3)
    return path


def on_host_and_device(path, **kwargs):
    with backends.use_backend("numpy"):
        host = Phi3.from_pretrained(path, **kwargs)
    device = Phi3.from_pretrained(path, backend="standin", **kwargs)
    return host, device


def test_weights_are_uploaded_once_and_logits_come_back_to_the_host(checkpoint):
    host, device = on_host_and_device(checkpoint)
    assert all(type(a) is device_standin.ndarray for a in device.params.values())
    with backends.use_backend("numpy"):
        expected = host(PROMPTS)
    logits = device(PROMPTS)
    assert type(logits) is np.ndarray
    np.testing.assert_array_equal(logits, expected)


def test_cached_decoding_on_the_device_equals_the_full_pass(checkpoint):
    _, device = on_host_and_device(checkpoint)
    full = device(PROMPTS)
    cache = device.new_cache(1)
    assert all(type(k) is device_standin.ndarray for k in cache._keys)
    steps = [device(PROMPTS[:, :7], cache=cache)]
    steps += [device(PROMPTS[:, t:t + 1], cache=cache) for t in range(7, PROMPTS.shape[1])]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-5, atol=1e-5)


def test_left_padded_batches_run_on_the_device(checkpoint):
    host, device = on_host_and_device(checkpoint)
    ids = np.stack([PROMPTS[0, :12], np.r_[[0, 0, 0], PROMPTS[0, :9]]])
    mask = ids != 0
    mask[0] = True
    with backends.use_backend("numpy"):
        expected = host(ids, attention_mask=mask)
    np.testing.assert_array_equal(device(ids, attention_mask=mask), expected)


def test_generation_on_the_device_equals_generation_on_the_host(checkpoint):
    host, device = on_host_and_device(checkpoint)
    with backends.use_backend("numpy"):
        expected = list(generate(host, PROMPTS[0, :5].tolist(), max_new_tokens=12))
    assert list(generate(device, PROMPTS[0, :5].tolist(), max_new_tokens=12)) == expected


def test_bf16_weights_on_the_device_equal_bf16_weights_on_the_host(checkpoint):
    host, device = on_host_and_device(checkpoint, dtype="bfloat16")
    assert host.weight_format.name == "bf16"
    assert device.params["model.embed_tokens.weight"].dtype == np.uint16
    with backends.use_backend("numpy"):
        expected = host(PROMPTS)
    np.testing.assert_array_equal(device(PROMPTS), expected)


def test_bf16_weights_compute_what_float32_computes_with_the_weights_rounded(checkpoint):
    """The bf16 model is the float32 model whose matrices were rounded to bf16 once."""
    with backends.use_backend("numpy"):
        bf16 = Phi3.from_pretrained(checkpoint, dtype="bfloat16")
        rounded = Phi3.from_pretrained(checkpoint)
        for name, p in rounded.named_parameters():
            if p.data.ndim == 2:
                p.data = bf16_to_float32(float32_to_bf16(p.data))
        np.testing.assert_allclose(bf16(PROMPTS), rounded(PROMPTS), rtol=1e-5, atol=1e-5)
        exact = Phi3.from_pretrained(checkpoint)(PROMPTS)
    assert not np.array_equal(bf16(PROMPTS), exact)      # the rounding shows: a real change


def test_a_4_bit_model_with_its_8_bit_cache_runs_on_the_device(checkpoint, tmp_path):
    quantize_checkpoint(checkpoint, tmp_path / "q4", 32, progress=False)
    host, device = on_host_and_device(tmp_path / "q4")
    assert type(device.params["model.embed_tokens.weight"].packed) is device_standin.ndarray
    with backends.use_backend("numpy"):
        expected = host(PROMPTS)
        cache = host.new_cache(1)
        host_steps = [host(PROMPTS[:, :7], cache=cache)]
        host_steps += [host(PROMPTS[:, t:t + 1], cache=cache) for t in range(7, 12)]
    np.testing.assert_array_equal(device(PROMPTS), expected)
    cache = device.new_cache(1)
    steps = [device(PROMPTS[:, :7], cache=cache)]
    steps += [device(PROMPTS[:, t:t + 1], cache=cache) for t in range(7, 12)]
    np.testing.assert_array_equal(np.concatenate(steps, 1), np.concatenate(host_steps, 1))


def test_the_stand_in_refuses_what_a_gpu_refuses():
    """Negative controls: the checks above could fail."""
    x = device_standin.asarray(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="host NumPy array"):
        x + np.ones(3, np.float32)
    with pytest.raises(Exception, match="implicit conversion"):
        np.asarray(x)
    with pytest.raises(TypeError, match="host NumPy array"):
        x[np.array([0, 1])]
    assert type(x + 1) is device_standin.ndarray and float(x.sum()) == 6.0


def test_what_the_device_model_does_not_do(checkpoint):
    _, device = on_host_and_device(checkpoint)
    with pytest.raises(InvalidInputError, match="training runs on the host"):
        device.loss(PROMPTS, PROMPTS)
    with pytest.raises(CheckpointError, match="save a model loaded as float32 on the host"):
        device.save_pretrained(checkpoint.parent / "copy")
    with pytest.raises(InvalidInputError, match="dtype must be one of"):
        Phi3.from_pretrained(checkpoint, dtype="float16")
    with pytest.raises(backends.BackendError, match="unknown backend 'tpu'"):
        Phi3.from_pretrained(checkpoint, backend="tpu")
