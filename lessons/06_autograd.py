# %% [markdown]
# # Lesson 6: autograd, by hand and by engine
#
# Training (lesson 8) needs the gradient of the loss with respect to every one of the model's
# parameters: dL/dW tells how a small change of each weight W changes the loss, and the optimizer
# moves every weight a little against it. The chain rule gives those derivatives, one operation
# at a time, from the loss back to the weights: *reverse-mode automatic differentiation*, or
# backpropagation.
#
# Every stage of training in the report runs on such gradients: pre-training in two phases (§2,
# "Training Methodology"), then supervised fine-tuning and DPO (§2, "Post-training"; lessons 10
# and 11). The report trained phi-3-mini in bfloat16 (§2); section 4 below shows why a gradient
# *check* needs float64 instead. And for phi-3-small §2 mentions a training kernel built on
# FlashAttention, which section 7 meets.
#
# `tinyphi3.nn.autograd` is a small engine for it (in the spirit of micrograd, over NumPy arrays):
#
# - a `Tensor` wraps an array; a `Parameter` is a Tensor that wants a gradient;
# - every operation on Tensors records its inputs and a *backward rule*;
# - `loss.backward()` visits the recorded graph from the loss back to the Parameters.
#
# This lesson:
#
# 1. takes a gradient on paper,
# 2. then with the engine, and finds them equal;
# 3. looks at the graph the engine recorded, and walks it backwards by hand;
# 4. checks gradients against finite differences, and shows why that needs float64;
# 5. derives a rule step by step, RMSNorm's, and checks it both ways;
# 6. shows the check catching wrong backward rules, an obvious one and a subtle one;
# 7. derives the rule of attention, which uses what the forward pass saved: the weights P;
# 8. runs the whole model: `model.loss(...)`, `.backward()`, a gradient for every parameter.

# %%
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")   # tiny matrices: one BLAS thread (lesson 8)

import numpy as np

import _plot
from tinyphi3.nn import autograd
from tinyphi3.nn.attention import attention, causal_mask
from tinyphi3.nn.autograd import Parameter, Tensor, differentiable
from tinyphi3.config import preset
from tinyphi3.nn.gradients import attention_backward, rms_norm_backward
from tinyphi3.nn.layers import causal_lm_loss, linear, rms_norm, silu, softmax
from tinyphi3.models.model import Phi3

np.set_printoptions(precision=4, suppress=True, linewidth=110)
rng = np.random.default_rng(0)

# %% [markdown]
# ## 1. A gradient on paper
#
# One neuron and a squared error. With input x, target t and two weights w and b:
#
#     z = w x + b          y = silu(z) = z s(z),  s = sigmoid          L = (y - t)^2 / 2
#
# The chain rule multiplies the local derivatives along the path from L back to each weight:
#
#     dL/dy = y - t
#     dy/dz = s(z) + z s(z) (1 - s(z)) = s(z) (1 + z (1 - s(z)))
#     dz/dw = x,   dz/db = 1
#     dL/dw = (y - t) * s(z) (1 + z (1 - s(z))) * x          dL/db = the same without the x

# %%
x, t = 1.5, 0.2                      # a training example: input and target
w0, b0 = 0.8, -0.3                   # the two weights

z = w0 * x + b0
s = 1.0 / (1.0 + np.exp(-z))
y = z * s
dL_dy = y - t
dy_dz = s * (1.0 + z * (1.0 - s))
by_hand = {"w": dL_dy * dy_dz * x, "b": dL_dy * dy_dz * 1.0}
print(f"z = {z:.4f}  y = {y:.4f}  L = {(y - t) ** 2 / 2:.5f}")
print(f"by hand:   dL/dw = {by_hand['w']:.10f}   dL/db = {by_hand['b']:.10f}")

# %% [markdown]
# ## 2. The same with the engine
#
# The same formula, written with Parameters instead of numbers. `silu` is the model's own layer
# function: given Tensors it records itself with its backward rule (from
# `tinyphi3/nn/gradients.py`, where each rule states its equation). An operation records itself
# when one of its inputs is a Tensor that wants a gradient (a Parameter, or a result computed from
# one); on plain numbers and arrays nothing is recorded. `backward()` on the scalar loss starts
# from dL/dL = 1 and fills `.grad` of every Parameter.

