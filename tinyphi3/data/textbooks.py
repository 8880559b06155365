"""Synthetic "textbook-quality" documents that teach the closed world (`tinyphi3.data.world`).

The Phi-3 report (§2) follows "Textbooks Are All You Need": besides filtered web text, phase 2 of
pre-training uses synthetic data "that teach the model logical reasoning and various niche
skills". Here the synthetic data are short lessons:

  knowledge  profiles of a few creatures, a visit to a place and its residents, a chapter on one
             attribute (jobs, favourite foods, ...), quizzes; every fact of the world comes back
             again and again, in several phrasings, in both directions (creature -> place and
             place -> creatures), because a small model learns a fact only from many variations;
  skills     explanations of the column method, worked examples, word problems with the chain of
             thought that the evaluation expects, exercises with answers; comparisons, units,
             logic and counting with worked solutions;
  format     review questions in the report's few-shot format (Question: / Options: / Answer:),
             so that the format of the evaluation is learnable.

Every problem comes from the train split of the world (`world.held_out` is false for its key), so
no evaluation item ever appears here; `tests/test_world_and_textbooks.py` checks it on a large
sample. Documents are 100-400 words; `generate_textbooks(n, seed)` is deterministic, and its first
k documents do not depend on n.
"""

from typing import Iterator

import numpy as np

from tinyphi3.data import world
from tinyphi3.data.world import one_of
from tinyphi3.data.world import (ATTRIBUTES, ENTITIES, KINDS, PLACE_DESCRIPTIONS, PLACES, listing,
                                 capitalize, fact_sentence, fields)
from tinyphi3.data.tasks import item_from_problem, render

# Continuation sentences that refer to the creature by pronoun ({P} 'She', {Pos} 'Her').
PRONOUN_TEMPLATES = {
    "home": ("{P} lives in {home}.", "{P} has made {pos} home in {home}."),
    "colour": ("{Pos_} favourite colour is {colour}.", "{P} likes the colour {colour} best."),
    "food": ("{Pos_} favourite food is {food}.", "{P} likes to eat {food} more than anything."),
    "job": ("{P} works as {a_job}.", "By trade {p} is {a_job}."),
}


class _Cycle:
    """Hands out items in shuffled rounds, so that every item comes up equally often."""

    def __init__(self, items, rng):
        self.items, self.rng, self.queue = list(items), rng, []

    def take(self, k=1):
        out = []
        while len(out) < k:
            if not self.queue:
                self.queue = [self.items[int(i)] for i in self.rng.permutation(len(self.items))]
            item = self.queue.pop()
            if item not in out:
                out.append(item)
        return out


def _facts_paragraph(entity, attributes, rng):
    """Sentences stating the given facts of one creature, the first naming it in full, the others
    by name or pronoun, each in a random phrasing."""
    values = fields(entity)
    values["Pos_"] = capitalize(values["pos"])
    sentences = []
    for i, attribute in enumerate(attributes):
        if i > 0 and attribute in PRONOUN_TEMPLATES and rng.random() < 0.3:
            sentences.append(one_of(rng, PRONOUN_TEMPLATES[attribute]).format(**values))
        else:
            full_name = i == 0 and rng.random() < 0.6
            sentences.append(fact_sentence(entity, attribute, rng, full_name))
    return " ".join(sentences)


def _review(rng, problems, task_names, heading=True):
    """Solved questions in the evaluation's format (Appendix A of the report)."""
    intro = one_of(rng, ("Review questions:", "Check yourself:", "Let us see what you remember.",
                       "Questions to practise:")) + "\n" if heading else ""
    return intro + "".join(render(item_from_problem(t, p, rng))
                           for p, t in zip(problems, task_names))


def _fact_problems(rng, entities, k):
    """Up to k questions about different train facts of these creatures."""
    problems = []
    for _ in range(20 * k):
        entity, attribute = one_of(rng, entities), one_of(rng, ATTRIBUTES)
        key = ("fact", entity.name, attribute)
        if world.in_split(key, "train") and key not in {p.key for p in problems}:
            problems.append(world.knowledge_problem(rng, "train", entity, attribute))
        if len(problems) == k:
            break
    return problems


