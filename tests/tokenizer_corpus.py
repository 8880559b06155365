"""Deterministic training text for small test tokenizers, and a published-style tokenizer directory.

The corpus is English-like prose (a small grammar over a fixed word list), numbers, a little code
and some non-Latin text and emoji, so that a few hundred merges are worth learning and byte
fallback is exercised by everything else.
"""
import json
import random
import shutil

WORDS = (
    "the a an of to in and is was for on with as by at from that this it be are were has had not "
    "cat dog bird fish tree river stone house road city king queen child teacher student book "
    "light water fire earth wind number line shape circle square triangle energy force mass "
    "runs walks sees makes takes gives finds learns reads writes counts measures grows falls "
    "small large red green blue old new quick slow bright dark happy careful simple strange"
).split()
UNICODE_WORDS = ("café", "naïve", "façade", "Zürich", "smörgåsbord", "Ελληνικά", "русский",
                 "日本語", "東京", "中文", "한국어", "עברית", "العربية", "हिन्दी",
                 "😀", "🚀", "∑", "≈", "π", "—", "…")


def corpus_lines(n_lines=1500, seed=0):
    """`n_lines` lines of synthetic text; the same lines for the same seed."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        kind = rng.random()
        if kind < 0.7:
            words = [rng.choice(WORDS) for _ in range(rng.randint(3, 14))]
            if rng.random() < 0.3:
                words.insert(rng.randrange(len(words)), str(rng.randint(0, 99999)))
            if rng.random() < 0.15:
                words.insert(rng.randrange(len(words)), rng.choice(UNICODE_WORDS))
            line = " ".join(words).capitalize() + rng.choice([".", ".", "!", "?", ","])
        elif kind < 0.85:
            name, arg = rng.choice(WORDS), rng.choice(WORDS)
            line = rng.choice(["    ", "", "\t"]) + f"def {name}({arg}): return {arg} + {rng.randint(0, 9)}"
        else:
            line = " ".join(rng.choice(UNICODE_WORDS) for _ in range(rng.randint(1, 6)))
        lines.append(line)
    return lines


def write_corpus(path, n_lines=1500, seed=0):
    """Write the corpus to `path` (one sentence per line) and return the path."""
    path.write_text("\n".join(corpus_lines(n_lines, seed)) + "\n", encoding="utf-8")
    return path


def copy_with_config(source, target, **changes):
    """Copy a tokenizer directory, setting (or, with None, removing) keys of tokenizer_config.json."""
    shutil.copytree(source, target)
    config = json.loads((target / "tokenizer_config.json").read_text(encoding="utf-8"))
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    (target / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return target
