"""A web-like corpus in miniature: pages of mixed quality, each tagged with the kind that made it.

Phi-3's pre-training data is "publicly available web data" filtered by "educational level"
(Phi-3 report §2, Training Methodology). The report's example of what the filter removes is "the
result of a game in premier league in a particular day" (§2, Data Optimal Regime): facts a frontier
model may store but that waste a small model's capacity. This module writes such a web from
templates and word lists, so that the filter has something real to do:

    kind           share  what it looks like                                   the report's filter
    educational     22%   explanatory prose: a concept, why it happens, a      keeps (phase 1 and 2)
                          worked example with numbers, a summary
    narrative       13%   short stories: people, places, a problem, an ending  keeps in phase 1
    forum           13%   a question thread with casual replies                keeps in phase 1
    news            13%   local news with quotes                               keeps in phase 1
    boilerplate     13%   cookie notices, navigation menus, copyright footers  drops
    spam            13%   SEO keyword stuffing, "buy now" offers               drops
    trivia          13%   match results with dates and scores, stock tickers,  drops
                          lottery numbers

The knowledge in the educational pages is ordinary school knowledge (evaporation, fractions,
friction); the made-up facts of `tinyphi3.data.world` appear only in the synthetic textbooks. Like
real pages, a share of the other pages (`NOISY_PAGE_SHARE`) carries a few lines of boilerplate too,
and some news pages end with a sports result.

    for page in generate_web(1000, seed=0):
        page["text"], page["kind"]
"""

import random

from tinyphi3.errors import InvalidInputError

# The share of each kind in the corpus (sums to 1); see the table above.
WEB_MIX = {"educational": 0.22, "narrative": 0.13, "forum": 0.13, "news": 0.13,
           "boilerplate": 0.13, "spam": 0.13, "trivia": 0.13}
KINDS = tuple(WEB_MIX)
NOISY_PAGE_SHARE = 0.2

NAMES = ("Anna Mia Tom Ravi Lena Omar Sofia Jonas Priya Marco Elena Sam Nadia Ben Chloe Leo Hana "
         "Felix Amara Yusuf Clara Diego Ines Kofi Mei Paul Rosa Ivan Zoe Theo").split()
TOWNS = ("Millbrook|Eastwick|Harrowgate|Linden Falls|Corran Bay|Westmoor|Ashford|Kettering|Hollis|"
         "Brightwater|Stonebridge|Larkfield|Dunmore|Fairhaven|Oakridge|Pemberton").split("|")
PLACES = ("market|harbour|library|bakery|train station|park|garden|school|farm|bridge|river|"
          "forest|hill|kitchen|workshop|beach|museum").split("|")
OBJECTS = ("umbrella|lantern|bicycle|notebook|kite|letter|key|map|basket|violin|compass|clock|"
           "blanket|jar of honey|old photograph|wooden box").split("|")
FEELINGS = "happy worried curious tired proud nervous surprised calm excited puzzled".split()
WEATHER = "rainy windy sunny foggy cold bright grey snowy warm quiet".split()
COMPANIES = ("Brightline Nordex Vantage Helio Quanta Meridian Corvex Lumina Stratos Kinetix "
             "Orbis Altera").split()
TEAMS = ("Northbridge United|Riverton City|Ashford Rovers|Kingsport Athletic|Westmoor Wanderers|"
         "Dunmore Town|Harrowgate Albion|Larkfield Rangers|Fairhaven FC|Corran Bay Celtic|"
         "Stonebridge Villa|Oakridge Forest").split("|")
PRODUCTS = ("shoes|watches|sunglasses|phone cases|handbags|vitamins|headphones|laptops|perfume|"
            "car insurance|loans|diet pills|sneakers|jewelry").split("|")
MONTHS = ("January February March April May June July August September October November "
          "December").split()
WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()

