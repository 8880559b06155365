"""Direct preference optimization (Rafailov et al. 2023), the sigmoid loss as TRL computes it.

For a prompt x with a chosen reply y_w and a rejected reply y_l, the policy pi (being trained,
starting from the SFT model) and the frozen reference ref (the SFT model itself):

    z = (log pi(y_w|x) - log pi(y_l|x)) - (log ref(y_w|x) - log ref(y_l|x))
    L = -(1 - eps) log sigmoid(beta z) - eps log sigmoid(-beta z)        (mean over pairs)

log pi(y|x) is summed over the reply's tokens only. beta (0.1 by default) sets how far the policy
may move from the reference; eps > 0 ("label smoothing") assumes a fraction of the preferences are
wrong. With sft_weight = alpha > 0 the loss adds alpha times the chosen reply's mean
next-token loss, -log pi(y_w|x) / |y_w| (the "RPO" term of Pang et al. 2024, TRL's rpo_alpha):
plain DPO can lower the likelihood of the chosen replies too, as long as the rejected ones fall
faster, and on a tiny model that drift costs skills the preferences do not mention.
The implicit rewards beta (log pi - log ref) of the chosen and rejected replies are logged:
their difference (the margin) grows and the chosen one wins more often (the accuracy) as the
policy learns the preferences.
"""

import numpy as np

from tinyphi3.nn.autograd import Tensor, differentiable, enable_grad
from tinyphi3.nn.gradients import target_log_probs_backward
from tinyphi3.nn.layers import target_log_probs
from tinyphi3.train.conversations import pad_batch


@differentiable(lambda g, probs, logits, labels: (  # g[b] reaches every counted position of b
    target_log_probs_backward(np.broadcast_to(g[:, None], labels[:, 1:].shape), probs, logits,
                              labels), None), saves=True)
def sequence_logprobs(logits, labels):
    """log p(labelled tokens) per sequence: [B, T, V], [B, T] -> [B].

        log p = sum_t log softmax(logits[t])[labels[t + 1]]   over labels != -100
    """
    log_likelihood, probs = target_log_probs(logits, labels)  # [B, T-1], [B, T-1, V]
    return log_likelihood.sum(axis=1), probs


@differentiable(lambda g, out, x: (g * -np.expm1(out),))     # d/dx = 1 - sigmoid(x)
def log_sigmoid(x):
    """log sigmoid(x) = -log(1 + e^-x), computed without overflow."""
    return -np.logaddexp(0.0, -x)


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1,
             label_smoothing=0.0):
    """The DPO sigmoid loss (a scalar Tensor when the policy's log-probs are Tensors) and the
    logged statistics: rewards, margin, accuracy."""
    z = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)          # [P]
    losses = -(1.0 - label_smoothing) * log_sigmoid(z * beta) \
        - label_smoothing * log_sigmoid(z * -beta)
    loss = losses.sum() * (1.0 / len(ref_chosen))
    data = lambda a: a.data if isinstance(a, Tensor) else a                 # noqa: E731
    chosen = beta * (data(policy_chosen) - ref_chosen)
    rejected = beta * (data(policy_rejected) - ref_rejected)
    stats = {"reward_chosen": float(chosen.mean()), "reward_rejected": float(rejected.mean()),
             "margin": float((chosen - rejected).mean()),
             "accuracy": float((chosen > rejected).mean())}
    return loss, stats


def dpo_batch_loss(policy, reference, pairs, beta=0.1, label_smoothing=0.0, pad_id=0,
                   record=True, sft_weight=0.0):
    """DPO loss of a batch of ((chosen ids, labels), (rejected ids, labels)) pairs. The chosen
    and rejected sequences go through each model as one batch [2P, T]; the reference runs as
    plain inference (no tape, no gradients). sft_weight: the RPO term (module docstring)."""
    P = len(pairs)
    ids, labels = pad_batch([c for c, _ in pairs] + [r for _, r in pairs], pad_id)
    ref = sequence_logprobs(reference(ids), labels)                          # [2P], array
    with enable_grad(record):
        logps = sequence_logprobs(policy.forward(ids), labels)              # [2P]
        loss, stats = dpo_loss(logps[:P], logps[P:], ref[:P], ref[P:], beta, label_smoothing)
        if sft_weight:
            counted = (labels[:P, 1:] != -100).sum(axis=1)                   # [P] reply tokens
            nll = (logps[:P] * (-1.0 / counted)).sum() * (1.0 / P)
            loss = loss + nll * sft_weight
            stats["chosen_nll"] = float(nll.data if isinstance(nll, Tensor) else nll)
        return loss, stats
