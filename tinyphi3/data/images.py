"""Pictures with questions for the tiny phi-3-vision: drawn with Pillow from the closed world.

The Phi-3 report (§6) trains phi-3-vision on interleaved image-text data, charts, tables and
OCR among it. In miniature, a picture is S x S pixels (56 by default; any S >= 28) on a plain
background, and each comes with one question and its answer. Five kinds:

    colour    one circle, square, triangle or star in a colour of the world    "It is blue."
    count     1 to 5 identical small shapes, none touching                     "There are 3 stars."
    position  two shapes of different colours, one left of / right of /
              above / below the other: a yes/no question or "Where is ...?"
    reading   a creature's name or a two-digit number in the bitmap font       "It says Veska."
    chart     3 or 4 bars in different colours and heights                     "The tallest bar is
                                                                                the green one."

The held-out ("test") split is made by composition, not by a random draw: a test picture shows
a combination that no training picture shows, though each of its parts is trained. A picture
is held out (`is_held_out_picture(spec)`) when

    any kind but reading and chart  one of its shapes is a held-out colour-shape pair: colour i of
                                    world.COLOURS with shape j of SHAPES, (i + j) % 4 == 3 (so
                                    no training picture shows, say, a red star);
    count                           or it shows c shapes of shape j with (j + c) % 4 == 3;
    position                        or its colour pair {i, j} has (i + j) % 4 == 3;
    reading                         its word is every fourth creature of world.ENTITIES, or a
                                    number n with n % 4 == 3, or it has one of those held-out
                                    names or two-digit numbers inside it, in any case (a made-up
                                    word is never held out);
    chart                           its colours, left to right, hash into a quarter of all
                                    orders (stable_hash("chart", *colours) % 4 == 3).

Mixed counts (training only, on request): 2 to 5 shapes of at least two different shapes, each
shape's colour drawn on its own, asked "How many shapes are there?"; so that counting is learned
as counting things, not as the number a shape usually comes in. The count rule holds for each
shape's group: 2 circles and 3 squares may be a training picture (0 + 2 and 1 + 3 are not 3
modulo 4), 3 circles and a star are held out (0 + 3 == 3).

Random strings (`random_string()`, training only, on request): 1 to 6 characters drawn from
digits and letters of both cases, "k7Qa", so that every character is seen in every place next
to every other, and reading cannot lean on which first digit goes with which last; a string with
a held-out name or number inside it is held out, so no training picture shows one.

Unnamed colours (captions only, training only, on request): the shapes of a colour, count or
position picture drawn in colours of no name, "#5a2e9c", each at least 75 from every colour of
the palette and from the background (as far as the palette's colours are from each other), so
that a shape is learned by its outline whatever its colour; a red star is still never drawn.
Their captions name the shapes without a colour ("A star and a circle. ...").

Extra shapes (training only, on request): count pictures of shapes that the world does not have
(EXTRA_SHAPES: a diamond, a pentagon, a six-pointed star, ...), 1 to 5 of one shape or, with
mixed counts, of several, asked "How many crosses are there?" or captioned, so that counting is
seen for many more shapes than four, every count of each, and learned as counting things; the
world's shapes still never show a held-out group (4 stars are never drawn).

Made-up words (`made_up_words()`, training only, on request): the two-syllable words that the
world's names are built from (world._FIRST + world._SECOND) but that name no creature, such as
"Tabi" or "Rolo". Reading pictures that show them teach reading syllable by syllable rather than
recognising a closed list of names; no held-out name is among them.

And as in tinyphi3.data.wordings, every fourth question wording (index % 4 == 3) is asked only
of test pictures. Everything is deterministic from the numpy Generator the caller passes in: a
spec (a small dict, JSON-ready, sizes as fractions of S) says what to draw, `draw(spec, size)`
draws it, so one spec gives the same pixels at every size it is drawn at.
"""

import functools
import string
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from tinyphi3.data import world
from tinyphi3.data.documents import write_jsonl
from tinyphi3.data.wordings import frames_of
from tinyphi3.data.world import one_of, stable_hash

QUESTION_KINDS = ("colour", "count", "position", "reading", "chart")
SHAPES = ("circle", "square", "triangle", "star")
# Shapes that only training count pictures show (extra_shapes), in every count: the held-out
# rule, written for SHAPES, never holds one out, and no other kind of picture shows one.
EXTRA_SHAPES = ("diamond", "pentagon", "hexagon", "cross", "wedge", "sparkle", "hexagram")
RELATIONS = ("left of", "right of", "above", "below")
MIN_SIZE = 28
IMAGE_TAG = "<|image_1|>"        # how a phi-3-vision prompt carries its first image

