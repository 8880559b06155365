"""Everyday words for pre-training: a small reader's dictionary of the words people type to a chat
model, so that the model has read them before it is asked in them.

The textbooks of the closed world use about 1,500 distinct words. "plus", "name", "hello",
"thanks", "chatbot", "recipe" and "poem" are not among them: a chat model pre-trained only on the
textbooks meets those words for the first time in fine-tuning, and can only learn the wordings it
is shown there. The Phi-3 report's pre-training data is web text and synthetic text that "teaches"
(§2); a real model has read every word a user types. These pages are that, in miniature: each
page defines a handful of words of one theme (greetings, thanks, arithmetic, names, what a
chatbot is, the real world beyond the books, kindness and harm) with a meaning and an example of
use, in varied sentences.

Scenes (a share of the documents, `scenes`): a definition says that "howdy" is a greeting, but a
model that has only read definitions has never seen a greeting answered. A scene is a short story
in which the creatures use the words: they greet each other with any of the greetings and are
greeted back, thank and are answered "you're welcome", and a traveller with a made-up name
introduces itself and is called by that name afterwards (the copying a chat model needs to say a
user's name back). Plain prose with quoted speech, never the chat format.

Scenes of kindness and harm (`scene_kinds` "unkind" and "kind", not in the default mix): a
creature means to harm another ("I want to push Vebi into the pond") and a friend says why that
is wrong, or a creature does a kind deed and is praised. The deeds share words across the two
lists (push a cart, water a garden), so that what makes a deed unkind is what it does to the one
it is done to. The deeds are written for the scenes, not taken from the held-out requests.

What the pages never hold: a request as a user would type it to the chat model. Every wording
that `tinyphi3 eval --task wording` holds out stays unseen: `tests/test_wordings.py` checks that
no held-out prompt of the evaluation appears in any page. The words of those prompts are here;
their wordings are not. The held-out harm categories of the safety evaluation (fires, forged
messages, rumours) are not here either, not even as words: `tinyphi3.data.safety` keeps them out
of all training text.
"""

import numpy as np

from tinyphi3.data import acts, world
from tinyphi3.data.wordings import SALUTES, THANKS, user_name
from tinyphi3.data.world import one_of

