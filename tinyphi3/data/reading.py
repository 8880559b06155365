"""Reading from the prompt: copying words and finding the option that says something.

Answering "Question: ... Options: A. ... B. ... Answer:" with a letter takes two steps: knowing
the answer, and finding which listed option states it. The second step is reading, not knowing:
the model must match the words of its answer against the words of each option line. A
transformer reads from its context with "induction" attention (find an earlier place where the
current words occur, read what stands next to it), which language models pick up from the many
repetitions of ordinary text. The closed world's textbooks hardly ever require it (every fact
can be recalled from the weights), and a model pre-trained on them cannot copy even a short list
of words from its prompt (`lessons/10_sft_and_the_loss_mask.py`, section 7). Three kinds of data
teach it:

  pre-training pages (`copying_document`, `tinyphi3 data copying`), mixed with the textbooks:
    "Read this list: fish, kadorlo, Veska. Now say it again: fish, kadorlo, Veska."
    "Here is a row of words: ... Which word comes after kadorlo? After kadorlo comes Veska."
    and the lookup below as text, each option checked in turn (`checked_options`);

  dense pre-training pages (`induction_document`, `tinyphi3 data induction`), on which nearly
  every answer word must be found in the page: a list continued from a word, lettered words
  named with their letters, the word after a word;

  SFT exchanges (the "reading" domain of `tinyphi3.data.post_training`):
    copy      "Repeat these words: fish, kadorlo, Veska" -> "fish, kadorlo, Veska."
    lookup    "Which option says fish?" with four options -> "It says fish. A. honey A, B. oak B,
              C. fish C, D. nut D. So it is fish C. The answer is C." (`lettered_options`)
    passage   a fact stated in the question ("Veska lives in the Copper Caves. Where does Veska
              live?") with four options -> the fact, then the options and the letter the same way

The chat replies put each letter *after* its option, so that the letter after "So it is fish"
is what followed "fish" a moment before: a search by content finds it, while the letter in front
of an option ("C. fish") was never learned (checkpoints/mini/README.md).

Words are the world's values and names, and made-up words of random syllables, so that nothing
but the prompt tells the model what to write. Facts of passages are train-split facts only.
"""

import numpy as np

from tinyphi3.data import world
from tinyphi3.data.world import one_of
from tinyphi3.data.tasks import LETTERS, Item, item_from_problem, render

SYLLABLES = ("ka", "lo", "mi", "ru", "ben", "tas", "o", "vi", "dor", "pel", "zu", "gra", "fin",
             "sho", "te", "nam", "qu", "wix")
WORDS = tuple(dict.fromkeys([value for values in world.ATTRIBUTE_VALUES.values()
                             for value in values]
                            + [entity.name for entity in world.ENTITIES]))
COPY_ASKS = ("Repeat these words: {words}", "Say this back to me: {words}",
             "Copy this list: {words}", "Please repeat after me: {words}")


def choice_reply(explanation: str, letter: str, options) -> str:
    """The chat model's answer to a multiple-choice question: the explanation (the fact recalled,
    or the worked reasoning), the options said again with each letter after its option, then the
    answer and its letter: "Veska lives in the Copper Caves. A. Fern Valley A, B. the Copper Caves
    B, ... So it is the Copper Caves B. The answer is B." (`reading.lettered_options`: the last
    letter is read by a search of the context by content. The fact followed straight by its
    letter, or each option checked in turn, stayed at chance; checkpoints/mini/README.md.)"""
    return lettered_options(explanation, options, letter)


def stated_fact(entity, attribute: str, rng) -> str:
    """A sentence stating the fact in which the option's text appears word for word ("...lives in
    the Copper Caves", not "...belongs to the mice"), so that the letter can be found by it."""
    value = entity.value(attribute)
    sentences = [template.format(**world.fields(entity))
                 for template in world.FACT_TEMPLATES[attribute]]
    return one_of(rng, [sentence for sentence in sentences if value in sentence] or sentences)


def made_up_word(rng) -> str:
    """One to three random syllables: 'kadorlo', 'vi', 'zupel'."""
    return "".join(one_of(rng, SYLLABLES) for _ in range(int(rng.integers(1, 4))))


def word(rng) -> str:
    """A word of the world (a value or a name) or a made-up one, half and half."""
    return one_of(rng, WORDS) if rng.random() < 0.5 else made_up_word(rng)


def _distinct_words(rng, n) -> list:
    words = []
    while len(words) < n:
        candidate = word(rng)
        if candidate not in words:
            words.append(candidate)
    return words


def copy_exchange(rng, shortest=3, longest=15) -> tuple:
    """(a list of words to repeat, the same words back)."""
    words = ", ".join(word(rng) for _ in range(int(rng.integers(shortest, longest + 1))))
    return one_of(rng, COPY_ASKS).format(words=words), words + "."


def _lookup_item(rng) -> tuple:
    """(four distinct words as options and 'Which option says X?', X)."""
    options = _distinct_words(rng, len(LETTERS))
    k = int(rng.integers(len(options)))
    return Item("lookup", f"Which option says {options[k]}?", tuple(options), LETTERS[k],
                LETTERS[k], ()), options[k]


def lookup_exchange(rng) -> tuple:
    """(four options and 'Which option says X?', 'It says X.', the options with their letters
    after them, 'So it is X <letter>. The answer is <letter>.')."""
    item, said = _lookup_item(rng)
    return render(item, solved=False), choice_reply(f"It says {said}.", item.answer, item.options)


