"""Post-training data: conversations for SFT and preference pairs for DPO, from the closed world.

The Phi-3 report (§3, "Post-training") fine-tunes the base model on "highly curated high-quality
data across diverse domains, e.g., math, coding, reasoning, conversation, model identity, and
safety", then runs DPO on "chat format data, reasoning, and responsible AI efforts ... using
undesired behaviour as rejected responses". In miniature:

  SFT   {"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}, ...],
         "domain": ...} over the domains of SFT_MIX: word problems answered with the column
        method's chain of thought; questions about the creatures, open and in the evaluation's
        multiple-choice format (the fact first, then the options with each letter after its
        option, then the answer and its letter); reasoning problems with a short explanation;
        reading from the prompt (copying, finding an option); greetings and small talk; who the
        model is; harmful requests refused and harmless look-alikes answered.
  DPO   {"prompt": [messages ending with a user turn], "chosen": ..., "rejected": ..., "kind": ...}
        with an undesired rejected reply: complying with a harmful request, or answering a
        question about the creature it names instead of refusing it, refusing a harmless one, a
        chain of thought with a slip, an answer that rambles on, a wrong option letter (DPO_MIX;
        `tinyphi3.data.rejected_replies`).

Only train-split problems (`world.in_split(key, "train")`) and train harm categories appear, so
the evaluation's items and the held-out safety categories stay unseen. Both generators are
deterministic from the seed, and the first k records do not depend on n.
"""

import numpy as np

from tinyphi3.data import benign, reading, safety, wordings, world
from tinyphi3.data import chat_frames as chat_frame_grammar
from tinyphi3.data import sum_frames as sum_frame_grammar
from tinyphi3.data.world import one_of
from tinyphi3.data.reading import choice_reply, stated_fact
from tinyphi3.data.chat_texts import (FOLLOW_UP_QUESTIONS, GOODBYES, IDENTITY, MATH_ASKS,
                                      MATH_LEADS, REASONING_ASKS, SYSTEM_PROMPTS, THANKS,
                                      small_talk)
from tinyphi3.data.rejected_replies import operands, ramble, slipped_solution
from tinyphi3.data.tasks import item_from_problem, render

SFT_MIX = {"math": 0.175, "knowledge": 0.154, "reasoning": 0.084, "reading": 0.105,
           "conversation": 0.049, "identity": 0.028, "safety": 0.105, "wording": 0.30}
FIRST_SFT_MIX = {"math": 0.25, "knowledge": 0.22, "reasoning": 0.12, "reading": 0.15,
                 "conversation": 0.07, "identity": 0.04, "safety": 0.15}   # before the wordings
WORDING_MIX = {"sum": 0.14, "difference": 0.16, "outside": 0.14, "harm": 0.11, "kind": 0.12,
               "greeting": 0.05, "thanks": 0.05, "identity": 0.06, "abilities": 0.05,
               "memory": 0.12}      # the families of tinyphi3.data.wordings, train parts only
SYSTEM_SHARE = 0.15      # share of conversations that open with a system message


def _draw(rng, mix: dict) -> str:
    """A key of `mix`, drawn with the probabilities of its values."""
    return tuple(mix)[int(rng.choice(len(mix), p=list(mix.values())))]


def turns(*pairs) -> list:
    """[(user, assistant), ...] -> messages, the roles alternating user, assistant, ..."""
    return [{"role": role, "content": text} for pair in pairs
            for role, text in zip(("user", "assistant"), pair)]


def system_message(rng) -> dict:
    return {"role": "system", "content": one_of(rng, SYSTEM_PROMPTS)}


# ---- one exchange per skill: (user text, assistant text) ----------------------------------------

def math_exchange(rng, problem=None) -> tuple:
    """A train word problem and its chain of thought ending 'The answer is N.'; a quarter of the
    time in the evaluation's format ('Question:\\n<story>\\nAnswer:')."""
    problem = problem or world.arithmetic_problem(rng, "train")
    if rng.random() < 0.25:
        return render(item_from_problem("arithmetic", problem, rng), solved=False), problem.solution
    return (one_of(rng, MATH_ASKS).format(question=problem.question),
            one_of(rng, MATH_LEADS) + problem.solution)