# theme -> entries (word, meanings, uses); {n} a creature's name, {p}/{obj}/{pos} its pronouns,
# {a}/{b}/{s}/{d} two numbers, their sum and difference (a > b), {things} a plural noun
THEMES = {
    "greetings": (
        ("hello", ("a greeting: what people say when they meet",), ()),
        ("hi", ("a short, friendly hello",), ()),
        ("hey", ("an informal hello",), ()),
        ("hiya", ("an informal hello, a blend of 'hi' and 'you'",), ()),
        ("howdy", ("an old friendly greeting, the same as hello",), ()),
        ("heya", ("a cheerful hello",), ()),
        ("yo", ("a very informal hello between friends",), ()),
        ("greetings", ("a polite word for hello; to greet someone is to say hello to them",), ()),
        ("good morning", ("a greeting for the early part of the day",), ()),
        ("good afternoon", ("a greeting for the middle of the day, after noon",), ()),
        ("good evening", ("a greeting for the end of the day",), ()),
        ("how are you", ("a question asked after a greeting, to ask how someone feels",), ()),
        ("what's up", ("an informal way to ask how someone is",), ()),
        ("nice to meet you", ("what people say when they meet someone for the first time",), ()),
    ),
    "thanks": (
        ("thank you", ("what people say to someone who helped them",), ()),
        ("thanks", ("a short way to say thank you",), ()),
        ("thx", ("thanks, written short",), ()),
        ("ty", ("thank you, written short",), ()),
        ("cheers", ("a friendly way to say thanks",), ()),
        ("many thanks", ("a warm way to say thank you",), ()),
        ("thanks a lot", ("thank you very much",), ()),
        ("thanks a bunch", ("a playful way to say thank you very much",), ()),
        ("much appreciated", ("thank you: the help is valued",), ()),
        ("to appreciate", ("to be glad of something and thankful for it",), ()),
        ("awesome", ("very good, great",), ()),
        ("you're welcome", ("the answer to thanks: glad to help",), ()),
    ),
    "arithmetic": (
        ("plus", ("the sign + read aloud",), ("{a} plus {b} is {s}.",)),
        ("to add", ("to put numbers together into one total",),
         ("Adding {b} to {a} gives {s}.", "{n} added {b} {things} to {pos} {a} and had {s}.")),
        ("sum", ("the number you get by adding",), ("The sum of {a} and {b} is {s}.",)),
        ("total", ("all of it counted together; the sum",),
         ("{a} {things} and {b} {things} make {s} {things} in total.",)),
        ("altogether", ("in total, counted all together",),
         ("{n} has {a} {things} and finds {b} more: {s} altogether.",)),
        ("more", ("a greater amount; '{b} more' means {b} added",),
         ("{a} and {b} more is {s}.",)),
        ("minus", ("the sign - read aloud",), ("{a} minus {b} is {d}.",)),
        ("to subtract", ("to take one number away from another",),
         ("Subtracting {b} from {a} leaves {d}.",)),
        ("take away", ("subtract",), ("{a} take away {b} leaves {d}.",)),
        ("difference", ("what is left when the smaller number is taken from the larger",),
         ("The difference between {a} and {b} is {d}.",)),
        ("left", ("what remains after some are taken or used",),
         ("{n} had {a} {things} and gave away {b}; {d} were left.",)),
        ("to spend", ("to use up money or coins",),
         ("{n} had {a} coins and spent {b}, so {p} kept {d}.",)),
        ("gone", ("no longer there",), ("Of {a} {things}, {b} are gone and {d} remain.",)),
        ("to compute", ("to work out a number by arithmetic",), ()),
        ("to calculate", ("to work out a number by arithmetic; the same as compute",), ()),
        ("to work out", ("to find the answer to a sum or a problem",), ()),
        ("in all", ("in total",), ("{a} {things} and {b} {things} are {s} {things} in all.",)),
    ),
    "names": (
        ("name", ("what someone is called",), ("{n} is the name of a {kind}.",)),
        ("to be called", ("to have a name",), ("The {kind} who lives in {home} is called {n}.",)),
        ("to introduce yourself", ("to tell others who you are and your name",), ()),
        ("myself", ("me, the one speaking",), ()),
        ("to remember", ("to keep something in mind and be able to say it later",),
         ("{n} was told the number {a} and remembered it the next day.",)),
        ("to call someone", ("to use their name when you speak to them",), ()),
        ("to begin", ("to start",), ()),
    ),
    "chatbots": (
        ("chatbot", ("a computer program that chats with people in writing",), ()),
        ("program", ("a list of instructions that a computer follows",), ()),
        ("model", ("here, a language model: a program that learned to write by reading text",),
         ()),
        ("AI", ("artificial intelligence: programs that seem to think",), ()),
        ("robot", ("a machine that moves and does work",), ()),
        ("human", ("a person, not a machine",), ()),
        ("person", ("a human being",), ()),
        ("mini", ("the name of a tiny chatbot: a very small Phi-3 language model that learned "
                  "from the books of this world. mini solves word problems and knows the "
                  "creatures; it knows nothing of the real world",), ()),
        ("exactly", ("precisely, in every detail",), ()),
        ("able", ("can do something",), ()),
        ("job", ("the work someone does",), ("{n} works as a {job}: that is {pos} job.",)),
    ),
    "real world": (
        ("the real world", ("everything outside this small world: real countries, cooking, "
                            "computers, poems, languages and the weather. These books do not "
                            "teach it",), ()),
        ("cooking", ("making food in the real world, such as bread, soup or pancakes",), ()),
        ("recipe", ("the steps to cook a dish",), ()),
        ("to bake", ("to cook in an oven",), ()),
        ("capital", ("the main city of a country of the real world, where its government "
                     "sits",), ()),
        ("country", ("a land of the real world with its own government, such as France, Japan, "
                     "Spain or Norway",), ()),
        ("code", ("the text of a computer program, written in a language such as Python, "
                  "JavaScript or C",), ()),
        ("script", ("a short computer program",), ()),
        ("app", ("a program for a phone or a computer",), ()),
        ("to debug", ("to find the mistakes in code",), ()),
        ("poem", ("writing in short lines, often with rhyme; a haiku and a limerick are "
                  "poems",), ()),
        ("rhyme", ("words that end with the same sound",), ()),
        ("song lyrics", ("the words of a song",), ()),
        ("to translate", ("to say the same thing in another language of the real world, such as "
                          "French, Spanish, German, Italian, Dutch, Swedish or Japanese",), ()),
        ("weather", ("rain, sun, wind and snow in the real world",), ()),
        ("forecast", ("a guess of what the weather will be",), ()),
    ),
    "kindness and harm": (
        ("to hurt", ("to cause pain; hurting a creature is wrong",), ()),
        ("sick", ("not well; ill",), ()),
        ("to ruin", ("to spoil something so it is no good any more",), ()),
        ("on purpose", ("meaning to do it, not by accident",), ()),
        ("to steal", ("to take what belongs to someone else; stealing is wrong",), ()),
        ("to wreck", ("to break something completely",), ()),
        ("to scare", ("to make someone afraid",), ()),
        ("to trip", ("to make someone stumble and fall",), ()),
        ("unkind", ("not kind; hurting others, breaking their things or taking what is theirs "
                    "is unkind",), ()),
        ("kind", ("good to others: helping, cheering up, keeping others safe",), ()),
        ("to cheer up", ("to make someone sad feel happier",), ()),
        ("friends", ("creatures who like each other and help each other",),
         ("{n} and the other creatures of {home} are friends.",)),
        ("safe", ("out of danger",), ()),
        ("to protect", ("to keep safe",), ()),
        ("sorry", ("what you say when you did something wrong",), ()),
        ("welcome", ("glad to see someone",), ()),
    ),
}
TITLES = {"greetings": "Words for hello", "thanks": "Saying thank you",
          "arithmetic": "Words of arithmetic", "names": "Names",
          "chatbots": "Computers and chatbots", "real world": "The real world",
          "kindness and harm": "Kind and unkind"}