# One RGB per colour of the world, at least 75 apart from each other and from the background
# (a mid cyan, so that white, silver and black all stand out), drawn without anti-aliasing:
# every shape pixel is exactly its colour.
BACKGROUND = (90, 200, 210)
PALETTE = {"red": (220, 30, 30), "blue": (30, 70, 220), "green": (30, 150, 40),
           "yellow": (250, 225, 30), "orange": (250, 140, 0), "purple": (130, 40, 170),
           "grey": (110, 110, 110), "brown": (125, 70, 20), "white": (255, 255, 255),
           "black": (0, 0, 0), "pink": (250, 150, 200), "silver": (185, 190, 200)}
INK = PALETTE["black"]

QUESTIONS = {   # index % 4 == 3: held out, asked of test pictures only
    "colour": ("What colour is the shape?", "What colour is the {shape}?",
               "Which colour is the {shape} in the picture?", "Tell me the colour of the shape.",
               "What is the colour of the {shape}?", "Name the colour of the {shape}.",
               "The {shape} in this picture: what colour is it?",
               "What colour has the {shape} been painted?"),
    "count": ("How many {shapes} are there?", "How many {shapes} can you see?",
              "Count the {shapes}.", "How many {shapes} are in the picture?",
              "What is the number of {shapes} here?", "Can you count the {shapes} for me?",
              "Tell me how many {shapes} there are.",
              "Count the {shapes} in this picture. How many are there?"),
    "yes/no": ("Is the {a} {relation} the {b}?", "Is the {a} placed {relation} the {b}?",
               "Look at the {a}. Is it {relation} the {b}?",
               "Would you say the {a} is {relation} the {b}?",
               "Can you see the {a} {relation} the {b}?",
               "True or false: the {a} is {relation} the {b}.",
               "In the picture, is the {a} {relation} the {b}?",
               "Does the {a} sit {relation} the {b}?"),
    "where": ("Where is the {a}?", "Where is the {a} in the picture?", "Where can you see the {a}?",
              "Where does the {a} sit?", "Say where the {a} is.",
              "What is the position of the {a}?", "Tell me where the {a} is.",
              "Where has the {a} been put?"),
    "reading": ("What word is written in the picture?", "What does the picture say?",
                "Read the word in the picture.", "What is written here?",
                "Which word can you read in the picture?", "What does it say?",
                "Read this for me, please.", "What text is in the picture?"),
    "chart": ("Which bar is the {ask}?", "Which bar of the chart is the {ask}?",
              "What colour is the {ask} bar?", "Which is the {ask} bar in the chart?",
              "Look at the chart. Which bar is the {ask}?", "Which colour has the {ask} bar?",
              "Name the {ask} bar.", "In this bar chart, which bar is the {ask}?"),
}


# ---- the held-out rule -------------------------------------------------------------------------

def is_named(colour: str) -> bool:
    """A colour of the world ("red"), not one of no name ("#5a2e9c")."""
    return colour in PALETTE


def held_out_colour_shape(colour: str, shape: str) -> bool:
    """A colour-shape pair that only test pictures show: (colour index + shape index) % 4 == 3
    (a colour of no name, "#5a2e9c", is in no held-out pair)."""
    if not is_named(colour) or shape not in SHAPES:
        return False
    return (world.COLOURS.index(colour) + SHAPES.index(shape)) % 4 == 3


@functools.cache
def held_out_words() -> tuple:
    """The words that only test pictures show, lower-cased: every fourth creature's name and
    the two-digit numbers n with n % 4 == 3."""
    names = [e.name.lower() for i, e in enumerate(world.ENTITIES) if i % 4 == 3]
    return tuple(names + [str(n) for n in range(10, 100) if n % 4 == 3])


