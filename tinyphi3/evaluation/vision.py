"""The tiny phi-3-vision on held-out pictures: n test pictures per kind of tinyphi3.data.images
(held-out compositions, asked in held-out wordings), each asked in a fresh chat with the picture
("<|user|>\\n<|image_1|>\\nQuestion<|end|>\\n<|assistant|>\\n", as `tinyphi3 chat --image` asks),
the reply greedy up to <|end|> or 40 new tokens, then judged by a stated rule.

The rules read the key of the answer from the reply (case aside; words are whole words, so
"red" is not found in "reddish" nor 23 in 123); the expected key comes from the picture's spec,
or from the question where the spec does not hold it (which relation a yes/no question asks,
whether a chart question asks for the tallest or the shortest bar), never from the data's answer:

    colour    the reply names the shape's colour and no other colour word of world.COLOURS
    count     the first number of the reply is the number of shapes; digits or a number word
              ("three" counts as 3: the count is measured, not its spelling)
    position  yes/no question ("Is the red circle left of the blue star?"): the first "yes" or
              "no" of the reply is the right one;
              where question ("Where is the red circle?"): the reply names one relation (left of,
              right of, above, below), the asked shape ("red circle") before it and the other
              shape after it: "The red circle is left of the blue star." The converse with the
              inverse relation is right too ("The blue star is right of the red circle.")
    reading   the written word (a creature's name or a two-digit number, as written: "91", not
              "ninety-one") appears in the reply, and no other word a picture can show
    chart     the reply names the colour of the asked bar (tallest or shortest) and no other
              colour word of world.COLOURS

A reply that hedges (two colours, two relations, two names) is wrong.

The control (`blind=True`): the same questions, each with a uniform picture of the same size in
the pictures' background colour (images.BACKGROUND) in place of its own. The prompt is the same
token for token: the same template, the same image tag, the same number of image slots (the
count follows from the picture's size), so the model meets the format it was trained on and only
what the picture shows is taken away; dropping the picture instead would also change the prompt
(no slots: a format the model never saw with these questions), and a noise picture would show
something. What the model gets right without the picture it got from the question alone.

Chance is the rate of a uniform guess among the answers a question allows, averaged over the
items of a kind:

    colour    1 / 12 (the colours of world.COLOURS)
    count     1 / 5 (1 to 5 shapes)
    position  yes/no: 1 / 2; where: 1 / 4 (the relation; generous, as the rule also wants the
              other shape, which the question does not name)
    reading   1 / the number of words the split's pictures can show (test: 23 numbers and 40
              names, 1 / 63)
    chart     1 / the number of bars of the picture (3 or 4)

    from tinyphi3.evaluation.vision import evaluate_vision, format_vision_table
    seen = evaluate_vision(model, "checkpoints/vision", n=200)
    blank = evaluate_vision(model, "checkpoints/vision", n=200, blind=True)
    print(format_vision_table({"vision": {"picture": seen, "blank": blank}}))
"""

import re
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tinyphi3.data import images, world
from tinyphi3.errors import InvalidInputError
from tinyphi3.inference.generate import generate
from tinyphi3.models.vision.conversation import chat_inputs

MAX_NEW_TOKENS = 40
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                "ten")
INVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
ROWS = ("colour", "count", "position", "position, yes/no", "position, where", "reading", "chart")
TAG = images.IMAGE_TAG + "\n"          # how a record's question begins: its picture's place


def _words(choices) -> re.Pattern:
    """Any of `choices` as a whole word (or phrase), case-insensitive."""
    alternatives = "|".join(re.escape(c) for c in sorted(choices, key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])", re.IGNORECASE)


COLOUR_WORDS = _words(world.COLOURS)
NUMBER = re.compile(rf"(?<![A-Za-z0-9])(?:[0-9]+|{'|'.join(NUMBER_WORDS)})(?![A-Za-z0-9])",
                    re.IGNORECASE)
YES_NO = _words(("yes", "no"))
RELATION = _words(images.RELATIONS)