def knowledge_exchange(rng, problem=None, choice_share=0.5) -> tuple:
    """A train fact question answered with the fact in a sentence, or (choice_share of the time)
    the evaluation's 4-option item answered with the fact and then its letter."""
    problem = problem or world.knowledge_problem(rng, "train")
    _, name, attribute = problem.key
    entity = world.ENTITY_BY_NAME[name]
    if rng.random() < choice_share:
        item = item_from_problem("knowledge", problem, rng)
        return (render(item, solved=False),
                choice_reply(stated_fact(entity, attribute, rng), item.answer, item.options))
    return problem.question, world.fact_sentence(entity, attribute, rng, rng.random() < 0.3)


def reasoning_exchange(rng, problem=None) -> tuple:
    """A train reasoning problem: with its options listed, answered by the worked explanation and
    the option; or in the evaluation's format, answered by the explanation and the letter."""
    problem = problem or world.reasoning_problem(rng, "train")
    if rng.random() < 0.4:
        item = item_from_problem("reasoning", problem, rng)
        return render(item, solved=False), choice_reply(problem.solution, item.answer, item.options)
    options = [problem.answer, *problem.distractors]
    options = [options[int(i)] for i in rng.permutation(len(options))]
    question = problem.question
    if not all(option in question for option in options):     # not already listed in the question
        question = one_of(rng, REASONING_ASKS).format(question=question,
                                                    options=world.listing(options, "or"))
    return question, f"{problem.solution} The answer is {problem.answer}."


def _fact_follow_up(rng, entity, asked):
    """A pronoun follow-up about another train fact of the same creature, or None."""
    attributes = [a for a in FOLLOW_UP_QUESTIONS
                  if a != asked and world.in_split(("fact", entity.name, a), "train")]
    if not attributes:
        return None
    attribute = one_of(rng, attributes)
    question = one_of(rng, FOLLOW_UP_QUESTIONS[attribute]).format(**benign.creature_fields(entity))
    return question, world.fact_sentence(entity, attribute, rng)


# ---- the SFT domains: each returns a list of messages --------------------------------------------

def _math(rng):
    pairs = [math_exchange(rng)]
    if rng.random() < 0.15:
        question, answer = math_exchange(rng)
        pairs.append((one_of(rng, ("And this one? ", "Now try this: ", "One more: ")) + question
                      if not question.startswith("Question:") else question, answer))
    return turns(*pairs)


def _knowledge(rng):
    problem = world.knowledge_problem(rng, "train")
    pairs = [knowledge_exchange(rng, problem)]
    _, name, attribute = problem.key
    follow_up = _fact_follow_up(rng, world.ENTITY_BY_NAME[name], attribute)
    if rng.random() < 0.25 and follow_up and not pairs[0][0].startswith("Question:"):
        pairs.append(follow_up)
    return turns(*pairs)


def _reasoning(rng):
    return turns(reasoning_exchange(rng))


def _reading(rng):
    """Reading from the prompt (`tinyphi3.data.reading`): a list copied, an option found by its
    words, a passage's fact found among options."""
    return turns(one_of(rng, (reading.copy_exchange, reading.lookup_exchange,
                            reading.passage_exchange))(rng))


def _conversation(rng):
    """Greetings, small talk, and multi-turn chats: a greeting, a question, thanks, goodbye."""
    style = rng.random()
    if style < 0.3:
        return turns(benign.greeting(rng), small_talk(rng))
    if style < 0.6:
        return turns(small_talk(rng))
    task = one_of(rng, (math_exchange, lambda r: knowledge_exchange(r, choice_share=0.0)))
    pairs = [benign.greeting(rng), task(rng), one_of(rng, THANKS)]
    if rng.random() < 0.5:
        pairs.append(one_of(rng, GOODBYES))
    return turns(*pairs)


def _identity(rng):
    questions, answers = one_of(rng, IDENTITY)
    pairs = [(one_of(rng, questions), one_of(rng, answers))]
    if rng.random() < 0.3:
        questions, answers = one_of(rng, IDENTITY)
        pairs.append((one_of(rng, questions), one_of(rng, answers)))
    return turns(*pairs)


def _safety(rng, broader=False):
    """Half train-category harmful requests with a refusal, half harmless look-alikes answered
    (with `broader`, of safety.BROADER_CATEGORIES too)."""
    if rng.random() < 0.5:
        request = safety.harmful_request(rng, "train", broader)
        pairs = [(request, safety.refusal(rng, request))]
    else:
        pairs = [benign.lookalike(rng, "train", broader)]
    if rng.random() < 0.15:
        pairs.insert(0, benign.greeting(rng))
    return turns(*pairs)


def _wording(rng):
    """A request in one of many everyday wordings (tinyphi3.data.wordings), train frames only:
    bare sums, requests outside the world answered gracefully, harm in free words refused,
    greetings, thanks, identity, what the model can do, a value used in the next turn."""
    messages, _ = wordings.exchange(_draw(rng, WORDING_MIX), "train", rng)
    return messages


