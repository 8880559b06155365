"""The report's central claim in miniature: at equal compute, the two-phase recipe (lightly then
heavily filtered web + synthetic textbooks) beats unfiltered web-like data on held-out tasks.

Evaluates the two trained models (same architecture, same number of training tokens) few-shot on
every held-out task, draws both loss curves, and writes docs/data_recipe.md.

    python benchmarks/data_recipe.py --recipe runs/mini-base-phase2 --baseline runs/unfiltered-baseline
"""

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np

from tinyphi3 import Phi3, Tokenizer
from tinyphi3.evaluation.harness import evaluate_all, format_table
from tinyphi3.pictures.charts import line_plot


def history(run: Path, offset=0):
    h = json.loads((run / "history.json").read_text())
    train = [(s + offset, l) for s, l in h["losses"]]
    return h, train, [(s + offset, l) for s, l in h["val_losses"]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase1", default="runs/mini-base-phase1")
    parser.add_argument("--recipe", default="runs/mini-base-phase2")
    parser.add_argument("--baseline", default="runs/unfiltered-baseline")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--out", default="docs/data_recipe.md")
    args = parser.parse_args()
    results = {}
    for label, run in (("phase 1 + 2", args.recipe), ("unfiltered", args.baseline)):
        final = Path(run) / "final"
        results[label] = evaluate_all(Phi3.from_pretrained(final), Tokenizer.from_pretrained(final),
                                      n=args.n)
    table = format_table(results)
    print(table)

    p1, p1_train, p1_val = history(Path(args.phase1))
    p2, p2_train, p2_val = history(Path(args.recipe), offset=p1["step"])
    base, base_train, base_val = history(Path(args.baseline))

    def smooth(points, k=20):
        steps, losses = zip(*points)
        kernel = np.ones(k) / k
        return steps[k - 1:], np.convolve(losses, kernel, mode="valid")
    picture = line_plot("docs/data_recipe_loss.png", {
        "phase 1 + 2 (train, own data)": smooth(p1_train + p2_train),
        "unfiltered (train, own data)": smooth(base_train)},
        "training loss, moving average of 20 steps", "step", "cross-entropy (nats/token)")
    tokens = {"phase 1": p1["tokens"], "phase 2": p2["tokens"], "unfiltered": base["tokens"]}
    minutes = {"phase 1 + 2": (p1["seconds"] + p2["seconds"]) / 60,
               "unfiltered": base["seconds"] / 60}
    def verdict_for(task):
        """Recipe minus baseline, and whether it exceeds two binomial standard errors."""
        a, b = (results[m][task] for m in ("phase 1 + 2", "unfiltered"))
        se = np.sqrt(sum(r["accuracy"] * (1 - r["accuracy"]) / r["n"] for r in (a, b)))
        diff = a["accuracy"] - b["accuracy"]
        at_chance = all(abs(r["accuracy"] - r["chance"]) < 2 * np.sqrt(
            r["chance"] * (1 - r["chance"]) / r["n"]) for r in (a, b)) and a["chance"] > 0
        word = ("both models are at chance" if at_chance else
                "the recipe is better" if diff > 2 * se else
                "the recipe is worse" if diff < -2 * se else "no clear difference")
        return f"- {task}: {100 * diff:+.1f} points (two standard errors: {200 * se:.1f}): {word}"
    verdicts = "\n".join(verdict_for(t) for t in results["phase 1 + 2"])
    text = f"""# The data recipe at equal compute

The report (§2, 'Training Methodology', 'Data Optimal Regime') trains phi-3-mini in two phases:
phase 1 mostly on filtered web data, phase 2 on more heavily filtered web data plus synthetic
data, and argues that this data makes a small model strong. Here the same tiny Phi-3 is trained
twice for the same number of tokens:

- **phase 1 + 2** (this is `checkpoints/mini-base`): {tokens['phase 1']:,} tokens of lightly
  filtered web-like data, then {tokens['phase 2']:,} tokens of heavily filtered web-like data
  with synthetic textbooks (70% of phase 2's words) (`configs/mini-base-phase1.toml`,
  `configs/mini-base-phase2.toml`);
- **unfiltered**: {tokens['unfiltered']:,} tokens of the raw web-like corpus, all kinds of pages
  in their natural mix, no synthetic data (`configs/unfiltered-baseline.toml`).

Held-out few-shot evaluation in the report's format (`tinyphi3 eval`, {args.n} items per task, test
splits that training never saw):

```
{table}
```

**Verdict.** Recipe minus unfiltered, per task:

{verdicts}

Said plainly: at this compute (4.25 M parameters, 5.7 M tokens, under an hour on two cores) the
claim is **not** reproduced on the multiple-choice tasks, where both models are still at chance;
on arithmetic the recipe's model gets a few answers right and the unfiltered one almost none,
a difference at the edge of what 200 items can show. What the recipe's model has learned is
visible in its text (it writes column additions step by step and states the world's facts in
fluent sentences, see `checkpoints/mini-base/README.md`), not yet in the held-out scores. The
unfiltered corpus never states the closed world's facts nor works arithmetic in steps, so when
the recipe's model does pull ahead it will be partly because its data holds what the tasks ask:
that is the report's point as well, data chosen for the skills that matter.

![loss curves]({Path(picture).name})

The two curves are on different data, so they show each run's progress, not a comparison.
Wall time on this machine ({platform.machine()}, {os.cpu_count()} cores, one BLAS thread per run,
the two runs side by side): phase 1 + 2 {minutes['phase 1 + 2']:.0f} min, unfiltered
{minutes['unfiltered']:.0f} min.
"""
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
