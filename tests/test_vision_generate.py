"""Generating with pictures (Phi-3-vision): cached decoding against repeated full forward passes,
the context rules for image slots, chat prompts against the published processor, and the command
line (`chat --image`, `/image`, `generate --image`, `info`) with one clear error for bad input.

The model is a random tiny phi3_v snapshot (REFERENCE-vision §7's tower: crops of 28 pixels,
patches of 7, 3 layers of width 16; a decoder of width 32 with LongRoPE whose original context is
48, so that a generation crosses it), its vocabulary 2112 rows as checkpoints/mini's, whose
tokenizer it carries, with a preprocessor_config.json of 4 crops: a square picture takes 27
tokens (2 x 2 crops)."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from tinyphi3.cli import main
from tinyphi3.config import ClipConfig, Phi3Config, VisionConfig
from tinyphi3.errors import ContextLengthError, InvalidInputError
from tinyphi3.inference.generate import fit_to_context, generate, prefill
from tinyphi3.models.model import Phi3
from tinyphi3.models.vision import image_file
from tinyphi3.models.vision.conversation import chat_inputs
from tinyphi3.models.vision.phi3v import Phi3V, decoder_config
from tinyphi3.models.vision.processor import Phi3VProcessor
from tinyphi3.tokenizers import load_tokenizer

MINI = Path(__file__).resolve().parent.parent / "checkpoints" / "mini"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")
PREPROCESSOR = {"num_crops": 4, "crop_size": 28, "patch_size": 7}
SQUARE_TOKENS = 27                   # (2*2 + 1) * 2^2 + 1 + (2 + 1) * 2, REFERENCE-vision §7
ORIGINAL_CONTEXT = 48


def tiny_config(**changes) -> Phi3Config:
    clip = ClipConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                      num_attention_heads=2, image_size=28, patch_size=7, layer_norm_eps=1e-5)
    values = dict(vocab_size=2112, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                  original_max_position_embeddings=ORIGINAL_CONTEXT,
                  rope_scaling={"type": "longrope", "short_factor": [1.0, 1.1, 1.2, 1.3],
                                "long_factor": [1.0, 2.0, 4.0, 8.0]},
                  bos_token_id=1, eos_token_id=2, pad_token_id=0, model_type="phi3_v",
                  vision=VisionConfig(clip=clip, image_dim_out=16))
    return Phi3Config(**{**values, **changes})


def add_tokenizer(directory: Path, add_bos_token=None) -> Path:
    """checkpoints/mini's tokenizer files and the tiny preprocessor_config.json."""
    for name in TOKENIZER_FILES:
        shutil.copy(MINI / name, directory / name)
    if add_bos_token is not None:
        config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
        config["add_bos_token"] = add_bos_token
        (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    (directory / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR))
    return directory


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    directory = tmp_path_factory.mktemp("phi3v")
    Phi3V(tiny_config(), seed=0).save_pretrained(directory)
    return add_tokenizer(directory)


@pytest.fixture(scope="module")
def small_context(tmp_path_factory, snapshot):
    """The same model with a context of 24 tokens: a square picture (27 tokens) does not fit."""
    directory = tmp_path_factory.mktemp("phi3v_24")
    config = tiny_config(max_position_embeddings=24, original_max_position_embeddings=24,
                         rope_scaling=None)
    Phi3V(config, Phi3V.from_pretrained(snapshot).params).save_pretrained(directory)
    return add_tokenizer(directory)


@pytest.fixture(scope="module")
def text_only(tmp_path_factory, snapshot):
    """The snapshot's decoder alone, as a text-only phi3 checkpoint."""
    directory = tmp_path_factory.mktemp("phi3")
    vision = Phi3V.from_pretrained(snapshot)
    Phi3(decoder_config(vision.config), vision.decoder.params).save_pretrained(directory)
    return add_tokenizer(directory)


@pytest.fixture(scope="module")
def model(snapshot):
    return Phi3V.from_pretrained(snapshot)


@pytest.fixture(scope="module")
def processor(snapshot):
    return Phi3VProcessor.from_pretrained(snapshot)


