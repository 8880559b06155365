"""The closed world and its textbooks: a consistent world, correct worked solutions, every fact
taught many times in several phrasings, and no held-out evaluation item anywhere in the text."""

import re
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tinyphi3.data import world
from tinyphi3.data.textbooks import generate_textbooks
from tinyphi3.data.tasks import TASKS, held_out_questions, task_items

N_DOCS = 10_000


@pytest.fixture(scope="module")
def sample_text():
    return "\n\n".join(generate_textbooks(N_DOCS, seed=0))


# ---- the world -----------------------------------------------------------------------------------

def test_world_is_fixed_and_consistent():
    assert world._make_entities() == world.ENTITIES                  # no randomness at import
    names = [e.name for e in world.ENTITIES]
    assert len(names) == len(set(names)) == world.N_ENTITIES
    assert not [(a, b) for a in names for b in names if a != b and b.startswith(a)], \
        "a name that begins another name would make facts ambiguous in text"
    for attribute, values in world.ATTRIBUTE_VALUES.items():
        counts = Counter(e.value(attribute) for e in world.ENTITIES)
        assert set(counts) == set(values)                            # every value is used
        assert max(counts.values()) - min(counts.values()) <= 1     # dealt out evenly
    for e in world.ENTITIES:
        sentences = world.fact_sentences(e)
        assert len(sentences) == len(world.ATTRIBUTES)
        for attribute, sentence in zip(world.ATTRIBUTES, sentences):
            assert e.name in sentence and e.value(attribute) in sentence
        assert e.legs == world.KINDS[e.kind].legs


def test_residents_partition_the_creatures():
    assert sum(len(world.residents(p)) for p in world.PLACES) == len(world.ENTITIES)


@pytest.mark.parametrize("family,percent", sorted(world.HELD_OUT_PERCENT.items()))
def test_held_out_share_is_near_its_target(family, percent):
    keys = [(family, i, "x") for i in range(20_000)]
    share = 100 * np.mean([world.held_out(k) for k in keys])
    assert abs(share - percent) < 1.5


def test_facts_held_out_are_about_a_quarter_and_every_creature_keeps_train_facts():
    held = [(e.name, a) for e in world.ENTITIES for a in world.ATTRIBUTES
            if world.held_out(("fact", e.name, a))]
    assert 0.18 < len(held) / (len(world.ENTITIES) * len(world.ATTRIBUTES)) < 0.32


# ---- problems ----------------------------------------------------------------------------------

EQUATION = re.compile(r"(\d+) ([+\-x]) (\d+)(?: ([+\-]) (\d+))? = (\d+)")


def check_equations(text):
    """Every 'a op b [op c] = d' written in a solution is true; returns how many were checked."""
    found = EQUATION.findall(text)
    for a, op, b, op2, c, result in found:
        value = {"+": int(a) + int(b), "-": int(a) - int(b), "x": int(a) * int(b)}[op]
        if op2:
            value = value + int(c) if op2 == "+" else value - int(c)
        assert value == int(result), f"wrong step {a} {op} {b} ... = {result} in {text!r}"
    return len(found)


@given(st.integers(10, 99), st.integers(10, 99))
def test_column_addition_is_right_step_by_step(a, b):
    solution = world.column_solution(a, "+", b)
    assert solution.endswith(f"The answer is {a + b}.")
    assert check_equations(solution) >= 3


@given(st.integers(10, 99), st.integers(10, 99))
def test_column_subtraction_is_right_step_by_step(a, b):
    a, b = max(a, b), min(a, b)
    solution = world.column_solution(a, "-", b)
    assert solution.endswith(f"The answer is {a - b}.")
    assert check_equations(solution) >= 3


@given(st.integers(10, 99), st.integers(2, 9))
def test_column_multiplication_is_right_step_by_step(a, b):
    solution = world.column_solution(a, "x", b)
    assert solution.endswith(f"The answer is {a * b}.")
    assert check_equations(solution) >= 3


