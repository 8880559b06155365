"""Can a model read from its context? Two measurements, in wordings no training text used.

copy        "My friend wrote: fish, kadorlo, Veska, .... I wrote the same: fish, kadorlo, ...":
            the share of the repeated list's tokens the model predicts (the true list fed in).
            A list can be copied by position alone: the copy runs a fixed distance behind.
continue    "fish, kadorlo, Veska, ..., Nira" and, on the next line, the list again from a word
            chosen at random: the share of the words' tokens after that first word the model
            predicts (the commas between them are not counted).
            No fixed distance works (the starting word varies), so this needs a search by content.
word after  "In the box there were fish, kadorlo, Veska, .... The thing next to kadorlo was":
            is the next word the one after kadorlo? This needs a search by content (find
            kadorlo, read what follows), the "induction" that finding an option's letter needs.
row         the same question in the wording of the training exercises (`tinyphi3 data induction`:
            "Row: fish, kadorlo, Veska, ....\nAfter kadorlo comes"), with new words. A model can
            do this and not "word after": the search is learned, but only inside the exercises'
            frame (the 8-layer base after its induction stage, docs/wording.md).

Words are the world's values and names and made-up words (`tinyphi3.data.reading.word`), so
nothing but the context says what comes next.

    python benchmarks/reading.py --ckpt runs/mini-base-long/final --ckpt runs/mini-base-copying/final
"""

import argparse

import numpy as np

from tinyphi3 import Phi3
from tinyphi3.data import reading
from tinyphi3.tokenizers import load_tokenizer


def predicted_right(model, prompt, target):
    """Which tokens of target the model predicts, with the true ones fed in (teacher-forced)."""
    predicted = model(np.array([prompt + target]))[0, len(prompt) - 1:-1].argmax(-1)
    return predicted == np.array(target)


def copy_rate(model, tokenizer, n=40, seed=0):
    rng = np.random.default_rng(seed)
    right = total = 0
    for _ in range(n):
        words = ", ".join(reading.word(rng) for _ in range(8))
        prompt = tokenizer.encode(f"My friend wrote: {words}. I wrote the same:")
        target = tokenizer.encode(f" {words}.")
        right, total = right + int(predicted_right(model, prompt, target).sum()), total + len(target)
    return right / total


def continue_rate(model, tokenizer, n=40, seed=0):
    rng = np.random.default_rng(seed)
    comma = tokenizer.encode(",", add_special_tokens=False)[-1]
    right = total = 0
    for _ in range(n):
        words = reading._distinct_words(rng, 12)
        k = int(rng.integers(0, 7))
        prompt = tokenizer.encode(f"{', '.join(words)}\n{words[k]}")
        target = tokenizer.encode(", " + ", ".join(words[k + 1:k + 6]), add_special_tokens=False)
        counted = np.array(target) != comma
        right += int(predicted_right(model, prompt, target)[counted].sum())
        total += int(counted.sum())
    return right / total


def next_word_rate(model, tokenizer, wording, n=60, seed=0):
    """How often the model's next token starts the word after words[k], asked by
    wording(words, k)."""
    rng = np.random.default_rng(seed)
    right = 0
    for _ in range(n):
        words = list(dict.fromkeys(reading.word(rng) for _ in range(8)))
        k = int(rng.integers(len(words) - 1))
        prompt = tokenizer.encode(wording(words, k))
        right += int(model(np.array([prompt]))[0, -1].argmax() == tokenizer.encode(f" {words[k + 1]}")[0])
    return right / n


def word_after_rate(model, tokenizer):
    return next_word_rate(model, tokenizer, lambda words, k: f"In the box there were "
                          f"{', '.join(words)}. The thing next to {words[k]} was")


def row_rate(model, tokenizer):
    return next_word_rate(model, tokenizer,
                          lambda words, k: f"Row: {', '.join(words)}.\nAfter {words[k]} comes")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, action="append", help="repeat to compare")
    args = parser.parse_args()
    for ckpt in args.ckpt:
        model, tokenizer = Phi3.from_pretrained(ckpt), load_tokenizer(ckpt)
        print(f"{ckpt}: copy {100 * copy_rate(model, tokenizer):.0f}% of the list's tokens; continue "
              f"{100 * continue_rate(model, tokenizer):.0f}%; "
              f"word after {100 * word_after_rate(model, tokenizer):.0f}% (a word of the list at random: 12%); "
              f"row {100 * row_rate(model, tokenizer):.0f}%")


if __name__ == "__main__":
    main()
