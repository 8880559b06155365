"""A closed world in miniature: made-up creatures with facts to learn, and first-school-year skills.

The Phi-3 report (§2, "Data Optimal Regime") trains small models on data chosen to teach the
right amount of knowledge and as much reasoning as possible. A model of a few million parameters
cannot learn the internet, but it can learn a small world completely. This one holds

  knowledge  160 creatures, each with five facts: kind, home, favourite colour, favourite food
             and job ("Veska the otter lives in the Copper Caves"); every fact is taught in
             training text;
  skills     two-digit arithmetic with carrying and borrowing, multiplication by one digit,
             comparing, counting, units (cm/m, minutes/hours, g/kg) and simple logic (if-then,
             all/some/no, transitive order), each a generator of fresh problem instances.

Everything here is plain data plus functions: the world is the same on every run (assignments
come from a stable hash, not from a random generator), and problems come from the numpy
Generator the caller passes in.

The train/test split lives here too. Every problem has a `key` (the (creature, attribute) pair of
a fact question, the operand pair of a sum, the numbers of a comparison, ...) and `held_out(key)`
reserves a fixed share of keys for evaluation: training text only ever uses keys that are not
held out, so a test item never appears in training, while the facts it asks about do.
"""

import hashlib
from dataclasses import dataclass

# ---- the stable hash behind every fixed choice --------------------------------------------------


def one_of(rng, options):
    """One of `options`, drawn uniformly: one integer from rng (the same draw everywhere, so
    generated data stays the same byte for byte)."""
    return options[int(rng.integers(len(options)))]