def is_held_out_picture(spec: dict) -> bool:
    """True if the picture is a held-out composition (the rule of the module docstring)."""
    kind = spec["kind"]
    if kind == "reading":
        word = spec["word"]
        if word.isdigit() and int(word) % 4 == 3:
            return True
        return any(held in word.lower() for held in held_out_words())
    if kind == "chart":
        return stable_hash("chart", *spec["colours"]) % 4 == 3
    shapes = spec["shapes"]
    if any(held_out_colour_shape(s["colour"], s["shape"]) for s in shapes):
        return True
    if kind == "count":
        groups = Counter(s["shape"] for s in shapes)
        return any((SHAPES.index(shape) + c) % 4 == 3 for shape, c in groups.items()
                   if shape in SHAPES)
    if kind == "position" and all(is_named(s["colour"]) for s in shapes):
        i, j = (world.COLOURS.index(s["colour"]) for s in shapes)
        return (i + j) % 4 == 3
    return False


# ---- specs: what a picture shows, sizes as fractions of its side -------------------------------

def _uniform(rng, low, high) -> float:
    return round(float(rng.uniform(low, high)), 3)


def _shape(shape, colour, x, y, r) -> dict:
    return {"shape": shape, "colour": colour, "x": round(float(x), 3), "y": round(float(y), 3),
            "r": r}


def _colour_spec(rng):
    r = _uniform(rng, 0.22, 0.32)
    x, y = (_uniform(rng, r + 0.04, 0.96 - r) for _ in range(2))
    return {"kind": "colour",
            "shapes": [_shape(one_of(rng, SHAPES), one_of(rng, world.COLOURS), x, y, r)]}


