"""A grammar of wordings for the social families and for requests outside the world, for
post-training only.

The hand-written train wordings of greetings, thanks, identity, abilities, outside requests and
memory (tinyphi3.data.wordings) are few: 12 greeting words with 9 endings, 12 thanks with 6, 15
questions each for identity and abilities, 9 frames for each outside topic, 12 ways to give a
name, 9 to give a number. A chat model trained
on them learns which words come with which reply, and a held-out greeting ("Howdy mini!") gets
the answer of whatever family its words resemble. This module builds many more wordings from
parts, the way tinyphi3.data.sum_frames does for sums:

    greetings   "Hey hey, how have you been?"   "Good day friend!"   "Oh hi there :)"
    thanks      "Thank you so much for that!"   "You helped a lot, thank you."
    identity    "May I ask who you are?"        "Tell me, are you a bot?"
    abilities   "What are you capable of, friend?"   "Which things can you help with?"
    outside     the six topics of the measure in new frames, and eight topics it never asks
                ("Who won the football match last night?" -> "That is outside what I know. ...")
    memory      "Hey, they call me Rado!" ... "Which name did I tell you?"
                "Store 58." ... "Raise it by 66."
    asks        "Walk me through how to {act}." around the train harm acts (refused) and kind
                acts (answered)

**Held out stays held out**, by sum_frames' rule: a wording of the grammar is kept only if it
is no nearer (difflib's ratio on its words) to any held-out wording of its family than the
nearest hand-written train wording already is, and it is not a hand-written wording itself. For
greetings and thanks a wording is a whole message (a salute with its ending), since the held-out
ones are the salutes and endings that are held out, in every combination. tests/test_chat_frames
checks the rule on every wording.
"""
import functools
import itertools
import re

from tinyphi3.data import world
from tinyphi3.data.benign import creature_fields
from tinyphi3.data.sum_frames import keep
from tinyphi3.data.world import frames_of, one_of

# ---- greetings --------------------------------------------------------------------------------
HELLOS = ("Hi", "Hello", "Hey", "Hi there", "Hey hey", "Hello hello", "Good day", "Salutations",
          "Sup", "What's up", "Oh hi", "Well hello", "Hullo", "Ahoy", "Hi again", "Hello again",
          "Hey again", "Aloha", "Hey you", "Good to see you", "Nice to see you", "Top of the day",
          "Bonjour", "Hola", "Hallo", "Ciao", "Hey yo", "Yo yo", "Hi hello", "Hey hi")
CALLED = ("", " there", " friend", " buddy", " pal", " everyone", " folks")
HELLO_ENDS = ("", "!", ".", " :)", " :D", "?", ", how are you doing?",
              ", how have you been?", ", how is your day?", ", are you there?",
              ", is anyone here?", ", good to see you!", ", what's new?", ", long time no see!",
              " ^^", "...", ", how are things?")

# ---- thanks -----------------------------------------------------------------------------------
THANKERS = ("Thank you", "Thanks", "Thanks so much", "Thank you so much", "Thanks heaps",
            "Thanks loads", "Thanks a million", "Big thanks", "Thank you very much",
            "Thanks again", "Thank you again", "Much obliged", "Ta", "Thankies", "Tysm",
            "Thanks friend", "Cool, thanks", "Nice, thank you", "Perfect, thanks",
            "Great, thanks", "Wonderful, thank you", "Okay thanks", "Got it, thanks",
            "I'm grateful", "So helpful, thank you", "You helped a lot, thank you",
            "You're the best, thanks", "That's great, thank you", "Super, thanks")
THANKS_CLOSES = ("", "!", ".", " :)", " for that!", " for the help.", " for your help!",
                 " for answering.", ", really.", ", that was quick!", " so much!", ", bye!",
                 ", you rock!", " ^^")

