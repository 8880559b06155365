"""The pictures of tinyphi3.data.images: deterministic, the answer true of the PIXELS (read back
with a flood fill, centroids and column counts written here, not from the spec), the held-out
split made of compositions and wordings that training never shows, and the `data images` command.
"""

import json
import re
from collections import Counter, deque

import numpy as np
import pytest
from click.testing import CliRunner

from tinyphi3.cli.data import data
from tinyphi3.data import images, world
from tinyphi3.data.images import (BACKGROUND, INK, PALETTE, QUESTIONS, QUESTION_KINDS, SHAPES,
                                  draw, example, generate_caption_examples, generate_image_examples,
                                  is_held_out_picture)

RGB_TO_NAME = {rgb: name for name, rgb in PALETTE.items()}


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int64)                          # [S, S, 3]


def foreground(a) -> np.ndarray:
    """[S, S] True where a pixel is not the background."""
    return (a != BACKGROUND).any(-1)


def colour_counts(a) -> Counter:
    """{colour name: pixels of that exact RGB}, background left out; a pixel of no palette colour
    (a blended edge) would be counted as None."""
    mask = foreground(a)
    return Counter(RGB_TO_NAME.get(tuple(int(v) for v in rgb)) for rgb in a[mask])


def blobs(mask) -> int:
    """How many 8-connected groups of True pixels: a breadth-first flood fill from each unseen
    one."""
    seen = np.zeros_like(mask)
    count = 0
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        count += 1
        seen[start] = True
        queue = deque([start])
        while queue:
            y, x = queue.popleft()
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    q = (y + dy, x + dx)
                    if (0 <= q[0] < mask.shape[0] and 0 <= q[1] < mask.shape[1]
                            and mask[q] and not seen[q]):
                        seen[q] = True
                        queue.append(q)
    return count


def centroid(a, colour) -> np.ndarray:
    """(x, y) of the mean pixel of one exact colour."""
    ys, xs = np.nonzero((a == PALETTE[colour]).all(-1))
    assert len(xs), f"no {colour} pixel"
    return np.array([xs.mean(), ys.mean()])


def relation_of(first, second) -> str:
    """Where the centroid `first` lies from `second`, along the axis on which they differ most."""
    dx, dy = first - second
    if abs(dx) > abs(dy):
        return "left of" if dx < 0 else "right of"
    return "above" if dy < 0 else "below"


def examples_of(kind, split, n, size=56, seed=0):
    rng = np.random.default_rng(seed)
    return [example(kind, split, rng, size) for _ in range(n)]


# ---- deterministic -------------------------------------------------------------------------------

def test_the_same_seed_gives_the_same_pictures_and_questions():
    for split in ("train", "test"):
        first = list(generate_image_examples(10, split, seed=3))
        again = list(generate_image_examples(10, split, seed=3))
        for (image, record), (image2, record2) in zip(first, again):
            assert np.array_equal(pixels(image), pixels(image2))
            assert record == record2
        other = list(generate_image_examples(10, split, seed=4))
        assert any(not np.array_equal(pixels(a), pixels(b)) for (a, _), (b, _) in zip(first, other))
    shorter = [r for _, r in generate_image_examples(4, "train", seed=3)]   # k first: n-free
    assert shorter == [r for _, r in generate_image_examples(10, "train", seed=3)][:4]


def test_records_carry_the_image_tag_and_the_kinds_in_turn():
    records = [record for _, record in generate_image_examples(10, "train", seed=0)]
    assert [r["kind"] for r in records] == list(QUESTION_KINDS) * 2
    for index, record in enumerate(records):
        user, assistant = record["messages"]
        assert record["image"] == f"images/{index:05d}.png" and record["split"] == "train"
        assert user["role"] == "user" and user["content"].startswith("<|image_1|>\n")
        assert assistant["role"] == "assistant" and assistant["content"].endswith(".")
        assert json.loads(json.dumps(record)) == record                   # JSON-ready, spec too


