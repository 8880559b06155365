"""Distillation from a frozen teacher (Hinton et al. 2015), the way a long model keeps the short
model's behaviour on short prompts.

The student (being trained) and the teacher (a frozen checkpoint, e.g. `checkpoints/mini` for
`mini-long`) read the same tokens. At every position t that a reply token follows (labels[t+1]
!= -100) the student's next-token distribution q_t = softmax(z_t) is pulled towards the
teacher's p_t, with the mean Kullback-Leibler divergence over those N positions:

    L = (1/N) sum_t KL(p_t || q_t) = (1/N) sum_t sum_v p_t[v] (log p_t[v] - log q_t[v])

    dL/dz_t = (q_t - p_t) / N

It is next-token cross-entropy with the teacher's whole distribution as the target instead of the
one token in the data: every alternative the teacher weighs (a refusal's first word against an
answer's) is a signal, not only the token that was written. L is 0 when the student predicts
exactly as the teacher does, and the teacher needs no sampling: one forward pass, no tape.
"""

import numpy as np

from tinyphi3.nn.autograd import differentiable
from tinyphi3.nn.layers import compute_dtype


def _log_softmax(z):
    """[..., V] -> log softmax over the last axis, in float32 or wider."""
    z = z.astype(compute_dtype(z))
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def teacher_probabilities(logits):
    """softmax(teacher logits[:, :-1]): [B, T, V] -> [B, T-1, V], the target at each position
    (position t predicts token t + 1)."""
    return np.exp(_log_softmax(logits[:, :-1]))


def _distillation_backward(g, saved, logits, teacher_probs, labels):
    student_probs, count = saved
    keep = (labels[:, 1:] != -100)[..., None]                   # [B, T-1, 1]
    d = np.zeros_like(logits, dtype=student_probs.dtype)         # the last position: 0
    d[:, :-1] = (student_probs - teacher_probs) * keep * (g / count)
    return d, None, None


@differentiable(_distillation_backward, saves=True)
def distillation_loss(logits, teacher_probs, labels):
    """Mean KL(teacher || student) over the positions that predict a counted label (module
    docstring). logits [B, T, V] (the student's), teacher_probs [B, T-1, V] (from
    teacher_probabilities), labels [B, T] with -100 where nothing is counted -> scalar."""
    keep = labels[:, 1:] != -100                                # [B, T-1]
    count = max(int(keep.sum()), 1)
    log_q = _log_softmax(logits[:, :-1])                        # [B, T-1, V]
    p = teacher_probs.astype(log_q.dtype, copy=False)
    log_p = np.log(np.where(p > 0, p, 1.0))                     # 0 log 0 = 0
    per_position = (p * (log_p - log_q)).sum(axis=-1)           # [B, T-1]
    loss = np.asarray((per_position * keep).sum() / count, dtype=log_q.dtype)
    return loss, (np.exp(log_q), count)
