"""AdamW with decoupled weight decay, the warm-up + cosine schedule, and gradient clipping.

AdamW (Loshchilov & Hutter 2019), for each parameter w with gradient g at step t:
    m = b1 m + (1 - b1) g              v = b2 v + (1 - b2) g^2
    m_hat = m / (1 - b1^t)             v_hat = v / (1 - b2^t)
    w = w - lr * (m_hat / (sqrt(v_hat) + eps) + wd * w)
The decay term is applied to the weight directly, not added to the gradient ("decoupled").
Norm gains and embeddings are not decayed.
"""

import math

import numpy as np

from tinyphi3 import backends


def decays(name: str, shape) -> bool:
    """Weight decay applies to the matrices of linear layers, not to norms or embeddings."""
    return len(shape) >= 2 and "embed_tokens" not in name and "norm" not in name


class AdamW:
    """AdamW over (name, Parameter) pairs; the moments are float32 arrays, like the weights."""

    def __init__(self, named_parameters, lr=1e-3, betas=(0.9, 0.95), eps=1e-8,
                 weight_decay=0.1):
        self.params = dict(named_parameters)
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.step_count = 0
        self.m = {n: np.zeros_like(p.data) for n, p in self.params.items()}
        self.v = {n: np.zeros_like(p.data) for n, p in self.params.items()}

    def step(self, lr=None):
        """One update of every parameter that has a gradient (in place on `.data`)."""
        lr = self.lr if lr is None else lr
        b1, b2 = self.betas
        self.step_count += 1
        c1, c2 = 1 - b1 ** self.step_count, 1 - b2 ** self.step_count
        for name, p in self.params.items():
            if p.grad is None:
                continue
            g = p.grad
            m, v = self.m[name], self.v[name]
            decay = self.weight_decay if decays(name, p.shape) else 0.0
            kernel = backends.kernel("adamw_update", p.data, g)
            if kernel is not None and p.data.flags.c_contiguous:
                kernel(p.data, g, m, v, lr, self.betas, c1, c2, self.eps, decay)
                continue
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * (g * g)
            if decay:
                p.data -= lr * decay * p.data
            p.data -= (lr / c1) * m / (np.sqrt(v / c2) + self.eps)

    def state_dict(self) -> dict:
        state = {"step_count": np.array(self.step_count)}
        for n in self.params:
            state[f"m/{n}"], state[f"v/{n}"] = self.m[n], self.v[n]
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        for n in self.params:
            self.m[n][...] = state[f"m/{n}"]
            self.v[n][...] = state[f"v/{n}"]


def cosine_lr(step, max_lr, min_lr, warmup_steps, total_steps):
    """Linear warm-up to max_lr over `warmup_steps`, then cosine decay to min_lr at the end:
        lr = min_lr + (max_lr - min_lr) * (1 + cos(pi * progress)) / 2."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def clip_grad_norm(parameters, max_norm) -> float:
    """Scale all gradients so their global L2 norm is at most max_norm; return the norm before."""
    grads = [p.grad for p in parameters if p.grad is not None]
    norm = math.sqrt(sum(float(np.vdot(g, g)) for g in grads))
    if max_norm and norm > max_norm:
        for g in grads:
            g *= max_norm / (norm + 1e-6)
    return norm