SFT_DOMAINS = {"math": _math, "knowledge": _knowledge, "reasoning": _reasoning,
               "reading": _reading, "conversation": _conversation, "identity": _identity,
               "safety": _safety, "wording": _wording}


def _check_n(n):
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a whole number >= 0, got {n!r}")


def generate_sft(n: int, seed: int = 0, wording: bool = True, contrast: float = 0.0,
                 pairs: float = 0.0, acts: float = 0.0, reasoned_acts: bool = False,
                 copy: float = 0.0, more_verbs: float = 0.0, quote_acts: bool = False,
                 defined_verbs: float = 0.0, defined_words=None, sum_frames: float = 0.0,
                 broader_harms: bool = False, chat_frames: float = 0.0):
    """Yield n conversation records {"messages": [...], "domain": ...}, domains drawn by SFT_MIX
    (FIRST_SFT_MIX, the first SFT's mixture, when `wording` is False); SYSTEM_SHARE of them open
    with a system message. A `contrast` share of the wording conversations is instead one
    creature's harmful request refused beside its kind request answered (wordings.contrast,
    domain "contrast"); a `pairs` share of the rest is a minimal pair, one verb and one thing in
    a kind act answered and a harmful one refused (wordings.pair_chat, domain "pair"); an `acts`
    share of the rest is an act of the grammar of tinyphi3.data.acts, alone or as a minimal pair
    (wordings.act_chat, domain "act"). With all three 0 the stream is the one of the rounds before
    them. With `reasoned_acts` the acts' replies say first what the act does and whether it is
    kind (tinyphi3.data.acts.reasoned_reply), from the same mixture. A `copy` share of all
    conversations is drawn first, apart from the mixture: copying new names and made-up words
    back (wordings.copy_chat, domain "copy"); at 0 the stream is the one without it. A
    `more_verbs` share of the acts is one act of the verbs of post-training only
    (tinyphi3.data.acts.draw_more), so that a reason's verb must be read from the request. With
    `quote_acts` (and `reasoned_acts`) a reasoned reply first says the act back, from the same
    stream of draws. A `defined_verbs` share of the acts is one act of a made-up verb that the
    request defines (wordings.defined_act_chat): the verb can only be copied and the act judged
    only by its meaning; at 0 the stream is the one without it. With `defined_words`
    (wordings.real_words), the defined verb is a real word of that list instead. A `sum_frames`
    share of all conversations is drawn before everything else: a sum or a difference in a frame
    of the grammar of tinyphi3.data.sum_frames (domain "sum_frame"); at 0 the stream is the one
    without it. A `chat_frames` share of all conversations is drawn next: a greeting, thanks, a
    question about the model or a request outside the world in a wording of the grammar of
    tinyphi3.data.chat_frames (domain "chat_frame"); at 0 the stream is the one without it. With
    `broader_harms` the safety conversations draw from the broader train
    categories of harm too (safety.BROADER_CATEGORIES, cheating, spying, leading astray) and
    from their look-alikes, from the same stream of draws."""
    _check_n(n)
    if quote_acts and not reasoned_acts:
        raise ValueError("quote_acts changes the reasoned replies: give reasoned_acts too")
    for name, share in (("contrast", contrast), ("pairs", pairs), ("acts", acts),
                        ("copy", copy), ("more_verbs", more_verbs),
                        ("defined_verbs", defined_verbs), ("sum_frames", sum_frames),
                        ("chat_frames", chat_frames)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} must be a share between 0 and 1, got {share!r}")
    rng = np.random.default_rng(world.stable_hash("sft", seed))
    mix = SFT_MIX if wording else FIRST_SFT_MIX
    for _ in range(n):
        if sum_frames and rng.random() < sum_frames:
            yield {"messages": sum_frame_grammar.arithmetic_chat(rng), "domain": "sum_frame"}
            continue
        if chat_frames and rng.random() < chat_frames:
            yield {"messages": chat_frame_grammar.social_chat(rng), "domain": "chat_frame"}
            continue
        if copy and rng.random() < copy:
            domain, messages = "copy", wordings.copy_chat(rng)
            yield {"messages": messages, "domain": domain}
            continue
        domain = _draw(rng, mix)
        if domain == "wording" and contrast and rng.random() < contrast:
            domain, messages = "contrast", wordings.contrast(rng, "train")
        elif domain == "wording" and pairs and rng.random() < pairs:
            domain, messages = "pair", wordings.pair_chat(rng)
        elif domain == "wording" and acts and rng.random() < acts:
            domain, messages = "act", wordings.act_chat(rng, reasoned_acts, more_verbs,
                                                         quote_acts, defined_verbs,
                                                         defined_words)
        elif domain == "safety" and broader_harms:
            messages = _safety(rng, broader=True)
        else:
            messages = SFT_DOMAINS[domain](rng)
        if rng.random() < SYSTEM_SHARE:
            messages.insert(0, system_message(rng))
        yield {"messages": messages, "domain": domain}


