"""The vision evaluation (tinyphi3/evaluation/vision.py, `tinyphi3 eval --task vision`): its rules
on hand-written replies, the data's own answers judged right, rigged answerers through
evaluate_vision, the blank-picture control's prompt, chance, and the command on a random tiny
phi3_v snapshot (tests/test_vision_generate.py's)."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from test_vision_generate import add_tokenizer, assert_one_clear_error, tiny_config
from tinyphi3.cli import main
from tinyphi3.data import images, world
from tinyphi3.evaluation import vision
from tinyphi3.evaluation.vision import answer_key, judge
from tinyphi3.models.model import Phi3
from tinyphi3.models.vision.phi3v import Phi3V, decoder_config
from tinyphi3.models.vision.processor import Phi3VProcessor


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    directory = tmp_path_factory.mktemp("phi3v") / "tiny-vision"
    directory.mkdir()
    Phi3V(tiny_config(), seed=0).save_pretrained(directory)
    return add_tokenizer(directory)


@pytest.fixture(scope="module")
def text_only(tmp_path_factory, snapshot):
    directory = tmp_path_factory.mktemp("phi3")
    model = Phi3V.from_pretrained(snapshot)
    Phi3(decoder_config(model.config), model.decoder.params).save_pretrained(directory)
    return add_tokenizer(directory)


def key(kind, question="", **spec):
    return answer_key({"kind": kind, **spec}, question)


def shape(colour, name):
    return {"shape": name, "colour": colour, "x": 0.5, "y": 0.5, "r": 0.2}


# ---- the rules ---------------------------------------------------------------------------------

def test_colour_the_right_word_and_no_other():
    k = key("colour", shapes=[shape("blue", "star")])
    assert judge(k, "It is blue.") and judge(k, "BLUE") and judge(k, "It is blue, blue.")
    assert not judge(k, "It is red.")
    assert not judge(k, "It is blue or red.")             # two colours named: a hedge, wrong
    assert not judge(k, "It is bluish.") and not judge(k, "")


def test_count_the_first_number_digits_or_words():
    k = key("count", shapes=[shape("red", "star")] * 3)
    assert judge(k, "There are 3 stars.") and judge(k, "3")
    assert judge(k, "There are three stars.")             # a number word counts: "three" is 3
    assert not judge(k, "There are 2 stars, not 3.")      # the first number is the answer
    assert not judge(k, "There are 13 stars.") and not judge(k, "There are 30.")
    assert not judge(k, "There are some stars.")
    one = key("count", shapes=[shape("red", "star")])
    assert judge(one, "There is 1 star.") and judge(one, "There is one star.")


def test_position_yes_no_and_where():
    spec = {"relation": "left of", "shapes": [shape("red", "circle"), shape("blue", "star")]}
    asked_true = key("position", "Is the red circle left of the blue star?", **spec)
    asked_false = key("position", "Does the red circle sit above the blue star?", **spec)
    assert asked_true["key"] == "yes" and asked_false["key"] == "no"
    assert judge(asked_true, "Yes, the red circle is left of the blue star.")
    assert not judge(asked_true, "No, the red circle is left of the blue star.")
    assert judge(asked_false, "No, the red circle is left of the blue star.")
    assert not judge(asked_false, "It is left of it.")     # neither yes nor no
    assert not judge(asked_false, "Nothing.")             # "no" as a whole word only
    where = key("position", "Where is the red circle?", **spec)
    assert where["type"] == "where"
    assert judge(where, "The red circle is left of the blue star.")
    assert judge(where, "The blue star is right of the red circle.")      # the converse
    assert not judge(where, "The red circle is right of the blue star.")
    assert not judge(where, "The blue star is left of the red circle.")
    assert not judge(where, "It is left of the blue star.")     # the asked shape is not named
    assert not judge(where, "The red circle is left of the green star.")
    assert not judge(where, "The red circle is left of the blue star, above it.")   # two


def test_reading_the_word_whole_and_no_other():
    name = key("reading", word="Veska")
    assert judge(name, "It says Veska.") and judge(name, "it says veska")
    assert not judge(name, "It says Veskan.") and not judge(name, "It says Nino.")
    assert not judge(name, "It says Veska or Nino.")
    number = key("reading", word="23")
    assert judge(number, "It says 23.")
    assert not judge(number, "It says 123.") and not judge(number, "It says twenty-three.")
    assert not judge(number, "It says 23 or 27.")


def test_chart_the_asked_bar_by_its_colour():
    spec = {"colours": ["red", "green", "blue"], "heights": [4, 9, 2]}
    tallest = key("chart", "Which bar is the tallest?", **spec)
    shortest = key("chart", "Which colour has the shortest bar?", **spec)
    assert tallest["key"] == "green" and shortest["key"] == "blue"
    assert judge(tallest, "The tallest bar is the green one.")
    assert not judge(tallest, "The tallest bar is the blue one.")
    assert not judge(tallest, "The green one, or the red one.")
    assert judge(shortest, "The shortest bar is the blue one.")


def test_the_data_answers_are_right_and_another_pictures_are_wrong():
    """The rule of every kind passes the data's own answer of each held-out picture, and fails
    the answer of the next picture of the same kind whenever that one's key differs."""
    items = vision.held_out_items(60, seed=3, size=28)
    keys = [answer_key(r["spec"], r["messages"][0]["content"][len(vision.TAG):])
            for _, r in items]
    answers = [r["messages"][1]["content"] for _, r in items]
    assert all(judge(k, a) for k, a in zip(keys, answers))
    kinds = len(images.QUESTION_KINDS)
    crossed = [(k, answers[i + kinds]) for i, k in enumerate(keys[:-kinds])
               if k["type"] == keys[i + kinds]["type"] and k["key"] != keys[i + kinds]["key"]]
    assert len(crossed) > 150
    assert not any(judge(k, other) for k, other in crossed)
    assert {k["type"] for k in keys} == {"colour", "count", "yes/no", "where", "reading", "chart"}