def test_kinds_are_taken_in_turn_a_repeated_kind_more_often_and_the_default_is_each_once():
    weighted = [r for _, r in generate_image_examples(9, "test", seed=0,
                                                      kinds=("position", "position", "reading"))]
    assert [r["kind"] for r in weighted] == ["position", "position", "reading"] * 3
    assert all(r["spec"]["kind"] == r["kind"] for r in weighted)
    assert all(is_held_out_picture(r["spec"]) for r in weighted)      # the split's rule holds
    default = [r for _, r in generate_image_examples(10, "train", seed=5)]
    assert default == [r for _, r in generate_image_examples(10, "train", seed=5,
                                                             kinds=QUESTION_KINDS)]
    captions = [r for _, r in generate_caption_examples(4, "train", seed=5, kinds=("chart",))]
    assert [r["kind"] for r in captions] == ["chart"] * 4 and "bar chart" in captions[0]["text"]
    for bad in ((), ("colour", "colours")):
        with pytest.raises(ValueError, match="kinds are some of"):
            list(generate_image_examples(2, kinds=bad))


@pytest.mark.parametrize("kinds", ["colour,shape", "", "count,,chart"])
def test_an_unknown_or_empty_kind_is_one_clear_error(tmp_path, kinds):
    result = CliRunner().invoke(data, ["images", "--n", "3", "--kinds", kinds,
                                       "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "--kinds" in result.output
    assert "kinds are some of colour, count, position, reading, chart" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x").exists()


@pytest.mark.parametrize("size", [28, 56, 84])
def test_pictures_are_rgb_squares_of_the_size_asked(size):
    for kind in QUESTION_KINDS:
        for image, *_ in examples_of(kind, "train", 3, size) + examples_of(kind, "test", 3, size):
            assert image.mode == "RGB" and image.size == (size, size)
            assert foreground(pixels(image)).any()
    with pytest.raises(ValueError, match="at least 28"):
        draw({"kind": "reading", "word": "42"}, 27)


def test_shapes_are_drawn_in_exact_palette_colours_that_stand_apart():
    names = list(PALETTE) + ["background"]
    rgbs = np.array(list(PALETTE.values()) + [BACKGROUND])
    assert set(PALETTE) == set(world.COLOURS)
    distances = np.linalg.norm(rgbs[:, None] - rgbs[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    i, j = np.unravel_index(distances.argmin(), distances.shape)
    assert distances[i, j] >= 75, f"{names[i]} and {names[j]} are too close"
    for kind in ("colour", "count", "position", "chart"):
        for image, *_ in examples_of(kind, "train", 10):
            assert None not in colour_counts(pixels(image)), "a pixel of no palette colour"


# ---- the answer is true of the pixels ------------------------------------------------------------

def test_colour_answer_is_the_most_common_colour_of_the_picture():
    for split in ("train", "test"):
        for image, question, answer, _ in examples_of("colour", split, 40):
            colour = re.fullmatch(r"It is (\w+)\.", answer).group(1)
            counts = colour_counts(pixels(image))
            assert counts.most_common(1)[0][0] == colour, (question, answer, counts)


@pytest.mark.parametrize("size", [56, 84])
def test_count_answer_is_the_number_of_separate_blobs(size):
    for split in ("train", "test"):
        for image, question, answer, _ in examples_of("count", split, 40, size):
            n, noun = re.fullmatch(r"There (?:is|are) (\d) (\w+)\.", answer).groups()
            assert noun.rstrip("s") in SHAPES and noun.rstrip("s") + "s" in question
            assert (noun.endswith("s")) == (n != "1")
            assert blobs(foreground(pixels(image))) == int(n), (question, answer)


def test_the_flood_fill_counts_diagonal_neighbours_as_one_and_gaps_as_two():
    mask = np.zeros((5, 5), bool)
    mask[0, 0] = mask[1, 1] = mask[3, 3] = True
    assert blobs(mask) == 2


def test_position_answer_holds_between_the_pixel_centroids():
    sentence = r"the (\w+) (\w+) is (left of|right of|above|below) the (\w+) (\w+)\."
    asked_forms = 0
    for split in ("train", "test"):
        for image, question, answer, _ in examples_of("position", split, 60):
            found = re.search(sentence, answer, re.IGNORECASE)
            first, _, relation, second, _ = found.groups()
            a = pixels(image)
            assert relation_of(centroid(a, first.lower()), centroid(a, second)) == relation
            if answer.startswith(("Yes", "No")):
                asked_forms += 1
                asked = re.search(r"left of|right of|above|below", question).group(0)
                assert answer.startswith("Yes, " if asked == relation else "No, "), question
            else:
                assert answer[0] == "T" and question.count(first.lower()) == 1
    assert 0 < asked_forms < 120                                 # both forms of question occur


def test_chart_answer_is_the_colour_of_the_tallest_or_shortest_column():
    for split in ("train", "test"):
        for image, question, answer, _ in examples_of("chart", split, 40):
            ask, colour = re.fullmatch(r"The (tallest|shortest) bar is the (\w+) one\.",
                                       answer).groups()
            assert ask in question
            a = pixels(image)
            height = foreground(a).sum(axis=0)                                 # [S] per column
            columns = np.nonzero(height)[0]
            column = columns[height[columns].argmax() if ask == "tallest"
                             else height[columns].argmin()]
            counts = Counter(RGB_TO_NAME[tuple(int(v) for v in rgb)]
                             for rgb in a[foreground(a)[:, column], column])
            assert counts.most_common(1)[0][0] == colour, (question, answer)


def test_reading_pictures_show_dark_text_of_the_word_and_words_stay_apart():
    for split in ("train", "test"):
        for image, question, answer, spec in examples_of("reading", split, 30):
            assert answer == f"It says {spec['word']}."
            a = pixels(image)
            ink = (a == INK).all(-1)
            assert ink.sum() > 40 and (ink == foreground(a)).all()         # dark ink, nothing else
            xs = np.nonzero(ink.any(axis=0))[0]
            assert xs[-1] - xs[0] > 0.4 * a.shape[1]                          # written large
    words = [e.name for e in world.ENTITIES] + [str(n) for n in range(10, 100)]
    drawn = {draw({"kind": "reading", "word": w}).tobytes() for w in words}
    assert len(drawn) == len(words)                  # no two words give the same picture


# ---- the held-out split --------------------------------------------------------------------------

def wording_pattern(template: str):
    """A template as a regex: each {slot} stands for one or more words."""
    pieces = re.split(r"\{\w+\}", template)
    return re.compile(r"[a-z]+(?: [a-z]+)*".join(re.escape(p) for p in pieces))


HELD_OUT_WORDINGS = [wording_pattern(t) for wordings in QUESTIONS.values()
                     for t in wordings[3::4]]


def question_of(record) -> str:
    return record["messages"][0]["content"].removeprefix("<|image_1|>\n")


def test_no_train_picture_is_held_out_and_every_test_picture_is():
    train = [r for _, r in generate_image_examples(300, "train", seed=1)]
    test = [r for _, r in generate_image_examples(150, "test", seed=1)]
    assert not any(is_held_out_picture(r["spec"]) for r in train)
    assert all(is_held_out_picture(r["spec"]) for r in test)
    for record in train:
        assert not any(p.fullmatch(question_of(record)) for p in HELD_OUT_WORDINGS), record
    for record in test:                              # negative control: the patterns do match
        assert any(p.fullmatch(question_of(record)) for p in HELD_OUT_WORDINGS), record
    shown = {(s["colour"], s["shape"]) for r in train for s in r["spec"].get("shapes", ())}
    assert not any(images.held_out_colour_shape(c, s) for c, s in shown)
    assert {c for c, _ in shown} == set(world.COLOURS) and {s for _, s in shown} == set(SHAPES)
    words = {r["spec"]["word"] for r in train if r["kind"] == "reading"}
    assert not words & {e.name for e in world.ENTITIES[3::4]}


def test_the_held_out_rule_on_known_compositions():
    star = {"kind": "colour", "shapes": [{"shape": "star", "colour": "red", "x": 0.5, "y": 0.5,
                                          "r": 0.3}]}
    assert is_held_out_picture(star)                     # red is colour 0, star shape 3
    assert not is_held_out_picture({**star, "shapes": [{**star["shapes"][0], "shape": "circle"}]})
    assert is_held_out_picture({"kind": "reading", "word": "43"})
    assert not is_held_out_picture({"kind": "reading", "word": "42"})
    assert is_held_out_picture({"kind": "reading", "word": world.ENTITIES[3].name})
    assert not is_held_out_picture({"kind": "reading", "word": world.ENTITIES[4].name})
    circles = [{"shape": "circle", "colour": "blue", "x": 0.2, "y": 0.2, "r": 0.09}] * 3
    assert is_held_out_picture({"kind": "count", "shapes": circles})      # circle 0, count 3
    assert not is_held_out_picture({"kind": "count", "shapes": circles[:2]})


# ---- the command ---------------------------------------------------------------------------------

def test_the_command_writes_pictures_and_lines_and_refuses_a_full_directory(tmp_path):
    out = tmp_path / "vision"
    result = CliRunner().invoke(data, ["images", "--n", "7", "--split", "test", "--seed", "2",
                                       "--size", "40", "--out", str(out)])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in (out / "examples.jsonl").read_text().splitlines()]
    assert len(records) == 7 and len(list((out / "images").glob("*.png"))) == 7
    from PIL import Image
    for record in records:
        with Image.open(out / record["image"]) as png:
            assert png.size == (40, 40) and record["split"] == "test"
            assert np.array_equal(pixels(png.convert("RGB")), pixels(draw(record["spec"], 40)))

    again = CliRunner().invoke(data, ["images", "--n", "3", "--out", str(out)])
    assert again.exit_code != 0 and "is not empty" in again.output
    assert len(list((out / "images").glob("*.png"))) == 7                  # nothing overwritten


def test_contact_sheet_tiles_pictures_with_their_captions():
    items = examples_of("count", "train", 3) + examples_of("chart", "train", 2)
    sheet = images.contact_sheet(items, columns=3, zoom=2)
    assert sheet.mode == "RGB" and sheet.width == 3 * (112 + 10) + 10
    pairs = list(generate_image_examples(2, "train"))
    assert images.contact_sheet(pairs, columns=2).width == 2 * (168 + 10) + 10


def test_captions_say_what_the_picture_shows():
    """Each caption names what its spec draws: the colour and shape, the count, both shapes and
    their relation, the word spelled character by character, every bar with its height and the
    tallest and shortest; captions of test pictures obey the held-out rule."""
    for split in ("train", "test"):
        for _, record in generate_caption_examples(25, split, seed=3, size=28):
            spec, text = record["spec"], record["text"]
            assert is_held_out_picture(spec) == (split == "test")
            kind = spec["kind"]
            if kind in ("colour", "count", "position"):
                for s in spec["shapes"]:
                    assert f"{s['colour']} {s['shape']}" in text
            if kind == "count":
                assert text.startswith(f"{len(spec['shapes'])} ")
            if kind == "position":
                a, b = (f"{s['colour']} {s['shape']}" for s in spec["shapes"])
                assert f"The {a} is {spec['relation']} the {b}." in text
            if kind == "reading":
                assert f" {spec['word']} " in text and ", ".join(spec["word"]) in text
            if kind == "chart":
                for c, h in zip(spec["colours"], spec["heights"]):
                    assert f"{c} {h}" in text
                top = spec["colours"][spec["heights"].index(max(spec["heights"]))]
                assert f"tallest bar is the {top} one" in text
    again = [r["text"] for _, r in generate_caption_examples(10, "train", seed=3, size=28)]
    assert again == [r["text"] for _, r in generate_caption_examples(10, "train", seed=3, size=28)]


# ---- made-up words and captions among the questions (training only) ----------------------------

def test_made_up_words_are_built_from_name_syllables_and_name_no_creature():
    made_up = images.made_up_words()
    names = {e.name for e in world.ENTITIES}
    assert len(made_up) == len(set(made_up)) > 50
    assert not set(made_up) & (names | world._NOT_NAMES)
    syllables = {a + b for a in world._FIRST for b in world._SECOND}
    assert set(made_up) | names >= syllables - world._NOT_NAMES            # every unused pair
    assert set(made_up) <= syllables
    assert not any(is_held_out_picture({"kind": "reading", "word": w}) for w in made_up)


def test_made_up_words_show_in_training_reading_pictures_at_the_share_asked():
    records = [r for _, r in generate_image_examples(1000, "train", seed=5, made_up=0.5)]
    words = [r["spec"]["word"] for r in records if r["kind"] == "reading"]
    share = sum(w in images.made_up_words() for w in words) / len(words)
    assert 0.4 < share < 0.6, share
    held_out = {e.name for e in world.ENTITIES[3::4]}
    assert not set(words) & held_out
    for record in records:
        if record["kind"] == "reading":
            assert record["messages"][1]["content"] == f"It says {record['spec']['word']}."
    none = [r["spec"]["word"] for _, r in generate_image_examples(400, "train", seed=5)
            if r["kind"] == "reading"]
    assert not set(none) & set(images.made_up_words())
    captions = [r for _, r in generate_caption_examples(400, "train", seed=5, made_up=1.0)]
    assert all(r["spec"]["word"] in images.made_up_words() for r in captions
               if r["kind"] == "reading")


def test_caption_share_mixes_caption_records_among_the_questions():
    records = [r for _, r in generate_image_examples(1000, "train", seed=6, caption_share=0.25)]
    mixed = [r for r in records if "text" in r]
    assert 0.2 < len(mixed) / len(records) < 0.3
    assert [r["kind"] for r in records] == list(QUESTION_KINDS) * 200     # kinds still in turn
    for record in mixed:
        assert record["text"] == images.caption(record["spec"]) and "messages" not in record
        assert not is_held_out_picture(record["spec"])
    for index, record in enumerate(records):
        assert record["image"] == f"images/{index:05d}.png"


@pytest.mark.parametrize("option, flag", [
    ("made_up", "--made-up-words"), ("caption_share", "--caption-share"),
    ("random_strings", "--random-strings"), ("mixed_counts", "--mixed-counts")])
def test_training_only_options_are_refused_for_the_held_out_split(tmp_path, option, flag):
    with pytest.raises(ValueError, match="training pictures only"):
        next(generate_image_examples(5, "test", **{option: 0.3}))
    with pytest.raises(ValueError, match="from 0 to 1"):
        next(generate_image_examples(5, "train", **{option: 1.5}))
    result = CliRunner().invoke(data, ["images", "--n", "3", "--split", "test", flag, "0.3",
                                       "--out", str(tmp_path / "x")])
    assert result.exit_code != 0 and "training pictures only" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "x").exists()


@pytest.mark.parametrize("flags, options", [
    (["--made-up-words", "1", "--caption-share", "0.5"], dict(made_up=1.0, caption_share=0.5)),
    (["--random-strings", "1", "--mixed-counts", "1"], dict(random_strings=1.0, mixed_counts=1.0)),
    (["--kinds", "position, position,chart"], dict(kinds=("position", "position", "chart")))])
def test_the_command_writes_the_records_the_generator_draws(tmp_path, flags, options):
    result = CliRunner().invoke(data, ["images", "--n", "10", *flags, "--seed", "1",
                                       "--out", str(tmp_path / "y")])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (tmp_path / "y" / "examples.jsonl").read_text().splitlines()]
    assert lines == [r for _, r in generate_image_examples(10, "train", 1, **options)]


# ---- random strings and mixed counts (training only) ---------------------------------------------

NAMES = {e.name for e in world.ENTITIES}
HELD_OUT_INSIDE = ([e.name.lower() for e in world.ENTITIES[3::4]]
                   + [str(n) for n in range(10, 100) if n % 4 == 3])


def test_random_strings_use_every_character_in_every_place_and_hide_no_held_out_word():
    rng = np.random.default_rng(8)
    words = [images.picture_spec("reading", "train", rng, random_strings=1.0)["word"]
             for _ in range(3000)]
    assert all(1 <= len(w) <= 6 and re.fullmatch(r"[0-9A-Za-z]+", w) for w in words)
    assert {len(w) for w in words} == set(range(1, 7))
    alphabet = set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    for place in range(3):                               # every character in the first places
        assert {w[place] for w in words if len(w) > place} == alphabet, place
    assert not any(held in w.lower() for w in words for held in HELD_OUT_INSIDE)
    assert not any(w.isdigit() and int(w) % 4 == 3 for w in words)
    # the rule itself, on strings made to contain a held-out word (a negative control)
    name = world.ENTITIES[3].name
    for word in (f"x{name.upper()}", f"a{name.lower()}", "a91b", "191", "7"):
        assert is_held_out_picture({"kind": "reading", "word": word}), word
    for word in ("a92b", "x", world.ENTITIES[4].name + "q", "12"):
        assert not is_held_out_picture({"kind": "reading", "word": word}), word


def test_random_strings_are_drawn_as_dark_text_and_answered_and_captioned_as_written():
    records = [r for _, r in generate_image_examples(500, "train", seed=9, random_strings=0.5,
                                                     made_up=0.2)]
    reading = [r for r in records if r["kind"] == "reading"]
    strings = [r for r in reading if not (r["spec"]["word"].isdigit()
                                          or r["spec"]["word"] in images.made_up_words()
                                          or r["spec"]["word"] in NAMES)]
    assert 0.3 < len(strings) / len(reading) < 0.7
    for record in strings:
        word = record["spec"]["word"]
        assert record["messages"][1]["content"] == f"It says {word}."
        assert images.caption(record["spec"]).endswith(f": {', '.join(word)}.")
    image = draw({"kind": "reading", "word": "k7Qa"})
    assert colour_counts(pixels(image)).keys() == {"black"}


def test_mixed_counts_show_several_shapes_each_counted_and_obey_the_rule_per_shape():
    rng = np.random.default_rng(10)
    specs = [images.picture_spec("count", "train", rng, mixed_counts=1.0) for _ in range(300)]
    for spec in specs:
        kinds = Counter(s["shape"] for s in spec["shapes"])
        assert len(kinds) >= 2 and 2 <= len(spec["shapes"]) <= 5 and images.is_mixed(spec)
        assert not any((SHAPES.index(k) + c) % 4 == 3 for k, c in kinds.items())
        assert not any(images.held_out_colour_shape(s["colour"], s["shape"])
                       for s in spec["shapes"])
    assert {len(s["shapes"]) for s in specs} == {2, 3, 4, 5}
    for spec in specs[:40]:                              # the answer is true of the pixels
        question, answer = images.question_and_answer(spec, "train", rng)
        assert "shapes" in question and answer == f"There are {len(spec['shapes'])} shapes."
        assert blobs(foreground(pixels(draw(spec)))) == len(spec["shapes"])
        counted = re.findall(r"(\d) \w+ (?:circle|square|triangle|star)s?",
                             images.caption(spec).split(": ", 1)[1])
        assert sum(map(int, counted)) == len(spec["shapes"])
    three_circles = [{"shape": "circle", "colour": "blue", "x": 0.2, "y": 0.2, "r": 0.09}] * 3
    star = {"shape": "star", "colour": "blue", "x": 0.8, "y": 0.8, "r": 0.09}
    assert is_held_out_picture({"kind": "count", "shapes": three_circles + [star]})
    assert not is_held_out_picture({"kind": "count", "shapes": three_circles[:2] + [star]})
    rng = np.random.default_rng(11)
    share = np.mean([images.is_mixed(images.picture_spec("count", "train", rng, mixed_counts=0.5))
                     for _ in range(400)])
    assert 0.4 < share < 0.6
    rng = np.random.default_rng(11)
    assert not any(images.is_mixed(images.picture_spec("count", "train", rng))
                   for _ in range(200))


def test_unnamed_colours_keep_far_from_every_named_colour_and_captions_name_none():
    named = np.array([*PALETTE.values(), BACKGROUND])
    rng = np.random.default_rng(12)
    for kind in ("colour", "count", "position"):
        for _ in range(40):
            spec = images.picture_spec(kind, "train", rng, unnamed_colours=1.0, mixed_counts=0.3)
            assert images.is_unnamed(spec) and not is_held_out_picture(spec)
            image = pixels(draw(spec))
            drawn = {tuple(int(v) for v in rgb) for rgb in image[foreground(image)]}
            assert drawn == {images.rgb_of(s["colour"]) for s in spec["shapes"]}
            for rgb in drawn:             # read from the pixels: no named colour within 75
                assert np.sqrt(((named - np.array(rgb)) ** 2).sum(axis=1)).min() >= 75, rgb
            text = images.caption(spec)
            assert not any(re.search(rf"\b{c}\b", text) for c in world.COLOURS), text
            assert "#" not in text, text
            with pytest.raises(ValueError, match="no question"):
                images.question_and_answer(spec, "train", rng)
            if kind == "count":
                assert blobs(foreground(image)) == len(spec["shapes"])
    rng = np.random.default_rng(13)
    share = np.mean([images.is_unnamed(images.picture_spec("position", "train", rng,
                                                           unnamed_colours=0.3))
                     for _ in range(400)])
    assert 0.2 < share < 0.4
    rng = np.random.default_rng(13)
    assert not any(images.is_unnamed(images.picture_spec("colour", "train", rng))
                   for _ in range(100))


def test_unnamed_colours_come_with_captions_of_the_train_split_only(tmp_path):
    runner = CliRunner()
    for flags in (["--unnamed-colours", "0.3"],
                  ["--unnamed-colours", "0.3", "--captions", "--split", "test"]):
        result = runner.invoke(data, ["images", "--n", "3", *flags, "--out", str(tmp_path / "x")])
        assert result.exit_code != 0 and "Traceback" not in result.output
        assert "captions" in result.output or "training pictures only" in result.output
        assert not (tmp_path / "x").exists()
    result = runner.invoke(data, ["images", "--n", "15", "--captions", "--unnamed-colours", "1",
                                  "--seed", "2", "--out", str(tmp_path / "y")])
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (tmp_path / "y" / "examples.jsonl").read_text().splitlines()]
    assert lines == [r for _, r in generate_caption_examples(15, "train", 2, unnamed_colours=1.0)]
    assert all(images.is_unnamed(r["spec"]) for r in lines
               if r["kind"] in ("colour", "count", "position"))


