"""The switch: which kernel runs an operation.

Every operation in tinyphi3 is written first as plain array code that reads like its equation
(tinyphi3/nn, tinyphi3/quant). A backend is a set of faster kernels for some of those operations,
and a rule for which arrays it takes. The reference asks the switch before computing:

    kernel = backends.kernel("rms_norm", x, weight)
    if kernel is not None:
        return kernel(x, weight, eps)
    ...the reference lines...

`kernel(op, *arrays)` gives the selected backend's kernel for `op` when that backend has one and
takes every array given, and None otherwise. So float64 gradient checks, operations a backend
lacks, and the "numpy" backend all run the reference; tests/test_kernels.py proves each kernel
equal to its reference over hypothesis-drawn shapes.

Backends live in a registry. tinyphi3 registers two:

    "numpy"   the reference itself: no kernels
    "numba"   fused, parallel CPU kernels (tinyphi3/backends/numba): float32 NumPy arrays only

Another package adds its own with `register_backend(Backend(...))`, and makes itself known by
an entry point in the group "tinyphi3.backends" (name = backend name, value = a function that
registers it): the CuPy backend of `tinyphi3_gpu` registers "cupy" for float32 CuPy arrays when
"cupy" is first asked for, and tinyphi3 never imports it by name. A backend whose arrays live on a
device says how to put an array there (`Backend.upload`); `Phi3.from_pretrained(path,
backend="cupy")` uploads the weights once with it.

What is global, and when it is set:
- the selected backend: read from the environment variable TINYPHI3_BACKEND the first time it is
  asked for (default "numba" when Numba is installed, else "numpy"); `set_backend(name)` changes
  it, `with use_backend(name):` for a block of code;
- a backend's kernels are imported the first time one of them is asked for (`Backend.load`); the
  numba backend sets its environment variables then, before Numba starts (see
  tinyphi3/backends/numba/__init__.py). Importing tinyphi3 changes no environment variable.
"""

import contextlib
import importlib.metadata
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from tinyphi3.errors import TinyPhi3Error


class BackendError(TinyPhi3Error, ValueError):
    """An unknown backend name, or a backend whose package is not installed."""


@dataclass
class Backend:
    """A named set of kernels.

    accepts(arrays) -> bool: whether the kernels take these arrays (dtype, array type);
    load() -> {op name: kernel}: imports the kernels, called once, on first use;
    missing() -> str | None: why the backend cannot run here (a package not installed), or None;
    upload(array) -> array: the array where the kernels take it (a GPU's memory), or None when
    they take host NumPy arrays.
    """
    name: str
    accepts: Callable = lambda arrays: False
    load: Callable = dict
    missing: Callable = lambda: None
    upload: Callable | None = None
    _kernels: dict | None = field(default=None, repr=False)

    def kernels(self) -> dict:
        if self._kernels is None:
            self._kernels = dict(self.load())
        return self._kernels


_REGISTRY: dict[str, Backend] = {}
_selected: list[str] = []                # empty until first asked for


def register_backend(backend: Backend) -> None:
    """Add a backend (or replace one of the same name)."""
    _REGISTRY[backend.name] = backend


def _plugins() -> dict:
    """The backends other installed packages offer: {name: entry point}, not yet imported."""
    found = importlib.metadata.entry_points(group="tinyphi3.backends")
    return {ep.name: ep for ep in found if ep.name not in _REGISTRY}


def backend_names() -> tuple:
    """Every backend name: tinyphi3's, those registered, and those offered by installed
    packages (which register themselves when first asked for)."""
    return tuple(_REGISTRY) + tuple(_plugins())


def registered(name: str) -> Backend:
    """The registered backend of that name (its kernels: `registered(name).kernels()`)."""
    return _REGISTRY[_check(name)]


def _check(name: str) -> str:
    if name not in _REGISTRY and name in _plugins():
        _plugins()[name].load()()            # the package's function registers its backend
    if name not in _REGISTRY:
        raise BackendError(f"unknown backend {name!r}: choose one of "
                           f"{', '.join(backend_names())}")
    why = _REGISTRY[name].missing()
    if why:
        raise BackendError(f"the {name} backend cannot run here: {why}")
    return name


def get_backend() -> str:
    """The selected backend's name (on first call: TINYPHI3_BACKEND, or the default)."""
    if not _selected:
        name = os.environ.get("TINYPHI3_BACKEND")
        if name:
            _selected.append(_check(name))
        else:
            _selected.append("numba" if _REGISTRY["numba"].missing() is None else "numpy")
    return _selected[0]


def set_backend(name: str) -> None:
    """Select a backend by name ("numpy", "numba", or a registered one) for what follows."""
    name = _check(name)
    _selected[:] = [name]


@contextlib.contextmanager
def use_backend(name: str):
    """`with use_backend("numpy"): ...` runs the block on that backend, then restores."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        _selected[:] = [previous]


def kernel(op: str, *arrays):
    """The selected backend's kernel for `op` if it has one and accepts `arrays`, else None."""
    backend = _REGISTRY[get_backend()]
    if not backend.accepts(arrays):
        return None
    return backend.kernels().get(op)


# ---- the two backends of tinyphi3 ----------------------------------------------------------------
def give_back_kept_memory() -> None:
    """After a prefill: free memory a backend kept for reuse goes back to the system (the numba
    backend's malloc tuning for 4-bit models; nothing for the others, nor when it never loaded)."""
    numba_backend = sys.modules.get(f"{__name__}.numba")
    if numba_backend is not None:
        numba_backend.give_back_kept_blocks()


def _float32_numpy(arrays) -> bool:
    return all(type(a) is np.ndarray and a.dtype == np.float32 for a in arrays)


def _numba_kernels() -> dict:
    # A backend package plugs into this registry, as tinyphi3_gpu's does: it is imported by name,
    # when its first kernel is asked for, and the switch itself depends on none of them.
    return importlib.import_module("tinyphi3.backends.numba").kernels()


def _numba_missing():
    if importlib.util.find_spec("numba") is None:
        return "Numba is not installed (pip install numba)"
    return None


register_backend(Backend("numpy"))
register_backend(Backend("numba", _float32_numpy, _numba_kernels, _numba_missing))
