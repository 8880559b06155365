"""A strict stand-in for a device array library (CuPy) that runs on the CPU.

`device_standin.ndarray` holds a NumPy array but behaves like an array on another device: NumPy
functions, ufuncs and operators work on it and give stand-in arrays back (as CuPy's do, through
NumPy's dispatch protocols), but it refuses what CuPy refuses:

- mixing with a host NumPy array of one or more dimensions (`device + host`, `np.where(device,
  host, ...)`, `device[host_index]`, `device[...] = host`): TypeError;
- turning into a NumPy array implicitly (`np.asarray(device)`): TypeError; `.get()` copies it
  to the host, and a size-1 array converts to a Python scalar (`float(a)`, `if a:`).

The module's own functions (`zeros`, `arange`, `asarray`, `exp`, ...) make stand-in arrays,
`asarray` being the upload. So code that runs on these arrays keeps its data on the device from
end to end, as it must on a GPU. Registered with tinyphi3.nn.arrays so `array_module` finds it, and as the backend "standin"
(no kernels, weights uploaded to the stand-in), which runs the reference code on device arrays.
"""

import operator
import sys
import types

import numpy as np

from tinyphi3 import backends
from tinyphi3.nn.arrays import register_array_module


class DeviceTransferError(TypeError):
    """What the stand-in raises where CuPy raises TypeError: an implicit host-device transfer."""


def _host_array_error():
    return DeviceTransferError("a host NumPy array mixed with device arrays: upload it first (xp.asarray)")


def _unwrap(obj):
    if isinstance(obj, ndarray):
        return obj._data
    if isinstance(obj, np.ndarray) and obj.ndim > 0:
        raise _host_array_error()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    return obj


def _wrap(obj):
    if isinstance(obj, np.ndarray):
        return ndarray(obj)
    if isinstance(obj, np.generic):                 # reductions give 0-d device arrays
        return ndarray(np.asarray(obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_wrap(o) for o in obj)
    return obj


class _ImplicitConversion(Exception):
    """np.asarray(device array). Not a TypeError: NumPy would catch that one and read the array
    element by element instead, which CuPy forbids."""


class ndarray:
    """An array 'on the device' (see the module docstring)."""

    __module__ = "device_standin"

    def __init__(self, data):
        self._data = data

    # what NumPy asks of it
    def __array__(self, dtype=None, copy=None):
        raise _ImplicitConversion("implicit conversion of a device array to NumPy: use .get()")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return _wrap(getattr(ufunc, method)(*_unwrap(inputs), **_unwrap(kwargs)))

    def __array_function__(self, func, types_, args, kwargs):
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    # attributes and methods: those of the data, arrays in and out kept on the device
    def __getattr__(self, name):
        if name.startswith("__"):       # no __array_interface__: NumPy must not read the data
            raise AttributeError(name)
        value = getattr(self._data, name)
        if callable(value):
            return lambda *args, **kwargs: _wrap(value(*_unwrap(args), **_unwrap(kwargs)))
        return _wrap(value)

    def get(self):
        """A host copy (cupy.ndarray.get)."""
        return self._data.copy()

    @property
    def T(self):
        return ndarray(self._data.T)

    def __getitem__(self, key):
        return _wrap(self._data[_unwrap(key)])

    def __setitem__(self, key, value):
        self._data[_unwrap(key)] = _unwrap(value)

    def __len__(self):
        return len(self._data)

    def __iter__(self):
        return (ndarray(row) for row in self._data)

    def _scalar(self, kind):
        if self._data.size != 1:
            raise TypeError(f"only a size-1 device array converts to {kind.__name__}")
        return kind(self._data.reshape(()).item())

    def __bool__(self):
        return self._scalar(bool)

    def __int__(self):
        return self._scalar(int)

    def __index__(self):
        return self._scalar(int)

    def __float__(self):
        return self._scalar(float)

    def __repr__(self):
        return f"device_standin.ndarray({self._data!r})"


def _binary(op, reflected=False):
    def method(self, other):
        a, b = self._data, _unwrap(other)
        return _wrap(op(b, a) if reflected else op(a, b))
    return method


def _inplace(op):
    def method(self, other):
        self._data = op(self._data, _unwrap(other))
        return self
    return method


for _name, _op in [("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("floordiv", operator.floordiv),
                   ("mod", operator.mod), ("pow", operator.pow), ("matmul", operator.matmul),
                   ("and", operator.and_), ("or", operator.or_), ("xor", operator.xor),
                   ("lshift", operator.lshift), ("rshift", operator.rshift)]:
    setattr(ndarray, f"__{_name}__", _binary(_op))
    setattr(ndarray, f"__r{_name}__", _binary(_op, reflected=True))
    _in = getattr(operator, f"i{_name}")
    setattr(ndarray, f"__i{_name}__", _inplace(_in))
for _name, _op in [("lt", operator.lt), ("le", operator.le), ("gt", operator.gt),
                   ("ge", operator.ge), ("eq", operator.eq), ("ne", operator.ne)]:
    setattr(ndarray, f"__{_name}__", _binary(_op))
for _name, _op in [("neg", operator.neg), ("pos", operator.pos), ("abs", operator.abs),
                   ("invert", operator.invert)]:
    setattr(ndarray, f"__{_name}__", lambda self, _op=_op: _wrap(_op(self._data)))
ndarray.__hash__ = None


# ---- the module's functions: NumPy's, making device arrays -----------------------------------
def asarray(a, dtype=None):
    """Upload (or keep) an array on the device."""
    if isinstance(a, ndarray):
        return a if dtype is None else a.astype(dtype)
    return ndarray(np.array(a, dtype=dtype))


array = asarray


def asnumpy(a):
    return a.get() if isinstance(a, ndarray) else np.asarray(a)


def __getattr__(name):
    value = getattr(np, name)
    if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, np.ufunc)):
        return lambda *args, **kwargs: _wrap(value(*_unwrap(args), **_unwrap(kwargs)))
    return value


register_array_module(sys.modules[__name__])
backends.register_backend(backends.Backend("standin", accepts=lambda arrays: False,
                                           upload=asarray))