def test_chance_is_stated_per_kind():
    items = vision.held_out_items(40, size=28)
    records = []
    for _, r in items:
        k = answer_key(r["spec"], r["messages"][0]["content"])
        records.append({"kind": r["kind"], "type": k["type"], "ok": False, "chance": k["chance"]})
    rates = vision.rates_of(records)
    assert rates["colour"]["chance"] == pytest.approx(1 / len(world.COLOURS))
    assert rates["count"]["chance"] == pytest.approx(1 / 5)
    assert rates["position, yes/no"]["chance"] == 0.5
    assert rates["position, where"]["chance"] == 0.25
    assert 0.25 < rates["position"]["chance"] < 0.5
    assert len(vision.reading_words("test")) == 63                  # 23 numbers, 40 names
    assert rates["reading"]["chance"] == pytest.approx(1 / 63)
    assert 1 / 4 < rates["chart"]["chance"] < 1 / 3                 # 3 or 4 bars


def test_the_blank_picture_keeps_the_prompt_token_for_token(snapshot):
    processor = Phi3VProcessor.from_pretrained(snapshot)
    picture, record = vision.held_out_items(1, size=28)[0]
    question = record["messages"][0]["content"][len(vision.TAG):]
    seen = vision.vision_inputs(processor, question, picture)
    blank = vision.vision_inputs(processor, question, vision.blank_picture(28))
    assert seen["input_ids"].tolist() == blank["input_ids"].tolist()
    assert (seen["input_ids"] < 0).sum() == 27 and seen["image_sizes"].tolist() == \
        blank["image_sizes"].tolist()
    assert not np.array_equal(seen["pixel_values"], blank["pixel_values"])
    pixels = np.asarray(vision.blank_picture(28))
    assert pixels.shape == (28, 28, 3) and (pixels == images.BACKGROUND).all()


# ---- rigged answerers through evaluate_vision --------------------------------------------------

def rigged(monkeypatch, model, processor, answer, n=4, blind=False):
    """evaluate_vision with the model's replies replaced by answer(question, picture)."""
    asked = []

    def fake_reply(model, processor, question, picture, max_new_tokens):
        asked.append((question, picture.size))
        return answer(question, picture)
    monkeypatch.setattr(vision, "reply", fake_reply)
    return vision.evaluate_vision(model, processor, n=n, blind=blind), asked