def _count_spec(rng, mixed: bool = False, extra: bool = False):
    """1 to 5 shapes in distinct cells of a 3 x 3 grid, nudged by at most 0.035 of the side:
    with a radius of 0.09 they stay at least 0.06 of the side apart (3 pixels at S = 56).
    mixed: 2 to 5 shapes of at least two shapes, each shape's colour drawn on its own.
    extra: the shapes are drawn from EXTRA_SHAPES instead of SHAPES."""
    shapes = EXTRA_SHAPES if extra else SHAPES
    if mixed:
        count = int(rng.integers(2, 6))
        kinds = [one_of(rng, shapes) for _ in range(count)]
        while len(set(kinds)) < 2:
            kinds[int(rng.integers(count))] = one_of(rng, shapes)
        looks = [(shape, one_of(rng, world.COLOURS)) for shape in kinds]
    else:
        count, shape, colour = (int(rng.integers(1, 6)), one_of(rng, shapes),
                                one_of(rng, world.COLOURS))
        looks = [(shape, colour)] * count
    cells = sorted(int(c) for c in rng.choice(9, size=count, replace=False))
    shapes = [_shape(shape, colour, (c % 3 + 0.5) / 3 + _uniform(rng, -0.035, 0.035),
                     (c // 3 + 0.5) / 3 + _uniform(rng, -0.035, 0.035), 0.09)
              for (shape, colour), c in zip(looks, cells)]
    return {"kind": "count", "shapes": shapes}


def has_extra_shapes(spec: dict) -> bool:
    """A count picture of shapes the world does not have (EXTRA_SHAPES: training only)."""
    return any(s["shape"] not in SHAPES for s in spec.get("shapes", ()))


def is_mixed(spec: dict) -> bool:
    """A count picture of more than one shape ("How many shapes are there?")."""
    return spec["kind"] == "count" and len({s["shape"] for s in spec["shapes"]}) > 1


def _position_spec(rng):
    """Two shapes a clear step apart along one axis (0.4 to 0.6 of the side), and at most 0.1
    apart along the other, so that the relation of their centres is never in doubt."""
    relation = one_of(rng, RELATIONS)
    colours = [world.COLOURS[int(i)] for i in rng.choice(len(world.COLOURS), 2, replace=False)]
    along = [_uniform(rng, 0.18, 0.3), _uniform(rng, 0.7, 0.82)]       # first, second
    if relation in ("right of", "below"):
        along.reverse()
    across = _uniform(rng, 0.3, 0.7)
    across = [across, across + _uniform(rng, -0.1, 0.1)]
    points = zip(along, across) if relation in ("left of", "right of") else zip(across, along)
    return {"kind": "position", "relation": relation,
            "shapes": [_shape(one_of(rng, SHAPES), colour, x, y, 0.14)
                       for colour, (x, y) in zip(colours, points)]}


@functools.cache
def made_up_words() -> tuple:
    """The two-syllable words of the world's name syllables that name no creature (nor are kept
    out of the names for being too close to real words), sorted: "Tabi", "Rolo", ..."""
    names = {e.name for e in world.ENTITIES} | world._NOT_NAMES
    return tuple(sorted(a + b for a in world._FIRST for b in world._SECOND
                        if a + b not in names))


UNNAMED_DISTANCE = 75       # how far a colour of no name keeps from the palette and background
_NAMED_RGB = np.array([*PALETTE.values(), BACKGROUND], dtype=np.float64)        # [13, 3]


def unnamed_colour(rng) -> str:
    """A colour of no name, "#5a2e9c": uniform over the RGB cube, redrawn until it is at least
    UNNAMED_DISTANCE from every colour of PALETTE and from BACKGROUND (about a third of the cube
    is that far from all of them)."""
    while True:
        rgb = rng.integers(0, 256, size=3)
        if np.sqrt(((_NAMED_RGB - rgb) ** 2).sum(axis=1)).min() >= UNNAMED_DISTANCE:
            return "#" + "".join(f"{int(v):02x}" for v in rgb)


def rgb_of(colour: str) -> tuple:
    """The RGB of a colour of the palette ("red") or of no name ("#5a2e9c")."""
    if is_named(colour):
        return PALETTE[colour]
    return tuple(int(colour[k:k + 2], 16) for k in (1, 3, 5))


RANDOM_CHARACTERS = string.digits + string.ascii_letters


def random_string(rng) -> str:
    """1 to 6 characters, each any digit or letter of either case: "k7Qa", "0", "ZZb41x"."""
    return "".join(one_of(rng, RANDOM_CHARACTERS) for _ in range(int(rng.integers(1, 7))))


def _reading_spec(rng, made_up: float = 0.0):
    if made_up and rng.random() < made_up:
        return {"kind": "reading", "word": one_of(rng, made_up_words())}
    if rng.random() < 0.5:
        return {"kind": "reading", "word": str(int(rng.integers(10, 100)))}
    return {"kind": "reading", "word": one_of(rng, world.ENTITIES).name}


def _chart_spec(rng):
    n = int(rng.integers(3, 5))
    colours = [world.COLOURS[int(i)] for i in rng.choice(len(world.COLOURS), n, replace=False)]
    heights = [int(h) + 2 for h in rng.choice(9, n, replace=False)]     # distinct, 2 to 10
    return {"kind": "chart", "colours": colours, "heights": heights}


def bar_colour(spec: dict, ask: str) -> str:
    """The colour of a chart's "tallest" or "shortest" bar (heights are distinct)."""
    pick = {"tallest": max, "shortest": min}[ask]
    return spec["colours"][spec["heights"].index(pick(spec["heights"]))]


_SPECS = {"colour": _colour_spec, "count": _count_spec, "position": _position_spec,
          "reading": _reading_spec, "chart": _chart_spec}


def _check_shares(split: str, **shares):
    """The training-only shares (made_up, random_strings, mixed_counts, unnamed_colours,
    extra_shapes): each from 0 to 1, and 0 unless split is "train"."""
    for name, share in shares.items():
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} is a share of pictures, a number from 0 to 1, got {share}")
        if share and split != "train":
            raise ValueError(f"{name} is for training pictures only: the held-out pictures show "
                             f"the world's words and shapes of one kind")


def picture_spec(kind: str, split: str, rng, max_tries: int = 10_000, made_up: float = 0.0,
                 random_strings: float = 0.0, mixed_counts: float = 0.0,
                 unnamed_colours: float = 0.0, extra_shapes: float = 0.0) -> dict:
    """A spec of `kind` in `split`: specs are drawn until one is held out (test) or not (train).
    random_strings: the share of reading pictures that show a random string; mixed_counts: the
    share of count pictures of mixed shapes; unnamed_colours: the share of colour, count and
    position pictures in colours of no name; extra_shapes: the share of count pictures of
    EXTRA_SHAPES (each decided once per picture, before the draws);
    made_up: the share of the other reading draws that show a made-up word (decided per draw,
    as it always was: names and numbers are turned away a quarter of the time and made-up words
    never, so a little more than that share ends up made-up). All for train only; at 0 they
    draw exactly the specs drawn before the options existed."""
    if kind not in _SPECS:
        raise ValueError(f"unknown kind {kind!r}: choose one of {', '.join(QUESTION_KINDS)}")
    if split not in world.SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    _check_shares(split, made_up=made_up, random_strings=random_strings,
                  mixed_counts=mixed_counts, unnamed_colours=unnamed_colours,
                  extra_shapes=extra_shapes)
    strings = kind == "reading" and random_strings and rng.random() < random_strings
    mixed = kind == "count" and mixed_counts and rng.random() < mixed_counts
    unnamed = (kind in ("colour", "count", "position") and unnamed_colours
               and rng.random() < unnamed_colours)
    extra = kind == "count" and extra_shapes and rng.random() < extra_shapes
    for _ in range(max_tries):
        if strings:
            spec = {"kind": "reading", "word": random_string(rng)}
        elif kind == "reading":
            spec = _reading_spec(rng, made_up)
        elif kind == "count":
            spec = _count_spec(rng, mixed, extra)
        else:
            spec = _SPECS[kind](rng)
        if unnamed:
            spec["shapes"] = [{**s, "colour": unnamed_colour(rng)} for s in spec["shapes"]]
        if is_held_out_picture(spec) == (split == "test"):
            return spec
    raise RuntimeError(f"no {split} picture of kind {kind} in {max_tries} draws")


# ---- drawing -----------------------------------------------------------------------------------

def _points(x, y, radii, turn: float = 0.0) -> list:
    """Corners at equal angles around (x, y), the k-th at radius radii[k], the first at `turn`
    of a full turn clockwise from straight up (pixels, y down)."""
    angles = 2 * np.pi * (np.arange(len(radii)) / len(radii) + turn)
    return [(float(x + q * np.sin(a)), float(y - q * np.cos(a))) for a, q in zip(angles, radii)]


# Outlines with corners at equal angles, in units of r: (radii around the centre, turn), as
# _points reads them. The star's five points have an inner radius half the outer one.
_RADIAL_OUTLINES = {"star": ([1.0, 0.5] * 5, 0.0), "pentagon": ([1.0] * 5, 0.0),
                    "hexagon": ([1.0] * 6, 1 / 12), "sparkle": ([1.0, 0.4] * 4, 0.0),
                    "hexagram": ([1.0, 0.58] * 6, 0.0)}


def shape_outline(shape: str, x: float, y: float, r: float) -> list:
    """The corners of a square, triangle or star (or one of EXTRA_SHAPES but the circle) of
    "radius" r around (x, y), in pixels (y down)."""
    if shape == "diamond":
        return [(x, y - r), (x + 0.7 * r, y), (x, y + r), (x - 0.7 * r, y)]
    if shape == "cross":                        # a plus sign, arms a third of r wide each side
        w = r / 3
        return [(x + dx, y + dy) for dx, dy in ((-w, -r), (w, -r), (w, -w), (r, -w), (r, w),
                                                (w, w), (w, r), (-w, r), (-w, w), (-r, w),
                                                (-r, -w), (-w, -w))]
    if shape == "wedge":                        # a triangle standing on its point
        return [(x - 0.95 * r, y - 0.8 * r), (x + 0.95 * r, y - 0.8 * r), (x, y + r)]
    if shape in _RADIAL_OUTLINES:
        radii, turn = _RADIAL_OUTLINES[shape]
        return _points(x, y, [q * r for q in radii], turn)
    if shape == "square":
        h = 0.85 * r
        return [(x - h, y - h), (x + h, y - h), (x + h, y + h), (x - h, y + h)]
    if shape == "triangle":
        return [(x, y - r), (x + 0.95 * r, y + 0.8 * r), (x - 0.95 * r, y + 0.8 * r)]
    raise ValueError(f"unknown shape {shape!r}")


def _draw_shape(canvas, s, size):
    x, y, r, fill = s["x"] * size, s["y"] * size, s["r"] * size, rgb_of(s["colour"])
    if s["shape"] == "circle":
        canvas.ellipse([x - r, y - r, x + r, y + r], fill=fill)
    else:
        canvas.polygon(shape_outline(s["shape"], x, y, r), fill=fill)


def _draw_word(image, word, size):
    """The word in Pillow's bitmap font, cropped to its ink and scaled up with nearest-neighbour
    (crisp pixels, no grey edges) to fill the width, at most 0.45 of the height, centred."""
    mask = Image.new("L", (8 * len(word) + 4, 16), 0)
    ImageDraw.Draw(mask).text((2, 2), word, font=ImageFont.load_default_imagefont(), fill=255)
    mask = mask.crop(mask.getbbox())
    scale = min((size - 6) / mask.width, 0.45 * size / mask.height)
    mask = mask.resize((round(mask.width * scale), round(mask.height * scale)), Image.NEAREST)
    image.paste(INK, ((size - mask.width) // 2, (size - mask.height) // 2), mask)


def _draw_chart(canvas, spec, size):
    """Bars side by side in 0.08 to 0.92 of the width, standing on 0.92 of the height; a height
    of 10 reaches up to 0.1 of the height."""
    slot = 0.84 / len(spec["colours"])
    for i, (colour, height) in enumerate(zip(spec["colours"], spec["heights"])):
        left = 0.08 + slot * (i + 0.15)
        box = [left * size, (0.92 - 0.082 * height) * size, (left + 0.7 * slot) * size,
               0.92 * size]
        canvas.rectangle([round(v) for v in box], fill=PALETTE[colour])


def draw(spec: dict, size: int = 56) -> Image.Image:
    """The picture a spec describes: RGB, size x size, plain BACKGROUND, no anti-aliasing."""
    if size < MIN_SIZE:
        raise ValueError(f"pictures are at least {MIN_SIZE} pixels wide, got {size}")
    image = Image.new("RGB", (size, size), BACKGROUND)
    canvas = ImageDraw.Draw(image)
    if spec["kind"] == "reading":
        _draw_word(image, spec["word"], size)
    elif spec["kind"] == "chart":
        _draw_chart(canvas, spec, size)
    else:
        for s in spec["shapes"]:
            _draw_shape(canvas, s, size)
    return image


# ---- questions and answers ---------------------------------------------------------------------

def _noun(s) -> str:
    """ "red star"; a shape in a colour of no name is only "star"."""
    return f"{s['colour']} {s['shape']}" if is_named(s["colour"]) else s["shape"]


def is_unnamed(spec: dict) -> bool:
    """A picture with a shape in a colour of no name (captions only: no question asks of it)."""
    return not all(is_named(s["colour"]) for s in spec.get("shapes", ()))


def question_and_answer(spec: dict, split: str, rng) -> tuple:
    """(question, answer) about a picture, in a wording of `split` (index % 4 == 3: test)."""
    if is_unnamed(spec):
        raise ValueError("a picture in colours of no name has no question (what colour would it "
                         "ask?): it comes with its caption only")
    kind, shapes = spec["kind"], spec.get("shapes")
    if kind == "colour":
        question = one_of(rng, frames_of(QUESTIONS["colour"], split))
        return question.format(shape=shapes[0]["shape"]), f"It is {shapes[0]['colour']}."
    if kind == "count":
        n, many = len(shapes), "shapes" if is_mixed(spec) else plural(shapes[0]["shape"])
        question = one_of(rng, frames_of(QUESTIONS["count"], split)).format(shapes=many)
        return question, (f"There is 1 {shapes[0]['shape']}." if n == 1
                          else f"There are {n} {many}.")
    if kind == "position":
        a, b, relation = _noun(shapes[0]), _noun(shapes[1]), spec["relation"]
        fact = f"the {a} is {relation} the {b}."
        if rng.random() < 0.5:
            question = one_of(rng, frames_of(QUESTIONS["where"], split))
            return question.format(a=a), world.capitalize(fact)
        asked = relation if rng.random() < 0.5 else one_of(rng, [r for r in RELATIONS
                                                                 if r != relation])
        question = one_of(rng, frames_of(QUESTIONS["yes/no"], split))
        return (question.format(a=a, b=b, relation=asked),
                ("Yes, " if asked == relation else "No, ") + fact)
    if kind == "reading":
        return one_of(rng, frames_of(QUESTIONS["reading"], split)), f"It says {spec['word']}."
    ask = one_of(rng, ("tallest", "shortest"))
    colour = bar_colour(spec, ask)
    question = one_of(rng, frames_of(QUESTIONS["chart"], split)).format(ask=ask)
    return question, f"The {ask} bar is the {colour} one."


# ---- captions: what image-text pre-training reads after a picture -----------------------------

def caption(spec: dict) -> str:
    """Everything a picture shows, in plain sentences: the text that follows the picture in the
    image-text pre-training stage (the Phi-3 report §6 pre-trains phi-3-vision on image-text
    pairs before its SFT). A written word is also spelled out, character by character, so that
    the stage teaches the characters as well as the words; a chart gives every bar's height.

        colour    "A blue circle."
        count     "3 red stars, in a group."                     (1: "1 red star, alone.";
                  mixed: "3 shapes: 2 red stars, 1 blue circle.")
        position  "A red circle and a green square. The red circle is above the green square."
        reading   "The word Veska is written in black letters: V, e, s, k, a."
        chart     "A bar chart with 3 bars. From left to right: red 5, green 3, blue 8. The
                   tallest bar is the blue one and the shortest bar is the green one."
    """
    kind = spec["kind"]
    if kind == "colour":
        s = spec["shapes"][0]
        return world.capitalize(f"{world.article(_noun(s))}.")
    if kind == "count":
        shapes = spec["shapes"]
        n, first = len(shapes), shapes[0]
        if is_mixed(spec):
            groups = Counter(_noun(s) for s in shapes)
            parts = [f"{c} {plural(noun) if c > 1 else noun}" for noun, c in groups.items()]
            return f"{n} shapes: {', '.join(parts)}."
        if n == 1:
            return f"1 {_noun(first)}, alone."
        return f"{n} {plural(_noun(first))}, in a group."
    if kind == "position":
        a, b = (_noun(s) for s in spec["shapes"])
        if a == b:              # two squares of no named colour: say which way they stand
            return f"Two {a}s, one {spec['relation']} the other."
        return (f"{world.capitalize(world.article(a))} and {world.article(b)}. "
                f"The {a} is {spec['relation']} the {b}.")
    if kind == "reading":
        word = spec["word"]
        what, marks = (("number", "digits") if word.isdigit() else ("word", "letters")
                       if word.isalpha() else ("text", "characters"))
        return f"The {what} {word} is written in black {marks}: {', '.join(word)}."
    colours, heights = spec["colours"], spec["heights"]
    bars = ", ".join(f"{c} {h}" for c, h in zip(colours, heights))
    tallest, shortest = bar_colour(spec, "tallest"), bar_colour(spec, "shortest")
    return (f"A bar chart with {len(colours)} bars. From left to right: {bars}. The tallest bar "
            f"is the {tallest} one and the shortest bar is the {shortest} one.")


def plural(noun: str) -> str:
    """ "red stars", "crosses"."""
    return noun + ("es" if noun.endswith("s") else "s")


def _caption_record(index, kind, split, spec) -> dict:
    return {"image": f"images/{index:05d}.png", "text": caption(spec), "kind": kind,
            "split": split, "spec": spec}


def check_kinds(kinds) -> tuple:
    """`kinds` as a tuple, each one of QUESTION_KINDS (repeats allowed: they weight the mix)."""
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in QUESTION_KINDS]
    if not kinds or unknown:
        raise ValueError(f"kinds are some of {', '.join(QUESTION_KINDS)} (a kind may come more "
                         f"than once), got {', '.join(map(repr, kinds)) or 'none'}")
    return kinds


def generate_caption_examples(n: int, split: str = "train", seed: int = 0,
                              size: int = 56, made_up: float = 0.0, random_strings: float = 0.0,
                              mixed_counts: float = 0.0, unnamed_colours: float = 0.0,
                              kinds: tuple = QUESTION_KINDS,
                              extra_shapes: float = 0.0) -> Iterator:
    """(image, record) pairs for image-text pre-training, the kinds in turn, deterministic from
    the seed: record["text"] is the picture's caption (no question, no chat), and the pictures
    of `split` obey the same held-out rule as the questions' pictures. made_up, random_strings,
    mixed_counts, unnamed_colours, extra_shapes: as for picture_spec (train only); kinds: as for
    generate_image_examples."""
    kinds = check_kinds(kinds)
    rng = np.random.default_rng(stable_hash("captions", split, seed))
    for index in range(n):
        kind = kinds[index % len(kinds)]
        spec = picture_spec(kind, split, rng, made_up=made_up, random_strings=random_strings,
                            mixed_counts=mixed_counts, unnamed_colours=unnamed_colours,
                            extra_shapes=extra_shapes)
        yield draw(spec, size), _caption_record(index, kind, split, spec)


def example(kind: str, split: str, rng, size: int = 56, made_up: float = 0.0,
            random_strings: float = 0.0, mixed_counts: float = 0.0,
            extra_shapes: float = 0.0) -> tuple:
    """(image, question, answer, spec): one picture of `kind` in `split` and a question on it."""
    spec = picture_spec(kind, split, rng, made_up=made_up, random_strings=random_strings,
                        mixed_counts=mixed_counts, extra_shapes=extra_shapes)
    question, answer = question_and_answer(spec, split, rng)
    return draw(spec, size), question, answer, spec


def generate_image_examples(n: int, split: str = "train", seed: int = 0, size: int = 56,
                            made_up: float = 0.0, caption_share: float = 0.0,
                            random_strings: float = 0.0, mixed_counts: float = 0.0,
                            kinds: tuple = QUESTION_KINDS,
                            extra_shapes: float = 0.0) -> Iterator:
    """(image, record) pairs, the kinds in turn, deterministic from the seed (the first k do not
    depend on n). record["image"] is the path the picture gets when written: images/00000.png.

    made_up, random_strings, mixed_counts, extra_shapes: as for picture_spec; caption_share: the
    share
    of pictures that come with their caption (a caption record, as generate_caption_examples
    writes) instead of a question, so that a question stage keeps the pre-training's
    descriptions. Both for training only; at 0 (the default) the records are exactly those
    drawn before the options existed. kinds: the kinds taken in turn, picture i of kind
    kinds[i % len(kinds)]; a kind named twice comes twice as often (("position", "position",
    "colour") draws two position pictures for each colour one). The default, each of
    QUESTION_KINDS once, draws the records drawn before the option existed."""
    kinds = check_kinds(kinds)
    if not 0.0 <= caption_share <= 1.0:
        raise ValueError(f"caption_share is a share of the pictures, a number from 0 to 1, got "
                         f"{caption_share}")
    if caption_share and split != "train":
        raise ValueError("captions among the questions are for training pictures only")
    rng = np.random.default_rng(stable_hash("images", split, seed))
    for index in range(n):
        kind = kinds[index % len(kinds)]
        if caption_share and rng.random() < caption_share:
            spec = picture_spec(kind, split, rng, made_up=made_up, random_strings=random_strings,
                                mixed_counts=mixed_counts, extra_shapes=extra_shapes)
            yield draw(spec, size), _caption_record(index, kind, split, spec)
            continue
        image, question, answer, spec = example(kind, split, rng, size, made_up, random_strings,
                                                mixed_counts, extra_shapes)
        yield image, {"image": f"images/{index:05d}.png",
                      "messages": [{"role": "user", "content": f"{IMAGE_TAG}\n{question}"},
                                   {"role": "assistant", "content": answer}],
                      "kind": kind, "split": split, "spec": spec}


def write_image_examples(pairs, out_dir, total=None, progress: bool = False) -> int:
    """Write (image, record) pairs as out_dir/<record's image path> and out_dir/examples.jsonl;
    returns how many. Existing files of the same names are overwritten."""
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)

    def records():
        for image, record in tqdm(pairs, total=total, unit="picture", desc="drawing",
                                  disable=not progress):
            image.save(out / record["image"])
            yield record
    return write_jsonl(records(), out / "examples.jsonl")


# ---- a contact sheet, to show the data ---------------------------------------------------------

def contact_sheet(items, columns: int = 5, zoom: int = 3) -> Image.Image:
    """One white image tiling pictures (zoomed `zoom` times, nearest-neighbour) in `columns`
    columns, each with its question and answer under it. An item is a picture, an (image, record)
    pair as `generate_image_examples` yields, or (image, question, answer, ...) as `example`
    returns."""
    items = [item if isinstance(item, tuple) else (item,) for item in items]
    texts = [[m["content"] for m in item[1]["messages"]]
             if len(item) == 2 and isinstance(item[1], dict)
             else [text for text in item[1:3] if isinstance(text, str)] for item in items]
    font = ImageFont.load_default(size=11)
    tile = max(item[0].width for item in items) * zoom
    captions = [[line for text in item_texts
                 for line in textwrap.wrap(text.replace(IMAGE_TAG, "").strip(), tile // 6)]
                for item_texts in texts]
    cell_h = tile + 14 * max(len(c) for c in captions) + 10
    rows = -(-len(items) // columns)
    sheet = Image.new("RGB", (columns * (tile + 10) + 10, rows * cell_h + 10), "white")
    canvas = ImageDraw.Draw(sheet)
    for i, (item, caption) in enumerate(zip(items, captions)):
        left, top = 10 + (i % columns) * (tile + 10), 10 + (i // columns) * cell_h
        sheet.paste(item[0].resize((item[0].width * zoom, item[0].height * zoom), Image.NEAREST),
                    (left, top))
        for k, line in enumerate(caption):
            canvas.text((left, top + tile + 3 + 14 * k), line, fill=(0, 0, 0), font=font)
    return sheet
