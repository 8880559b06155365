"""A small reverse-mode automatic differentiation engine over NumPy arrays.

A `Tensor` wraps an array. When an operation has among its inputs a Tensor that requires a
gradient (a Parameter, or a result computed from one), its result remembers its inputs and a
*backward rule*: given dL/d(output), the vector-Jacobian
product that returns dL/d(input) for each input. `loss.backward()` visits the recorded graph in
reverse topological order, applying each rule once and summing gradients where paths meet
(the chain rule, accumulated).

The model code does not change for training: its layer functions are NumPy functions marked
`@differentiable(rule)`. Given arrays they run as plain NumPy; given Tensors they run the same
NumPy code on the arrays inside and record the rule. The model hands its layers the Parameters
only inside `enable_grad()` (which `model.loss` uses) and plain arrays otherwise, so inference
records nothing.
Operators (+, -, *, /, @, reshape, transpose, slicing, np.split, np.concatenate) are recorded by
Tensor's own methods.
"""

import contextlib
import functools

import numpy as np

_recording = [False]


@contextlib.contextmanager
def enable_grad(enabled=True):
    """Inside this block the model computes with its Parameters, so that its operations are
    recorded (model.loss turns it on); outside, it computes with plain arrays."""
    previous = _recording[0]
    _recording[0] = enabled
    try:
        yield
    finally:
        _recording[0] = previous


def is_recording():
    return _recording[0]


