"""`tinyphi3 merge`: models merged in weight space, checked against the same sums taken in torch
on the models transformers wrote and read back by transformers."""

import json

import numpy as np
import pytest
import torch
import transformers
from click.testing import CliRunner

from tinyphi3.cli import main
from tinyphi3.errors import ConfigError
from tinyphi3.models.model import Phi3
from tinyphi3.tokenizers import load_tokenizer
from tinyphi3.train.merge import merge_params, merge_terms, merge_weights

from test_parity import hf_model


def model_dir(tmp_path, name, seed, **overrides):
    """A random transformers Phi-3 (test_parity.hf_model) with tinyphi3's tokenizer beside it."""
    model, directory = hf_model(tmp_path / name, seed=seed, vocab_size=2112,
                                max_position_embeddings=128,
                                original_max_position_embeddings=128, **overrides)
    load_tokenizer("checkpoints/mini-base").save_pretrained(directory)
    return model, directory


def fine_tuned(tmp_path, name, start, seed):
    """`start` moved a little, as a fine-tuning moves it, saved by transformers."""
    model = transformers.Phi3ForCausalLM(start.config).eval()
    model.load_state_dict(start.state_dict())
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    directory = tmp_path / name
    model.save_pretrained(directory)
    load_tokenizer("checkpoints/mini-base").save_pretrained(directory)
    return model, directory


def merge(*args):
    return CliRunner().invoke(main, ["merge", *map(str, args)])


def read_back(directory):
    return transformers.Phi3ForCausalLM.from_pretrained(directory).eval()


def assert_weights(model, expected: dict, atol=1e-6):
    state = model.state_dict()
    assert set(state) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(state[name].numpy(), value.numpy(), rtol=0, atol=atol,
                                   err_msg=name)


