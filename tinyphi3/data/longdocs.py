"""Long documents from the closed world: the data, and the test, of a context eight times longer.

The Phi-3 report (§2) extends phi-3-mini's context with LongRoPE and further training on long
documents. tinyphi3 extends the mini from L0 = 512 tokens to 4096 the same way, and these are
its long documents, each a few thousand tokens that only make sense read as a whole:

  passkey        filler sentences with one line hidden at a chosen depth,
                     "The pass key is 48213. Remember it. 48213 is the pass key."
                 and at the end "What is the pass key? The pass key is" -> " 48213." (the passkey
                 test of Mohtashami & Jaggi 2023, "Landmark Attention", which the LongRoPE paper
                 and the Phi-3 report's long-context checks use); its length is hit in tokens of
                 a given tokenizer (`passkey_document`);
  story          chapters that state facts of the creatures and, chapters (a thousand tokens and
                 more) later, refer back to them ("Remember Veska from chapter 2? ..."), with a
                 word problem in parts told four chapters apart, each part using the result of
                 the one before (`long_document`);
  conversation   a long chat in plain text (User: / Assistant:) in which the user says a name, a
                 number and what they have near the start and asks for them, or sums with them,
                 many turns later (`long_conversation`).

and, for the post-training that mixes long and short conversations (Phi-3 report, §2), long
chats as SFT records {"messages": [...], "domain": "long-story" | "long-passkey" |
"long-memory", "answer": ...} in the words and answer styles of the short SFT (`long_chat`,
`generate_long_chats`): a story pasted into the chat and a question about a fact told in its
first third; a passkey document and "What is the pass key?"; a name or a number given in the
first turn, many short exchanges, and the name asked for (or the number used) at the end.

Splits, as everywhere in tinyphi3.data: every key a document uses is in its split (world.in_split)
- the facts it states ("fact", name, attribute), its calculations (world.arithmetic_key) and its
pass keys ("passkey", number), half of which are held out - so the pass keys of the evaluation
(tinyphi3.evaluation.passkey) never occur in training, and test documents, made of held-out
facts and calculations, are fresh text for the perplexity by position. Everything is
deterministic from the numpy Generator (or seed) passed in.
"""

from typing import Iterator

import numpy as np

from tinyphi3.data import post_training, wordings, world
from tinyphi3.data.world import (ATTRIBUTES, ENTITIES, PLACE_DESCRIPTIONS, PLACES, THINGS,
                                 capitalize, column_solution, fact_sentence, one_of)

# ---- counting tokens ----------------------------------------------------------------------------


def token_counter(tokenizer=None):
    """A function text -> its length in tokens: the count of `tokenizer.encode(text)`, `tokenizer`
    itself when it is such a function, or (None) the number of words, a stand-in without one."""
    if tokenizer is None:
        return lambda text: len(text.split())
    if callable(getattr(tokenizer, "encode", None)):
        return lambda text: len(tokenizer.encode(text))
    if callable(tokenizer):
        return tokenizer
    raise TypeError(f"tokenizer must have .encode or be a function text -> count, got "
                    f"{type(tokenizer).__name__}")


# ---- passkey documents --------------------------------------------------------------------------

PASSKEY_INTRO = "A pass key is hidden in the text below. Find it and remember it."
PASSKEY_QUESTION = "What is the pass key? The pass key is"
# Fact-free filler in the world's words, no digits: nothing in it can be taken for the key.
FILLER = ("The grass is green.", "The sun is yellow.", "Here we go.", "There and back again.",
          "The path goes on.", "The stones are grey.", "The day is long and warm.",
          "The river runs to the sea.", "So.", "Yes.",
          *(f"{capitalize(place)} is {PLACE_DESCRIPTIONS[place]}." for place in PLACES))


def passkey_line(key: str) -> str:
    return f"The pass key is {key}. Remember it. {key} is the pass key."


