"""LongRoPE's search: one rescale factor per RoPE frequency, found by evolution (Ding et al. 2024,
"LongRoPE", §3.2; Phi-3 report §2), so that the model reads text s times longer than it was
trained on without retraining.

The objective is the mean next-token negative log-likelihood (ln of the perplexity) of held-out
documents of the target length L = s L0, under

    inv_freq[i] = 1 / (lambda_i * theta ** (2i / d)),   cos and sin times sqrt(1 + ln s / ln L0)

(tinyphi3.nn.rope_scaling.extend_config with method "longrope" and long_factor = lambda).

The search space:
- 1 <= lambda_i <= ceiling * s (ceiling 1.25 by default; the reference implementation,
  microsoft/LongRoPE's evolution/, draws within [1, 1 + s]);
- monotone: lambda_i <= lambda_{i+1}. The slow frequencies (large i, long wavelengths) are
  stretched at least as much as the fast ones, which already turn many times within L0.

The evolution (the reference's `dim_mono` algorithm, smaller):
1. The first population: position interpolation's, NTK-aware scaling's and YaRN's factor
   vectors (tinyphi3.nn.rope_scaling), then mutations of them up to `population` individuals.
2. Each generation keeps the best half as parents (elitism: the best never gets worse) and
   makes the other half anew, half by mutation of a random parent, half by crossover of two.
   - mutation: each factor multiplied, with probability 0.3, by exp(N(0, 0.15^2));
   - crossover: each factor taken from either parent with probability 1/2;
   then sorted, clipped to the bounds and rounded to 0.01 (the reference's step): sorting and
   clipping keep the vector monotone, so every candidate satisfies the constraint.
   A candidate already evaluated is drawn again (a few tries), as the reference does.

Not done here:
- The paper also keeps the first n_hat positions unscaled (plain RoPE angles for the first
  tokens). The published Phi-3 layout has no such field, and a checkpoint that transformers'
  Phi3 loads cannot express it, so it is not searched.
- `short_factor` stays all ones: sequences of at most L0 tokens are the range the model was
  trained on, and there its own angles are exactly what it learned. (The paper searches short
  factors too, to recover short-context quality after fine-tuning at long lengths, which is why
  Phi-3-mini-128K's are not all ones; without that fine-tuning there is nothing to recover.)

Everything is deterministic given the seed: one numpy Generator draws every random number.
"""

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np

from tinyphi3.nn import rope_scaling

BASELINES = ("pi", "ntk", "yarn")         # the methods whose factors seed the first population
MUTATION_RATE = 0.3                        # the chance that mutation changes a given factor
MUTATION_SIGMA = 0.15                      # a changed factor is multiplied by exp(N(0, sigma^2))
DECIMALS = 2                               # factors live on a 0.01 grid (the reference's step)
TRIES = 20                                 # redraws of a candidate already evaluated


@dataclass
class SearchResult:
    """What the search found.

    long_factor: the best factors [d/2]; perplexity: exp(its mean NLL);
    seeds: {method: perplexity} of the seeded factor vectors, under LongRoPE's magnitude;
    history: the best perplexity of the first population, then after each generation
    (generations + 1 numbers, never increasing); evaluated: every (factors, perplexity)
    evaluated, in order.
    """
    long_factor: list
    perplexity: float
    seeds: dict
    history: list
    evaluated: list = field(repr=False)


def token_nll(logits, ids):
    """-log p(ids[t + 1] | ids[:t + 1]) at every position: [B, T, V], [B, T] -> [B, T-1],
    by log-sum-exp: nll = logsumexp(z) - z[target]."""
    z = logits[:, :-1].astype(np.float64)                          # [B, T-1, V]
    top = z.max(axis=-1, keepdims=True)                            # [B, T-1, 1]
    lse = top[..., 0] + np.log(np.exp(z - top).sum(axis=-1))       # [B, T-1]
    picked = np.take_along_axis(z, ids[:, 1:, None], axis=-1)[..., 0]   # [B, T-1]
    return lse - picked


def mean_nll(model, docs, batch_size=1):
    """Mean next-token NLL of documents of equal length, `batch_size` of them per forward pass:
    docs [N, T] (or a list of N arrays of T ids) -> a float (ln of the perplexity)."""
    ids = np.stack([np.asarray(d, dtype=np.int64) for d in docs])   # [N, T]
    total = 0.0
    for start in range(0, len(ids), batch_size):
        batch = ids[start:start + batch_size]                        # [B, T]
        total += float(token_nll(model(batch), batch).sum())         # logits [B, T, V]
    return total / (ids.shape[0] * (ids.shape[1] - 1))


@contextlib.contextmanager
def using_config(model, config):
    """Run `model` under `config` inside the block. The model computes RoPE's tables from its
    config on every forward pass (nothing is cached), so a changed config takes effect at once."""
    original = model.config
    model.config = config
    try:
        yield model
    finally:
        model.config = original


def config_nll(model, config, docs, batch_size=1):
    """Mean NLL of `docs` with `model` run under `config` (its weights unchanged)."""
    with using_config(model, config):
        return mean_nll(model, docs, batch_size)