# ---- extra shapes (training only) --------------------------------------------------------------

def test_extra_shapes_are_count_pictures_of_shapes_the_world_does_not_have():
    rng = np.random.default_rng(14)
    specs = [images.picture_spec("count", "train", rng, extra_shapes=1.0, mixed_counts=0.3)
             for _ in range(300)]
    drawn = Counter()
    for spec in specs:
        assert images.has_extra_shapes(spec) and not is_held_out_picture(spec)
        assert all(s["shape"] in images.EXTRA_SHAPES for s in spec["shapes"])
        drawn.update((s["shape"], len(spec["shapes"])) for s in spec["shapes"][:1]
                     if not images.is_mixed(spec))
    # every extra shape in every count from 1 to 5, alone in its picture
    assert set(drawn) == {(s, n) for s in images.EXTRA_SHAPES for n in range(1, 6)}
    for spec in specs[:60]:                              # the caption is true of the pixels
        image = pixels(draw(spec))
        assert blobs(foreground(image)) == len(spec["shapes"])
        assert set(colour_counts(image)) == {s["colour"] for s in spec["shapes"]}
        text = images.caption(spec)
        assert re.match(rf"{len(spec['shapes'])} ", text), text
        counted = re.findall(r"(\d) \w+ \w+?(?:es|s)?\b", text.split(": ", 1)[-1])
        if images.is_mixed(spec):
            assert sum(map(int, counted)) == len(spec["shapes"]), text
        question, answer = images.question_and_answer(spec, "train", rng)
        n, noun = re.fullmatch(r"There (?:is|are) (\d) (\w+)\.", answer).groups()
        assert int(n) == len(spec["shapes"]) and noun in question
        if not images.is_mixed(spec):
            shape = spec["shapes"][0]["shape"]
            assert noun == (shape if n == "1" else {"cross": "crosses"}.get(shape, shape + "s"))
    assert images.caption({"kind": "count", "shapes": [
        {"shape": "cross", "colour": "red", "x": 0.2, "y": 0.2, "r": 0.09},
        {"shape": "cross", "colour": "red", "x": 0.8, "y": 0.8, "r": 0.09}]}) == \
        "2 red crosses, in a group."
    # each outline is its own: no two extra shapes (nor a world shape) cover the same pixels
    masks = {}
    for shape in (*SHAPES, *images.EXTRA_SHAPES):
        spec = {"kind": "count", "shapes": [{"shape": shape, "colour": "black", "x": 0.5,
                                             "y": 0.5, "r": 0.4}]}
        masks[shape] = foreground(pixels(draw(spec))).tobytes()
    assert len(set(masks.values())) == len(masks)