# %%
w, b = Parameter(np.array(w0)), Parameter(np.array(b0))
wx = w * x                           # x and t are plain numbers: constants, no gradient
z_t = wx + b
y_t = silu(z_t)
d = y_t - t
dd = d * d
L = dd * 0.5
L.backward()
print(f"by engine: dL/dw = {w.grad:.10f}   dL/db = {b.grad:.10f}")
assert np.isclose(w.grad, by_hand["w"], rtol=1e-12) and np.isclose(b.grad, by_hand["b"], rtol=1e-12)
print("L is a", L)

# %% [markdown]
# ## 3. What the engine recorded
#
# Each result Tensor keeps `.parents` (the Tensors it was computed from) and `.backward_rule`
# (given dL/d(result), return dL/d(parent) for each parent). Together they form a graph whose
# leaves are the Parameters and the constants. We give the nodes names and print them in
# *topological order*: every node after the nodes it was computed from.


# %%
names = {id(w): "w", id(b): "b", id(wx): "w*x", id(z_t): "z = w*x + b", id(y_t): "y = silu(z)",
         id(d): "d = y - t", id(dd): "d*d", id(L): "L = d*d * 0.5"}
name = lambda node: names.get(id(node), f"constant {float(node.data):g}")


def topological_order(root):
    """Depth first: a node is appended after all of its parents."""
    order, seen = [], set()

    def visit(node):
        if id(node) in seen:
            return
        seen.add(id(node))
        for parent in node.parents:
            visit(parent)
        order.append(node)
    visit(root)
    return order


order = topological_order(L)
for node in order:
    inputs = ", ".join(name(p) for p in node.parents) or "-"
    kind = "rule" if node.backward_rule else ("leaf, wants a gradient" if node.requires_grad
                                             else "leaf, constant")
    print(f"{name(node):18s} = {float(node.data):8.4f}   from: {inputs:26s} ({kind})")

position = {id(node): i for i, node in enumerate(order)}
assert all(position[id(p)] < position[id(node)] for node in order for p in node.parents)
engine_order = autograd._topological_order(L)          # the engine's own (iterative) version
assert {id(n) for n in engine_order} == set(position)
assert all(engine_order.index(p) < engine_order.index(n) for n in engine_order for p in n.parents)

# %% [markdown]
# Note `d*d`: the node `d` reaches `L` along two paths (both factors of the product), so `d*d`
# lists it twice among its parents. The chain rule *sums* over paths: dL/dd = 0.5 d + 0.5 d = d.
#
# `backward()` walks this list in reverse. It holds a gradient for each node reached so far,
# hands a node's gradient to its rule once all the nodes after it are done (that is what the
# reverse topological order guarantees), and adds each returned piece into the parent's
# gradient. Here is that walk by hand, on the recorded graph:

# %%
grads = {id(L): np.array(1.0)}                         # dL/dL = 1
leaf_grads = {}
for node in reversed(order):
    g = grads.pop(id(node), None)
    if g is None:                                      # a constant: nothing flows into it
        continue
    if node.backward_rule is None:                     # a Parameter: its gradient is final
        leaf_grads[name(node)] = g
        continue
    pieces = node.backward_rule(g)                     # one gradient per parent
    print(f"{name(node):14s} dL/dnode = {float(g):8.4f}  ->  "
          + ", ".join(f"{name(p)}: {float(pg):.4f}" for p, pg in zip(node.parents, pieces)
                      if p.requires_grad))
    for parent, pg in zip(node.parents, pieces):
        if parent.requires_grad:
            grads[id(parent)] = grads.get(id(parent), 0.0) + pg      # paths that meet: add
print("walked by hand:", {k: round(float(v), 10) for k, v in leaf_grads.items()})
assert np.isclose(leaf_grads["w"], w.grad) and np.isclose(leaf_grads["b"], b.grad)

# %% [markdown]
# A second `backward()` *adds* to `.grad` instead of overwriting it. That is what gradient
# accumulation over several micro-batches relies on (lesson 8), and why a training step starts
# with `model.zero_grad()`.

# %%
first = float(w.grad)
L.backward()
assert np.isclose(w.grad, 2 * first)
w.grad = b.grad = None                                 # what zero_grad does, per parameter