def _fact_review(rng, entities, k, heading=True):
    problems = _fact_problems(rng, entities, k)
    return _review(rng, problems, ["knowledge"] * len(problems), heading)


# ---- knowledge ---------------------------------------------------------------------------------

def _profiles(rng, plan):
    entities = plan["entities"].take(int(rng.integers(3, 5)))
    title = one_of(rng, ("Meet {names}", "Who is who in the land: {names}",
                       "Some neighbours: {names}", "Getting to know {names}"))
    intro = one_of(rng, (
        "In this lesson we meet {n} creatures of the land. Read about each one carefully.",
        "Here are {n} creatures you may meet on a walk. Each has a home, a job and things it "
        "likes.",
        "Every creature in the land has a kind, a home, a favourite colour, a favourite food and a "
        "job. Let us learn them for {n} creatures."))
    parts = [title.format(names=listing([e.name for e in entities])), intro.format(n=len(entities))]
    for entity in entities:
        rest = [ATTRIBUTES[1 + int(i)] for i in rng.permutation(4)]
        parts.append(_facts_paragraph(entity, ["kind"] + rest, rng))
    if rng.random() < 0.5:
        parts.append("Remember: " + listing([fact_sentence(e, one_of(rng, ATTRIBUTES[1:]), rng)
                                              .rstrip(".") for e in entities[:2]]) + ".")
    parts.append(_fact_review(rng, entities, 2).rstrip())
    return "\n\n".join(parts)


def _place_visit(rng, plan):
    place = plan["places"].take()[0]
    residents = world.residents(place)
    chosen = [residents[int(i)] for i in rng.permutation(len(residents))[:7]]
    Place = capitalize(place)
    parts = [one_of(rng, (f"A visit to {place}", f"The creatures of {place}", f"Life in {place}")),
             f"{Place} is {PLACE_DESCRIPTIONS[place]}. " + one_of(rng, (
                 "Many creatures have their homes here.", "Quite a few creatures live here.",
                 "It is home to many creatures."))]
    lines = []
    for e in chosen:
        extra = fact_sentence(e, one_of(rng, ("colour", "food", "job")), rng)
        lines.append(one_of(rng, (f"{e.title} lives in {place}. {extra}",
                                f"{e.name} is {KINDS[e.kind].article} {e.kind} "
                                f"who lives here. {extra}",
                                f"{e.title} also calls {place} home. {extra}")))
    parts.append(" ".join(lines))
    parts.append(f"So if you visit {place}, you may meet "
                 f"{listing([e.name for e in chosen])}. All of them live in {place}.")
    parts.append(_fact_review(rng, chosen, 2).rstrip())
    return "\n\n".join(parts)


ATTRIBUTE_CHAPTERS = {
    "kind": ("Animals and their legs", "Every creature of the land is an animal of some kind, and "
             "the kind tells you how many legs it has."),
    "colour": ("Favourite colours", "Everyone has a favourite colour. Here are the favourite "
               "colours of some creatures of the land."),
    "food": ("What the creatures like to eat", "Creatures do not all like the same food. Here is "
             "the favourite food of some of them."),
    "job": ("Jobs in the land", "Every creature of the land has a job. Here is the work some of "
            "them do every day."),
}


def _attribute_chapter(rng, plan):
    attribute = one_of(rng, tuple(ATTRIBUTE_CHAPTERS))
    title, intro = ATTRIBUTE_CHAPTERS[attribute]
    entities = plan["entities"].take(7)
    parts = [title, intro]
    if attribute == "kind":
        kinds = sorted({e.kind for e in entities})
        parts.append(" ".join(f"{capitalize(KINDS[k].article)} {k} has {KINDS[k].legs} legs."
                              for k in kinds))
    parts.append(" ".join(fact_sentence(e, attribute, rng, full_name=attribute != "kind")
                          for e in entities))
    groups = {}
    for e in entities:
        groups.setdefault(e.value(attribute), []).append(e.name)
    shared = [(v, names) for v, names in groups.items() if len(names) > 1]
    if shared and attribute != "kind":
        value, names = shared[0]
        together = "both" if len(names) == 2 else "all"
        what = {"colour": f"{together} like {value} best", "food": f"{together} love {value} most",
                "job": f"are {together} {value}s"}
        parts.append(f"Notice that {listing(names)} {what[attribute]}.")
    parts.append(_fact_review(rng, entities, 2).rstrip())
    return "\n\n".join(parts)