def picture(width=50, height=40, seed=0, mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Image files: good ones in several modes, and broken ones."""
    d = tmp_path_factory.mktemp("images")
    picture(seed=1).save(d / "a.png")
    picture(30, 60, seed=2).save(d / "b.jpg", quality=95)
    picture(seed=3).convert("P").save(d / "palette.png", transparency=0)
    picture(seed=4).convert("RGBA").save(d / "rgba.png")
    picture(seed=5).convert("L").save(d / "grey.png")
    picture(seed=6).convert("CMYK").save(d / "cmyk.jpg")
    grey16 = np.random.default_rng(7).integers(0, 65536, (40, 50)).astype(np.uint16)
    Image.fromarray(grey16).save(d / "grey16.png")
    for name in ("a.png", "b.jpg"):                        # the first half of each file
        data = (d / name).read_bytes()
        (d / f"cut_{name}").write_bytes(data[:len(data) // 2])
    (d / "notes.png").write_text("not a picture")
    return d


def model_card_prompt(question, tags=1):
    return ("<|user|>\n" + "".join(f"<|image_{k}|>\n" for k in range(1, tags + 1)) + question
            + "<|end|>\n<|assistant|>\n")


# ---- the model: cached generation with images ----------------------------------------------
def test_cached_prefill_equals_the_full_forward(model, processor):
    inputs = processor(model_card_prompt("What is shown?"), [picture(seed=1)])
    ids, pixels, sizes = inputs["input_ids"], inputs["pixel_values"], inputs["image_sizes"]
    full = model(ids, pixels, sizes)                                       # [1, T, V]
    cache = model.new_cache(1)
    np.testing.assert_allclose(model(ids, pixels, sizes, cache=cache), full, atol=1e-5, rtol=0)
    assert cache.length == ids.shape[1]
    for chunk in (256, 8, 5):                # 5: a chunk border falls inside the image's slots
        last = prefill(model, ids[0].tolist(), model.new_cache(1), chunk, pixels, sizes)
        np.testing.assert_allclose(last, full[0, -1], atol=1e-5, rtol=0)


def greedy_by_full_forwards(model, ids, pixels, sizes, steps):
    """The slow path: the whole sequence through the model at every step, argmax of the last."""
    ids, out = list(ids), []
    for _ in range(steps):
        token = int(np.argmax(model(np.array([ids]), pixels, sizes)[0, -1]))
        out.append(token)
        ids.append(token)
    return out


@pytest.mark.parametrize("steps", [5, 25])     # 25: the sequence crosses the original context
def test_cached_greedy_decoding_with_an_image_equals_full_forwards(model, processor, steps,
                                                                   monkeypatch):
    inputs = processor(model_card_prompt("What is shown?"), [picture(seed=1)])
    ids, pixels, sizes = inputs["input_ids"][0].tolist(), inputs["pixel_values"], \
        inputs["image_sizes"]
    assert len(ids) < ORIGINAL_CONTEXT < len(ids) + steps or steps == 5
    want = greedy_by_full_forwards(model, ids, pixels, sizes, steps)
    towers = []
    features = model.image_features
    monkeypatch.setattr(model, "image_features", lambda *a: towers.append(1) or features(*a))
    got = list(generate(model, ids, steps, pixel_values=pixels, image_sizes=sizes))
    assert got == want
    # the tower runs at the prefill only (and once more when LongRoPE recomputes the cache)
    assert len(towers) == (1 if steps == 5 else 2)


def test_two_images_and_chunked_prefill_decode_as_full_forwards(model, processor):
    inputs = processor(model_card_prompt("Compare them.", tags=2),
                       [picture(seed=1), picture(60, 20, seed=2)])
    ids, pixels, sizes = inputs["input_ids"][0].tolist(), inputs["pixel_values"], \
        inputs["image_sizes"]
    assert inputs["num_img_tokens"] == [SQUARE_TOKENS, 21]
    want = greedy_by_full_forwards(model, ids, pixels, sizes, 4)
    assert list(generate(model, ids, 4, pixel_values=pixels, image_sizes=sizes)) == want


def test_image_slots_count_toward_the_context_and_are_never_trimmed():
    with pytest.raises(InvalidInputError, match="the images take 30 tokens but the context holds "
                                                "24 \\(at most 23 for the prompt\\)"):
        fit_to_context([5] + [-1] * 30 + [6], 24)
    with pytest.raises(ContextLengthError, match="prompt is 30 tokens \\(10 of them for images\\) "
                                                 "but the context holds 24"):
        fit_to_context([-1] * 10 + list(range(20)), 24)
    with pytest.raises(InvalidInputError, match="trimming its first 7 tokens would cut an image"):
        fit_to_context([-1] * 10 + list(range(20)), 24, trim=True)
    ids = list(range(10)) + [-1] * 10 + list(range(10))
    assert fit_to_context(ids, 24, trim=True) == (ids[7:], 7)   # the text before it goes
    assert fit_to_context([-1] * 23, 24) == ([-1] * 23, 0)


def test_images_past_the_context_are_refused_by_generate(model, processor):
    ids = [1] + [-1] * 300
    with pytest.raises(InvalidInputError, match="the images take 300 tokens but the context "
                                                "holds 256"):
        list(generate(model, ids, 3, pixel_values=np.zeros((1, 5, 3, 28, 28), np.float32),
                      image_sizes=np.array([[56, 56]])))


def test_slots_and_pixels_must_agree_and_a_text_model_takes_no_pixels(model, snapshot, processor):
    inputs = processor(model_card_prompt("What?"), [picture()])
    ids, pixels, sizes = inputs["input_ids"][0].tolist(), inputs["pixel_values"], \
        inputs["image_sizes"]
    with pytest.raises(InvalidInputError, match="image slots .* but no pixel_values"):
        list(generate(model, ids, 2))
    with pytest.raises(InvalidInputError, match="no image slots"):
        list(generate(model, [5, 6, 7], 2, pixel_values=pixels, image_sizes=sizes))
    text = Phi3(decoder_config(model.config), model.decoder.params)
    with pytest.raises(InvalidInputError, match="reads no images"):
        list(generate(text, [5, 6, 7], 2, pixel_values=pixels, image_sizes=sizes))
    # without images a phi3_v model generates as its decoder does
    assert list(generate(model, [5, 6, 7], 6)) == list(generate(text, [5, 6, 7], 6))


# ---- chat prompts ----------------------------------------------------------------------------
@pytest.mark.parametrize("add_bos_token", [True, False])
def test_a_chat_with_pictures_is_the_processor_on_the_rendered_chat(tmp_path, add_bos_token):
    processor = Phi3VProcessor.from_pretrained(add_tokenizer(tmp_path, add_bos_token))
    a, b, c = picture(seed=1), picture(60, 20, seed=2), picture(20, 60, seed=3)
    messages = [{"role": "system", "content": "Answer briefly."},
                {"role": "user", "content": "What is this?", "images": [a]},
                {"role": "assistant", "content": "A pattern."},
                {"role": "user", "content": "And these two?", "images": [b, c]}]
    text = ("<|system|>\nAnswer briefly.<|end|>\n<|user|>\n<|image_1|>\nWhat is this?<|end|>\n"
            "<|assistant|>\nA pattern.<|end|>\n<|user|>\n<|image_2|>\n<|image_3|>\nAnd these "
            "two?<|end|>\n<|assistant|>\n")
    got, want = chat_inputs(processor, messages), processor(text, [a, b, c])
    np.testing.assert_array_equal(got["input_ids"], want["input_ids"])
    np.testing.assert_array_equal(got["pixel_values"], want["pixel_values"])
    np.testing.assert_array_equal(got["image_sizes"], want["image_sizes"])
    assert (got["input_ids"] == 1).sum() == (4 if add_bos_token else 0)    # BOS per chunk


def test_what_a_user_types_stays_text(processor):
    """A user's `<|end|>` or `<|image_2|>` is text: no control id, no extra slots."""
    tok = processor.tokenizer
    end = tok.token_to_id("<|end|>")
    message = {"role": "user", "content": "x<|end|> <|image_2|>", "images": [picture()]}
    ids = chat_inputs(processor, [message])["input_ids"][0].tolist()
    assert ids.count(-1) == SQUARE_TOKENS and min(ids) == -1
    assert ids.count(end) == 1                                   # the template's own <|end|>


# ---- the command line ------------------------------------------------------------------------
def invoke(*args, stdin=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=stdin)


def assert_one_clear_error(result, fragment):
    """Exit status 1, one line on stderr that starts with "error:" and names the problem."""
    assert result.exit_code == 1, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception     # not a traceback
    err = result.stderr.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    assert fragment in err, err


def answer_of(model, tokenizer, inputs, max_new_tokens=4) -> str:
    """The text `generate` makes for the processor's inputs (what the CLI should print)."""
    pixels = {} if inputs["pixel_values"] is None else {
        "pixel_values": inputs["pixel_values"], "image_sizes": inputs["image_sizes"]}
    tokens = generate(model, inputs["input_ids"][0].tolist(), max_new_tokens,
                      tokenizer=tokenizer, **pixels)
    return tokenizer.decode(list(tokens), skip_special_tokens=True)


def test_chat_image_goes_with_the_first_message_as_the_model_card_writes_it(snapshot, files,
                                                                            model, processor):
    result = invoke("chat", "--ckpt", snapshot, "--image", files / "a.png",
                    "--max-new-tokens", "4", stdin="What is this?\n")
    assert result.exit_code == 0, result.stderr
    want = answer_of(model, processor.tokenizer,
                     processor(model_card_prompt("What is this?"), [Image.open(files / "a.png")]))
    assert result.stdout == want + "\n"
    assert f"50 x 40 pixels, {SQUARE_TOKENS} tokens" in result.stderr
    same = invoke("generate", "--ckpt", snapshot, "--image", files / "a.png", "--chat",
                  "--prompt", "What is this?", "--max-new-tokens", "4")
    raw = invoke("generate", "--ckpt", snapshot, "--image", files / "a.png", "--prompt",
                 model_card_prompt("What is this?"), "--max-new-tokens", "4")
    assert same.stdout == raw.stdout == result.stdout


def test_pictures_in_a_conversation_are_numbered_in_order_and_reset_forgets_them(
        snapshot, files, model, processor):
    a, b = Image.open(files / "a.png"), Image.open(files / "b.jpg")
    stdin = ("What is this?\n/image " + str(files / "b.jpg") + "\nAnd this one?\n/help\n"
             "/image " + str(files / "a.png") + "\n/reset\nHello\n")
    result = invoke("chat", "--ckpt", snapshot, "--image", files / "a.png",
                    "--max-new-tokens", "4", stdin=stdin)
    assert result.exit_code == 0, result.stderr
    tok = processor.tokenizer
    first = answer_of(model, tok, processor(model_card_prompt("What is this?"), [a]))
    second_prompt = ("<|user|>\n<|image_1|>\nWhat is this?<|end|>\n<|assistant|>\n" + first
                     + "<|end|>\n<|user|>\n<|image_2|>\nAnd this one?<|end|>\n<|assistant|>\n")
    second = answer_of(model, tok, processor(second_prompt, [a, b]))
    third = answer_of(model, tok, processor(model_card_prompt("Hello", tags=0)))
    assert result.stdout == first + "\n" + second + "\n" + third + "\n"
    assert "/image PATH" in result.stderr and "[conversation cleared]" in result.stderr


def test_image_command_errors_keep_the_session(snapshot, files, text_only):
    result = invoke("chat", "--ckpt", snapshot, "--max-new-tokens", "3",
                    stdin=f"/image {files / 'nope.png'}\n/image\n/image {files / 'notes.png'}\n"
                          f"Hi\n")
    assert result.exit_code == 0, result.stderr
    assert "not found" in result.stderr and "usage: /image PATH" in result.stderr
    assert "is not an image" in result.stderr
    assert len(result.stdout.splitlines()) >= 1                # "Hi" was answered
    text = invoke("chat", "--ckpt", text_only, "--max-new-tokens", "3",
                  stdin=f"/image {files / 'a.png'}\n/help\n")
    assert text.exit_code == 0 and text.stdout == ""
    assert "text-only model (model_type 'phi3')" in text.stderr
    assert "/image" not in text.stderr.splitlines()[-1]        # its /help is unchanged


@pytest.mark.parametrize("name", ["palette.png", "rgba.png", "grey.png", "cmyk.jpg",
                                  "grey16.png", "b.jpg"])
def test_every_image_mode_is_converted_and_read(snapshot, files, name):
    result = invoke("generate", "--ckpt", snapshot, "--image", files / name, "--chat",
                    "--prompt", "What is this?", "--max-new-tokens", "2")
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("name, fragment", [
    ("notes.png", "is not an image that Pillow can read"),
    ("cut_a.png", "is truncated or corrupt"),
    ("cut_b.jpg", "is truncated or corrupt"),
    ("missing.png", "not found"),
    (".", "is a directory, not an image file"),
])
@pytest.mark.parametrize("command", ["chat", "generate"])
def test_a_file_that_is_not_a_good_image_is_one_clear_error(snapshot, files, name, fragment,
                                                            command):
    args = ["--prompt", "<|image_1|>\nWhat?"] if command == "generate" else []
    assert_one_clear_error(invoke(command, "--ckpt", snapshot, "--image", files / name, *args),
                           fragment)


def test_a_decompression_bomb_is_refused(snapshot, files, monkeypatch):
    args = ("generate", "--ckpt", snapshot, "--image", files / "a.png", "--prompt",
            "<|image_1|>\nWhat?")
    monkeypatch.setattr(image_file, "MAX_IMAGE_PIXELS", 1000)          # ours: 50 x 40 > 1000
    assert_one_clear_error(invoke(*args), "50 x 40 = 2,000 pixels, more than the 1,000")
    monkeypatch.undo()
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)        # Pillow's warning, made an error
    assert_one_clear_error(invoke(*args), "decompression bomb")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 900)         # Pillow's error (past twice)
    assert_one_clear_error(invoke(*args), "decompression bomb")