# %% [markdown]
# ## 4. Checking a gradient with finite differences
#
# Every backward rule is an equation someone derived and typed. The independent check needs no
# derivation, only the forward function: the *central difference*
#
#     df/dx ≈ (f(x + h) - f(x - h)) / (2h)        error = h² f'''(x) / 6 + rounding / h
#
# The first error term shrinks with h, the second grows: f(x ± h) are each rounded to about
# machine epsilon ε times |f|, and dividing their difference by 2h magnifies that. The best h is
# near ε^(1/3), with an error near ε^(2/3). For float32 (ε ≈ 1.2e-7) that is about 1e-5 at
# best; for float64 (ε ≈ 2.2e-16) about 1e-11; for the bfloat16 the report trained in
# (ε = 2^-7 ≈ 7.8e-3) about 4e-2, no check at all. The curves below measure it for silu at
# x = 0.7, whose exact derivative we know:

# %%
exact = (lambda s: s * (1 + 0.7 * (1 - s)))(1 / (1 + np.exp(-0.7)))
steps = [10.0 ** -k for k in range(1, 11)]
errors = {}
for dtype in (np.float32, np.float64):
    x0 = dtype(0.7)
    central = [(silu(x0 + dtype(h)) - silu(x0 - dtype(h))) / (2 * dtype(h)) for h in steps]
    errors[dtype.__name__] = [abs(float(c) - exact) for c in central]
for dt, errs in errors.items():
    print(f"{dt}: best error {min(errs):.1e} at h = {steps[int(np.argmin(errs))]:.0e}")
print("picture:", _plot.line_plot(
    "06_finite_difference_error.png",
    {dt: (range(len(steps)), errs) for dt, errs in errors.items()},
    "central difference of silu at 0.7: error against the exact derivative",
    "step h", "|error|", log_y=True, legend="lower right",
    xticks=[f"1e-{k}" for k in range(1, 11)]))
assert min(errors["float32"]) > 1e-7 and min(errors["float64"]) < 1e-10

# %% [markdown]
# So gradient checks run in float64. The layers compute in the dtype they are given (float32,
# or float64 when the input already is), so the same code is checked that trains.
#
# A check for any function of arrays: draw a random weight for every output element, take the
# gradient of sum(weights * f(...)) with the engine, and compare it, entry by entry, with central
# differences of the same sum computed on plain arrays (the engine is not involved there at all).
# The random weights make every output element count, each with its own sign and size.


# %%
def numerical_gradient(f, arrays, which, h=1e-6):
    """Central differences of the scalar f(*arrays) with respect to arrays[which]."""
    grad = np.zeros_like(arrays[which])
    for i in np.ndindex(grad.shape):
        plus, minus = [a.copy() for a in arrays], [a.copy() for a in arrays]
        plus[which][i] += h
        minus[which][i] -= h
        grad[i] = (f(*plus) - f(*minus)) / (2 * h)
    return grad


