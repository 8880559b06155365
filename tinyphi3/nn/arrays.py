"""The array module of an input: new arrays are made where the inputs live.

The maths in tinyphi3.nn uses array methods, operators and ufuncs, which CuPy arrays take over
through NumPy's dispatch protocols; where a function must make a new array (np.arange, np.zeros),
it asks the input's module, so a CuPy array in gives CuPy arrays out without a copy to the host.
tinyphi3 itself never imports CuPy: a CuPy array brings its module along.

A device array library is known by the top-level module its array type is defined in ("cupy");
another one (tests/device_standin.py, a strict stand-in that runs on the CPU) registers itself
with `register_array_module`.
"""

import sys

import numpy as np

_DEVICE_MODULES = {"cupy"}


def register_array_module(module) -> None:
    """Let `array_module` recognise the arrays of another array library (a module whose
    `ndarray` type is defined in it, with NumPy's functions under the same names)."""
    _DEVICE_MODULES.add(module.__name__)


def array_module(x):
    """numpy for NumPy arrays (and anything else), cupy for CuPy arrays."""
    top = type(x).__module__.split(".")[0]
    if top in _DEVICE_MODULES and top in sys.modules:
        return sys.modules[top]
    return np


def on_device(x) -> bool:
    """Whether x is an array of a device library (not NumPy)."""
    return array_module(x) is not np


def to_host(x):
    """A NumPy array with x's values: x itself for a NumPy array, a copy for a device one."""
    return x.get() if on_device(x) else np.asarray(x)


def like(x, reference):
    """x (a host array or scalar) as an array of `reference`'s module: uploaded when reference
    lives on a device, unchanged otherwise."""
    return array_module(reference).asarray(x) if on_device(reference) else x