def reading_words(split: str = None) -> list:
    """The words a reading picture can show: two-digit numbers and creatures' names; with a
    split, only those of its pictures (test: the held-out ones)."""
    words = [str(k) for k in range(10, 100)] + [e.name for e in world.ENTITIES]
    if split is None:
        return words
    return [w for w in words
            if images.is_held_out_picture({"kind": "reading", "word": w}) == (split == "test")]


READING_WORDS = _words(reading_words())


def named(pattern: re.Pattern, text: str) -> list:
    """The distinct words of `pattern` in `text`, lower case, in order of first appearance."""
    return list(dict.fromkeys(m.group(0).lower() for m in pattern.finditer(text)))


def first_number(text: str):
    """The first number of a reply, digits or a word (zero to ten); None if it has none."""
    found = NUMBER.search(text)
    if found is None:
        return None
    word = found.group(0).lower()
    return NUMBER_WORDS.index(word) if word in NUMBER_WORDS else int(word)


def _noun(shape: dict) -> str:
    return f"{shape['colour']} {shape['shape']}"


def answer_key(spec: dict, question: str, split: str = "test") -> dict:
    """What a right reply must say: {"type" (colour, count, yes/no, where, reading, chart), "key",
    "chance"} from the picture's spec and, where the spec does not say it, the question."""
    kind = spec["kind"]
    if kind == "colour":
        return {"type": "colour", "key": spec["shapes"][0]["colour"],
                "chance": 1 / len(world.COLOURS)}
    if kind == "count":
        return {"type": "count", "key": len(spec["shapes"]), "chance": 1 / 5}
    if kind == "position":
        asked = named(RELATION, question)
        if len(asked) > 1:
            raise ValueError(f"a question with two relations: {question!r}")
        if asked:
            return {"type": "yes/no", "key": "yes" if asked[0] == spec["relation"] else "no",
                    "chance": 1 / 2}
        a, b = spec["shapes"]
        return {"type": "where", "key": {"a": _noun(a), "relation": spec["relation"],
                                         "b": _noun(b)},
                "chance": 1 / len(images.RELATIONS)}
    if kind == "reading":
        return {"type": "reading", "key": spec["word"], "chance": 1 / len(reading_words(split))}
    if kind == "chart":
        ask = "shortest" if "shortest" in question.lower() else "tallest"
        pick = min if ask == "shortest" else max
        colour = spec["colours"][spec["heights"].index(pick(spec["heights"]))]
        return {"type": "chart", "key": colour, "ask": ask, "chance": 1 / len(spec["colours"])}
    raise ValueError(f"unknown kind {kind!r}")


def _says_where(key: dict, reply: str) -> bool:
    relations = list(RELATION.finditer(reply))
    if len({m.group(0).lower() for m in relations}) != 1:
        return False
    said, at = relations[0].group(0).lower(), relations[0].start()
    before, after = reply[:at], reply[at:]
    if said == key["relation"]:
        first, second = key["a"], key["b"]
    elif said == INVERSE[key["relation"]]:
        first, second = key["b"], key["a"]
    else:
        return False
    return bool(_words([first]).search(before) and _words([second]).search(after))


def judge(key: dict, reply: str) -> bool:
    """The rule of the module docstring for one reply, given answer_key's dict."""
    kind, want = key["type"], key["key"]
    if kind in ("colour", "chart"):
        return named(COLOUR_WORDS, reply) == [want]
    if kind == "count":
        return first_number(reply) == want
    if kind == "yes/no":
        said = named(YES_NO, reply)
        return bool(said) and said[0] == want
    if kind == "where":
        return _says_where(want, reply)
    if kind == "reading":
        return named(READING_WORDS, reply) == [want.lower()]
    raise ValueError(f"unknown answer type {kind!r}")


def blank_picture(size: int) -> Image.Image:
    """The control's picture: size x size, every pixel the pictures' background colour."""
    return Image.new("RGB", (size, size), images.BACKGROUND)


def vision_inputs(processor, question: str, picture) -> dict:
    """The model's inputs for one question in a fresh chat with its picture, as `tinyphi3 chat
    --image` builds them: {"input_ids" [1, T], "pixel_values", "image_sizes", ...}."""
    return chat_inputs(processor, [{"role": "user", "content": question, "images": [picture]}])