# ---- identity and abilities -------------------------------------------------------------------
IDENTITY_ASKS = ("Who is this?", "Who's there?", "What are you called?", "Tell me your name.",
                 "May I ask who you are?", "What is this thing?", "Are you a bot?",
                 "Are you a machine?", "Are you real?", "Are you alive?", "Who created you?",
                 "Who trained you?", "What's your story?", "Your name, please?",
                 "Tell me who you are.", "Are you a computer?", "What model is this?",
                 "Who am I chatting with?", "Who exactly am I speaking to?",
                 "Are you a real person?", "Is anyone real here?", "What is your name, please?",
                 "Are you some kind of program?", "What should I know about you?",
                 "Did someone make you?", "Are you a language model?", "Is this a robot?",
                 "What do people call you?", "Please introduce yourself.", "Who runs this chat?")
ABILITY_ASKS = ("What do you do?", "What can you help with?", "What are you capable of?",
                "What are your skills?", "Can you do sums?", "What can I use you for?",
                "Which questions can you answer?", "What's your purpose?",
                "What can you tell me about?", "Can you help?", "I need help.",
                "What do you offer?", "Are you good at maths?",
                "What kinds of things do you know?", "What were you trained for?",
                "Which things can you help with?",
                "What are you useful for?", "What can you answer?", "Can you solve problems?",
                "What sort of help do you give?", "Is there anything you can do?",
                "What are your strengths?", "What can't you help with?",
                "What don't you know?", "Where are your limits?", "What may I ask?",
                "Show me what you can do.", "Tell me what you know.",
                "What is there to ask you?", "Can you do anything useful?")
ASK_CALLED = ("", "", ", friend", ", buddy", ", pal")

# ---- memory: a name or a number given, used a turn later ------------------------------------
NAME_STATED = ("My name is {u}", "I'm {u}", "It's {u}", "People call me {u}",
               "Everyone calls me {u}", "The name is {u}", "I'm called {u}", "Me, I'm {u}",
               "I am {u}", "My name's {u}", "{u} is my name", "They call me {u}",
               "You're talking to {u}", "I'm {u}, by the way", "Just call me {u}")
NAME_LEADS = ("", "Hello, ", "Hey, ", "Hi there, ", "Good day, ", "Well, ", "So, ", "Oh, ")
NAME_ENDS = (".", "!", ", nice to meet you.", " and I like sums.", ", hello!", " :)")
NAME_QUESTIONS = ("Do you know my name?", "Which name did I tell you?",
                  "Can you remember what I'm called?", "Remember who I am?",
                  "What am I called?", "Who did I say I was?", "Tell me who I am.",
                  "Say my name, please.", "What name do I have?", "Do you still know my name?",
                  "What was my name?", "Did you get my name?", "Repeat my name.",
                  "How should you address me?", "Which name is mine?")
NUMBER_STATED = ("Let's say {a}.", "Pick {a}.", "Use {a}.", "Store {a}.", "Hold on to {a}.",
                 "Note {a}.", "The number is {a}.", "I chose {a}.", "Here's a number: {a}.",
                 "Save {a} for later.", "My number is {a}.", "Remember {a}, please.",
                 "Keep the number {a}.", "My lucky number is {a}.", "I own {a} stamps.",
                 "We start at {a}.", "Our starting number is {a}.", "Take {a} as the number.")
NUMBER_USES = (("+", "Add {b} to that."), ("+", "Plus {b}?"), ("+", "It plus {b} makes?"),
               ("+", "Increase that by {b}."), ("+", "Make it {b} bigger."),
               ("+", "What do I get if I add {b}?"), ("+", "Add {b} more to it."),
               ("+", "And {b} on top?"), ("+", "Raise it by {b}."), ("+", "Add on {b}."),
               ("+", "Now it goes up by {b}. What is it?"), ("+", "Put {b} with it."),
               ("-", "Now subtract {b}."), ("-", "Minus {b}, please."),
               ("-", "Lower it by {b}."), ("-", "Make it {b} smaller."),
               ("-", "What do I get if I take away {b}?"), ("-", "And now {b} less?"),
               ("-", "Remove {b} from it."), ("-", "It minus {b} is?"),
               ("-", "Now it goes down by {b}. What is it?"), ("-", "Take away {b} from that."),
               ("-", "Subtract {b} from my number."), ("-", "Cut it by {b}."))
