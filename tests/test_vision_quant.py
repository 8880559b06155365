"""`tinyphi3 quantize` on a Phi-3-vision checkpoint: the decoder to 4 bits as phi-3-mini's, the
image side (CLIP tower, separators, projector) kept as stored, bit for bit; the 4-bit model and
the bf16 one against float models holding the same rounded weights; info and generation.

The snapshot is tests/test_vision_generate.py's random tiny phi3_v (a 2-layer decoder of width
32 with checkpoints/mini's tokenizer, a 3-layer tower of width 16, 4 crops of 28 pixels)."""

import json

import ml_dtypes
import numpy as np
import pytest
from click.testing import CliRunner
from test_vision_generate import add_tokenizer, model_card_prompt, picture, tiny_config

from tinyphi3 import backends
from tinyphi3.cli import main
from tinyphi3.config import preset
from tinyphi3.errors import CheckpointError, InvalidInputError
from tinyphi3.inference.generate import generate
from tinyphi3.io import checkpoint
from tinyphi3.io.safetensors import SafetensorsFile, write_safetensors
from tinyphi3.models.call import WeightFormat
from tinyphi3.models.model import FLOAT, Phi3
from tinyphi3.models.quantize import quantize_checkpoint
from tinyphi3.models.vision.phi3v import EMBED, TOWER, VISION, WRITTEN_TOWER, WTE, Phi3V
from tinyphi3.models.vision.processor import Phi3VProcessor
from tinyphi3.nn.layers import embedding, linear
from tinyphi3.quant.checkpoint import AlreadyQuantizedError
from tinyphi3.quant.q4 import Q4Weight, dequantize_q4, quantize_q4

BLOCK = 32
TOL = 1e-4
CARRIED = ("preprocessor_config.json", "tokenizer.model", "tokenizer_config.json",
           "special_tokens_map.json", "added_tokens.json")


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    """A float32 phi3_v directory in one file."""
    directory = tmp_path_factory.mktemp("phi3v")
    Phi3V(tiny_config(), seed=0).save_pretrained(directory)
    return add_tokenizer(directory)


@pytest.fixture(scope="module")
def bf16_shards(tmp_path_factory):
    """The published layout: bf16, several shards and an index."""
    directory = tmp_path_factory.mktemp("phi3v_bf16")
    Phi3V(tiny_config(), seed=1).save_pretrained(directory, dtype="bfloat16",
                                                 max_shard_bytes=100_000)
    assert len(list(directory.glob("model-*.safetensors"))) > 1
    return add_tokenizer(directory)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, snapshot):
    out = tmp_path_factory.mktemp("q") / "phi3v-q4"
    quantize_checkpoint(snapshot, out, BLOCK, progress=False)
    return out


@pytest.fixture(scope="module")
def inputs(snapshot):
    processor = Phi3VProcessor.from_pretrained(snapshot)
    return processor(model_card_prompt("What is shown?"), [picture(seed=1)])


def stored_tensors(directory) -> dict:
    """{name: (dtype name, raw bytes)} of every tensor of a checkpoint directory."""
    index = checkpoint.tensor_index(directory)
    return {n: (f.dtype(n), f.get(n).tobytes()) for n, f in index.items()}


# ---- the files -------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["snapshot", "bf16_shards"])
def test_the_decoder_is_4_bit_and_the_image_side_is_copied_bit_for_bit(source, request,
                                                                       tmp_path):
    src = request.getfixturevalue(source)
    out = tmp_path / "q"
    quantize_checkpoint(src, out, BLOCK, progress=False)
    before, after = stored_tensors(src), stored_tensors(out)
    image_side = [n for n in before if n.startswith(VISION)]
    assert len(image_side) == 3 * 16 + 7 + 6            # 3 tower layers, embeddings, head
    for name in image_side:                              # same dtype (F32 or BF16), same bytes
        assert after[name] == before[name], name
    float_model = Phi3V.from_pretrained(src)
    for name, w in float_model.decoder.params.items():
        if w.ndim == 2:
            expected = quantize_q4(w, BLOCK)
            assert np.array_equal(after[name[:-len("weight")] + "qweight"][1],
                                  expected.packed.tobytes()), name
            assert name not in after
        else:
            assert after[name] == ("F32", w.astype(np.float32).tobytes()), name
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "phi3_v" and "img_processor" in config
    assert config["quantization_config"]["modules_to_not_convert"] == ["model.vision_embed_tokens"]
    for name in CARRIED:
        assert (out / name).read_bytes() == (src / name).read_bytes(), name