def greedy_text(model, processor, inputs: dict, max_new_tokens: int) -> str:
    """The greedy continuation of the processor's inputs (one prompt with its pictures), decoded
    without special tokens, up to the end token or max_new_tokens."""
    out = list(generate(model, inputs["input_ids"][0].tolist(), max_new_tokens=max_new_tokens,
                        temperature=0.0, tokenizer=processor.tokenizer,
                        pixel_values=inputs["pixel_values"], image_sizes=inputs["image_sizes"]))
    return processor.tokenizer.decode(out, skip_special_tokens=True).strip()


def reply(model, processor, question: str, picture, max_new_tokens: int = MAX_NEW_TOKENS) -> str:
    """The model's greedy reply to the question about the picture, up to <|end|>."""
    return greedy_text(model, processor, vision_inputs(processor, question, picture),
                       max_new_tokens)


def _processor(processor_or_dir):
    if isinstance(processor_or_dir, (str, Path)):
        from tinyphi3.models.vision.processor import Phi3VProcessor
        return Phi3VProcessor.from_pretrained(processor_or_dir)
    return processor_or_dir


def held_out_items(n: int, seed: int = 0, size: int = 56, split: str = "test") -> list:
    """n held-out (image, record) pairs per kind, the kinds in turn; split "train": pictures of
    trained compositions in trained wordings instead (the seed should be one the training
    pictures were not drawn with, or these are the very pictures trained on)."""
    return list(images.generate_image_examples(n * len(images.QUESTION_KINDS), split, seed,
                                               size))


def evaluate_vision(model, processor_or_dir, n: int = 200, seed: int = 0, size: int = None,
                    blind: bool = False, progress=None,
                    max_new_tokens: int = MAX_NEW_TOKENS, split: str = "test") -> dict:
    """Rates of right replies on n held-out pictures per kind (the rules of the module
    docstring); `blind`: each picture replaced by a blank one of the same size. `size`: the
    pictures' side, the model's crop size by default. `progress(k)`: k more questions done.
    split "train": pictures of trained compositions in trained wordings (held_out_items), to
    tell a skill not learned from a held-out composition not generalised to.

    Returns {"rates": {row: {"n", "ok", "chance"}} for the rows of ROWS (the five kinds, and
    position's yes/no and where questions apart), "records": one dict per question (kind, type,
    prompt, expected, reply, ok, chance, spec), "blind", "size", "n", "seed", "seconds"}."""
    vision = getattr(model.config, "vision", None)
    if vision is None:
        raise InvalidInputError(f"a text-only model (model_type {model.config.model_type!r}) "
                                f"reads no pictures: the vision task needs a Phi-3-vision "
                                f"checkpoint (model_type 'phi3_v')")
    processor = _processor(processor_or_dir)
    size = vision.clip.image_size if size is None else size
    start, records = time.perf_counter(), []
    for picture, record in held_out_items(n, seed, size, split):
        prompt = record["messages"][0]["content"]
        question = prompt[len(TAG):] if prompt.startswith(TAG) else prompt
        key = answer_key(record["spec"], question, record["split"])
        shown = blank_picture(size) if blind else picture
        text = reply(model, processor, question, shown, max_new_tokens)
        records.append({"kind": record["kind"], "type": key["type"], "prompt": prompt,
                        "expected": key["key"], "reply": text, "ok": judge(key, text),
                        "chance": key["chance"], "spec": record["spec"]})
        if progress:
            progress(1)
    return {"rates": rates_of(records), "records": records, "blind": blind, "size": size, "n": n,
            "seed": seed, "split": split, "seconds": time.perf_counter() - start}


def rates_of(records) -> dict:
    """{row: {"n", "ok" (the rate of right replies), "chance" (their mean chance)}}."""
    rates = {}
    for row in ROWS:
        kind, _, kind_type = row.partition(", ")
        mine = [r for r in records if r["kind"] == kind and (not kind_type
                                                             or r["type"] == kind_type)]
        count = max(len(mine), 1)
        rates[row] = {"n": len(mine), "ok": sum(r["ok"] for r in mine) / count,
                      "chance": sum(r["chance"] for r in mine) / count}
    return rates


