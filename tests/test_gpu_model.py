"""The whole model on a GPU (the backend "cupy"): logits equal to the CPU reference, cached
decoding equal to the full pass, bf16 and 4-bit weights. The "cupy" cases are skipped, with the
reason, where no GPU can be reached; the same tests run on the backend "standin"
(tests/device_standin.py: the reference code on strict stand-ins for CuPy arrays), which shows
here that the tests themselves hold where no kernel runs."""

import numpy as np
import pytest

import device_standin  # noqa: F401  (registers the backend "standin")
from tinyphi3 import backends
from tinyphi3.cli.info import init_checkpoint
from tinyphi3.config import preset
from tinyphi3.io.checkpoint import save
from tinyphi3.models.model import Phi3
from tinyphi3.models.quantize import quantize_checkpoint
from tinyphi3.models.weights import init_parameters
from tinyphi3_gpu.device import gpu_unavailable

GPU = pytest.param("cupy", marks=[pytest.mark.gpu, pytest.mark.skipif(
    gpu_unavailable() is not None, reason=f"needs a CUDA GPU: {gpu_unavailable()}")])


@pytest.fixture(params=["standin", GPU])
def device(request):
    return request.param

IDS = np.random.default_rng(0).integers(3, 500, size=(2, 70))


def block16_small(path):
    """tiny-small with 16-token blocks, so that the block-sparse kernels (tiles of 16) run."""
    config = preset("tiny-small").replace(blocksparse_block_size=16)
    save(path, config, init_parameters(config, seed=1))
    return path


@pytest.fixture(scope="module", params=["tiny", "tiny-gqa", "tiny-longrope", "tiny-small",
                                        "small-block16"])
def checkpoint(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(request.param) / "ckpt"
    if request.param == "small-block16":
        return block16_small(path)
    init_checkpoint(request.param, path, seed=2)
    return path


def test_gpu_logits_equal_the_cpu_reference(checkpoint, device):
    with backends.use_backend("numpy"):
        expected = Phi3.from_pretrained(checkpoint)(IDS)
    gpu = Phi3.from_pretrained(checkpoint, backend=device)
    np.testing.assert_allclose(gpu(IDS), expected, rtol=1e-4, atol=1e-4)


def test_cached_decoding_on_the_gpu_equals_the_full_pass(checkpoint, device):
    gpu = Phi3.from_pretrained(checkpoint, backend=device)
    full = gpu(IDS[:1])
    cache = gpu.new_cache(1)
    steps = [gpu(IDS[:1, :33], cache=cache)]
    steps += [gpu(IDS[:1, t:t + 1], cache=cache) for t in range(33, IDS.shape[1])]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-4, atol=1e-4)


def test_bf16_weights_on_the_gpu_equal_bf16_weights_on_the_cpu(checkpoint, device):
    with backends.use_backend("numpy"):
        expected = Phi3.from_pretrained(checkpoint, dtype="bfloat16")(IDS)
    gpu = Phi3.from_pretrained(checkpoint, backend=device, dtype="bfloat16")
    np.testing.assert_allclose(gpu(IDS), expected, rtol=1e-4, atol=1e-4)
    cache = gpu.new_cache(2)
    steps = [gpu(IDS[:, :40], cache=cache)] + [gpu(IDS[:, t:t + 1], cache=cache)
                                               for t in range(40, 48)]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), expected[:, :48], rtol=1e-4,
                               atol=1e-4)


def test_a_4_bit_model_decodes_on_the_gpu_as_on_the_cpu(checkpoint, device, tmp_path):
    quantize_checkpoint(checkpoint, tmp_path / "q4", 32, progress=False)
    with backends.use_backend("numpy"):
        host = Phi3.from_pretrained(tmp_path / "q4")
        cache = host.new_cache(1)
        expected = [host(IDS[:1, :20], cache=cache)]
        expected += [host(IDS[:1, t:t + 1], cache=cache) for t in range(20, 30)]
    gpu = Phi3.from_pretrained(tmp_path / "q4", backend=device)
    cache = gpu.new_cache(1)
    steps = [gpu(IDS[:1, :20], cache=cache)]
    steps += [gpu(IDS[:1, t:t + 1], cache=cache) for t in range(20, 30)]
    np.testing.assert_allclose(np.concatenate(steps, 1), np.concatenate(expected, 1), rtol=1e-4,
                               atol=1e-4)
