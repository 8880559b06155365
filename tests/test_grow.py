"""`tinyphi3 grow`: a deeper model with the same logits, checked in transformers, the oracle."""

import numpy as np
import pytest
import torch
import transformers
from click.testing import CliRunner

from tinyphi3.cli import main
from tinyphi3.config import Phi3Config
from tinyphi3.errors import ConfigError
from tinyphi3.models.model import Phi3
from tinyphi3.tokenizers import load_tokenizer
from tinyphi3.train.grow import deepen, widen

from test_parity import hf_model


def small_hf_model(tmp_path, **overrides):
    """A random transformers Phi-3 of 2 layers (test_parity.hf_model) with tinyphi3's tokenizer
    beside it, so that `tinyphi3 grow` can copy the tokenizer."""
    model, directory = hf_model(tmp_path, vocab_size=2112, max_position_embeddings=128,
                                original_max_position_embeddings=128, **overrides)
    load_tokenizer("checkpoints/mini-base").save_pretrained(directory)
    return model, directory


def logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


def test_grown_model_has_the_same_logits_in_transformers(tmp_path):
    model, directory = small_hf_model(tmp_path)
    out = tmp_path / "grown"
    result = CliRunner().invoke(main, ["grow", "--ckpt", str(directory), "--layers", "6",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    grown = transformers.Phi3ForCausalLM.from_pretrained(out).eval()
    assert grown.config.num_hidden_layers == 6
    ids = np.random.default_rng(0).integers(3, 2048, size=(2, 37))
    np.testing.assert_allclose(logits(grown, ids), logits(model, ids), rtol=0, atol=1e-5)
    ours = Phi3.from_pretrained(out)(ids)
    np.testing.assert_allclose(ours, logits(model, ids), rtol=0, atol=1e-4)
    # the copies read the residual stream with the trained layer's weights ...
    for k in (1, 2):
        np.testing.assert_array_equal(grown.model.layers[k].self_attn.qkv_proj.weight.detach(),
                                      model.model.layers[0].self_attn.qkv_proj.weight.detach())
    # ... and write nothing, yet their output projections get a gradient: training wakes them
    grown.train()
    loss = grown(torch.tensor(ids), labels=torch.tensor(ids)).loss
    loss.backward()
    for k in (1, 2, 4, 5):
        layer = grown.model.layers[k]
        assert not layer.self_attn.o_proj.weight.detach().any()
        assert layer.self_attn.o_proj.weight.grad.abs().sum() > 0
        assert layer.mlp.down_proj.weight.grad.abs().sum() > 0


def test_grow_refuses_a_depth_that_is_not_a_larger_multiple():
    config = Phi3Config(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                        num_attention_heads=2, num_key_value_heads=2)
    for layers in (2, 3, 1):
        with pytest.raises(ConfigError, match="multiple"):
            deepen(config, {}, layers)


def test_grow_command_errors_are_one_line(tmp_path):
    _, directory = small_hf_model(tmp_path)
    runner = CliRunner()
    bad = runner.invoke(main, ["grow", "--ckpt", str(directory), "--layers", "3",
                               "--out", str(tmp_path / "g")])
    assert bad.exit_code == 1 and "multiple of the model's 2 layers" in bad.output
    assert not (tmp_path / "g").exists()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "file").write_text("x")
    busy = runner.invoke(main, ["grow", "--ckpt", str(directory), "--layers", "4",
                                "--out", str(taken)])
    assert busy.exit_code == 1 and "not empty" in busy.output
    missing = runner.invoke(main, ["grow", "--ckpt", str(tmp_path / "none"), "--layers", "4",
                                   "--out", str(tmp_path / "h")])
    assert missing.exit_code == 1 and "not found" in missing.output


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_widened_model_has_the_same_logits_in_transformers(tmp_path, kv_heads):
    """Width 64 -> 96 (4 heads of 16 -> 6, MLP 96 -> 150, with 4 or 2 key/value heads), then
    one step of plain SGD: every new weight moves, and the logits move (the new parts are not
    dead weight)."""
    model, directory = small_hf_model(tmp_path, num_key_value_heads=kv_heads)
    out = tmp_path / "wide"
    D = 128 if kv_heads == 2 else 96    # a group of 2 query heads: widths step by 2 heads of 16
    result = CliRunner().invoke(main, ["grow", "--ckpt", str(directory), "--out", str(out),
                                       "--hidden-size", str(D), "--intermediate-size", "150"])
    assert result.exit_code == 0, result.output
    wide = transformers.Phi3ForCausalLM.from_pretrained(out).eval()
    c = wide.config
    assert (c.hidden_size, c.intermediate_size, c.num_attention_heads) == (D, 150, D // 16)
    assert c.num_key_value_heads == D // 16 // (4 // kv_heads)
    ids = np.random.default_rng(1).integers(3, 2048, size=(2, 29))
    np.testing.assert_allclose(logits(wide, ids), logits(model, ids), rtol=0, atol=2e-5)
    ours = Phi3.from_pretrained(out)(ids)
    np.testing.assert_allclose(ours, logits(model, ids), rtol=0, atol=1e-4)

    wide.train()
    before = {n: p.detach().clone() for n, p in wide.named_parameters()}
    loss = wide(torch.tensor(ids), labels=torch.tensor(ids)).loss
    loss.backward()
    layer = wide.model.layers[1]
    # the new rows of the output projections (writing the new width) get a gradient at once
    assert layer.self_attn.o_proj.weight.grad[64:].abs().sum() > 0
    assert layer.mlp.down_proj.weight.grad[64:].abs().sum() > 0
    # and so do the new heads' and units' columns (writing the old width)
    assert layer.self_attn.o_proj.weight.grad[:64, 64:].abs().sum() > 0
    assert layer.mlp.down_proj.weight.grad[:64, 96:].abs().sum() > 0
    assert wide.model.embed_tokens.weight.grad[:, 64:].abs().sum() > 0
    with torch.no_grad():
        for p in wide.parameters():
            p -= 0.5 * p.grad
        wide.eval()
        assert np.abs(logits(wide, ids) - logits(model, ids)).max() > 1e-3
    assert all((p.detach() != before[n]).any() for n, p in wide.named_parameters()
               if n.endswith(("o_proj.weight", "down_proj.weight")))


def test_widen_refuses_a_width_that_does_not_fit_the_heads():
    config = Phi3Config(vocab_size=64, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2)
    for width in (32, 16, 40, 56):  # not larger, or not a multiple of 2 heads of 8
        with pytest.raises(ConfigError, match="multiple of 16"):
            widen(config, {}, width, 48)
    with pytest.raises(ConfigError, match="at least the model's 24"):
        widen(config, {}, 64, 12)


def test_grow_without_a_size_is_one_line(tmp_path):
    _, directory = small_hf_model(tmp_path)
    bare = CliRunner().invoke(main, ["grow", "--ckpt", str(directory), "--out",
                                     str(tmp_path / "g")])
    assert bare.exit_code == 1 and "--layers, --hidden-size, or both" in bare.output
    alone = CliRunner().invoke(main, ["grow", "--ckpt", str(directory), "--intermediate-size",
                                      "200", "--out", str(tmp_path / "g")])
    assert alone.exit_code == 1 and "goes with --hidden-size" in alone.output
    odd = CliRunner().invoke(main, ["grow", "--ckpt", str(directory), "--hidden-size", "72",
                                    "--out", str(tmp_path / "g")])
    assert odd.exit_code == 1 and "multiple of 16" in odd.output
    assert not (tmp_path / "g").exists()
    assert "Traceback" not in bare.output
