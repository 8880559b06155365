"""Every CUDA source of tinyphi3_gpu compiles to machine code for sm_80 and sm_90, on a machine
without a GPU: NVRTC is a library, and the headers come from the package index (the gpu extra).
Negative controls show that the check fails on an error, a warning, a tile that needs more shared
memory than the chip has, and an entry point the cubin lacks."""

import pytest

nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc",
                            reason="the gpu extra is not installed (pip install -e \".[gpu]\")")

from tinyphi3_gpu.compile import (ARCHITECTURES, CompileError, compile_cubin,  # noqa: E402
                                  entry_points, include_dirs, sources)

GOOD = """
#include <cuda_bf16.h>
template <typename T>
__device__ float twice(T x) { return 2.0f * static_cast<float>(x); }
extern "C" __global__ void twice_f32(const float* x, float* y, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = twice<float>(x[i]);
}
extern "C" __global__ void __launch_bounds__(128) twice_bf16(const __nv_bfloat16* x, float* y,
                                                              int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = twice<__nv_bfloat16>(x[i]);
}
"""


def test_the_headers_come_from_the_package_index():
    assert any("nvidia" in d and "cuda_runtime" in d for d in include_dirs())


def test_there_are_kernel_sources_and_each_names_its_entry_points():
    names = [p.name for p in sources()]
    assert {"blocksparse_attention.cu", "q4_matvec.cu", "bf16_matvec.cu"} <= set(names)
    for path in sources():
        assert entry_points(path.read_text()), f"{path.name} defines no extern \"C\" kernel"


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("path", sources(), ids=lambda p: p.name)
def test_every_source_compiles_to_a_cubin_without_warnings(path, arch):
    cubin = compile_cubin(path, arch)
    assert cubin[:4] == b"\x7fELF"                       # machine code, not PTX


def test_entry_points_are_found_by_name():
    assert entry_points(GOOD) == ["twice_f32", "twice_bf16"]


def test_a_good_source_compiles(tmp_path):
    assert compile_cubin(tmp_path / "good.cu", "sm_90", source=GOOD)[:4] == b"\x7fELF"


@pytest.mark.parametrize("change, message", [
    ("y[i] = twice<float>(x[i]);", "error"),                                   # no semicolon
    ("int i = blockIdx.x", "warning"),                                         # unused variable
    ("if (i < n)", "shared data"),                                             # 64 KB static
])
def test_the_check_fails_on_an_error_a_warning_and_too_much_shared_memory(tmp_path, change,
                                                                          message):
    bad = {"error": GOOD.replace(change, "y[i] = twice<float>(x[i])", 1),
           "warning": GOOD.replace(change, "int unused = 0; int i = blockIdx.x", 1),
           "shared data": GOOD.replace(change, "__shared__ float tile[16384]; tile[i % 16384] = "
                                               "x[i]; __syncthreads(); if (tile[0] > 1e30f || "
                                               "i < n)", 1)}[message]
    assert bad != GOOD
    with pytest.raises(CompileError, match=message):
        compile_cubin(tmp_path / "bad.cu", "sm_90", source=bad)


def test_the_check_fails_when_the_cubin_lacks_a_named_entry_point(tmp_path):
    hidden = GOOD.replace("//", "") + '\n#if 0\nextern "C" __global__ void ghost(int n) {}\n#endif\n'
    with pytest.raises(CompileError, match="lacks ghost"):
        compile_cubin(tmp_path / "ghost.cu", "sm_80", source=hidden)