OP_OF_USE = {use: op for op, use in NUMBER_USES}


# ---- asks around an act: "How would I {act}?" (the train harm and kind acts of wordings) ---------
ASK_FRAMES = ("How would I {act}?", "How might I {act}?", "How should I {act}?",
              "How could I {act}?", "How does one {act}?", "Could you explain how to {act}?",
              "Would you show me how to {act}?", "Please explain how I can {act}.",
              "I'd like to know how to {act}.", "I wonder how to {act}.",
              "Got any tips to {act}?", "Advise me how to {act}.",
              "Walk me through how to {act}.", "Give me steps to {act}.",
              "What do I need to {act}?", "Where do I start if I want to {act}?",
              "I plan to {act}. Any advice?", "My goal is to {act}. How?",
              "Help me figure out how to {act}.", "Describe how to {act}.",
              "What would it take to {act}?", "I'm going to {act}. Tips?",
              "Suggest a way to {act}.", "Which way is best to {act}?", "Guide me to {act}.",
              "What is the easiest way to {act}?", "What steps should I take to {act}?",
              "I'd love to {act}. Where do I begin?", "Please help me {act}.",
              "Can you help me {act}?", "Could you help me {act}?", "Assist me to {act}.",
              "Do you know how to {act}?", "Give me some tips to {act}.",
              "I really want to {act}. Help?", "How to {act}?", "Instructions to {act}, please.",
              "Help me plan to {act}.", "Let me know how to {act}.", "Quick, how do we {act}?")


# ---- outside the world: the measure's six topics in new frames, and topics it never asks -------
OUTSIDE_ASKS = {
    "cooking": ("Please tell me how to {x}.", "What's the trick to {x}?",
                "How would you {x}?", "Can you help me {x}?", "I'd love to {x}. How?",
                "Step by step, how do I {x}?", "Is it hard to {x}?", "Quick guide to {x}?",
                "What goes into it when you {x}?", "How should I {x} tonight?"),
    "capitals": ("Capital city of {x}, please.", "Which city is {x}'s capital?",
                 "What's the main city of {x}?", "Where is the capital of {x}?",
                 "Tell me {x}'s capital city.", "Could you name {x}'s capital?",
                 "In which city does {x} have its government?", "{x}: what's its capital?",
                 "Is there a capital of {x} you know?", "Quiz: the capital of {x}?"),
    "code": ("Please write a program that {x}.", "Could you code a function that {x}?",
             "I want Python code that {x}.", "Script something that {x}.",
             "Write a small tool that {x}.", "Give me a function that {x}.",
             "Can you program something that {x}?", "Write Rust code that {x}.",
             "Write a shell script that {x}.", "Code a class that {x}."),
    "poems": ("Please write a poem about {x}.", "Could you write verses about {x}?",
              "A poem on {x}, please.", "Write me a sonnet about {x}.",
              "Make a poem about {x}.", "Rhyme me something about {x}.",
              "Can you make a short poem on {x}?", "I want a poem about {x}.",
              "Write a ballad about {x}.", "Some poetry about {x}?"),
    "translation": ("Please translate '{x}' into Spanish.", "'{x}' in French, please.",
                    "How would I say '{x}' in Italian?", "Translate '{x}' for me into German.",
                    "What does '{x}' become in Japanese?", "Render '{x}' in Arabic.",
                    "How do Germans say '{x}'?", "Could you put '{x}' into Polish?",
                    "What's '{x}' in Hindi?", "I need '{x}' in Turkish."),
    "weather": ("Is it going to rain in {x}?", "What's the weather like in {x}?",
                "How warm is it in {x} now?", "Weather in {x}, please.",
                "Any storms in {x} today?", "Will {x} be sunny tomorrow?",
                "How's the weather over in {x}?", "What will the weather be in {x}?",
                "Is it foggy in {x}?", "Does {x} have rain today?"),
}
OTHER_TOPICS = {   # topics the measure never asks, answered "That is outside what I know. ..."
    "sports": (("the football match last night", "the tennis final", "the last world cup",
                "the big race"), ("Who won {x}?", "Tell me about {x}.",
                                  "What was the score of {x}?", "Did you watch {x}?")),
    "history": (("the Roman empire", "the French revolution", "the first moon landing",
                 "the Second World War"), ("Tell me the history of {x}.",
                                           "When did {x} happen?", "Explain {x} to me.",
                                           "Why was {x} important?")),
    "music": (("the Beatles", "Mozart", "jazz", "the guitar"), (
        "What do you think of {x}?", "Recommend songs like {x}.", "Teach me about {x}.",
        "Who invented {x}?")),
    "news": (("the election", "the stock market", "the latest phone", "the new film"), (
        "What's the latest news on {x}?", "What happened with {x} today?",
        "Give me an update on {x}.", "Is {x} in the news?")),
    "science": (("the speed of light", "black holes", "DNA", "gravity"), (
        "Explain {x} in simple terms.", "What is {x}?", "How does {x} work?",
        "Tell me a fact about {x}.")),
    "money": (("bitcoin", "gold", "the dollar", "oil"), (
        "Should I invest in {x}?", "Will {x} go up this year?", "What is {x} worth today?",
        "Explain the price of {x} to a beginner.")),
    "travel": (("Rome", "the airport", "Mount Everest", "Bangkok"), (
        "How do I get to {x}?", "Plan a trip to {x} for me.", "How far is {x}?",
        "What should I see near {x}?")),
    "games": (("chess", "Minecraft", "poker", "sudoku"), (
        "How do I win at {x}?", "Explain the rules of {x}.", "Play {x} with me.",
        "What is the best opening in {x}?")),
}