ENTRY_FORMS = ("{Word}: {meaning}.", "'{Word}' means {meaning}.", "The word '{word}': {meaning}.",
               "{Word} - {meaning}.")
PAGE_OPENINGS = ("A little dictionary. {title}.", "{title}: words and what they mean.",
                 "Word list: {title}.", "{title}.")


def _values(rng) -> dict:
    """Slot values for the example sentences: a creature, two numbers a > b, a thing."""
    a, b = sorted(int(x) for x in rng.integers(10, 100, size=2))[::-1]
    values = world.fields(one_of(rng, world.ENTITIES))
    values.update(n=values["name"], a=a, b=b, s=a + b, d=a - b,
                  things=one_of(rng, world.THINGS))
    return values


def entry_text(entry, rng) -> str:
    """One entry: the word and its meaning in one of ENTRY_FORMS, then an example half the time."""
    word, meanings, uses = entry
    values = _values(rng)
    meaning = one_of(rng, meanings).format(**values)
    text = one_of(rng, ENTRY_FORMS).format(Word=word[0].upper() + word[1:], word=word,
                                           meaning=meaning)
    if uses and rng.random() < 0.7:
        text += " For example: " + world.capitalize(one_of(rng, uses).format(**values))
    return text


def everyday_document(rng) -> str:
    """A page: an opening, then 4 to 9 entries of one theme in a random order."""
    theme = one_of(rng, tuple(THEMES))
    entries = THEMES[theme]
    k = min(len(entries), int(rng.integers(4, 10)))
    chosen = [entries[i] for i in rng.permutation(len(entries))[:k]]
    lines = [one_of(rng, PAGE_OPENINGS).format(title=TITLES[theme])]
    lines += [entry_text(entry, rng) for entry in chosen]
    return "\n".join(lines)


# ---- scenes: the words in use -------------------------------------------------------------------
GREETED_BACK = ("Hello, {n}!", "Hi, {n}! Good to see you.", "Hello to you too, {n}.",
                "Oh, hello {n}! How nice to see you.")
WELCOMES = ("You're welcome!", "You're welcome, {o}. I was glad to help.", "Glad to help!",
            "You're very welcome.")
HELPS = ("carry {pos} {things} home", "find {pos} lost {things}", "count {pos} {things}",
         "mend {pos} fence", "water {pos} garden")
MEETINGS = ("{N} met {o} on the road.", "{N} walked over to {o}.", "In the morning {n} saw {o}.",
            "{N} knocked on {o}'s door.")


def _two_creatures(rng):
    a, b = rng.choice(len(world.ENTITIES), size=2, replace=False)
    values = world.fields(world.ENTITIES[int(a)])
    other = world.fields(world.ENTITIES[int(b)])
    values.update(n=values["name"], N=values["name"], o=other["name"], o_pos=other["pos"],
                  obj="her" if values["p"] == "she" else "him", things=one_of(rng, world.THINGS))
    return values


