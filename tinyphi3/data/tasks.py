"""The evaluation tasks: held-out problems of the closed world, as items in the report's format.

    knowledge   4-option questions about the creatures' facts (the role of MMLU / TriviaQA)
    reasoning   4-option comparisons, units, logic and counting (ARC / BigBench-Hard)
    arithmetic  two-digit word problems with a chain of thought, exact match (GSM-8K)

An item is rendered exactly like the report's example prompt (Appendix A):

    Question:
    Where does Veska live?
    Options:
    A. the Pine Hills
    B. the Copper Caves
    C. Frost Peak
    D. Willow Creek
    Answer: B

and an arithmetic item as "Question:\\n<story>\\nAnswer: <chain of thought> The answer is 75.".

Held out: the test split holds the problems whose key `tinyphi3.data.world.held_out` reserves
(a fact question's (creature, attribute), a calculation's operand pair, a reasoning problem's
content); the training text (`tinyphi3.data.textbooks`) only uses train keys. The facts behind
the test questions are taught in training; the questions themselves never appear there.
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np

from tinyphi3.data import world
from tinyphi3.errors import TinyPhi3Error

LETTERS = "ABCD"


class UnknownTaskError(TinyPhi3Error, ValueError):
    """A task name that is not in TASKS."""


@dataclass(frozen=True)
class Item:
    """One evaluation item. Multiple choice: `answer` is the right letter. Arithmetic: `answer` is
    the number and `options` is ()."""
    task: str
    question: str
    options: tuple
    answer: str
    solution: str        # what follows "Answer:" when solved: the letter, or the chain of thought
    key: tuple

    @property
    def is_choice(self) -> bool:
        return bool(self.options)


@dataclass(frozen=True)
class Task:
    name: str
    description: str
    metric: str                  # "choice" (log-likelihood of the letters) or "exact_match"
    default_shots: int
    chance: float
    draw: Callable               # (rng, split) -> world.Problem


TASKS = {
    "knowledge": Task("knowledge", "4-option questions about the world's facts (like MMLU)",
                      "choice", 5, 0.25, world.knowledge_problem),
    "reasoning": Task("reasoning", "4-option comparisons, units, logic and counting (like ARC)",
                      "choice", 5, 0.25, world.reasoning_problem),
    "arithmetic": Task("arithmetic", "two-digit word problems, chain of thought (like GSM-8K)",
                       "exact_match", 8, 0.0, world.arithmetic_problem),
}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UnknownTaskError(f"unknown task {name!r}: "
                               f"choose one of {', '.join(TASKS)} (or 'all')")
    return TASKS[name]


def item_from_problem(task: str, problem, rng) -> Item:
    """Shuffle a multiple-choice problem's options into A-D (or keep an open answer as it is)."""
    if not problem.distractors:
        return Item(task, problem.question, (), problem.answer, problem.solution, problem.key)
    options = [problem.answer, *problem.distractors]
    options = [options[int(i)] for i in rng.permutation(len(options))]
    letter = LETTERS[options.index(problem.answer)]
    return Item(task, problem.question, tuple(options), letter, letter, problem.key)


def render(item: Item, solved: bool = True) -> str:
    """The item in the report's format; unsolved it ends with 'Answer:' for the model to go on."""
    lines = ["Question:", item.question]
    if item.options:
        lines += ["Options:"] + [f"{letter}. {option}"
                                 for letter, option in zip(LETTERS, item.options)]
    if not solved:
        return "\n".join(lines + ["Answer:"])
    return "\n".join(lines + [f"Answer: {item.solution}"]) + "\n"


def render_cloze(item: Item, solved: bool = True) -> str:
    """The item in the cloze formulation: the question alone, no options; solved, the answer is
    the right option's text ('Answer: the Copper Caves')."""
    text = f"Question:\n{item.question}\nAnswer:"
    return f"{text} {item.options[LETTERS.index(item.answer)]}\n" if solved else text


def sample_item(name: str, split: str, rng) -> Item:
    """One random item of a task from a split (what the training text and few-shot examples use)."""
    return item_from_problem(name, get_task(name).draw(rng, split), rng)


def task_items(name: str, split: str = "test", n: int = 200, seed: int = 0) -> list:
    """n distinct items (by question) of a task, the same for the same arguments.

    knowledge: every fact question of the split once (in a random phrasing) before any again in
    another phrasing; the test split holds ~214 fact questions in 3 phrasings each, so at most
    ~640 items. Other tasks sample fresh problems (fewer than n only if the pool runs out)."""
    task = get_task(name)
    rng = np.random.default_rng(world.stable_hash("items", name, split, seed))
    if name == "knowledge":
        problems = _knowledge_problems(split, rng)
    else:
        problems = (task.draw(rng, split) for _ in range(50 * n))
    items, seen = [], set()
    for problem in problems:
        if problem.question not in seen:
            seen.add(problem.question)
            items.append(item_from_problem(name, problem, rng))
            if len(items) == n:
                break
    return items


def _knowledge_problems(split, rng):
    facts = [(e, a) for e in world.ENTITIES for a in world.ATTRIBUTES
             if world.in_split(("fact", e.name, a), split)]
    for _ in range(10):                                      # rounds: each fact once per round
        for i in rng.permutation(len(facts)):
            yield world.knowledge_problem(rng, split, *facts[int(i)])


def few_shot_items(name: str, k: int, rng, exclude: str = "") -> list:
    """k solved examples from the train split, distinct and different from the question asked."""
    shots, seen = [], {exclude}
    while len(shots) < k:
        item = sample_item(name, "train", rng)
        if item.question not in seen:
            seen.add(item.question)
            shots.append(item)
    return shots


def held_out_questions(name: str, n: int = 1000, seed: int = 0) -> list:
    """Question strings of the test split (knowledge: every phrasing of every held-out fact)."""
    if name == "knowledge":
        rng = np.random.default_rng(seed)
        return [p.question for e in world.ENTITIES for a in world.ATTRIBUTES
                if world.held_out(("fact", e.name, a)) for p in world.fact_questions(e, a, rng)]
    return [item.question for item in task_items(name, "test", n, seed)]