def gradient_error(f, *arrays):
    """Largest relative difference between the engine's gradient of sum(r * f(...)), r random,
    and central differences, over all the arguments."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    leaves = [Parameter(a.copy()) for a in arrays]
    out = f(*leaves)
    r = np.random.default_rng(1).standard_normal(out.shape)
    (out * r).sum().backward()
    scalar = lambda *a: float((f(*a) * r).sum())
    worst = 0.0
    for k, leaf in enumerate(leaves):
        numeric = numerical_gradient(scalar, arrays, k)
        worst = max(worst, np.abs(leaf.grad - numeric).max() / np.abs(numeric).max())
    return worst


a, W = rng.standard_normal((3, 5)), rng.standard_normal((4, 5))
labels = np.array([[1, 2, 0, -100, 3], [4, 4, 1, 2, 0]])              # -100: not counted
checks = {
    "linear": gradient_error(linear, a, W),
    "rms_norm": gradient_error(lambda x, g: rms_norm(x, g, 1e-5), a, W[0]),
    "silu": gradient_error(silu, a),
    "softmax": gradient_error(softmax, a),
    "causal_lm_loss": gradient_error(lambda z: causal_lm_loss(z, labels),
                                     rng.standard_normal((2, 5, 6))),
    "silu(x @ V) * (x @ V)": gradient_error(lambda x, V: silu(x @ V) * (x @ V), a, W.T),
}
for op, err in checks.items():
    print(f"{op:20s} relative error {err:.1e}")
assert max(checks.values()) < 1e-7

# %% [markdown]
# ## 5. Deriving a rule: RMSNorm
#
# Each rule in `tinyphi3/nn/gradients.py` states its equation in one docstring line. Here is
# where RMSNorm's comes from. RMSNorm acts on each row x (C numbers) on its own:
#
#     m = mean(x²) + eps        r = 1 / sqrt(m)        n = x r        y = w ∘ n
#
# **Step 1**, the derivative of r. Every x_j enters m: ∂m/∂x_j = 2 x_j / C. With r = m^(-1/2),
#
#     ∂r/∂x_j = -1/2 m^(-3/2) · 2 x_j / C = -r³ x_j / C
#
# **Step 2**, the Jacobian of n = x r, by the product rule (and x_i r = n_i):
#
#     ∂n_i/∂x_j = δ_ij r + x_i ∂r/∂x_j = δ_ij r - r³ x_i x_j / C = r (δ_ij - n_i n_j / C)
#
# **Step 3**, y = w ∘ n multiplies row i of that Jacobian by w_i:
#
#     J_ij = ∂y_i/∂x_j = w_i r (δ_ij - n_i n_j / C)
#
# **Step 4**, the chain rule. Given g = dL/dy, dL/dx_j = Σ_i g_i J_ij. Name dn = g ∘ w:
#
#     dx_j = r (dn_j - n_j Σ_i dn_i n_i / C) = r (dn_j - n_j mean(dn ∘ n))
#
# and for the gain, ∂y_i/∂w_i = n_i in every row that used w, so dw = Σ over rows of g ∘ n.
#
# That is `rms_norm_backward`'s docstring, `dx = r * (dn - n * mean(dn * n))`. The Jacobian has a
# meaning too: r (I - n nᵀ / C) removes from a change of x its part along x (n · n is nearly C),
# because scaling a row does not change its normalised value. So J x ≈ 0: exactly
# w r x · eps / m, zero without eps.
#
# The checks, on 3 rows of C = 6: the Jacobian of step 3 against a Jacobian of finite
# differences, computed column by column; the gradients of step 4 against the library's rule;
# both against finite differences of L = sum(g ∘ y).

# %%
X, w_gain, g_out = rng.standard_normal((3, 6)), rng.standard_normal(6), rng.standard_normal((3, 6))
eps, C_ = 1e-5, X.shape[-1]
m = (X * X).mean(axis=-1, keepdims=True) + eps                       # [3, 1]
r = 1.0 / np.sqrt(m)
n = X * r                                                            # [3, 6]

row, h = 0, 1e-6                                                     # one row's Jacobian
J = w_gain[:, None] * r[row] * (np.eye(C_) - np.outer(n[row], n[row]) / C_)   # step 3
J_numeric = np.empty((C_, C_))
for j in range(C_):                                                  # column j: dy / dx_j
    e = np.eye(C_)[j] * h
    J_numeric[:, j] = (rms_norm(X[row] + e, w_gain, eps)
                       - rms_norm(X[row] - e, w_gain, eps)) / (2 * h)
print("derived Jacobian of one row, against finite differences: max difference "
      f"{np.abs(J - J_numeric).max():.1e}")
assert np.allclose(J, J_numeric, rtol=0, atol=1e-8)
scale_invariance = np.linalg.norm(J @ X[row]) / (np.linalg.norm(J) * np.linalg.norm(X[row]))
print(f"|J x| / (|J| |x|) = {scale_invariance:.1e}: a change along x does (almost) nothing")
assert np.allclose(J @ X[row], w_gain * r[row] * X[row] * eps / m[row], rtol=1e-6, atol=1e-15)

dn = g_out * w_gain
dx_derived = r * (dn - n * (dn * n).mean(axis=-1, keepdims=True))   # step 4
dw_derived = (g_out * n).sum(axis=0)
assert np.allclose(dx_derived[row], g_out[row] @ J, rtol=1e-12)      # = Σ_i g_i J_ij
dx_rule, dw_rule, _ = rms_norm_backward(g_out, rms_norm(X, w_gain, eps), X, w_gain, eps)
loss_of = lambda x, w: float((g_out * rms_norm(x, w, eps)).sum())   # noqa: E731
dx_numeric = numerical_gradient(loss_of, [X, w_gain], 0)
dw_numeric = numerical_gradient(loss_of, [X, w_gain], 1)
for label, derived, rule, numeric in [("dx", dx_derived, dx_rule, dx_numeric),
                                      ("dw", dw_derived, dw_rule, dw_numeric)]:
    print(f"{label}: derived vs library rule {np.abs(derived - rule).max():.1e}, "
          f"vs finite differences {np.abs(derived - numeric).max():.1e}")
    assert np.allclose(derived, rule, rtol=1e-12, atol=1e-14)
    assert np.abs(derived - numeric).max() < 1e-8 * np.abs(numeric).max()

# %% [markdown]
# ## 6. Negative controls: the check can fail
#
# A check that never fails proves nothing. First an obvious bug: a silu rule that keeps only
# s(x) and forgets the `x s(x) (1 - s(x))` term of the product rule.

# %%
wrong_silu = differentiable(lambda g, out, x: (g / (1 + np.exp(-x)),))(silu.__wrapped__)
err = gradient_error(wrong_silu, a)
print(f"silu with a wrong rule: relative error {err:.2f}")
assert err > 0.1

# %% [markdown]
# Now a subtle one, of the kind that survives code review: the RMSNorm rule of section 5 with
# eps dropped, r = 1 / sqrt(mean(x²)) instead of 1 / sqrt(mean(x²) + eps). With eps = 1e-5 and
# inputs of unit size the gradient changes by about eps / 2 = 5e-6 of its size. In float64 the
# check sees it at once; in float32 finite differences are too noisy to tell it from the
# correct rule.


# %%
def rms_norm_backward_without_eps(g, out, x, weight, eps):
    r = 1.0 / np.sqrt((x * x).mean(axis=-1, keepdims=True))       # the bug: + eps is missing
    n = x * r
    dn = g * weight
    dx = r * (dn - n * (dn * n).mean(axis=-1, keepdims=True))
    return dx, (g * n).reshape(-1, x.shape[-1]).sum(axis=0), None


subtle = differentiable(rms_norm_backward_without_eps)(rms_norm.__wrapped__)
x_in, gain, r_out = rng.standard_normal((2, 8)), rng.standard_normal(8), rng.standard_normal((2, 8))
table = {}
for dtype, h in [(np.float32, 1e-2), (np.float64, 1e-6)]:   # each near its best step
    xd, gd, rd = x_in.astype(dtype), gain.astype(dtype), r_out.astype(dtype)
    numeric = numerical_gradient(lambda v: float((rms_norm(v, gd, 1e-5) * rd).sum()), [xd], 0, h)
    for label, fn in [("correct rule", rms_norm), ("eps dropped", subtle)]:
        leaf = Parameter(xd.copy())
        (fn(leaf, gd, 1e-5) * rd).sum().backward()
        table[dtype.__name__, label] = np.abs(leaf.grad - numeric).max() / np.abs(numeric).max()
for (dt, label), err in table.items():
    print(f"{dt:8s} {label:13s} relative error {err:.1e}")
assert table["float64", "correct rule"] < 1e-8 < 1e-6 < table["float64", "eps dropped"]
assert table["float32", "eps dropped"] < 10 * table["float32", "correct rule"]   # indistinguishable

# %% [markdown]
# ## 7. Rules that use what the forward pass saved
#
# A backward rule receives `(g, out, *inputs)`: the gradient, the forward's output and its
# inputs. Some rules need an intermediate value that is neither. With
# `@differentiable(rule, saves=True)` the forward function returns `(out, saved)`; the engine
# gives callers only `out` and hands `saved` to the rule in place of `out`. A small example first:
# silu's derivative needs s(x), which the forward pass has just computed.


# %%
def silu_backward_from_saved(g, s, x):
    """s = sigmoid(x), saved by the forward pass:  d silu/dx = s (1 + x (1 - s))."""
    return (g * s * (1.0 + x * (1.0 - s)),)


@differentiable(silu_backward_from_saved, saves=True)
def silu_saving(x):
    s = 1.0 / (1.0 + np.exp(-x))
    return x * s, s                                    # (output, what the rule needs)


print("plain arrays in, plain output out:", type(silu_saving(a)).__name__, silu_saving(a).shape)
assert np.allclose(silu_saving(a), silu(a))
assert gradient_error(silu_saving, a) < 1e-7

# %% [markdown]
# Attention is where saving pays. Its forward pass, for one head:
#
#     S = q kᵀ · scale  (masked: -inf where the key is in the future)    P = softmax(S) by rows
#     O = P V
#
# Given dO = dL/dO, the gradients follow from the output back, in three steps.
#
# **Step 1**, O = P V is a matrix product: O_id = Σ_j P_ij V_jd, so ∂O_id/∂V_jd = P_ij and
# ∂O_id/∂P_ij = V_jd. Summing over what each entry reaches:
#
#     dV = Pᵀ dO          dP = dO Vᵀ
#
# **Step 2**, the softmax, one row at a time. p_j = e^(s_j) / Z with Z = Σ_l e^(s_l), and
# ∂Z/∂s_l = e^(s_l). By the quotient rule
#
#     ∂p_j/∂s_l = (δ_jl e^(s_j) Z - e^(s_j) e^(s_l)) / Z² = p_j (δ_jl - p_l)
#
# a Jacobian diag(p) - p pᵀ, symmetric. The chain rule then gives
# dS_l = Σ_j dP_j p_j (δ_jl - p_l) = p_l (dP_l - Σ_j dP_j p_j), for all rows at once:
#
#     dS = P ∘ (dP - rowsum(dP ∘ P))
#
# A masked score is a constant (-inf), not a function of q or k; its p is 0, so its dS is 0.
#
# **Step 3**, S = q kᵀ · scale is a product again, S_ij = scale Σ_d q_id k_jd:
#
#     dq = dS k · scale          dk = dSᵀ q · scale
#
# With grouped-query heads (lesson 13) a key/value head serves g query heads, so its dk and dV
# add up the g heads' contributions. Every step needs P. Recomputing it in the backward pass
# would repeat the q kᵀ product and the softmax; `attention` is marked `saves=True` and returns
# P (shape [B, KV, g, T, S]: key/value heads, the g query heads sharing each, queries, keys) as
# its saved value. Here, with 2 heads and 5 positions:

# %%
B, H, T, hd = 1, 2, 5, 3
q, k, v = (rng.standard_normal((B, H, T, hd)) for _ in range(3))
mask = causal_mask(np.arange(T), np.ones((B, T), dtype=bool))          # [B, 1, T, T]
out, P = attention.__wrapped__(q, k, v, mask, 0.5)                # the raw forward: (out, saved)
print("output", out.shape, " saved weights P", P.shape)
future = np.triu(np.ones((T, T), dtype=bool), k=1)                   # key after query
assert np.allclose(P.sum(-1), 1.0) and np.all(P[..., future] == 0)
print("picture:", _plot.heatmaps("06_saved_attention_weights.png",
                                 [(f"head {h}", P[0, h, 0]) for h in range(H)],
                                 "the attention weights P saved for the backward pass",
                                 vmax=1.0, annotate=True))

# %% [markdown]
# The three steps, written out with the saved P, checked against the library's rule
# (`attention_backward`) and against finite differences of L = sum(dO ∘ O). First the softmax
# Jacobian of step 2 alone, on one row of scores.

# %%
s_row = rng.standard_normal(T)
p_row = softmax(s_row)
J_softmax = np.diag(p_row) - np.outer(p_row, p_row)                 # p_j (δ_jl - p_l)
J_numeric = np.stack([(softmax(s_row + h * e) - softmax(s_row - h * e)) / (2 * h)
                      for e in np.eye(T)], axis=1)                   # column l: dp / ds_l
print(f"softmax Jacobian against finite differences: {np.abs(J_softmax - J_numeric).max():.1e}")
assert np.allclose(J_softmax, J_numeric, rtol=0, atol=1e-9)
assert np.allclose(J_softmax, J_softmax.T) and np.allclose(J_softmax.sum(axis=0), 0)

dO = rng.standard_normal(out.shape)                                  # [B, H, T, hd]
P_heads = P.reshape(B, H, T, T)                                      # g = 1: one query head each
dV = P_heads.swapaxes(-1, -2) @ dO                                   # step 1
dP = dO @ v.swapaxes(-1, -2)
dS = P_heads * (dP - (dP * P_heads).sum(axis=-1, keepdims=True))    # step 2
dq_derived = dS @ k * 0.5                                            # step 3, scale = 0.5
dk_derived = dS.swapaxes(-1, -2) @ q * 0.5
assert np.all(dS[..., future] == 0)                                  # masked scores: no gradient
library = attention_backward(dO, P, q, k, v, mask, 0.5)[:3]


def loss_of(q, k, v):
    """L = sum(dO * O) on plain arrays: its gradient with respect to O is dO."""
    return float((dO * attention.__wrapped__(q, k, v, mask, 0.5)[0]).sum())


for i, (label, derived) in enumerate([("dq", dq_derived), ("dk", dk_derived), ("dV", dV)]):
    numeric = numerical_gradient(loss_of, [q, k, v], i)
    print(f"{label}: derived vs library rule {np.abs(derived - library[i]).max():.1e}, "
          f"vs finite differences {np.abs(derived - numeric).max():.1e}")
    assert np.allclose(derived, library[i], rtol=1e-12, atol=1e-14)
    assert np.abs(derived - numeric).max() < 1e-8 * np.abs(numeric).max()

# %% [markdown]
# With Tensors, the engine keeps P inside the recorded rule and calls it during `backward()`:
# the same gradients come out.

# %%
leaves = [Parameter(a_.copy()) for a_ in (q, k, v)]
out_t = attention(*leaves, mask, 0.5)
(out_t * dO).sum().backward()
dq, dk, dv, _, _ = attention_backward(dO, P, q, k, v, mask, 0.5)
for leaf, ours in zip(leaves, (dq, dk, dv)):
    assert np.allclose(leaf.grad, ours, rtol=1e-12, atol=1e-14)
err = gradient_error(lambda q, k, v: attention(q, k, v, mask, 0.5), q, k, v)
print(f"attention against finite differences: relative error {err:.1e}")
assert err < 1e-7

# %% [markdown]
# Saving is a trade of memory for time. P holds B·H·T·S numbers per layer. For phi-3-mini
# (32 layers, 32 heads) on one sequence of its full 4096 tokens, in bfloat16:

# %%
mini = preset("phi-3-mini-4k")
n_saved = mini.num_hidden_layers * mini.num_attention_heads * 4096 * 4096
print(f"{n_saved:,} numbers = {n_saved * 2 / 2**30:.0f} GiB in bfloat16, for one sequence")
assert n_saved * 2 == 32 * 2**30

# %% [markdown]
# 32 GiB of attention weights for a single sequence is more than a GPU wants to keep. Large-scale
# training therefore recomputes P block by block in the backward pass instead of storing it
# (FlashAttention, Dao et al. 2022; the report's §2 builds phi-3-small's block-sparse training
# kernel on it); our tiny models can afford to keep it.
#
# ## 8. The whole model
#
# The model code is written once, with NumPy. `model.loss(ids, labels)` runs it inside
# `enable_grad()`, where the model hands its layers the Parameters themselves, so every
# operation records itself. `backward()` then fills a gradient for each named parameter.

# %%
config = preset("tiny")
model = Phi3(config, seed=0)
ids = rng.integers(0, config.vocab_size, size=(2, 16))
loss = model.loss(ids, ids)                    # labels = ids: the loss shifts them by one
loss.backward()
print(f"loss {float(loss.data):.4f} (ln V = {np.log(config.vocab_size):.4f}: near-uniform guesses)")
norms = {}
for pname, p in model.named_parameters():
    assert p.grad is not None and p.grad.shape == p.shape and np.all(np.isfinite(p.grad))
    norms[pname] = float(np.linalg.norm(p.grad))
for pname in ["model.embed_tokens.weight", "model.layers.0.self_attn.qkv_proj.weight",
              "model.layers.0.mlp.down_proj.weight", "model.layers.1.input_layernorm.weight",
              "lm_head.weight"]:
    print(f"{pname:44s} {str(model.params[pname].shape):11s} |grad| = {norms[pname]:.4f}")
print(f"{len(norms)} parameters, every one with a gradient")


def short_name(pname):
    """'model.layers.0.self_attn.qkv_proj.weight' -> '0.qkv_proj'."""
    for part in ("model.", "layers.", "self_attn.", "mlp.", ".weight"):
        pname = pname.replace(part, "")
    return pname


short = {short_name(n): g for n, g in norms.items()}
print("picture:", _plot.bar_chart("06_gradient_norms.png", short,
                                  "|dL/dW| of each parameter of a random tiny model"))
assert abs(float(loss.data) - np.log(config.vocab_size)) < 0.1

# %% [markdown]
# Are these the right gradients? The parity test (`tests/test_autograd.py`) compares every one
# with torch's autograd. Here, a check of all of them at once: move *every* parameter along a
# random direction D and compare the directional derivative sum(grad · D) with a central
# difference of the loss, on a float64 copy of the model.

# %%
model64 = Phi3(config, params={n: a_.astype(np.float64) for n, a_ in model.params.items()})
model64.loss(ids, ids).backward()
D = {n: rng.standard_normal(p.shape) for n, p in model64.named_parameters()}
analytic = sum(float((p.grad * D[n]).sum()) for n, p in model64.named_parameters())


def loss_moved(step):
    moved = Phi3(config, params={n: p.data + step * D[n] for n, p in model64.named_parameters()})
    return float(moved.loss(ids, ids).data)


h = 1e-5
numeric = (loss_moved(h) - loss_moved(-h)) / (2 * h)
print(f"directional derivative: engine {analytic:.8f}, finite difference {numeric:.8f}")
assert abs(analytic - numeric) < 1e-5 * abs(numeric)
for (n, p32), (_, p64) in zip(model.named_parameters(), model64.named_parameters()):
    assert np.linalg.norm(p32.grad - p64.grad) < 1e-4 * np.linalg.norm(p64.grad), n

# %% [markdown]
# The float32 gradients agree with the float64 ones to within about 1e-6 (relative): training can
# run in float32.
#
# And inference records nothing. Outside `enable_grad()` the model hands its layers plain arrays,
# so no Tensor is created, no graph is kept, and `model(ids)` returns a NumPy array. The loss, in
# contrast, is a Tensor that remembers where it came from.

# %%
logits = model(ids)
print("model(ids):", type(logits).__name__, logits.shape, logits.dtype)
print("model.loss(...):", loss, "with", len(loss.parents), "parent(s)")
assert type(logits) is np.ndarray and not isinstance(logits, Tensor)
assert isinstance(loss, Tensor) and loss.parents and loss.backward_rule is not None

# %% [markdown]
# ## Summary
#
# - The chain rule, applied from the loss back to the weights, gives every gradient; the engine
#   records each operation's inputs and backward rule, and `backward()` applies the rules in
#   reverse topological order, adding contributions where paths meet.
# - Gradients are checked against central differences of the forward function, in float64:
#   float32's rounding (best error ~1e-5) hides bugs as small as a missing eps, float64 (~1e-10)
#   does not. A check comes with negative controls that show it failing.
# - A rule is derived with the chain rule, one step at a time: RMSNorm's Jacobian is
#   w r (I - n nᵀ / C), giving dx = r (dn - n mean(dn ∘ n)); the softmax Jacobian is
#   p (δ - p), giving attention's dS = P ∘ (dP - rowsum(dP ∘ P)). Both were checked against the
#   library's rules and against finite differences.
# - A rule may receive values saved by the forward pass (`saves=True`): attention keeps its
#   weights P, at a memory cost of layers × heads × T² numbers per sequence.
# - `model.loss(...).backward()` fills `.grad` for all named parameters; `model(ids)` is plain
#   NumPy and records nothing.
#
# Next: the data the model learns from (lesson 7), and pre-training a tiny model with these
# gradients (lesson 8).
#
# ## Where it lives
#
# - `tinyphi3/nn/autograd.py`: `Tensor` (`backward`), `Parameter`, `differentiable` (with
#   `saves=True`), `enable_grad`, `_topological_order`.
# - `tinyphi3/nn/gradients.py`: the backward rules, among them `rms_norm_backward`,
#   `softmax_backward`, `attention_backward`, `silu_backward`, `linear_backward`,
#   `causal_lm_loss_backward`.
# - `tinyphi3/nn/layers.py`: the layers that carry those rules (`linear`, `rms_norm`, `silu`,
#   `softmax`, `causal_lm_loss`); `tinyphi3/nn/attention.py`: `attention`, `causal_mask`.
# - `tinyphi3/models/model.py`: `Phi3.loss`, `Phi3.named_parameters`, `Phi3.zero_grad`.
# - `tests/test_autograd.py`: each rule against finite differences, and the whole model's loss
#   and gradients against torch's autograd.
