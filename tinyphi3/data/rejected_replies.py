"""Undesired replies for DPO: what the rejected side of a preference pair looks like.

DPO (Rafailov et al. 2023) raises the likelihood of a chosen reply over a rejected one for the
same prompt; the Phi-3 report (§3) uses "undesired behaviour as rejected responses". Besides
complying with harmful requests (`tinyphi3.data.safety.harmful_compliance`), two behaviours of a
small model are worth un-learning:

  a slip      the column method with one arithmetic mistake: the carry (or the borrowed ten)
              forgotten, a tens digit miscounted, or the result's digits swapped when copied;
              the chain still ends "The answer is N.", with a wrong N;
  rambling    the right answer, and then the model does not stop: a new made-up
              "Question: ... Answer: ..." as in its pre-training text, a fake next user turn,
              the answer over and over, or facts nobody asked for.
"""

import re

from tinyphi3.data import world
from tinyphi3.data.tasks import render, sample_item

_HEAD = re.compile(r"(\d+) ([+\-x]) (\d+):")


def operands(solution: str) -> tuple:
    """(a, op, b) of a column solution ('27 + 48: 7 + 8 = 15, ...' -> (27, '+', 48))."""
    a, op, b = _HEAD.match(solution).groups()
    return int(a), op, int(b)


def _tens_steps(a, op, b):
    """The ones digit written, and the tens step (expression, value) done right and with the carry
    or borrow forgotten (the same when there is none)."""
    (a1, a0), (b1, b0) = divmod(a, 10), divmod(b, 10)
    if op == "+":
        carry = (a0 + b0) // 10
        return (a0 + b0) % 10, (f"{a1} + {b1}" + (" + 1" if carry else ""), a1 + b1 + carry), \
            (f"{a1} + {b1}", a1 + b1)
    if op == "-":
        borrow = int(a0 < b0)
        return (a0 - b0) % 10, (f"{a1} - 1 - {b1}" if borrow else f"{a1} - {b1}",
                                a1 - b1 - borrow), \
            (f"{a1} - {b1}", a1 - b1)
    carry = a0 * b // 10
    return a0 * b % 10, (f"{a1} x {b}" + (f" + {carry}" if carry else ""), a1 * b + carry), \
        (f"{a1} x {b}", a1 * b)


def slipped_solution(a: int, op: str, b: int, rng) -> str:
    """`world.column_solution(a, op, b)` with one slip, so that its final number is wrong."""
    # '27 + 48: 7 + 8 = 15, write 5 carry 1'
    ones_step = world.column_solution(a, op, b).split("; ")[0]
    ones, (expression, tens), forgot = _tens_steps(a, op, b)
    right = tens * 10 + ones
    swapped = int(str(right)[::-1])
    slip = rng.random()
    if slip < 0.5 and forgot[1] != tens:                       # the carry or borrow forgotten
        expression, tens = forgot
        wrong = tens * 10 + ones
    elif slip < 0.8 or right % 10 == 0 or swapped == right:    # a tens digit miscounted
        tens += 1 if tens == 0 or rng.random() < 0.5 else -1
        wrong = tens * 10 + ones
    else:                                                      # the digits swapped when copied
        wrong = swapped
    return f"{ones_step}; {expression} = {tens}. So {a} {op} {b} = {wrong}. The answer is {wrong}."


def _made_up_question(rng):
    task = ("knowledge", "reasoning", "arithmetic")[int(rng.integers(3))]
    return render(sample_item(task, "train", rng)).rstrip()


def _fake_user_turn(rng):
    problem = world.knowledge_problem(rng, "train")
    _, name, attribute = problem.key
    return (f"User: {problem.question}\nAssistant: "
            f"{world.fact_sentence(world.ENTITY_BY_NAME[name], attribute, rng)}")


def _unasked_facts(rng):
    entity = world.ENTITIES[int(rng.integers(len(world.ENTITIES)))]
    facts = [world.fact_sentence(entity, a, rng, full_name=i == 0)
             for i, a in enumerate(("home", "food", "job", "colour")[:int(rng.integers(2, 5))])]
    opening = ("By the way, ", "Also, ", "Here is something else. ", "")[int(rng.integers(4))]
    return opening + " ".join(facts)


def ramble(answer: str, rng) -> str:
    """The answer, then text that goes on as if the model did not stop."""
    style = rng.random()
    if style < 0.4:
        more = "\n\n".join(_made_up_question(rng) for _ in range(int(rng.integers(1, 3))))
        return f"{answer}\n\n{more}"
    if style < 0.6:
        return f"{answer}\n{_fake_user_turn(rng)}"
    if style < 0.8:
        return " ".join([answer] * int(rng.integers(3, 6)))
    return f"{answer} {_unasked_facts(rng)}"