def test_wrong_step_is_caught_by_the_equation_check():              # negative control
    with pytest.raises(AssertionError):
        check_equations("27 + 48: 7 + 8 = 15, write 5 carry 1; 2 + 4 + 1 = 8. So 27 + 48 = 85.")


def solve(problem):
    """An independent solver for the reasoning kinds, from the question text alone."""
    q = problem.question
    if problem.kind == "extreme_number":
        numbers = [int(n) for n in re.findall(r"\d+", q)]
        return str(max(numbers) if "biggest" in q else min(numbers))
    if problem.kind == "count":
        seen, target = re.match(r"\w+ sees (.*)\. How many (\w+) does", q).groups()
        kinds = [k.split()[-1] for k in re.split(r", | and ", seen)]
        plural = {k.plural: k.name for k in world.KINDS.values()}[target]
        return str(kinds.count(plural))
    if problem.kind == "order":
        bigger = []                                       # (more, less) pairs
        for a, rel, b in re.findall(r"(\w+) is (\w+) than (\w+)\.", q):
            bigger.append((a, b) if rel in {r[0] for r in world.RELATIONS} else (b, a))
        names = {n for pair in bigger for n in pair}
        top = (names - {b for _, b in bigger}).pop()
        bottom = (names - {a for a, _ in bigger}).pop()
        return top if any(f"the {r[2]}?" in q for r in world.RELATIONS) else bottom
    if problem.kind == "if_then":
        today = re.search(r"Today (.*?)\. What", q).group(1)
        return re.search(rf"If {today}, \w+ takes (.*?)\.", q).group(1)
    if problem.kind == "convert":
        small = {u[3]: u[4] for u in world.UNITS.values()}          # 'centimetres': 100
        big = {u[1]: u[4] for u in world.UNITS.values()}            # 'metres': 100
        unit = re.match(r"How many (\w+) ", q).group(1)
        numbers = [int(n) for n in re.findall(r"\d+", q)]
        if unit in small:
            return str(numbers[0] * small[unit] + sum(numbers[1:]))
        return str(numbers[0] // big[unit])
    return None


@pytest.mark.parametrize("split", world.SPLITS)
def test_problems_are_well_formed_and_right(split):
    rng = np.random.default_rng(1)
    solved = Counter()
    for _ in range(400):
        for problem in (world.reasoning_problem(rng, split), world.knowledge_problem(rng, split)):
            assert world.held_out(problem.key) == (split == "test")
            options = (problem.answer,) + problem.distractors
            assert len(options) == len(set(options)) == 4, problem
            expected = solve(problem)
            if expected is not None:
                assert problem.answer == expected, problem
                solved[problem.kind] += 1
            if problem.family == "fact":
                entity = world.ENTITY_BY_NAME[problem.key[1]]
                assert problem.answer == entity.value(problem.kind)
        p = world.arithmetic_problem(rng, split)
        assert world.held_out(p.key) == (split == "test") and not p.distractors
        assert p.solution.endswith(f"The answer is {p.answer}.") and check_equations(p.solution)
    assert set(solved) == {"extreme_number", "count", "order", "if_then", "convert"}


def test_task_splits_are_disjoint():
    for name in TASKS:
        train = {i.key for i in task_items(name, "train", 300)}
        test = {i.key for i in task_items(name, "test", 300)}
        assert train and test and not train & test


# ---- the textbooks ---------------------------------------------------------------------------------

def test_textbooks_are_deterministic_and_prefix_stable():
    first = list(generate_textbooks(30, seed=3))
    assert first == list(generate_textbooks(30, seed=3))
    assert first[:10] == list(generate_textbooks(10, seed=3))
    assert first != list(generate_textbooks(30, seed=4))


def test_documents_are_100_to_400_words():
    words = [len(doc.split()) for doc in generate_textbooks(2000, seed=1)]
    assert 100 <= min(words) and max(words) <= 400
    assert len(set(generate_textbooks(2000, seed=1))) == 2000     # no two documents alike


def fact_renderings(entity, attribute):
    return {t.format(**world.fields(entity, full)) for t in world.FACT_TEMPLATES[attribute]
            for full in (False, True)}


def test_every_fact_is_taught_many_times_in_several_phrasings():
    text = "\n".join(generate_textbooks(2000, seed=2))
    for entity in world.ENTITIES:
        for attribute in world.ATTRIBUTES:
            counts = [text.count(s) for s in fact_renderings(entity, attribute)]
            assert sum(counts) >= 3, (entity.name, attribute, counts)
            assert sum(c > 0 for c in counts) >= 2, (entity.name, attribute, counts)


def test_the_review_questions_use_the_evaluation_format(sample_text):
    blocks = re.findall(r"Question:\n(.+)\nOptions:\nA\. .+\nB\. .+\nC\. .+\nD\. .+\n"
                        r"Answer: [ABCD](?:\n|$)", sample_text)
    word_problems = re.findall(r"Question:\n(.+)\nAnswer: \d+ [+\-x] \d+: .*The answer is \d+\.",
                               sample_text)
    assert len(blocks) > 10_000 and len(word_problems) > 3_000
    assert sample_text.count("Question:\n") == len(blocks) + len(word_problems)


# ---- no held-out item in the textbooks --------------------------------------------------------------

def _template_regex(template):
    return re.compile("^" + re.escape(template).replace(re.escape("{name}"), r"(\w+)") + "$")


FACT_QUESTIONS = [(attribute, _template_regex(t)) for attribute, ts in world.QUESTION_TEMPLATES.items()
                  for t in ts]


def question_keys(text):
    """The split keys of the problems written in the text, recovered from their wording:
    fact questions, arithmetic (every 'a op b' with two-digit a, and b two-digit or, for x, one
    digit), and the comparisons of numbers and the unit conversions."""
    keys = []
    for line in re.findall(r"^Question:\n(.+)$|^Example \d\. (.+)$", text, flags=re.M):
        line = line[0] or line[1]
        for attribute, pattern in FACT_QUESTIONS:
            match = pattern.match(line)
            if match:
                keys.append(("fact", match.group(1), attribute))
        match = re.match(r"Which number is the (biggest|smallest): (\d+), (\d+), (\d+) or (\d+)\?",
                         line)
        if match:
            keys.append(("reasoning", "extreme_number", match.group(1),
                         tuple(sorted(int(n) for n in match.groups()[1:]))))
    for a, op, b in re.findall(r"(?<![\d.])(\d+) ([+\-x]) (\d+)(?!\d)", text):
        a, b = int(a), int(b)
        if 10 <= a <= 99 and (10 <= b <= 99 if op != "x" else 2 <= b <= 9):
            keys.append(world.arithmetic_key(a, op, b))
    return keys


def test_no_held_out_item_appears_in_the_textbooks(sample_text):
    keys = question_keys(sample_text)
    families = Counter(k[0] if k[0] != "reasoning" else k[1] for k in keys)
    assert families["fact"] > 5_000 and families["arithmetic"] > 20_000
    assert families["extreme_number"] > 200
    leaked = [k for k in keys if world.held_out(k)]
    assert not leaked, f"held-out problems in the training text: {leaked[:5]}"
    for name in TASKS:                                 # and no test question string, verbatim
        questions = held_out_questions(name, n=400)
        assert questions
        inside = [q for q in questions if q in sample_text]
        assert not inside, f"{name}: {inside[:3]}"


def test_the_overlap_check_finds_a_planted_test_item(sample_text):  # negative control
    item = task_items("arithmetic", "test", 1)[0]
    planted = sample_text[:1000] + "\nQuestion:\n" + item.question + "\nAnswer: " + item.solution
    assert any(world.held_out(k) for k in question_keys(planted))
    fact = next(i for i in task_items("knowledge", "test", 5))
    planted = "Question:\n" + fact.question + "\nOptions:\n"
    assert any(world.held_out(k) for k in question_keys(planted))