def test_image_for_a_text_only_checkpoint_is_one_clear_error(text_only, files):
    for command in (["chat"], ["generate", "--prompt", "<|image_1|>\nWhat?"]):
        assert_one_clear_error(invoke(*command, "--ckpt", text_only, "--image",
                                      files / "a.png"), "holds a text-only model")


def test_tags_and_pictures_must_match(snapshot, files):
    assert_one_clear_error(invoke("generate", "--ckpt", snapshot, "--prompt", "<|image_1|>\nHi"),
                           "image tag <|image_1|> but no images were given")
    assert_one_clear_error(invoke("generate", "--ckpt", snapshot, "--image", files / "a.png",
                                  "--prompt", "Hi"), "image 1 has no tag <|image_1|>")
    assert_one_clear_error(invoke("generate", "--ckpt", snapshot, "--image", files / "a.png",
                                  "--prompt", "<|image_2|>\nHi"), "names no image")


def test_image_tokens_past_the_context_are_one_clear_error(small_context, files):
    assert_one_clear_error(invoke("generate", "--ckpt", small_context, "--image",
                                  files / "a.png", "--prompt", "<|image_1|>\nHi"),
                           f"the images take {SQUARE_TOKENS} tokens but the context holds 24")
    assert_one_clear_error(invoke("generate", "--ckpt", small_context, "--image",
                                  files / "a.png", "--prompt", "<|image_1|>\nHi", "--trim"),
                           f"the images take {SQUARE_TOKENS} tokens")
    assert_one_clear_error(invoke("chat", "--ckpt", small_context, "--image", files / "a.png"),
                           f"would take {SQUARE_TOKENS} tokens (27) but the context holds 24")