def stable_hash(*parts) -> int:
    """A 64-bit hash of the parts' reprs that is the same on every run (Python's hash() is not)."""
    digest = hashlib.blake2b(repr(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


# Share of problem keys (in percent) reserved for evaluation, by family (the key's first element).
# "passkey": the five-digit numbers of tinyphi3.data.longdocs, half of them kept for evaluation.
HELD_OUT_PERCENT = {"fact": 25, "arithmetic": 20, "reasoning": 20, "passkey": 50}
SPLITS = ("train", "test")

# Parts of a wording list: every fourth one is held out (tinyphi3.data.wordings, .acts).
HELD_OUT_EVERY = 4           # part i of a list is held out when i % 4 == 3


def frame_split(index: int) -> str:
    return "test" if index % HELD_OUT_EVERY == HELD_OUT_EVERY - 1 else "train"


def frames_of(frames, split: str):
    """The parts of a split: every fourth one (index % 4 == 3) is held out ("test")."""
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return [f for i, f in enumerate(frames) if frame_split(i) == split]


def held_out(key: tuple) -> bool:
    """True if the problem with this key is reserved for the test split (never in training text)."""
    return stable_hash("split", *key) % 100 < HELD_OUT_PERCENT[key[0]]


def in_split(key: tuple, split: str) -> bool:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    return held_out(key) == (split == "test")


# ---- the world's vocabulary --------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    name: str
    plural: str
    article: str      # "a" or "an"
    legs: int


KINDS = {k.name: k for k in [
    Kind("otter", "otters", "an", 4), Kind("fox", "foxes", "a", 4), Kind("heron", "herons", "a", 2),
    Kind("beetle", "beetles", "a", 6), Kind("rabbit", "rabbits", "a", 4),
    Kind("owl", "owls", "an", 2),
    Kind("frog", "frogs", "a", 4), Kind("hedgehog", "hedgehogs", "a", 4),
    Kind("badger", "badgers", "a", 4), Kind("spider", "spiders", "a", 8),
    Kind("crab", "crabs", "a", 10),
    Kind("mouse", "mice", "a", 4), Kind("duck", "ducks", "a", 2), Kind("turtle", "turtles", "a", 4),
    Kind("ant", "ants", "an", 6), Kind("lizard", "lizards", "a", 4)]}

PLACES = ("the Reed Marsh", "the Pine Hills", "Willow Creek", "the Copper Caves", "Maple Hollow",
          "the Sandy Shore", "Fern Valley", "the Misty Lake", "Stone Bridge", "the Old Orchard",
          "Cloud Meadow", "the Amber Woods", "Frost Peak", "Honey Field", "the Salt Cliffs",
          "Mossy Glen")
PLACE_DESCRIPTIONS = dict(zip(PLACES, (
    "a wet, green place full of tall reeds and slow water",
    "a row of quiet hills covered in pine trees",
    "a narrow stream lined with old willow trees", "a maze of dark caves with shiny copper walls",
    "a sheltered hollow where maple leaves turn red in autumn", "a long beach of warm, soft sand",
    "a deep valley where ferns grow taller than a rabbit", "a wide lake that is covered in mist "
    "every morning", "a village built around an old stone bridge", "a field of apple and pear "
    "trees that are older than anyone remembers", "a high meadow where the clouds seem close "
    "enough to touch", "a forest whose leaves glow like amber in the evening", "the highest and "
    "coldest mountain in the land", "a sunny field full of flowers and busy bees", "white cliffs "
    "above the sea where the wind smells of salt", "a quiet glen where soft moss covers every "
    "stone")))
COLOURS = ("red", "blue", "green", "yellow", "orange", "purple", "grey", "brown", "white", "black",
           "pink", "silver")
FOODS = ("apples", "berries", "carrots", "fish", "honey", "acorns", "mushrooms", "clover", "pears",
         "seeds", "plums", "beans", "cheese", "corn")
JOBS = ("baker", "painter", "gardener", "teacher", "sailor", "builder", "doctor", "poet", "farmer",
        "tailor", "singer", "potter", "miller", "guard")

ATTRIBUTES = ("kind", "home", "colour", "food", "job")
ATTRIBUTE_VALUES = {"kind": tuple(KINDS), "home": PLACES, "colour": COLOURS, "food": FOODS,
                    "job": JOBS}

# ---- the creatures -----------------------------------------------------------------------------

N_ENTITIES = 160
_FIRST = ("Ta", "Mi", "Ro", "Be", "Lu", "Ka", "Ni", "Po", "Fe", "Zo", "Da", "Si", "Wu", "Ga", "Ho",
          "Ju", "Ve", "Ri", "Mo", "Pe")
_SECOND = ("bi", "ra", "lo", "no", "mi", "ska", "ffy", "dle", "rin", "pa", "vel", "tto")
_NOT_NAMES = {"Mono", "Pepa", "Dano", "Rino", "Ramo"}   # too close to real words


@dataclass(frozen=True)
class Entity:
    """A creature of the world with its five facts (and a pronoun, for prose only)."""
    name: str
    kind: str
    home: str
    colour: str
    food: str
    job: str
    pronoun: str

    @property
    def legs(self) -> int:
        return KINDS[self.kind].legs

    @property
    def title(self) -> str:
        """'Veska the otter'."""
        return f"{self.name} the {self.kind}"

    def value(self, attribute: str) -> str:
        return getattr(self, attribute)


def _make_entities():
    """160 names from two syllables each, and for each attribute a balanced assignment of values:
    rank the creatures by a per-attribute stable hash and deal the values out in turn."""
    names = [a + b for a in _FIRST for b in _SECOND if a + b not in _NOT_NAMES]
    names = sorted(names, key=lambda n: stable_hash("name", n))[:N_ENTITIES]
    values = {}
    for attribute in ATTRIBUTES:
        ranked = sorted(names, key=lambda n: stable_hash(attribute, n))
        options = ATTRIBUTE_VALUES[attribute]
        for rank, name in enumerate(ranked):
            values[name, attribute] = options[rank % len(options)]
    return tuple(Entity(name, *(values[name, a] for a in ATTRIBUTES),
                        pronoun="she" if stable_hash("pronoun", name) % 2 else "he")
                 for name in names)


ENTITIES = _make_entities()
ENTITY_BY_NAME = {e.name: e for e in ENTITIES}


def residents(place: str) -> list:
    """The creatures whose home is `place`."""
    return [e for e in ENTITIES if e.home == place]


# ---- facts as sentences ------------------------------------------------------------------------

FACT_TEMPLATES = {
    "kind": ("{Name} is {a_kind}.",
             "{Name} is {a_kind}, and like every {kind} {p} has {legs} legs.",
             "If you meet {Name}, you will see {a_kind}.", "{Name} belongs to the {kinds}."),
    "home": ("{Name} lives in {home}.", "{Home} is the home of {Name}.",
             "{Name}'s home is in {home}.",
             "You can find {Name} in {home}, where {p} has always lived.",
             "{Name} has a cosy little house in {home}."),
    "colour": ("{Name}'s favourite colour is {colour}.",
               "The colour {Name} likes best is {colour}.",
               "{Name} loves the colour {colour} more than any other.",
               "Of all the colours, {Name} likes {colour} best."),
    "food": ("{Name}'s favourite food is {food}.", "{Name} likes to eat {food} more than anything.",
             "If you ask {Name} what {p} wants for dinner, {p} will say {food}.",
             "The food {Name} loves most is {food}."),
    "job": ("{Name} works as {a_job}.", "{Name} is {a_job} by trade.",
            "{Name} has a job as {a_job}.",
            "Every day {Name} goes to work as {a_job}."),
}

QUESTION_TEMPLATES = {
    "kind": ("What kind of animal is {name}?", "What animal is {name}?",
             "Which kind of creature is {name}?"),
    "home": ("Where does {name} live?", "Which place is the home of {name}?",
             "Where is {name}'s home?"),
    "colour": ("What is {name}'s favourite colour?", "Which colour does {name} like best?",
               "Which colour is {name}'s favourite?"),
    "food": ("What is {name}'s favourite food?", "What does {name} like to eat most?",
             "Which food does {name} love best?"),
    "job": ("What is {name}'s job?", "What does {name} do for work?",
            "Which job does {name} have?"),
}


def article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def fields(entity: Entity, full_name: bool = False) -> dict:
    """The placeholders of FACT_TEMPLATES for one creature
    ({Name}: 'Veska' or 'Veska the otter')."""
    kind = KINDS[entity.kind]
    name = entity.title if full_name else entity.name
    return {"name": entity.name, "Name": name, "kind": kind.name, "kinds": kind.plural,
            "a_kind": f"{kind.article} {kind.name}", "legs": kind.legs, "home": entity.home,
            "Home": capitalize(entity.home), "colour": entity.colour, "food": entity.food,
            "job": entity.job, "a_job": article(entity.job), "p": entity.pronoun,
            "P": capitalize(entity.pronoun), "pos": "her" if entity.pronoun == "she" else "his"}


def fact_sentence(entity: Entity, attribute: str, rng=None, full_name: bool = False) -> str:
    """One sentence stating a fact: the first phrasing, or a random one when `rng` is given."""
    templates = FACT_TEMPLATES[attribute]
    template = templates[0] if rng is None else templates[int(rng.integers(len(templates)))]
    return template.format(**fields(entity, full_name))


def fact_sentences(entity: Entity) -> list:
    """Every fact about a creature, one plain sentence each (kind, home, colour, food, job)."""
    return [fact_sentence(entity, attribute) for attribute in ATTRIBUTES]


# ---- problems ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One problem instance. Multiple choice: `answer` is the right option's text and `distractors`
    the three wrong ones. Open answer (arithmetic): `answer` is the number and
    `distractors` is ()."""
    family: str              # "fact", "arithmetic" or "reasoning"
    kind: str                # "home", "+", "transitive", ...
    key: tuple               # what decides train vs test (see held_out)
    question: str
    answer: str
    distractors: tuple = ()
    solution: str = ""       # the worked answer, in words (arithmetic: the chain of thought)


def _pick(rng, seq, k=1):
    """k distinct elements of seq, as plain Python objects (numpy ints would change keys' reprs)."""
    return [seq[int(i)] for i in rng.choice(len(seq), size=k, replace=False)]


def _sample(rng, split, draw, max_tries=10_000):
    """Draw (key, build) from `draw(rng)` until the key falls in `split`, then build the Problem."""
    for _ in range(max_tries):
        key, build = draw(rng)
        if in_split(key, split):
            return build()
    raise RuntimeError(f"no {split} problem found in {max_tries} draws")


def knowledge_problem(rng, split="train", entity=None, attribute=None) -> Problem:
    """A question about one fact, with three other values of the same attribute as distractors.
    The key is ("fact", name, attribute): each fact question is either train or test, in every
    phrasing; the fact itself is taught in training text either way."""
    def draw(rng):
        e = entity if entity is not None else ENTITIES[int(rng.integers(len(ENTITIES)))]
        a = attribute if attribute is not None else ATTRIBUTES[int(rng.integers(len(ATTRIBUTES)))]
        return ("fact", e.name, a), lambda: _fact_problem(rng, e, a)
    if entity is not None and attribute is not None:
        key, build = draw(rng)
        if not in_split(key, split):
            raise ValueError(f"the question about {entity.name}'s {attribute} is not in the "
                             f"{split} split")
        return build()
    return _sample(rng, split, draw)


def _fact_problem(rng, entity, attribute, template=None):
    templates = QUESTION_TEMPLATES[attribute]
    template = templates[int(rng.integers(len(templates)))] if template is None else template
    right = entity.value(attribute)
    wrong = _pick(rng, [v for v in ATTRIBUTE_VALUES[attribute] if v != right], 3)
    return Problem("fact", attribute, ("fact", entity.name, attribute),
                   template.format(name=entity.name), right, tuple(wrong),
                   fact_sentence(entity, attribute))


def fact_questions(entity, attribute, rng) -> list:
    """The fact question in every phrasing (for the held-out list and the overlap check)."""
    return [_fact_problem(rng, entity, attribute, t) for t in QUESTION_TEMPLATES[attribute]]



# ---- skills: arithmetic with carrying ----------------------------------------------------------

ARITHMETIC_OPS = ("+", "-", "x")
THINGS = ("shells", "stones", "apples", "acorns", "berries", "feathers", "pebbles", "nuts",
          "leaves", "beads", "buttons", "seeds", "cards", "coins")
WORD_PROBLEMS = {
    "+": ("{A} has {a} {things} and finds {b} more. How many {things} does {A} have now?",
          "{A} picks {a} {things} in the morning and {b} {things} in the afternoon. How many "
          "{things} does {A} pick in all?",
          "There are {a} {things} in one basket and {b} {things} in another. How many {things} are "
          "there altogether?",
          "{A} had {a} {things}. Then {B} gave {A} {b} more {things}. How many {things} does {A} "
          "have now?"),
    "-": ("{A} has {a} {things} and gives {b} of them to {B}. "
          "How many {things} does {A} have left?",
          "There were {a} {things} on the table. {A} took {b} of them. How many {things} are still "
          "on the table?",
          "{A} needs {a} {things} and already has {b}. How many more {things} does {A} need?",
          "{A} had {a} {things} and lost {b} of them on the way home. How many {things} does {A} "
          "have now?"),
    "x": ("{A} has {b} boxes with {a} {things} in each box. How many {things} are there in all?",
          "{A} buys {b} bags of {things}. Each bag holds {a} {things}. How many {things} does {A} "
          "buy?",
          "Each of {b} baskets holds {a} {things}. How many {things} do the baskets hold together?",
          "{A} collects {a} {things} every day for {b} days. How many {things} does {A} collect?"),
}


def arithmetic_key(a: int, op: str, b: int) -> tuple:
    """The split key of a calculation: addition is commutative, so 27 + 48 and 48 + 27 share one."""
    if op == "+":
        a, b = min(a, b), max(a, b)
    return ("arithmetic", op, a, b)


def column_solution(a: int, op: str, b: int) -> str:
    """The column method, one digit at a time, as the chain of thought of the evaluation:

        27 + 48: 7 + 8 = 15, write 5 carry 1; 2 + 4 + 1 = 7. So 27 + 48 = 75. The answer is 75.

    a and b have two digits (for "x", b has one)."""
    (a1, a0), (b1, b0) = divmod(a, 10), divmod(b, 10)
    if op == "+":
        ones, result = a0 + b0, a + b
        carry = ones // 10
        first = f"{a0} + {b0} = {ones}, " + (f"write {ones % 10} carry 1" if carry
                                             else f"write {ones}")
        second = f"{a1} + {b1}" + (" + 1" if carry else "") + f" = {a1 + b1 + carry}"
    elif op == "-":
        result = a - b
        if a0 >= b0:
            first = f"{a0} - {b0} = {a0 - b0}, write {a0 - b0}"
            second = f"{a1} - {b1} = {a1 - b1}"
        else:
            first = (f"{a0} - {b0} is too small, so borrow 1 ten: "
                     f"{a0 + 10} - {b0} = {a0 + 10 - b0}, write {a0 + 10 - b0}")
            second = f"{a1} - 1 - {b1} = {a1 - 1 - b1}"
    elif op == "x":
        ones, result = a0 * b, a * b
        carry = ones // 10
        first = f"{a0} x {b} = {ones}, " + (f"write {ones % 10} carry {carry}" if carry
                                           else f"write {ones}")
        second = f"{a1} x {b}" + (f" + {carry}" if carry else "") + f" = {a1 * b + carry}"
    else:
        raise ValueError(f"unknown operation {op!r}")
    return f"{a} {op} {b}: {first}; {second}. So {a} {op} {b} = {result}. The answer is {result}."


def _draw_operands(rng, op):
    if op == "+":
        return int(rng.integers(10, 100)), int(rng.integers(10, 100))
    if op == "-":
        a = int(rng.integers(11, 100))
        return a, int(rng.integers(10, a))
    return int(rng.integers(10, 100)), int(rng.integers(2, 10))


def arithmetic_problem(rng, split="train", op=None) -> Problem:
    """A one-step word problem (two-digit addition, subtraction, or two-digit times one-digit),
    solved by the column method. Split by operand pair: a held-out calculation appears in no
    training text, neither in a story nor as a bare sum."""
    def draw(rng):
        o = op if op is not None else ARITHMETIC_OPS[int(rng.integers(len(ARITHMETIC_OPS)))]
        a, b = _draw_operands(rng, o)
        return arithmetic_key(a, o, b), lambda: _word_problem(rng, a, o, b)
    return _sample(rng, split, draw)


def _word_problem(rng, a, op, b):
    first, second = _pick(rng, ENTITIES, 2)
    story = _pick(rng, WORD_PROBLEMS[op])[0]
    question = story.format(A=first.name, B=second.name, a=a, b=b, things=_pick(rng, THINGS)[0])
    result = {"+": a + b, "-": a - b, "x": a * b}[op]
    return Problem("arithmetic", op, arithmetic_key(a, op, b), question, str(result),
                   solution=column_solution(a, op, b))


# ---- skills: comparing, units, logic, counting (multiple choice) -------------------------------

def _quantity(n, singular, plural):
    return f"{n} {singular if n == 1 else plural}"


def listing(items, last="and"):
    """'a, b, c and d' (or 'a, b, c or d')."""
    items = list(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {last} " + items[-1]


def _mc(kind, key, question, answer, wrong, solution):
    return Problem("reasoning", kind, key, question, str(answer), tuple(str(w) for w in wrong),
                   solution)


def _draw_extreme_number(rng):
    ask = _pick(rng, ("biggest", "smallest"))[0]
    numbers = sorted(int(n) + 10 for n in rng.choice(90, size=4, replace=False))
    right = numbers[-1] if ask == "biggest" else numbers[0]

    def build():
        shown = _pick(rng, numbers, 4)
        question = f"Which number is the {ask}: {listing(map(str, shown), 'or')}?"
        return _mc("extreme_number", key, question,
                   right, [n for n in shown if n != right],
                   f"From smallest to biggest the numbers are {listing(map(str, numbers))}. "
                   f"So the {ask} is {right}.")
    key = ("reasoning", "extreme_number", ask, tuple(numbers))
    return key, build


MEASURES = {  # statement, most, least, smallest value, largest value, step
    "tall": ("{name} is {v} centimetres tall", "tallest", "shortest", 20, 100, 1),
    "heavy": ("{name} weighs {v} grams", "heaviest", "lightest", 100, 1000, 10),
    "old": ("{name} is {v} years old", "oldest", "youngest", 2, 16, 1),
}


def _draw_extreme_measure(rng):
    measure = _pick(rng, tuple(MEASURES))[0]
    statement, most, least, low, high, step = MEASURES[measure]
    ask = _pick(rng, (most, least))[0]
    names = [e.name for e in _pick(rng, ENTITIES, 4)]
    values = [low + step * int(v) for v in rng.choice((high - low) // step, size=4, replace=False)]
    pairs = sorted(zip(values, names))
    right = pairs[-1][1] if ask == most else pairs[0][1]

    def build():
        said = listing(statement.format(name=n, v=v) for n, v in zip(names, values))
        order = ", ".join(f"{n} ({v})" for v, n in pairs)
        return _mc("extreme_measure", key, f"{said}. Who is the {ask}?", right,
                   [n for n in names if n != right],
                   f"In order from the {least} to the {most}: {order}. So the {ask} is {right}.")
    key = ("reasoning", "extreme_measure", measure, ask, tuple(sorted(zip(names, values))))
    return key, build


UNITS = {  # big unit, its plural, small unit, its plural, small units per big unit, most, least
    "length": ("metre", "metres", "centimetre", "centimetres", 100, "longest", "shortest"),
    "time": ("hour", "hours", "minute", "minutes", 60, "longest", "shortest"),
    "weight": ("kilogram", "kilograms", "gram", "grams", 1000, "heaviest", "lightest"),
}


def _wrong_numbers(right, candidates, rng):
    """Three distinct plausible wrong answers (common slips first), never the right one."""
    seen = []
    for c in candidates + [right + d for d in (1, 2, 3, 5, 10)]:
        if c > 0 and c != right and c not in seen:
            seen.append(c)
    return _pick(rng, seen[:5], 3)


def _draw_convert(rng):
    dimension = _pick(rng, tuple(UNITS))[0]
    big, bigs, small, smalls, f, _, _ = UNITS[dimension]
    way = _pick(rng, ("to_small", "to_big", "mixed"))[0]
    k = int(rng.integers(1, 10 if way != "mixed" else 5))
    r = int(rng.integers(1, f // 5)) * 5 if way == "mixed" else 0
    if way == "to_small":
        question = f"How many {smalls} are there in {_quantity(k, big, bigs)}?"
        right, slips = k * f, [k * 10, k * f * 10, k + f, k * f + f]
        solution = f"1 {big} is {f} {smalls}" + (
            "." if k == 1 else f", so {k} {bigs} is {k} times {f} {smalls}, "
                               f"which is {k * f} {smalls}.")
    elif way == "to_big":
        question = f"How many {bigs} is {k * f} {smalls}?"
        right, slips = k, [k * f, k * 10, k * f // 10, k + 1]
        solution = (f"Every {f} {smalls} make 1 {big}, and {k * f} {smalls} is {k} groups of {f}, "
                    f"so it is {_quantity(k, big, bigs)}.")
    else:
        question = f"How many {smalls} are there in {_quantity(k, big, bigs)} and {r} {smalls}?"
        right, slips = k * f + r, [k * 100 + r if f != 100 else k * 10 + r, k * f, k + r, k * f - r]
        solution = (f"{capitalize(_quantity(k, big, bigs))} is {k * f} {smalls}, and {r} more "
                    f"{smalls} make {k * f + r} {smalls}.")
    key = ("reasoning", "convert", dimension, way, k, r)
    return key, lambda: _mc("convert", key, question, right, _wrong_numbers(right, slips, rng),
                            solution)


COMPARE_MENUS = {"length": [10 * v for v in range(3, 41)],
                 "time": [15, 20, 30, 40, 45, 60, 75, 90, 100, 120, 150, 180, 240],
                 "weight": [100 * v for v in range(2, 41)]}


def _draw_compare_units(rng):
    dimension = _pick(rng, tuple(UNITS))[0]
    big, bigs, small, smalls, f, most, least = UNITS[dimension]
    ask = _pick(rng, (most, least))[0]
    values = _pick(rng, COMPARE_MENUS[dimension], 4)
    in_big = [v % f == 0 and rng.random() < 0.7 for v in values]
    shown = [_quantity(v // f, big, bigs) if b else _quantity(v, small, smalls)
             for v, b in zip(values, in_big)]
    right = shown[values.index(max(values) if ask == most else min(values))]

    def build():
        steps = [f"{s} = {v} {smalls}" if b else s for s, v, b in zip(shown, values, in_big)]
        return _mc("compare_units", key, f"Which is the {ask}: {listing(shown, 'or')}?", right,
                   [s for s in shown if s != right],
                   f"Write them all in {smalls}: {listing(steps)}. So the {ask} is {right}.")
    key = ("reasoning", "compare_units", dimension, ask, tuple(sorted(shown)))
    return key, build


RELATIONS = (("taller", "shorter", "tallest", "shortest"),
             ("faster", "slower", "fastest", "slowest"),
             ("older", "younger", "oldest", "youngest"),
             ("heavier", "lighter", "heaviest", "lightest"))


def _draw_order(rng):
    more, less, most, least = RELATIONS[int(rng.integers(len(RELATIONS)))]
    # names[0] is the most, names[3] the least
    names = [e.name for e in _pick(rng, ENTITIES, 4)]
    ask = _pick(rng, (most, least))[0]
    right = names[0] if ask == most else names[3]

    def build():
        said = [f"{names[i]} is {more} than {names[i + 1]}." if rng.random() < 0.5
                else f"{names[i + 1]} is {less} than {names[i]}." for i in range(3)]
        said = _pick(rng, said, 3)
        return _mc("order", key, " ".join(said) + f" Who is the {ask}?", right,
                   [n for n in names if n != right],
                   f"From the {most} to the {least}, the order is {listing(names)}. So the {ask} "
                   f"is {right}.")
    key = ("reasoning", "order", more, ask, tuple(names))
    return key, build


WEATHERS = ("it rains", "it snows", "it is sunny", "it is windy", "it is foggy", "it is cold")
OBJECTS = ("the red umbrella", "the wool scarf", "the straw hat", "the blue kite", "the lantern",
           "the warm boots", "the green raincoat", "the picnic basket")


def _draw_if_then(rng):
    name = _pick(rng, ENTITIES)[0].name
    rules = list(zip(_pick(rng, WEATHERS, 4), _pick(rng, OBJECTS, 4)))
    today, right = rules[int(rng.integers(4))]

    def build():
        said = " ".join(f"If {w}, {name} takes {o}." for w, o in _pick(rng, rules, 4))
        return _mc("if_then", key, f"{said} Today {today}. What does {name} take?", right,
                   [o for _, o in rules if o != right],
                   f"Today {today}, and the rule says: if {today}, {name} takes {right}. So "
                   f"{name} takes {right}.")
    key = ("reasoning", "if_then", name, tuple(sorted(rules)), today)
    return key, build


ABILITIES = ("whistle", "juggle", "read maps", "tie knots", "play the flute", "skate", "swim",
             "climb trees")


def _draw_quantifier(rng):
    ability = _pick(rng, ABILITIES)[0]
    creatures = [_pick(rng, [e for e in ENTITIES if e.kind == k])[0]   # four different kinds
                 for k in _pick(rng, tuple(KINDS), 4)]
    quantifier = dict(zip((c.name for c in creatures),
                          _pick(rng, ("All", "Some", "Some", "No"), 4)))
    ask = _pick(rng, ("can", "cannot"))[0]
    right = next(c for c in creatures if quantifier[c.name] == ("All" if ask == "can" else "No"))

    def build():
        rules = " ".join(f"{quantifier[c.name]} {KINDS[c.kind].plural} can {ability}."
                         for c in _pick(rng, creatures, 4))
        who = listing(f"{c.name} is {article(c.kind)}" for c in creatures)
        question = (f"{rules} {who}. Who can surely {ability}?" if ask == "can"
                    else f"{rules} {who}. Who surely cannot {ability}?")
        plural = KINDS[right.kind].plural
        solution = (f"{'All' if ask == 'can' else 'No'} {plural} can {ability}, and {right.name} "
                    f"is {article(right.kind)}, so {right.name} surely {ask} {ability}. For the "
                    f"others we cannot be sure.")
        return _mc("quantifier", key, question, right.name,
                   [c.name for c in creatures if c is not right], solution)
    key = ("reasoning", "quantifier", ability, ask,
           tuple(sorted((c.name, quantifier[c.name]) for c in creatures)))
    return key, build


NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight")


def _draw_count(rng):
    name = _pick(rng, ENTITIES)[0].name
    kinds = _pick(rng, tuple(KINDS), 3)
    seen = [kinds[int(i)] for i in rng.integers(0, 3, size=int(rng.integers(5, 9)))]
    target = seen[int(rng.integers(len(seen)))]
    count = seen.count(target)

    def build():
        plural = KINDS[target].plural
        counted = ", ".join(NUMBER_WORDS[1:count + 1])
        return _mc("count", key, f"{name} sees {listing(article(k) for k in seen)}. How many "
                   f"{plural} does {name} see?", count,
                   _pick(rng, [n for n in range(1, 9) if n != count], 3),
                   f"Count only the {plural}: {counted}. So {name} sees "
                   f"{_quantity(count, target, plural)}.")
    key = ("reasoning", "count", name, tuple(seen), target)
    return key, build


REASONING_KINDS = {"extreme_number": _draw_extreme_number, "extreme_measure": _draw_extreme_measure,
                   "convert": _draw_convert, "compare_units": _draw_compare_units,
                   "order": _draw_order, "if_then": _draw_if_then, "quantifier": _draw_quantifier,
                   "count": _draw_count}


def reasoning_problem(rng, split="train", kind=None) -> Problem:
    """A multiple-choice reasoning problem (a kind of REASONING_KINDS, at random if not given) whose
    question holds everything needed to answer it. Split by the problem's content."""
    draw = REASONING_KINDS[kind] if kind is not None else None

    def draw_any(rng):
        return (draw or REASONING_KINDS[_pick(rng, tuple(REASONING_KINDS))[0]])(rng)
    return _sample(rng, split, draw_any)