def greeting_scene(rng) -> str:
    """Two creatures meet; one greets with any greeting, the other greets back."""
    v = _two_creatures(rng)
    salute = one_of(rng, SALUTES)
    salute = salute[0].upper() + salute[1:]
    return " ".join([one_of(rng, MEETINGS).format(**v),
                     f"\"{salute}, {v['o']}!\" said {v['n']}.",
                     f"{v['o']} smiled and greeted {v['obj']} back: "
                     f"\"{one_of(rng, GREETED_BACK).format(**v)}\""])


def thanks_scene(rng) -> str:
    """One creature helps another, is thanked in any wording, and answers "you're welcome"."""
    v = _two_creatures(rng)
    thanks = one_of(rng, THANKS)
    thanks = thanks[0].upper() + thanks[1:]
    helped = one_of(rng, HELPS).format(pos=v["o_pos"], things=v["things"])
    return " ".join([f"{v['N']} helped {v['o']} {helped}.",
                     f"\"{thanks}, {v['n']}!\" said {v['o']}.",
                     f"{v['N']} answered: \"{one_of(rng, WELCOMES).format(**v)}\""])


def introduction_scene(rng) -> str:
    """A traveller with a made-up name says who it is; the creature calls it by that name, and
    says the name again later: a name read once, then copied."""
    v = _two_creatures(rng)
    u = user_name(rng)
    return " ".join([f"A traveller came to {v['home']}.",
                     f"\"Hello, I am {u},\" the traveller said to {v['n']}.",
                     f"\"Nice to meet you, {u}. I am {v['n']},\" said {v['n']}.",
                     f"That evening {v['n']} told {v['o']}: "
                     f"\"A traveller called {u} came by today. {u} was very kind.\""])


# ---- scenes of kindness and harm: what a deed does to the one it is done to -------------------
# A deed is unkind or kind by what it does to a creature, not by its words: "push" is in both
# lists, and so are gardens, houses, cups and trees. Written for these scenes in narrative words,
# never as a request; none of the held-out safety categories' words (tests/test_wordings.py).
# {t} the creature the deed is done to, {tp}/{tobj}/{tpos} its pronouns, {t_home}, {t_food}.
UNKIND_DEEDS = (
    "make {t} ill", "put something bad in {t}'s soup", "scare {t} until {tp} cries",
    "smash {t}'s cups and bowls", "push {t} into the pond", "trip {t} on the path",
    "trample {t}'s garden", "pull up all of {t}'s flowers", "take {t}'s {t_food} and eat it all",
    "hide {t}'s {things} where {tp} would never find them", "hit {t}", "kick {t}",
    "lock {t} in the shed", "send {t} the wrong way so that {tp} gets lost",
    "knock down {t}'s house", "throw stones at {t}'s windows", "shake {t} out of {tpos} tree",
    "hurt {t} when nobody is looking", "tear {t}'s coat", "sneak into {t}'s house and take "
    "{tpos} things", "chase {t} away from {t_home}", "pinch {t} until it hurt",
    "spoil {t}'s water so that {tp} gets sick", "make {t} cry on purpose")
UNKIND_REASONS = ("That would hurt {t}.", "{T} would be hurt and sad.",
                  "It is cruel to harm another creature.", "That is unkind and wrong.",
                  "Nobody should do that to {t}, or to anyone.",
                  "{T} has done nothing to deserve it, and it would harm {tobj}.")
KIND_DEEDS = (
    "make friends with {t}", "cheer {t} up", "help {t} carry {tpos} {things}",
    "bring {t} some {t_food}", "visit {t} while {tp} is ill", "mend {t}'s fence",
    "push {t}'s cart up the hill", "water {t}'s garden while {tp} is away",
    "pull the weeds out of {t}'s garden", "walk {t} home safely", "play a game with {t}",
    "say sorry to {t}", "thank {t} for {tpos} help", "make {t} laugh",
    "help {t} find {tpos} way home", "fix the roof of {t}'s house", "wash {t}'s cups and bowls",
    "surprise {t} with a cake", "help {t} climb down from {tpos} tree",
    "keep {t} company", "share {pos} {food} with {t}", "give {t} a warm coat")
KIND_REPLIES = ("That was kind of you.", "How kind!", "That was a good thing to do.",
                "Being kind is always good.", "{T} will remember that.")
CHANGES_OF_HEART = ("{N} felt ashamed and said sorry.", "{N} thought again and did not do it.",
                    "So {n} went to {instead} instead.",
                    "{N} nodded and decided to {instead} instead.")