# --- educational: concepts of ordinary school knowledge -----------------------------------------
# (concept, what it is, why or how it happens, an everyday example, what follows from it)
CONCEPTS = [
    ("evaporation", "the change of a liquid into a gas at its surface",
     "warm molecules move faster, and the fastest ones escape into the air",
     "a puddle on a sunny afternoon slowly shrinks and disappears",
     "wet clothes dry faster on a warm and windy day"),
    ("condensation", "the change of a gas into a liquid when it cools",
     "cool surfaces take energy from the water vapour, so its molecules slow down and gather",
     "drops of water form on the outside of a cold glass",
     "clouds form when moist air rises and cools"),
    ("friction", "a force that resists the sliding of one surface over another",
     "tiny bumps on both surfaces catch on each other",
     "a book pushed across a table slows down and stops",
     "rough shoes grip the ground better than smooth ones"),
    ("gravity", "the pull that every mass has on every other mass",
     "the more mass an object has, the stronger it pulls",
     "a ball thrown upward always comes back down",
     "the moon stays in its path around the earth"),
    ("photosynthesis", "the way green plants make food from light",
     "leaves use the energy of sunlight to join water and carbon dioxide into sugar",
     "a plant kept in a dark cupboard turns pale and weak",
     "plants release the oxygen that animals breathe"),
    ("the water cycle", "the endless journey of water between the land, the sea and the sky",
     "the sun warms the sea, water evaporates, cools into clouds and falls again as rain",
     "rain that falls on a hill runs into a stream and later into the sea",
     "the same water has been used again and again for millions of years"),
    ("erosion", "the slow wearing away of rock and soil",
     "moving water, wind and ice carry small pieces away",
     "a river valley grows deeper over many years",
     "farmers plant trees and grass to hold the soil in place"),
    ("magnetism", "a force by which magnets attract or push away certain metals",
     "tiny regions inside the metal line up in the same direction",
     "a magnet picks up paper clips but not wooden pencils",
     "a compass needle points north because the earth itself acts like a magnet"),
    ("sound", "a vibration that travels through air, water or solids",
     "a vibrating object pushes the air back and forth in waves",
     "a plucked guitar string hums until it stops moving",
     "sound cannot travel through empty space"),
    ("density", "how much mass is packed into a given volume",
     "the particles of a dense material are heavy or packed closely together",
     "a stone sinks in water while a piece of wood floats",
     "oil floats on top of water in a glass"),
    ("the seasons", "the yearly change between warm and cold parts of the year",
     "the earth is tilted, so each half of it leans toward the sun for part of the year",
     "days in summer are long and days in winter are short",
     "summer in the north is winter in the south"),
    ("food chains", "the order in which living things eat one another",
     "energy passes from plants to the animals that eat them and on to other animals",
     "grass is eaten by a rabbit, and the rabbit is eaten by a fox",
     "removing one animal from a chain changes the numbers of the others"),
    ("the heart", "a muscle that pumps blood around the body",
     "it squeezes in a steady rhythm and valves keep the blood flowing one way",
     "your pulse beats faster after you run up the stairs",
     "blood carries oxygen to every part of the body"),
    ("electric circuits", "closed loops through which electric current flows",
     "a battery pushes charge around the loop, and a break in the loop stops the flow",
     "a torch lights up only when its switch closes the circuit",
     "a switch is simply a way to open and close a circuit"),
    ("prime numbers", "whole numbers greater than one that can be divided "
                      "only by one and themselves",
     "every other whole number can be built by multiplying primes together",
     "seven is prime, but nine is not because nine equals three times three",
     "there is no largest prime number"),
    ("fractions", "numbers that describe parts of a whole",
     "the bottom number says how many equal parts the whole has, the top number how many we take",
     "one half of a pizza cut into eight slices is four slices",
     "two quarters are the same amount as one half"),
    ("averages", "single numbers that describe a typical value of a group",
     "we add all the values and divide by how many values there are",
     "the average of two, four and nine is five",
     "one very large value can pull the average far up"),
    ("percentages", "fractions written out of one hundred",
     "per cent means for each hundred",
     "twenty five per cent of a class of forty pupils is ten pupils",
     "a discount of fifty per cent halves the price"),
    ("speed", "the distance something travels in a unit of time",
     "we divide the distance by the time it took",
     "a cyclist who rides twenty kilometres in two hours rides at ten kilometres per hour",
     "at the same speed, a longer trip takes more time"),
    ("area", "the amount of flat space a shape covers",
     "for a rectangle we multiply the length by the width",
     "a room four metres long and three metres wide has an area of twelve square metres",
     "doubling both sides of a square makes its area four times as large"),
    ("habits", "actions we repeat until they happen almost without thinking",
     "each repetition makes the action easier for the brain to start",
     "brushing your teeth every morning soon needs no reminder",
     "small habits kept for a long time can change a life"),
    ("maps and scale", "drawings of places that are smaller than the places themselves",
     "a scale tells how many real metres one centimetre on the map stands for",
     "on a map with a scale of one to one thousand, one centimetre is ten metres",
     "a map with a large scale shows more detail"),
    ("supply and demand", "the two forces that set the prices of goods",
     "when many people want a thing that is scarce, its price goes up",
     "strawberries are cheap in summer when farms have plenty of them",
     "prices fall when sellers have more than buyers want"),
    ("recycling", "turning used materials into new products",
     "glass, paper and metal can be melted or pulped and formed again",
     "old newspapers become cardboard boxes",
     "recycling saves energy and raw materials"),
]

