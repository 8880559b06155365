"""The report's central claim in miniature: at equal compute, the two-phase data recipe (lightly,
then heavily filtered web + synthetic textbooks) beats raw web, on measures where the models are
not at chance, at three token budgets (the report's Figure 3, 'Data Optimal Regime', in small).

The same 4-layer model as checkpoints/mini-base (and its tokenizer) is trained from nothing:

    recipe        phase 1 lightly filtered web, phase 2 heavily filtered web + 90% textbooks
    raw web       100,000 unfiltered web-like pages (a seed no evaluation uses), no synthetic data
    ablations     at the middle budget, phase 2 without the textbooks; without the filter

at about 2, 6 and 14 M tokens (1000, 3000, 7000 steps of 8 x 256), each budget its own run with
its own cosine schedule (configs/recipe-study/*.toml). Every model is then measured on held-out
items, each number with its standard error: cloze fact recall, perplexity on held-out textbook
and web text, arithmetic (3-shot, the most that fits 512 tokens), and the multiple-choice tasks
in the cloze formulation (each option's text scored, not a letter).

    python benchmarks/data_recipe.py study --plan        every command in order, with times
    python benchmarks/data_recipe.py study --run         runs them, two at a time; Ctrl-C or
                                                         kill PID pauses, the same command resumes
    python benchmarks/data_recipe.py report [--out FILE] tables, verdicts, one picture per measure
    python benchmarks/data_recipe.py evaluate RUN_DIR    the measures of one finished run

A model's measures, with its runs' steps, tokens and minutes, are kept in
docs/data_recipe_runs/<model>.json (in the repository) as soon as it is evaluated: the plan leaves
out every model kept there and the runs only it needed, so the study can be done a few models
at a time (runs/ is not kept), and the report is drawn from those files.
"""