def _knowledge_quiz(rng, plan):
    entities = plan["entities"].take(5)
    problems = _fact_problems(rng, entities, 5)
    parts = [one_of(rng, ("Quiz: how well do you know the land?",
                        "A short quiz about the creatures", "Test your knowledge")),
             "Choose the right option for each question. The answers are given after each one.",
             _review(rng, problems, ["knowledge"] * len(problems), heading=False).rstrip(),
             "The facts behind the questions: " + " ".join(
                 fact_sentence(world.ENTITY_BY_NAME[p.key[1]], p.key[2], rng) for p in problems)]
    return "\n\n".join(parts)


# ---- arithmetic --------------------------------------------------------------------------------

ARITHMETIC_LESSONS = {
    "+": ("Adding two-digit numbers", (
        "To add two numbers with two digits, write them one under the other and add the ones "
        "first. If the ones make 10 or more, write down only the ones digit and carry 1 to the "
        "tens. Then add the tens, and do not forget the carry.",
        "Adding in columns is easy if you go one step at a time. Start with the ones. When the "
        "ones add up to 10 or more, keep the ones digit and carry 1 ten over to the tens column. "
        "Then add the tens together with the carry.")),
    "-": ("Subtracting two-digit numbers", (
        "To take away one two-digit number from another, start with the ones. If the top ones "
        "digit is too small, borrow 1 ten: the ones digit grows by 10 and the tens digit shrinks "
        "by 1. Then take away the tens.",
        "Subtraction also works column by column, starting with the ones. When you cannot take "
        "the ones away because the top digit is smaller, borrow a ten from the tens column. "
        "Remember to take that 1 away from the tens.")),
    "x": ("Multiplying by one digit", (
        "To multiply a two-digit number by a one-digit number, multiply the ones first. Write the "
        "ones digit of the result and carry the tens. Then multiply the tens and add the carry.",
        "Multiplying 23 by 4 is the same as adding 23 four times, but the column method is "
        "faster: multiply the ones, carry what does not fit, then multiply the tens and add the "
        "carry.")),
}


def _arithmetic_lesson(rng, plan):
    op = one_of(rng, ("+", "-", "x"))
    title, intros = ARITHMETIC_LESSONS[op]
    parts = [title, one_of(rng, intros)]
    if op == "x":
        n = int(rng.integers(2, 10))
        parts.append(f"First, the {n} times table: "
                     + ", ".join(f"{i} x {n} = {i * n}" for i in range(1, 10)) + ".")
    worked = [world.arithmetic_problem(rng, "train", op) for _ in range(2)]
    equation, steps = worked[0].solution.split(": ", 1)
    parts.append(f"Worked example: let us work out {equation}. {capitalize(steps)}")
    parts.append(one_of(rng, ("Now a word problem.",
                              "The same method solves word problems.")) + "\n"
                 + render(item_from_problem("arithmetic", worked[1], rng)).rstrip())
    exercises = [world.arithmetic_problem(rng, "train", op) for _ in range(4)]
    equations = [p.solution.split(":")[0] for p in exercises]
    parts.append("Exercises: " + " ".join(f"({chr(97 + i)}) {q} = ?"
                                          for i, q in enumerate(equations)))
    parts.append("Answers: " + " ".join(f"({chr(97 + i)}) {q} = {p.answer}."
                                        for i, (q, p) in enumerate(zip(equations, exercises))))
    return "\n\n".join(parts)


def _word_problems(rng, plan):
    k = int(rng.integers(3, 6))
    problems = [world.arithmetic_problem(rng, "train") for _ in range(k)]
    intro = one_of(rng, ("Practice: word problems. Work out each one step by step, "
                         "then give the answer.",
                       "Word problems. For each question, write the calculation in columns and say "
                       "the answer at the end.",
                       "Here are some solved word problems. Read how each one is worked out."))
    return intro + "\n\n" + _review(rng, problems, ["arithmetic"] * k, heading=False).rstrip()