def test_the_loaded_image_side_is_the_source_in_float32(quantized, snapshot):
    model, source = Phi3V.from_pretrained(quantized), Phi3V.from_pretrained(snapshot)
    assert model.quantization["block_size"] == BLOCK
    for name, w in source.params.items():
        got = model.params[name]
        if name.startswith(VISION):
            assert got.dtype == np.float32 and np.array_equal(got, w), name
        elif w.ndim == 2:
            assert isinstance(got, Q4Weight), name
    assert model.weight_bytes() < source.weight_bytes() / 3


def test_transformers_5_tower_names_and_the_wte_alias_quantize_to_the_published_names(
        snapshot, quantized, tmp_path):
    src = tmp_path / "renamed"
    src.mkdir()
    index = checkpoint.tensor_index(snapshot)
    renamed = {n: WTE if n == EMBED else n.replace(WRITTEN_TOWER, TOWER) for n in index}
    tensors = {renamed[n]: f.get(n) for n, f in index.items()}
    write_safetensors(src / "model.safetensors", list(tensors.items()))
    for f in snapshot.iterdir():
        if not f.name.startswith("model"):
            (src / f.name).write_bytes(f.read_bytes())
    quantize_checkpoint(src, tmp_path / "q", BLOCK, progress=False)
    assert stored_tensors(tmp_path / "q") == stored_tensors(quantized)


# ---- the models --------------------------------------------------------------------------------
def rounded_to_8_bits(x, block=BLOCK):
    """x [..., K] with each block of `block` values rounded to 8 bits: dx * rint(x / dx),
    dx = max|x| / 127 over the block (what the 4-bit product does to its input)."""
    blocks = x.reshape(*x.shape[:-1], -1, block)
    dx = np.abs(blocks).max(axis=-1, keepdims=True) / np.float32(127)
    q = np.clip(np.rint(blocks / np.where(dx == 0, 1, dx)), -127, 127)
    return (q * dx).astype(np.float32).reshape(x.shape)


EIGHT_BIT_INPUTS = WeightFormat("float, 8-bit inputs",
                                lambda x, w, b=None: linear(rounded_to_8_bits(x), w, b), embedding)


def dequantized_model(source: Phi3V, weight_format) -> Phi3V:
    """The source with every decoder matrix replaced by its 4-bit blocks dequantized (float32)."""
    params = {n: dequantize_q4(quantize_q4(w, BLOCK)) if n in source.decoder.params and w.ndim == 2
              else w for n, w in source.params.items()}
    return Phi3V(source.config, params, weight_format=weight_format)


def test_4_bit_logits_with_an_image_equal_the_dequantized_weights(quantized, snapshot, inputs):
    """The 4-bit product is x rounded to 8 bits per block times W dequantized: a float model of
    the dequantized weights whose layers round their inputs so gives the same logits. Without
    the rounding (the negative control), or with the source weights, they differ."""
    args = (inputs["input_ids"], inputs["pixel_values"], inputs["image_sizes"])
    source = Phi3V.from_pretrained(snapshot)
    with backends.use_backend("numpy"):
        got = Phi3V.from_pretrained(quantized)(*args)
        want = dequantized_model(source, EIGHT_BIT_INPUTS)(*args)
        unrounded = dequantized_model(source, FLOAT)(*args)
        float_logits = source(*args)
    assert (inputs["input_ids"] < 0).sum() == 27                   # the image is in
    np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    assert np.abs(got - unrounded).max() > 10 * TOL
    assert np.abs(got - float_logits).max() > 10 * TOL