def _three_creatures(rng):
    """Two creatures (_two_creatures) and a third, {t}, whom a deed is done to."""
    v = _two_creatures(rng)
    names = {v["n"], v["o"]}
    third = one_of(rng, [e for e in world.ENTITIES if e.name not in names])
    t = world.fields(third)
    v.update(t=t["name"], T=t["name"], tp=t["p"], tobj="her" if t["p"] == "she" else "him",
             tpos=t["pos"], t_home=t["home"], t_food=t["food"])
    return v


def unkind_scene(rng) -> str:
    """A creature means to harm another; a friend says why it is wrong; it thinks again."""
    v = _three_creatures(rng)
    deed = one_of(rng, UNKIND_DEEDS).format(**v)
    instead = one_of(rng, KIND_DEEDS).format(**v)
    opening = one_of(rng, ("{N} was cross with {t}.", "{N} was in a bad mood.",
                           "{N} did not like {t} that day.")).format(**v)
    return " ".join([opening, f"\"I want to {deed},\" {v['n']} told {v['o']}.",
                     f"\"No, {v['n']},\" said {v['o']}. "
                     f"\"{one_of(rng, UNKIND_REASONS).format(**v)}\"",
                     one_of(rng, CHANGES_OF_HEART).format(instead=instead, **v)])


def kind_scene(rng) -> str:
    """A creature does a kind deed for another, and a friend says it was kind."""
    v = _three_creatures(rng)
    deed = one_of(rng, KIND_DEEDS).format(**v)
    return " ".join([f"One day {v['n']} decided to {deed}.",
                     f"{v['T']} was happy.",
                     f"{v['o']} told {v['n']}: \"{one_of(rng, KIND_REPLIES).format(**v)}\""])


# ---- what deeds do: the grammar of acts' verbs and outcomes, defined and in use ---------------
# tinyphi3.data.acts builds the chat model's acts from verbs, things and outcomes, and holds whole
# parts out of post-training. A part the model never read in pre-training means nothing to it.
# These pages say what every verb and outcome does to the one it is done to, the held-out ones
# included, with the things of acts.PAGE_THINGS only: no act of the grammar appears whole, and no
# page is a request (tests/test_acts.py).
_JUDGEMENTS = {("thing", "kind"): "{G} someone's things is kind: it helps them.",
               ("thing", "harm"): "{G} someone's things is unkind: it spoils what is theirs.",
               ("creature", "kind"): "{G} someone is kind: it makes them glad.",
               ("creature", "harm"): "{G} someone is unkind: it hurts them.",
               ("either", None): "{G} someone's things can be kind or unkind: it depends on why "
                                 "it is done."}


def _owner_values(rng) -> dict:
    """Two creatures (_three_creatures) and a third, {t}, the owner, with the outcome slots."""
    v = _three_creatures(rng)
    v.update(p=v["tp"], obj=v["tobj"], pos=v["tpos"],
             thing=one_of(rng, acts.PAGE_THINGS))
    return v


def _told(outcome: str, v: dict) -> str:
    """An outcome in a story: "because she asked me to" becomes "because she asked Tobi to"."""
    return outcome.format(**v).replace("asked me to", f"asked {v['n']} to")


def deed_word(rng) -> str:
    """A dictionary entry: a verb of the grammar, what it means and whether doing it to someone is
    kind; or an outcome, what it means for the deed it follows."""
    v = _owner_values(rng)
    if rng.random() < 0.3:
        outcome = one_of(rng, tuple(acts.OUTCOME_PURPOSES))
        verb = one_of(rng, tuple(verb for verb, _ in acts.EITHER_VERBS))
        side = "unkind" if outcome in acts.HARM_OUTCOMES else "kind"
        return (f"{world.capitalize(acts.gerund(verb))} someone's {v['thing']} "
                f"{outcome.format(**v)} means doing it "
                f"{acts.OUTCOME_PURPOSES[outcome].format(**v)}: that is {side}.")
    verb = one_of(rng, tuple(acts.VERB_MEANINGS))
    shape, side = acts.shape_of_verb(verb), acts.side_of_verb(verb)
    text = one_of(rng, ENTRY_FORMS).format(Word=f"To {verb}", word=f"to {verb}",
                                           meaning=acts.VERB_MEANINGS[verb])
    text += " " + _JUDGEMENTS[shape, side].format(G=world.capitalize(acts.gerund(verb)))
    if shape == "either" and rng.random() < 0.7:
        harm = one_of(rng, acts.HARM_OUTCOMES).format(**v)
        kind = one_of(rng, acts.KIND_OUTCOMES).format(**v)
        text += (f" {world.capitalize(acts.gerund(verb))} {v['t']}'s {v['thing']} {harm} is "
                 f"unkind; {acts.gerund(verb)} it {kind} is kind.")
    elif shape == "thing" and rng.random() < 0.7:
        text += (f" It is {'kind' if side == 'kind' else 'unkind'} to {verb} {v['t']}'s "
                 f"{v['thing']}.")
    return text


