"""The shipped tiny phi-3-vision (`checkpoints/vision`): its files, its logits against the
independent torch reference (tests/phi3v_reference.py: transformers' CLIPVisionModel and
Phi3ForCausalLM loaded with the shipped tensors, joined by the published glue), and what it
answers about held-out pictures, with them and with a blank picture in their place."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file

import tinyphi3
from phi3v_reference import Phi3VReference
from tinyphi3.data import images
from tinyphi3.evaluation.vision import (answer_key, blank_picture, held_out_items, judge, reply,
                                        vision_inputs)

ROOT = Path(__file__).resolve().parent.parent
VISION = ROOT / "checkpoints" / "vision"
DECODER_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                "original_max_position_embeddings", "rope_theta", "rms_norm_eps",
                "tie_word_embeddings", "hidden_act", "bos_token_id", "eos_token_id",
                "pad_token_id", "rope_scaling")


def reference_of(directory: Path) -> Phi3VReference:
    """The torch reference with the directory's configuration and tensors (float32)."""
    config = json.loads((directory / "config.json").read_text())
    clip = transformers.CLIPVisionConfig(**config["img_processor"]["clip_config"])
    decoder = transformers.Phi3Config(**{k: config[k] for k in DECODER_KEYS},
                                      attn_implementation="eager")
    reference = Phi3VReference(clip, decoder, config["img_processor"].get("layer_idx", -2))
    tensors = {n: torch.from_numpy(np.asarray(t, dtype=np.float32))
               for n, t in load_file(str(directory / "model.safetensors")).items()}
    prefix = "model.vision_embed_tokens."
    tower = {n.removeprefix(prefix + "img_processor.").removeprefix("vision_model."): t
             for n, t in tensors.items() if n.startswith(prefix + "img_processor.")}
    clip_names = reference.clip.state_dict()
    reference.clip.load_state_dict({n: tower[n.removeprefix("vision_model.")]
                                    for n in clip_names})
    reference.decoder.load_state_dict({n: tensors[n] for n in reference.decoder.state_dict()})
    reference.img_projection.load_state_dict(
        {n: tensors[prefix + "img_projection." + n] for n in reference.img_projection.state_dict()})
    with torch.no_grad():
        reference.sub_GN.copy_(tensors[prefix + "sub_GN"])
        reference.glb_GN.copy_(tensors[prefix + "glb_GN"])
    return reference.eval()


@pytest.fixture(scope="module")
def shipped():
    assert (VISION / "config.json").is_file(), "checkpoints/vision is missing"
    return (tinyphi3.Phi3.from_pretrained(VISION),
            tinyphi3.Phi3VProcessor.from_pretrained(VISION))


def test_layout_size_and_card():
    names = {p.name for p in VISION.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.model",
            "README.md"} <= names
    assert sum(p.stat().st_size for p in VISION.iterdir()) <= 30e6
    config = json.loads((VISION / "config.json").read_text())
    assert config["model_type"] == "phi3_v" and config["torch_dtype"] == "bfloat16"
    card = (VISION / "README.md").read_text()
    assert "tinyphi3 train configs/" in card and "tinyphi3 eval --ckpt checkpoints/vision" in card


def test_logits_equal_the_torch_reference_on_a_held_out_picture(shipped):
    model, processor = shipped
    picture, record = held_out_items(1, seed=3)[3]                        # a reading picture
    question = record["messages"][0]["content"].removeprefix(images.IMAGE_TAG + "\n")
    inputs = vision_inputs(processor, question, picture)
    got = model(inputs["input_ids"], pixel_values=inputs["pixel_values"],
                image_sizes=inputs["image_sizes"])
    want = reference_of(VISION)(torch.as_tensor(inputs["input_ids"]),
                                torch.as_tensor(inputs["pixel_values"]),
                                torch.as_tensor(inputs["image_sizes"])).numpy()
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-4


def test_it_reads_colours_from_the_picture_not_the_question(shipped):
    """Held-out colour questions: right with the picture far more often than chance (1/12),
    and near chance with a blank picture in its place (same prompt, nothing to see)."""
    model, processor = shipped
    items = [(p, r) for p, r in held_out_items(20, seed=5) if r["kind"] == "colour"]
    seen = blank = 0
    for picture, record in items:
        question = record["messages"][0]["content"].removeprefix(images.IMAGE_TAG + "\n")
        key = answer_key(record["spec"], question)
        seen += judge(key, reply(model, processor, question, picture))
        blank += judge(key, reply(model, processor, question, blank_picture(picture.width)))
    assert seen >= 16 and blank <= 5, (seen, blank)