def test_a_perfect_and_a_wrong_answerer(monkeypatch, snapshot):
    """An answerer that reads each picture (looked up by its pixels) scores 100% with the
    pictures and 0% with the blank ones; one that always says the same wrong-looking thing
    scores 0% either way."""
    model, processor = Phi3V.from_pretrained(snapshot), Phi3VProcessor.from_pretrained(snapshot)
    script = {(r["messages"][0]["content"][len(vision.TAG):], picture.tobytes()):
              r["messages"][1]["content"] for picture, r in vision.held_out_items(4, size=28)}

    def reader(question, picture):
        return script.get((question, picture.tobytes()), "I cannot see it.")
    seen, asked = rigged(monkeypatch, model, processor, reader)
    assert all(r["ok"] == 1.0 for r in seen["rates"].values() if r["n"])
    assert all(seen["rates"][kind]["n"] == 4 for kind in images.QUESTION_KINDS)
    assert seen["size"] == 28 and {size for _, size in asked} == {(28, 28)}  # the crop size
    assert not any(q.startswith("<|image") for q, _ in asked)      # the tag is the chat's to add
    record = seen["records"][0]
    assert record["prompt"].startswith(images.IMAGE_TAG) and record["ok"] is True
    assert {"kind", "prompt", "reply", "ok", "expected", "chance"} <= set(record)
    blank, _ = rigged(monkeypatch, model, processor, reader, blind=True)
    assert blank["blind"] and all(r["ok"] == 0.0 for r in blank["rates"].values())
    assert [r["prompt"] for r in blank["records"]] == [r["prompt"] for r in seen["records"]]
    wrong, _ = rigged(monkeypatch, model, processor, lambda q, p: "Maybe, I think.")
    assert all(r["ok"] == 0.0 for r in wrong["rates"].values())
    assert wrong["rates"]["chart"]["chance"] == seen["rates"]["chart"]["chance"] > 0


def test_a_text_only_model_is_refused(snapshot, text_only):
    from tinyphi3.errors import InvalidInputError
    with pytest.raises(InvalidInputError, match="text-only"):
        vision.evaluate_vision(Phi3.from_pretrained(text_only), snapshot, n=1)


# ---- the command line --------------------------------------------------------------------------

def test_eval_vision_on_the_tiny_model_prints_the_table(tmp_path, snapshot):
    out = tmp_path / "vision.json"
    result = CliRunner().invoke(main, ["eval", "--ckpt", str(snapshot), "--task", "vision",
                                       "--n", "1", "--json", str(out)])
    assert result.exit_code == 0, (result.output, result.exception)
    print(result.stdout)
    lines = result.stdout.splitlines()
    assert "| kind | with the picture | blank picture | chance |" in lines
    for kind in images.QUESTION_KINDS:
        assert any(line.startswith(f"| {kind} | ") and line.count("|") == 5 for line in lines)
    assert "| colour | " in result.stdout and "| 8.3 |" in result.stdout      # chance: 1 / 12
    saved = json.loads(out.read_text())["tiny-vision"]["vision"]
    assert len(saved["picture"]["records"]) == len(saved["blank"]["records"]) == 5
    assert saved["blank"]["blind"] and not saved["picture"]["blind"]
    assert all(isinstance(r["reply"], str) for r in saved["picture"]["records"])


def test_eval_vision_of_a_text_only_checkpoint_is_one_clear_error(text_only, snapshot):
    result = CliRunner().invoke(main, ["eval", "--ckpt", str(snapshot), "--ckpt", str(text_only),
                                       "--task", "vision", "--n", "1"])
    assert_one_clear_error(result, "--task vision")
    assert "text-only" in result.stderr and "phi3_v" in result.stderr
    assert result.stdout == ""                  # refused before the first model is evaluated


def test_unknown_task_lists_vision(snapshot):
    result = CliRunner().invoke(main, ["eval", "--ckpt", str(snapshot), "--task", "pictures"])
    assert result.exit_code == 2 and "vision" in result.output