def test_extra_shapes_keep_the_rule_for_the_world_s_shapes_and_are_off_by_default():
    cross = {"shape": "cross", "colour": "red", "x": 0.5, "y": 0.5, "r": 0.09}
    stars = [{"shape": "star", "colour": "blue", "x": 0.2 * i, "y": 0.2, "r": 0.09}
             for i in range(1, 5)]
    assert not is_held_out_picture({"kind": "count", "shapes": [cross] * 4})
    assert is_held_out_picture({"kind": "count", "shapes": stars + [cross]})      # 4 stars
    assert not is_held_out_picture({"kind": "count", "shapes": stars[:3] + [cross]})
    rng = np.random.default_rng(15)
    share = np.mean([images.has_extra_shapes(images.picture_spec("count", "train", rng,
                                                                 extra_shapes=0.5))
                     for _ in range(400)])
    assert 0.4 < share < 0.6
    # at 0 the specs drawn are exactly those of before the option
    a, b = np.random.default_rng(16), np.random.default_rng(16)
    assert ([images.picture_spec("count", "train", a) for _ in range(50)]
            == [images.picture_spec("count", "train", b, extra_shapes=0.0) for _ in range(50)])
    with pytest.raises(ValueError, match="training pictures only"):
        images.picture_spec("count", "test", rng, extra_shapes=0.5)


def test_extra_shapes_are_for_the_train_split_only_with_questions_or_captions(tmp_path):
    runner = CliRunner()
    for flags in (["--split", "test"], ["--captions", "--split", "test"]):
        result = runner.invoke(data, ["images", "--n", "3", "--extra-shapes", "0.3", *flags,
                                      "--out", str(tmp_path / "x")])
        assert result.exit_code != 0 and "Traceback" not in result.output
        assert "training pictures only" in result.output and not (tmp_path / "x").exists()
    for flags, generate in ((["--captions"], generate_caption_examples),
                            ([], generate_image_examples)):
        out = tmp_path / f"y{len(flags)}"
        result = runner.invoke(data, ["images", "--n", "10", *flags, "--extra-shapes", "1",
                                      "--kinds", "count,chart", "--seed", "2", "--out", str(out)])
        assert result.exit_code == 0, result.output
        lines = [json.loads(x) for x in (out / "examples.jsonl").read_text().splitlines()]
        assert lines == [r for _, r in generate(10, "train", 2, extra_shapes=1.0,
                                                kinds=("count", "chart"))]
        assert [images.has_extra_shapes(r["spec"]) for r in lines] == [True, False] * 5