def test_bf16_decoder_logits_equal_the_rounded_weights(snapshot, inputs):
    args = (inputs["input_ids"], inputs["pixel_values"], inputs["image_sizes"])
    source = Phi3V.from_pretrained(snapshot)
    model = Phi3V.from_pretrained(snapshot, dtype="bfloat16")
    assert model.decoder.weight_format.name == "bf16"
    rounded = {n: w.astype(ml_dtypes.bfloat16).astype(np.float32)
               if n in source.decoder.params and w.ndim == 2 else w
               for n, w in source.params.items()}
    np.testing.assert_allclose(model(*args), Phi3V(source.config, rounded)(*args), atol=TOL,
                               rtol=0)
    for name, w in source.params.items():
        if name.startswith(VISION):
            assert np.array_equal(model.params[name], w), name


def test_generation_with_an_image_on_the_4_bit_model(quantized, inputs):
    model = Phi3V.from_pretrained(quantized)
    ids = inputs["input_ids"][0].tolist()
    tokens = list(generate(model, ids, 6, pixel_values=inputs["pixel_values"],
                           image_sizes=inputs["image_sizes"]))
    assert len(tokens) >= 1
    assert model.new_cache(1)._keys[0].dtype == np.int8            # a 4-bit model's 8-bit cache


def test_a_4_bit_model_is_for_inference_only(quantized, inputs, tmp_path):
    model = Phi3V.from_pretrained(quantized)
    with pytest.raises(CheckpointError, match="quantize its float checkpoint"):
        model.save_pretrained(tmp_path / "again")
    with pytest.raises(InvalidInputError, match="inference"):
        model.loss(inputs["input_ids"], np.full(inputs["input_ids"].shape, -100),
                   inputs["pixel_values"], inputs["image_sizes"])
    with pytest.raises(AlreadyQuantizedError):
        quantize_checkpoint(quantized, tmp_path / "twice")


def test_a_4_bit_phi3_v_whose_image_side_is_not_kept_is_refused(quantized, tmp_path):
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(quantized, bad)
    config = json.loads((bad / "config.json").read_text())
    del config["quantization_config"]["modules_to_not_convert"]
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="keeps its image side"):
        Phi3V.from_pretrained(bad)


def test_text_checkpoints_record_no_kept_modules(tmp_path):
    Phi3(preset("tiny"), seed=0).save_pretrained(tmp_path / "tiny")
    quantize_checkpoint(tmp_path / "tiny", tmp_path / "q", BLOCK, progress=False)
    qc = json.loads((tmp_path / "q" / "config.json").read_text())["quantization_config"]
    assert set(qc) == {"quant_method", "bits", "block_size", "scheme", "packing"}
    assert SafetensorsFile(tmp_path / "q" / "model.safetensors").dtype(
        "model.norm.weight") == "F32"


# ---- the command line ------------------------------------------------------------------------
def invoke(*args, stdin=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=stdin)


def test_cli_quantize_then_info_and_generate_with_an_image(bf16_shards, tmp_path):
    out = tmp_path / "q4"
    result = invoke("quantize", "--ckpt", bf16_shards, "--out", out, "--block", BLOCK)
    assert result.exit_code == 0, result.output
    info = invoke("info", "--ckpt", out)
    assert info.exit_code == 0, info.output
    for fragment in ("Phi-3-vision: Phi-3 decoder", "4-bit weights, blocks of 32",
                     "model.vision_embed_tokens.* kept as stored", "CLIP ViT: 3 layers",
                     "num_crops 4 (preprocessor_config.json)"):
        assert fragment in info.output, info.output
    picture(seed=1).save(tmp_path / "a.png")
    gen = invoke("generate", "--ckpt", out, "--image", tmp_path / "a.png", "--chat",
                 "--prompt", "What is this?", "--max-new-tokens", 4)
    assert gen.exit_code == 0, gen.output
    model = Phi3V.from_pretrained(out)
    processor = Phi3VProcessor.from_pretrained(out)
    want = processor(model_card_prompt("What is this?"), [picture(seed=1)])
    tokens = generate(model, want["input_ids"][0].tolist(), 4, tokenizer=processor.tokenizer,
                      pixel_values=want["pixel_values"], image_sizes=want["image_sizes"])
    assert gen.stdout == processor.tokenizer.decode(list(tokens), skip_special_tokens=True) + "\n"
    chat = invoke("chat", "--ckpt", out, "--image", tmp_path / "a.png", "--stats",
                  "--max-new-tokens", 4, stdin="What is this?\n")
    assert chat.exit_code == 0 and "weights 4-bit" in chat.stderr, chat.output
