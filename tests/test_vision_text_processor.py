"""Phi-3-vision's processor for text and images (tinyphi3/models/vision/processor.py) against an
independent reconstruction of REFERENCE-vision.md §2's text side: the prompt split here with `re`,
each chunk tokenised by transformers' tokenizer of the same directory (`tokenizer(chunk).input_ids`,
the call the published processor makes), tag k replaced by a run of -k as long as §7's table and
formula say; then the checks on tags and images, one clear error each.

The tokenizer is the shipped checkpoints/mini's, copied with a preprocessor_config.json of the
tiny vision model (§7: crops of S = 28 pixels, patch P = 7, g = 2, 4 crops), once with
add_bos_token true (as Phi-3-vision's) and once as shipped (false)."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from tinyphi3.errors import ConfigError, InvalidInputError
from tinyphi3.models.vision.processor import Phi3VProcessor

MINI = Path(__file__).resolve().parent.parent / "checkpoints" / "mini"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")
CROP, PATCH, NUM_CROPS = 28, 7, 4
G = CROP // (2 * PATCH)                                   # 2 merged tokens per side
BOS = 1
TAG = re.compile(r"<\|image_\d+\|>")                      # REFERENCE-vision §2
CARD_PROMPT = "<|user|>\n<|image_1|>\nWhat is shown here?<|end|>\n<|assistant|>\n"   # §4.2


def tokenizer_directory(target, add_bos_token):
    target.mkdir()
    for name in TOKENIZER_FILES:
        shutil.copy(MINI / name, target / name)
    config = json.loads((target / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["add_bos_token"] = add_bos_token
    (target / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    preprocessor = {"num_crops": NUM_CROPS, "crop_size": CROP, "patch_size": PATCH}
    (target / "preprocessor_config.json").write_text(json.dumps(preprocessor), encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def directories(tmp_path_factory):
    root = tmp_path_factory.mktemp("phi3v_processor")
    return {"bos": tokenizer_directory(root / "bos", True),
            "no_bos": tokenizer_directory(root / "no_bos", False)}


@pytest.fixture(scope="module")
def pair(directories):
    """(our processor, transformers' tokenizer) of the directory with add_bos_token true."""
    directory = directories["bos"]
    return (Phi3VProcessor.from_pretrained(directory),
            transformers.AutoTokenizer.from_pretrained(directory))


def reference_ids(theirs, prompt, counts):
    """§2's text side written out: chunks split by the tag pattern, each `tokenizer(chunk)`;
    tag k -> counts[k - 1] copies of -k."""
    chunks = [theirs(chunk).input_ids for chunk in TAG.split(prompt)]
    numbers = [int(tag[len("<|image_"):-len("|>")]) for tag in TAG.findall(prompt)]
    ids = list(chunks[0])
    for k, chunk in zip(numbers, chunks[1:]):
        ids += [-k] * counts[k - 1] + chunk
    return ids


def tokens_from_padded_size(h_pad, w_pad):
    """§7: N_tok = (h w + 1) g^2 + 1 + (h + 1) g with h, w = the padded size // S."""
    h, w = h_pad // CROP, w_pad // CROP
    return (h * w + 1) * G ** 2 + 1 + (h + 1) * G


def picture(width, height, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_one_image_as_on_the_model_card(pair):
    ours, theirs = pair
    out = ours(CARD_PROMPT, [picture(50, 30)])               # §7: 50 x 30 -> 2 x 2 crops, 27
    assert out["num_img_tokens"] == [27]
    assert out["input_ids"].dtype == np.int64
    assert out["input_ids"].tolist() == [reference_ids(theirs, CARD_PROMPT, [27])]
    assert out["image_sizes"].dtype == np.int64 and out["image_sizes"].tolist() == [[56, 56]]
    assert out["pixel_values"].dtype == np.float32
    assert out["pixel_values"].shape == (1, NUM_CROPS + 1, 3, CROP, CROP)
    ids = out["input_ids"][0].tolist()
    after = ids.index(-1) + 27
    assert ids[0] == BOS and ids[after] == BOS and ids[after - 1] == -1   # BOS after the image


def test_two_images_of_different_grids(pair):
    ours, theirs = pair
    prompt = ("<|user|>\nCompare <|image_1|> with<|image_2|>: which is taller?<|end|>\n"
              "<|assistant|>\n")
    out = ours(prompt, [picture(60, 20, 1), picture(20, 60, 2)])    # §7: 1 x 3, 21; 3 x 1, 25
    assert out["num_img_tokens"] == [21, 25]
    assert out["image_sizes"].tolist() == [[28, 84], [84, 28]]
    assert out["pixel_values"].shape == (2, NUM_CROPS + 1, 3, CROP, CROP)
    assert out["input_ids"].tolist() == [reference_ids(theirs, prompt, [21, 25])]


def test_tags_first_and_last_leave_empty_chunks_of_bos_alone(pair):
    ours, theirs = pair
    prompt = "<|image_1|>between<|image_2|>"
    out = ours(prompt, [picture(5, 5), picture(90, 9)])            # §7: 27 (upscaled); 1 x 4, 25
    assert out["num_img_tokens"] == [27, 25]
    ids = out["input_ids"][0].tolist()
    assert ids == reference_ids(theirs, prompt, [27, 25])
    assert ids[:29] == [BOS] + [-1] * 27 + [BOS]
    assert ids[-26:] == [-2] * 25 + [BOS]                           # the empty trailing chunk


def test_text_only_prompt_is_tokenised_once(pair):
    ours, theirs = pair
    prompt = "<|system|>\nBe brief.<|end|>\n<|user|>\nA cat sees a dog.<|end|>\n<|assistant|>\n"
    for images in (None, []):
        out = ours(prompt, images)
        assert out["input_ids"].tolist() == [theirs(prompt).input_ids]
        assert out["pixel_values"] is None and out["image_sizes"] is None
        assert out["num_img_tokens"] == []
    plain = "The quick red fox runs to the river."
    assert ours(plain)["input_ids"].tolist() == [ours.tokenizer.encode(plain)]


def test_a_tokenizer_without_bos_gives_chunks_without_it(directories):
    ours = Phi3VProcessor.from_pretrained(directories["no_bos"])
    theirs = transformers.AutoTokenizer.from_pretrained(directories["no_bos"])
    prompt = "<|image_1|>\nWhat is shown here?<|end|>\n<|image_2|>"
    out = ours(prompt, [picture(50, 30), picture(56, 28)])        # §7: 27; 1 x 2, 17
    ids = out["input_ids"][0].tolist()
    assert ids == reference_ids(theirs, prompt, [27, 17])
    assert BOS not in ids and ids[0] == -1 and ids[-1] == -2


@settings(max_examples=20, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 100), st.integers(1, 100)), min_size=1, max_size=3),
       st.integers(0, 2 ** 16))