EDU_TITLES = ["What is {c}?", "Understanding {c}", "How {c} works", "A simple guide to {c}",
              "Learning about {c}", "{C} explained", "Why {c} matters"]
EDU_OPENINGS = ["Let us look at {c}.", "In this lesson we study {c}.",
                "Many students ask about {c}.",
                "{C} is a good example of an idea that is simple once it is explained.",
                "To understand the world around us, it helps to understand {c}."]
EDU_DEFINE = ["{C} is {d}.", "Put simply, {c} is {d}.", "We can describe {c} as {d}.",
              "Scientists and teachers define {c} as {d}."]
EDU_REASON = ["This happens because {m}.", "The reason is that {m}.", "It works like this: {m}.",
              "Why? Because {m}."]
EDU_EXAMPLE = ["For example, {e}.", "A familiar example: {e}.", "You can see this when {e}.",
               "Think of how {e}."]
EDU_RESULT = ["As a result, {r}.", "This explains why {r}.", "It follows that {r}.",
              "One consequence is that {r}."]
EDU_CLOSING = ["To sum up, {c} is {d}.", "Remember: {c} is {d}.",
               "In short, once you understand {c}, many everyday things make sense.",
               "Try to find an example of {c} at home and explain it to a friend."]


def _capital(text):
    return text[:1].upper() + text[1:]


def _worked_example(rng):
    """A small calculation, explained step by step: the reasoning the heavy filter keeps."""
    a, b, c = rng.randint(2, 12), rng.randint(2, 12), rng.randint(2, 9)
    name = rng.choice(NAMES)
    return rng.choice([
        f"Let us work an example. {name} has {a} boxes with {b} pencils in each box. To find the "
        f"total we multiply: {a} times {b} is {a * b}. So {name} has {a * b} pencils.",
        f"Here is a question to practise. A garden is {a} metres long and {b} metres wide. Its "
        f"area is {a} times {b}, which is {a * b} square metres. If {name} plants {c} seeds on "
        f"each square metre, the garden needs {a * b * c} seeds.",
        f"Consider the numbers {a}, {b} and {c}. Their sum is {a + b + c}. There are three "
        f"numbers, so the average is {a + b + c} divided by 3, which is {(a + b + c) / 3:.1f}.",
        f"A train travels {a * c * 10} kilometres in {c} hours. Its speed is the distance divided "
        f"by the time: {a * c * 10} divided by {c} is {a * 10} kilometres per hour.",
        f"{name} reads {a} pages on Monday and {b} pages on Tuesday. That is {a + b} pages. If "
        f"the book has {a + b + c * 10} pages, {c * 10} pages are left to read.",
        f"What is {c * 10} per cent of {a * 10}? One per cent of {a * 10} is {a / 10:g}, so "
        f"{c * 10} per cent is {c * 10} times that, which is {a * c:g}.",
    ])


def educational_page(rng):
    concept, define, mechanism, example, result = rng.choice(CONCEPTS)
    slots = {"c": concept, "C": _capital(concept), "d": define, "m": mechanism, "e": example,
             "r": result}
    first = [rng.choice(EDU_OPENINGS), rng.choice(EDU_DEFINE), rng.choice(EDU_REASON)]
    second = [rng.choice(EDU_EXAMPLE), rng.choice(EDU_RESULT)]
    rng.shuffle(second)
    paragraphs = [rng.choice(EDU_TITLES), " ".join(first), " ".join(second)]
    if rng.random() < 0.7:
        paragraphs.append(_worked_example(rng))
    if rng.random() < 0.4:                          # relate a second concept to the first
        other = rng.choice(CONCEPTS)
        paragraphs.append(f"A related idea is {other[0]}, which is {other[1]}. "
                          f"{_capital(other[3])}, and {other[4]}.")
    paragraphs.append(rng.choice(EDU_CLOSING))
    return "\n\n".join(p.format(**slots) for p in paragraphs)