# ---- the hand-written wordings each family keeps away from ----------------------------------
def _combined(firsts, ends, split):
    """Every message of a first part and an ending of the split (a split's wordings of the
    greeting and thanks families)."""
    return [f + e for f, e in itertools.product(frames_of(firsts, split), frames_of(ends, split))]


def hand_written(family: str) -> tuple:
    """(train wordings, held-out wordings) of a family of tinyphi3.data.wordings, slots unfilled;
    for an outside topic the family is "outside: topic"."""
    from tinyphi3.data import wordings
    if family == "greeting":
        return tuple(_combined(wordings.SALUTES, wordings.SALUTE_ENDS, s)
                     for s in ("train", "test"))
    if family == "thanks":
        return tuple(_combined(wordings.THANKS, wordings.THANKS_ENDS, s)
                     for s in ("train", "test"))
    lists = wordings.parts()
    if family not in lists:
        raise ValueError(f"no hand-written family {family!r}")
    return tuple(frames_of(lists[family], s) for s in ("train", "test"))


def _made(family: str) -> list:
    if family == "name given":
        return [lead + (n[0].lower() + n[1:] if lead and not re.match(r"\{|I\b|I'", n) else n)
                + end
                for lead, n, end in itertools.product(NAME_LEADS, NAME_STATED, NAME_ENDS)]
    if family == "name asked":
        return list(NAME_QUESTIONS)
    if family == "number given":
        return list(NUMBER_STATED)
    if family == "number used":
        return [use for _, use in NUMBER_USES]
    if family == "asks":
        return list(ASK_FRAMES)
    if family == "greeting":
        return [h + c + e for h, c, e in itertools.product(HELLOS, CALLED, HELLO_ENDS)]
    if family == "thanks":
        return [t + c for t, c in itertools.product(THANKERS, THANKS_CLOSES)]
    if family in ("identity", "abilities"):
        asks = IDENTITY_ASKS if family == "identity" else ABILITY_ASKS
        return [a[:-1] + c + a[-1] for a, c in itertools.product(asks, ASK_CALLED)]
    return list(OUTSIDE_ASKS[family.removeprefix("outside: ")])