def test_each_image_gets_as_many_slots_as_its_token_count(pair, sizes, seed):
    ours, theirs = pair
    tags = " and ".join(f"<|image_{k}|>" for k in range(1, len(sizes) + 1))
    prompt = f"<|user|>\nLook at {tags}.<|end|>\n<|assistant|>\n"
    images = [picture(w, h, seed + i) for i, (w, h) in enumerate(sizes)]
    out = ours(prompt, images)
    ids = out["input_ids"][0]
    for k, (h_pad, w_pad) in enumerate(out["image_sizes"].tolist(), 1):
        assert h_pad % CROP == 0 and w_pad % CROP == 0
        slots = np.flatnonzero(ids == -k)
        assert len(slots) == out["num_img_tokens"][k - 1] == tokens_from_padded_size(h_pad, w_pad)
        assert slots[-1] - slots[0] == len(slots) - 1                  # one unbroken run
    assert ids.tolist() == reference_ids(theirs, prompt, out["num_img_tokens"])


ERRORS = [
    ("<|image_1|> and <|image_3|>", 2, r"<\|image_3\|> names no image"),
    ("<|image_1|><|image_2|> and again <|image_2|>", 2, r"<\|image_2\|> appears 2 times"),
    ("<|user|>\n<|image_1|>\nWhat is it?", 0, "no images were given"),
    ("<|image_1|> only", 2, r"image 2 has no tag <\|image_2\|>"),
    ("<|image_2|> before <|image_1|>", 2, "must appear in order"),
    ("no tag at all", 1, r"image 1 has no tag <\|image_1\|>"),
]


@pytest.mark.parametrize("prompt, num_images, match", ERRORS)
def test_tags_that_do_not_match_the_images_are_refused(pair, prompt, num_images, match):
    ours, _ = pair
    images = [picture(30, 20, k) for k in range(num_images)] or None
    with pytest.raises(InvalidInputError, match=match):
        ours(prompt, images)


def test_what_is_not_a_pillow_image_or_a_prompt_is_refused(pair):
    ours, _ = pair
    with pytest.raises(InvalidInputError, match="image 2 is a str, not a Pillow image"):
        ours("<|image_1|><|image_2|>", [picture(30, 20), "cat.png"])
    with pytest.raises(InvalidInputError, match="a Pillow image or a list of them, got str"):
        ours("<|image_1|>", "cat.png")
    with pytest.raises(InvalidInputError, match="the prompt must be a str, got list"):
        ours(["<|image_1|>"], [picture(30, 20)])


def test_from_pretrained_reads_the_preprocessor_config_and_names_it_when_missing(directories,
                                                                                tmp_path):
    processor = Phi3VProcessor.from_pretrained(directories["bos"])
    images = processor.image_processor
    assert (images.num_crops, images.crop_size, images.patch_size) == (NUM_CROPS, CROP, PATCH)
    assert processor.tokenizer.add_bos_token
    bare = shutil.copytree(directories["bos"], tmp_path / "bare")
    (bare / "preprocessor_config.json").unlink()
    with pytest.raises(ConfigError, match="preprocessor_config.json"):
        Phi3VProcessor.from_pretrained(bare)
    (bare / "preprocessor_config.json").write_text("[4]", encoding="utf-8")
    with pytest.raises(ConfigError, match="must hold a JSON object"):
        Phi3VProcessor.from_pretrained(bare)


def test_decode_leaves_the_image_slots_out(pair):
    ours, theirs = pair
    ids = ours(CARD_PROMPT, [picture(50, 30)])["input_ids"]                  # [1, T]
    text_ids = [i for i in ids[0].tolist() if i >= 0]
    assert len(text_ids) == ids.shape[1] - 27
    assert ours.decode(ids, skip_special_tokens=True) == "\nWhat is shown here?"  # rstrip ate \n
    for skip in (False, True):
        assert ours.decode(ids, skip) == theirs.decode(text_ids, skip_special_tokens=skip)


def test_the_processor_is_public_api(directories):
    """`tinyphi3.Phi3VProcessor.from_pretrained(d)`, as the README and the module docstring
    write it, is this processor."""
    import tinyphi3
    assert tinyphi3.Phi3VProcessor is Phi3VProcessor and "Phi3VProcessor" in tinyphi3.__all__
    proc = tinyphi3.Phi3VProcessor.from_pretrained(directories["bos"])
    assert isinstance(proc, Phi3VProcessor)