# --- narrative, forum, news: ordinary language ----------------------------------------------------

def narrative_page(rng):
    hero, friend, elder = rng.sample(NAMES, 3)
    place, other_place = rng.sample(PLACES, 2)
    thing = rng.choice(OBJECTS)
    a_thing = ("an " if thing[0] in "aeiou" else "a ") + thing
    weather, feeling, later = rng.choice(WEATHER), rng.choice(FEELINGS), rng.choice(FEELINGS)
    town = rng.choice(TOWNS)
    sentences = [
        rng.choice([f"It was a {weather} morning in {town}.",
                    f"{hero} woke up early on a {weather} day.",
                    f"Nobody in {town} expected anything unusual that {weather} afternoon.",
                    f"The summer {hero} turned twelve, the family moved to {town}."]),
        rng.choice([f"{hero} walked to the {place} to meet {friend}.",
                    f"{hero} and {friend} had planned a trip to the {place}.",
                    f"{hero} was sent to the {place} with a list of things to buy."]),
        rng.choice([f"On the way, {hero} found {a_thing} lying on the path.",
                    f"{friend} was carrying {a_thing} that belonged to an old neighbour.",
                    f"Someone had left {a_thing} by the gate of the {place}.",
                    f"At the {place}, a stranger handed {hero} {a_thing} and walked away."]),
        rng.choice([f"\"Where did this come from?\" asked {friend}.",
                    f"{hero} felt {feeling} and turned it over carefully.",
                    "They looked at each other and laughed.",
                    f"\"We should not keep it,\" said {friend}, and {hero} agreed."]),
        rng.choice([f"They decided to take it to the {other_place}.",
                    f"They asked everyone at the {other_place} if they knew its owner.",
                    f"{friend} remembered a story about {a_thing} just like it.",
                    f"First they went to ask {elder}, who knew everybody in {town}."]),
        rng.choice([f"{elder} listened, nodded and said it reminded them of a story from long ago.",
                    "The road was longer than they thought, and it started to rain.",
                    f"For an hour nobody could help them, and {hero} began to lose hope.",
                    f"A dog followed them all the way, barking at the {thing}."]),
        rng.choice(["By evening they had found the owner, an old man who thanked them twice.",
                    "It turned out to belong to the teacher, who had been looking for it all week.",
                    f"In the end nobody claimed it, so they kept it at the {other_place}.",
                    f"The owner was a girl from the {other_place}, and she cried with joy."]),
        rng.choice([f"{hero} went home feeling {later}.",
                    f"That night {hero} could not stop smiling.",
                    f"It was a day {friend} would remember for a long time.",
                    f"From then on, {hero} and {friend} met at the {place} every week."]),
    ]
    return " ".join(sentences)


# (the question, the board, advice in the imperative)
FORUM_TOPICS = [
    ("my tomato plants have yellow leaves", "gardening", "water them less and check the soil"),
    ("my bike chain keeps slipping", "cycling", "measure the chain, because it is probably worn"),
    ("my bread does not rise", "baking", "try a fresh packet of yeast and a warmer room"),
    ("my laptop is very slow after the update", "computers",
     "restart it twice and let the update finish"),
    ("my cat will not eat the new food", "pets", "mix a little of the new food into the old one"),
    ("I want to learn to swim as an adult", "sport", "take a few lessons and practise every week"),
    ("the neighbours are noisy at night", "home", "talk to them politely before anything else"),
    ("my rice always sticks to the pot", "cooking", "rinse it well and do not stir it too much"),
    ("my houseplant is growing toward the window", "gardening", "turn the pot a little every week"),
    ("I cannot fall asleep before midnight", "health",
     "put the phone away an hour before bed and keep the same bedtime"),
    ("my car battery dies in cold weather", "cars", "have the battery tested, it may be old"),
    ("I keep forgetting new words in French", "languages",
     "review the words a few minutes every day instead of once a week"),
]