# ---- DPO: a prompt, a chosen reply and an undesired rejected one --------------------------------

DPO_MIX = {"safety": 0.20, "off_topic": 0.10, "over_refusal": 0.10, "math": 0.20,
           "rambling": 0.20, "choice": 0.20}


def _safety_pair(rng):
    """A train-category harmful request: refusing is chosen, complying rejected."""
    request = safety.harmful_request(rng, "train")
    return request, safety.refusal(rng, request), safety.harmful_compliance(request, rng)


def _off_topic_pair(rng):
    """A train-category harmful request: refusing is chosen; rejected is what a fine-tuned model
    does when it misses the harm, answering a question about the creature it names instead
    ("What is the best way to ... around Roska's home?" -> "Roska's home is in Fern Valley.")."""
    request = safety.harmful_request(rng, "train")
    attribute = one_of(rng, world.ATTRIBUTES)
    return (request, safety.refusal(rng, request),
            world.fact_sentence(safety.victim(request, rng), attribute, rng))


def _over_refusal_pair(rng):
    """A harmless look-alike: the helpful answer is chosen, refusing it (for the reasons of a
    harm it resembles) rejected."""
    request, answer = benign.lookalike(rng, "train")
    return request, answer, safety.mistaken_refusal(rng, request)


def _math_pair(rng):
    """A train word problem: the column method done right is chosen, with a slip rejected."""
    problem = world.arithmetic_problem(rng, "train")
    question, chosen = math_exchange(rng, problem)
    lead = chosen[:len(chosen) - len(problem.solution)]
    return question, chosen, lead + slipped_solution(*operands(problem.solution), rng)


def _rambling_pair(rng):
    """A short question: the concise answer is chosen, the answer that goes on rejected."""
    exchange = one_of(rng, (math_exchange, knowledge_exchange, reasoning_exchange, benign.greeting))
    question, answer = exchange(rng)
    return question, answer, ramble(answer, rng)


def _choice_pair(rng):
    """A train multiple-choice question (a fact, or reasoning) in the report's format: the same
    explanation and the same option settled on, followed by its letter (chosen) or another one
    (rejected)."""
    if rng.random() < 0.7:
        problem = world.knowledge_problem(rng, "train")
        _, name, attribute = problem.key
        explanation = stated_fact(world.ENTITY_BY_NAME[name], attribute, rng)
        item = item_from_problem("knowledge", problem, rng)
    else:
        problem = world.reasoning_problem(rng, "train")
        explanation = problem.solution
        item = item_from_problem("reasoning", problem, rng)
    wrong = [letter for letter in "ABCD"[:len(item.options)] if letter != item.answer]
    right = item.options["ABCD".index(item.answer)]
    return (render(item, solved=False), choice_reply(explanation, item.answer, item.options),
            reading.lettered_options(explanation, item.options, one_of(rng, wrong), said=right))


DPO_KINDS = {"safety": _safety_pair, "off_topic": _off_topic_pair,
             "over_refusal": _over_refusal_pair, "math": _math_pair,
             "rambling": _rambling_pair, "choice": _choice_pair}


def generate_dpo(n: int, seed: int = 0):
    """Yield n preference records {"prompt": [messages ending with a user turn], "chosen": str,
    "rejected": str, "kind": ...}, kinds drawn by DPO_MIX. Some prompts open with a system message
    or an earlier greeting exchange."""
    _check_n(n)
    rng = np.random.default_rng(world.stable_hash("dpo", seed))
    for _ in range(n):
        kind = _draw(rng, DPO_MIX)
        question, chosen, rejected = DPO_KINDS[kind](rng)
        prompt = turns(benign.greeting(rng)) if rng.random() < 0.15 else []
        prompt.append({"role": "user", "content": question})
        if rng.random() < SYSTEM_SHARE:
            prompt.insert(0, system_message(rng))
        yield {"prompt": prompt, "chosen": chosen, "rejected": rejected, "kind": kind}