def baseline_perplexities(model, docs, target_length, batch_size=1, progress=None):
    """{method: perplexity} of every extension method of tinyphi3.nn.rope_scaling (LongRoPE's
    being its starting point, pi's factors with its magnitude) at `target_length`, and
    "none": plain RoPE, extrapolated past L0. progress(method, perplexity) is called after each.
    """
    result = {}
    for method in ("none", *rope_scaling.METHODS):
        config = model.config if method == "none" else rope_scaling.extend_config(
            model.config, method, target_length)
        result[method] = math.exp(config_nll(model, config, docs, batch_size))
        if progress is not None:
            progress(method, result[method])
    return result


class Evolution:
    """The state of one search: the bounds, the random generator and every candidate so far."""

    def __init__(self, model, docs, target_length, seed, ceiling, batch_size, progress):
        self.model, self.docs, self.batch_size = model, docs, batch_size
        self.base = model.config
        self.target_length = target_length
        self.s = target_length / model.config.max_position_embeddings
        self.low, self.high = 1.0, ceiling * self.s
        self.rng = np.random.default_rng(seed)
        self.progress = progress
        self.scores = {}                           # tuple(factors) -> perplexity
        self.evaluated = []

    def config(self, factors):
        return rope_scaling.extend_config(self.base, "longrope", self.target_length,
                                          long_factor=factors)

    def evaluate(self, factors):
        """Perplexity of the factors [d/2] at the target length (cached by value)."""
        key = tuple(float(f) for f in factors)
        if key not in self.scores:
            nll = config_nll(self.model, self.config(list(key)), self.docs, self.batch_size)
            self.scores[key] = math.exp(nll)
        self.evaluated.append((list(key), self.scores[key]))
        if self.progress is not None:
            self.progress(min(self.scores.values()))
        return self.scores[key]

    def legal(self, factors):
        """Sorted (monotone), clipped to [1, ceiling s], on the 0.01 grid: [d/2] -> [d/2]."""
        factors = np.clip(np.sort(factors), self.low, self.high)
        return np.clip(np.round(factors, DECIMALS), self.low, self.high)

    def mutate(self, parent):
        """Each factor times exp(N(0, sigma^2)) with probability MUTATION_RATE (one at least)."""
        parent = np.asarray(parent)
        changed = self.rng.random(parent.shape) < MUTATION_RATE
        changed[self.rng.integers(len(parent))] = True
        noise = np.exp(self.rng.normal(0.0, MUTATION_SIGMA, parent.shape))
        return self.legal(np.where(changed, parent * noise, parent))

    def crossover(self, a, b):
        """Each factor from parent a or parent b, with probability 1/2."""
        take_a = self.rng.random(len(a)) < 0.5
        return self.legal(np.where(take_a, a, b))

    def new(self, make):
        """A candidate from `make()` not evaluated yet, when a few tries find one."""
        for _ in range(TRIES):
            candidate = make()
            if tuple(float(f) for f in candidate) not in self.scores:
                return candidate
        return candidate


def evaluations(population, generations):
    """How many candidates search_long_factors evaluates: the first population, then the
    children of each generation (half the population)."""
    return population + generations * (population // 2)


def search_long_factors(model, docs, target_length, population=16, generations=8, seed=0,
                        ceiling=1.25, batch_size=1, progress=None) -> SearchResult:
    """LongRoPE's evolutionary search of `long_factor` for `model` (plain RoPE, trained at
    L0 = config.max_position_embeddings) at `target_length`, on `docs` (N arrays of
    target_length ids). See the module docstring for the algorithm.

    Evaluates population + generations * (population // 2) candidates (`evaluations`);
    progress(best perplexity so far) is called after each.
    """
    if ceiling < 1:
        raise ValueError(f"ceiling must be at least 1 (pi's factors are s), got {ceiling}")
    if population < len(BASELINES) + 1:
        raise ValueError(f"population must be at least {len(BASELINES) + 1}, got {population}")
    if any(len(d) != target_length for d in docs) or not docs:
        raise ValueError(f"docs must be a non-empty list of {target_length} token ids each")
    evo = Evolution(model, docs, target_length, seed, ceiling, batch_size, progress)
    c, L0 = model.config, model.config.max_position_embeddings
    seeds = {m: np.asarray(rope_scaling.method_factors(m, c.rotary_dim, c.rope_theta, L0,
                                                       evo.s)[0]) for m in BASELINES}
    seed_ppl = {m: evo.evaluate(f) for m, f in seeds.items()}
    members = [(p, list(seeds[m])) for m, p in seed_ppl.items()]
    parents = list(seeds.values())
    while len(members) < population:
        child = evo.new(lambda: evo.mutate(parents[len(members) % len(parents)]))
        members.append((evo.evaluate(child), list(child)))
    members.sort(key=lambda m: m[0])
    history = [members[0][0]]
    keep = population - population // 2
    for _ in range(generations):
        members = members[:keep]                                   # the parents, best first
        for k in range(population - keep):
            if k % 2 == 0 or keep < 2:
                i = evo.rng.integers(keep)
                child = evo.new(lambda: evo.mutate(members[i][1]))
            else:
                i, j = evo.rng.choice(keep, 2, replace=False)
                child = evo.new(lambda: evo.crossover(np.asarray(members[i][1]),
                                                      np.asarray(members[j][1])))
            members.append((evo.evaluate(child), list(child)))
        members.sort(key=lambda m: m[0])                           # stable: ties keep order
        history.append(members[0][0])
    best_ppl, best = members[0]
    return SearchResult([float(f) for f in best], best_ppl, seed_ppl, history, evo.evaluated)
