"""Models merged in weight space: one model from several fine-tuned from the same start.

Fine-tuning moves a model a short way from where it started, and models fine-tuned from one
start stay close to it and to each other. A point between them often keeps much of what each
learned ("model soups", Wortsman et al. 2022), and the difference a fine-tuning made (a "task
vector", Ilharco et al. 2023) can be added to the start with a weight of one's choosing, or
several added at once:

    linear average        θ = Σ_i w_i θ_i                          Σ_i w_i = 1
    task arithmetic       θ = θ_0 + Σ_i w_i (θ_i − θ_0)            θ_0: the common start

The second is the first with the start given the weight left over, which is how it is
computed here, tensor by tensor in float32:

    θ = Σ_i w_i θ_i + (1 − Σ_i w_i) θ_0

Weights need not lie in [0, 1]: w = 1.5 goes further along a fine-tuning than it went, and
w = −1 takes it back (the start must then be given). Merging is only meaningful between
models of one geometry and one tokenizer that share a start: the merge checks the first two,
and cannot check the third (two models trained from different random starts average to noise).
"""

from pathlib import Path

import numpy as np

from tinyphi3.errors import ConfigError


def vocabulary_files(directory) -> dict:
    """{file name: bytes} of the files that define a directory's vocabulary: SentencePiece's
    tokenizer.model, tiktoken's ranks (*.tiktoken) and the added tokens."""
    directory = Path(directory)
    paths = [directory / "tokenizer.model", directory / "added_tokens.json",
             *sorted(directory.glob("*.tiktoken"))]
    return {p.name: p.read_bytes() for p in paths if p.exists()}


def merge_weights(ckpts: list, weights: list | None, base=None) -> list:
    """The weights of a merge, checked: one per checkpoint (default: equal, 1 / n); without a
    base they must sum to 1, since the start would take the rest."""
    if not ckpts:
        raise ConfigError("name at least one checkpoint to merge (--ckpt)")
    if weights is None or len(weights) == 0:
        weights = [1.0 / len(ckpts)] * len(ckpts)
    weights = [float(w) for w in weights]
    if len(weights) != len(ckpts):
        raise ConfigError(f"give one --weight per --ckpt: {len(ckpts)} checkpoint(s), "
                          f"{len(weights)} weight(s)")
    if not all(np.isfinite(weights)):
        raise ConfigError(f"weights must be finite numbers, got {weights}")
    rest = 1.0 - sum(weights)
    if base is None and abs(rest) > 1e-6:
        raise ConfigError(f"the weights sum to {sum(weights):g}, not 1: give the models' common "
                          f"start (--base) to take the remaining {rest:g}, or weights that sum "
                          f"to 1")
    if len(ckpts) + (base is not None) < 2:
        raise ConfigError("a merge needs two models at least: two --ckpt, or one and --base")
    return weights


def same_tokenizer(first, other) -> None:
    """ConfigError unless `other`'s vocabulary files are the bytes of `first`'s."""
    a, b = vocabulary_files(first), vocabulary_files(other)
    for name in sorted(set(a) | set(b)):
        if a.get(name) != b.get(name):
            raise ConfigError(f"{other} has another tokenizer than {first} ({name} differs): "
                              f"models merge only over one vocabulary")


def merge_params(terms) -> dict:
    """Σ_k w_k θ_k by tensor name, in float32, from (w_k, θ_k) pairs: the models with their
    weights and, for task arithmetic, the start with 1 − Σ_i w_i (`merge_terms`).

    terms: an iterable of (weight, {name: array}), all with the same names and shapes; it may
    load each model as it is reached, so that the merge holds the sum and one model at a time."""
    total = None
    for weight, params in terms:
        if total is None:
            total = {name: np.zeros(a.shape, dtype=np.float32) for name, a in params.items()}
        else:
            _check_same_tensors(total, params)
        for name, array in params.items():
            total[name] += np.float32(weight) * np.asarray(array, dtype=np.float32)
    if total is None:
        raise ConfigError("nothing to merge")
    return total


def merge_terms(weights: list, models: list, base=None) -> list:
    """The (weight, model) pairs of θ = Σ_i w_i θ_i + (1 − Σ_i w_i) θ_0: the start θ_0 is a
    term only when it is given and its weight is not zero."""
    terms = list(zip(weights, models))
    rest = 1.0 - sum(weights)
    if base is not None and rest != 0.0:
        terms.append((rest, base))
    return terms


def _check_same_tensors(first: dict, other: dict) -> None:
    missing, extra = sorted(set(first) - set(other)), sorted(set(other) - set(first))
    if missing or extra:
        raise ConfigError(f"the models hold different tensors: {(missing + extra)[:3]} in one "
                          f"and not the other")
    for name, array in first.items():
        if tuple(array.shape) != tuple(other[name].shape):
            raise ConfigError(f"{name} is {tuple(array.shape)} in one model and "
                              f"{tuple(other[name].shape)} in another: they are not one geometry")