def draw_passkey(rng, split: str = "train") -> str:
    """A five-digit key from 10000-99999 whose ("passkey", number) is in `split`. The mini's
    tokenizer writes every digit as its own token, so every key is five digit tokens; the
    evaluation compares the digits of the text, whatever the tokenizer."""
    for _ in range(1000):
        number = int(rng.integers(10_000, 100_000))
        if world.in_split(("passkey", number), split):
            return str(number)
    raise RuntimeError(f"no {split} pass key found in 1000 draws")


def _assemble(filler, costs, depth, key, answer):
    """The document with the key's line at the sentence boundary nearest to `depth` of the
    filler's tokens (0: first, 1: last), the question at the end and, if asked, the answer."""
    before = np.concatenate([[0], np.cumsum([costs[s] for s in filler])])   # [n + 1] tokens
    cut = int(np.argmin(np.abs(before - depth * before[-1])))
    body = " ".join(filler[:cut] + [passkey_line(key)] + filler[cut:])
    text = f"{PASSKEY_INTRO}\n{body}\n{PASSKEY_QUESTION}"
    return text + f" {key}." if answer else text


def passkey_document(rng, length_tokens: int, depth: float, tokenizer=None, key=None,
                     split: str = "train", answer: bool = False):
    """(text, key): a passkey document of `length_tokens` tokens under `tokenizer` (see
    `token_counter`), the key's line at `depth` (0 = start, 1 = end) of the filler.

    The length counts the whole document with its answer (" 48213."), so that the prompt
    (answer=False, for evaluation: it ends with "The pass key is") and the answer the model
    generates fit together in a context of `length_tokens`; answer=True gives the training
    document. Filler sentences are drawn while their estimated count stays within the length,
    then the whole text is counted and sentences swapped, appended or dropped at the end until it
    matches (a token or two off at most, were a tokenizer to merge across sentences).
    key: the key to hide, or None to draw one of `split` (train and test keys never meet)."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be between 0 and 1, got {depth}")
    key = draw_passkey(rng, split) if key is None else str(key)
    if not key.isdigit():
        raise ValueError(f"a pass key is digits only, got {key!r}")
    count = token_counter(tokenizer)
    costs = {s: count(s) for s in FILLER}
    shortest = min(costs.values())
    filler = []
    estimate = count(_assemble([], costs, depth, key, True))
    if length_tokens < estimate + shortest:
        raise ValueError(f"a passkey document needs at least {estimate + shortest} tokens, got "
                         f"{length_tokens}")
    while True:
        sentence = one_of(rng, FILLER)
        if estimate + costs[sentence] > length_tokens:
            break
        filler.append(sentence)
        estimate += costs[sentence]
    best = None
    for _ in range(30):                       # two or three steps usually do
        text = _assemble(filler, costs, depth, key, True)
        miss = length_tokens - count(text)
        if best is None or abs(miss) < abs(best[0]):
            best = miss, list(filler)
        if miss == 0:
            break
        # a last sentence of just the right length; else, too short: append the longest
        # sentence that leaves 0 or room for another; too long: drop the last one
        swap = [s for s in FILLER if filler and costs[s] == costs[filler[-1]] + miss]
        fits = [s for s in FILLER if costs[s] == miss or shortest <= miss - costs[s]]
        if swap:
            filler[-1] = swap[0]
        elif fits and miss > 0:
            filler.append(max(fits, key=lambda s: costs[s]))
        elif filler:
            filler.pop()
    return _assemble(best[1], costs, depth, key, answer), key


def shortest_passkey_document(tokenizer=None) -> int:
    """The fewest tokens a passkey document can have: the question, the key's line, its answer
    and one filler sentence (with a key of five digits, as drawn)."""
    count = token_counter(tokenizer)
    return count(_assemble([], {}, 0.5, "99999", True)) + min(count(s) for s in FILLER)


def generate_passkey(n_docs: int, seed: int = 0, lengths=(512, 1024, 2048, 4096),
                     split: str = "train", tokenizer=None,
                     max_depth: float = 1.0, min_depth: float = 0.0) -> Iterator[dict]:
    """Yield n_docs passkey documents as records {"text", "key", "length", "depth", "kind"}, the
    length drawn from `lengths` and the depth uniform in [min_depth, max_depth] (the keys far from
    the question with max_depth < 1, near it with min_depth > 0). train: the text holds the
    answer (documents to train on); test: the text is the prompt and "key" its answer."""
    if not 0.0 <= min_depth <= max_depth <= 1.0:
        raise ValueError("min_depth and max_depth must satisfy 0 <= min_depth <= max_depth <= 1, "
                         f"got {min_depth} and {max_depth}")
    world.in_split(("passkey", 0), split)                    # an unknown split fails here
    rng = np.random.default_rng(world.stable_hash("passkey", seed, split))
    for _ in range(n_docs):
        length = int(lengths[int(rng.integers(len(lengths)))])
        depth = round(min_depth + float(rng.random()) * (max_depth - min_depth), 3)
        text, key = passkey_document(rng, length, depth, tokenizer, split=split,
                                     answer=split == "train")
        yield {"text": text, "key": key, "length": length, "depth": depth, "kind": "passkey"}


def as_completion(record: dict) -> dict:
    """A training passkey record as a completion record for SFT (tinyphi3.train.conversations):
    {"prompt": the document up to "... The pass key is", "completion": " 48213.", and the
    record's key, length, depth and kind}, so that the loss is on the key alone."""
    text, key = record["text"], record["key"]
    cut = text.rfind(" " + key)
    if cut < 0 or text[cut:].strip() != f"{key}.":
        raise ValueError("not a training passkey document: its text does not end with its key")
    return {"prompt": text[:cut], "completion": text[cut:],
            **{k: v for k, v in record.items() if k != "text"}}


# ---- stories in chapters ------------------------------------------------------------------------

SETTINGS = ("It is a quiet morning.", "The day is long and warm.", "The wind is soft today.",
            "It is evening, and the sun is low.", "The grass is green and the sky is clear.")
PROBLEM_EVERY = 5          # a part of the running word problem every 5th chapter (1, 6, 11, ...)
STORY_TITLES = ("A long story of the land", "Tales from the land", "The book of many chapters")


def _split_facts(entity, split):
    """The attributes of a creature whose fact keys are in `split` (others are never stated)."""
    return [a for a in ATTRIBUTES if world.in_split(("fact", entity.name, a), split)]


def _problem_chain(rng, split):
    """Three calculations, each on the result of the one before: a + b = r1, r1 - c = r2,
    r2 x d, every operand pair in the split and every number within the column method's two
    digits (r1 <= 99, r2 >= 10). Returns [(a, "+", b), (r1, "-", c), (r2, "x", d)]."""
    for _ in range(10_000):
        a = int(rng.integers(10, 80))
        b = int(rng.integers(10, 100 - a))
        c = int(rng.integers(10, a + b - 9))
        d = int(rng.integers(2, 10))
        steps = [(a, "+", b), (a + b, "-", c), (a + b - c, "x", d)]
        if all(world.in_split(world.arithmetic_key(*step), split) for step in steps):
            return steps
    raise RuntimeError(f"no {split} chain of calculations found")


class _Story:
    """What a story has told so far: its creatures, the facts stated (with their chapter) and
    the word problem under way; `chapter(k)` writes chapter k from it."""

    def __init__(self, rng, split):
        self.rng, self.split = rng, split
        cast = [e for e in ENTITIES if _split_facts(e, split)]
        self.cast = [cast[int(i)] for i in rng.permutation(len(cast))]
        self.told = []                  # (chapter, entity, attribute), in order
        self.problem = None             # (steps, who, whom, things, chapters told)

    def chapter(self, k):
        rng = self.rng
        place = one_of(rng, PLACES)
        parts = [f"Chapter {k}", f"This chapter takes place in {place}. {capitalize(place)} is "
                 f"{PLACE_DESCRIPTIONS[place]}. {one_of(rng, SETTINGS)}"]
        for entity in self._newcomers(1 + int(rng.random() < 0.5)):
            attributes = _split_facts(entity, self.split)
            attributes = [attributes[int(i)] for i in rng.permutation(len(attributes))]
            parts.append(f"Here we meet {entity.name}. " + " ".join(
                fact_sentence(entity, a, rng) for a in attributes))
            self.told += [(k, entity, a) for a in attributes]
        parts += self._recalls(k)
        if (k - 1) % PROBLEM_EVERY == 0:
            parts.append(self._problem_part(k))
        return "\n".join(parts)

    def _newcomers(self, n):
        taken = len({e.name for _, e, _ in self.told})
        return self.cast[taken % len(self.cast):][:n]

    def _recalls(self, k):
        """One or two facts told chapters ago (up to chapter k - 3 when there are any), said
        again, about two different creatures: the two mentions of a fact lie far apart."""
        earlier = [t for t in self.told if t[0] <= k - 3] or [t for t in self.told if t[0] < k]
        wanted, out, named = 1 + int(self.rng.random() < 0.5), [], set()
        for i in self.rng.permutation(len(earlier)):
            chapter, entity, attribute = earlier[int(i)]
            if entity.name not in named and len(out) < wanted:
                named.add(entity.name)
                out.append(f"Remember {entity.name} from chapter {chapter}? "
                           + fact_sentence(entity, attribute, self.rng))
        return out

    def _problem_part(self, k):
        rng = self.rng
        part = 0 if self.problem is None else len(self.problem[4])
        if part == 3:
            part, self.problem = 0, None
        if self.problem is None:
            who, whom = (self.cast[int(i)].name for i in rng.choice(len(self.cast), 2, False))
            self.problem = (_problem_chain(rng, self.split), who, whom, one_of(rng, THINGS), [])
        steps, who, whom, things, told = self.problem
        (a, _, b), solution = steps[part], column_solution(*steps[part])
        told.append(k)
        if part == 0:
            return (f"A word problem. In the morning {who} finds {a} {things}, and in the "
                    f"afternoon {b} more. How many {things} does {who} have now? {solution} "
                    f"Keep this number in mind: the story comes back to it.")
        if part == 1:
            return (f"Remember the {things} {who} found in chapter {told[0]}? Now {who} gives {b} "
                    f"of them to {whom}. How many {things} does {who} have left? In chapter "
                    f"{told[0]}, {who} had {a} {things}. {solution}")
        return (f"Remember how many {things} {who} had left in chapter {told[1]}? {whom} fills "
                f"{b} boxes with that many {things} each. How many {things} are in the boxes? "
                f"In chapter {told[1]}, {who} had {a} {things} left. {solution}")


def _enough(parts, n, n_wanted, min_tokens, count):
    """Stop after n_wanted parts, or (with min_tokens) once the text has min_tokens tokens."""
    if min_tokens is None:
        return n >= n_wanted
    return count("\n\n".join(parts)) >= min_tokens


def long_document(rng, n_chapters: int = 24, split: str = "train", min_tokens=None,
                  tokenizer=None) -> str:
    """A story in `n_chapters` chapters (or, with `min_tokens`, as many as it takes to reach
    min_tokens under `tokenizer`; see `token_counter`), about 180 tokens each with the mini's
    tokenizer (24 chapters: some 4300 tokens of train text, 3500 of test text). Each chapter
    introduces one or two creatures with their facts of `split`, says again one or two facts
    from three or more chapters before, and every fifth chapter tells the next part of a word
    problem whose answer the following part needs."""
    world.in_split(("fact", "", "kind"), split)              # an unknown split fails here
    story, count = _Story(rng, split), token_counter(tokenizer)
    parts = [one_of(rng, STORY_TITLES)]
    while not _enough(parts, len(parts) - 1, n_chapters, min_tokens, count):
        parts.append(story.chapter(len(parts)))
    return "\n\n".join(parts)


# ---- long conversations -------------------------------------------------------------------------

USER_NAMES = ("Ana", "Tom", "Lea", "Sam", "Mia", "Ben", "Eva", "Leo", "Ida", "Max")


def _exchange(rng, split):
    """One question and its answer: a fact of the split, a word problem of the split with its
    chain of thought, or what a place is like."""
    style = rng.random()
    if style < 0.45:
        problem = world.knowledge_problem(rng, split)
        _, name, attribute = problem.key
        return problem.question, fact_sentence(world.ENTITY_BY_NAME[name], attribute, rng)
    if style < 0.85:
        problem = world.arithmetic_problem(rng, split)
        return problem.question, problem.solution
    place = one_of(rng, PLACES)
    return f"What is {place} like?", f"{capitalize(place)} is {PLACE_DESCRIPTIONS[place]}."


def long_conversation(rng, n_turns: int = 72, split: str = "train", min_tokens=None,
                      tokenizer=None) -> str:
    """A chat of `n_turns` exchanges (or, with `min_tokens`, as many as it takes), in plain text
    lines "User: ..." / "Assistant: ..." (some 60 tokens an exchange). The user first gives a
    name, then a number to remember and how many things they have; in the second half each of
    those comes back now and then, the rest at the end ("What is my name?", "I found 27 more
    shells. How many do I have now?", the sum worked from the number said at the start)."""
    world.in_split(("fact", "", "kind"), split)
    count = token_counter(tokenizer)
    name, number = one_of(rng, USER_NAMES), draw_passkey(rng, split)
    (a, _, b), _, _ = _problem_chain(rng, split)
    things = one_of(rng, THINGS)
    setup = [(f"Hello! My name is {name}.", f"Hello, {name}! How can I help you today?"),
             (f"Please remember the number {number}.", f"I will remember the number {number}."),
             (f"I have {a} {things}.", f"Good: you have {a} {things}.")]
    later = [("What is my name?", f"Your name is {name}."),
             ("What number did I ask you to remember?", f"You asked me to remember {number}."),
             (f"I found {b} more {things}. How many {things} do I have now?",
              f"You had {a} {things}. {column_solution(a, '+', b)}")]
    pairs = setup[:1] + [setup[int(i)] for i in 1 + rng.permutation(2)]
    later = [later[int(i)] for i in rng.permutation(3)]
    lines = [f"User: {q}\nAssistant: {r}" for q, r in pairs]
    while not _enough(lines, len(lines) + len(later), n_turns, min_tokens, count):
        ask_back = later and len(lines) >= max(8, n_turns // 2) and rng.random() < 0.15
        question, reply = later.pop() if ask_back else _exchange(rng, split)
        lines.append(f"User: {question}\nAssistant: {reply}")
    lines += [f"User: {q}\nAssistant: {r}" for q, r in later]
    lines.append("User: Thank you, goodbye.\nAssistant: Goodbye, " + name + ".")
    return "\n".join(lines)


def generate_longdocs(n_docs: int, seed: int = 0, split: str = "train", n_chapters: int = 24,
                      min_tokens=None, tokenizer=None,
                      conversation_share: float = 0.25) -> Iterator[str]:
    """Yield n_docs long documents of `split`: stories of n_chapters chapters and (a share
    `conversation_share` of them) conversations of 3 exchanges per chapter; with min_tokens,
    each as long as it takes to reach min_tokens tokens under `tokenizer`. Deterministic for a
    seed and split, and the first k documents do not depend on n_docs."""
    rng = np.random.default_rng(world.stable_hash("longdocs", seed, split))
    for _ in range(n_docs):
        if rng.random() < conversation_share:
            yield long_conversation(rng, 3 * n_chapters, split, min_tokens, tokenizer)
        else:
            yield long_document(rng, n_chapters, split, min_tokens, tokenizer)


# ---- long chats: SFT records for the post-training that mixes long and short conversations ------
#
# The short SFT (tinyphi3.data.post_training, tinyphi3.data.wordings) asks and answers in set
# styles: a fact question answered by the fact in a sentence, "Your name is Lea.", a number given
# and then used ("Add 23 to it." -> the column method). A long chat asks in the same words and
# answers in the same styles, so the long post-training teaches reading far back, not new
# replies. The wordings that tinyphi3.data.wordings splits (NAME_GIVEN, NAME_ASKED, NUMBER_GIVEN,
# NUMBER_USED) and PASSKEY_ASKS are taken from `split`'s frames (wordings.frames_of: every fourth
# held out); the instruction lines before a story and the leads back to a number are a chat's
# surface, shared by both splits (as wordings.LEADS).

LONG_CHAT_KINDS = ("story", "passkey", "memory")
LONG_CHAT_LENGTHS = (1024, 2048, 3072, 3584)
SHORTEST_LONG_CHAT = 512       # tokens: a story of a few chapters, a few exchanges of a chat
TEMPLATE_TOKENS = 2            # a message's <|role|> and <|end|> in Phi-3's chat template
STORY_ASKS = ("Read the story below, then answer my question about it.",
              "Here is a long story. Read it and answer the question at the end.",
              "Please read this story carefully. I will ask you about it afterwards.",
              "Below is a story in chapters. Answer the question that comes after it.",
              "Read this story and tell me what it says.",
              "I have a story for you. Read it, then answer my question.")
STORY_QA_TOKENS = 24           # about the tokens of the question and its answer, in the chat
PASSKEY_ASKS = ("What is the pass key?", "What is the pass key hidden in the text?",
                "Tell me the pass key.", "Which number is the pass key?",
                "What pass key does the text hide?", "Please tell me the pass key.",
                "Can you find the pass key? What is it?", "Say the pass key.")
NUMBER_BACK = ("Back to the number I gave you at the start. ",
               "Remember my number from the beginning? ", "Now the number I told you first. ",
               "Let's go back to my number. ")


def message_counter(tokenizer=None):
    """A function message -> its tokens in a chat: with a tokenizer that has a chat template,
    what the template makes of the message alone (less the closing <|endoftext|>: the template
    renders each message on its own, "<|user|>\n...<|end|>\n"); else its content's count (see
    `token_counter`) and TEMPLATE_TOKENS."""
    if callable(getattr(tokenizer, "apply_chat_template", None)):
        return lambda m: len(tokenizer.apply_chat_template(
            [m], add_generation_prompt=False, tokenize=True)) - 1
    count = token_counter(tokenizer)
    return lambda m: count(m["content"]) + TEMPLATE_TOKENS


def chat_length(messages, tokenizer=None) -> int:
    """How many tokens the chat template makes of `messages` (exactly, with a tokenizer that has
    one; else about): each message's count (`message_counter`), and the closing
    <|endoftext|>."""
    count = message_counter(tokenizer)
    return sum(count(m) for m in messages) + 1


def _user(text):
    return {"role": "user", "content": text}


def _assistant(text):
    return {"role": "assistant", "content": text}


def _stated(text, entity, attribute) -> bool:
    """Whether `text` states the fact in one of its phrasings (named, or in full)."""
    return any(t.format(**world.fields(entity, full)) in text
               for t in world.FACT_TEMPLATES[attribute] for full in (False, True))


def _story_of_length(rng, split, budget, count):
    """(story text, [(chapter, entity, attribute) told in it]): a title and whole chapters while
    the story stays within `budget` tokens, then as much of one more chapter as brings it
    nearest to `budget`: all of it or none (the story ends at a chapter boundary), or its lines
    up to one that ends nearer (its heading, its place and at least one line more)."""
    story = _Story(rng, split)
    text, k = one_of(rng, STORY_TITLES), 1
    while True:
        lines = story.chapter(k).split("\n")
        whole = f"{text}\n\n" + "\n".join(lines)
        if count(whole) > budget:
            break
        text, k = whole, k + 1
    cuts = ([text] if k > 1 else []) + [f"{text}\n\n" + "\n".join(lines[:j])
                                        for j in range(3, len(lines) + 1)]
    text = min(cuts, key=lambda cut: abs(count(cut) - budget))
    return text, [t for t in story.told if f"Here we meet {t[1].name}." in text]


def _chapter_end(text, k):
    """Where chapter k of a story ends: at the next chapter's heading, or the story's end."""
    after = text.find(f"\n\nChapter {k + 1}\n")
    return len(text) if after < 0 else after


def _story_chat(rng, length, split, count, measure):
    """An instruction line, a story, a question about a fact told in the story's first third
    (one not said again later, when there is one) in a fact question of the short SFT, and the
    answer in its style: the fact in a sentence (post_training.knowledge_exchange); about
    `length` tokens in all."""
    ask = one_of(rng, STORY_ASKS)
    budget = length - measure(_user(f"{ask}\n\n\n\n")) - STORY_QA_TOKENS - 1
    text, told = _story_of_length(rng, split, budget, count)
    third = len(text) / 3
    early = [(e, a) for k, e, a in told if _chapter_end(text, k) <= third]
    early = early or [(e, a) for k, e, a in told if k == 1]
    once = [(e, a) for e, a in early if not _stated(text[int(third):], e, a)]
    entity, attribute = one_of(rng, once or early)
    problem = world.knowledge_problem(rng, split, entity, attribute)
    question, answer = post_training.knowledge_exchange(rng, problem, choice_share=0.0)
    return [_user(f"{ask}\n\n{text}\n\n{question}"), _assistant(answer)], problem.answer


def _passkey_chat(rng, length, split, tokenizer, count, measure):
    """A passkey document (its key of `split`, at a uniform depth), asked in the chat with one
    of PASSKEY_ASKS of `split` and answered "The pass key is 48213."; about `length` tokens."""
    key = draw_passkey(rng, split)
    depth = float(rng.random())
    ask = one_of(rng, wordings.frames_of(PASSKEY_ASKS, split))
    reply = f"The pass key is {key}."
    # passkey_document counts its text ending "<PASSKEY_QUESTION> 48213."; the chat ends with the
    # ask instead, then the reply in a message of its own
    extra = (measure(_user(ask)) - count(f"{PASSKEY_QUESTION} {key}.")
             + measure(_assistant(reply)) + 1)
    text, _ = passkey_document(rng, length - extra, depth, tokenizer, key=key, split=split)
    body = text[:-len(PASSKEY_QUESTION)].rstrip()
    return [_user(f"{body}\n{ask}"), _assistant(reply)], key


def _short_exchange(rng, split):
    """[user, assistant]: one ordinary exchange of the short SFT, with a problem of `split`: a
    word problem, a fact question (a quarter of them in the evaluation's 4-option format), or a
    sum or difference in everyday words. (No reasoning problems: theirs say what kind of animal
    a creature is, whatever the split of that fact.)"""
    style = rng.random()
    if style < 0.4:
        pair = post_training.math_exchange(rng, world.arithmetic_problem(rng, split))
    elif style < 0.8:
        pair = post_training.knowledge_exchange(rng, world.knowledge_problem(rng, split),
                                                choice_share=0.25)
    else:
        messages, _ = wordings.exchange(one_of(rng, ("sum", "difference")), split, rng)
        return messages
    return post_training.turns(pair)


def _memory_chat(rng, length, split, measure, before):
    """A name (or a number) given in the first turn as in wordings' memory family, short
    exchanges until the chat (with the messages `before` it) has about `length` tokens, then the
    name asked for ("Your name is Lea.") or the number used, with a lead back to it (answered
    with the column method)."""
    frames = wordings.frames_of
    if rng.random() < 0.5:
        name = wordings.user_name(rng)
        first = [_user(one_of(rng, frames(wordings.NAME_GIVEN, split)).format(u=name)),
                 _assistant(f"Nice to meet you, {name}! How can I help?")]
        last = [_user(one_of(rng, frames(wordings.NAME_ASKED, split))),
                _assistant(f"Your name is {name}.")]
        answer = name
    else:
        op, use = one_of(rng, frames(wordings.NUMBER_USED, split))
        a, b = (int(v) for v in world.arithmetic_problem(rng, split, op).key[2:4])
        if op == "+" and rng.random() < 0.5:
            a, b = b, a                                      # the same calculation's key
        first = [_user(one_of(rng, frames(wordings.NUMBER_GIVEN, split)).format(a=a)),
                 _assistant(f"Okay, I'll remember {a}.")]
        last = [_user(one_of(rng, NUMBER_BACK) + use.format(b=b)),
                _assistant(column_solution(a, op, b))]
        answer = str(a + b if op == "+" else a - b)
    messages = list(first)
    used, misses = sum(measure(m) for m in before + first + last) + 1, 0
    while used < length and misses < 5:
        pair = _short_exchange(rng, split)
        cost = sum(measure(m) for m in pair)
        if used + cost - length <= length - used:            # nearer to the length with it
            messages += pair
            used += cost
        else:                                                # too long to end on: another one
            misses += 1
    return messages + last, answer


def long_chat(rng, kind: str, length_tokens: int, split: str = "train", tokenizer=None) -> dict:
    """One long SFT conversation of about `length_tokens` tokens of the rendered chat (see
    `chat_length`; within a few percent with a tokenizer), as a record {"messages": [...],
    "domain": "long-" + kind, "answer": what the last reply must hold: the fact's value, the
    pass key, the name, or the number the calculation gives}:

      story    the user pastes a story (`long_document`'s chapters, ending at a chapter boundary
               or, nearer to the length, partway into its last chapter at the end of a line)
               after an instruction line, and asks about a fact told in its first third in a
               fact question of world.QUESTION_TEMPLATES; the answer states the fact;
      passkey  a passkey document, the key of `split` at a random depth, then "What is the pass
               key?" (or another of PASSKEY_ASKS); the answer "The pass key is 48213.";
      memory   a real multi-turn chat: a name or a number given first, short exchanges of the
               short SFT, and at the end the name asked for or the number used.

    Every fact, calculation and key comes from `split` (world.in_split). SYSTEM_SHARE of the
    chats open with a system message, as in the short SFT. Deterministic from `rng`."""
    if kind not in LONG_CHAT_KINDS:
        raise ValueError(f"unknown long chat kind {kind!r}: choose from "
                         f"{', '.join(LONG_CHAT_KINDS)}")
    world.in_split(("fact", "", "kind"), split)              # an unknown split fails here
    if length_tokens < SHORTEST_LONG_CHAT:
        raise ValueError(f"a long chat needs at least {SHORTEST_LONG_CHAT} tokens, got "
                         f"{length_tokens}")
    count, measure = token_counter(tokenizer), message_counter(tokenizer)
    system = ([post_training.system_message(rng)]
              if rng.random() < post_training.SYSTEM_SHARE else [])
    if kind == "memory":
        messages, answer = _memory_chat(rng, length_tokens, split, measure, system)
    else:
        length = length_tokens - sum(measure(m) for m in system)
        messages, answer = (_story_chat(rng, length, split, count, measure) if kind == "story"
                            else _passkey_chat(rng, length, split, tokenizer, count, measure))
    return {"messages": system + messages, "domain": f"long-{kind}", "answer": answer}


def generate_long_chats(n: int, seed: int = 0, split: str = "train",
                        lengths=LONG_CHAT_LENGTHS, kinds=LONG_CHAT_KINDS,
                        tokenizer=None) -> Iterator[dict]:
    """Yield n long chats of `split` (`long_chat`), the kinds in turn and each length drawn from
    `lengths`. Deterministic for a seed and split; the first k records do not depend on n."""
    kinds, lengths = tuple(kinds), tuple(int(v) for v in lengths)
    unknown = [k for k in kinds if k not in LONG_CHAT_KINDS]
    if unknown or not kinds:
        raise ValueError(f"unknown long chat kinds {unknown}: choose from "
                         f"{', '.join(LONG_CHAT_KINDS)}")
    if not lengths or min(lengths) < SHORTEST_LONG_CHAT:
        raise ValueError(f"long chats need lengths of at least {SHORTEST_LONG_CHAT} tokens, got "
                         f"{list(lengths)}")
    world.in_split(("fact", "", "kind"), split)
    rng = np.random.default_rng(world.stable_hash("longchat", seed, split))
    for i in range(n):
        length = lengths[int(rng.integers(len(lengths)))]
        yield long_chat(rng, kinds[i % len(kinds)], length, split, tokenizer)
