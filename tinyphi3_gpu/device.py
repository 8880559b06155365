"""Whether a GPU can run tinyphi3_gpu's kernels here, and if not, why."""

import functools


@functools.cache
def gpu_unavailable() -> str | None:
    """None when CuPy is installed and sees a CUDA device; otherwise the reason, in words."""
    try:
        import cupy
    except ImportError:
        return "CuPy is not installed (pip install -e \".[gpu]\")"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:          # no driver: CUDARuntimeError, or a missing libcuda
        return f"no CUDA driver or device ({type(error).__name__}: {error})"
    if count == 0:
        return "no CUDA device"
    return None