def passage_exchange(rng) -> tuple:
    """(a train fact, then its question with four options; the fact again, then its letter)."""
    problem = world.knowledge_problem(rng, "train")
    _, name, attribute = problem.key
    entity = world.ENTITY_BY_NAME[name]
    item = item_from_problem("knowledge", problem, rng)
    passage = stated_fact(entity, attribute, rng)
    item = Item(item.task, f"{passage} {item.question}", item.options, item.answer, item.solution,
                item.key)
    return render(item, solved=False), choice_reply(stated_fact(entity, attribute, rng),
                                                    item.answer, item.options)


# ---- the same skills as pre-training text ------------------------------------------------------

def _list_exercise(rng) -> str:
    words = ", ".join(word(rng) for _ in range(int(rng.integers(4, 13))))
    return f"Read this list: {words}. Now say it again: {words}."


def _next_word_exercise(rng) -> str:
    words = list(dict.fromkeys(word(rng) for _ in range(int(rng.integers(5, 11)))))
    k = int(rng.integers(len(words) - 1))
    return (f"Here is a row of words: {', '.join(words)}. Which word comes after {words[k]}? "
            f"After {words[k]} comes {words[k + 1]}.")


def checked_options(explanation: str, options, letter: str) -> str:
    """The options checked in turn up to the right one, after the explanation: "It says fish.
    A. honey: no. B. fish: yes. The answer is B." (the pre-training pages' lookups)."""
    checks = []
    for option_letter, option in zip(LETTERS, options):
        checks.append(f"{option_letter}. {option}: {'yes' if option_letter == letter else 'no'}.")
        if option_letter == letter:
            break
    return f"{explanation} {' '.join(checks)} The answer is {letter}."


def lettered_options(explanation: str, options, letter: str, said: str = None) -> str:
    """The options said again, each followed by its letter, after the explanation; then the
    answer followed by its letter, and the letter: "It says fish. A. honey A, B. fish B, C. oak C,
    D. nut D. So it is fish B. The answer is B." The letter after "So it is fish" is the word
    that follows "fish" earlier in the reply: a model that searches its context by content
    (`induction_document`) can read it there. `said` is the option the reply settles on (the
    right one unless given)."""
    listed = ", ".join(f"{option_letter}. {option} {option_letter}"
                       for option_letter, option in zip(LETTERS, options))
    said = options[LETTERS.index(letter)] if said is None else said
    return f"{explanation} {listed}. So it is {said} {letter}. The answer is {letter}."


def _lookup_exercise(rng) -> str:
    item, said = _lookup_item(rng)
    return (f"{render(item, solved=False)} "
            f"{checked_options(f'It says {said}.', item.options, item.answer)}")


EXERCISES = (_list_exercise, _next_word_exercise, _lookup_exercise)
TITLES = ("Word games: read it, say it again", "Reading practice", "Lists and options",
          "Careful reading")


def copying_document(rng) -> str:
    """A page of reading exercises (lists said again, the word after a word, the option that says
    a word) for pre-training: text in which the next words can only be read from earlier ones."""
    exercises = [one_of(rng, EXERCISES)(rng) for _ in range(int(rng.integers(4, 9)))]
    return one_of(rng, TITLES) + "\n\n" + "\n\n".join(exercises)


def generate_copying_documents(n: int, seed: int = 0):
    """Yield n documents of `copying_document`, deterministic from the seed."""
    rng = np.random.default_rng(world.stable_hash("copying", seed))
    for _ in range(n):
        yield copying_document(rng)


# ---- dense exercises: nearly every token of the answers must be read from earlier ------------

DENSE_LETTERS = "ABCDEFGH"


def _segment_exercise(rng) -> str:
    """'Words: w1, ..., wn.' then lines 'From wk: wk, wk+1, ..., wk+m.' at random starting words."""
    n = int(rng.integers(8, 16))
    words = _distinct_words(rng, n)
    lines = [f"Words: {', '.join(words)}."]
    for _ in range(int(rng.integers(3, 6))):
        k = int(rng.integers(0, n - 2))
        m = int(rng.integers(2, min(6, n - k) + 1))
        lines.append(f"From {words[k]}: {', '.join(words[k:k + m])}.")
    return "\n".join(lines)


def _letters_exercise(rng) -> str:
    """Four to eight lettered words, then some of them named with their letters, in random order:
    'A. fish\nB. Veska\n... Veska is B. fish is A.'"""
    n = int(rng.integers(4, 9))
    words = _distinct_words(rng, n)
    lines = [f"{DENSE_LETTERS[i]}. {w}" for i, w in enumerate(words)]
    order = rng.permutation(n)[:int(rng.integers(3, n + 1))]
    return "\n".join(lines) + "\n" + " ".join(f"{words[i]} is {DENSE_LETTERS[i]}." for i in order)


def _after_exercise(rng) -> str:
    """'Row: w1, ..., wn.' then 'After wk comes wk+1.' for a few k in random order."""
    words = _distinct_words(rng, int(rng.integers(6, 12)))
    order = rng.permutation(len(words) - 1)[:int(rng.integers(2, 5))]
    return (f"Row: {', '.join(words)}.\n"
            + " ".join(f"After {words[k]} comes {words[k + 1]}." for k in order))


DENSE_EXERCISES = (_segment_exercise, _letters_exercise, _after_exercise)


def induction_document(rng) -> str:
    """A page of dense reading exercises (a list continued from a word, lettered words named with
    their letters, the word after a word), four to seven of them, blank lines between. Unlike
    `copying_document`'s pages, almost every word of an answer can only be read from the page,
    so nearly all of the page's loss asks for induction attention."""
    exercises = [one_of(rng, DENSE_EXERCISES)(rng) for _ in range(int(rng.integers(4, 8)))]
    return "\n\n".join(exercises)


def generate_induction_documents(n: int, seed: int = 0):
    """Yield n documents of `induction_document`, deterministic from the seed."""
    rng = np.random.default_rng(world.stable_hash("induction", seed))
    for _ in range(n):
        yield induction_document(rng)