def format_vision_table(results: dict) -> str:
    """One Markdown table: a row per kind, the rates with the picture and with the blank one for
    each model, then chance, in %. results: {model name: {"picture": evaluate_vision's result,
    "blank": the same with blind=True}} (either may be missing)."""
    names = list(results)
    columns = [(name, part) for name in names for part in ("picture", "blank")
               if part in results[name]]
    label = {"picture": "with the picture", "blank": "blank picture"}
    heads = [label[part] if len(names) == 1 else f"{name}: {label[part]}"
             for name, part in columns]
    lines = ["| kind | " + " | ".join(heads) + " | chance |", "|---|" + "---|" * (len(heads) + 1)]
    first = results[columns[0][0]][columns[0][1]]
    for row in ROWS:
        if not first["rates"][row]["n"]:
            continue
        cells = [f"{100 * results[name][part]['rates'][row]['ok']:.1f}" for name, part in columns]
        lines.append(f"| {row} | " + " | ".join(cells)
                     + f" | {100 * first['rates'][row]['chance']:.1f} |")
    which = ("held-out" if first.get("split", "test") == "test"
             else "trained-composition (train split)")
    lines.append(f"rates in %; {first['n']} {which} picture(s) per kind, {first['size']} x "
                 f"{first['size']} pixels, replies judged by the rules of "
                 f"tinyphi3/evaluation/vision.py;\nblank picture: the same prompt with a uniform "
                 f"picture in place of each; chance: a uniform guess among the answers")
    return "\n".join(lines)


# ---- charts read back from captions: is a bar's height seen, is the tallest picked? ----------

CHART_BARS = re.compile(r"From left to right: ((?:[a-z]+ \d+(?:, )?)+)")
CHART_TALLEST = re.compile(r"tallest bar is the ([a-z]+) one")


def caption_reply(model, processor, picture, max_new_tokens: int = 80) -> str:
    """The model's greedy caption of a picture: the picture's slots then "\\n", as the caption
    stage trains (tinyphi3.train.images.caption_ids), up to the end of text."""
    return greedy_text(model, processor, processor(images.IMAGE_TAG + "\n", images=[picture]),
                       max_new_tokens)


def chart_captions(model, processor_or_dir, n: int = 60, seed: int = 77,
                   split: str = "train") -> dict:
    """Caption n chart pictures and read the caption back: per bar, is its colour right and its
    height exact or within 1; per chart, is the bar the caption calls tallest the tallest of the
    picture, and the tallest of the heights the caption itself lists? Tells a chart that is not
    seen (heights wrong) from a comparison that is not made (heights right, tallest wrong).

    Returns {"charts", "bars", "colour", "height", "height_within_1", "tallest",
    "tallest_of_own_list", "records"}: rates over bars (colour, heights) and charts (tallest)."""
    processor = _processor(processor_or_dir)
    size = model.config.vision.clip.image_size
    rng = np.random.default_rng(world.stable_hash("chart captions", split, seed))
    bars = colour = exact = near = tallest = own = 0
    records = []
    for _ in range(n):
        spec = images.picture_spec("chart", split, rng)
        text = caption_reply(model, processor, images.draw(spec, size))
        found = CHART_BARS.search(text)
        listed = [(c, int(h)) for c, h in re.findall(r"([a-z]+) (\d+)", found.group(1))] \
            if found else []
        for k, (c, h) in enumerate(zip(spec["colours"], spec["heights"])):
            bars += 1
            if k < len(listed):
                colour += listed[k][0] == c
                exact += listed[k][1] == h
                near += abs(listed[k][1] - h) <= 1
        said = CHART_TALLEST.search(text)
        truth = spec["colours"][spec["heights"].index(max(spec["heights"]))]
        tallest += bool(said) and said.group(1) == truth
        own += bool(said and listed) and said.group(1) == max(listed, key=lambda t: t[1])[0]
        records.append({"spec": spec, "caption": text})
    return {"charts": n, "bars": bars, "colour": colour / bars, "height": exact / bars,
            "height_within_1": near / bars, "tallest": tallest / n,
            "tallest_of_own_list": own / n, "records": records}