class Tensor:
    """An array that can carry a gradient. `.data` is the array, `.grad` dL/d(data) after
    backward."""

    __array_priority__ = 1000          # x_array * tensor dispatches to Tensor.__rmul__

    def __init__(self, data, parents=(), backward=None, requires_grad=False):
        self.data = data
        self.grad = None
        self.parents = parents         # the Tensors this one was computed from
        self.backward_rule = backward  # grad_out -> tuple of grads, one per parent
        self.requires_grad = requires_grad or any(p.requires_grad for p in parents)

    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)

    def __repr__(self):
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, requires_grad={self.requires_grad})"

    # ---- backward ---------------------------------------------------------------------------
    def backward(self, grad=None):
        """Accumulate dL/dx into `.grad` of every leaf that requires a gradient.

        Called on a scalar loss without arguments (dL/dL = 1)."""
        if grad is None:
            if self.data.size != 1:
                raise ValueError("backward() without a gradient needs a scalar output")
            grad = np.ones_like(self.data)
        grads = {id(self): grad}
        owned = set()            # ids whose gradient array is ours to add into in place
        for node in reversed(_topological_order(self)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if node.backward_rule is None:                    # a leaf: keep its gradient
                node.grad = g if node.grad is None else node.grad + g
                continue
            for parent, pg in zip(node.parents, node.backward_rule(g)):
                if pg is None or not parent.requires_grad:
                    continue
                key = id(parent)
                if isinstance(pg, SliceGrad):                 # zero except one slice
                    if key not in owned:
                        full = np.zeros(parent.shape, pg.value.dtype)
                        if key in grads:
                            full += grads[key]
                        grads[key] = full
                        owned.add(key)
                    grads[key][pg.index] += pg.value
                    continue
                pg = _unbroadcast(pg, parent.shape)
                if key not in grads:
                    grads[key] = pg
                elif key in owned:
                    grads[key] += pg
                else:
                    grads[key] = grads[key] + pg
                    owned.add(key)

    # ---- operators ---------------------------------------------------------------------------
    def __add__(self, other):
        return _record(lambda a, b: a + b, lambda g, a, b: (g, g), self, other)

    def __sub__(self, other):
        return _record(lambda a, b: a - b, lambda g, a, b: (g, -g), self, other)

    def __mul__(self, other):
        return _record(lambda a, b: a * b, lambda g, a, b: (g * b, g * a), self, other)

    def __truediv__(self, other):
        return _record(lambda a, b: a / b, lambda g, a, b: (g / b, -g * a / (b * b)), self, other)

    def __neg__(self):
        return _record(lambda a: -a, lambda g, a: (-g,), self)

    def __matmul__(self, other):
        """C = A @ B (batched): dA = dC @ B^T, dB = A^T @ dC."""
        return _record(lambda a, b: a @ b,
                       lambda g, a, b: (g @ np.swapaxes(b, -1, -2), np.swapaxes(a, -1, -2) @ g),
                       self, other)

    __radd__ = __add__
    __rmul__ = __mul__

    def __rsub__(self, other):
        return _record(lambda a, b: a - b, lambda g, a, b: (g, -g), other, self)

    def __rtruediv__(self, other):
        return _record(lambda a, b: a / b, lambda g, a, b: (g / b, -g * a / (b * b)), other, self)

    def __rmatmul__(self, other):
        return Tensor(np.asarray(other)).__matmul__(self)

    # ---- shapes ------------------------------------------------------------------------------
    def reshape(self, *shape):
        return _record(lambda a: a.reshape(*shape), lambda g, a: (g.reshape(a.shape),), self)

    def transpose(self, *axes):
        axes = axes or tuple(reversed(range(self.ndim)))
        inverse = tuple(np.argsort(axes))
        return _record(lambda a: a.transpose(*axes), lambda g, a: (g.transpose(*inverse),), self)

    def swapaxes(self, i, j):
        return _record(lambda a: a.swapaxes(i, j), lambda g, a: (g.swapaxes(i, j),), self)

    @property
    def T(self):
        return self.transpose()

    def __getitem__(self, index):
        fancy = any(isinstance(i, (np.ndarray, list)) for i in
                    (index if isinstance(index, tuple) else (index,)))

        def rule(g, a):
            if not fancy:
                return (SliceGrad(index, g),)
            full = np.zeros_like(a)
            np.add.at(full, index, g)          # repeated indices add up
            return (full,)
        return _record(lambda a: a[index], rule, self)

    def sum(self, axis=None, keepdims=False):
        def rule(g, a):
            if axis is not None and not keepdims:
                g = np.expand_dims(g, axis)
            return (np.broadcast_to(g, a.shape),)
        return _record(lambda a: a.sum(axis=axis, keepdims=keepdims), rule, self)

    def mean(self, axis=None, keepdims=False):
        n = self.data.size if axis is None else np.prod([self.shape[i]
                                                         for i in np.atleast_1d(axis)])
        return self.sum(axis, keepdims) * (1.0 / n)

    def astype(self, dtype, copy=True):
        return _record(lambda a: a.astype(dtype), lambda g, a: (g.astype(a.dtype),), self)

    # np.split / np.concatenate on Tensors (the model code calls them on activations)
    def __array_function__(self, func, types, args, kwargs):
        if func is np.split:
            return _split(*args, **kwargs)
        if func is np.concatenate:
            return _concatenate(*args, **kwargs)
        return NotImplemented


class SliceGrad:
    """A gradient that is zero except at `index`, where it is `value`: what slicing and
    np.split pass back, added into one buffer instead of materialising zeros per slice."""

    def __init__(self, index, value):
        self.index, self.value = index, value


class Parameter(Tensor):
    """A leaf Tensor the optimizer updates: its `.data` is modified in place."""

    def __init__(self, data):
        super().__init__(data, requires_grad=True)

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


def _record(forward, rule, *inputs):
    """Run forward on the arrays of `inputs`; if any input is a Tensor that requires a gradient,
    return a Tensor that remembers `rule(g, *arrays) -> grads`."""
    arrays = [x.data if isinstance(x, Tensor) else x for x in inputs]
    out = forward(*arrays)
    tensors = [x if isinstance(x, Tensor) else Tensor(np.asarray(x)) for x in inputs]
    if not any(t.requires_grad for t in tensors):
        return Tensor(out)
    return Tensor(out, tuple(tensors), lambda g: rule(g, *arrays))


def _unbroadcast(grad, shape):
    """Sum a gradient over the axes that broadcasting added or stretched, back to `shape`."""
    while grad.ndim > len(shape):
        grad = grad.sum(axis=0)
    for axis, size in enumerate(shape):
        if size == 1 and grad.shape[axis] != 1:
            grad = grad.sum(axis=axis, keepdims=True)
    return grad


def _topological_order(root):
    order, seen, stack = [], set(), [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((p, False) for p in node.parents if id(p) not in seen)
    return order


def _split(x, indices_or_sections, axis=0):
    pieces = np.split(x.data, indices_or_sections, axis=axis)
    bounds = np.cumsum([0] + [p.shape[axis] for p in pieces])
    outs = []
    for k, piece in enumerate(pieces):
        def rule(g, a, start=bounds[k], stop=bounds[k + 1]):
            index = [slice(None)] * a.ndim
            index[axis] = slice(start, stop)
            return (SliceGrad(tuple(index), g),)
        outs.append(_record(lambda a, p=piece: p, rule, x))
    return outs


def _concatenate(tensors, axis=0):
    arrays = [t.data if isinstance(t, Tensor) else t for t in tensors]
    bounds = np.cumsum([0] + [a.shape[axis] for a in arrays])

    def rule(g, *arrays):
        return tuple(np.take(g, np.arange(bounds[k], bounds[k + 1]), axis=axis)
                     for k in range(len(arrays)))
    return _record(lambda *a: np.concatenate(a, axis=axis), rule, *tensors)


def differentiable(rule, saves=False):
    """Mark a NumPy function of arrays as differentiable with the backward `rule`.

    rule(grad_out, out, *args, **kwargs) returns one gradient per positional argument (None for
    arguments that take none, such as integer ids or constant tables). When no argument is a
    Tensor that requires a gradient, the function runs as plain NumPy and records nothing.
    With saves=True the function returns (out, saved) and the rule receives `saved` in place of
    `out`: intermediates the backward pass needs (attention weights, say) are kept, not recomputed.
    """
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if not any(isinstance(a, Tensor) for a in args):
                return fn(*args, **kwargs)[0] if saves else fn(*args, **kwargs)
            arrays = [a.data if isinstance(a, Tensor) else a for a in args]
            result = fn(*arrays, **kwargs)
            out, saved = result if saves else (result, result)
            tensors = [a if isinstance(a, Tensor) else Tensor(a) for a in args]
            if not any(t.requires_grad for t in tensors):
                return Tensor(out)
            return Tensor(out, tuple(tensors), lambda g: rule(g, saved, *arrays, **kwargs))
        wrapper.backward_rule = rule
        return wrapper
    return decorate
