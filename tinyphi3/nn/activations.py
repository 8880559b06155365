"""Activations as plain array functions, nothing recorded: the pieces of phi-3-small's gated
activation that its forward pass (tinyphi3.nn.layers.gegelu) and its backward rule
(tinyphi3.nn.gradients.gegelu_backward) both compute, and the GELUs of the CLIP tower and of
Phi-3-vision's projector (quick_gelu, and gelu_erf through a vectorised erf: NumPy has none)."""

import math

import numpy as np

ERF_SERIES_TERMS = 30       # Maclaurin terms for |x| <= ERF_SPLIT: the last one is below 1e-17
ERF_SPLIT = 2.0
ERF_FRACTION_DEPTH = 60     # continued-fraction levels for |x| > ERF_SPLIT


def quick_gelu(x):
    """GELU's sigmoid approximation: x * sigmoid(1.702 x) (Hendrycks & Gimpel 2016, §2)."""
    with np.errstate(over="ignore"):
        return x / (1.0 + np.exp(-1.702 * x))


def gegelu_inputs(x, limit):
    """Split [..., 2I] into the gelu input a (even channels) and the linear input b (odd
    channels), each [..., I], clamped: a <= limit, -limit <= b <= limit; infinities pass."""
    a, b = x[..., 0::2], x[..., 1::2]                 # interleaved, not halves
    if limit is None:
        return a, b
    a = np.where(np.isinf(a), a, np.minimum(a, limit))
    b = np.where(np.isinf(b), b, np.clip(b, -limit, limit))
    return a, b


def erf(x):
    """The error function erf(x) = 2/sqrt(pi) * integral from 0 to x of exp(-t^2) dt, element by
    element, computed in float64 to about 1e-15 and returned in x's float dtype.

    |x| <= 2:  the Maclaurin series  2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
               (Abramowitz & Stegun 7.1.5), summed by Horner's rule in x^2;
    |x| > 2:   1 - erfc(|x|), with the continued fraction (A&S 7.1.14)
               erfc(z) = exp(-z^2)/sqrt(pi) * 1/(z + (1/2)/(z + 1/(z + (3/2)/(z + 2/(z + ...)))));
    erf(-x) = -erf(x).
    """
    x = np.asarray(x)
    a = np.abs(x.astype(np.float64))
    near = np.minimum(a, ERF_SPLIT)                      # the series' argument, |x| <= 2
    series = np.zeros_like(near)
    for n in range(ERF_SERIES_TERMS - 1, -1, -1):        # Horner: ((c_N x^2 + ...) x^2 + c_0)
        series = series * near * near + (-1) ** n / (math.factorial(n) * (2 * n + 1))
    series *= 2.0 / math.sqrt(math.pi) * near
    far = np.maximum(a, ERF_SPLIT)                       # the fraction's argument, |x| >= 2
    fraction = far.copy()
    for k in range(ERF_FRACTION_DEPTH, 0, -1):           # evaluated from the deepest level up
        fraction = far + (k / 2.0) / fraction
    tail = 1.0 - np.exp(-far * far) / (math.sqrt(math.pi) * fraction)
    result = np.sign(x) * np.where(a <= ERF_SPLIT, series, tail)
    return result.astype(np.promote_types(x.dtype, np.float32), copy=False)


def gelu_erf(x):
    """GELU, exact: x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)) (Hendrycks & Gimpel 2016), torch's
    `nn.GELU()` (approximate="none"); in x's float dtype."""
    x = np.asarray(x)
    wide = x.astype(np.float64)                          # erf's argument without float32 rounding
    return (0.5 * wide * (1.0 + erf(wide / math.sqrt(2.0)))).astype(x.dtype, copy=False)