def forum_page(rng):
    question, board, advice = rng.choice(FORUM_TOPICS)
    users = [f"{rng.choice(NAMES).lower()}{rng.randint(1, 99)}" for _ in range(4)]
    lines = [f"Forum > {_capital(board)} > {_capital(question)}",
             f"{users[0]} wrote: Hi all, {question}. "
             + rng.choice(["Has anyone had the same problem?", "Any ideas what I am doing wrong?",
                           "I tried everything I could think of.", "Thanks in advance!"])]
    for user in users[1:rng.randint(2, 4)]:
        lines.append(f"{user} wrote: " + rng.choice([
            f"I had the same thing last year. In my experience it helps to {advice}.",
            f"Honestly, just {advice}. Worked for me.",
            f"Not sure, but I read that you should {advice}.",
            "Same here! Following this thread.", f"Maybe {advice}? Let us know how it goes.",
            f"My brother had this too. He tried to {advice} and it was fine after a week."]))
    lines.append(f"{users[0]} wrote: " + rng.choice(["Thanks, that worked!",
                                                     "I will try that tomorrow.",
                                                     "Great tips, thank you everyone."]))
    return "\n".join(lines)


def news_page(rng):
    town = rng.choice(TOWNS)
    official, resident = rng.sample(NAMES, 2)
    day = rng.choice(WEEKDAYS)
    plan, reason = rng.choice([
        ("a new footbridge over the river", "to make the walk to school safer"),
        ("longer opening hours for the public library",
         "because more students use it in the evenings"),
        ("repairs to the old harbour wall", "after winter storms damaged it"),
        ("a weekly farmers market in the square", "to support farms near the town"),
        ("more buses on the northern route", "as the number of passengers keeps growing"),
        ("a new playground in the park", "after families asked for one for years"),
        ("a bicycle lane along the main road", "to cut traffic in the town centre"),
        ("a summer music festival by the lake", "to bring visitors to the town"),
        ("new trees along the high street", "to give shade on hot days"),
        ("a clinic that opens on weekends", "because the nearest hospital is an hour away"),
    ])
    return " ".join([
        f"{town} - The town council on {day} approved {plan}, {reason}.",
        f"\"This is good news for everyone who lives here,\" said councillor {official}.",
        rng.choice([f"Work is expected to start in {rng.choice(MONTHS)}.",
                    "The project will be paid for from the town budget.",
                    "Some residents asked about the cost, which has not been made public."]),
        f"{resident}, who has lived in {town} for {rng.randint(3, 40)} years, "
        "welcomed the decision.",
        rng.choice([f"\"We have waited a long time for this,\" {resident} said.",
                    f"\"I hope they finish it before next winter,\" {resident} added.",
                    "Not everyone agrees: a few shop owners worry about the noise."]),
        rng.choice(["The council will meet again next month.", "More details will follow.",
                    "Residents can share their views at the town hall.",
                    f"In sport, {rng.choice(TEAMS)} won {rng.randint(1, 5)}-0 "
                    f"on {rng.choice(WEEKDAYS)}."]),
    ])


# --- boilerplate, spam, trivia: what the report filters out ---------------------------------------

def _boilerplate_block(rng):
    company = rng.choice(COMPANIES)
    return rng.choice([
        "We use cookies to improve your experience on our website. By continuing to browse, you "
        "agree to our use of cookies. Accept all | Reject | Cookie settings",
        " | ".join(rng.sample(["Home", "About us", "Products", "Services", "Blog", "Contact",
                               "Login", "Register", "FAQ", "Careers", "Shop", "Help"], 7)),
        f"Copyright (c) {rng.randint(2005, 2024)} {company} Ltd. All rights reserved. "
        "Privacy policy | Terms of use | Sitemap",
        "Subscribe to our newsletter! Enter your email address to receive updates. Subscribe",
        "Share this page: Facebook | Twitter | Email | Print",
        "You are here: Home > Category > Page",
        "This website uses cookies and similar technologies. Manage preferences. Accept",
        "404 - Page not found. The page you are looking for might have been removed. "
        "Go to homepage",
        f"Skip to main content. Menu. Search. Sign in to {company}. My account. Basket (0)",
        "Related posts: Previous post | Next post | Leave a comment | 0 comments",
    ])


