"""The array module of an input: new arrays are made where the inputs live.

The maths in tinyphi3.nn uses array methods, operators and ufuncs, which CuPy arrays take over
through NumPy's dispatch protocols; where a function must make a new array (np.arange, np.zeros),
it asks the input's module, so a CuPy array in gives CuPy arrays out without a copy to the host.
tinyphi3 itself never imports CuPy: a CuPy array brings its module along.
"""

import sys

import numpy as np


def array_module(x):
    """numpy for NumPy arrays (and anything else), cupy for CuPy arrays."""
    if type(x).__module__.split(".")[0] == "cupy":
        return sys.modules["cupy"]
    return np
