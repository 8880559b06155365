"""A grammar of wordings for sums and differences, for post-training only.

The chat model's sums fail on held-out wordings mostly by copying: asked "What's 46 added to
84?", it works out 84 + 84. The train wordings of tinyphi3.data.wordings are 36 hand-written
frames, and a model trained on them learns where each frame puts its numbers. This module builds
hundreds more frames from parts (an ask, an operator word, an ending; stories with a subject, a
verb of getting or losing and a question), so that no one position of the numbers is the rule:

    "Could you add up {a} and {b} for me?"      "{a} {things} plus {b} {things}: how many in all?"
    "Please subtract {b} from {a}."             "We had {a} {things} and lost {b}. How many remain?"

**Held out stays held out.** A frame of the grammar is kept only if it is no nearer to any
held-out frame of its list (wordings.SUM_CORES or DIFFERENCE_CORES, every fourth) than the
nearest hand-written train frame already is. Nearness is difflib's ratio on the frames' words
(lower case, punctuation dropped, slots and + - = kept):

    keep(g)  <=>  for every held-out h:  ratio(g, h) <= max over train t of ratio(t, h)

so the grammar adds no wording closer to the test than training already had; "Could you take
{b} from {a}?" is dropped (it differs from the held-out "Can you take {b} from {a}?" by one
word), "Please subtract {b} from {a}." is kept. tests/test_sum_frames.py checks the rule on every
frame and that no held-out frame is made.
"""
import difflib
import functools
import itertools
import re

from tinyphi3.data.world import frames_of

# ---- parts ----------------------------------------------------------------------------------
QUESTIONS = ("What is", "What's", "How much is", "Do you know", "Could you work out",
             "Can you figure out", "Can you tell me", "Would you know")
QUESTION_ENDS = ("?", " for me?", ", please?", " exactly?", " now?", "??")
ORDERS = ("Tell me", "Please tell me", "Work out", "Figure out", "Calculate", "Solve", "Say",
          "Help me with", "Give the answer to", "Find", "Quick:", "Now do")
ORDER_ENDS = (".", "", ", please.", ", thanks.", " for me.", "!")
ASKED = ([f"{q} {{x}}{end}" for q, end in itertools.product(QUESTIONS, QUESTION_ENDS)]
         + [f"{o} {{x}}{end}" for o, end in itertools.product(ORDERS, ORDER_ENDS)])

PLUS_WORDS = ("+", "plus", "added to", "and", "more than", "together with")
SUM_VERBS = ("Add", "Add up", "Sum", "Sum up", "Total", "Combine", "Put together", "Join",
             "Please add", "Could you add up", "Would you add", "Help me add", "I want to add",
             "Let's add", "Go ahead and add", "Try to add")
SUM_VERB_ENDS = (".", "?", " for me.", " together.", ", please.", " and tell me the answer.",
                 " and say what you get.", " and give the total.")
SUM_ASKED = (" = ?", " is?", " equals?", " makes what?", " comes to?", " gives what?",
             ": the total?", " is how much?", " makes how many?", " in all?", " altogether?")
GETTERS = ("found", "picked up", "collected", "bought", "got", "made", "was given", "won")
SUM_QUESTIONS = ("How many now?", "How many in all?", "How many altogether?",
                 "How many is that?", "How many does that make?", "What's the total now?",
                 "How many are there now?", "What is the count now?")

MINUS_WORDS = ("-", "minus", "less", "take away", "without")
DIFFERENCE_VERBS = ("Subtract", "Deduct", "Remove", "Please subtract", "Could you subtract",
                    "Would you subtract", "Help me subtract", "I want to subtract",
                    "Let's subtract", "Go ahead and subtract", "Try to subtract")
DIFFERENCE_VERB_ENDS = (".", "?", " for me.", ", please.", " and tell me the answer.",
                        " and say what is left.", " and give the result.")
DIFFERENCE_ASKED = (" = ?", " is?", " equals?", " makes what?", " comes to?", " gives what?",
                    " is how much?", " leaves what?", " leaves how many?")
LOSERS = ("lost", "gave away", "ate", "sold", "dropped", "broke", "used", "spent", "threw away",
          "lent out")
DIFFERENCE_QUESTIONS = ("How many remain?", "How many now?", "How many are still there?",
                        "How many are there in the end?", "What is left?", "How many stay?",
                        "What remains?", "How many are there now?")
SUBJECTS = ("I", "We", "She", "He", "My sister", "A friend", "Someone", "The teacher")