def boilerplate_page(rng):
    return "\n".join(_boilerplate_block(rng) for _ in range(rng.randint(3, 7)))


def spam_page(rng):
    product, town = rng.choice(PRODUCTS), rng.choice(TOWNS)
    keywords = [f"cheap {product}", f"best {product}", f"{product} {town}", f"buy {product} online",
                f"{product} sale", f"discount {product}", f"{product} free shipping"]
    parts = [f"BUY {product.upper()} NOW!!! {rng.choice([50, 60, 70, 80, 90])}% OFF TODAY ONLY"]
    for _ in range(rng.randint(2, 5)):
        parts.append(rng.choice([
            ", ".join(rng.choices(keywords, k=rng.randint(5, 10))),
            f"Click here to get the best {product} deals in {town}!!! Limited offer, hurry!",
            f"Call now 0800 {rng.randint(100, 999)} {rng.randint(1000, 9999)} - order your "
            f"{product} today and win a free gift!!!",
            f"Best price guaranteed. {product} {product} {product}. Visit our shop now.",
            f"Top {rng.randint(5, 20)} {product} of {rng.randint(2015, 2024)}. Best {product} "
            f"review. Cheap {product} buy now.",
        ]))
    return "\n".join(parts)


def _date(rng):
    return f"{rng.randint(1, 28)} {rng.choice(MONTHS)} {rng.randint(1995, 2023)}"


def trivia_page(rng):
    kind = rng.choice(["match", "stocks", "lottery"])
    if kind == "match":
        lines = [f"Results, matchday {rng.randint(1, 38)}"]
        for _ in range(rng.randint(3, 7)):
            home, away = rng.sample(TEAMS, 2)
            lines.append(f"On {_date(rng)}, {home} {rng.randint(0, 5)}-{rng.randint(0, 5)} {away}. "
                         f"Attendance: {rng.randint(5, 60)},{rng.randint(100, 999)}.")
    elif kind == "stocks":
        lines = [f"Market close, {_date(rng)}"]
        for company in rng.sample(COMPANIES, rng.randint(4, 8)):
            price, change = rng.uniform(5, 400), rng.uniform(-9, 9)
            lines.append(f"{company.upper()[:4]} {price:.2f} {change:+.2f} "
                         f"({100 * change / price:+.2f}%)")
    else:
        lines = []
        for _ in range(rng.randint(3, 6)):
            numbers = " ".join(str(n) for n in sorted(rng.sample(range(1, 50), 6)))
            lines.append(f"Lottery draw {rng.randint(100, 3000)}, {_date(rng)}: {numbers}, "
                         f"bonus {rng.randint(1, 49)}")
    return "\n".join(lines)


PAGE_WRITERS = {"educational": educational_page, "narrative": narrative_page, "forum": forum_page,
                "news": news_page, "boilerplate": boilerplate_page, "spam": spam_page,
                "trivia": trivia_page}


def generate_web(n_docs, seed=0, mix=None):
    """Yield `n_docs` pages {"text": str, "kind": str}, deterministic for a seed.

    Each page's kind is drawn with the probabilities of `mix` (default `WEB_MIX`). One random
    stream makes the whole corpus, so the first k pages of `generate_web(n, seed)` are the pages of
    `generate_web(k, seed)`. A share `NOISY_PAGE_SHARE` of the pages of other kinds get one to
    three lines of boilerplate before or after their text, as real web pages do.
    """
    mix = WEB_MIX if mix is None else mix
    unknown = set(mix) - set(PAGE_WRITERS)
    if unknown:
        raise InvalidInputError(f"unknown page kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    kinds, weights = list(mix), list(mix.values())
    rng = random.Random(seed)
    for _ in range(n_docs):
        kind = rng.choices(kinds, weights)[0]
        text = PAGE_WRITERS[kind](rng)
        if kind != "boilerplate" and rng.random() < NOISY_PAGE_SHARE:
            noise = "\n".join(_boilerplate_block(rng) for _ in range(rng.randint(1, 3)))
            text = f"{noise}\n{text}" if rng.random() < 0.5 else f"{text}\n{noise}"
        yield {"text": text, "kind": kind}
