"""Preference pairs from a chat model's own mistakes, for DPO.

Every DPO of docs/wording.md so far was given pairs written in advance: a refusal chosen over
compliance, the graceful decline chosen over a refusal. Such a pair pushes one kind of reply
wherever its prompt's words lead, also where the model was already right, and each DPO traded
one family for another (the decline of outside requests spread to questions about the model).
The Phi-3 report's DPO takes its rejected replies from the model's own unwanted outputs. Here:

    for n requests in the *train* wordings of tinyphi3.data.wordings (families in turn):
        reply  = the model's greedy reply                      (as the measure asks, 120 tokens)
        if the family's rule (tinyphi3.evaluation.wording.judge) says the reply is wrong:
            pair = {prompt, chosen: the data's reply, rejected: the model's reply}

so a family the model already answers right gives no pair, and a pair says "not this, that"
only about a reply the model actually gives. Earlier turns of a conversation (memory) are the
data's own. Only train frames and train values are asked: nothing held out is read, and the
pairs are checked for that (tests/test_own_pairs.py).
"""
import json

import numpy as np

from tinyphi3.data import wordings, world

FAMILIES = ("sum", "difference", "outside", "harm", "kind", "greeting", "thanks", "identity",
            "abilities", "memory")   # the measure's families with a goal (not the acts' grammar)


def check_families(families) -> tuple:
    """The families as a tuple, or a ValueError naming those that are no wording family."""
    families = tuple(families)
    unknown = [f for f in families if f not in wordings.FAMILIES]
    if unknown or not families:
        raise ValueError(f"families must be some of {', '.join(wordings.FAMILIES)}, got "
                         f"{', '.join(unknown) or 'none'}")
    return families


def requests(n: int, seed: int = 0, families=FAMILIES) -> list:
    """n (family, messages ending with the data's reply, expected) of train wordings, the
    families in turn."""
    families = check_families(families)
    rng = np.random.default_rng(world.stable_hash("own pairs", seed))
    drawn = []
    for k in range(n):
        family = families[k % len(families)]
        messages, expected = wordings.exchange(family, "train", rng)
        drawn.append((family, messages, expected))
    return drawn


def own_error_pairs(model, tokenizer, n: int, seed: int = 0, families=FAMILIES,
                    batch_size: int = 16, max_new_tokens: int = 120, progress=None) -> tuple:
    """(pairs, asked per family, wrong per family) from n train requests: a pair for each reply
    the family's rule judges wrong (see the module docstring). `progress(k)` is called after
    each batch of k requests."""
    from tinyphi3.evaluation.wording import judge, replies
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    drawn = requests(n, seed, families)
    pairs, asked, wrong = [], dict.fromkeys(families, 0), dict.fromkeys(families, 0)
    for first in range(0, len(drawn), batch_size):
        chunk = drawn[first:first + batch_size]
        said = replies(model, tokenizer, [messages[:-1] for _, messages, _ in chunk],
                       max_new_tokens, batch_size)
        for (family, messages, expected), reply in zip(chunk, said):
            asked[family] += 1
            chosen = messages[-1]["content"]
            if judge(family, reply, expected)["ok"] or reply == chosen or not reply:
                continue          # right, or nothing to reject (an empty reply: no pair)
            wrong[family] += 1
            pairs.append({"prompt": messages[:-1], "chosen": chosen, "rejected": reply,
                          "kind": f"own_{family}"})
        if progress:
            progress(len(chunk))
    return pairs, asked, wrong


# The families whose rule names one kind of reply (a greeting, a thanks, the model's name, ...);
# "kind" accepts any reply that is no refusal, and the numbers' families need the numbers asked.
MIRROR_FAMILIES = ("greeting", "thanks", "identity", "abilities", "outside", "harm")


def mirror_pairs(pairs, seed: int = 0) -> list:
    """For each own pair whose rejected reply is the right kind of reply for another family, a
    pair the other way round, in that family's train request:

        own pair:    "Cheers"  chosen "You're welcome!"   rejected "Hello there!"  (a greeting)
        its mirror:  "Hi!"     chosen the data's greeting  rejected "You're welcome!"

    A DPO on the own pair alone lowers the greeting everywhere (greetings then get other
    replies); the mirror says where it belongs. The other family is the first of
    MIRROR_FAMILIES, not the pair's own, whose rule accepts the rejected reply; a pair whose
    rejected reply fits none (a wrong name, a sum, broken text) gets no mirror. Requests are
    train wordings only, drawn from their own seed."""
    from tinyphi3.evaluation.wording import judge
    rng = np.random.default_rng(world.stable_hash("mirror pairs", seed))
    mirrored = []
    for pair in pairs:
        own = pair.get("kind", "").removeprefix("own_")
        for family in MIRROR_FAMILIES:
            if family == own:
                continue
            messages, expected = wordings.exchange(family, "train", rng)
            if judge(family, pair["rejected"], expected)["ok"]:
                mirrored.append({"prompt": messages[:-1], "chosen": messages[-1]["content"],
                                 "rejected": pair["chosen"], "kind": f"mirror_{family}"})
                break
    return mirrored


def read_pairs(path) -> list:
    """The preference pairs of a .jsonl file (`tinyphi3 data dpo`), each checked to hold a
    prompt, a chosen and a rejected reply; a ValueError names the first line that does not."""
    pairs = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                pair = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} line {number}: not valid JSON ({err.msg})") from None
            if not (isinstance(pair, dict) and isinstance(pair.get("prompt"), (list, str))
                    and isinstance(pair.get("chosen"), str)
                    and isinstance(pair.get("rejected"), str)):
                raise ValueError(f"{path} line {number}: expected a preference pair (\"prompt\" "
                                 "messages, \"chosen\" and \"rejected\" replies)")
            pairs.append(pair)
    if not pairs:
        raise ValueError(f"{path} holds no preference pair")
    return pairs
