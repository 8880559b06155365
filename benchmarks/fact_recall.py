"""Does a model know its world's facts, whatever it does with multiple-choice letters?

For held-out facts (those whose questions the evaluation asks), the model scores four
completions of the fact's own sentence, "Veska lives in [the Copper Caves]", the right value and
three other values of the same attribute, by log-likelihood; the fact counts as known when the
right value scores highest. Chance is 25%.

    python benchmarks/fact_recall.py --ckpt runs/mini-base-long/final [--n 80] [--split test]
"""

import argparse

import numpy as np

from tinyphi3 import Phi3
from tinyphi3.data import world
from tinyphi3.evaluation.harness import continuation_ids, loglikelihoods
from tinyphi3.tokenizers import load_tokenizer


def fact_recall(model, tokenizer, n=80, split="test", seed=0):
    rng = np.random.default_rng(seed)
    facts = [(e, a) for e in world.ENTITIES for a in world.ATTRIBUTES
             if world.in_split(("fact", e.name, a), split)]
    known = 0
    for i in rng.permutation(len(facts))[:n]:
        entity, attribute = facts[int(i)]
        right = entity.value(attribute)
        others = [v for v in world.ATTRIBUTE_VALUES[attribute] if v != right]
        sentence = world.fact_sentence(entity, attribute)
        prefix = sentence[:sentence.index(right)].rstrip()
        requests = [continuation_ids(tokenizer, prefix, " " + value)
                    for value in [right, *rng.choice(others, 3, replace=False)]]
        scores = loglikelihoods(model, requests, tokenizer.vocab_size, 8, tokenizer.pad_token_id or 0)
        known += int(np.argmax(scores) == 0)
    return known, min(n, len(facts))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--n", type=int, default=80)
    parser.add_argument("--split", default="test", choices=["train", "test"])
    args = parser.parse_args()
    known, n = fact_recall(Phi3.from_pretrained(args.ckpt), load_tokenizer(args.ckpt), args.n,
                           args.split)
    print(f"{args.ckpt}: the right value ranked first for {known} of {n} {args.split} facts "
          f"({100 * known / n:.1f}%; chance 25%)")


if __name__ == "__main__":
    main()