import argparse
import json
import math
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs" / "recipe-study"
RESULTS = ROOT / "docs" / "data_recipe_runs"     # one file per evaluated model, kept in git
DATA = "data/recipe-study"
TOKENIZER = "checkpoints/mini-base"
SECONDS_PER_STEP = 0.8          # a step of 8 x 256 tokens, 4 layers, one thread (2-core machine)
EVAL_SECONDS = 240              # the measures of one model, one thread (n = 10 took 8 s)
THREADS = {"OPENBLAS_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
WEB_HELD_OUT_SEED = 90_002      # held-out web pages; the runs' web uses seeds 0 and 11
N_ITEMS = 200                   # held-out items per task (and facts, web pages x 2, books / 2)
SEQ_LEN = 256                   # the windows of held-out text, as in training


class StudyError(Exception):
    """Bad input or a state the study cannot go on from: said in one line, exit 1."""


# ---- the plan: data, runs, evaluations ---------------------------------------------------------

# (what it writes under data/recipe-study, the command that writes it less --out, seconds)
DATA_STEPS = [
    ("web.jsonl", "tinyphi3 data web --docs 20000 --seed 0", 5),
    ("textbooks.jsonl", "tinyphi3 data textbooks --docs 30000 --seed 1", 20),
    ("classifier", f"tinyphi3 data classifier train --input {DATA}/web.jsonl", 5),
    ("phases", f"tinyphi3 data phases --web {DATA}/web.jsonl --classifier {DATA}/classifier "
               f"--textbooks {DATA}/textbooks.jsonl --synthetic-share 0.9", 15),
    ("web-raw.jsonl", "tinyphi3 data web --docs 100000 --seed 11", 20),
    # no textbooks: phase 2 is heavily filtered web alone, from both webs so that it repeats
    # about once at 6 M tokens (the recipe's own filtered pages hold 0.8 M tokens)
    ("phases-no-textbooks", f"tinyphi3 data phases --web {DATA}/web.jsonl --web "
                            f"{DATA}/web-raw.jsonl --classifier {DATA}/classifier "
                            f"--synthetic-share 0", 60),
    # no filter: the recipe's first 6,400 web pages, unfiltered, as phase 2's other 10%
    ("web-part.jsonl", "tinyphi3 data web --docs 6400 --seed 0", 2),
    ("phases-no-filter", f"tinyphi3 data phases --web {DATA}/web-part.jsonl --classifier "
                         f"{DATA}/classifier --textbooks {DATA}/textbooks.jsonl --light 0 "
                         f"--heavy 0 --synthetic-share 0.9", 15),
] + [(f"shards/{name}", f"tinyphi3 data tokenize --tokenizer {TOKENIZER} --input {DATA}/{source}",
      seconds) for name, source, seconds in (
          ("phase1", "phases/phase1.jsonl", 10), ("phase2", "phases/phase2.jsonl", 15),
          ("web-raw", "web-raw.jsonl", 45),
          ("phase2-no-textbooks", "phases-no-textbooks/phase2.jsonl", 20),
          ("phase2-no-filter", "phases-no-filter/phase2.jsonl", 15))]

# The models compared: (name, group, the runs that make it, in order; each a config name).
ARMS = [(f"{group}-{b}", group, runs) for b in ("2m", "6m", "14m") for group, runs in (
    ("recipe", (f"recipe-{b}-phase1", f"recipe-{b}-phase2")), ("baseline", (f"baseline-{b}",)))]
ARMS += [("no-textbooks-6m", "no textbooks", ("recipe-6m-phase1", "no-textbooks-6m-phase2")),
         ("no-filter-6m", "no filter", ("recipe-6m-phase1", "no-filter-6m-phase2"))]
LABELS = {"recipe": "recipe", "baseline": "raw web", "no textbooks": "no textbooks (phase 2)",
          "no filter": "no filter (phase 2)"}


@dataclass
class Job:
    """One command of the study: it is done when `output` exists."""
    name: str
    argv: list
    output: Path
    seconds: float
    needs: list = field(default_factory=list)
    atomic: bool = False            # a data step: written to <output>.tmp, renamed when complete
    steps: int = 0                  # a training run: its step count (for the progress line)

    def done(self) -> bool:
        return (ROOT / self.output).exists()


def load_configs(configs=CONFIGS) -> dict:
    """{run name: Recipe} of every run of ARMS, read from configs/recipe-study/<name>.toml."""
    from tinyphi3.errors import TinyPhi3Error
    from tinyphi3.train.recipe import load_recipe
    configs = Path(configs)
    if not configs.is_dir():
        raise StudyError(f"{configs}: no such directory of study configs")
    runs = dict.fromkeys(run for _, _, chain in ARMS for run in chain)
    try:
        return {run: load_recipe(configs / f"{run}.toml") for run in runs}
    except TinyPhi3Error as e:
        raise StudyError(str(e)) from None


def run_tokens(recipe) -> int:
    """Tokens one run trains on: steps x batch_size x seq_len."""
    t = recipe.train
    return t.steps * t.batch_size * t.seq_len * t.grad_accum


def arm_tokens(recipes) -> dict:
    """{arm name: tokens of all its runs together}, as planned."""
    return {name: sum(run_tokens(recipes[run]) for run in chain) for name, _, chain in ARMS}


def recorded_arms(results=RESULTS) -> list:
    """The models of ARMS whose measures are kept in `results` (docs/data_recipe_runs)."""
    return [name for name, _, _ in ARMS if (Path(results) / f"{name}.json").is_file()]


def plan_jobs(configs=CONFIGS, results=RESULTS, arms=None) -> list:
    """Every command of the study, each with what it needs first; a model whose measures are kept
    in `results` is left out, with every run and data step that only it needed. `arms` (names of
    ARMS) keeps only what those models need: the study done a few models per sitting."""
    recipes = load_configs(configs)
    if arms is not None:
        unknown = sorted(set(arms) - {name for name, _, _ in ARMS})
        if unknown:
            raise StudyError(f"no model named {', '.join(unknown)} in the study (the models: "
                             f"{', '.join(name for name, _, _ in ARMS)})")
    jobs = [Job(f"data {output}", command.split() + ["--out", f"{DATA}/{output}"],
                Path(DATA) / output, seconds, atomic=True)
            for output, command, seconds in DATA_STEPS]
    for job in jobs:           # a data step needs the steps whose output it reads
        job.needs = [other.name for other in jobs if other is not job and any(
            word == str(other.output) or word.startswith(f"{other.output}/")
            for word in job.argv[:-2])]
    makers = {str(job.output): job.name for job in jobs}
    for run, recipe in recipes.items():
        if recipe.data_shards not in makers:
            raise StudyError(f"{recipe.source}: its shards {recipe.data_shards} are not made by "
                             f"the study's data steps")
        needs = [makers[recipe.data_shards]]
        if recipe.init_from:
            parent = [r for r, other in recipes.items()
                      if Path(other.output_dir) == Path(recipe.init_from).parent]
            if not parent:
                raise StudyError(f"{recipe.source}: init_from {recipe.init_from} is not the "
                                 f"checkpoint of one of the study's runs")
            needs.append(f"train {parent[0]}")
        t = recipe.train
        evals = t.steps // max(recipe.log.eval_every, 1) * recipe.log.eval_batches
        jobs.append(Job(f"train {run}", ["tinyphi3", "train", os.path.relpath(recipe.source, ROOT)],
                        Path(recipe.output_dir) / "final" / "config.json",
                        t.steps * SECONDS_PER_STEP + evals * 0.3, needs, steps=t.steps))
    kept = set(recorded_arms(results))
    for name, _, chain in ARMS:
        if name in kept or (arms is not None and name not in arms):
            continue
        run_dir = recipes[chain[-1]].output_dir
        jobs.append(Job(f"evaluate {name}", ["python", "benchmarks/data_recipe.py", "evaluate",
                                             run_dir, "--arm", name],
                        Path(os.path.relpath(Path(results) / f"{name}.json", ROOT)),
                        EVAL_SECONDS, [f"train {chain[-1]}"]))
    needed, grew = {job.name for job in jobs if job.name.startswith("evaluate ")}, True
    while grew:                                   # what the models left to evaluate need
        more = {n for job in jobs if job.name in needed for n in job.needs} - needed
        needed, grew = needed | more, bool(more)
    return [job for job in jobs if job.name in needed]


def critical_path(jobs) -> dict:
    """{job name: seconds from its start to the end of the longest chain of jobs that waits on
    it}: the job with the most behind it starts first."""
    after = {job.name: [j for j in jobs if job.name in j.needs] for job in jobs}
    memo = {}

    def length(job):
        if job.name not in memo:
            memo[job.name] = job.seconds + max((length(j) for j in after[job.name]), default=0)
        return memo[job.name]
    return {job.name: length(job) for job in jobs}


def first(job, priority):
    """The order among jobs that could start: a model's evaluation before anything else (its
    measures are kept in the repository; runs/ may not outlive the sitting), then the job with
    the longest chain behind it."""
    return (not job.name.startswith("evaluate "), -priority[job.name])


def schedule(jobs, workers=2, done=None) -> list:
    """[(start second, job)] of the jobs not done, as `study --run` starts them: `workers` at a
    time, each as soon as a worker is free and what it needs is done, the longest chain first."""
    priority = critical_path(jobs)
    done = {j.name for j in jobs if j.done()} if done is None else set(done)
    todo = sorted((j for j in jobs if j.name not in done), key=lambda j: first(j, priority))
    ends, lanes, order = dict.fromkeys(done, 0.0), [0.0] * workers, []
    while todo:
        lane = int(np.argmin(lanes))
        ready = [j for j in todo if all(n in ends for n in j.needs)]
        if not ready:
            raise StudyError(f"{todo[0].name} needs a step the study does not make")
        starts = {j.name: max([lanes[lane]] + [ends[n] for n in j.needs]) for j in ready}
        job = min(ready, key=lambda j: (starts[j.name], first(j, priority)))
        ends[job.name] = lanes[lane] = starts[job.name] + job.seconds
        order.append((starts[job.name], job))
        todo.remove(job)
    return order


def duration(seconds) -> str:
    return (f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 5400
            else f"{seconds / 3600:.1f} h")


def shell(argv, width=100) -> str:
    """A command as shell text, wrapped with backslashes to `width` characters (an option and
    its value kept on one line)."""
    words = [shlex.quote(w) for w in argv]
    pieces = []
    for i, word in enumerate(words):
        if i and words[i - 1].startswith("--") and not word.startswith("--"):
            pieces[-1] += " " + word
        else:
            pieces.append(word)
    lines, line = [], ""
    for piece in pieces:
        if line.strip() and len(line) + len(piece) + 3 > width:
            lines.append(line + " \\")
            line = "   "
        line += (" " if line else "") + piece
    return "\n".join(lines + [line])


def command_now(job) -> list:
    """The command as it runs now: a training run that has a checkpoint continues (--resume)."""
    out = ROOT / job.output.parent.parent
    resume = job.name.startswith("train ") and any(
        (out / d / "trainer_state.json").is_file() for d in ("checkpoint", "checkpoint.old"))
    return job.argv + ["--resume"] * resume


def print_plan(jobs, workers=2, kept=()):
    """Every command in the order `study --run` starts them, with the estimated times."""
    full = schedule(jobs, workers, done=())
    left = schedule(jobs, workers)
    end = lambda order: max((s + j.seconds for s, j in order), default=0.0)   # noqa: E731
    print(f"# The data-recipe study: {len(jobs)} commands, from the repository root. Estimate: "
          f"{duration(sum(j.seconds for j in jobs))}\n# of one core; {duration(end(full))} with "
          f"{workers} at a time, one thread each ({SECONDS_PER_STEP} s per training step of "
          f"8 x 256\n# tokens, {EVAL_SECONDS // 60} min per model evaluated). Left to do: "
          f"{len(left)} commands, about {duration(end(left))}.\n# `python "
          f"benchmarks/data_recipe.py study --run` runs them in this order, skipping what is done.")
    if kept:
        print(f"# Measured already, kept in docs/data_recipe_runs (left out): {', '.join(kept)}.")
    print("export " + " ".join(f"{k}={v}" for k, v in THREADS.items()))
    for i, (start, job) in enumerate(full, 1):
        status = "done" if job.done() else f"~{duration(job.seconds)}, from ~{duration(start)}"
        print(f"\n# {i}. {job.name} ({status})\n{shell(command_now(job))}")
    print("\n# then: python benchmarks/data_recipe.py report --out docs/data_recipe_results.md")


# ---- running the plan: two commands at a time, one thread each, resumable ----------------------

def say(text):
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def executable(argv) -> list:
    """`tinyphi3 ...` and `python ...` run with this Python (its environment's tinyphi3)."""
    heads = {"tinyphi3": [sys.executable, "-m", "tinyphi3.cli"], "python": [sys.executable]}
    return heads.get(argv[0], argv[:1]) + argv[1:]


def temporary(path) -> Path:
    """Where a data step writes before it is complete: web.jsonl -> web.tmp.jsonl, phases ->
    phases.tmp (an interrupted step leaves no file that looks done)."""
    path = Path(path)
    return path.with_name(path.stem + ".tmp" + path.suffix)


def remove(path):
    import shutil
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


@dataclass
class Running:
    job: Job
    process: subprocess.Popen
    log: Path
    start: float


def launch(job, log_dir) -> Running:
    argv = command_now(job)
    if job.atomic:
        remove(ROOT / temporary(job.output))
        argv = argv[:-1] + [str(temporary(job.output))]
    log = Path(log_dir) / f"{job.name.replace(' ', '-').replace('/', '-')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"\n$ {shlex.join(argv)}\n")
        out.flush()
        process = subprocess.Popen(executable(argv), cwd=ROOT, stdout=out,
                                   stderr=subprocess.STDOUT, env={**os.environ, **THREADS})
    say(f"start {job.name}" + (" (resumed)" if "--resume" in argv else "")
        + f": ~{duration(job.seconds)}; log {os.path.relpath(log, ROOT)}")
    return Running(job, process, log, time.monotonic())


PROGRESS = re.compile(r"(\d+)/(\d+) \[([\d:]+)<([\d:?]+)")


def progress(run) -> str:
    """'step 2,300 of 6,000 (38%), 31 min so far, 49:10 left' from the tail of tqdm's bar in
    the log (its own count and estimate), or the time so far."""
    minutes = f"{(time.monotonic() - run.start) / 60:.0f} min so far"
    if not run.job.steps or not run.log.is_file():
        return minutes
    with open(run.log, "rb") as f:
        f.seek(max(0, run.log.stat().st_size - 4096))
        found = PROGRESS.findall(f.read().decode("utf-8", "replace"))
    if not found:
        return f"starting, {minutes}"
    step, total, _, left = found[-1]
    return (f"step {int(step):,} of {int(total):,} ({100 * int(step) / int(total):.0f}%), "
            f"{minutes}, {left} left")


def run_jobs(jobs, workers=2, every=60.0, log_dir=None, poll=2.0) -> list:
    """Run the jobs not yet done, `workers` at a time, the longest chain first, each as soon as
    what it needs is done; a line when each starts and ends and, every `every` seconds, one per
    running job. A data step's output is renamed into place when it is complete. Returns the
    names of the jobs that failed or could not run."""
    log_dir = Path(log_dir or ROOT / "runs" / "recipe-study" / "logs")
    priority = critical_path(jobs)
    finished = {j.name for j in jobs if j.done()}
    todo = sorted((j for j in jobs if j.name not in finished),
                  key=lambda j: first(j, priority))
    failed, running, last_lines = [], {}, time.monotonic()
    # Ctrl-C or `kill PID` pauses the study, also when it was started in the background (where
    # the shell makes it ignore SIGINT): the running trainings save a checkpoint first.
    previous = {s: signal.signal(s, signal.default_int_handler)
                for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while todo or running:
            for job in list(todo):
                if any(n in failed for n in job.needs):
                    todo.remove(job)
                    failed.append(job.name)
                    say(f"skip {job.name}: {', '.join(n for n in job.needs if n in failed)} failed")
                elif len(running) < workers and all(n in finished for n in job.needs):
                    todo.remove(job)
                    running[job.name] = launch(job, log_dir)
            if not running:                               # waits on a step that is not here
                say(f"cannot start {', '.join(job.name for job in todo)}: what they need is "
                    f"not done")
                failed += [job.name for job in todo]
                break
            time.sleep(poll)
            for name, run in list(running.items()):
                code = run.process.poll()
                if code is None:
                    continue
                del running[name]
                took = duration(time.monotonic() - run.start)
                if code == 0 and run.job.atomic:
                    os.replace(ROOT / temporary(run.job.output), ROOT / run.job.output)
                if code == 0 and run.job.done():
                    finished.add(name)
                    say(f"done  {name} in {took}")
                else:
                    failed.append(name)
                    say(f"FAILED {name} (exit {code}) after {took}: see "
                        f"{os.path.relpath(run.log, ROOT)}")
            if running and time.monotonic() - last_lines >= every:
                last_lines = time.monotonic()
                for name, run in running.items():
                    say(f"      {name}: {progress(run)}")
    except KeyboardInterrupt:
        for run in running.values():                 # training saves a checkpoint on SIGINT
            run.process.send_signal(signal.SIGINT)
        for run in running.values():
            try:
                run.process.wait(timeout=300)
            except subprocess.TimeoutExpired:
                run.process.kill()
        raise StudyError("interrupted: the training runs saved checkpoints; run the same "
                         "command again to continue") from None
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return failed


# ---- the measures: each a score per held-out item, then a mean and its standard error ----------

class Measure(NamedTuple):
    key: str
    title: str                  # in the pictures and the verdicts
    column: str                 # in the table
    higher_is_better: bool
    chance: float | None        # accuracy: what guessing scores; None: a cross-entropy (nats per
    #                             token), shown as perplexity, its exp


MEASURES = (
    Measure("fact_recall", "cloze fact recall, held-out facts (%)", "facts %", True, 0.25),
    Measure("textbook_ppl", "held-out textbook perplexity", "textbook ppl", False, None),
    Measure("web_ppl", "held-out web perplexity", "web ppl", False, None),
    Measure("arithmetic", "arithmetic, 3-shot CoT (%)", "arithmetic %", True, 0.0),
    Measure("knowledge_cloze", "knowledge, 5-shot cloze (%)", "knowledge %", True, 0.25),
    Measure("reasoning_cloze", "reasoning, 5-shot cloze (%)", "reasoning %", True, 0.25),
)
# measure key: (task of tinyphi3.data.tasks, shots, cloze formulation)
TASK_MEASURES = {"arithmetic": ("arithmetic", 3, False), "knowledge_cloze": ("knowledge", 5, True),
                 "reasoning_cloze": ("reasoning", 5, True)}


def mean_and_se(values, weights=None):
    """A mean and its standard error. Unweighted: x̄ and s / √n (s with n - 1). Weighted, as
    cross-entropy per token over windows of different lengths (x_i the summed -log p of window i,
    w_i its tokens): the ratio r = Σx / Σw, SE = √(Σ (x_i - r w_i)² / (n (n - 1))) / w̄ (the
    delta method for a ratio estimator; Cochran, Sampling Techniques, §6.3)."""
    x = np.asarray(values, float)
    w = np.ones_like(x) if weights is None else np.asarray(weights, float)
    if len(x) < 2 or len(w) != len(x):
        raise StudyError(f"a standard error needs two or more items with one weight each, "
                         f"got {len(x)} values and {len(w)} weights")
    r = x.sum() / w.sum()
    se = math.sqrt(((x - r * w) ** 2).sum() / (len(x) * (len(x) - 1))) / w.mean()
    return float(r), float(se)


def evaluate_model(model, tokenizer, n=N_ITEMS, log=lambda text: None) -> dict:
    """{measure key: {"value", "se", "n", ...}} on held-out items: accuracies as fractions,
    perplexities as cross-entropy in nats per token (exp of it is the perplexity)."""
    from fact_recall import fact_recall                  # benchmarks/fact_recall.py
    from tinyphi3.evaluation.harness import evaluate
    from tinyphi3.evaluation.perplexity import HELD_OUT_SEED, heldout_examples, window_losses
    scores = {}

    def record(key, score, began):
        scores[key] = {**score, "seconds": round(time.perf_counter() - began, 1)}
        log(f"{key}: {score['value']:.4f} ± {score['se']:.4f} ({scores[key]['seconds']} s)")

    began = time.perf_counter()
    known, total = fact_recall(model, tokenizer, n=n, split="test")
    value, se = mean_and_se([1] * known + [0] * (total - known))
    record("fact_recall", {"value": value, "se": se, "n": total}, began)
    for key, examples in (
            ("textbook_ppl", lambda: heldout_examples(tokenizer, "text", max(n // 2, 2),
                                                      HELD_OUT_SEED, SEQ_LEN)),
            ("web_ppl", lambda: heldout_examples(tokenizer, "web", 2 * n, WEB_HELD_OUT_SEED,
                                                 SEQ_LEN))):
        began = time.perf_counter()
        sums, counts = window_losses(model, examples())
        value, se = mean_and_se(sums, counts)
        record(key, {"value": value, "se": se, "n": len(sums), "tokens": sum(counts)}, began)
    for key, (task, shots, cloze) in TASK_MEASURES.items():
        began = time.perf_counter()
        # with cloze, each option's own text is scored by its log-likelihood after the question
        result = evaluate(model, tokenizer, task, shots=shots, n=n, cloze=cloze)
        value, se = mean_and_se([int(r["correct"]) for r in result["records"]])
        record(key, {"value": value, "se": se, "n": result["n"], "shots": shots,
                     "fewer_shots": result["fewer_shots"]}, began)
    return scores


def arm_named(arm) -> tuple:
    """(group, chain of runs) of the study's model `arm`, or a StudyError."""
    for name, group, chain in ARMS:
        if name == arm:
            return group, chain
    raise StudyError(f"--arm {arm}: not a model of the study (one of "
                     f"{', '.join(name for name, _, _ in ARMS)})")


def this_machine() -> str:
    """This machine, as a model's record names the one it was trained on."""
    return (f"{platform.machine()}, {os.cpu_count()} cores, NumPy {np.__version__}, one thread "
            f"per run")


def arm_record(arm, measures, n, configs=CONFIGS) -> dict:
    """What docs/data_recipe_runs/<arm>.json keeps of a model: its group, its measures, and the
    steps, tokens and seconds of each of its runs (from their history.json)."""
    recipes = load_configs(configs)
    group, chain = arm_named(arm)
    runs = []
    for run in chain:
        history = ROOT / recipes[run].output_dir / "history.json"
        if not history.is_file():
            raise StudyError(f"{history} is missing (the export stopped half-way): "
                             f"`tinyphi3 train {recipes[run].source} --resume` exports again")
        h = json.loads(history.read_text())
        runs.append({"run": run, "steps": h["step"], "tokens": h["tokens"],
                     "seconds": h["seconds"]})
    return {"model": arm, "group": group, "n": n, "runs": runs, "measures": measures,
            "machine": this_machine()}


def evaluate_command(run, n=N_ITEMS, out=None, arm=None, results=RESULTS):
    """`evaluate RUN`: the measures of RUN/final, written to RUN/eval.json (or --out); with
    `--arm NAME`, also kept in docs/data_recipe_runs/NAME.json with its runs' steps and times."""
    from tinyphi3 import Phi3, load_tokenizer
    from tinyphi3.errors import TinyPhi3Error
    final = Path(run) / "final"
    if not (final / "config.json").is_file():
        raise StudyError(f"{run}: no finished model there (no final/config.json); train it first")
    if n < 2:
        raise StudyError(f"--n must be at least 2 (a standard error needs two items), got {n}")
    if arm is not None:
        arm_named(arm)                            # a wrong name fails before the evaluation
    out = Path(out or Path(run) / "eval.json")
    if not out.parent.is_dir():
        raise StudyError(f"--out {out}: the directory {out.parent} does not exist")
    try:
        model, tokenizer = Phi3.from_pretrained(final), load_tokenizer(final)
        scores = evaluate_model(model, tokenizer, n, log=lambda text: say(f"{run}: {text}"))
    except TinyPhi3Error as e:
        raise StudyError(f"{final}: {e}") from None
    writes = [(out, {"model": str(final), "n": n, "measures": scores})]
    if arm is not None:
        Path(results).mkdir(parents=True, exist_ok=True)
        writes.append((Path(results) / f"{arm}.json", arm_record(arm, scores, n)))
    for path, content in writes:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(content, indent=1) + "\n")
        os.replace(tmp, path)
        say(f"wrote {path}")


# ---- comparing: differences in standard errors, and the token multiple ------------------------

def compare(a, b, higher_is_better=True):
    """(a - b, its standard error √(se_a² + se_b²), z): z in standard errors, positive when a is
    the better one whichever way the measure points. The errors are added as if independent;
    the two models answer the same items, so this is the larger, more cautious error."""
    diff, se = a["value"] - b["value"], math.hypot(a["se"], b["se"])
    sign = 1.0 if higher_is_better else -1.0
    z = 0.0 if diff == 0 else sign * diff / se if se > 0 else sign * math.copysign(math.inf, diff)
    return diff, se, z


def at_chance(score, chance) -> bool:
    """Within two standard errors of what guessing scores (never, for a perplexity)."""
    return chance is not None and abs(score["value"] - chance) <= 2 * score["se"]


def verdict(z, first="the recipe", second="raw web", both_at_chance=False) -> str:
    if both_at_chance:
        return "both at chance: this measure cannot tell them apart"
    if z >= 2:
        return f"{first} is ahead by {z:.1f} standard errors"
    if z <= -2:
        return f"{second} is ahead by {-z:.1f} standard errors"
    return f"no clear difference ({z:+.1f} standard errors)"


def matching_tokens(tokens, scores, target, higher_is_better=True):
    """The fewest tokens at which a curve reaches `target`: its points (ln t_i, s_i) joined by
    straight lines (interpolation in log tokens), at the first crossing
        ln t = ln t_i + (target - s_i) / (s_(i+1) - s_i) (ln t_(i+1) - ln t_i);
    its first point's tokens if it starts there already, None if it never gets there."""
    sign = 1.0 if higher_is_better else -1.0
    points = sorted(zip(tokens, scores))
    if sign * points[0][1] >= sign * target:
        return float(points[0][0])
    for (t0, s0), (t1, s1) in zip(points, points[1:]):
        if sign * s1 >= sign * target:
            x = math.log(t0) + (target - s0) / (s1 - s0) * (math.log(t1) - math.log(t0))
            return float(math.exp(x))
    return None


def describe_multiple(multiple, reach, limit=3.0) -> str:
    """How many times the tokens raw web needs to match the recipe: `multiple` from
    matching_tokens / the recipe's tokens (None: never), `reach` the most the runs can show
    (the largest raw-web budget / the recipe's)."""
    if multiple is None or multiple > limit:
        return (f"not within {limit:g}x" if multiple is not None or reach >= limit else
                f"not within {reach:.1f}x (the largest run)")
    return f"{multiple:.1f}x" if multiple > 1 else "1x or less (raw web level or ahead)"


# ---- the report: one picture per measure, the table, the verdicts ------------------------------

def millions(tokens) -> str:
    return f"{tokens / 1e6:.1f} M" if tokens >= 1e5 else f"{tokens:,.0f}"


def shown(measure, score) -> str:
    """'41.5 ± 3.4' (accuracy in %) or '2.31 ± 0.04' (perplexity, ± perplexity x SE of ln)."""
    v, se = score["value"], score["se"]
    if measure.chance is not None:
        return f"{100 * v:.1f} ± {100 * se:.1f}"
    return f"{math.exp(v):.2f} ± {math.exp(v) * se:.2f}"


def shown_difference(measure, diff) -> str:
    if measure.chance is not None:
        return f"{100 * diff:+.1f} points"
    return f"{diff:+.3f} nats/token (perplexity x{math.exp(diff):.2f})"


def error_bar_path(xs, ys, lows, highs):
    """One polyline through the points that also runs down and up each point's error bar,
    (x0, y0) (x0, lo0) (x0, hi0) (x0, y0) (x1, y1) (x1, lo1) ...: line_plot
    (tinyphi3.pictures.charts) draws it as a curve with a bar at every point."""
    path = [p for x, y, lo, hi in zip(xs, ys, lows, highs)
            for p in ((x, y), (x, lo), (x, hi), (x, y))]
    return [x for x, _ in path], [y for _, y in path]


def draw_measure(measure, points, directory) -> Path:
    """Score against training tokens (log scale): recipe and raw web as curves, the ablations as
    points (a little to the right of their budget), each with ±1 standard error."""
    from tinyphi3.pictures.charts import line_plot
    percent = measure.chance is not None
    base = min(p["tokens"] for p in points.values())

    def y(v):
        return 100 * v if percent else math.exp(v)
    series = {}
    for group, shift in (("recipe", 0.0), ("baseline", 0.0), ("no textbooks", 0.08),
                         ("no filter", 0.16)):
        mine = sorted((p for p in points.values() if p["group"] == group),
                      key=lambda p: p["tokens"])
        if mine:
            scores = [p["measures"][measure.key] for p in mine]
            label = LABELS[group] if shift == 0 else f"{group} ({millions(mine[0]['tokens'])})"
            series[label] = error_bar_path(
                [math.log2(p["tokens"] / base) + shift for p in mine],
                [y(s["value"]) for s in scores], [y(s["value"] - s["se"]) for s in scores],
                [y(s["value"] + s["se"]) for s in scores])
    last = max(math.log2(p["tokens"] / base) for p in points.values())
    ticks = [millions(base * 2 ** k) for k in range(int(last + 1e-9) + 1)]
    return line_plot(str(Path(directory) / f"data_recipe_{measure.key}.png"), series,
                     f"{measure.title}, bars: ±1 standard error",
                     "training tokens (log scale; ablations drawn a little right of theirs)",
                     "% right" if percent else "perplexity", log_y=not percent,
                     hlines={"chance": 100 * measure.chance} if measure.chance else None,
                     legend="upper left" if measure.higher_is_better else "upper right",
                     xticks=ticks)


def multiples_table(points) -> list:
    """Markdown rows: per measure, the multiple of the recipe's tokens raw web needs to match it,
    at each recipe budget below the largest raw-web run."""
    base = sorted((p for p in points.values() if p["group"] == "baseline"),
                  key=lambda p: p["tokens"])
    recipe = sorted((p for p in points.values() if p["group"] == "recipe"
                     and base and p["tokens"] < base[-1]["tokens"]), key=lambda p: p["tokens"])
    if len(base) < 2 or not recipe:
        return ["(needs two or more raw-web runs, and a recipe run below the largest)"]
    rows = ["| measure | " + " | ".join(f"recipe at {millions(p['tokens'])}" for p in recipe)
            + " |", "|---" * (len(recipe) + 1) + "|"]
    for m in MEASURES:
        cells = []
        for p in recipe:
            if at_chance(p["measures"][m.key], m.chance):
                cells.append("recipe at chance")
                continue
            reached = matching_tokens([b["tokens"] for b in base],
                                      [b["measures"][m.key]["value"] for b in base],
                                      p["measures"][m.key]["value"], m.higher_is_better)
            cells.append(describe_multiple(None if reached is None else reached / p["tokens"],
                                           base[-1]["tokens"] / p["tokens"]))
        rows.append(f"| {m.title} | " + " | ".join(cells) + " |")
    return rows


def paragraph(text, indent="") -> list:
    """Lines of at most 100 characters, then a blank one (none after a list item)."""
    import textwrap
    return textwrap.wrap(text, 100, subsequent_indent=indent) + ([] if indent else [""])


def machines(points) -> str:
    """The machines the models were trained on, as their records say (this one where unsaid)."""
    return "; ".join(sorted({p.get("machine") or this_machine() for p in points.values()}))


def report_markdown(points, runs, pictures) -> str:
    """The results as Markdown: the table, the verdicts at the largest budget both have, the
    token multiples, the ablations, the runs' wall times, the pictures."""
    order = sorted(points, key=lambda a: (list(LABELS).index(points[a]["group"]),
                                          points[a]["tokens"]))
    lines = ["## Results: the data recipe against raw web at equal compute", ""] + paragraph(
        "Held-out measures of each model, mean ± one standard error: accuracy in % (fact recall "
        "and the multiple-choice tasks: 25% by chance), perplexity as the exp of the "
        "cross-entropy (lower is better).")
    lines += ["| model | tokens | " + " | ".join(m.column for m in MEASURES) + " |",
              "|---|---:" + "|---:" * len(MEASURES) + "|"]
    for a in order:
        p = points[a]
        lines.append(f"| {LABELS[p['group']]} | {millions(p['tokens'])} | " + " | ".join(
            shown(m, p["measures"][m.key]) for m in MEASURES) + " |")
    lines += [""]
    both = [b for b in ("14m", "6m", "2m") if f"recipe-{b}" in points and f"baseline-{b}" in points]
    if both:
        r, w = points[f"recipe-{both[0]}"], points[f"baseline-{both[0]}"]
        lines += paragraph(f"**Verdicts at {millions(r['tokens'])} tokens**, recipe minus raw "
                           "web; z is the difference in its standard errors, positive when the "
                           "recipe is better (|z| >= 2: a clear difference):")
        for m in MEASURES:
            a, b = r["measures"][m.key], w["measures"][m.key]
            diff, _, z = compare(a, b, m.higher_is_better)
            lines += paragraph(f"- {m.title}: {shown_difference(m, diff)}, z = {z:+.1f}: "
                               + verdict(z, both_at_chance=at_chance(a, m.chance)
                                         and at_chance(b, m.chance)), indent="  ")
        lines += [""]
    lines += paragraph(
        "**Where raw web matches the recipe**: the tokens raw web needs to score what the recipe "
        "scores at a budget, as a multiple of the recipe's tokens. The raw-web runs' points are "
        "joined by straight lines in log tokens and the first crossing of the recipe's score is "
        "read off (`matching_tokens`): 'not within 3x' when raw web does not get there by three "
        "times the recipe's tokens, 'not within Nx (the largest run)' when its runs stop before "
        "3x. The multiple is read off the means; their standard errors are not carried into it.")
    lines += multiples_table(points) + [""]
    full = {p["tokens"]: p for p in points.values() if p["group"] == "recipe"}
    ablations = [a for a in order if points[a]["group"] in ("no textbooks", "no filter")
                 and points[a]["tokens"] in full]
    if ablations:
        tokens = points[ablations[0]]["tokens"]
        lines += paragraph(f"**Ablations at {millions(tokens)} tokens**: each minus the full "
                           "recipe at the same tokens (nats per token for the perplexities), with "
                           "z (negative: the full recipe is better; |z| >= 2: a clear "
                           "difference).")
        lines += ["| measure | " + " | ".join(LABELS[points[a]["group"]] for a in ablations)
                  + " |", "|---" * (len(ablations) + 1) + "|"]
        for m in MEASURES:
            cells = []
            for a in ablations:
                diff, _, z = compare(points[a]["measures"][m.key],
                                     full[points[a]["tokens"]]["measures"][m.key],
                                     m.higher_is_better)
                cells.append(f"{shown_difference(m, diff).split(' (')[0]}, z = {z:+.1f}")
            lines.append(f"| {m.title} | " + " | ".join(cells) + " |")
        lines += [""]
    lines += ["| run | steps | tokens | minutes in steps |", "|---|---:|---:|---:|"]
    lines += [f"| {run} | {steps:,} | {tokens:,} | {seconds / 60:.0f} |"
              for run, steps, tokens, seconds in runs]
    lines += [""] + paragraph(
        f"Minutes in steps: the training steps' own time (history.json; not the start, held-out "
        f"loss or checkpoints), two runs at a time, on {machines(points)}; each command's wall "
        f"time is in its log (runs/recipe-study/logs).")
    lines += [f"![{m.title}]({picture})" for m, picture in zip(MEASURES, pictures)]
    return "\n".join(lines) + "\n"


def report(configs=CONFIGS, out=None, pictures="docs", workers=2, every=60.0, results=RESULTS):
    """Evaluate the finished runs not yet evaluated, draw the pictures from the models kept in
    docs/data_recipe_runs, return the Markdown."""
    jobs = plan_jobs(configs, results)
    if out is not None and not Path(out).parent.is_dir():
        raise StudyError(f"--out {out}: the directory {Path(out).parent} does not exist")
    if not Path(pictures).is_dir():
        raise StudyError(f"--pictures {pictures}: no such directory")
    by_name = {job.name: job for job in jobs}
    missing = [job for job in jobs if job.name.startswith("evaluate ")
               and all(by_name[n].done() for n in job.needs)]
    for job in missing:
        job.needs = []
    failed = run_jobs(missing, workers, every) if missing else []
    if failed:
        raise StudyError(f"could not evaluate {', '.join(failed)}: see runs/recipe-study/logs")
    kept = recorded_arms(results)
    if not kept:
        raise StudyError(f"no model evaluated yet (nothing in {results}): run `python "
                         "benchmarks/data_recipe.py study --run` first")
    points, runs = {}, {}
    for name in kept:
        record = json.loads((Path(results) / f"{name}.json").read_text())
        for r in record["runs"]:                  # a shared phase 1 is listed once
            runs[r["run"]] = (r["run"], r["steps"], r["tokens"], r["seconds"])
        points[name] = {"group": record["group"],
                        "tokens": sum(r["tokens"] for r in record["runs"]),
                        "seconds": sum(r["seconds"] for r in record["runs"]),
                        "measures": record["measures"], "machine": record.get("machine")}
    drawn = [draw_measure(m, points, pictures) for m in MEASURES]
    here = Path(out).parent if out else Path(pictures)
    return report_markdown(points, list(runs.values()),
                           [os.path.relpath(p, here) for p in drawn])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    study = commands.add_parser("study", help="print or run every command of the study")
    mode = study.add_mutually_exclusive_group(required=True)
    mode.add_argument("--plan", action="store_true", help="print the commands, with times")
    mode.add_argument("--run", action="store_true", help="run what is not done yet")
    evaluate = commands.add_parser("evaluate", help="the measures of one finished run")
    evaluate.add_argument("run", help="a run directory with final/ (runs/recipe-study/...)")
    evaluate.add_argument("--n", type=int, default=N_ITEMS, help="held-out items per measure")
    evaluate.add_argument("--out", help="JSON file to write (default: RUN/eval.json)")
    evaluate.add_argument("--arm", help="the study's name of the model (recipe-14m, ...): keep "
                          "its measures and runs in docs/data_recipe_runs/ARM.json")
    results = commands.add_parser("report", help="evaluate, draw, and print the results")
    results.add_argument("--out", help="write the Markdown here instead of printing it")
    results.add_argument("--pictures", default=str(ROOT / "docs"), help="where the PNGs go")
    for command in (study, results):
        command.add_argument("--configs", default=str(CONFIGS), help="the runs' TOML files")
        command.add_argument("--workers", type=int, default=2, help="commands at a time")
        command.add_argument("--every", type=float, default=60.0,
                             help="seconds between progress lines")
    study.add_argument("--arms", help="only these models, comma-separated (recipe-2m,baseline-2m,"
                       "...): what they need is planned or run, the rest waits for a later sitting")
    args = parser.parse_args(argv)
    arms = ([a.strip() for a in args.arms.split(",") if a.strip()]
            if getattr(args, "arms", None) else None)
    try:
        if args.command == "evaluate":
            evaluate_command(args.run, args.n, args.out, args.arm)
        elif args.workers < 1:
            raise StudyError(f"--workers must be at least 1, got {args.workers}")
        elif args.command == "study" and args.plan:
            print_plan(plan_jobs(args.configs, arms=arms), args.workers, recorded_arms())
        elif args.command == "study":
            failed = run_jobs(plan_jobs(args.configs, arms=arms), args.workers, args.every)
            if failed:
                raise StudyError(f"{len(failed)} command(s) did not finish: {', '.join(failed)}")
            say("the study is complete: python benchmarks/data_recipe.py report --out FILE")
        else:
            text = report(args.configs, args.out, args.pictures, args.workers, args.every)
            if args.out:
                Path(args.out).write_text(text)
                print(f"wrote {args.out}")
            else:
                print(text, end="")
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