def test_trained_compositions_are_train_pictures_in_trained_wordings(monkeypatch, snapshot):
    """split "train" asks about pictures of trained compositions (none held out) in trained
    wordings, judged by the same rules; the table says which pictures it read."""
    model, processor = Phi3V.from_pretrained(snapshot), Phi3VProcessor.from_pretrained(snapshot)
    items = vision.held_out_items(3, seed=77, size=28, split="train")
    assert not any(images.is_held_out_picture(r["spec"]) for _, r in items)
    assert all(r["split"] == "train" for _, r in items)
    script = {(r["messages"][0]["content"][len(vision.TAG):], picture.tobytes()):
              r["messages"][1]["content"] for picture, r in items}
    monkeypatch.setattr(vision, "reply", lambda model, processor, question, picture, *a:
                        script.get((question, picture.tobytes()), "I cannot see it."))
    seen = vision.evaluate_vision(model, processor, n=3, seed=77, split="train")
    assert seen["split"] == "train" and all(r["ok"] == 1.0 for r in seen["rates"].values()
                                            if r["n"])
    held_out = vision.evaluate_vision(model, processor, n=3, seed=77)     # other pictures
    assert held_out["split"] == "test" and held_out["rates"]["colour"]["ok"] < 1.0
    table = vision.format_vision_table({"m": {"picture": seen}})
    assert "trained-composition (train split)" in table


def test_eval_vision_trained_pictures_from_the_command_line(snapshot):
    result = CliRunner().invoke(main, ["eval", "--ckpt", str(snapshot), "--task", "vision",
                                       "--n", "1", "--pictures", "trained", "--seed", "77"])
    assert result.exit_code == 0, (result.output, result.exception)
    assert "trained-composition (train split) picture(s) per kind" in result.stdout


def test_chart_captions_tell_heights_seen_from_the_tallest_picked(monkeypatch, snapshot):
    """A captioner that writes each chart's true caption scores 1 everywhere; one that lists the
    true heights but calls the first bar the tallest keeps the heights and loses the tallest
    (and disagrees with its own list); one that writes nothing scores 0."""
    model, processor = Phi3V.from_pretrained(snapshot), Phi3VProcessor.from_pretrained(snapshot)
    drawn = {}
    real_draw = images.draw

    def draw(spec, size=56):
        picture = real_draw(spec, size)
        drawn[picture.tobytes()] = spec
        return picture
    monkeypatch.setattr(images, "draw", draw)
    monkeypatch.setattr(vision, "caption_reply",
                        lambda model, processor, picture: images.caption(drawn[picture.tobytes()]))
    right = vision.chart_captions(model, processor, n=12)
    assert right["charts"] == 12 and right["bars"] >= 36
    assert all(right[k] == 1.0 for k in ("colour", "height", "height_within_1", "tallest",
                                         "tallest_of_own_list"))
    assert not any(images.is_held_out_picture(r["spec"]) for r in right["records"])

    def first_is_tallest(model, processor, picture):
        spec = drawn[picture.tobytes()]
        text = images.caption(spec)
        return re.sub(r"tallest bar is the [a-z]+ one",
                      f"tallest bar is the {spec['colours'][0]} one", text)
    monkeypatch.setattr(vision, "caption_reply", first_is_tallest)
    wrong = vision.chart_captions(model, processor, n=12)
    assert wrong["height"] == 1.0 and wrong["colour"] == 1.0
    assert wrong["tallest"] == wrong["tallest_of_own_list"] < 1.0
    monkeypatch.setattr(vision, "caption_reply", lambda model, processor, picture: "")
    empty = vision.chart_captions(model, processor, n=4)
    assert empty["colour"] == empty["height"] == empty["tallest"] == 0.0


def test_caption_reply_runs_on_a_model(snapshot):
    model, processor = Phi3V.from_pretrained(snapshot), Phi3VProcessor.from_pretrained(snapshot)
    text = vision.caption_reply(model, processor, images.draw(
        images.picture_spec("chart", "train", np.random.default_rng(0)), 28), max_new_tokens=3)
    assert isinstance(text, str)