def test_linear_merge_is_the_weighted_average_transformers_reads(tmp_path):
    a, dir_a = model_dir(tmp_path, "a", seed=0)
    b, dir_b = model_dir(tmp_path, "b", seed=1)
    out = tmp_path / "soup"
    result = merge("--ckpt", dir_a, "--weight", 0.3, "--ckpt", dir_b, "--weight", 0.7,
                   "--out", out)
    assert result.exit_code == 0, result.output
    merged = read_back(out)
    sa, sb = a.state_dict(), b.state_dict()
    assert_weights(merged, {n: 0.3 * sa[n] + 0.7 * sb[n] for n in sa})
    ids = np.random.default_rng(0).integers(3, 2048, size=(2, 23))
    with torch.no_grad():
        expected = merged(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(Phi3.from_pretrained(out)(ids), expected, rtol=0, atol=1e-4)
    assert load_tokenizer(out).encode("Tobi has 3 cups.") == \
        load_tokenizer(dir_a).encode("Tobi has 3 cups.")
    # default weights: equal
    even = tmp_path / "even"
    assert merge("--ckpt", dir_a, "--ckpt", dir_b, "--out", even).exit_code == 0
    assert_weights(read_back(even), {n: 0.5 * sa[n] + 0.5 * sb[n] for n in sa})


def test_task_arithmetic_adds_each_fine_tuning_to_the_start(tmp_path):
    start, dir_start = model_dir(tmp_path, "start", seed=0)
    a, dir_a = fine_tuned(tmp_path, "a", start, seed=1)
    b, dir_b = fine_tuned(tmp_path, "b", start, seed=2)
    s0, sa, sb = start.state_dict(), a.state_dict(), b.state_dict()
    both = tmp_path / "both"
    result = merge("--base", dir_start, "--ckpt", dir_a, "--weight", 1, "--ckpt", dir_b,
                   "--weight", 0.5, "--out", both)
    assert result.exit_code == 0, result.output
    assert "-0.5 x" in result.output                 # the start's weight, said
    assert_weights(read_back(both), {n: s0[n] + (sa[n] - s0[n]) + 0.5 * (sb[n] - s0[n])
                                     for n in s0}, atol=2e-6)
    # a negative weight takes a fine-tuning back: a - 1 * (a - start) is the start
    back = tmp_path / "back"
    assert merge("--base", dir_start, "--ckpt", dir_a, "--weight", 0, "--ckpt", dir_a,
                 "--weight", 1, "--ckpt", dir_a, "--weight", -1, "--out", back).exit_code == 0
    assert_weights(read_back(back), s0, atol=2e-6)


def test_merge_refuses_models_that_do_not_belong_together(tmp_path):
    _, dir_a = model_dir(tmp_path, "a", seed=0)
    _, dir_b = model_dir(tmp_path, "b", seed=1)
    _, narrow = model_dir(tmp_path, "narrow", seed=2, hidden_size=32, intermediate_size=48)
    _, other_vocab = model_dir(tmp_path, "vocab", seed=3)
    added = other_vocab / "added_tokens.json"
    tokens = json.loads(added.read_text())
    tokens["<|extra|>"] = 2111
    added.write_text(json.dumps(tokens))
    out = tmp_path / "m"
    cases = [
        (["--ckpt", dir_a, "--ckpt", narrow], "hidden_size 32 against 64"),
        (["--ckpt", dir_a, "--ckpt", other_vocab], "another tokenizer"),
        (["--ckpt", dir_a, "--ckpt", dir_b, "--weight", 0.5, "--weight", 0.6], "sum to 1.1"),
        (["--ckpt", dir_a, "--ckpt", dir_b, "--weight", 1], "one --weight per --ckpt"),
        (["--ckpt", dir_a], "two models at least"),
        (["--ckpt", dir_a, "--ckpt", tmp_path / "missing"], "not found"),
    ]
    for args, message in cases:
        result = merge(*args, "--out", out)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
        assert not out.exists() and not (tmp_path / ".m.partial").exists()


def test_merge_of_a_model_with_itself_is_the_model_at_any_weights():
    rng = np.random.default_rng(0)
    params = {"w": rng.standard_normal((3, 4)).astype(np.float32),
              "b": rng.standard_normal(4).astype(np.float32)}
    for weights in ([0.2, 0.8], [0.5, 0.25, 0.25]):
        merged = merge_params(merge_terms(weights, [params] * len(weights)))
        for name in params:
            np.testing.assert_allclose(merged[name], params[name], rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="not 1"):
        merge_weights(["a", "b"], [0.5, 0.4])
    assert merge_weights(["a", "b"], [0.5, 0.4], base="s") == [0.5, 0.4]
    assert merge_terms([0.5, 0.4], ["a", "b"], "s")[-1] == (pytest.approx(0.1), "s")


def test_a_vision_model_merges_with_its_tower_and_its_crops(tmp_path):
    """A phi3_v soup: every tensor (tower, projector, separators, decoder) averaged, and the
    processor settings written beside it, so that chat --image works on the merge."""
    from test_vision_generate import add_tokenizer, tiny_config

    from tinyphi3.models.vision.phi3v import Phi3V
    dirs = []
    for seed in (0, 1):
        directory = tmp_path / f"v{seed}"
        Phi3V(tiny_config(), seed=seed).save_pretrained(directory)
        dirs.append(add_tokenizer(directory))
    out = tmp_path / "soup"
    result = merge("--ckpt", dirs[0], "--ckpt", dirs[1], "--weight", 0.25, "--weight", 0.75,
                   "--out", out)
    assert result.exit_code == 0, result.output
    a, b, merged = (Phi3.from_pretrained(d).params for d in (*dirs, out))
    assert set(merged) == set(a) and any("img_processor" in n for n in merged)
    for name in a:
        np.testing.assert_allclose(merged[name], 0.25 * a[name] + 0.75 * b[name], rtol=0,
                                   atol=1e-6, err_msg=name)
    assert (out / "preprocessor_config.json").read_bytes() == \
        (dirs[0] / "preprocessor_config.json").read_bytes()
