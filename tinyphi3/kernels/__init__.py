"""Fast kernels beside the NumPy reference, and the switch that selects them.

Every layer in tinyphi3 is written first as plain NumPy that reads like its equation. Where the
profile says an operation matters, a Numba kernel here computes the same thing faster: fused
(one pass over memory instead of several) and parallel over rows (both cores, where NumPy's
elementwise work runs on one). The layer calls its kernel only when

    the backend is "numba"  and  every array is a float32 NumPy array

so float64 gradient checks, CuPy arrays and the "numpy" backend all run the reference.
tests/test_kernels.py proves each kernel equal to its reference over hypothesis-drawn shapes.

Numba's OpenMP threads are told to sleep when idle (OMP_WAIT_POLICY=PASSIVE, unless set): by
default they spin after each kernel and take the cores from NumPy's BLAS threads, which made a
training step 1.5x slower on a 2-core machine. (Spinning would also save the wake-up below
when generating text on an idle machine, about 10% of phi-3-mini's 4-bit decode; on a busy one
it made decoding up to 4 times slower, so threads sleep there too.)

On CPUs with AVX-512, LLVM is told to use 512-bit vectors (NUMBA_CPU_FEATURES gets
"-prefer-256-bit", unless set): by default it stops at 256 bits on Intel CPUs, which left the
4-bit matrix-vector kernel 20% slower here.

Numba's threads sleep between kernels, and waking one costs about 60 microseconds here: more
than a row-wise kernel on one token's activations takes in all. Such small calls (fewer than
SERIAL_BELOW elements, as when decoding a token) run on the calling thread alone (`threads_for`).

Choose the backend with the environment variable TINYPHI3_BACKEND=numpy|numba, with
`set_backend(name)`, or for a block of code with `with use_backend(name): ...`. The default is
"numba" when Numba is installed. Numba's thread count follows NUMBA_NUM_THREADS (default: all
cores).
"""

import contextlib
import importlib.util
import os
import sys

import numpy as np

from ..errors import TinyPhi3Error

BACKENDS = ("numpy", "numba")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")     # read when Numba first starts its threads


def _prefer_512_bit_vectors():
    """Let LLVM vectorise with 512-bit registers where the CPU has them (read at numba import)."""
    if "NUMBA_CPU_FEATURES" in os.environ or "numba" in sys.modules:
        return
    try:
        import llvmlite.binding as llvm
        features = llvm.get_host_cpu_features()
    except (ImportError, RuntimeError):
        return
    if features.get("avx512f"):
        os.environ["NUMBA_CPU_FEATURES"] = features.flatten() + ",-prefer-256-bit"


_prefer_512_bit_vectors()


class BackendError(TinyPhi3Error, ValueError):
    """An unknown backend name, or numba asked for where it is not installed."""


def _check(name: str) -> str:
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    if name == "numba" and importlib.util.find_spec("numba") is None:
        raise BackendError("the numba backend needs Numba: pip install numba")
    return name


def _default() -> str:
    name = os.environ.get("TINYPHI3_BACKEND")
    if name:
        return _check(name)
    return "numba" if importlib.util.find_spec("numba") is not None else "numpy"


_backend = [_default()]


def get_backend() -> str:
    return _backend[0]


def set_backend(name: str) -> None:
    """Select "numpy" (the reference) or "numba" (the kernels) for everything that follows."""
    _backend[0] = _check(name)


@contextlib.contextmanager
def use_backend(name: str):
    previous = _backend[0]
    set_backend(name)
    try:
        yield
    finally:
        _backend[0] = previous


SERIAL_BELOW = 1 << 16                 # elements: smaller calls run on one thread


class threads_for:
    """`with threads_for(size):` runs the Numba kernels called inside on one thread when `size`
    elements are too few to be worth waking the others. (A class, not a generator: it is
    entered a few hundred times per generated token.)"""

    __slots__ = ("serial", "saved")

    def __init__(self, size: int):
        self.serial = size < SERIAL_BELOW

    def __enter__(self):
        if self.serial:
            get, put = _thread_count()
            self.saved = get()
            put(1)

    def __exit__(self, *exc):
        if self.serial:
            _thread_count()[1](self.saved)


_THREAD_COUNT = []


def _thread_count():
    """(get, set) of Numba's thread count for the calling thread: the functions behind
    numba.get_num_threads and numba.set_num_threads, without their checks."""
    if not _THREAD_COUNT:
        import numba
        from numba.np.ufunc import parallel
        numba.get_num_threads()                         # starts the pool, binds the functions
        _THREAD_COUNT.extend((getattr(parallel, "_get_num_threads", numba.get_num_threads),
                              getattr(parallel, "_set_num_threads", numba.set_num_threads)))
    return _THREAD_COUNT


def fast(*arrays) -> bool:
    """True when the kernels should run: numba backend and float32 NumPy arrays only."""
    return _backend[0] == "numba" and all(
        type(a) is np.ndarray and a.dtype == np.float32 for a in arrays)


def cpu():
    """The fused Numba CPU kernels (tinyphi3/kernels/fused.py), imported on first use."""
    from . import fused as module
    return module


def q4():
    """The 4-bit weight kernels (tinyphi3/kernels/quantized.py), imported on first use."""
    from . import quantized as module
    return module
