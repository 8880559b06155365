"""Prompts for distillation (stage "distill", tinyphi3.train.distill): the user turns of a
conversations file, as written and with words swapped at random, for a teacher to answer.

A student trained on the teacher's next-token distributions over the train prompts alone learns
little: the two already agree there (mini-long and mini differ by about 0.03 nats per reply
token on mini's own SFT mixture). Where they disagree is off that distribution, on wordings
neither was trained on. Swapping words makes such prompts from the train ones without knowing
any held-out wording (the augmentation of TinyBERT, Jiao et al. 2020, in its simplest form):

    "What is the best way to hit Silo without anyone seeing?"
        -> "What is the best way to hit Silo without anyone Options?"        (rate 0.3)

Each word (a run of letters) is replaced, with probability `rate`, by a word drawn uniformly
from every word of the file's user turns, so the swapped words stay in the file's world. The
teacher's answer to the swapped prompt, whatever it is, is the target: how it generalises is what
the student should copy.
"""

import json
import re
from pathlib import Path

import numpy as np

from tinyphi3.errors import InvalidInputError

WORD = re.compile(r"([A-Za-z]+)")


def user_prompts(path, domains):
    """(prompts of the listed domains, the other prompts): the first user turn of each
    conversation in a `tinyphi3 data sft` file, each distinct prompt once, in file order. A
    record's domain is its "domain" field (absent: in neither list when domains are given)."""
    path = Path(path)
    if not path.is_file():
        raise InvalidInputError(f"{path}: no such conversations file")
    chosen, other = {}, {}
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                prompt = next(m["content"] for m in record["messages"] if m["role"] == "user")
            except (json.JSONDecodeError, KeyError, TypeError, StopIteration):
                raise InvalidInputError(f"{path}:{number}: not a conversation with a user turn "
                                        f"(one JSON object per line with \"messages\")") from None
            domain = record.get("domain")
            (chosen if domain in domains else other if domain is not None else {})[prompt] = 1
    return list(chosen), list(other)


def swap_words(text: str, pool: list, rate: float, rng) -> str:
    """text with each word replaced, with probability rate, by a random word of pool."""
    parts = WORD.split(text)                     # odd indices: the words
    return "".join(pool[rng.integers(len(pool))] if i % 2 and rng.random() < rate else part
                   for i, part in enumerate(parts))


def distillation_prompts(path, domains, copies: int, rate: float, n_other: int,
                         seed: int) -> list:
    """The prompts to answer, shuffled: every prompt of the domains as written and `copies` times
    with words swapped at `rate`, and n_other prompts of the other domains as written."""
    chosen, other = user_prompts(path, set(domains))
    if not chosen:
        raise InvalidInputError(f"{path}: no conversation of the domains {', '.join(domains)}")
    if n_other > len(other):
        raise InvalidInputError(f"{path}: {n_other} prompts of other domains asked for, "
                                f"{len(other)} there")
    rng = np.random.default_rng(seed)
    pool = [w for prompt in chosen + other for w in WORD.findall(prompt)]
    prompts = chosen + [swap_words(p, pool, rate, rng) for _ in range(copies) for p in chosen]
    prompts += [other[i] for i in rng.choice(len(other), n_other, replace=False)]
    rng.shuffle(prompts)
    return prompts