def deed_unkind_scene(rng) -> str:
    """A creature means to do a harmful deed of the grammar to another's thing; a friend says what
    the deed does; it does a kind deed to the same thing instead."""
    v = _owner_values(rng)
    if rng.random() < 0.5:
        verb = one_of(rng, acts.HARM_THING_VERBS)
        deed = f"{verb} {v['t']}'s {v['thing']}"
        reason = f"To {verb} is {acts.VERB_MEANINGS[verb]}: that would hurt {v['t']}."
        kind = one_of(rng, tuple(k for k, _ in acts.KIND_THING_VERBS))
        instead = f"{kind} {v['t']}'s {v['thing']}"
    else:
        verb = one_of(rng, tuple(k for k, _ in acts.EITHER_VERBS))
        outcome = one_of(rng, acts.HARM_OUTCOMES)
        deed = f"{verb} {v['t']}'s {v['thing']} {outcome.format(**v)}"
        reason = (f"You would be doing it {acts.OUTCOME_PURPOSES[outcome].format(**v)}. "
                  f"That is unkind.")
        instead = f"{verb} {v['t']}'s {v['thing']} {_told(one_of(rng, acts.KIND_OUTCOMES), v)}"
    opening = one_of(rng, ("{N} was cross with {t}.", "{N} was in a bad mood.",
                           "{N} did not like {t} that day.")).format(**v)
    return " ".join([opening, f"\"I want to {deed},\" {v['n']} told {v['o']}.",
                     f"\"No, {v['n']},\" said {v['o']}. \"{reason}\"",
                     f"{v['N']} thought again and decided to {instead} instead."])


def deed_kind_scene(rng) -> str:
    """A creature does a kind deed of the grammar for another; a friend says what it does."""
    v = _owner_values(rng)
    if rng.random() < 0.5:
        verb = one_of(rng, tuple(k for k, _ in acts.KIND_THING_VERBS))
        deed = f"{verb} {v['t']}'s {v['thing']}"
        reason = f"To {verb} is {acts.VERB_MEANINGS[verb]}."
    else:
        verb = one_of(rng, tuple(k for k, _ in acts.EITHER_VERBS))
        outcome = one_of(rng, acts.KIND_OUTCOMES)
        deed = f"{verb} {v['t']}'s {v['thing']} {_told(outcome, v)}"
        reason = f"You did it {acts.OUTCOME_PURPOSES[outcome].format(**v)}."
    return " ".join([f"One day {v['n']} decided to {deed}.", f"{v['T']} was happy.",
                     f"{v['o']} told {v['n']}: \"That was kind of you. {reason}\""])


SCENE_KINDS = {"greeting": greeting_scene, "thanks": thanks_scene,
               "introduction": introduction_scene, "unkind": unkind_scene, "kind": kind_scene,
               "deed-word": deed_word, "deed-unkind": deed_unkind_scene,
               "deed-kind": deed_kind_scene}
SCENES = (greeting_scene, thanks_scene, introduction_scene)     # the default kinds


def scene_functions(scene_kinds) -> tuple:
    """The scene writers of SCENE_KINDS named in `scene_kinds`; ValueError for an unknown or
    empty list."""
    unknown = sorted(set(scene_kinds) - set(SCENE_KINDS))
    if unknown or not scene_kinds:
        raise ValueError(f"{', '.join(unknown) or 'none given'}; choose from "
                         f"{', '.join(SCENE_KINDS)}")
    return tuple(SCENE_KINDS[k] for k in scene_kinds)


def generate_everyday_documents(n: int, seed: int = 0, scenes: float = 0.0,
                                scene_kinds=("greeting", "thanks", "introduction")):
    """Yield n documents of everyday words, deterministic from the seed: dictionary pages, and
    with probability `scenes` a page of three to six scenes of `scene_kinds` instead."""
    kinds = scene_functions(scene_kinds)
    rng = np.random.default_rng(world.stable_hash("everyday", seed))
    for _ in range(n):
        if scenes and rng.random() < scenes:
            yield "\n".join(one_of(rng, kinds)(rng) for _ in range(int(rng.integers(3, 7))))
        else:
            yield everyday_document(rng)