def _sum_frames() -> list:
    frames = [ask.replace("{x}", f"{{a}} {word} {{b}}")
              for ask, word in itertools.product(ASKED, PLUS_WORDS)]
    frames += [f"{verb} {{a}} and {{b}}{end}"
               for verb, end in itertools.product(SUM_VERBS, SUM_VERB_ENDS)]
    frames += [f"{verb} {{b}} to {{a}}{end}"
               for verb, end in itertools.product(SUM_VERBS[:1] + SUM_VERBS[8:], SUM_VERB_ENDS)]
    frames += [f"{{a}} {word} {{b}}{asked}"
               for word, asked in itertools.product(PLUS_WORDS, SUM_ASKED)]
    frames += [f"{who} had {{a}} {{things}} and {got} {{b}} more. {question}"
               for who, got, question in itertools.product(SUBJECTS, GETTERS, SUM_QUESTIONS)]
    frames += [f"{{a}} {{things}} {word} {{b}} {{things}}: {question[0].lower()}{question[1:]}"
               for word, question in itertools.product(("plus", "and then", "with"),
                                                       SUM_QUESTIONS)]
    frames += ["Start with {a} and add {b}.", "Begin at {a}, then add {b}.",
               "Take {a} and add {b} to it.", "From {a}, count on {b}.",
               "First {a}, then {b} more: what's the total?", "Start at {a} and go up by {b}."]
    return frames


def _difference_frames() -> list:
    frames = [ask.replace("{x}", f"{{a}} {word} {{b}}")
              for ask, word in itertools.product(ASKED, MINUS_WORDS)]
    frames += [f"{verb} {{b}} from {{a}}{end}"
               for verb, end in itertools.product(DIFFERENCE_VERBS, DIFFERENCE_VERB_ENDS)]
    frames += [f"{{a}} {word} {{b}}{asked}"
               for word, asked in itertools.product(MINUS_WORDS, DIFFERENCE_ASKED)]
    frames += [f"{who} had {{a}} {{things}} and {lost} {{b}}. {question}"
               for who, lost, question in itertools.product(SUBJECTS, LOSERS,
                                                             DIFFERENCE_QUESTIONS)]
    frames += [f"{{b}} of the {{a}} {{things}} were {gone}. {question}"
               for gone, question in itertools.product(
                   ("eaten", "lost", "sold", "taken", "broken", "given away"),
                   DIFFERENCE_QUESTIONS)]
    frames += ["Start with {a} and take away {b}.", "Begin at {a}, then remove {b}.",
               "From {a}, count back {b}.", "Start at {a} and go down by {b}.",
               "Take {a} and remove {b} from it.", "First {a}, then {b} fewer: what's left?"]
    return frames


# ---- the rule that keeps held-out wordings held out -------------------------------------------
def words(frame: str) -> tuple:
    """The words of a frame for comparing: lower case, slots and + - = kept, the rest of the
    punctuation dropped ("What's {a} + {b}?" -> ("what's", "{a}", "+", "{b}"))."""
    return tuple(re.findall(r"\{\w+\}|[a-z0-9']+|[+\-=]", frame.lower()))


def nearness(f: str, g: str) -> float:
    """difflib's ratio of two frames' words: 1.0 for the same words, 0.0 for none shared."""
    return difflib.SequenceMatcher(None, words(f), words(g), autojunk=False).ratio()


def bounds(train, held) -> dict:
    """For each held-out frame, the nearness of its nearest train frame: the grammar may come no
    nearer."""
    return {h: max(nearness(t, h) for t in train) for h in held}


def held_out_bounds(cores) -> dict:
    """bounds of a hand-written list's held-out frames against its train frames."""
    return bounds(frames_of(cores, "train"), frames_of(cores, "test"))


def keep(made, train, held) -> tuple:
    """The frames of `made` that are no hand-written frame (of `train` or `held`) and no nearer to
    any of `held` than the nearest of `train` is, sorted: the rule above."""
    given = {words(w) for w in list(train) + list(held)}
    limits = bounds(train, held)
    kept = {m for m in made if words(m) not in given
            and all(nearness(m, h) <= bound for h, bound in limits.items())}
    return tuple(sorted(kept))


@functools.cache
def grammar_frames(op: str) -> tuple:
    """Every frame of the grammar for op ("+" or "-") that the rule keeps, sorted, without the
    hand-written frames themselves."""
    from tinyphi3.data.wordings import DIFFERENCE_CORES, SUM_CORES
    if op not in ("+", "-"):
        raise ValueError(f"op must be '+' or '-', got {op!r}")
    cores = SUM_CORES if op == "+" else DIFFERENCE_CORES
    made = _sum_frames() if op == "+" else _difference_frames()
    return keep(made, frames_of(cores, "train"), frames_of(cores, "test"))


def arithmetic_chat(rng) -> list:
    """A sum or a difference (half each) of train operands in a frame of the grammar, wrapped as
    the wordings are, answered by the column method as every sum is."""
    from tinyphi3.data.wordings import arithmetic_in
    op = "+" if rng.random() < 0.5 else "-"
    messages, _ = arithmetic_in(rng, "train", op, grammar_frames(op))
    return messages