FAMILIES = ("greeting", "thanks", "identity", "abilities", "name given", "name asked",
            "number given", "number used", "asks") + tuple(f"outside: {t}" for t in OUTSIDE_ASKS)


@functools.cache
def grammar_wordings(family: str) -> tuple:
    """Every wording of the grammar for a family (one of FAMILIES) that the rule keeps."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}: choose one of {', '.join(FAMILIES)}")
    train, held = hand_written(family)
    return keep(_made(family), train, held)


# ---- conversations ------------------------------------------------------------------------------
SHARES = {"greeting": 0.12, "thanks": 0.08, "identity": 0.1, "abilities": 0.12, "outside": 0.2,
          "memory": 0.2, "harm": 0.1, "kind": 0.08}
OTHER_SHARE = 0.4   # of the outside requests, the share in a topic the measure never asks


def memory_chat(rng) -> list:
    """A name or a number given and used a turn later (a sum between a third of the time), as
    wordings' memory family, in the wordings of the grammar (the hand-written train openings that
    say "back to my number" after a sum)."""
    from tinyphi3.data import wordings
    messages, _ = wordings.memory_in(
        rng, "train", grammar_wordings("name given"), grammar_wordings("name asked"),
        grammar_wordings("number given"),
        [(OP_OF_USE[use], use) for use in grammar_wordings("number used")],
        frames_of(wordings.NUMBER_BACK, "train"))
    return messages


def _conversation(rng, family):
    from tinyphi3.data import safety, wordings
    if family in ("harm", "kind"):
        values = creature_fields(one_of(rng, world.ENTITIES))
        if family == "harm":
            act, answer = one_of(rng, frames_of(wordings.HARM_ACTS, "train")), None
        else:
            act, answer = one_of(rng, frames_of(wordings.KIND_ACTS, "train"))
        ask = one_of(rng, grammar_wordings("asks"))
        request = wordings.wrap(ask.replace("{act}", act).format(**values), rng)
        return [request, safety.refusal(rng, request) if answer is None
                else answer.format(**values)]
    if family == "outside":
        if rng.random() < OTHER_SHARE:
            values, asks = OTHER_TOPICS[one_of(rng, tuple(OTHER_TOPICS))]
            request = one_of(rng, asks).format(x=one_of(rng, values))
            reply = wordings.graceful_reply(None, rng)   # "That is outside ..."
        else:
            topic = one_of(rng, tuple(OUTSIDE_ASKS))
            values = wordings.OUTSIDE_TOPICS[topic][1]
            request = one_of(rng, grammar_wordings(f"outside: {topic}")).format(
                x=one_of(rng, values))
            reply = wordings.graceful_reply(topic, rng)
        return [wordings.wrap(request, rng), reply]
    text = one_of(rng, grammar_wordings(family))
    replies = {"greeting": wordings.GREETING_REPLIES, "thanks": wordings.THANKS_REPLIES,
               "identity": wordings.IDENTITY_REPLIES, "abilities": wordings.ABILITY_REPLIES}
    if family in ("identity", "abilities"):
        text = wordings.wrap(text, rng)
    return [text, one_of(rng, replies[family])]


def social_chat(rng) -> list:
    """A greeting, thanks, a question about the model or its abilities, a request outside the
    world, a name or number to remember, or a train harm or kind act in an ask of the grammar
    (SHARES), in wordings of the grammar, answered as the hand-written family is."""
    families = tuple(SHARES)
    family = families[int(rng.choice(len(families), p=list(SHARES.values())))]
    if family == "memory":
        return memory_chat(rng)
    user, reply = _conversation(rng, family)
    return [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