def test_errors_as_a_user_meets_them_in_a_subprocess(snapshot, files):
    result = subprocess.run([sys.executable, "-m", "tinyphi3.cli", "chat", "--ckpt",
                             str(snapshot), "--image", str(files / "cut_b.jpg")],
                            input=b"Hi\n", capture_output=True, timeout=120)
    err = result.stderr.decode()
    assert result.returncode == 1 and "Traceback" not in err
    assert err.startswith("error:") and "truncated or corrupt" in err and len(err.splitlines()) == 1


def test_info_describes_the_image_side(snapshot):
    result = invoke("info", "--ckpt", snapshot)
    assert result.exit_code == 0, result.stderr
    for fragment in ("Phi-3-vision: Phi-3 decoder: 2 layers, hidden 32",
                     "CLIP ViT: 3 layers, width 16, 2 heads, MLP 32",
                     "crop S 28 px, patch P 7 px (4 x 4 patches)",
                     "layer_idx -2, the output of layer 2 of 3",
                     "num_crops 4 (preprocessor_config.json)", "g² = 4 tokens per crop",
                     f"a square image: 2 x 2 crops and the global view, {SQUARE_TOKENS} tokens",
                     "Linear 64 -> 32, GELU, Linear 32 -> 32", "sub_GN, glb_GN [64]"):
        assert fragment in result.stdout, result.stdout
    params = Phi3V.from_pretrained(snapshot).num_parameters()
    assert f"parameters    {params:,}" in result.stdout


def test_helps_name_the_picture_options():
    for command in ("chat", "generate"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "--image PATH" in result.stdout
    assert "/image PATH" in invoke("chat", "--help").stdout


def test_the_shipped_tokenizer_matches_the_snapshot(snapshot):
    """The snapshot's embedding covers the tokenizer's ids (2059 with the specials < 2112)."""
    tokenizer = load_tokenizer(snapshot)
    assert tokenizer.vocab_size <= Phi3V.from_pretrained(snapshot).config.vocab_size