# ---- reasoning ---------------------------------------------------------------------------------

REASONING_LESSONS = {
    "Comparing numbers": (("extreme_number", "extreme_measure"), (
        "To compare two-digit numbers, look at the tens first: the number with more tens is "
        "bigger. If the tens are the same, the ones decide. To find the biggest of several "
        "numbers, put them in order.",
        "When we compare, we put things in order. The biggest, the tallest or the oldest is at one "
        "end of the line, and the smallest, the shortest or the youngest is at the other end.")),
    "Units of measure": (("convert", "compare_units"), (
        "1 metre is 100 centimetres. 1 hour is 60 minutes. 1 kilogram is 1000 grams. To compare "
        "amounts written in different units, write them all in the same unit first.",
        "Lengths are measured in metres and centimetres, time in hours and minutes, and weight in "
        "kilograms and grams. There are 100 centimetres in a metre, 60 minutes in an hour and 1000 "
        "grams in a kilogram.")),
    "Thinking in steps": (("order", "if_then", "quantifier"), (
        "Some questions need careful thinking. If A is taller than B and B is taller than C, then "
        "A is taller than C. If a rule says what happens when it rains, and it rains, the rule "
        "tells us what happens. If all otters can swim and Veska is an otter, Veska can swim; but "
        "if only some otters can swim, we cannot be sure.",
        "Logic helps us find answers that nobody told us directly. We chain facts together: put "
        "creatures in a line, follow if-then rules, and remember that 'all' is sure while 'some' "
        "is not.")),
    "Counting": (("count",), (
        "To count things of one kind in a mixed group, go through the group one by one and count "
        "only the things you are looking for.",
        "Counting carefully means looking at each thing once. Point at each one, and say the next "
        "number only when it is the kind you are counting.")),
}


def _reasoning_lesson(rng, plan):
    title = one_of(rng, tuple(REASONING_LESSONS))
    kinds, intros = REASONING_LESSONS[title]
    parts = [title, one_of(rng, intros)]
    for i in range(2):
        p = world.reasoning_problem(rng, "train", one_of(rng, kinds))
        parts.append(f"Example {i + 1}. {p.question}\n"
                     f"Solution: {p.solution} The answer is {p.answer}.")
    problems = [world.reasoning_problem(rng, "train", one_of(rng, kinds)) for _ in range(2)]
    parts.append(_review(rng, problems, ["reasoning"] * 2).rstrip())
    return "\n\n".join(parts)


def _mixed_review(rng, plan):
    entities = plan["entities"].take(3)
    parts = [one_of(rng, ("Mixed review", "Revision questions", "Practice test")),
             "Each question has four options, and only one is right."]
    review = _fact_review(rng, entities, 3, heading=False)
    problems = [world.reasoning_problem(rng, "train") for _ in range(2)]
    parts.append((review + _review(rng, problems, ["reasoning"] * 2, heading=False)).rstrip())
    return "\n\n".join(parts)


WRITERS = {"profiles": (_profiles, 0.22), "place": (_place_visit, 0.10),
           "attribute": (_attribute_chapter, 0.10), "quiz": (_knowledge_quiz, 0.08),
           "arithmetic": (_arithmetic_lesson, 0.18), "word_problems": (_word_problems, 0.10),
           "reasoning": (_reasoning_lesson, 0.16), "mixed": (_mixed_review, 0.06)}


def generate_textbooks(n_docs: int, seed: int = 0) -> Iterator[str]:
    """Yield n_docs synthetic textbook documents (100-400 words each), deterministic for a seed.

    Creatures come up in shuffled rounds (every creature once before any twice), so every fact
    of the world appears in a sample of a few hundred documents, and many times in a few thousand.
    """
    rng = np.random.default_rng(world.stable_hash("textbooks", seed))
    plan = {"entities": _Cycle(ENTITIES, rng), "places": _Cycle(PLACES, rng)}
    names = list(WRITERS)
    weights = np.array([WRITERS[n][1] for n in names])
    for _ in range(n_docs):
        writer = WRITERS[names[int(rng.choice(len(names), p=weights / weights.sum()))]][0]
        yield writer(rng, plan)
